"""``crm demo``: a realistic demo CRM on the configured database (SQLite by default)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import click
from sqlalchemy import inspect
from sqlalchemy.engine import make_url

from ..domain.errors import CRMError, NotFound, ValidationError
from .params import COUNT, SIGNED
from .context import Session, pass_session

if TYPE_CHECKING:
    from ..app import CRM

WIN_BACK_SEGMENTS = ("At Risk", "Can't Lose", "Hibernating", "About to Sleep")
# The rules segmenter has nothing to do without rules: the demo brings two.
DEMO_RULES = {
    "rules": {
        "East China VIP": 'region in ("华东", "华北") and total_spend >= 10000 and last_purchase_days < 180',
        "Unhappy": "complaints_90d >= 1",
    },
    "default": "Other",
}
DEMO_TOML = """
# Written by `crm demo`: its rules segments, unsubscribe links and locales.
[segments.rules]
default = "Other"

[segments.rules.rules]
"East China VIP" = 'region in ("华东", "华北") and total_spend >= 10000 and last_purchase_days < 180'
"Unhappy" = "complaints_90d >= 1"

[notify]
unsubscribe_secret = "demo-only-secret"  # demo only: use unsubscribe_secret_env in production
unsubscribe_url = "https://crm.example.com/unsubscribe/{token}"

[notify.locales]
CN = "zh-CN"
"""


@click.command("demo")
@click.option("--customers", type=COUNT, default=5000, show_default=True, help="Customers to create.")
@click.option("--seed", type=SIGNED, default=42, show_default=True, help="Random seed (same seed, same data).")
@click.option("--currency", default="CNY", show_default=True, help="Currency of the demo deals.")
@click.option("--force", is_flag=True, help="Replace an existing database.")
@click.option("--output-dir", type=click.Path(file_okay=False), default="demo-output", show_default=True,
              help="Where reports and the notification file go.")
@pass_session
def demo(session: Session, customers: int, seed: int, currency: str, force: bool, output_dir: str) -> None:
    """Create a demo CRM: customers, deals, segments, points, messages, reports."""
    from ..app import CRM
    from ..demo import DemoSize, populate

    started = time.perf_counter()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = _demo_config(session.config(), out, currency)
    _clear(config.database_url, force)
    wrote_config = _write_config(session, config, out)
    end = _end_of_data(session)
    clock = [end]
    size = DemoSize(customers=customers, interactions=customers * 10, deals=customers * 4)
    crm = CRM.open(config=config, clock=lambda: clock[0])
    try:
        def progress(step: str) -> None:
            if session.verbose:
                click.echo(f"  {step}", err=True)

        counts = populate(crm, seed, size, end, lambda moment: clock.__setitem__(0, moment), progress=progress)
        lines = [f"database       {config.database_url}",
                 "data           " + ", ".join(f"{v:,} {k}" for k, v in counts.items())]
        lines += _users(crm)
        lines += _segments(crm, end)
        lines += _loyalty(crm, end)
        lines += _messages(crm, end)
        lines += _reports(crm, end, out)
        if wrote_config:
            lines.append(f"configuration  wrote {wrote_config} (currency, phone region, file channel, rules, unsubscribe links) for what follows")
        lines.append(f"done in {time.perf_counter() - started:.1f}s; try: crm --db {config.database_url} "
                     "--as wang.fang customer list --limit 5")
    finally:
        crm.close()
    click.echo("\n".join(lines))


def _users(crm: Any) -> list[str]:
    """Who the demo's users are and how many customers each one sees (record visibility)."""
    from ..demo import TEAMS, USERS

    seen = []
    for login, _, role in USERS:
        if login in ("admin", "li.wei", "wang.fang", "sun.mei"):
            with crm.acting_as(login):
                seen.append(f"{login} ({role}) {crm.customers.count():,}")
    return [f"users          {len(USERS)} users, teams {', '.join(t[0] for t in TEAMS)}; "
            f"customers each sees: {'; '.join(seen)}"]


def _end_of_data(session: Session) -> datetime:
    if session.as_of_text:
        from ..application.clock import parse_as_of

        return parse_as_of(session.as_of_text)
    today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(microseconds=1)


def _demo_config(config: Any, out: Path, currency: str) -> Any:
    options = {family: dict(table) for family, table in config.options.items()}
    channels = options.setdefault("channels", {})
    channels.setdefault("file", {"path": str(out / "outbox.jsonl")})
    segments = options.setdefault("segments", {})
    segments.setdefault("rules", DEMO_RULES)
    # Marketing mail carries a signed unsubscribe link; Chinese customers read Chinese.
    notify = attrs.evolve(config.notify, unsubscribe_secret=config.notify.unsubscribe_secret or "demo-only-secret",
                          unsubscribe_url="https://crm.example.com/unsubscribe/{token}",
                          locales={"CN": "zh-CN", **config.notify.locales})
    return attrs.evolve(config, options=options, default_currency=currency.upper(), notify=notify)


def _write_config(session: Session, config: Any, out: Path) -> Path | None:
    """Leave a crm.toml matching the demo when there is none, so later commands agree with it."""
    from .config_cmds import STARTER

    target = Path("crm.toml")
    if session.config_file or target.exists():
        return None
    text = STARTER.replace('database_url = "sqlite:///crm.db"', f'database_url = "{config.database_url}"')
    text = text.replace('default_currency = "CNY"', f'default_currency = "{config.default_currency}"')
    text = text.replace('# default_user = "li.wei"', 'default_user = "admin"  # the demo\'s administrator')
    text = text.replace('# [channels.file]\n# path = "outbox.jsonl"',
                        f'[channels.file]\npath = "{(out / "outbox.jsonl").as_posix()}"')
    target.write_text(text + DEMO_TOML, encoding="utf-8")
    return target


def _clear(url: str, force: bool) -> None:
    from ..store.engine import make_engine
    from ..store.maintenance import drop_all_tables

    parsed = make_url(url) if "://" in url else None
    if parsed is not None and parsed.get_backend_name() == "sqlite" and parsed.database:
        path = Path(parsed.database)
        if path.exists() and path.stat().st_size:
            if not force:
                raise CRMError(f"{path} already exists; use --force to replace it with the demo")
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    engine = make_engine(url)
    try:
        tables = inspect(engine).get_table_names()
    finally:
        engine.dispose()
    if tables and not force:
        raise CRMError(f"database {url} has {len(tables)} tables; use --force to drop them for the demo")
    if tables:
        drop_all_tables(url)


def _segments(crm: CRM, end: datetime) -> list[str]:
    lines = []
    for segmenter in crm.segments.strategies():
        run = crm.segments.run(segmenter.name, as_of=end)
        top = sorted((run.counts or {}).items(), key=lambda kv: -kv[1])[:4]
        lines.append(f"segments       {segmenter.name}: {run.members:,} customers; "
                     + ", ".join(f"{k} {v:,}" for k, v in top))
    return lines or ["segments       (no segmentation plugin enabled)"]


def _loyalty(crm: CRM, end: datetime) -> list[str]:
    """Expire points past their expiry, run the schemes' periodic jobs (tiers, birthdays, referrals)
    and summarise points and tiers (points held: what is left after expiry)."""
    if not crm.loyalty.schemes():
        return ["loyalty        (no loyalty plugin enabled)"]
    # The nightly expiry job, once for the whole history: "points held" excludes expired points.
    def held() -> int:
        return sum(sum(crm.loyalty.balances(scheme.name).values()) for scheme in crm.loyalty.schemes())

    before = held()
    batches = crm.loyalty.expire(as_of=end)
    lines = [f"loyalty        expiry job as of the demo's end: {before - held():,} points expired "
             f"({batches:,} batches past their expiry)"]
    jobs = crm.loyalty.run(as_of=end)
    for scheme in crm.loyalty.schemes():
        balances = crm.loyalty.balances(scheme.name)
        if any(balances.values()):
            lines.append(f"loyalty        {scheme.name}: {sum(balances.values()):,} points held by "
                         f"{sum(1 for b in balances.values() if b):,} customers")
    tiers = [row for row in crm.loyalty.tier_distribution() if row["tier"]]
    if tiers:
        lines.append("loyalty        tiers: " + ", ".join(f"{row['tier']} {row['members']:,}" for row in tiers))
    lines.append("loyalty        jobs as of the demo's end: " + ", ".join(f"{k} {v:,}" for k, v in jobs.items()))
    return lines


def _messages(crm: CRM, end: datetime) -> list[str]:
    """Thank-you mails for last month's wins and a win-back campaign, rendered from the built-in templates."""
    if "file" not in crm.notify.registry:
        return ["notifications  (no file channel enabled)"]
    recent = crm.deals.list({"stage": "won", "closed_at__ge": (end - timedelta(days=30)).isoformat()}, limit=None)
    with crm.unit() as uow:  # one transaction for the whole batch of thank-you messages
        for deal in recent:
            crm.messages.enqueue(uow, "thank-you", deal.customer_id, channel="file", key=f"demo:thanks:{deal.id}",
                                 extra={"deal": deal})
    win_back = 0
    if "rfm" in crm.segments.registry:
        for segment in WIN_BACK_SEGMENTS:
            try:
                campaign = crm.campaigns.run("win-back", segment, strategy="rfm", channel="file", as_of=end)
            except (NotFound, ValidationError):  # a small demo may leave a segment empty (not in the run)
                continue
            win_back += campaign.enqueued
    crm.notify.dispatch()
    path = crm.config.component_options("channels", "file").get("path")
    status = crm.notify.status_counts()
    return [f"notifications  {len(recent):,} thank-you + {win_back:,} win-back (campaign to {len(WIN_BACK_SEGMENTS)} "
            f"RFM segments, marketing consent only) queued; {status.get('sent', 0):,} sent to {path}"]


def _reports(crm: CRM, end: datetime, out: Path) -> list[str]:
    """Every report as a text table and CSV, and the HTML dashboard (tables and charts) in out/dashboard/."""
    reports = crm.reports.list()
    if not reports:
        return ["reports        (no report plugin enabled)"]
    written = []
    for report in reports:
        for fmt in ("table", "csv"):
            if fmt in crm.reports.renderers:
                written.append(crm.reports.write(report.name, out / f"{report.name}.{_extension(crm, fmt)}",
                                                 format=fmt, as_of=end))
    lines = [f"reports        {len(written)} files in {out}/ (e.g. {out / 'pipeline.txt'})"]
    if "html" in crm.reports.renderers:
        entries = crm.reports.dashboard(out / "dashboard", as_of=end)
        lines.append(f"dashboard      {out / 'dashboard' / 'index.html'}: {sum(1 for e in entries if e.file)} "
                     "HTML reports with charts")
    return lines


def _extension(crm: CRM, fmt: str) -> str:
    return crm.reports.renderers.get(fmt).extension
