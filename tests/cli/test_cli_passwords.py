"""``crm user set-password`` and ``crm.users.set_password`` / ``verify_password`` (the web console's
sign-in, issue 17) on every database: argon2id hashes, who may set whose, the audit record."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from crmcore.cli import cli
from crmcore.store import tables
from crmcore.store.engine import make_engine


@pytest.fixture
def run(crm_db_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for var in ("CRM_PLUGINS", "CRM_DATABASE_URL", "CRM_PLUGINS_DIR", "CRM_PLUGINS_BLOCK", "CRM_USER"):
        monkeypatch.delenv(var, raising=False)

    def invoke(*args: str, stdin: str | None = None):
        return CliRunner().invoke(cli, ["--db", crm_db_url, "--plugins", "access", *args], input=stdin)
    return invoke


def test_set_password_hashes_audits_and_verifies(run, crm_db_url) -> None:
    assert run("user", "add", "ann", "--role", "admin").exit_code == 0
    assert run("--as", "ann", "user", "add", "rita", "--role", "sales-rep").exit_code == 0
    done = run("--as", "ann", "user", "set-password", "rita", "--password-stdin", stdin="s3cret-enough\n")
    assert done.exit_code == 0 and done.output.strip() == "password of user rita set", done.output
    short = run("--as", "ann", "user", "set-password", "rita", "--password-stdin", stdin="short\n")
    assert short.exit_code == 1 and "password: 8 to 1024 characters" in short.output and "Traceback" not in short.output
    no_tty = run("--as", "ann", "user", "set-password", "rita")
    assert no_tty.exit_code == 2 and "--password-stdin" in no_tty.output
    # A sales rep sets her own password, not another user's.
    assert run("--as", "rita", "user", "set-password", "rita", "--password-stdin", stdin="mine-now-1\n").exit_code == 0
    refused = run("--as", "rita", "user", "set-password", "ann", "--password-stdin", stdin="hijacked-1\n")
    assert refused.exit_code == 1 and "user.set-password" in refused.output

    engine = make_engine(crm_db_url)
    try:
        with engine.connect() as conn:
            stored = conn.execute(select(tables.users.c.password_hash).where(tables.users.c.login == "rita")).scalar()
            ann_hash = conn.execute(select(tables.users.c.password_hash).where(tables.users.c.login == "ann")).scalar()
            audit = conn.execute(select(tables.audit_log.c.actor, tables.audit_log.c.changes).where(
                tables.audit_log.c.action == "user.set-password").order_by(tables.audit_log.c.seq)).all()
    finally:
        engine.dispose()
    assert stored.startswith("$argon2id$") and "mine-now-1" not in stored
    assert ann_hash is None
    assert [actor for actor, _ in audit] == ["ann", "rita"]
    assert all("mine-now-1" not in json.dumps(changes) and "$argon2" not in json.dumps(changes) for _, changes in audit)


def test_verify_password(crm_factory) -> None:
    crm = crm_factory()
    crm.users.add("ann")
    crm.users.add("bob")
    crm = crm.as_user("ann")
    crm.users.set_password("ann", "correct horse")
    assert crm.users.verify_password("ann", "correct horse")
    assert crm.users.has_password("ann") and not crm.users.has_password("bob")
    assert not crm.users.verify_password("ann", "Correct horse")
    assert not crm.users.verify_password("bob", "correct horse")  # no password set
    assert not crm.users.verify_password("ghost", "correct horse")  # no such user
    crm.users.set_password("bob", "another one")
    crm.users.deactivate("bob")
    assert not crm.users.verify_password("bob", "another one")  # deactivated users cannot sign in
