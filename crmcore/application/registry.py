"""Named components registered by plugins, remembering who registered what."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar

from ..domain.errors import PluginError, UnknownComponent

C = TypeVar("C")
T_contra = TypeVar("T_contra", contravariant=True)


class Register(Protocol[T_contra]):
    """The ``register`` callable a ``register_*`` hook receives.

    Annotate a hook implementation with the component type it registers::

        @hookimpl
        def register_segmenters(register: Register[Segmenter]) -> None:
            register(MySegmenter())
    """

    def __call__(self, component: T_contra, /) -> None:
        """Register ``component`` under the calling plugin's name."""


class Registry(Generic[C]):
    """Components of one kind (segmenter, channel, ...) by name.

    A second registration of a name is a :class:`PluginError` naming both
    plugins, so a clash is found at start-up, not at first use.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, C] = {}
        self._owners: dict[str, str] = {}

    def add(self, component: C, plugin: str) -> None:
        name = getattr(component, "name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {plugin!r} registered a {self.kind} without a name: {component!r}")
        if name in self._items:
            raise PluginError(
                f"{self.kind} {name!r} is registered by both plugin {self._owners[name]!r} and plugin {plugin!r}"
            )
        self._items[name] = component
        self._owners[name] = plugin

    def get(self, name: str) -> C:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownComponent(self.kind, name, list(self._items)) from None

    def owner(self, name: str) -> str:
        return self._owners[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def by_plugin(self, plugin: str) -> list[str]:
        return sorted(n for n, p in self._owners.items() if p == plugin)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[C]:
        return iter(self._items[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._items)
