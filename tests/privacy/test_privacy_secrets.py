"""Secrets from the environment or a file for every secret setting, and never in logs
(issue 19, point 5)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

import crmcore
from crmcore import Config
from crmcore.config import secrets
from crmcore_notify.smtp import SmtpOptions
from crmcore_notify.sms_http import SmsHttpOptions
from crmcore_notify.webhook import WebhookOptions


def test_a_secret_comes_from_a_variable_a_file_or_the_value(tmp_path: Path) -> None:
    path = tmp_path / "smtp_password"
    path.write_text("from-the-file-1\n", encoding="utf-8")
    assert crmcore.read_secret("password", file=str(path), label="[x]") == "from-the-file-1"
    assert crmcore.read_secret("password", env="PW", environ={"PW": "from-env-2"}, label="[x]") == "from-env-2"
    assert crmcore.read_secret("password", value="inline-3", label="[x]") == "inline-3"
    assert crmcore.read_secret("password", label="[x]") is None
    with pytest.raises(crmcore.ConfigError, match=r"\[x\] password_env: environment variable NOPE is not set"):
        crmcore.read_secret("password", env="NOPE", environ={}, label="[x]")
    with pytest.raises(crmcore.ConfigError, match=r"\[x\] password_file: cannot read .*missing"):
        crmcore.read_secret("password", file=str(tmp_path / "missing"), label="[x]")


def test_every_secret_setting_takes_a_file(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("s3cret-from-file", encoding="utf-8")
    assert SmtpOptions(password_file=str(path)).secret() == "s3cret-from-file"
    assert WebhookOptions(url="https://example.com", secret_file=str(path)).key() == b"s3cret-from-file"
    assert SmsHttpOptions(url="https://example.com", username="u", password_file=str(path)).auth() == \
        ("u", "s3cret-from-file")
    config = Config.from_mapping({
        "notify": {"unsubscribe_secret_file": str(path)},
        "api": {"webhooks": {"shop": {"secret_file": str(path), "fields": {"mail": "email"}}}},
    })
    assert config.notify.secret() == "s3cret-from-file"
    assert config.api.webhooks["shop"].secret() == b"s3cret-from-file"
    with pytest.raises(crmcore.PermanentError, match=r"password_file: cannot read"):
        SmtpOptions(password_file=str(tmp_path / "gone")).secret()


def test_logs_never_show_a_secret(tmp_path: Path, caplog: Any) -> None:
    crmcore.read_secret("password", value="hunter2-very-secret", label="[x]")
    with caplog.at_level(logging.INFO):
        logging.getLogger("uvicorn.error").info("login with %s failed", "hunter2-very-secret")
        try:
            raise RuntimeError("bad password hunter2-very-secret")
        except RuntimeError:
            logging.getLogger("crmcore").exception("sending failed")
    assert "hunter2-very-secret" not in caplog.text
    assert "login with *** failed" in caplog.text and "bad password ***" in caplog.text
    assert secrets.scrub("a hunter2-very-secret b") == "a *** b"


@pytest.mark.parametrize("crm_db_url", ["sqlite"], indirect=True)
def test_api_tokens_are_peppered_from_the_environment(crm_factory: Any, monkeypatch: Any) -> None:
    import hashlib

    from sqlalchemy import select

    from crmcore.store.tables import api_tokens

    plain = crm_factory()
    plain.users.add("ann")
    _, before = plain.tokens.create("ann", "made before the pepper")
    monkeypatch.setenv("PRIVTEST_PEPPER", "pepper-for-the-tests")
    crm = crm_factory(config={"api": {"token_pepper_env": "PRIVTEST_PEPPER"}})
    _, after = crm.tokens.create("ann", "peppered")
    with crm.engine.connect() as conn:
        stored = conn.execute(select(api_tokens.c.token_hash).order_by(api_tokens.c.id)).scalars().all()
    assert stored[0] == hashlib.sha256(before.encode()).hexdigest()
    assert stored[1] != hashlib.sha256(after.encode()).hexdigest()  # the database alone cannot test a guess
    assert crm.tokens.authenticate(after) == "ann" and crm.tokens.authenticate(before) == "ann"
    with pytest.raises(crmcore.ConfigError, match="never put the pepper in the file"):
        Config.from_mapping({"api": {"token_pepper": "x"}})
