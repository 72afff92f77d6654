"""The API's fast encodings give what the general ones give: a record's fields rendered by orjson
are the JSON of ``record()`` (json and cattrs), an ETag is the same version whichever form it is
computed from, and SQLite's times are read as SQLAlchemy's reader reads them."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal

import pytest
from sqlalchemy.dialects import sqlite

from crmcore.domain.versions import version_of, version_of_data
from crmcore.store.types import UTCDateTime
from crmcore.web.encoding import dumps, fields, record


@pytest.fixture
def records(crm_factory):
    crm = crm_factory(config={"default_currency": "CNY"})
    customer = crm.customers.add(
        name="张伟 \"quoted\" \\ ✓", kind="company", email="zhang@example.com", phone="+8613291417776",
        country="CN", region="华东", city="上海", stage="prospect", birthday="1990-02-03",
        consent_marketing=True, tags=["vip", "批发"], attributes={"会员": "金", "n": 3, "f": 1.5, "l": [1, None]},
        external_id="EXT-1")
    bare = crm.customers.add(name="Bare")
    contact = crm.contacts.add(customer_id=customer.id, name="李", email="li@example.com", is_primary=True)
    interaction = crm.interactions.add(customer_id=customer.id, kind="call", occurred_at="2026-01-02T03:04:05.123456Z",
                                       subject="你好")
    deal = crm.deals.add(customer_id=customer.id, title="大单", amount=Decimal("1234.5"), stage="won",
                         expected_close="2026-09-30", attributes={"k": [1, 2]})
    yen = crm.deals.add(customer_id=bare.id, title="yen", amount=Decimal("12000"), currency="JPY", stage="lead")
    crm.customers.delete(bare.id)
    return [crm.customers.get(customer.id), crm.customers.get(bare.id), crm.contacts.get(contact.id),
            crm.interactions.get(interaction.id), crm.deals.get(deal.id), crm.deals.get(yen.id)]


def test_fields_render_as_record(records):
    for entity in records:
        assert json.loads(dumps(fields(entity))) == record(entity)
        assert version_of(entity) == version_of_data(record(entity))


def test_what_orjson_refuses_is_encoded_by_json():
    huge = {"n": 2**70, "s": "x"}
    assert json.loads(dumps(huge)) == huge
    assert version_of_data(huge) == version_of_data(json.loads(json.dumps(huge)))


@pytest.mark.parametrize("stored, expected", [
    ("2026-12-06 00:23:28.123456", datetime(2026, 12, 6, 0, 23, 28, 123456, tzinfo=timezone.utc)),
    ("2026-12-06 00:23:28", datetime(2026, 12, 6, 0, 23, 28, tzinfo=timezone.utc)),
    ("2026-12-06T08:00:00+08:00", datetime(2026, 12, 6, 0, 0, tzinfo=timezone.utc)),
    (None, None),
])
def test_sqlite_times_read_as_aware_utc(stored, expected):
    read = UTCDateTime().result_processor(sqlite.dialect(), None)
    assert read(stored) == expected
