"""Property-based fuzzing of the whole HTTP API (schemathesis) against a real ``crm serve``.

Every operation ``/openapi.json`` lists (read from the running server, so routes other
modules add are covered without naming them here) gets positive and negative data, as an
admin and as a sales rep (whose requests meet 403 and the 404 of records they may not see).
Each response must not be a server error and must match the document: status code, content
type, headers and body schema.  Bounded for CI: a fixed number of examples per operation and
phase, derandomised, so a run is the same every time and takes a few seconds per database.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import USERS, Api

# Declared custom fields of every kind, so the generated models' typed `attributes` are fuzzed too.
API_TOML = """
[[custom_fields]]
entity = "customer"
name = "tier"
type = "choice"
choices = ["gold", "silver"]

[[custom_fields]]
entity = "customer"
name = "credit_limit"
type = "decimal"

[[custom_fields]]
entity = "customer"
name = "visits"
type = "int"

[[custom_fields]]
entity = "customer"
name = "since"
type = "date"

[[custom_fields]]
entity = "deal"
name = "vip"
type = "bool"

# Unsubscribe links configured, as in production (without a secret the page answers 503).
[notify]
unsubscribe_secret = "fuzz-secret"
unsubscribe_url = "https://crm.example.com/unsubscribe?token={token}"
"""

#: Examples per operation and phase: enough to reach every parameter, small enough for CI.
MAX_EXAMPLES = 5
#: A fixed seed: the same cases every run.
SEED = 20240516

CHECKS = ("not_a_server_error", "response_schema_conformance", "status_code_conformance",
          "content_type_conformance", "response_headers_conformance", "negative_data_rejection", "ignored_auth")


@pytest.fixture
def seeded(api: Api) -> dict[str, int]:
    """A few real rows (some owned by rita, some not) so ids in paths hit records: fresh ones for
    each run, as a run deletes and archives what it finds."""
    crm = api.crm
    ids: dict[str, int] = {}
    for i, owner in enumerate(("rita", "max", "rita")):
        customer = crm.customers.add(name=f"fuzz-{i}", email=f"fuzz{i}@example.com", owner=owner,
                                     attributes={"tier": "gold", "visits": i})
        ids.setdefault(f"customer_{owner}", customer.id)
    customer_id = ids["customer_rita"]
    ids["contact"] = crm.contacts.add(customer_id=customer_id, name="Fuzz Contact").id
    ids["interaction"] = crm.interactions.add(customer_id=customer_id, kind="call", subject="fuzz",
                                              occurred_at="2024-05-01T10:00:00Z").id
    ids["deal"] = crm.deals.add(customer_id=customer_id, title="Fuzz deal", amount="1200.50", currency="EUR",
                                stage="lead", owner="rita").id
    return ids


def schemathesis_config(token: str, ids: list[int]) -> str:
    """The run's ``schemathesis.toml``: every phase but the stateful one, bounded and derandomised.

    Dictionaries steer part of the generated values to real data (seeded ids, users, stages,
    currencies), so requests get past "not found" and "unknown user" into the write paths.
    """
    checks = "\n".join(f"[checks.{name}]\nenabled = true" for name in CHECKS)
    return f"""
seed = {SEED}
workers = 1
request-timeout = 30
max-failures = 20

[headers]
Authorization = "Bearer {token}"

[generation]
mode = "all"
max-examples = {MAX_EXAMPLES}
deterministic = true
database = "none"

[dictionaries.ids]
values = {ids}

[dictionaries.logins]
values = {list(USERS)}

[dictionaries.stages]
values = ["lead", "qualified", "proposal", "won", "lost"]

[dictionaries.currencies]
values = ["EUR", "USD", "CNY"]

[dictionaries.emails]
values = ["li.na@example.com", "Ana.Lopez@Example.org", "用户@例子.中国"]

[dictionaries.countries]
values = ["DE", "CN", "US", "BR"]

[parameters]
"path.id" = {{ dictionary = "ids", probability = 0.6 }}
"body.customer_id" = {{ dictionary = "ids", probability = 0.6 }}
"body.contact_id" = {{ dictionary = "ids", probability = 0.3 }}
"body.owner" = {{ dictionary = "logins", probability = 0.6 }}
"body.stage" = {{ dictionary = "stages", probability = 0.6 }}
"body.currency" = {{ dictionary = "currencies", probability = 0.6 }}
"body.email" = {{ dictionary = "emails", probability = 0.5 }}
"body.country" = {{ dictionary = "countries", probability = 0.5 }}

[phases.stateful]
enabled = false

[checks]
enabled = false
{checks}
"""


def test_every_operation_answers_as_documented(api: Api, seeded: dict[str, int], api_db_url: str,
                                               tmp_path: Path) -> None:
    """As an admin on every database; as a sales rep (the 403 and 404 paths, which do not depend
    on the database) on SQLite, to keep the suite's time in bounds."""
    for user in ("ann", "rita") if api_db_url.startswith("sqlite") else ("ann",):
        config = tmp_path / f"schemathesis-{user}.toml"
        config.write_text(schemathesis_config(api.tokens[user], sorted(set(seeded.values()))), encoding="utf-8")
        # The command line, not schemathesis' pytest plugin: the plugin's lazy (fixture) schemas do not
        # run under this pytest, and the command line runs the coverage phase (boundary and negative
        # values of every parameter) as well as the fuzzing one.
        run = subprocess.run([sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run",
                              "--no-color", f"{api.base_url}/openapi.json"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, f"as {user}:\n" + run.stdout[-20000:] + run.stderr[-5000:]
