"""The contract every segmenter obeys (:class:`SegmenterContract`)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from .base import Contract
from .data import FIXED_NOW, generate


class SegmenterContract(Contract):
    """Subclass and provide ``component`` (a :class:`crmcore.Segmenter`).

    Runs the strategy on a generated database (``seeded_crm``), on an empty one
    (``contract_crm``) and checks: at most one membership per customer and
    only existing customers, the run's counts match its members, ``explain``
    answers for a member and for a non-member with JSON-serialisable data.

    Optional fixtures (see :class:`~crmcore.contracts.base.Contract` for
    ``contract_config`` and ``contract_crm``):

    * ``seeded_crm``: a CRM with the segmenter registered and customers to
      segment; default: ``contract_crm`` filled by
      :func:`crmcore.contracts.generate`.  Override it when the strategy needs
      data of its own (custom fields, a second pipeline, ...).
    """

    family = "segments"

    @pytest.fixture
    def seeded_crm(self, contract_crm: Any) -> Any:
        """``contract_crm`` with generated customers, deals and interactions."""
        generate(contract_crm)
        return contract_crm

    def test_run_assigns_every_customer_at_most_once(self, seeded_crm: Any, component: Any) -> None:
        """Each customer is in at most one segment; only existing customers; counts match."""
        run = seeded_crm.segments.run(component.name, as_of=FIXED_NOW)
        members = seeded_crm.segments.members(component.name, run_id=run.id)
        ids = [m["customer_id"] for m in members]
        assert len(ids) == len(set(ids)) == run.members, "a customer has more than one membership in a run"
        assert set(ids) <= {c.id for c in seeded_crm.customers.list()}
        assert all(isinstance(m["segment"], str) and m["segment"] for m in members), "empty segment name"
        assert (run.counts or {}) == dict(Counter(m["segment"] for m in members))
        assert members, "the strategy put none of the generated customers in a segment"

    def test_explain_member(self, seeded_crm: Any, component: Any) -> None:
        """``explain`` of a member names their segment and says why (JSON-serialisable)."""
        run = seeded_crm.segments.run(component.name, as_of=FIXED_NOW)
        member = seeded_crm.segments.members(component.name, run_id=run.id)[0]
        answer = seeded_crm.segments.explain(component.name, member["customer_id"], run_id=run.id)
        assert answer["segment"] == member["segment"]
        assert isinstance(answer["explanation"], dict)
        json.dumps(answer["explanation"], default=str)

    def test_explain_non_member(self, seeded_crm: Any, component: Any) -> None:
        """``explain`` of a customer outside the run answers (segment None) rather than failing."""
        run = seeded_crm.segments.run(component.name, as_of=FIXED_NOW)
        newcomer = seeded_crm.customers.add(name="Contract newcomer")  # added after the run
        answer = seeded_crm.segments.explain(component.name, newcomer.id, run_id=run.id)
        assert answer["segment"] is None
        assert isinstance(answer["explanation"], dict)
        json.dumps(answer["explanation"], default=str)

    def test_rerun_on_the_same_data_changes_nothing(self, seeded_crm: Any, component: Any) -> None:
        """A second run as of the same moment on unchanged data gives the same memberships."""
        first = seeded_crm.segments.run(component.name, as_of=FIXED_NOW)
        second = seeded_crm.segments.run(component.name, as_of=FIXED_NOW)
        assert (second.entered, second.left, second.moved) == (0, 0, 0), seeded_crm.segments.diff(
            first.id, second.id)

    def test_empty_database(self, contract_crm: Any, component: Any) -> None:
        """A run with no customers at all records an empty run instead of failing."""
        run = contract_crm.segments.run(component.name, as_of=FIXED_NOW)
        assert run.members == 0
        assert contract_crm.segments.members(component.name, run_id=run.id) == []
