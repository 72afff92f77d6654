"""Field encryption at rest with a keyed blind index (issue 19, point 4), on every database:
no readable email or phone number in any table (nor the SQLite file, nor a backup), exact
look-ups still work, and a key rotation re-seals everything."""

from __future__ import annotations

import base64
import os
import threading
import zipfile
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, select, table, text

import crmcore
from crmcore.application import audit
from crmcore.domain.errors import ConfigError
from crmcore.domain.validation import normalize_email
from crmcore.io import ImportOptions, import_file
from crmcore.store import backup as backups
from crmcore.store.sealed import MARK, Cipher, new_key
from crmcore.store.tables import notify_outbox
from sealedtools import SEALED_ROWS, import_sealed_rows, sealing_crm

SQLITE_ONLY = pytest.mark.parametrize("crm_db_url", ["sqlite"], indirect=True)
PHONES = ["+8613911112222", "+8613933334444"]
EMAILS = ["sealed.one@example.com", "sealed.two@example.com"]


def encrypted(crm_factory: Any, monkeypatch: Any, keys: list[str], plugins: list[str] | None = None) -> Any:
    monkeypatch.setenv("PRIVTEST_KEYS", "\n".join(keys))
    return crm_factory(plugins=plugins or [], config={"privacy": {"encryption": {
        "fields": ["email", "phone"], "key_env": "PRIVTEST_KEYS"}}})


def everything(crm: Any) -> str:
    with crm.engine.connect() as conn:
        return "\n".join(repr(tuple(row)) for name in sorted(inspect(conn).get_table_names())
                         for row in conn.execute(select(text("*")).select_from(table(name))))


def test_no_readable_phone_or_email_and_exact_lookups_work(crm_factory: Any, monkeypatch: Any,
                                                           tmp_path: Path) -> None:
    crm = encrypted(crm_factory, monkeypatch, [new_key()], plugins=["notify"])
    for email, phone in zip(EMAILS, PHONES):
        customer = crm.customers.add(name="Sealed", email=email, phone=phone)
        crm.contacts.add(customer_id=customer.id, name="Contact", email="c." + email, phone=phone)
        with crm.unit() as uow:
            uow.outbox.enqueue("console", customer_id=customer.id, recipient=email, subject="hello", body="hi")
    stored = everything(crm)
    assert [v for v in [*EMAILS, *PHONES, "13911112222"] if v in stored] == []
    assert stored.count(MARK) >= 10
    # Exact look-ups: through the blind index, on every path.
    assert crm.customers.find(email=EMAILS[1]).phone == PHONES[1]
    assert [c.email for c in crm.customers.list({"phone": PHONES[0]})] == [EMAILS[0]]
    assert [c.email for c in crm.customers.list({"email": EMAILS[0]})] == [EMAILS[0]]
    assert crm.customers.find(email="nobody@example.com") is None
    with crm.engine.connect() as conn:  # the message's recipient is sealed too, and opens on reading
        assert conn.execute(text("SELECT recipient FROM notify_outbox ORDER BY id")).scalars().first().startswith(MARK)
        assert conn.execute(select(notify_outbox.c.recipient).order_by(notify_outbox.c.id)).scalars().first() \
            == EMAILS[0]
    # An upsert import keyed by email finds the stored customers.
    source = tmp_path / "upd.csv"
    source.write_text("email,city\n" + "".join(f"{e},Hangzhou\n" for e in EMAILS), encoding="utf-8")
    report = import_file(crm, "customers", source, ImportOptions(key="email"))
    assert report.updated == 2 and crm.customers.count() == 2
    if crm.engine.dialect.name == "sqlite":
        database = Path(crm.engine.url.database)
        data = b"".join(p.read_bytes() for p in database.parent.glob(database.name + "*"))
        assert [v for v in [*EMAILS, *PHONES] if v.encode() in data] == []
    target = tmp_path / "enc.backup"
    manifest = backups.backup(crm.engine, target)
    with zipfile.ZipFile(target) as archive:
        payload = archive.read(backups.PAYLOAD[manifest["dialect"]])
    assert [v for v in [*EMAILS, *PHONES] if v.encode() in payload] == []


def test_rotation_reseals_with_the_new_key(crm_factory: Any, monkeypatch: Any) -> None:
    old, new = new_key(), new_key()
    crm = encrypted(crm_factory, monkeypatch, [old])
    crm.customers.add(name="Rotated", email=EMAILS[0], phone=PHONES[0])
    crm.close()
    crm = encrypted(crm_factory, monkeypatch, [new, old])
    assert crm.privacy.rotate_key() == {"customers.email": 1, "customers.phone": 1, "customers.birthday": 0,
                                        "contacts.email": 0, "contacts.phone": 0, "notify_outbox.recipient": 0,
                                        "customers.attributes": 0, "customer_merges.before": 0,
                                        "customer_merges.moved": 0, "idempotency_keys.response": 0, "audit_log": 1}
    assert crm.privacy.rotate_key()["customers.email"] == 0  # nothing left to re-seal
    crm.close()
    crm = encrypted(crm_factory, monkeypatch, [new])  # the old key is gone: everything still opens
    assert crm.customers.find(phone=PHONES[0]).email == EMAILS[0]
    with crm.engine.connect() as conn:
        stored = conn.execute(text("SELECT email FROM customers")).scalar_one()
    assert Cipher([new], ["email"]).current(stored)
    with crm.unit(readonly=True) as uow:
        assert audit.verify(uow.conn).ok
        assert audit.records(uow.conn)[0].changes["phone"] == [None, PHONES[0]]  # opened with the new key


@SQLITE_ONLY  # the database does not matter here: the main test covers all three
def test_turning_encryption_on_later_seals_existing_values(crm_factory: Any, monkeypatch: Any) -> None:
    plain = crm_factory()
    plain.customers.add(name="Before", email=EMAILS[0], phone=PHONES[0])
    plain.close()
    crm = encrypted(crm_factory, monkeypatch, [new_key()])
    assert crm.customers.find(id=1).email == EMAILS[0]  # a plain value reads as it is
    crm.privacy.rotate_key()
    assert PHONES[0] not in everything(crm)
    with crm.unit(readonly=True) as uow:
        assert audit.verify(uow.conn).ok
    assert crm.customers.find(email=EMAILS[0]).phone == PHONES[0]


@SQLITE_ONLY  # the database does not matter here: the main test covers all three
def test_bad_keys_and_missing_keys_are_clear_errors(crm_factory: Any, monkeypatch: Any) -> None:
    with pytest.raises(crmcore.ConfigError, match="key 1 is not 32 bytes"):
        encrypted(crm_factory, monkeypatch, ["short"])
    crm = encrypted(crm_factory, monkeypatch, [new_key()])
    crm.customers.add(name="Locked", phone=PHONES[1])
    crm.close()
    plain = crm_factory()
    with pytest.raises(crmcore.ConfigError, match="holds encrypted phone values: configure the key"):
        plain.customers.find(id=1)
    with pytest.raises(crmcore.ConfigError, match="never put the key in the file"):
        crmcore.Config.from_mapping({"privacy": {"encryption": {"fields": ["phone"], "key": "x"}}})


@SQLITE_ONLY  # the database does not matter here: the main test covers all three
def test_erasure_and_export_with_encryption_on(crm_factory: Any, monkeypatch: Any) -> None:
    crm = encrypted(crm_factory, monkeypatch, [new_key()], plugins=["notify"])
    keep = crm.customers.add(name="Kept", email=EMAILS[1], phone=PHONES[1])
    gone = crm.customers.add(name="Gone", email=EMAILS[0], phone=PHONES[0])
    with crm.unit() as uow:
        uow.outbox.enqueue("console", customer_id=gone.id, recipient=EMAILS[0], subject="s", body="b")
    exported = crm.privacy.export(gone.id)
    assert exported["customer"]["phone"] == PHONES[0]
    assert exported["sections"]["audit"][0]["changes"]["phone"] == [None, PHONES[0]]  # opened for the person
    crm.privacy.erase(gone.id, "request")
    # Nor does the process keep the values it sealed (its memory of recent sealings is dropped).
    remembered = crm.engine.dialect.crm_cipher.hand_over()
    assert not {EMAILS[0], PHONES[0]} & {value for flat in remembered.values() for value in flat[1::2]}
    with crm.engine.connect() as conn:
        left = conn.execute(select(notify_outbox.c.recipient)).scalars().all()
        sealed_left = conn.execute(text("SELECT email, phone FROM customers ORDER BY id")).all()
    assert left == [None] and sealed_left[1] == (None, None) and sealed_left[0][0].startswith(MARK)
    assert crm.customers.find(email=EMAILS[1]).id == keep.id
    with crm.unit(readonly=True) as uow:
        assert audit.verify(uow.conn).ok
        assert all("phone" not in (r.changes or {}) or r.changes["phone"][1] in (None, "[erased]")
                   for r in audit.records(uow.conn, customer_id=gone.id))


def _assert_fork_draws_fresh_nonces(seal_one: Any) -> None:
    """Fork; the child seals five values with ``seal_one`` and sends their nonces back; the parent
    seals five more: all ten nonces differ."""
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # the child: seal five values and send their nonces
        try:
            os.write(writer, b"".join(nonce_of(seal_one()) for _ in range(5)))
        finally:
            os._exit(0)
    os.close(writer)
    os.waitpid(child, 0)
    received = os.read(reader, 12 * 5)
    os.close(reader)
    theirs = {received[i:i + 12] for i in range(0, len(received), 12)}
    ours = {nonce_of(seal_one()) for _ in range(5)}
    assert len(theirs) == 5 and len(ours) == 5 and not theirs & ours


def test_nonces_are_never_shared_with_a_forked_process() -> None:
    """Nonces come from the OS in blocks; a forked child (an import's validation worker) drops the
    block it inherited, so a value sealed in the child never reuses a nonce of its parent's."""
    cipher = Cipher([new_key()], ["phone"])
    cipher.seal("phone", PHONES[0])  # the parent now holds a block of nonces
    _assert_fork_draws_fresh_nonces(lambda: cipher.seal("phone", PHONES[1]))


def test_a_sealer_made_before_a_fork_never_reuses_its_parents_nonces() -> None:
    """The importer builds its sealers before it forks the validation workers, which seal with
    them: the child's sealer draws fresh nonces, never one of the block the parent holds."""
    cipher = Cipher([new_key()], ["phone"])
    seal = cipher.sealer("phone", remember=False)
    seal(PHONES[0])  # the parent now holds a block of nonces
    _assert_fork_draws_fresh_nonces(lambda: seal(PHONES[1]))


def test_threads_sealing_at_once_never_share_a_nonce() -> None:
    """Nonces are taken from the shared block without a lock of their own: threads sealing at
    the same time (through one sealer and through ``seal``) across many refills each get their own."""
    cipher = Cipher([new_key()], ["phone"])
    seal = cipher.sealer("phone", remember=False)
    results: list[list[str]] = [[] for _ in range(4)]

    def work(out: list[str], through_sealer: bool) -> None:
        for _ in range(3000):
            out.append(seal(PHONES[0]) if through_sealer else cipher.seal("phone", PHONES[0]))

    threads = [threading.Thread(target=work, args=(out, n % 2 == 0)) for n, out in enumerate(results)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    nonces = [nonce_of(stored) for out in results for stored in out]
    assert len(nonces) == 12_000 and len(set(nonces)) == 12_000


def nonce_of(stored: str) -> bytes:
    blob = stored.rsplit("$", 1)[1]
    return base64.urlsafe_b64decode(blob + "=" * (-len(blob) % 4))[:12]


def test_a_worker_hands_back_only_the_sealings_the_door_check_compares() -> None:
    """An import's validation worker returns its sealed addresses and numbers with the rows (the
    door check compares them by value): stored form and value by field, from ``seal`` and from
    the sealers alike; its birthdays stay behind, and it forgets all of them."""
    cipher = Cipher([new_key()], ["email", "phone", "birthday"])
    email, birthday = cipher.seal("email", EMAILS[0]), cipher.seal("birthday", "1983-06-17")
    phone = cipher.sealer("phone")(PHONES[0])
    cipher.sealer("birthday", remember=False)("1983-06-18")
    assert cipher.hand_over(("email", "phone")) == {"email": [email, EMAILS[0]], "phone": [phone, PHONES[0]]}
    assert cipher.hand_over() == {}  # the birthday was forgotten with the rest
    cipher.seal("birthday", "1983-06-17")
    assert list(cipher.hand_over()) == ["birthday"] and birthday.startswith(MARK)


def test_what_a_worker_hands_over_is_compared_without_opening_it_again() -> None:
    """The importing process takes a worker's sealings over (:meth:`Cipher.take_over`): it opens
    them and knows their blind indexes from what was handed over, for every field of the batch at
    once, also when the batch is larger than the memory's usual bound."""
    keys = [new_key()]
    worker, importer = Cipher(keys, ["email", "phone"]), Cipher(keys, ["email", "phone"])
    importer.take_over({"email": [importer.seal("email", EMAILS[1]), EMAILS[1]]})  # an earlier batch's
    seal_email, seal_phone = worker.sealer("email"), worker.sealer("phone")
    count = 20_000  # two fields: more than the 32,768 values remembered, together
    emails = [seal_email(f"c{i}@example.com") for i in range(count)]
    phones = [seal_phone(f"+86139{i:08d}") for i in range(count)]
    importer.take_over(worker.hand_over(("email", "phone")))
    # What was handed over is known as it was sealed: a value handed over under a stored form the
    # importer's keys could not open (damaged here) still reads as handed over, so nothing was opened.
    damaged = emails[0][:-4] + ("AAAA" if not emails[0].endswith("AAAA") else "BBBB")
    importer.take_over({"email": [damaged, "c0@example.com"]})
    assert importer.open("email", damaged) == "c0@example.com"
    assert [importer.open("email", s) for s in emails] == [f"c{i}@example.com" for i in range(count)]
    assert [importer.open("phone", s) for s in phones] == [f"+86139{i:08d}" for i in range(count)]
    assert [importer.prefix("phone", f"+86139{i:08d}") for i in range(count)] == [s[:26] for s in phones]
    with pytest.raises(ConfigError):  # handed over as an email: not a phone number
        importer.open("phone", damaged)


def test_a_sealer_seals_as_seal_does() -> None:
    """The importer's per-field sealer (:meth:`Cipher.sealer`) gives the stored form ``seal`` gives:
    the same blind index and key id (and a birthday's month and day), a fresh nonce each time, the
    field as associated data; a cipher with the same keys opens it.  It remembers a sealing (for the
    door check) only when asked to."""
    keys = [new_key(), new_key()]
    cipher = Cipher(keys, ["email", "phone", "birthday"])
    email = cipher.sealer("email")
    first, second, by_seal = email(EMAILS[0]), email(EMAILS[0]), cipher.seal("email", EMAILS[0])
    head = len(MARK) + 22 + 1 + 6 + 1  # blind index and key id
    assert first[:head] == second[:head] == by_seal[:head] and len(first) == len(second) == len(by_seal)
    assert first[:len(MARK) + 22] == cipher.prefix("email", EMAILS[0]) and cipher.current(first)
    assert len({nonce_of(first), nonce_of(second), nonce_of(by_seal)}) == 3
    birthday = cipher.sealer("birthday", remember=False)("1983-06-17")
    assert birthday.split("$")[4] == "06-17" and birthday[:head] == cipher.seal("birthday", "1983-06-17")[:head]
    other = Cipher(keys, ["email", "phone", "birthday"])  # remembers nothing: opens each for real
    handed = cipher.hand_over()
    assert dict(zip(handed["email"][0::2], handed["email"][1::2])) == {
        first: EMAILS[0], second: EMAILS[0], by_seal: EMAILS[0]}
    assert birthday not in handed["birthday"]  # not remembered (the birthday ``seal`` made is)
    # What the column's bind processor takes: None, and a date (or any value) as its text.
    assert email(None) is None and cipher.sealer("birthday")(None) is None
    dated = cipher.sealer("birthday", remember=False)(date(1983, 6, 17))
    assert dated[:head] == birthday[:head] and other.open("birthday", dated) == "1983-06-17"
    number = cipher.sealer("phone", remember=False)(8613911112222)
    assert number[:len(MARK) + 22] == cipher.prefix("phone", "8613911112222")
    assert [other.open("email", first), other.open("birthday", birthday)] == [EMAILS[0], "1983-06-17"]
    with pytest.raises(ConfigError):  # sealed as an email: not a phone number
        other.open("phone", first)


@SQLITE_ONLY
@pytest.mark.parametrize("workers", [0, 2])
def test_a_sealed_bulk_import_reads_back_and_leaves_the_page_cache_as_it_was(
        crm_factory: Any, monkeypatch: Any, tmp_path: Path, workers: int) -> None:
    """The SQLite bulk path seals email, phone and birthday through the sealers (in the validation
    workers too): every value reads back, exact look-ups find it, the file holds none of them; the
    import's larger page cache is the connection's own setting again afterwards."""
    crm = sealing_crm(crm_factory, monkeypatch)
    with crm.engine.connect() as conn:
        cache = conn.exec_driver_sql("PRAGMA cache_size").scalar()
    import_sealed_rows(crm, tmp_path, workers)
    rows = SEALED_ROWS
    assert [crm.customers.find(email=normalize_email(email)).external_id for _, email, _, _ in rows[:3]] == [
        "C0", "C1", "C2"]
    database = Path(crm.engine.url.database)
    data = b"".join(p.read_bytes() for p in database.parent.glob(database.name + "*"))
    assert [v for _, email, phone, day in rows for v in (normalize_email(email), phone, day)
            if v.encode() in data] == []
    with crm.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == cache


def test_a_sealed_import_keyed_by_email_finds_the_customers_an_import_stored(
        crm_factory: Any, monkeypatch: Any, tmp_path: Path) -> None:
    """Customers a sealed import wrote are found again by a later import keyed by email (exactly,
    through the blind index: the address as normalised, the domain lower-cased): unchanged rows
    stay unchanged, a changed city updates them, and no second customer appears."""
    crm = encrypted(crm_factory, monkeypatch, [new_key()])
    emails = [f"Sealed.{n}@Example.COM" for n in range(12)]
    first = tmp_path / "first.csv"
    first.write_text("name,email,city\n" + "".join(f"C{n},{e},Ningbo\n" for n, e in enumerate(emails)),
                     encoding="utf-8")
    assert import_file(crm, "customers", first, ImportOptions(key="email")).inserted == 12
    again = import_file(crm, "customers", first, ImportOptions(key="email"))
    assert (again.inserted, again.unchanged, again.skipped) == (0, 12, 0)
    moved = tmp_path / "moved.csv"
    moved.write_text("name,email,city\n" + "".join(f"C{n},{e},Hangzhou\n" for n, e in enumerate(emails)),
                     encoding="utf-8")
    report = import_file(crm, "customers", moved, ImportOptions(key="email"))
    assert (report.inserted, report.updated, report.skipped) == (0, 12, 0)
    assert crm.customers.count() == 12
    assert {c.city for c in crm.customers.list({})} == {"Hangzhou"}
