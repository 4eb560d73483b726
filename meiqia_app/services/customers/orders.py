"""Recording an order for a customer (TAG-3: rules follow a customer's new orders).

The customer's derived figures (paid order count, total spent, first/last
purchase, last activity) move with the order, then the customer's lifecycle
stage and rule tags are brought up to date at once, without waiting for the
nightly run (the order is told as a customer change: services/customers/changes.py,
whose subscribers apply the on-change rules).
"""

from __future__ import annotations

import datetime as dt
import secrets

from sqlalchemy import and_, func, or_, select, update

from meiqia_app.db import write_session
from meiqia_app.models import Customer, Order, Product
from meiqia_app.models.activity import ORDER_STATUSES
from meiqia_app.services.audit import log as audit
from meiqia_app.services.customers.access import CustomerAccess, parse_id
from meiqia_app.services.customers.changes import ORDERS, customers_changed
from meiqia_app.services.errors import ValidationError
from meiqia_app.services.identity.rbac import Actor, require
from meiqia_app.timeutil import as_utc, utcnow

C = Customer.__table__.c
OC = Order.__table__.c


def recompute_order_figures(session, customer_ids) -> None:
    """The customers' paid-order figures from their orders (count, amount spent, first and last
    purchase), in the caller's transaction: after an order is added or its status changes, here
    or through the open API. Purchases are dated by the order's creation, as the seed does."""
    ids = sorted(set(customer_ids))
    if not ids:
        return
    # One grouped pass over the named customers' paid orders (each customer's orders read
    # once), joined by the UPDATE: four correlated sub-selects in the SET and four more in
    # the WHERE read every customer's paid orders eight times (an ingested batch names
    # dozens of customers with orders). A customer left with no paid order gets 0 / NULL.
    owner = Customer.__table__.alias("owner")
    figures = (
        select(
            owner.c.id.label("f_id"),
            func.count(OC.id).label("f_count"),
            func.coalesce(func.sum(OC.amount_cents), 0).label("f_spent"),
            func.min(OC.created_at).label("f_first"),
            func.max(OC.created_at).label("f_last"),
        )
        .select_from(owner.outerjoin(Order.__table__, and_(OC.customer_id == owner.c.id, OC.status == "paid")))
        .where(owner.c.id.in_(ids))
        .group_by(owner.c.id)
        .subquery("figures")
    )
    pairs = (
        ("order_count", figures.c.f_count),
        ("total_spent_cents", figures.c.f_spent),
        ("first_purchase_at", figures.c.f_first),
        ("last_purchase_at", figures.c.f_last),
    )
    # Only customers whose figures change are written: an unpaid order (most of what a shop
    # sends) leaves them as they were, and an UPDATE rewrites the entries of every index on
    # the columns it sets (four at 1M customers: ~130 pages per ingested batch) even when
    # the values stay the same.
    session.execute(
        update(Customer.__table__)
        .where(C.id == figures.c.f_id, or_(*(C[name].is_distinct_from(value) for name, value in pairs)))
        .values({name: value for name, value in pairs})
        .execution_options(synchronize_session=False)
    )


MAX_QUANTITY = 10_000
MAX_AMOUNT_CENTS = 10_000_000_000


def add_order(
    actor: Actor,
    customer_id: int,
    product_id: int,
    quantity: int = 1,
    amount_yuan: float | None = None,
    status: str = "paid",
    at: dt.datetime | None = None,
) -> int:
    """Record an order; returns its id. ``amount_yuan`` defaults to price × quantity."""
    require(actor, "customer.edit", action="customer.order_add", target_type="customer", target_id=customer_id)
    customer_id, product_id = parse_id(customer_id), parse_id(product_id)
    if status not in ORDER_STATUSES:
        raise ValidationError.single("status", "error.bad_choice")
    try:
        quantity = int(quantity)
    except (TypeError, ValueError):
        raise ValidationError.single("quantity", "error.bad_number") from None
    if not 0 < quantity <= MAX_QUANTITY:
        raise ValidationError.single("quantity", "error.bad_number")
    now = as_utc(at) if at is not None else utcnow()
    with write_session() as session:
        customer = CustomerAccess(actor).load(
            session, customer_id, for_write=True, writer="system", action="customer.order_add"
        )
        product = session.get(Product, product_id)
        if product is None:
            raise ValidationError.single("product_id", "error.not_found")
        try:
            cents = product.price_cents * quantity if amount_yuan is None else int(round(float(amount_yuan) * 100))
        except (TypeError, ValueError):
            raise ValidationError.single("amount", "error.bad_number") from None
        if not 0 <= cents <= MAX_AMOUNT_CENTS:
            raise ValidationError.single("amount", "error.bad_number")
        paid = status == "paid"
        order = Order(
            order_no=f"M{now:%Y%m%d%H%M%S}{secrets.token_hex(4)}",
            customer_id=customer_id,
            product_id=product_id,
            product_name=product.name,
            quantity=quantity,
            amount_cents=cents,
            status=status,
            created_at=now,
            paid_at=now if paid else None,
        )
        session.add(order)
        if customer.last_active_at is None or as_utc(customer.last_active_at) < now:
            customer.last_active_at = now
        session.add(customer)
        session.flush()
        order_id = order.id
        recompute_order_figures(session, [customer_id])
        audit.record(
            session,
            actor,
            "customer.order_add",
            target_type="customer",
            target_id=customer_id,
            details={
                "order_id": order_id,
                "product": product.name,
                "quantity": quantity,
                "amount_cents": cents,
                "status": status,
            },
        )
        customers_changed(session, [customer_id], ORDERS)  # counts, reports, on-change rules
    return order_id
