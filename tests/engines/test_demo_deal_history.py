"""Issue 13 point 24b: the demo's deals are created before they close and move through the
stages, so the win-loss report's cycle days and the funnel's times between stages are not blank.

The demo generator (``crmcore.demo.populate``) at a reduced size, on SQLite, PostgreSQL and
MariaDB, with the loyalty and reports plugins the demo runs with.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import func, select

from crmcore.demo import DemoSize, populate
from crmcore.store import tables

END = datetime(2026, 6, 30, 23, 59, 59, tzinfo=timezone.utc)


def test_demo_deals_have_cycles_and_stage_times(crm_factory):
    clock = [END]
    crm = crm_factory(plugins=["loyalty", "reports"], clock=lambda: clock[0])
    counts = populate(crm, 7, DemoSize(customers=120, interactions=240, deals=600, months=4), END,
                      lambda moment: clock.__setitem__(0, moment))
    assert counts["deals"] == 600
    deals, history = tables.deals, tables.deal_stage_history
    with crm.unit(readonly=True) as uow:
        closed = uow.conn.execute(select(func.count()).where(deals.c.closed_at.is_not(None))).scalar_one()
        early = uow.conn.execute(select(func.count()).where(deals.c.closed_at < deals.c.created_at)).scalar_one()
        # Every deal's last history row is its current stage; a closed deal's is at its close.
        last = select(history.c.deal_id, func.max(history.c.id).label("id")).group_by(history.c.deal_id).subquery()
        rows = uow.conn.execute(select(deals.c.stage, deals.c.closed_at, history.c.to_stage, history.c.changed_at)
                                .select_from(deals.join(last, last.c.deal_id == deals.c.id)
                                             .join(history, history.c.id == last.c.id))).all()
        moves = uow.conn.execute(select(func.count()).select_from(history)).scalar_one()
    assert closed > 300 and early == 0
    assert len(rows) == 600 and all(r.stage == r.to_stage for r in rows)
    assert all(r.closed_at == r.changed_at for r in rows if r.closed_at is not None)
    assert moves > 2 * 600  # created in lead, then qualified, proposal, ...

    winloss = crm.reports.run("win-loss", as_of=END)
    cycle = [row[-1] for row in winloss.rows]
    assert cycle and all(days is not None and days > 0 for days in cycle), winloss.rows
    funnel = crm.reports.run("funnel", as_of=END)
    later_steps = funnel.rows[1:]
    assert [r[0] for r in funnel.rows] == ["lead", "qualified", "proposal", "negotiation", "won"]
    assert all(r[4] is not None and r[4] > 0 and r[5] > 0 for r in later_steps), funnel.rows
