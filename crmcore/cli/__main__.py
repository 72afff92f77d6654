"""``python -m crmcore.cli``: the ``crm`` command."""

from . import main

if __name__ == "__main__":
    main()
