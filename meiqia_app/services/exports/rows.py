"""The streaming row source of an export.

Rows are read in keyset batches ordered by (sort column, id): each batch is one
indexed range query, so memory stays bounded by the batch whatever the row
count. Base columns are read with their raw driver values (dates as the stored
text) because SQLAlchemy's per-cell type processing costs more than the writers;
computed fields (tags, orders, conversations) are fetched per batch with one
``IN`` query each, and only when chosen. Values are typed per field kind
(``FieldSpec.kind``) and masked for actors without customer.view_sensitive.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections import defaultdict
from collections.abc import Iterator, Sequence
from operator import itemgetter

from sqlalchemy import Text, and_, exists, false, func, literal_column, select, type_coerce

from meiqia_app.db import get_engine
from meiqia_app.dbadapter import get_adapter
from meiqia_app.dbadapter.base import ExportColumn, ExportRowFormat
from meiqia_app.models import Conversation, Customer, Order, Tag, TagAssignment
from meiqia_app.services.custom_fields.field_types import FieldDef, key_of
from meiqia_app.services.customers.access import is_sensitive, mask_value, sensitive_of
from meiqia_app.services.customers.query import keyset_after, status_index_condition
from meiqia_app.services.customers.selection import Selection, selection_conditions
from meiqia_app.services.errors import ValidationError
from meiqia_app.services.exports import custom_sort
from meiqia_app.services.exports.custom_cells import SQL_CUSTOM_TYPES, custom_cell, custom_sql_column
from meiqia_app.services.exports.fields import EXPORT_FIELDS, FIELD_SPECS
from meiqia_app.services.exports.writers import CSV_LINE_END, LineBlock
from meiqia_app.services.identity.rbac import Actor
from meiqia_app.timeutil import local_zone

C = Customer.__table__.c
TA = TagAssignment.__table__.c
T = Tag.__table__.c
OC = Order.__table__.c
CV = Conversation.__table__.c

DEFAULT_BATCH = 5000
#: Rows per query (and per progress update) when the database builds the rows:
#: CSV lines are ~100 bytes, XLSX rows ~1.3 KB (a batch in flight stays a few MB).
SQL_BATCH = {"csv": 20_000, "xlsx": 5_000}

#: Export fields read straight from a customer column (field → column).
BASE_COLUMNS: dict[str, str] = {
    "id": "id",
    "name": "name",
    "gender": "gender",
    "birthday": "birthday",
    "company": "company",
    "source": "source",
    "province": "province",
    "city": "city",
    "registered_at": "registered_at",
    "last_active_at": "last_active_at",
    "last_login_at": "last_login_at",
    "phone": "phone",
    "email": "email",
    "address": "address",
    "external_id": "external_id",
    "visitor_id": "visitor_id",
    "lifecycle_stage": "lifecycle_stage",
    "membership_tier": "membership_tier",
    "order_count": "order_count",
    "total_spent": "total_spent_cents",
    "first_purchase_at": "first_purchase_at",
    "last_purchase_at": "last_purchase_at",
    "consent_marketing": "consent_marketing",
    "consent_analytics": "consent_analytics",
    "custom_attributes": "custom_attributes",
}
#: Fields an export may be sorted by (indexed or at least plain columns); name sorts by pinyin.
SORT_COLUMNS: dict[str, tuple[str, bool]] = {
    "id": ("id", False),
    "name": ("name_pinyin", False),
    "registered_at": ("registered_at", False),
    "last_active_at": ("last_active_at", False),
    "last_purchase_at": ("last_purchase_at", True),
    "first_purchase_at": ("first_purchase_at", True),
    "total_spent": ("total_spent_cents", False),
    "order_count": ("order_count", False),
    "source": ("source", False),
    "city": ("city", True),
    "lifecycle_stage": ("lifecycle_stage", False),
    "membership_tier": ("membership_tier", False),
}
_DATETIME_COLUMNS = {"registered_at", "last_active_at", "last_login_at", "first_purchase_at", "last_purchase_at"}
_CODED = {"gender": "gender", "source": "source", "lifecycle_stage": "lifecycle", "membership_tier": "tier"}
_CONVERSATION_FIELDS = {"conversation_count", "last_conversation_at", "avg_rating", "chat_summary"}
_ORDER_FIELDS = {"last_order", "purchase_history"}
PURCHASE_HISTORY_ORDERS = 5


@dataclasses.dataclass(frozen=True)
class ExportSpec:
    """What to export, validated: the scope, the columns, their order and the sort."""

    selection: Selection
    fields: tuple[str, ...]
    sort_field: str = "id"
    descending: bool = False
    purpose: str = "analysis"  # analysis | marketing | service
    restrict_tag_ids: tuple[int, ...] | None = None  # the role's allowed tags (None: any customer)

    def __post_init__(self) -> None:
        if not self.fields:
            raise ValidationError.single("fields", "export.error.no_fields")
        unknown = [f for f in self.fields if f not in FIELD_SPECS]
        if unknown or len(set(self.fields)) != len(self.fields):
            raise ValidationError.single("fields", "error.bad_choice")
        # A custom field ("cf.<key>") is checked against the definitions by the request (custom_sort).
        if self.sort_field not in SORT_COLUMNS and not custom_sort.is_custom_sort(self.sort_field):
            raise ValidationError.single("sort", "error.bad_choice")
        if self.purpose not in ("analysis", "marketing", "service"):
            raise ValidationError.single("purpose", "error.bad_choice")

    @property
    def sensitive_fields(self) -> tuple[str, ...]:
        return sensitive_of(self.fields)


class _LocalTime:
    """Stored UTC timestamps (text on SQLite, datetimes elsewhere) as naive local times.

    The zone's UTC offset is looked up once per hour of UTC time and cached:
    converting every cell with ``astimezone`` cost more than reading the row.
    """

    def __init__(self, zone) -> None:
        self.zone = zone
        self._offsets: dict[str, dt.timedelta] = {}
        self._prefixes: dict[str, str] = {}

    def __call__(self, raw) -> dt.datetime | None:
        if raw is None or raw == "":
            return None
        if isinstance(raw, dt.datetime):
            value = raw if raw.tzinfo is None else raw.astimezone(dt.UTC).replace(tzinfo=None)
            raw = value.isoformat(" ")
        else:
            value = dt.datetime.fromisoformat(raw)
            if value.tzinfo is not None:
                value = value.astimezone(dt.UTC).replace(tzinfo=None)
                raw = value.isoformat(" ")
        hour = raw[:13]
        offset = self._offsets.get(hour)
        if offset is None:
            if len(self._offsets) > 200_000:
                self._offsets.clear()
            offset = value.replace(tzinfo=dt.UTC).astimezone(self.zone).utcoffset()
            self._offsets[hour] = offset
        return value + offset

    def text(self, raw) -> str:
        """The local time as "YYYY-MM-DD HH:MM:SS" text (CSV): string slicing
        with a cached per-hour prefix when the zone's offset is whole hours
        (China: always); anything else takes the datetime path."""
        try:
            return self._prefixes[raw[:13]] + raw[13:19]
        except (KeyError, TypeError):
            pass
        if raw is None or raw == "":
            return ""
        value = self(raw)
        if isinstance(raw, str) and len(raw) in (19, 26) and raw[10] == " ":
            if value.minute == int(raw[14:16]) and value.second == int(raw[17:19]):
                if len(self._prefixes) > 200_000:
                    self._prefixes.clear()
                self._prefixes[raw[:13]] = value.strftime("%Y-%m-%d %H")
        return value.isoformat(" ", "seconds")


def _parse_datetime(raw, zone) -> dt.datetime | None:
    if raw is None or raw == "":
        return None
    value = raw if isinstance(raw, dt.datetime) else dt.datetime.fromisoformat(raw)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(zone).replace(tzinfo=None)


def _parse_date(raw) -> dt.date | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, dt.datetime):
        return raw.date()
    if isinstance(raw, dt.date):
        return raw
    return dt.date.fromisoformat(str(raw)[:10])


def _custom_text(raw) -> str:
    try:
        data = json.loads(raw or "{}")
    except (TypeError, ValueError):
        return ""
    if not isinstance(data, dict):
        return ""
    return "; ".join(f"{k}={v}" for k, v in data.items())


class RowSource:
    """Rows of an export, in batches, typed and (where needed) masked."""

    def __init__(self, actor: Actor, spec: ExportSpec, lang: str = "zh", datetimes_as_text: bool = False) -> None:
        """``datetimes_as_text``: give timestamps as local "YYYY-MM-DD HH:MM:SS" text
        (what CSV writes anyway, several times cheaper than datetime objects)."""
        self.actor = actor
        self.datetimes_as_text = datetimes_as_text
        self.spec = spec
        self.lang = lang
        self.can_see_sensitive = actor.can("customer.view_sensitive")
        self.zone = local_zone()
        self.local_time = _LocalTime(self.zone)
        self._labels = self._code_labels()

    def _code_labels(self) -> dict[str, dict[str, str]]:
        from meiqia_app.i18n import tr
        from meiqia_app.models.customer import GENDERS, LIFECYCLE_STAGES, MEMBERSHIP_TIERS, SOURCES

        codes = {"gender": GENDERS, "source": SOURCES, "lifecycle": LIFECYCLE_STAGES, "tier": MEMBERSHIP_TIERS}
        labels = {}
        for prefix, values in codes.items():
            labels[prefix] = {}
            for code in values:
                key = f"{prefix}.{code}"
                text = tr(self.lang, key)
                labels[prefix][code] = code if text == key else text
        return labels

    # --- SQL ------------------------------------------------------------------------------
    def conditions(self, conn) -> list:
        conditions = list(selection_conditions(conn, self.spec.selection, self.actor))
        if self.spec.purpose == "marketing":
            conditions.append(C.consent_marketing.is_(True))
        if self.spec.restrict_tag_ids is not None:
            if not self.spec.restrict_tag_ids:
                conditions.append(false())
            else:
                conditions.append(exists().where(TA.customer_id == C.id, TA.tag_id.in_(self.spec.restrict_tag_ids)))
        return conditions

    def count(self) -> int:
        with get_engine().connect() as conn:
            statement = select(func.count()).select_from(Customer.__table__).where(and_(*self.conditions(conn)))
            return int(conn.execute(statement).scalar_one())

    def _column(self, name: str):
        column = C[name]
        # Dates and timestamps come back as the stored text: parsing them here is
        # several times cheaper than SQLAlchemy's result processors.
        if name in _DATETIME_COLUMNS or name == "birthday":
            return type_coerce(column, Text)
        return column

    def _after(self, sort_value, row_id: int):
        """Rows strictly after (value, id) in the walk order (NULLs first ascending, last descending)."""
        column_name, nullable = SORT_COLUMNS[self.spec.sort_field]
        return keyset_after(
            self._column(column_name),
            nullable,
            self.spec.descending,
            sort_value,
            row_id,
            status_index_condition(self.spec.selection.query.status),
        )

    def _order(self, sort_value=None, row_id=None) -> list:
        """The export's order over the customer table (or over a subquery's key columns)."""
        column_name, nullable = SORT_COLUMNS[self.spec.sort_field]
        column = self._column(column_name) if sort_value is None else sort_value
        row_id = C.id if row_id is None else row_id
        if self.spec.descending:
            return [column.desc().nulls_last() if nullable else column.desc(), row_id.desc()]
        return [column.asc().nulls_first() if nullable else column.asc(), row_id.asc()]

    # --- rows -----------------------------------------------------------------------------
    def _walk(self, conn, columns: list, sort_index: int, id_index: int, batch: int) -> Iterator[list]:
        """Keyset batches of raw DBAPI tuples of ``columns`` in the export's order."""
        conditions = self.conditions(conn)
        cursor = None
        while True:
            where = list(conditions)
            if cursor is not None:
                where.append(self._after(*cursor))
            statement = (
                select(*columns)
                .select_from(Customer.__table__)
                .where(and_(*where))
                .order_by(*self._order())
                .limit(batch)
            )
            result = conn.execute(statement)
            # Plain tuples straight from the DBAPI cursor: the selected columns
            # need no result processing (dates are coerced to text above), and
            # SQLAlchemy's Row objects cost more than the writers.
            records = result.cursor.fetchall() if result.cursor is not None else []
            result.close()
            if not records:
                return
            last = records[-1]
            cursor = (last[sort_index], last[id_index])
            yield records
            if len(records) < batch:
                return

    def iter_batches(self, batch: int = DEFAULT_BATCH) -> Iterator[list[list]]:
        fields = self.spec.fields
        custom = custom_sort.sort_field_of(self.spec.sort_field)
        sort_column = "id" if custom is not None else SORT_COLUMNS[self.spec.sort_field][0]
        base = {BASE_COLUMNS[f] for f in fields if f in BASE_COLUMNS} | {"id", sort_column}
        if any(key_of(f) for f in fields):
            base.add("custom_fields")
        base = sorted(base)
        columns = [self._column(name).label(name) for name in base]
        index = {name: i for i, name in enumerate(base)}
        engine = get_engine()
        with engine.connect() as conn, get_adapter(engine).export_read_settings(conn):
            if custom is not None:
                walk = custom_sort.walk(conn, columns, self.conditions(conn), custom, self.spec.descending, batch)
            else:
                walk = self._walk(conn, columns, index[sort_column], index["id"], batch)
            for records in walk:
                yield self._build(conn, records, index)

    # --- rows built by the database ---------------------------------------------------------
    def sql_fields_supported(self, fmt: str) -> bool:
        """Whether the database can build this export's rows itself: plain customer
        columns only, nothing to mask, and (CSV) at least two columns (csv.writer
        quotes a lone empty field)."""
        fields = self.spec.fields
        if fmt not in ("csv", "xlsx") or (fmt == "csv" and len(fields) < 2):
            return False
        if custom_sort.is_custom_sort(self.spec.sort_field):
            return False  # rows in a custom field's order are built in Python (custom_sort.walk)
        engine = get_engine()
        adapter = get_adapter(engine)
        custom = [FIELD_SPECS[f].custom for f in fields if key_of(f)]
        if custom and (not adapter.export_custom_kinds or any(f.field_type not in SQL_CUSTOM_TYPES for f in custom)):
            return False
        if any((f not in BASE_COLUMNS or f == "custom_attributes") and not key_of(f) for f in fields):
            return False
        if not self.can_see_sensitive and any(is_sensitive(f) for f in fields):
            return False
        return adapter.export_rows_supported(engine, self.zone)

    def _row_format(self, fmt: str, true_text: str, false_text: str) -> ExportRowFormat:
        from meiqia_app.services.exports import xlsx_stream

        columns = []
        for field in self.spec.fields:
            if key_of(field):
                columns.append(custom_sql_column(FIELD_SPECS[field].custom, self.lang))
                continue
            ref = f"customer.{BASE_COLUMNS[field]}"
            if field in _CODED:
                labels = tuple(self._labels[_CODED[field]].items())
                columns.append(ExportColumn("coded", ref, labels))
            elif field in _DATETIME_COLUMNS:
                columns.append(ExportColumn("datetime", ref))
            elif field == "birthday":
                columns.append(ExportColumn("date", ref))
            elif field == "total_spent":
                columns.append(ExportColumn("money", ref))
            elif field in ("consent_marketing", "consent_analytics"):
                columns.append(ExportColumn("bool", ref))
            elif FIELD_SPECS[field].kind == "int":
                columns.append(ExportColumn("int", ref))
            else:
                columns.append(ExportColumn("text", ref))
        local_time = _LocalTime(self.zone)
        return ExportRowFormat(
            fmt=fmt,
            columns=tuple(columns),
            zone=self.zone,
            true_text=true_text,
            false_text=false_text,
            local_text=local_time.text,
            local_cell=lambda raw: xlsx_stream.datetime_cell(local_time(raw)),
            xml_text=xlsx_stream.xml_text,
            csv_quote=csv_field,
            xml_cell=xlsx_stream.text_cell_xml,
        )

    def iter_sql_rows(
        self,
        fmt: str,
        true_text: str = "是",
        false_text: str = "否",
        batch: int | None = None,
        workers: int | None = None,
    ) -> Iterator[list[str] | LineBlock]:
        """Batches of rows the database built, in the export's order: for CSV a
        ``LineBlock`` (the batch's lines joined by the database, where it has an
        aggregate for that), otherwise a list of CSV lines (without terminator)
        or of XLSX row cells. Only when ``sql_fields_supported(fmt)``.

        Joining in the database leaves Python one string per batch instead of a
        tuple and a string per row (+15% rows/s at 1M). The start of each batch
        is then found by its own query (the key of every ``batch``-th row, an
        OFFSET over the sort index). With ``workers`` > 1 the batches are built
        by that many threads, each on its own connection (the driver releases
        the GIL while the database works), at most ``workers + 1`` in flight,
        yielded in order.
        """
        if not self.sql_fields_supported(fmt):
            raise ValueError("the database cannot build these export rows")
        row_format = self._row_format(fmt, true_text, false_text)
        batch = batch or SQL_BATCH[fmt]
        if workers is None:
            from meiqia_app.config import get_settings

            workers = get_settings().export_workers
        workers = max(1, workers)
        sort_column = SORT_COLUMNS[self.spec.sort_field][0]
        engine = get_engine()
        adapter = get_adapter(engine)
        line = itemgetter(0)
        with engine.connect() as conn, adapter.export_read_settings(conn):
            expression = adapter.export_row_sql(conn, row_format)
            joined = fmt == "csv" and adapter.joins_text
            if workers == 1 and not joined:
                columns = [
                    literal_column(expression).label("line"),
                    self._column(sort_column).label("sort_value"),
                    C.id.label("row_id"),
                ]
                for records in self._walk(conn, columns, 1, 2, batch):
                    yield list(map(line, records))
                return
            conditions = self.conditions(conn)
            yield from self._sql_batches(conn, expression, conditions, row_format, sort_column, batch, workers, joined)

    def _batch_statement(self, columns: list, conditions: list, start, batch: int, offset: int = 0):
        where = list(conditions)
        if start is not None:
            where.append(self._after(*start))
        statement = (
            select(*columns).select_from(Customer.__table__).where(and_(*where)).order_by(*self._order()).limit(batch)
        )
        return statement.offset(offset) if offset else statement

    def _sql_batches(
        self,
        conn,
        expression: str,
        conditions: list,
        row_format: ExportRowFormat,
        sort_column: str,
        batch: int,
        workers: int,
        joined: bool,
    ) -> Iterator[list[str] | LineBlock]:
        import concurrent.futures
        import contextlib
        import threading
        from collections import deque

        engine = get_engine()
        adapter = get_adapter(engine)
        local = threading.local()
        opened = contextlib.ExitStack()
        lock = threading.Lock()
        key_columns = [self._column(sort_column).label("sort_value"), C.id.label("row_id")]

        def worker_connection() -> tuple:
            """(connection, its row expression): the caller's own, or one per worker thread."""
            if workers == 1:
                return conn, expression
            found = getattr(local, "conn", None)
            if found is None:
                with lock:
                    worker_conn = opened.enter_context(engine.connect())
                    opened.enter_context(adapter.export_read_settings(worker_conn))
                local.expression = adapter.export_row_sql(worker_conn, row_format)
                local.conn = found = worker_conn
            return found, local.expression

        def build(start) -> list[str] | LineBlock:
            worker_conn, worker_expression = worker_connection()
            line = literal_column(worker_expression).label("line")
            if joined:
                rows = self._batch_statement([line, *key_columns], conditions, start, batch).subquery()
                text_of = adapter.joined_text(rows.c.line, CSV_LINE_END, self._order(rows.c.sort_value, rows.c.row_id))
                text, count = worker_conn.execute(select(text_of, func.count()).select_from(rows)).one()
                return LineBlock(text or "", int(count))
            result = worker_conn.execute(self._batch_statement([line], conditions, start, batch))
            records = result.cursor.fetchall() if result.cursor is not None else []
            result.close()
            return [record[0] for record in records]

        def next_start(start):
            """The key of the last row of the batch beginning after ``start`` (None: it is the last batch)."""
            result = conn.execute(self._batch_statement(key_columns, conditions, start, 1, offset=batch - 1))
            record = result.cursor.fetchone() if result.cursor is not None else None
            result.close()
            return None if record is None else (record[0], record[1])

        if workers == 1:
            start = None
            while True:
                rows = build(start)
                if len(rows):
                    yield rows
                if len(rows) < batch:
                    return
                start = next_start(start)
                if start is None:
                    return
        pending: deque = deque()
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="export-rows")
        try:
            start, more = None, True
            while True:
                while more and len(pending) <= workers:
                    pending.append(pool.submit(build, start))
                    start = next_start(start)
                    more = start is not None
                if not pending:
                    return
                rows = pending.popleft().result()
                if len(rows):
                    yield rows
        finally:
            for future in pending:
                future.cancel()
            pool.shutdown(wait=True)
            opened.close()

    def iter_rows(self, batch: int = DEFAULT_BATCH) -> Iterator[list]:
        for rows in self.iter_batches(batch):
            yield from rows

    def _build(self, conn, records: Sequence, index: dict[str, int]) -> list[tuple]:
        """Rows as tuples, built column by column: ``map`` over a column runs in C
        except for the cells that really need converting."""
        fields = self.spec.fields
        ids = [r[index["id"]] for r in records]
        chosen = set(fields)
        tags = self._tags(conn, ids) if "tags" in chosen else {}
        orders = self._orders(conn, ids) if chosen & _ORDER_FIELDS else {}
        chats = self._conversations(conn, ids) if chosen & _CONVERSATION_FIELDS else {}
        documents = self._documents(records, index) if "custom_fields" in index else None
        columns = [
            self._custom_values(FIELD_SPECS[field].custom, documents)
            if key_of(field)
            else self._column_values(field, records, ids, index, tags, orders, chats)
            for field in fields
        ]
        return list(zip(*columns))

    @staticmethod
    def _documents(records: Sequence, index: dict[str, int]) -> list[dict]:
        """Each row's custom field document, parsed once per row (JSON text on SQLite, a dict on PostgreSQL)."""
        found = []
        for raw in map(itemgetter(index["custom_fields"]), records):
            if raw.__class__ is str:
                try:
                    raw = json.loads(raw)
                except ValueError:
                    raw = None
            found.append(raw if isinstance(raw, dict) else {})
        return found

    def _custom_values(self, field: FieldDef, documents: list[dict]) -> list:
        """One custom field's cells: typed (numbers, dates, local times, yes/no), selects as
        their labels in the export's language, masked for a role without customer.view_sensitive."""
        key, default = field.key, field.default
        absent = object()
        raw = [v if (v := d.get(key, absent)) is not absent else default for d in documents]
        convert = custom_cell(field, self.lang, self.local_time, self.datetimes_as_text)
        values = [None if v is None else convert(v) for v in raw]
        if not self.can_see_sensitive and field.sensitive:
            return [mask_value(field.name, v) for v in values]
        return values

    def _column_values(self, field, records, ids, index, tags, orders, chats) -> list:
        if field in BASE_COLUMNS:
            raw = map(itemgetter(index[BASE_COLUMNS[field]]), records)
            if field in _DATETIME_COLUMNS:
                values = map(self.local_time.text if self.datetimes_as_text else self.local_time, raw)
            elif field == "birthday":
                values = map(_parse_date, raw)
            elif field == "total_spent":
                values = (round((v or 0) / 100, 2) for v in raw)
            elif field in _CODED:
                labels = self._labels[_CODED[field]]
                values = (labels.get(v, v or "") for v in raw)
            elif field in ("consent_marketing", "consent_analytics"):
                values = map(bool, raw)
            elif field == "custom_attributes":
                values = map(_custom_text, raw)
            else:
                values = raw
        elif field == "tags":
            values = (tags.get(i, "") for i in ids)
        elif field in _ORDER_FIELDS:
            values = (orders.get(i, {}).get(field, "") for i in ids)
        elif field == "last_conversation_at":
            zone = self.zone
            values = (_parse_datetime(chats.get(i, {}).get(field), zone) for i in ids)
        else:
            default = 0 if field == "conversation_count" else ("" if field == "chat_summary" else None)
            values = (chats.get(i, {}).get(field, default) for i in ids)
        if not self.can_see_sensitive and is_sensitive(field):
            return [mask_value(field, v) for v in values]
        return list(values)

    def _tags(self, conn, ids: list[int]) -> dict[int, str]:
        rows = conn.execute(
            select(TA.customer_id, T.name)
            .join(Tag.__table__, T.id == TA.tag_id)
            .where(TA.customer_id.in_(ids))
            .order_by(TA.customer_id, T.group, T.name)
        )
        found: dict[int, list[str]] = defaultdict(list)
        for customer_id, name in rows:
            found[customer_id].append(name)
        return {k: "、".join(v) for k, v in found.items()}

    def _orders(self, conn, ids: list[int]) -> dict[int, dict]:
        rows = conn.execute(
            select(OC.customer_id, OC.order_no, OC.product_name, OC.quantity, OC.amount_cents, OC.status)
            .where(OC.customer_id.in_(ids))
            .order_by(OC.customer_id, OC.created_at.desc(), OC.id.desc())
        )
        status_labels = self._order_status_labels()
        found: dict[int, dict] = {}
        for customer_id, order_no, product, quantity, amount, status in rows:
            entry = found.setdefault(customer_id, {"items": []})
            if "last_order" not in entry:
                entry["last_order"] = (
                    f"{order_no} {product}×{quantity} ¥{(amount or 0) / 100:.2f} {status_labels.get(status, status)}"
                )
            if len(entry["items"]) < PURCHASE_HISTORY_ORDERS:
                entry["items"].append(f"{product}×{quantity}")
        for entry in found.values():
            entry["purchase_history"] = "; ".join(entry.pop("items"))
        return found

    def _order_status_labels(self) -> dict[str, str]:
        from meiqia_app.i18n import tr

        labels = {}
        for status in ("pending", "paid", "shipped", "completed", "refunded", "cancelled"):
            key = f"order_status.{status}"
            text = tr(self.lang, key)
            labels[status] = status if text == key else text
        return labels

    def _conversations(self, conn, ids: list[int]) -> dict[int, dict]:
        found: dict[int, dict] = {}
        aggregate = conn.execute(
            select(CV.customer_id, func.count(), type_coerce(func.max(CV.started_at), Text), func.avg(CV.rating))
            .where(CV.customer_id.in_(ids))
            .group_by(CV.customer_id)
        )
        for customer_id, count, last_at, rating in aggregate:
            found[customer_id] = {
                "conversation_count": count,
                "last_conversation_at": last_at,
                "avg_rating": round(float(rating), 2) if rating is not None else None,
            }
        summaries = conn.execute(
            select(CV.customer_id, CV.summary)
            .where(CV.customer_id.in_(ids), CV.summary.is_not(None))
            .order_by(CV.customer_id, CV.started_at.desc())
        )
        for customer_id, summary in summaries:
            entry = found.setdefault(customer_id, {})
            entry.setdefault("chat_summary", summary)
        return found


def csv_field(text: str) -> str:
    """A constant as csv.writer (QUOTE_MINIMAL, excel dialect) writes it."""
    if any(c in text for c in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def all_fields() -> tuple[str, ...]:
    return EXPORT_FIELDS
