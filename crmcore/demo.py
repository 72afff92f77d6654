"""The demo data set: realistic customers, contacts, interactions and deals.

Faker supplies names, companies and cities in zh_CN and en_US; everything else
is drawn from a seeded random generator, so a seed reproduces the data exactly.
Rows go in through the bulk use cases (``add_many``), month by month with the
clock set to that month, so timestamps spread over two years.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import attrs

REGIONS = {
    "华东": ["上海市", "江苏省", "浙江省", "安徽省", "福建省", "山东省"],
    "华北": ["北京市", "天津市", "河北省", "山西省", "内蒙古自治区"],
    "华南": ["广东省", "广西壮族自治区", "海南省"],
    "华中": ["河南省", "湖北省", "湖南省", "江西省"],
    "西南": ["重庆市", "四川省", "贵州省", "云南省"],
    "西北": ["陕西省", "甘肃省", "宁夏回族自治区", "新疆维吾尔自治区"],
    "东北": ["辽宁省", "吉林省", "黑龙江省"],
}
US_REGIONS = ["West", "Midwest", "Northeast", "South"]
CN_MOBILE_PREFIXES = [str(p) for p in (*range(130, 140), 150, 151, 152, 153, 155, 156, 157, 158, 159,
                                         *range(180, 190))]
US_AREA_CODES = ["212", "213", "312", "415", "617", "646", "713", "206", "305", "404"]
SOURCES = ["website", "referral", "trade show", "cold call", "wechat", "partner", "advertising"]
INDUSTRIES = ["retail", "manufacturing", "software", "education", "healthcare", "logistics", "finance"]
OWNERS = ["alice", "bob", "chen.jing", "li.wei", "wang.fang", "zhao.lei"]
# Who owns a customer follows the country: the China team's people own Chinese customers.
CN_OWNERS = ["li.wei", "wang.fang", "zhao.lei", "chen.jing"]
US_OWNERS = ["alice", "bob"]
#: The demo's users: login, display name, role (a role of the first-party access plugin).
USERS = (
    ("admin", "Administrator", "admin"),
    ("li.wei", "李伟", "manager"),
    ("wang.fang", "王芳", "sales-rep"),
    ("zhao.lei", "赵磊", "sales-rep"),
    ("chen.jing", "陈静", "sales-rep"),
    ("alice", "Alice Walker", "manager"),
    ("bob", "Bob Miller", "sales-rep"),
    ("sun.mei", "孙梅", "service-agent"),
    ("auditor", "Auditor", "read-only"),
)
#: Teams: name, manager, members and the regions they cover (the customers' region is the key).
TEAMS = (
    ("China", "li.wei", ("wang.fang", "zhao.lei", "chen.jing"), tuple(REGIONS)),
    ("Americas", "alice", ("bob",), tuple(US_REGIONS)),
)
#: A service agent covers regions of her own.
AGENT_REGIONS = {"sun.mei": ("华东", "华南")}
OPEN_STAGES = ["lead", "qualified", "proposal", "negotiation"]
LOST_REASONS = ["price", "competitor", "no budget", "timing", "no response"]
INTERACTION_KINDS = ["call", "email", "meeting", "visit", "message", "note", "complaint", "feedback"]
KIND_WEIGHTS = [25, 25, 10, 5, 15, 10, 5, 5]
SUBJECTS = {
    "call": ["跟进报价", "Follow-up call", "需求沟通", "Renewal check-in"],
    "email": ["报价单", "Proposal sent", "合同草案", "Invoice question"],
    "meeting": ["方案演示", "Quarterly review", "上门拜访", "Kick-off meeting"],
    "visit": ["现场考察", "Site visit"],
    "message": ["微信咨询", "Quick question", "发货时间"],
    "note": ["客户偏好记录", "Internal note"],
    "complaint": ["发货延迟", "Invoice error", "质量问题", "Late delivery"],
    "feedback": ["服务很好 👍", "Great support", "建议改进界面"],
}
AMOUNTS = [Decimal(x) for x in ("980", "1500", "2999", "4800", "8800", "12000", "25000", "68000")]


@attrs.frozen
class DemoSize:
    """How much to generate; the defaults are the README demo."""

    customers: int = 5000
    interactions: int = 50_000
    deals: int = 20_000
    months: int = 24


@attrs.define
class DemoData:
    """Generates rows for one seed; each method yields plain dicts for ``add_many``."""

    seed: int
    end: datetime
    rng: random.Random = attrs.field(init=False)
    move_rng: random.Random = attrs.field(init=False)
    fake: Any = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        from faker import Faker

        self.rng = random.Random(self.seed)
        self.move_rng = random.Random(f"{self.seed}:moves")
        self.fake = Faker(["zh_CN", "en_US"])
        self.fake.seed_instance(self.seed)

    def customers(self, count: int) -> Iterator[dict[str, Any]]:
        for i in range(count):
            yield self._chinese(i) if self.rng.random() < 0.7 else self._american(i)

    def _common(self, i: int) -> dict[str, Any]:
        rng = self.rng
        birthday = date(1960, 1, 1) + timedelta(days=rng.randrange(0, 365 * 45)) if rng.random() < 0.7 else None
        return {
            "external_id": f"demo-{i:06d}",
            "email": f"customer{i:06d}@example.{rng.choice(['com', 'cn', 'net'])}",
            "industry": rng.choice(INDUSTRIES),
            "source": rng.choice(SOURCES),
            "owner": rng.choice(OWNERS),
            "stage": rng.choices(["lead", "prospect", "customer", "former"], [15, 20, 60, 5])[0],
            "birthday": birthday,
            "consent_marketing": rng.random() < 0.65,
            "consent_sms": rng.random() < 0.9,
            "tags": rng.sample(["vip", "wholesale", "online", "offline", "newsletter"], k=rng.randrange(0, 3)),
        }

    def _chinese(self, i: int) -> dict[str, Any]:
        rng, zh = self.rng, self.fake["zh_CN"]
        region = rng.choice(list(REGIONS))
        company = rng.random() < 0.3
        common = self._common(i)
        common["owner"] = CN_OWNERS[OWNERS.index(common["owner"]) % len(CN_OWNERS)]
        return common | {
            "kind": "company" if company else "person",
            "name": zh.company() if company else zh.name(),
            "phone": f"+86 {rng.choice(CN_MOBILE_PREFIXES)} {rng.randrange(1000, 10000)} {rng.randrange(1000, 10000)}",
            "country": "CN", "region": region, "city": zh.city_name(),
        }

    def _american(self, i: int) -> dict[str, Any]:
        rng, en = self.rng, self.fake["en_US"]
        company = rng.random() < 0.3
        common = self._common(i)
        common["owner"] = US_OWNERS[OWNERS.index(common["owner"]) % len(US_OWNERS)]
        return common | {
            "kind": "company" if company else "person",
            "name": en.company() if company else en.name(),
            "phone": f"+1 {rng.choice(US_AREA_CODES)} {rng.randrange(201, 999)} {rng.randrange(1000, 10000)}",
            "country": "US", "region": rng.choice(US_REGIONS), "city": en.city(),
        }

    def contacts(self, customer_ids: list[int]) -> Iterator[dict[str, Any]]:
        zh, en = self.fake["zh_CN"], self.fake["en_US"]
        for cid in customer_ids:
            for n in range(self.rng.choice([1, 1, 2, 3])):
                chinese = self.rng.random() < 0.7
                yield {"customer_id": cid, "name": zh.name() if chinese else en.name(),
                       "title": self.rng.choice(["采购经理", "CEO", "财务", "IT Manager", "Buyer", "运营总监"]),
                       "email": f"contact{cid}.{n}@example.com", "is_primary": n == 0}

    def interactions(self, customer_ids: list[int], count: int, month_start: datetime,
                     month_end: datetime) -> Iterator[dict[str, Any]]:
        rng = self.rng
        span = (month_end - month_start).total_seconds()
        for _ in range(count):
            kind = rng.choices(INTERACTION_KINDS, KIND_WEIGHTS)[0]
            occurred = month_start + timedelta(seconds=rng.uniform(0, span))
            row = {"customer_id": rng.choice(customer_ids), "kind": kind, "occurred_at": occurred,
                   "direction": rng.choice(["inbound", "outbound"]), "owner": rng.choice(OWNERS),
                   "channel": rng.choice(["phone", "email", "wechat", "in person"]),
                   "subject": rng.choice(SUBJECTS[kind])}
            if kind in ("complaint", "feedback"):
                row["satisfaction"] = rng.randint(1, 5)
            if kind == "complaint" and rng.random() < 0.85:
                row["resolved_at"] = occurred + timedelta(hours=rng.expovariate(1 / 20))
            if kind in ("call", "meeting", "visit") and rng.random() < 0.3:
                row["follow_up_due"] = occurred + timedelta(days=rng.randint(3, 30))
            yield row

    def deals(self, customer_ids: list[int], count: int, month_start: datetime,
              month_end: datetime, currency: str) -> Iterator[dict[str, Any]]:
        rng = self.rng
        span = (month_end - month_start).total_seconds()
        # A few loyal customers buy far more often than the rest (a realistic long tail).
        weights = [1 + 20 * (cid % 17 == 0) + 5 * (cid % 5 == 0) for cid in customer_ids]
        for _ in range(count):
            cid = rng.choices(customer_ids, weights)[0]
            amount = rng.choice(AMOUNTS) + Decimal(rng.randrange(0, 100)) / 100
            closed = month_start + timedelta(seconds=rng.uniform(0, span))
            outcome = rng.choices(["won", "lost", "open"], [60, 15, 25])[0]
            row = {"customer_id": cid, "title": f"{rng.choice(['订单', 'Order', '续约', 'Renewal', '项目'])} "
                                                f"{rng.randrange(10000, 99999)}",
                   "amount": amount, "currency": currency, "owner": rng.choice(OWNERS),
                   "expected_close": (closed + timedelta(days=rng.randint(7, 90))).date()}
            if outcome == "open":
                row["stage"] = rng.choice(OPEN_STAGES)
            else:
                row |= {"stage": outcome, "closed_at": closed}
                if outcome == "lost":
                    row["lost_reason"] = rng.choice(LOST_REASONS)
            yield row

    def moves(self, deals: list[Any], rows: list[dict[str, Any]], until: datetime) -> list[dict[str, Any]]:
        """Stage moves taking each new deal (created in the first stage) to the stage its row
        describes: through the open stages in order (a lost deal drops out after some of them),
        at random times between its creation and its close (open deals: ``until``).

        Drawn from a generator of their own, so the customers, interactions and deals of a seed
        stay what they were before deals moved through stages.
        """
        rng = self.move_rng
        moves: list[dict[str, Any]] = []
        for deal, row in zip(deals, rows):
            final = row["stage"]
            if final in OPEN_STAGES:
                path = OPEN_STAGES[1:OPEN_STAGES.index(final) + 1]
            elif final == "won":
                path = [*OPEN_STAGES[1:], "won"]
            else:  # lost: after lead, qualified or proposal
                path = [*OPEN_STAGES[1:rng.randint(1, 3)], "lost"]
            end = row.get("closed_at") or until
            span = (end - deal.created_at).total_seconds()
            times = sorted(rng.uniform(0.05, 0.95) * span for _ in path[:-1])
            for stage, seconds in zip(path, [*times, span]):
                move = {"deal_id": deal.id, "stage": stage, "at": deal.created_at + timedelta(seconds=seconds)}
                if stage == "lost":
                    move["lost_reason"] = row["lost_reason"]
                moves.append(move)
        return moves


def _add_deals(crm: Any, data: DemoData, rows: list[dict[str, Any]], start: datetime, stop: datetime,
               set_clock: Callable[[datetime], None]) -> int:
    """A month's deals: created in the first stage at the month's start, then moved through the
    stages in one bulk call (``crm.deals.move_many``), so the win-loss cycle and the funnel's
    times between stages have something to measure."""
    set_clock(start)
    first = OPEN_STAGES[0]
    created = [{k: v for k, v in row.items() if k not in ("stage", "closed_at", "lost_reason")} | {"stage": first}
               for row in rows]
    crm.deals.add_many(created)
    new = crm.deals.list({"created_at": start}, limit=None) if rows else []
    set_clock(stop - timedelta(seconds=1))
    crm.deals.move_many(data.moves(new, rows, stop - timedelta(seconds=1)))
    return len(rows)


def month_starts(end: datetime, months: int) -> list[datetime]:
    """The first instant of each of the ``months`` months up to ``end``."""
    first = end.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    starts = []
    for _ in range(months):
        starts.append(first)
        first = (first - timedelta(days=1)).replace(day=1)
    return starts[::-1]


def add_users(crm: Any) -> None:
    """The demo's users, teams and territories (:data:`USERS`, :data:`TEAMS`), before any record
    names them as owner.  Roles no loaded plugin defines are left unset (the policy's default)."""
    for login, name, role in USERS:
        crm.users.add(login, name, email=f"{login}@example.com", role=role if role in crm.roles else None)
    for team, manager, members, regions in TEAMS:
        crm.teams.add(team, manager=manager)
        for member in members:
            crm.teams.add_member(team, member)
        for region in regions:
            crm.teams.assign_region(team, region)
    for login, regions in AGENT_REGIONS.items():
        for region in regions:
            crm.users.assign_region(login, region)


def populate(crm: Any, seed: int, size: DemoSize, end: datetime, set_clock: Callable[[datetime], None],
             progress: Callable[[str], None] = lambda _: None) -> dict[str, int]:
    """Fill ``crm`` with demo data; returns counts per entity."""
    data = DemoData(seed, end)
    starts = month_starts(end, size.months)
    set_clock(starts[0])
    progress("users")
    add_users(crm)
    progress("customers")
    crm.customers.add_many(list(data.customers(size.customers)), on_duplicate="add")  # random numbers may repeat
    ids = [c.id for c in crm.customers.list(limit=None)]
    progress("contacts")
    contacts = crm.contacts.add_many(list(data.contacts(ids)))
    interactions = deals = 0
    for n, start in enumerate(starts):
        stop = starts[n + 1] if n + 1 < len(starts) else end
        set_clock(stop - timedelta(seconds=1))
        progress(f"month {start:%Y-%m}")
        per_month_i = size.interactions // size.months + (n < size.interactions % size.months)
        per_month_d = size.deals // size.months + (n < size.deals % size.months)
        interactions += crm.interactions.add_many(list(data.interactions(ids, per_month_i, start, stop)))
        deals += _add_deals(crm, data, list(data.deals(ids, per_month_d, start, stop, crm.config.default_currency)),
                            start, stop, set_clock)
    set_clock(end)
    from .store.maintenance import refresh_statistics
    from .store.tables import metadata

    for table in metadata.sorted_tables:  # fresh planner statistics after the bulk load (PostgreSQL)
        refresh_statistics(crm, table)
    return {"customers": len(ids), "contacts": contacts, "interactions": interactions, "deals": deals}


def utc(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 23, 59, 59, tzinfo=timezone.utc)
