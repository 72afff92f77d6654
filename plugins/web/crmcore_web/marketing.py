"""What the segments, campaigns and outbox pages show, through the same services as the CLI
and the API: ``crm.segments`` (run, runs, members), ``crm.campaigns`` (plan, run),
``crm.messages`` (templates, preview) and ``crm.notify`` (channels, outbox).  Each asks
``authorize``, reads only the user's visible records and writes the audit trail itself.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

import crmcore

if TYPE_CHECKING:
    from crmcore import CRM

#: The purposes a campaign may have (consent is asked per purpose).
PURPOSES = ("marketing", "transactional")
#: Outbox rows per page.
OUTBOX_PAGE = 50


def end_of(crm: "CRM", day: date | None) -> datetime | None:
    """The end of ``day`` in the CRM's zone (a run or plan "as of" a date), None for now."""
    if day is None:
        return None
    return datetime.combine(day + timedelta(days=1), time.min, tzinfo=crm.as_of().tzinfo)


# -- segments -------------------------------------------------------------------------------

def movement(run: crmcore.SegmentRun | None, previous: crmcore.SegmentRun | None) -> list[dict[str, Any]]:
    """Each segment's size in ``run`` beside the ``previous`` run's (the run records its counts)."""
    if run is None:
        return []
    now, before = run.counts or {}, (previous.counts or {}) if previous is not None else {}
    return [{"segment": name, "members": now.get(name, 0), "before": before.get(name, 0) if previous else None,
             "change": now.get(name, 0) - before.get(name, 0) if previous else None}
            for name in sorted(set(now) | set(before))]


def strategy_runs(crm: "CRM", strategy: str) -> dict[str, Any]:
    """A strategy's latest run, the one before, and each segment's movement between them."""
    found = crm.segments.runs(strategy, limit=2)
    latest = found[0] if found else None
    previous = found[1] if len(found) > 1 else None
    return {"strategy": strategy, "run": latest, "previous": previous, "sizes": movement(latest, previous)}


def segments_page(crm: "CRM") -> dict[str, Any]:
    """Every strategy with its latest run (``segment.strategies`` and ``segment.runs``)."""
    strategies = [s.name for s in crm.segments.strategies()]
    return {"strategies": [strategy_runs(crm, name) for name in strategies]}


def run_strategy(crm: "CRM", strategy: str, as_of: date | None) -> dict[str, Any]:
    """Run ``strategy`` (``crm.segments.run``: ``segment.run``, audited, events) with its
    configured options, and show it beside the run before."""
    crm.segments.run(strategy, as_of=end_of(crm, as_of))
    return strategy_runs(crm, strategy)


# -- campaigns ------------------------------------------------------------------------------

def segment_choices(crm: "CRM") -> list[str]:
    """``STRATEGY:SEGMENT`` of every segment of each strategy's latest run."""
    choices = []
    for strategy in crm.segments.strategies():
        for run in crm.segments.runs(strategy.name, limit=1):
            choices += [f"{run.strategy}:{name}" for name in sorted(run.counts or {})]
    return choices


def campaign_form(crm: "CRM") -> dict[str, Any]:
    """What the campaign form offers: templates (with their locales), segments, channels, purposes."""
    return {"templates": crm.messages.templates(), "segments": segment_choices(crm),
            "channels": [c.name for c in crm.notify.channels()], "default_channel": crm.config.notify.channel,
            "purposes": PURPOSES}


def previews(crm: "CRM", template: str, plan: Any) -> dict[str, Any]:
    """The message rendered for the segment's first member the user may see, in each of the
    template's locales (``crm.messages.preview``: ``notify.preview``)."""
    sample = next(crm.segments.iter_members(plan.strategy, plan.segment, plan.run_id, customer_fields=True,
                                            limit=1), None)
    if sample is None:
        return {"sample": None, "rendered": []}
    locales: list[str] = next((t["locales"] for t in crm.messages.templates() if t["template"] == template), [])
    rendered = []
    for locale in locales:
        try:
            rendered.append({"locale": locale, "message": crm.messages.preview(template, sample["customer_id"],
                                                                              locale=locale), "error": None})
        except crmcore.CRMError as error:  # a template that cannot render (TemplateError) says so, per locale
            rendered.append({"locale": locale, "message": None, "error": str(error)})
    return {"sample": sample, "rendered": rendered}


def plan_campaign(crm: "CRM", template: str, segment: str, channel: str, purpose: str,
                  as_of: date | None) -> dict[str, Any]:
    """The campaign's counts without queueing (``crm.campaigns.plan``) and its previews."""
    plan = crm.campaigns.plan(template, segment, channel=channel or None, purpose=purpose, as_of=end_of(crm, as_of))
    return {"plan": plan, **previews(crm, template, plan)}


def queue_campaign(crm: "CRM", template: str, segment: str, channel: str, purpose: str,
                   as_of: date | None) -> dict[str, Any]:
    """Queue the campaign (``crm.campaigns.run``: ``notify.campaign``, consent, idempotent keys,
    one audit record per batch); queueing it again adds nothing."""
    plan = crm.campaigns.run(template, segment, channel=channel or None, purpose=purpose, as_of=end_of(crm, as_of))
    return {"plan": plan, "sample": None, "rendered": []}


# -- outbox ---------------------------------------------------------------------------------

def outbox_page(crm: "CRM", status: str | None, before: int | None) -> dict[str, Any]:
    """A page of the outbox, newest first (``crm.notify.outbox``: ``notify.outbox``, visibility)."""
    rows = crm.notify.outbox(status=status or None, limit=OUTBOX_PAGE + 1, before_id=before)
    following = rows[OUTBOX_PAGE - 1]["id"] if len(rows) > OUTBOX_PAGE else None
    return {"messages": rows[:OUTBOX_PAGE], "status_filter": status or "", "next": following}
