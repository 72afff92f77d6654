"""Hook calls with a single implementation skip pluggy's call loop (PluginManager.call).

Whatever pluggy would do differently must still happen: a plugin registered (or unregistered)
after the first call counts at the next one, wrappers and old-style hookwrappers wrap the call,
call monitoring and tracing see every call, results and errors are the ones pluggy gives.
No database: the manager alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

import crmcore
from crmcore.application.plugins import PluginManager

ARGS = {"actor": "alice", "action": "customer.read", "resource": 7, "crm": None}


def _manager(*plugins: Any) -> PluginManager:
    manager = PluginManager()
    manager.load(allow=[], extra=plugins)
    return manager


def _policy(name: str, answer: Any, seen: list[Any]) -> SimpleNamespace:
    @crmcore.hookimpl
    def authorize(actor: str, action: str) -> Any:  # (fewer arguments than the spec: allowed)
        seen.append((name, actor, action))
        return answer
    return SimpleNamespace(__name__=name, authorize=authorize)


def test_one_implementation_gives_what_pluggy_gives() -> None:
    seen: list[Any] = []
    manager = _manager(_policy("deny", False, seen))
    hook = manager.pm.hook.authorize
    assert manager._hook("authorize").direct(manager.pm, ARGS) is not None  # (the direct path is taken)
    assert manager.call("authorize", **ARGS) == [False] == hook(**ARGS)
    silent = _manager(_policy("silent", None, seen))
    assert silent.call("authorize", **ARGS) == [] == silent.pm.hook.authorize(**ARGS)
    assert seen == [("deny", "alice", "customer.read")] * 2 + [("silent", "alice", "customer.read")] * 2
    assert manager.call("on_customer_deleted", uow=None, customer=None) == []  # no implementation
    assert manager.pm.hook.on_customer_deleted(uow=None, customer=None) == []


def test_a_plugin_registered_or_unregistered_later_counts_at_the_next_call() -> None:
    seen: list[Any] = []
    manager = _manager(_policy("first", None, seen))
    assert manager.call("authorize", **ARGS) == []
    second = _policy("second", False, seen)
    manager.pm.register(second, name="second")
    assert manager._hook("authorize").direct(manager.pm, ARGS) is None
    assert manager.call("authorize", **ARGS) == [False]
    manager.pm.unregister(second)
    assert manager.call("authorize", **ARGS) == []
    assert [name for name, *_ in seen] == ["first", "second", "first", "first"]


def test_wrappers_and_hookwrappers_registered_later_wrap_the_call() -> None:
    seen: list[Any] = []
    manager = _manager(_policy("policy", None, seen))

    class Wrapper:
        @crmcore.hookimpl(wrapper=True)
        def authorize(self, action: str) -> Iterator[None]:
            result = yield
            seen.append(("wrapper", result))
            return [*result, False]

    class OldStyle:
        @crmcore.hookimpl(hookwrapper=True)
        def authorize(self) -> Iterator[None]:
            outcome = yield
            seen.append(("old-style", outcome.get_result()))

    wrapper, old_style = Wrapper(), OldStyle()
    manager.pm.register(wrapper, name="wrapper")
    assert manager.call("authorize", **ARGS) == [False]
    manager.pm.unregister(wrapper)
    manager.pm.register(old_style, name="old-style")
    assert manager.call("authorize", **ARGS) == []
    assert seen == [("policy", "alice", "customer.read"), ("wrapper", []),
                    ("policy", "alice", "customer.read"), ("old-style", [])]


def test_call_monitoring_and_tracing_see_every_call() -> None:
    seen: list[Any] = []
    manager = _manager(_policy("policy", False, seen))
    calls: list[str] = []
    undo = manager.pm.add_hookcall_monitoring(lambda name, impls, kwargs: calls.append(name),
                                              lambda outcome, name, impls, kwargs: calls.append(f"{name} done"))
    assert manager.call("authorize", **ARGS) == [False]
    assert calls == ["authorize", "authorize done"]
    undo()
    manager.call("authorize", **ARGS)
    assert calls == ["authorize", "authorize done"]  # (monitoring gone: direct again)
    traced: list[Any] = []
    manager.pm.trace.root.setwriter(traced.append)
    undo = manager.pm.enable_tracing()
    manager.call("authorize", **ARGS)
    undo()
    assert any("authorize" in str(line) for line in traced)


def test_an_implementation_that_raises_is_named_and_a_missing_argument_goes_to_pluggy() -> None:
    @crmcore.hookimpl
    def authorize(actor: str) -> Any:
        raise RuntimeError(f"no policy for {actor}")

    manager = _manager(SimpleNamespace(__name__="broken", authorize=authorize))
    with pytest.raises(crmcore.HookError) as err:
        manager.call("authorize", **ARGS)
    assert (err.value.plugin, err.value.hook) == ("broken", "authorize")
    assert isinstance(err.value.__cause__, RuntimeError)
    partial = {k: v for k, v in ARGS.items() if k != "crm"}
    assert manager._hook("authorize").direct(manager.pm, partial) is None  # pluggy warns about it
    with pytest.warns(UserWarning, match="crm"), pytest.raises(crmcore.HookError):
        manager.call("authorize", **partial)
