"""The crmcore web console (``/console`` on ``crm serve``): server-rendered pages over the public API.

Every page acts as the signed-in user through the same services as the CLI and the HTTP
API: ``authorize``, record visibility and the audit trail apply unchanged.
"""

__version__ = "0.1.0"
