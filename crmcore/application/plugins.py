"""Plugin loading and hook calling.

Plugins come from the ``crmcore`` entry-point group, from single ``.py`` files
in a plugins directory, or as objects handed to :meth:`CRM.open`.  An allowlist
(``CRM_PLUGINS``; empty = none) and a blocklist choose among them.  A plugin
that fails to import is recorded with its error and the others still load.
"""

from __future__ import annotations

import difflib
import importlib.util
import sys
import traceback
from collections.abc import Callable, Iterable
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import pluggy

_PLUGGY_LOOP: Any
try:  # pluggy's call loop: a hook it would run through it with one implementation is called directly
    from pluggy._callers import _multicall as _PLUGGY_LOOP
except ImportError:  # pragma: no cover - another pluggy layout: every call goes through pluggy
    _PLUGGY_LOOP = None

from .. import hookspecs
from ..domain.errors import CRMError, HookError, PluginError

ENTRY_POINT_GROUP = "crmcore"
hookimpl = pluggy.HookimplMarker("crmcore")
"""Mark a function as the implementation of the crmcore hook of the same name (``@crmcore.hookimpl``)."""


@attrs.frozen
class LoadFailure:
    """A plugin that could not be loaded, and why."""

    name: str
    error: str
    source: str


@attrs.frozen
class PluginInfo:
    """What ``crm plugins list`` shows for one plugin."""

    name: str
    version: str | None
    distribution: str | None
    source: str
    hooks: tuple[str, ...]
    components: dict[str, list[str]]


class PluginManager:
    """pluggy's manager plus selection, failure reporting and error attribution."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("crmcore")
        self.pm.add_hookspecs(hookspecs)
        self.failures: list[LoadFailure] = []
        self._hooks: dict[str, _Hook] = {}  # by hook name, made at the first call
        self._meta: dict[str, tuple[str | None, str | None, str]] = {}  # name -> version, dist, source

    # -- loading -----------------------------------------------------------
    def load(self, allow: Iterable[str] | None = None, block: Iterable[str] = (),
             plugins_dir: str | Path | None = None, extra: Iterable[Any] = ()) -> None:
        """Load entry-point plugins (filtered), directory plugins and ``extra`` objects."""
        blocked = set(block)
        available = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
        if allow is None:
            chosen = sorted(available)
        else:
            chosen = list(dict.fromkeys(allow))
            unknown = [n for n in chosen if n not in available and n not in blocked]
            if unknown:
                raise PluginError(f"unknown plugin(s) {', '.join(map(repr, unknown))} "
                                  f"(installed: {', '.join(sorted(available)) or 'none'})")
        for name in chosen:
            if name not in blocked:
                self._load_entry_point(available[name])
        if plugins_dir:
            self._load_directory(Path(plugins_dir), blocked)
        for obj in extra:
            explicit = getattr(obj, "__name__", None)
            name = base = explicit or type(obj).__name__
            serial = 1
            # Two instances of one class are two plugins; two objects that name
            # themselves alike are a clash (reported by register()).
            while not explicit and self.pm.has_plugin(name):
                serial += 1
                name = f"{base}-{serial}"
            self.register(obj, name, version=None, distribution=None, source="object")
        self.check()

    def _load_entry_point(self, ep: EntryPoint) -> None:
        try:
            plugin = ep.load()
        except Exception as exc:
            self.failures.append(LoadFailure(ep.name, _one_line(exc), f"entry point {ep.value}"))
            return
        dist = ep.dist
        self.register(plugin, ep.name, dist.version if dist else None, dist.name if dist else None,
                      "entry point")

    def _load_directory(self, directory: Path, blocked: set[str]) -> None:
        if not directory.is_dir():
            raise PluginError(f"plugins directory {directory} does not exist")
        for path in sorted(directory.glob("*.py")):
            if path.stem in blocked or path.stem.startswith("_"):
                continue
            try:
                module = _import_file(path)
            except Exception as exc:
                self.failures.append(LoadFailure(path.stem, _one_line(exc), str(path)))
                continue
            self.register(module, path.stem, None, None, f"file {path}")

    def register(self, plugin: Any, name: str, version: str | None = None,
                 distribution: str | None = None, source: str = "object") -> None:
        if self.pm.has_plugin(name):
            raise PluginError(f"two plugins are named {name!r}")
        try:
            self.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {name!r} is invalid: {exc}") from None
        self._meta[name] = (version, distribution, source)

    def check(self) -> None:
        """Every hook implementation must match a spec (catches misspellings)."""
        # pluggy's check_pending() names the plugin object, not its name; do the same walk.
        specs = [n for n, caller in vars(self.pm.hook).items() if not n.startswith("_") and caller.has_spec()]
        for hook, caller in vars(self.pm.hook).items():
            if hook.startswith("_") or caller.has_spec():
                continue
            for impl in caller.get_hookimpls():
                if not impl.optionalhook:
                    close = difflib.get_close_matches(hook, specs, n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    raise PluginError(f"plugin {impl.plugin_name!r} implements unknown hook {hook!r}{hint}")

    # -- calling -----------------------------------------------------------
    def names(self) -> list[str]:
        return sorted(n for n, _ in self.pm.list_name_plugin())

    def has_impls(self, hook: str) -> bool:
        """Whether any plugin implements ``hook`` (bulk paths skip empty hooks)."""
        found = self._hooks.get(hook) or self._hook(hook)
        return bool(found.impls if found.impls is not None else found.caller.get_hookimpls())

    def call(self, hook: str, **kwargs: Any) -> Any:
        """Call ``hook``; an exception names the plugin whose implementation raised.

        A hook with a single plain implementation (the usual ``authorize`` and ``visibility``:
        the ``access`` plugin's) is called directly, as pluggy's loop would call it, without the
        loop's set-up (about 5,000 instructions a call, 1.5% of a point read); see :class:`_Hook` for when pluggy runs it.
        """
        found = self._hooks.get(hook) or self._hook(hook)
        try:
            impls = found.impls
            # The checks of _Hook.direct without its call, once it found this implementation plain
            # (every point read calls two hooks): still one implementation, pluggy's own loop, every
            # argument of the spec given.
            if impls is not None and len(impls) == 1 and impls[0] is found._plain and \
                    getattr(self.pm, "_inner_hookexec", None) is _PLUGGY_LOOP and kwargs.keys() >= found.spec_set:
                impl = found._plain
            else:
                impl = found.direct(self.pm, kwargs)
            if impl is _NOBODY:
                return None if found.firstresult else []
            if impl is not None:
                result = impl.function(*map(kwargs.__getitem__, impl.argnames))
                if found.firstresult:
                    return result
                return [] if result is None else [result]
            return found.caller(**kwargs)
        except HookError:
            raise  # a nested use case's handler failed: keep the innermost plugin's name
        except Exception as exc:
            plugin = self._culprit(found.caller, exc)
            if plugin is None:
                raise
            raise HookError(plugin, hook, exc) from exc

    def _hook(self, name: str) -> "_Hook":
        """The :class:`_Hook` of ``name``, made at its first call (pluggy keeps one caller per hook
        and one list of implementations per caller, changed in place by (un)registration)."""
        found = self._hooks[name] = _Hook(getattr(self.pm.hook, name))
        return found

    def call_each(self, hook: str, make_kwargs: Callable[[str], dict[str, Any]]) -> None:
        """Call each implementation of a ``register_*`` hook with its own arguments.

        ``make_kwargs(plugin_name)`` builds the arguments, so ``register`` knows
        which plugin registered each component.
        """
        for impl in reversed(getattr(self.pm.hook, hook).get_hookimpls()):
            kwargs = make_kwargs(impl.plugin_name)
            try:
                impl.function(**{k: kwargs[k] for k in impl.argnames})
            except CRMError:
                raise
            except Exception as exc:
                raise HookError(impl.plugin_name, hook, exc) from exc

    def _culprit(self, caller: Any, exc: BaseException) -> str | None:
        codes = {}
        for impl in caller.get_hookimpls():
            code = getattr(getattr(impl.function, "__func__", impl.function), "__code__", None)
            if code is not None:
                codes[code] = impl.plugin_name
        tb = exc.__traceback__
        culprit = None
        while tb is not None:  # the innermost plugin frame is the one that raised
            culprit = codes.get(tb.tb_frame.f_code, culprit)
            tb = tb.tb_next
        return culprit

    # -- listing -----------------------------------------------------------
    def info(self, components: Callable[[str], dict[str, list[str]]]) -> list[PluginInfo]:
        result = []
        for name in self.names():
            plugin = self.pm.get_plugin(name)
            hooks = tuple(sorted(h.name for h in self.pm.get_hookcallers(plugin) or ()))
            version, dist, source = self._meta.get(name, (None, None, "object"))
            result.append(PluginInfo(name, version, dist, source, hooks, components(name)))
        return result


#: :meth:`_Hook.direct`'s answer for a hook nobody implements.
_NOBODY = object()


class _Hook:
    """One hook as :meth:`PluginManager.call` calls it: pluggy's caller, and whether its single
    implementation may be called directly.

    Direct only where pluggy would do nothing but call it: one implementation (looked at on every
    call, in pluggy's own list, so one registered or unregistered later counts at once), neither a
    wrapper nor an old-style hookwrapper, no keyword-only defaults, a hook with a spec that is not
    historic and has no defaults, every argument of the spec given (pluggy warns otherwise), and
    no call monitoring or tracing installed (``add_hookcall_monitoring`` and ``enable_tracing``
    replace pluggy's call loop: every call then goes through it, to be seen).
    """

    __slots__ = ("caller", "impls", "spec_args", "spec_set", "firstresult", "_plain")

    def __init__(self, caller: Any):
        self.caller = caller
        impls = getattr(caller, "_hookimpls", None)
        spec = caller.spec
        #: pluggy's own list of implementations (never copied: get_hookimpls() copies it); None
        #: where pluggy keeps none (then never direct).
        self.impls: list[Any] | None = impls if isinstance(impls, list) else None
        usable = self.impls is not None and _PLUGGY_LOOP is not None and spec is not None and \
            not getattr(spec, "kwargdefaults", True) and not caller.is_historic()
        #: The spec's arguments (None: never direct).
        self.spec_args: tuple[str, ...] | None = tuple(spec.argnames) if usable else None
        #: The same as a set (PluginManager.call's check; empty where never direct: no implementation
        #: is then ever found plain).
        self.spec_set: frozenset[str] = frozenset(self.spec_args or ())
        self.firstresult = bool(spec.opts.get("firstresult")) if spec is not None else False
        self._plain: Any = None  # the implementation last found plain (checked once per implementation)

    def direct(self, pm: pluggy.PluginManager, kwargs: dict[str, Any]) -> Any:
        """The implementation to call directly, or None to call through pluggy (see the class)."""
        impls = self.impls
        if impls is None or len(impls) > 1 or self.spec_args is None or \
                getattr(pm, "_inner_hookexec", None) is not _PLUGGY_LOOP:
            return None
        if not impls:
            return _NOBODY  # (pluggy's answer is then no answer at all)
        impl = impls[0]
        if impl is not self._plain:
            if impl.hookwrapper or getattr(impl, "wrapper", True) or getattr(impl, "kwargnames", True):
                return None
            self._plain = impl
        for name in self.spec_args:
            if name not in kwargs:
                return None
        return impl


def _import_file(path: Path) -> ModuleType:
    module_name = f"crmcore_local_plugins.{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def _one_line(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip().splitlines()[-1]
