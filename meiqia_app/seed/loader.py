"""Load demo data: roles, demo accounts, products, tags, and N customers with
their orders, conversations, messages, behaviour events, notes and tags.

Generation runs in worker processes (two cores here); this process writes
each chunk in one transaction through the adapter's bulk insert. Large loads
drop the secondary indexes and the search index first and rebuild them once
at the end, which is several times faster than maintaining them row by row.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import multiprocessing
import os
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Connection, func, update
from sqlalchemy.schema import CreateIndex, DropIndex
from sqlmodel import Session, SQLModel, select

from meiqia_app.config import get_settings
from meiqia_app.db import get_engine, read_session, write_session
from meiqia_app.dbadapter import get_adapter
from meiqia_app.migrate import upgrade_to_head
from meiqia_app.models import Customer, Product, Tag, Team, User
from meiqia_app.seed import data
from meiqia_app.seed.generator import (
    CONVERSATION_COLUMNS,
    CUSTOMER_COLUMNS,
    EVENT_COLUMNS,
    MESSAGE_COLUMNS,
    NOTE_COLUMNS,
    ORDER_COLUMNS,
    Chunk,
    GeneratorConfig,
    SeedProduct,
    generate_chunk,
)
from meiqia_app.services.audit import log as audit
from meiqia_app.services.customers import changes as customer_changes
from meiqia_app.services.customers.search_text import SEARCH_ROW_COLUMNS
from meiqia_app.services.identity import second_factor, users
from meiqia_app.services.identity.rbac import SYSTEM_ACTOR
from meiqia_app.services.tags.names import tag_key
from meiqia_app.timeutil import utcnow

BULK_TABLES = ("customer", "customer_order", "conversation", "message", "behavior_event", "note", "tag_assignment")
LARGE_LOAD = 50_000

DEMO_ACCOUNTS = (
    ("admin", "admin", "系统管理员"),
    ("manager", "manager", "王经理"),
    ("analyst", "data_analyst", "数据分析师小陈"),
    ("senior", "senior_agent", "高级客服小林"),
    ("agent", "agent", "客服小美"),
)

DEFAULT_TAGS = (
    # name, group, colour, description
    ("新客户", "lifecycle", "green", "最近 30 天内注册"),
    ("高频客户", "behavior", "orange", "30 天内已付款订单 ≥ 3"),
    ("金卡会员", "membership", "gold", "累计消费 ≥ 10000 元"),
    ("银卡会员", "membership", "gray", "累计消费 3000–10000 元"),
    ("普通会员", "membership", "blue", "累计消费 < 3000 元"),
    ("投诉客户", "behavior", "red", "90 天内有投诉会话"),
    ("待回访", "behavior", "cyan", "14 天内咨询过但未下单"),
)


@dataclasses.dataclass
class SeedReport:
    customers: int
    orders: int
    conversations: int
    messages: int
    events: int
    notes: int
    seconds: float
    database_bytes: int
    accounts: list[dict]


# Worker-process state, set once per process by the pool initializer.
_worker_config: GeneratorConfig | None = None


def _init_worker(config: GeneratorConfig) -> None:
    global _worker_config
    _worker_config = config


def _work(args: tuple[int, int, int]) -> Chunk:
    chunk_index, chunk_size, total = args
    return generate_chunk(_worker_config, chunk_index, chunk_size, total)


def demo_accounts_file() -> Path:
    return get_settings().data_dir / "demo_accounts.json"


def ensure_demo_accounts(session: Session) -> list[dict]:
    """One account per built-in role, enrolled in TOTP, recorded for `make run` to print."""
    accounts_file = demo_accounts_file()
    known = json.loads(accounts_file.read_text()) if accounts_file.exists() else []
    by_name = {account["username"]: account for account in known}
    for username, role_name, display_name in DEMO_ACCOUNTS:
        if session.exec(select(User).where(User.username == username)).first():
            continue
        password = f"Demo-{username}-2026"
        secret = second_factor.new_totp_secret()
        users.create_user_record(session, username, password, role_name, display_name, totp_secret=secret)
        by_name[username] = {"username": username, "password": password, "role": role_name, "totp_secret": secret}
    accounts = list(by_name.values())
    accounts_file.parent.mkdir(parents=True, exist_ok=True)
    accounts_file.write_text(json.dumps(accounts, ensure_ascii=False, indent=2))
    accounts_file.chmod(0o600)
    return accounts


def ensure_reference_data(with_demo_accounts: bool = True) -> list[dict]:
    """Roles, products, default tags (and demo accounts): idempotent."""
    upgrade_to_head()
    with write_session() as session:
        users.ensure_builtin_roles(session)
        accounts = ensure_demo_accounts(session) if with_demo_accounts else []
        if with_demo_accounts:
            session.flush()
            _ensure_demo_team(session)
        if not session.exec(select(func.count()).select_from(Product)).one():
            for sku, name, category, price in data.PRODUCTS:
                session.add(Product(sku=sku, name=name, category=category, price_cents=price * 100))
        existing = set(session.exec(select(Tag.name_key)).all())
        for name, group, color, description in DEFAULT_TAGS + tuple((n, g, c, "") for n, g, c, _ in data.MANUAL_TAGS):
            if tag_key(name) not in existing:
                session.add(Tag(name=name, name_key=tag_key(name), group=group, color=color, description=description))
    return accounts


def _secondary_indexes(table_names: tuple[str, ...]):
    for name in table_names:
        table = SQLModel.metadata.tables[name]
        for index in table.indexes:
            if not index.unique:
                yield index


def _write_chunk(conn: Connection, adapter, chunk: Chunk, ids: dict[str, int], tag_ids: list[int]) -> None:
    adapter.bulk_insert(conn, "customer", CUSTOMER_COLUMNS, chunk.customers)
    adapter.bulk_insert(conn, "customer_search", ("customer_id", *SEARCH_ROW_COLUMNS), chunk.search)
    order_base = ids["order"]
    adapter.bulk_insert(
        conn,
        "customer_order",
        ORDER_COLUMNS,
        ((order_base + i, f"MQ{order_base + i:010d}", *row) for i, row in enumerate(chunk.orders, start=1)),
    )
    ids["order"] += len(chunk.orders)
    conversation_base = ids["conversation"]
    adapter.bulk_insert(
        conn,
        "conversation",
        CONVERSATION_COLUMNS,
        ((conversation_base + i, *row) for i, row in enumerate(chunk.conversations, start=1)),
    )
    ids["conversation"] += len(chunk.conversations)
    adapter.bulk_insert(
        conn,
        "message",
        MESSAGE_COLUMNS,
        ((conversation_base + position + 1, sender, body, sent) for position, sender, body, sent in chunk.messages),
    )
    adapter.bulk_insert(conn, "behavior_event", EVENT_COLUMNS, chunk.events)
    adapter.bulk_insert(conn, "note", NOTE_COLUMNS, chunk.notes)
    now = chunk.customers[0][CUSTOMER_COLUMNS.index("updated_at")] if chunk.customers else None
    adapter.bulk_insert(
        conn,
        "tag_assignment",
        ("customer_id", "tag_id", "source", "assigned_at"),
        ((customer_id, tag_ids[index], "manual", now) for customer_id, index in chunk.manual_tags),
    )
    adapter.bulk_insert(
        conn,
        "erasure_request",
        ("customer_id", "requested_by_name", "requested_at", "reason", "status"),
        ((customer_id, "system", now, "客户来电要求删除个人数据", "pending") for customer_id in chunk.erasure_requests),
    )


def customer_count() -> int:
    with read_session() as session:
        return session.exec(select(func.count()).select_from(Customer)).one()


def seed(
    customers: int,
    seed_value: int = 42,
    as_of: dt.datetime | None = None,
    chunk_size: int = 5000,
    workers: int | None = None,
    progress: Callable[[str], None] = print,
) -> SeedReport:
    started = time.perf_counter()
    accounts = ensure_reference_data()
    engine = get_engine()
    adapter = get_adapter(engine)
    as_of = as_of or utcnow()
    with write_session() as session:
        existing = session.exec(select(func.count()).select_from(Customer)).one()
        if existing:
            raise RuntimeError(
                f"the database already has {existing} customers; seed into an empty database "
                "(set DATABASE_URL or MEIQIA_DATA_DIR to a new location)"
            )
        products = tuple(
            SeedProduct(p.id, p.name, p.price_cents) for p in session.exec(select(Product).order_by(Product.id)).all()
        )
        manual_tag_ids = [
            session.exec(select(Tag.id).where(Tag.name_key == tag_key(name))).one() for name, *_ in data.MANUAL_TAGS
        ]
        authors = session.exec(
            select(User.id, User.display_name).where(User.username.in_(("agent", "senior", "manager")))
        ).all() or [(None, "系统")]
    format_datetime, format_date = adapter.bulk_value_formatters()
    config = GeneratorConfig(
        seed=seed_value,
        as_of=as_of,
        products=products,
        author_ids=tuple(a[0] for a in authors),
        author_names=tuple(a[1] for a in authors),
        format_datetime=format_datetime,
        format_date=format_date,
    )
    large = customers >= LARGE_LOAD
    totals = dict.fromkeys(("customers", "orders", "conversations", "messages", "events", "notes"), 0)
    ids = {"order": 0, "conversation": 0}
    chunk_count = (customers + chunk_size - 1) // chunk_size
    tasks = [(index, chunk_size, customers) for index in range(chunk_count)]

    with engine.connect() as conn:
        if large:
            progress("dropping secondary indexes for the bulk load")
            with conn.begin():
                for index in _secondary_indexes(BULK_TABLES):
                    conn.execute(DropIndex(index, if_exists=True))
                adapter.suspend_search_index(conn)
        workers = workers or max(1, min(2, os.cpu_count() or 1))
        context = multiprocessing.get_context("fork")
        with context.Pool(workers, initializer=_init_worker, initargs=(config,)) as pool:
            for done, chunk in enumerate(pool.imap(_work, tasks), start=1):
                with conn.begin():
                    _write_chunk(conn, adapter, chunk, ids, manual_tag_ids)
                totals["customers"] += len(chunk.customers)
                totals["orders"] += len(chunk.orders)
                totals["conversations"] += len(chunk.conversations)
                totals["messages"] += len(chunk.messages)
                totals["events"] += len(chunk.events)
                totals["notes"] += len(chunk.notes)
                if done % 20 == 0 or done == chunk_count:
                    rate = totals["customers"] / (time.perf_counter() - started)
                    progress(f"  {totals['customers']:,} / {customers:,} customers ({rate:,.0f}/s)")
        if large:
            progress("rebuilding indexes and the search index")
            with conn.begin():
                for index in _secondary_indexes(BULK_TABLES):
                    conn.execute(CreateIndex(index, if_not_exists=True))
                adapter.rebuild_search_index(conn)
        with conn.begin():
            adapter.reset_id_sequences(conn, (("customer_order", "id"), ("conversation", "id"), ("customer", "id")))
            adapter.analyze(conn)

    _give_the_demo_team_customers()
    _after_seed_hooks(progress, as_of)
    with write_session() as session:
        audit.record(session, SYSTEM_ACTOR, "data.seed", details={**totals, "seed": seed_value})
    elapsed = time.perf_counter() - started
    db_bytes = _database_bytes()
    return SeedReport(seconds=elapsed, database_bytes=db_bytes, accounts=accounts, **totals)


DEMO_TEAM = "客服一组"
DEMO_TEAM_MEMBERS = ("senior", "agent")  # the first one leads
DEMO_OWNED_EVERY = 10  # of each ten customers, one is the senior's and one the agent's


def _ensure_demo_team(session: Session) -> None:
    """The demo agent and senior agent work in one team (the senior's data scope is its
    team's customers), created once, on a database that has no team yet."""
    if session.exec(select(Team.id)).first() is not None:
        return
    members = session.exec(select(User).where(User.username.in_(DEMO_TEAM_MEMBERS))).all()
    if len(members) != len(DEMO_TEAM_MEMBERS):
        return
    team = Team(name=DEMO_TEAM)
    session.add(team)
    session.flush()
    for user in members:
        user.team_id = team.id
        session.add(user)
        if user.username == DEMO_TEAM_MEMBERS[0]:
            team.lead_user_id = user.id
    session.add(team)


def _give_the_demo_team_customers() -> None:
    """Seeded customers are otherwise all in the pool (公海): one in ten becomes the demo
    senior agent's and one in ten the agent's, so "my customers" and a team scope show data."""
    with write_session() as session:
        owners = dict(session.exec(select(User.username, User.id).where(User.username.in_(DEMO_TEAM_MEMBERS))).all())
        for offset, username in enumerate(DEMO_TEAM_MEMBERS):
            if username in owners:
                session.execute(
                    update(Customer)
                    .where((Customer.id % DEMO_OWNED_EVERY) == offset, Customer.owner_id.is_(None))
                    .values(owner_id=owners[username])
                )
        # Told once for the whole load (committed above) and these owners.
        customer_changes.customers_changed(session, customer_changes.MANY, customer_changes.SEEDED)


def _after_seed_hooks(progress: Callable[[str], None], as_of: dt.datetime | None = None) -> None:
    """Derived data other features keep (rule-based tags) is computed once after a load."""
    try:
        from meiqia_app.services.tags.rules import runs as rules
    except ImportError:  # the rules engine is not part of this build
        return
    progress("running the tag rules")
    # As of the data's own date, so windows ("30 days") mean what the demo data means.
    rules.run_all_rules(SYSTEM_ACTOR, now=as_of, progress=progress)


def _database_bytes() -> int:
    with get_engine().connect() as conn:
        return get_adapter(conn).database_bytes(conn)
