"""One ingest batch's work (services/integrations/ingest.py): planned record by record in
Python, with everything it needs read up front, then written with a few set-based statements."""

from __future__ import annotations

import datetime as dt
import secrets
from collections import defaultdict

from sqlalchemy import delete, insert, select, update

from meiqia_app.dbadapter import get_adapter
from meiqia_app.models import BehaviorEvent, Conversation, Customer, ExternalRef, IngestedEvent, Message, Order, Product
from meiqia_app.services.customers import edit as customer_edit
from meiqia_app.services.customers import orders as customer_orders
from meiqia_app.services.errors import ValidationError
from meiqia_app.services.identity.rbac import Actor
from meiqia_app.services.integrations.ingest_records import EVENT_KINDS, MAX_URL, Record, Reject
from meiqia_app.timeutil import as_utc

C = Customer.__table__.c
XR = ExternalRef.__table__.c
P = Product.__table__.c
OT = Order.__table__.c
CV = Conversation.__table__.c


class Batch:
    """A batch's work: planned record by record in Python (with everything it needs read
    up front), then written with a few set-based statements."""

    def __init__(self, session, actor: Actor, now: dt.datetime) -> None:
        self.session = session
        self.conn = session.connection()
        self.actor = actor
        self.key_id = actor.api_key_id
        self.now = now
        self.prospects: dict[str, tuple[int, int] | ValidationError] = {}
        self.touched: set[int] = set()
        self.last_active: dict[int, dt.datetime] = {}
        self.last_login: dict[int, dt.datetime] = {}
        self.with_orders: set[int] = set()
        self.events: list[dict] = []
        self.ids: list[dict] = []
        self.messages: list[tuple[str, dict]] = []  # (conversation ref, message row)
        self.products: dict[str, int] = {}
        self.wanted_products: dict[str, tuple[str | None, int | None]] = {}
        # conversation / order ref -> existing (row id, customer id[, status]) or a new row's values
        self.conversations: dict[str, tuple] = {}
        self.new_conversations: dict[str, dict] = {}
        self.conversation_changes: dict[int, dict] = {}
        self.orders: dict[str, tuple] = {}
        self.new_orders: dict[str, dict] = {}
        self.order_changes: dict[int, dict] = {}
        self.taken_order_nos: set[str] = set()

    # --- before the records ---------------------------------------------------------------------
    def create_prospects(self, records: list[Record], customers: dict) -> None:
        """A prospect customer for each visitor id seen for the first time, in one statement."""
        first: dict[str, Record] = {}
        for record in records:
            if record.ref[0] == "visitor_id" and record.ref not in customers and record.ref[1] not in first:
                first[str(record.ref[1])] = record
        if not first:
            return
        raws = [
            {
                "name": record.prospect.get("name") or f"访客{visitor[-6:]}",
                "visitor_id": visitor,
                "source": record.prospect.get("source") or "web",
                "lifecycle_stage": "prospect",
            }
            for visitor, record in first.items()
        ]
        # Audited by the batch's entry (it lists the customers made), not one entry each.
        made = customer_edit.new_customers_bulk(self.session, self.actor, raws, audit_each=False)
        for (visitor, record), outcome in zip(first.items(), made, strict=True):
            self.prospects[visitor] = outcome if isinstance(outcome, ValidationError) else (outcome, record.index)

    def prefetch(self, records: list[Record]) -> None:
        """Products, conversations and orders the records name, read once."""
        skus: set[str] = set()
        conversation_refs: set[str] = set()
        order_refs: set[str] = set()
        for record in records:
            data = record.data
            if record.kind == "product_view":
                skus.add(data["sku"])
                self.wanted_products.setdefault(data["sku"], (data.get("name"), data.get("price_cents")))
            elif record.kind in ("chat_message", "conversation"):
                conversation_refs.add(data["conversation_id"])
            elif record.kind == "order":
                order_refs.add(data["order_id"])
                items = data["items"]
                if len(items) == 1 and items[0]["sku"]:
                    skus.add(items[0]["sku"])
                    self.wanted_products.setdefault(items[0]["sku"], (items[0]["name"], items[0]["price_cents"]))
        # Packed rows (one value per query): a batch names up to hundreds of products,
        # conversations and orders, and each row fetched alone hands the GIL over.
        packed = get_adapter(self.conn).packed_rows
        if skus:
            self.products = {
                sku: row_id
                for sku, row_id in packed(self.conn, select(P.sku, P.id).where(P.sku.in_(sorted(skus))), ("sku", "id"))
            }
        # Outer joins: a mapping whose row was purged (the customer with it) comes back
        # without the row, and only those mappings are deleted (the ref starts afresh).
        stale: dict[str, list[str]] = {"conversation": [], "order": []}
        if conversation_refs:
            rows = packed(
                self.conn,
                select(XR.ref, CV.id, CV.customer_id)
                .select_from(ExternalRef.__table__.outerjoin(Conversation.__table__, CV.id == XR.row_id))
                .where(XR.kind == "conversation", XR.ref.in_(sorted(conversation_refs))),
                ("ref", "id", "customer_id"),
            )
            self.conversations = {ref: (row_id, owner) for ref, row_id, owner in rows if row_id is not None}
            stale["conversation"] = [ref for ref, row_id, _owner in rows if row_id is None]
        if order_refs:
            rows = packed(
                self.conn,
                select(XR.ref, OT.id, OT.customer_id, OT.status)
                .select_from(ExternalRef.__table__.outerjoin(Order.__table__, OT.id == XR.row_id))
                .where(XR.kind == "order", XR.ref.in_(sorted(order_refs))),
                ("ref", "id", "customer_id", "status"),
            )
            self.orders = {ref: (row_id, owner, status) for ref, row_id, owner, status in rows if row_id is not None}
            stale["order"] = [ref for ref, row_id, _owner, _status in rows if row_id is None]
            short = sorted(ref for ref in order_refs if len(ref) <= 32 and ref not in self.orders)
            if short:
                self.taken_order_nos = set(
                    self.conn.execute(select(OT.order_no).where(OT.order_no.in_(short))).scalars()
                )
        for kind, refs in stale.items():
            if refs:
                self.conn.execute(delete(ExternalRef.__table__).where(XR.kind == kind, XR.ref.in_(sorted(refs))))

    # --- one record (no writes) ------------------------------------------------------------------
    def plan(self, record: Record) -> None:
        customer_id, data, at = record.customer_id, record.data, record.at
        if record.kind in EVENT_KINDS:
            url = data.get("url")
            if record.kind == "search":
                url = f"/search?q={data['query']}"[:MAX_URL]
            elif record.kind == "login" and (customer_id not in self.last_login or self.last_login[customer_id] < at):
                self.last_login[customer_id] = at
            self.events.append(
                {
                    "customer_id": customer_id,
                    "kind": record.kind,
                    "product_id": None,
                    "sku": data.get("sku") if record.kind == "product_view" else None,
                    "url": url,
                    "occurred_at": at,
                    "api_key_id": self.key_id,
                }
            )
        elif record.kind in ("chat_message", "conversation"):
            self._plan_conversation(record)
        elif record.kind == "order":
            self._plan_order(record)
            self.with_orders.add(customer_id)
        self.touched.add(customer_id)
        if customer_id not in self.last_active or self.last_active[customer_id] < at:
            self.last_active[customer_id] = at
        self.ids.append(
            {
                "event_id": record.event_id,
                "kind": record.kind,
                "customer_id": customer_id,
                "api_key_id": self.key_id,
                "received_at": self.now,
            }
        )

    def _plan_conversation(self, record: Record) -> None:
        data, ref = record.data, record.data["conversation_id"]
        changes = {k: data[k] for k in ("channel", "agent_name", "category", "rating", "summary") if data.get(k)}
        if record.kind == "conversation" and data["status"] == "ended":
            changes["ended_at"] = record.at
        if ref in self.conversations:
            row_id, owner = self.conversations[ref]
            if owner != record.customer_id:
                raise Reject("conversation_of_another_customer", "conversation_id")
            if changes:
                self.conversation_changes.setdefault(row_id, {}).update(changes)
        elif ref in self.new_conversations:
            values = self.new_conversations[ref]
            if values["customer_id"] != record.customer_id:
                raise Reject("conversation_of_another_customer", "conversation_id")
            values.update(changes)
        else:
            first_text = data.get("text") if record.kind == "chat_message" else None
            self.new_conversations[ref] = {
                "customer_id": record.customer_id,
                "channel": "web",
                "agent_name": None,
                "category": "inquiry",
                "rating": None,
                "started_at": record.at,
                "ended_at": None,
                "summary": first_text[:120] if first_text else None,
                "api_key_id": self.key_id,
                **changes,
            }
        if record.kind == "chat_message":
            self.messages.append(
                (
                    ref,
                    {
                        "sender": "customer" if data["direction"] == "in" else "agent",
                        "body": data["text"],
                        "sent_at": record.at,
                    },
                )
            )

    def _plan_order(self, record: Record) -> None:
        data, ref, at = record.data, record.data["order_id"], record.at
        items = data["items"]
        amount = data["amount_cents"]
        if amount is None and items:
            amount = sum(item["price_cents"] * item["quantity"] for item in items)
        recipient = {k: v for k, v in (data.get("recipient") or {}).items() if v is not None}
        status = data["status"]
        if ref in self.orders:
            row_id, owner, current = self.orders[ref]
            if owner != record.customer_id:
                raise Reject("order_of_another_customer", "order_id")
            changes = self.order_changes.setdefault(row_id, {})
            changes.update(status=status, **recipient)
            if status == "paid" and current != "paid" and "paid_at" not in changes:
                changes["paid_at"] = at
            if amount is not None:
                changes["amount_cents"] = amount
            self.orders[ref] = (row_id, owner, status)
            return
        if ref in self.new_orders:
            values = self.new_orders[ref]
            if values["customer_id"] != record.customer_id:
                raise Reject("order_of_another_customer", "order_id")
            if status == "paid" and values["status"] != "paid" and values["paid_at"] is None:
                values["paid_at"] = at
            values.update(status=status, **recipient)
            if amount is not None:
                values["amount_cents"] = amount
            return
        if not items and amount is None:
            raise Reject("required", "items")
        names = "、".join(item["name"] for item in items) or ref
        order_no = ref if len(ref) <= 32 and ref not in self.taken_order_nos else None
        self.new_orders[ref] = {
            "order_no": order_no or f"API{at:%Y%m%d}{secrets.token_hex(6)}",
            "customer_id": record.customer_id,
            "sku": items[0]["sku"] if len(items) == 1 else None,
            "product_name": names[:128],
            "quantity": sum(item["quantity"] for item in items) or 1,
            "amount_cents": amount or 0,
            "status": status,
            "created_at": at,
            "paid_at": at if status in ("paid", "refunded") else None,
            "api_key_id": self.key_id,
            "recipient_name": None,
            "recipient_phone": None,
            "shipping_address": None,
            **recipient,
        }
        if order_no:
            self.taken_order_nos.add(order_no)

    # --- the writes --------------------------------------------------------------------------------
    def _product_ids(self) -> None:
        missing = [sku for sku in self.wanted_products if sku not in self.products]
        if missing:
            rows = [
                {"sku": sku, "name": (name or sku)[:128], "category": "api", "price_cents": price or 0}
                for sku, (name, price) in ((sku, self.wanted_products[sku]) for sku in missing)
            ]
            ids = (
                self.conn.execute(insert(Product.__table__).returning(P.id, sort_by_parameter_order=True), rows)
                .scalars()
                .all()
            )
            self.products.update(zip(missing, ids, strict=True))

    def _insert_many(self, table, rows: list[dict]) -> None:
        """Many rows through the adapter's multi-row insert (few driver round trips)."""
        if not rows:
            return
        adapter = get_adapter(self.conn)
        moment, _day = adapter.bulk_value_formatters()
        # Each distinct time formatted once: most rows of a batch share a few (the batch's
        # own time for every received id, the senders' times for records sent together).
        formatted: dict[dt.datetime, object] = {}

        def convert(value):
            if not isinstance(value, dt.datetime):
                return value
            shown = formatted.get(value)
            if shown is None:
                shown = formatted[value] = moment(value)
            return shown

        columns = list(rows[0])
        values = [tuple(convert(row[c]) for c in columns) for row in rows]
        adapter.insert_rows(self.conn, table.name, columns, values)

    def _insert_returning(self, table, rows: list[dict]) -> list[int]:
        return get_adapter(self.conn).insert_rows_returning_ids(self.conn, table, rows)

    def _update_rows(self, table, changes: dict[int, dict]) -> None:
        """Rows changed by id: one UPDATE … FROM a VALUES list per set of changed columns
        (an order paid, a conversation ended: dozens per batch) rather than one statement each."""
        groups: dict[tuple[str, ...], list[tuple[int, dict]]] = defaultdict(list)
        for row_id, values in changes.items():
            if values:
                groups[tuple(sorted(values))].append((row_id, values))
        adapter = get_adapter(self.conn)
        for columns, rows in groups.items():
            if len(rows) == 1:
                row_id, values = rows[0]
                self.conn.execute(update(table).where(table.c.id == row_id).values(**values))
                continue
            # Plain names (conversation, customer_order and their columns): no quoting needed.
            adapter.update_from_values(
                self.conn,
                table.name,
                ["v_row_id", *(f"v_{c}" for c in columns)],
                [None, *(table.c[c].type for c in columns)],
                [(row_id, *(values[c] for c in columns)) for row_id, values in rows],
                ", ".join(f"{c} = v.v_{c}" for c in columns),
                f"{table.name}.id = v.v_row_id",
            )

    def _lock_customers(self) -> None:
        """The customers' rows locked first, in id order, where batches write side by side
        (dbadapter ``lock_rows_in_id_order``: two batches naming the same customers deadlocked)."""
        if self.touched:
            get_adapter(self.conn).lock_rows_in_id_order(self.conn, Customer.__table__, self.touched)

    def write(self, customers: dict) -> None:
        self._lock_customers()
        self._product_ids()
        if self.new_conversations:
            refs = list(self.new_conversations)
            ids = self._insert_returning(Conversation.__table__, [self.new_conversations[r] for r in refs])
            for ref, row_id in zip(refs, ids, strict=True):
                self.conversations[ref] = (row_id, self.new_conversations[ref]["customer_id"])
            self._insert_many(
                ExternalRef.__table__,
                [{"kind": "conversation", "ref": r, "row_id": i, "created_at": self.now} for r, i in zip(refs, ids)],
            )
        self._update_rows(Conversation.__table__, self.conversation_changes)
        if self.messages:
            self._insert_many(
                Message.__table__,
                [{"conversation_id": self.conversations[ref][0], **row} for ref, row in self.messages],
            )
        if self.new_orders:
            refs = list(self.new_orders)
            rows = []
            for ref in refs:
                values = dict(self.new_orders[ref])
                sku = values.pop("sku")
                values["product_id"] = self.products.get(sku) if sku else None
                rows.append(values)
            ids = self._insert_returning(Order.__table__, rows)
            self._insert_many(
                ExternalRef.__table__,
                [{"kind": "order", "ref": r, "row_id": i, "created_at": self.now} for r, i in zip(refs, ids)],
            )
        self._update_rows(Order.__table__, self.order_changes)
        if self.events:
            for event in self.events:
                sku = event.pop("sku")
                if sku:
                    event["product_id"] = self.products.get(sku)
            self._insert_many(BehaviorEvent.__table__, self.events)
        if self.ids:
            self._insert_many(IngestedEvent.__table__, self.ids)
        if self.with_orders:
            customer_orders.recompute_order_figures(self.session, self.with_orders)
        self._customers(customers)

    def _customers(self, customers: dict) -> None:
        """Last active (and last login) forward, the activity counter up.

        Last active is kept to the minute: a customer whose stored value is less than a
        minute older than the new activity only gets the counter (one row write instead of
        the six index entries that hold last active, and no report mark).
        """
        if not self.touched:
            return
        stored = {known[0]: (known[4], known[5]) for known in customers.values() if known is not None}
        moving, counting = [], []
        for customer_id in sorted(self.touched):
            at = self.last_active[customer_id]
            login = self.last_login.get(customer_id)
            last_active, last_login = stored.get(customer_id, (None, None))
            stale_active = last_active is None or as_utc(last_active) < at - LAST_ACTIVE_GRAIN
            stale_login = login is not None and (last_login is None or as_utc(last_login) < login - LAST_ACTIVE_GRAIN)
            if stale_active or stale_login:
                moving.append({"b_id": customer_id, "b_at": at, "b_login": login})
            else:
                counting.append({"b_id": customer_id})
        if moving:
            self._move_last_active(moving)
        if counting:
            # One statement for the lot (not one driver round trip per customer).
            self.conn.execute(
                update(Customer.__table__)
                .where(C.id.in_([row["b_id"] for row in counting]))
                .values(activity_seq=C.activity_seq + 1)
            )

    def _move_last_active(self, moving: list[dict]) -> None:
        """Last active (and last login) forward for these customers, the counter up: one
        statement per chunk, the new times in a VALUES list the UPDATE joins (UPDATE … FROM:
        SQLite 3.33+ and PostgreSQL; each customer row finds its values by key, where
        correlated sub-selects scanned the whole list four times per customer)."""
        kind = C.last_active_at.type
        get_adapter(self.conn).update_from_values(
            self.conn,
            "customer",
            ["v_id", "v_at", "v_login", "v_has_login"],
            [None, kind, kind, None],
            [
                (row["b_id"], row["b_at"], row["b_login"] or row["b_at"], 1 if row["b_login"] is not None else 0)
                for row in moving
            ],
            "last_active_at = CASE WHEN customer.last_active_at < v.v_at "
            "THEN v.v_at ELSE customer.last_active_at END, "
            "last_login_at = CASE WHEN v.v_has_login = 0 THEN customer.last_login_at "
            "WHEN customer.last_login_at IS NULL OR customer.last_login_at < v.v_login "
            "THEN v.v_login ELSE customer.last_login_at END, "
            "activity_seq = customer.activity_seq + 1",
            "customer.id = v.v_id",
        )


LAST_ACTIVE_GRAIN = dt.timedelta(minutes=1)
