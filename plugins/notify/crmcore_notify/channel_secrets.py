"""Secret channel options (passwords, tokens, signing secrets) read where a channel needs them."""

from __future__ import annotations

import crmcore


def channel_secret(name: str, label: str, value: str | None, env: str | None, file: str | None) -> str | None:
    """A secret option from its ``_env`` variable, its ``_file``, or the value itself
    (:func:`crmcore.read_secret`); a missing one fails the message, naming the option."""
    try:
        return crmcore.read_secret(name, value=value, env=env, file=file, label=label)
    except crmcore.ConfigError as exc:
        raise crmcore.PermanentError(str(exc)) from None
