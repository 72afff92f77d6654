"""acme's plugin-wide settings: the ``[plugins.acme]`` table of crm.toml."""

from __future__ import annotations

import attrs


@attrs.frozen
class AcmeSettings:
    """``[plugins.acme]``; each key can be overridden by ``CRM_PLUGIN_ACME_<KEY>``."""

    welcome_subject: str = "welcome"
    vip_tag: str = attrs.field(default="vip", validator=attrs.validators.min_len(1))
    max_vips: int = attrs.field(default=100, validator=attrs.validators.gt(0))
