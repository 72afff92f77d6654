"""What every contract class shares: the fixture protocol and the common checks.

A contract class is a pytest test class a plugin author subclasses.  The
subclass provides the ``component`` fixture (the object under test); the
contract then opens CRMs with that component registered and checks what it
does.  Every fixture below may be overridden in the subclass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ..application.plugins import hookimpl

# The registration hook of each family (``_Contract.family``).
REGISTER_HOOKS = {"segments": "register_segmenters", "loyalty": "register_loyalty_schemes",
                  "channels": "register_channels", "reports": "register_reports"}


class ComponentPlugin:
    """A plugin that registers one component in its family (what contracts load).

    ``ComponentPlugin(component, "segments")`` is passed to
    ``crm_factory(extra_plugins=[...])``: the CRM then has the component and
    nothing else, as if its own plugin had registered it.
    """

    def __init__(self, component: Any, family: str):
        self.component, self.hook = component, REGISTER_HOOKS[family]
        self.__name__ = f"contract-{family}-{component.name}"

    @hookimpl
    def register_segmenters(self, register: Callable[[Any], None]) -> None:
        """Register the component when it is a segmenter."""
        self._register("register_segmenters", register)

    @hookimpl
    def register_loyalty_schemes(self, register: Callable[[Any], None]) -> None:
        """Register the component when it is a loyalty scheme."""
        self._register("register_loyalty_schemes", register)

    @hookimpl
    def register_channels(self, register: Callable[[Any], None]) -> None:
        """Register the component when it is a channel."""
        self._register("register_channels", register)

    @hookimpl
    def register_reports(self, register: Callable[[Any], None]) -> None:
        """Register the component when it is a report."""
        self._register("register_reports", register)

    def _register(self, hook: str, register: Callable[[Any], None]) -> None:
        if hook == self.hook:
            register(self.component)


class Contract:
    """Fixtures every contract uses, and the checks every component passes.

    Fixtures (override any of them in the subclass):

    * ``component`` (required): the component under test.
    * ``contract_config``: the configuration (a mapping, as in ``crm.toml``)
      of every CRM the contract opens; default ``{}``.
    * ``contract_crm``: a CRM on a fresh, empty database with the component
      registered; default: ``crm_factory`` with only the component (through
      :class:`ComponentPlugin`) and ``contract_config``.  Override it when the
      component needs its plugin's tables or other components, e.g.
      ``crm_factory(plugins=["myplugin"])``.
    """

    family = ""

    @pytest.fixture
    def contract_config(self) -> dict[str, Any]:
        """Configuration of the CRMs the contract opens (none by default)."""
        return {}

    @pytest.fixture
    def contract_crm(self, crm_factory: Callable[..., Any], component: Any,
                     contract_config: dict[str, Any]) -> Any:
        """An empty CRM with the component registered."""
        return crm_factory(extra_plugins=[ComponentPlugin(component, self.family)], config=contract_config)

    def test_has_name_and_description(self, component: Any) -> None:
        """A non-empty name and description (listings and ``crm plugins list`` show them)."""
        assert isinstance(component.name, str) and component.name
        assert isinstance(component.description, str) and component.description

    def test_default_options_build(self, component: Any) -> None:
        """The options type builds from an empty configuration (every option has a default)."""
        from ..application.components import build_options
        from ..config import Config

        build_options(component, self.family, Config(), None)
