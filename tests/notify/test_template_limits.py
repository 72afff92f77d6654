"""Templates are bounded (issue 14, point 8): a size and a time limit on
rendering, set in ``[notify]`` (``render_max_chars``, ``render_timeout``), with
an error naming the template file.  A template once rendered a 50 MB string,
another took 9 s."""

from __future__ import annotations

import time

import pytest

from crmcore import ConfigError
from crmcore.notify import TemplateError

from .campaign_fixtures import open_crm
from .test_templates import write

HUGE_LOOP = "{% for i in range(100000) %}{{ customer.name }}{% endfor %}{% for i in range(100000) %}" \
            "{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}"
HUGE_STRING = "{{ 'x' * 100000000 }}"
SLOW = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}done"


@pytest.mark.parametrize("body", [HUGE_LOOP, HUGE_STRING])
def test_output_larger_than_the_limit_is_an_error(crm_factory, tmp_path, body):
    write(tmp_path, "big", {"subject.en.txt": "Hi", "body.en.txt": body})
    crm = open_crm(crm_factory, templates_dir=str(tmp_path), render_max_chars=100_000)
    customer = crm.customers.add(name="Ada")
    started = time.monotonic()
    with pytest.raises(TemplateError) as caught:
        crm.messages.preview("big", customer.id)
    assert time.monotonic() - started < 30  # stopped early (unbounded, it runs for minutes), even on a loaded machine
    assert caught.value.file == str(tmp_path / "big" / "body.en.txt")
    assert "more than 100000 characters ([notify] render_max_chars)" in str(caught.value)


def test_rendering_longer_than_the_limit_is_an_error(crm_factory, tmp_path):
    write(tmp_path, "slow", {"subject.en.txt": "Hi", "body.en.txt": SLOW})
    crm = open_crm(crm_factory, templates_dir=str(tmp_path), render_timeout=0.5)
    customer = crm.customers.add(name="Ada")
    started = time.monotonic()
    with pytest.raises(TemplateError) as caught:
        crm.messages.preview("slow", customer.id)
    assert time.monotonic() - started < 5
    assert caught.value.file == str(tmp_path / "slow" / "body.en.txt")
    assert "took longer than 0.5 s ([notify] render_timeout)" in str(caught.value)


def test_defaults_allow_ordinary_templates_and_limits_are_validated(crm_factory, tmp_path):
    write(tmp_path, "ok", {"subject.en.txt": "Hi", "body.en.txt": "{% for i in range(1000) %}{{ i }} {% endfor %}"})
    crm = open_crm(crm_factory, templates_dir=str(tmp_path))
    customer = crm.customers.add(name="Ada")
    assert crm.messages.preview("ok", customer.id).text.startswith("0 1 2")
    assert crm.config.notify.render_max_chars == 1_000_000 and crm.config.notify.render_timeout == 5.0
    with pytest.raises(ConfigError, match=r"\[notify\] render_timeout must be a positive number"):
        open_crm(crm_factory, render_timeout=-1)
    with pytest.raises(ConfigError, match=r"\[notify\] render_max_chars must be a positive whole number"):
        open_crm(crm_factory, render_max_chars="lots")
