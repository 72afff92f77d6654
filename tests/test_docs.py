"""Every hook is documented with its exact signature, and every hook is tested.

The datasette practice: ``docs/hooks.md`` has a ``## <hook>`` section per hook
in ``crmcore.hookspecs`` whose first code line is the specification's typed
signature, ``def <hook>(<arg>: <Type>, ...) -> <Return>: ...``; it documents no hook that does not
exist; and some test plugin under ``tests/`` implements each hook
(``def <hook>(``), so a new hook cannot ship undocumented or untested.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from crmcore import hookspecs

ROOT = Path(__file__).resolve().parent.parent
HOOKS_MD = ROOT / "docs" / "hooks.md"
TESTS = ROOT / "tests"

HOOKS = sorted(name for name, obj in vars(hookspecs).items()
               if inspect.isfunction(obj) and hasattr(obj, "crmcore_spec"))
# "## name" with a bare identifier is reserved for hooks; prose headings have several words.
SECTION = re.compile(r"^## `?([A-Za-z_][A-Za-z0-9_]*)`?\s*$", re.MULTILINE)
FENCE = re.compile(r"```[a-z]*\n(.*?)```", re.DOTALL)


def sections() -> dict[str, str]:
    """Hook name -> the text of its section (up to the next heading of level 1 or 2)."""
    text = HOOKS_MD.read_text(encoding="utf-8")
    found: dict[str, str] = {}
    for match in SECTION.finditer(text):
        rest = text[match.end():]
        end = re.search(r"^#{1,2} ", rest, re.MULTILINE)
        body = rest[:end.start()] if end else rest
        assert match.group(1) not in found, f"docs/hooks.md has two sections for {match.group(1)}"
        found[match.group(1)] = body
    return found


def spec_signature(name: str) -> str:
    """``def name(arg: Type, ...) -> Return: ...`` as written in the specification (annotations are strings)."""
    signature = inspect.signature(getattr(hookspecs, name))
    params = ", ".join(f"{p.name}: {p.annotation}" for p in signature.parameters.values())
    return f"def {name}({params}) -> {signature.return_annotation}: ..."


def test_hookspecs_found():
    assert len(HOOKS) > 20
    assert {"register_segmenters", "on_customer_created", "authorize"} <= set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_documented_with_its_signature(hook):
    documented = sections()
    if hook not in documented:
        pytest.fail(f"docs/hooks.md has no '## {hook}' section", pytrace=False)
    block = FENCE.search(documented[hook])
    if block is None:
        pytest.fail(f"docs/hooks.md: '## {hook}' has no code block with the signature", pytrace=False)
    first_line = next(line.strip() for line in block.group(1).splitlines() if line.strip())
    assert first_line == spec_signature(hook), (
        f"docs/hooks.md: '## {hook}' documents {first_line!r}; the spec is {spec_signature(hook)!r}")


def test_no_undocumented_hooks_and_no_phantom_ones():
    documented = set(sections())
    phantom = sorted(documented - set(HOOKS))
    assert not phantom, f"docs/hooks.md documents hooks that do not exist: {', '.join(phantom)}"
    missing = sorted(set(HOOKS) - documented)
    assert not missing, f"docs/hooks.md does not document: {', '.join(missing)}"


def test_hook_examples_compile():
    for hook, body in sections().items():
        for i, block in enumerate(FENCE.findall(body)[1:], 1):
            compile(block, f"docs/hooks.md ## {hook} example {i}", "exec")
            assert f"def {hook}(" in block, f"docs/hooks.md: the example of {hook} does not implement it"


def implemented_in_tests() -> set[str]:
    implemented: set[str] = set()
    pattern = re.compile(r"\bdef\s+(" + "|".join(map(re.escape, HOOKS)) + r")\s*\(")
    for path in TESTS.rglob("*.py"):
        if path.name == "test_docs.py" or any(part.startswith(".") for part in path.parts):
            continue
        implemented.update(pattern.findall(path.read_text(encoding="utf-8", errors="replace")))
    return implemented


def test_every_hook_is_exercised_by_a_test():
    missing = sorted(set(HOOKS) - implemented_in_tests())
    assert not missing, (
        f"{len(missing)} hook(s) implemented by no test plugin under tests/ "
        f"(add a test whose plugin defines them): {', '.join(missing)}")


@pytest.mark.parametrize("page", sorted(p.name for p in (ROOT / "docs").glob("*.md")))
def test_python_examples_in_docs_compile(page):
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    for i, block in enumerate(re.findall(r"```python\n(.*?)```", text, re.DOTALL), 1):
        compile(block, f"docs/{page} python block {i}", "exec")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", sorted(p.name for p in (ROOT / "docs").glob("*.md")))
def test_relative_links_and_anchors_resolve(page):
    source = ROOT / "docs" / page
    text = source.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        file = (source.parent / path).resolve() if path else source
        assert file.exists(), f"docs/{page}: link to missing {target}"
        if anchor and file.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", file.read_text(encoding="utf-8"), re.MULTILINE)
            assert anchor in {slug(h) for h in headings}, f"docs/{page}: no heading for #{anchor} in {path or page}"
