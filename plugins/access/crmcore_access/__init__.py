"""crmcore-access: roles and permissions through the ``authorize`` and ``visibility`` hooks.

Built-in roles (:mod:`crmcore_access.roles`): admin, manager, sales-rep,
service-agent, read-only; custom roles, the default role and the system actor's
role in ``[plugins.access]`` (:mod:`crmcore_access.settings`).  Give the first
admin on an unconfigured CRM with ``crm user add admin --role admin``.
"""

from .policy import condition, role_of
from .roles import BUILT_IN, built_in_roles, patterns
from .settings import AccessSettings, custom_roles

__version__ = "0.1.0"
__all__ = ["BUILT_IN", "AccessSettings", "built_in_roles", "condition", "custom_roles", "patterns", "role_of"]
