"""Templated messages on the command line: ``crm notify preview|templates|campaign|
run-scheduled|unsubscribe|unsubscribe-url`` and ``crm customer unsubscribe|
resubscribe|consent``.

The commands join the ``notify`` and ``customer`` groups (defined elsewhere)
with ``add_command``, so delivery commands and these grow independently.
"""

from __future__ import annotations

from typing import Any, TypedDict

import attrs
import click

from ..notify.consent import EVERY_CHANNEL
from ..segments.reference import SegmentRef
from .params import ID, SEGMENT
from .context import Session, pass_session, read_only
from .entities import customer, resolve_customer
from .notify_cmds import notify

PURPOSE = click.Choice(["marketing", "transactional"])


def _as_of(session: Session, as_of: str | None) -> str | None:
    """The command's own --as-of, else the global one."""
    return as_of or session.as_of_text


@read_only
@click.command("preview")
@click.argument("template")
@click.argument("customer_ref", metavar="CUSTOMER")
@click.option("--locale", help="Render in this locale (default: the customer's).")
@click.option("--deal", "deal_id", type=ID, help="Make this deal the template's `deal`.")
@click.option("--as-of", "as_of", metavar="DATE", help="Treat this date/time as now.")
@pass_session
def preview(session: Session, template: str, customer_ref: str, locale: str | None, deal_id: int | None,
            as_of: str | None) -> None:
    """Render TEMPLATE for CUSTOMER without sending anything."""
    cid = resolve_customer(session, customer_ref)
    rendered = session.crm.messages.preview(template, cid, locale=locale, deal_id=deal_id,
                                            as_of=_as_of(session, as_of))
    if session.as_json:
        session.emit_object(attrs.asdict(rendered))
        return
    click.echo(f"Template: {rendered.template} ({rendered.locale})")
    click.echo(f"Subject:  {rendered.subject}")
    click.echo("")
    click.echo(rendered.text.rstrip("\n"))
    if rendered.html is not None:
        click.echo("\n--- html ---")
        click.echo(rendered.html.rstrip("\n"))


@read_only
@click.command("templates")
@pass_session
def templates(session: Session) -> None:
    """List message templates and their locales."""
    session.emit(session.crm.messages.templates(), columns=["template", "locales"])


class _CampaignArgs(TypedDict):
    """The arguments ``crm.campaigns.plan`` and ``run`` share."""

    template: str
    segment: str
    strategy: str | None
    channel: str | None
    purpose: str
    name: str | None
    as_of: str | None


@click.command("campaign")
@click.argument("template")
@click.option("--segment", required=True, type=SEGMENT, metavar="[STRATEGY:]SEGMENT",
              help="The segment (the latest run of its strategy); STRATEGY: when several strategies have it.")
@click.option("--strategy", help="The segmentation strategy (the same as STRATEGY: in --segment).")
@click.option("--channel", help="Channel (default: [notify] channel).")
@click.option("--purpose", type=PURPOSE, default="marketing", show_default=True)
@click.option("--name", help="Campaign name for idempotency keys (default: template, segment and run).")
@click.option("--dry-run", is_flag=True, help="Only show the counts.")
@click.option("--as-of", "as_of", metavar="DATE", help="Use the latest segment run up to this date.")
@pass_session
def campaign(session: Session, template: str, segment: SegmentRef, strategy: str | None, channel: str | None,
             purpose: str, name: str | None, dry_run: bool, as_of: str | None) -> None:
    """Queue TEMPLATE for every eligible customer of a segment (counts first)."""
    engine = session.crm.campaigns
    args: _CampaignArgs = {"template": template, "segment": str(segment), "strategy": strategy, "channel": channel, "purpose": purpose,
                "name": name, "as_of": _as_of(session, as_of)}
    plan = engine.plan(**args)
    if not session.as_json:
        session.echo(f"campaign {plan.name}: {plan.members} members, {plan.eligible} eligible, "
                     f"{plan.skipped_consent} skipped for consent, {plan.duplicates} already queued")
    result = plan if dry_run else engine.run(**args)
    columns = ["name", "members", "eligible", "skipped_consent", "duplicates", "enqueued", "dead", "dry_run"]
    session.emit_one(attrs.asdict(result), columns=columns)


@click.command("run-scheduled")
@click.option("--as-of", "as_of", metavar="DATE", help="The day to run for (default: today).")
@pass_session
def run_scheduled(session: Session, as_of: str | None) -> None:
    """The daily job: birthday greetings and other date-driven triggers."""
    queued = session.crm.messages.run_scheduled(_as_of(session, as_of))
    session.emit_one({"enqueued": queued})


@click.command("unsubscribe")
@click.argument("token")
@pass_session
def unsubscribe_token(session: Session, token: str) -> None:
    """Process an unsubscribe TOKEN (from the link in a marketing message)."""
    decision = session.crm.messages.unsubscribe(token, source="cli-token")
    session.emit_one(attrs.asdict(decision))


@read_only
@click.command("unsubscribe-url")
@click.argument("customer_ref", metavar="CUSTOMER")
@click.option("--channel", default=EVERY_CHANNEL, show_default=True)
@click.option("--purpose", type=PURPOSE, default="marketing", show_default=True)
@pass_session
def unsubscribe_url(session: Session, customer_ref: str, channel: str, purpose: str) -> None:
    """Print CUSTOMER's signed unsubscribe link."""
    cid = resolve_customer(session, customer_ref)
    url = session.crm.messages.unsubscribe_url(cid, channel, purpose)
    if session.as_json:
        session.emit_object({"customer_id": cid, "channel": channel, "purpose": purpose, "url": url})
    else:
        click.echo(url)


def _consent_command(name: str, granted: bool) -> click.Command:
    @click.command(name)
    @click.argument("customer_ref", metavar="CUSTOMER")
    @click.option("--channel", default=EVERY_CHANNEL, show_default=True, help="A channel name, or * for all.")
    @click.option("--purpose", type=PURPOSE, default="marketing", show_default=True)
    @click.option("--source", default="cli", show_default=True, help="Where the decision came from.")
    @pass_session
    def command(session: Session, customer_ref: str, channel: str, purpose: str, source: str) -> None:
        cid = resolve_customer(session, customer_ref)
        decision = session.crm.messages.set_consent(cid, granted, channel, purpose, source, at=session.as_of_text)
        session.emit_one(attrs.asdict(decision))

    command.help = (f"{'Withdraw' if not granted else 'Give'} CUSTOMER's consent to {{purpose}} messages "
                    "through a channel (default: every channel).").format(purpose="--purpose")
    return command


@read_only
@click.command("consent")
@click.argument("customer_ref", metavar="CUSTOMER")
@click.option("--history", is_flag=True, help="Every decision ever recorded, oldest first, not only the standing ones.")
@pass_session
def show_consent(session: Session, customer_ref: str, history: bool) -> None:
    """CUSTOMER's standing consent decisions (the latest per channel and purpose), or with
    --history every decision recorded."""
    cid = resolve_customer(session, customer_ref)
    found = session.crm.messages.consent_history(cid) if history else session.crm.messages.consents(cid)
    rows: list[dict[str, Any]] = [attrs.asdict(d) for d in found]
    session.emit(rows, columns=None if session.as_json else
                 ["channel", "purpose", "granted", "source", "recorded_at", "actor"])


for _command in (preview, templates, campaign, run_scheduled, unsubscribe_token, unsubscribe_url):
    notify.add_command(_command)
customer.add_command(_consent_command("unsubscribe", granted=False))
customer.add_command(_consent_command("resubscribe", granted=True))
customer.add_command(show_consent)
