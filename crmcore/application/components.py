"""What every plugin component (segmenter, scheme, channel, report) shares:
a name, a description and typed options."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

import attrs
from attrs import AttrsInstance
from sqlalchemy import Connection
from sqlalchemy.sql import ColumnElement

from ..config import Config
from ..domain.convert import structure, unstructure
from ..domain.errors import ConfigError, ValidationError

if TYPE_CHECKING:
    from .uow import UnitOfWork


class Component:
    """Base of plugin components.

    :cvar name: unique name within the family (``"rfm"``, ``"smtp"``).
    :cvar description: one line for listings.
    :cvar options_type: an attrs class of typed options, or None.  Options come
        from ``crm.toml`` (``[family.name]``) and are overridden per call.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    options_type: ClassVar[type[AttrsInstance] | None] = None


@attrs.frozen
class EngineContext:
    """What a component sees when an engine runs it: the unit of work and ``as_of``."""

    uow: UnitOfWork
    as_of: datetime

    @property
    def conn(self) -> Connection:
        """The connection, inside the run's transaction."""
        return self.uow.conn

    @property
    def dialect(self) -> str:
        """The database dialect's name (``sqlite``, ``postgresql``, ``mysql``, ``mariadb``)."""
        return self.uow.dialect

    @property
    def config(self) -> Config:
        """The CRM's configuration."""
        return self.uow.crm.config

    def as_of_literal(self) -> ColumnElement[datetime]:
        """``as_of`` as a bound SQL timestamp."""
        from ..store.dialects import utc_literal

        return utc_literal(self.as_of)


def currency_option(default: str | None = None) -> Any:
    """An attrs field for an optional ISO 4217 currency option (upper-cased, checked).

    ``currency: str | None = crmcore.currency_option()``
    """
    return attrs.field(default=default, converter=_upper, validator=_check_currency)


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def _check_currency(instance: Any, attribute: Any, value: str | None) -> None:
    from ..domain.validation import currency_digits

    if value is not None:
        currency_digits(value)  # ValueError names the bad code


def build_options(component: Component, family: str, config: Config, given: Mapping[str, Any] | None) -> Any:
    """Configured options overridden by ``given``, structured into ``options_type``.

    Errors name the configuration table and key, e.g. ``[segments.rfm] bins: ...``.
    """
    options_type = getattr(component, "options_type", None)
    if given is not None and options_type is not None and isinstance(given, options_type):
        return given
    raw = dict(config.component_options(family, component.name)) | dict(given or {})
    where = f"[{family}.{component.name}]"
    if options_type is None:
        if raw:
            raise ConfigError(f"{where} takes no options; got {', '.join(sorted(raw))}")
        return None
    try:
        return structure(raw, options_type, f"{family} {component.name} options")
    except ValidationError as exc:
        raise ConfigError(f"{where} " + "; ".join(f"{k}: {m}" for k, m in exc.issues)) from None


def options_dict(options: Any) -> dict[str, Any]:
    """JSON-friendly form of an options object (for run records)."""
    if options is None:
        return {}
    return {k: (str(v) if not isinstance(v, (int, float, bool, str, type(None), list, dict)) else v)
            for k, v in unstructure(options).items()}
