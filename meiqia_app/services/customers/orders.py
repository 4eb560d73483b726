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
    paid = and_(OC.customer_id == C.id, OC.status == "paid")
    figures = {
        "order_count": select(func.count()).where(paid).scalar_subquery(),
        "total_spent_cents": select(func.coalesce(func.sum(OC.amount_cents), 0)).where(paid).scalar_subquery(),
        "first_purchase_at": select(func.min(OC.created_at)).where(paid).scalar_subquery(),
        "last_purchase_at": select(func.max(OC.created_at)).where(paid).scalar_subquery(),
    }
    # Only customers whose figures change are written: an unpaid order (most of what a shop
    # sends) leaves them as they were, and an UPDATE rewrites the entries of every index on
    # the columns it sets (four at 1M customers: ~130 pages per ingested batch) even when
    # the values stay the same.
    session.execute(
        update(Customer.__table__)
        .where(C.id.in_(ids), or_(*(C[name].is_distinct_from(value) for name, value in figures.items())))
        .values(**figures)
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
