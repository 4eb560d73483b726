"""Search without the hidden part of masked contact data

``customer_search.text`` held the full phone and e-mail, so a role that sees
them masked (138****5678) could still match their hidden digits and, search
by search, read them back. The text is split:

- ``text``: name, pinyin, ids and the phone and e-mail as masked (what every
  role may match),
- ``contact`` (new): the full phone and e-mail (matched only for roles with
  customer.view_sensitive),
- ``phone_mask`` (new): the masked phone, to rank "ends with the typed digits"
  on what the role can see.

Every customer's row is rewritten from the customer table (erased customers
keep only their anonymous label) and the search index is rebuilt over both
texts: SQLite's FTS5 table gets a second column, PostgreSQL a second pg_trgm
index. The rewrite computes the rows in Python (pinyin, phone masks) in
batches of 5,000 customers.

Revision ID: 0010_masked_search
Revises: 0009_audit_integrity
"""

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

from meiqia_app.dbadapter import adapter_for

revision: str = "0010_masked_search"
down_revision: str | None = "0009_audit_integrity"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 5000


def _rewrite(row_of: Callable[[object], dict]) -> None:
    """Every customer_search row recomputed from its customer, in id batches."""
    bind = op.get_bind()
    after = 0
    while True:
        customers = bind.execute(
            sa.text(
                "SELECT id, name, phone, email, external_id, visitor_id, erased_at FROM customer "
                "WHERE id > :after ORDER BY id LIMIT :batch"
            ),
            {"after": after, "batch": BATCH},
        ).all()
        if not customers:
            return
        rows = [{"customer_id": c.id, **row_of(c)} for c in customers]
        columns = [name for name in rows[0] if name != "customer_id"]
        bind.execute(
            sa.text(
                f"UPDATE customer_search SET {', '.join(f'{name} = :{name}' for name in columns)} "
                "WHERE customer_id = :customer_id"
            ),
            rows,
        )
        after = customers[-1].id


def _current_row(customer) -> dict:
    from meiqia_app.services.customers.search_text import search_row

    if customer.erased_at is not None:  # as services/privacy/erasure.py leaves it
        return {"text": (customer.name or "").lower(), "contact": "", "phone_mask": ""}
    return search_row(customer.name, customer.phone, customer.email, customer.external_id, customer.visitor_id)


def _v1_row(customer) -> dict:
    """The single text of revision 0006: the public text with the full phone and e-mail in it."""
    from meiqia_app.services.customers.search_text import FIELD_SEP, _prefixes, _short_pieces, normalize, pinyin_of

    if customer.erased_at is not None:
        return {"text": (customer.name or "").lower()}
    name = normalize(customer.name or "")
    full, initials = pinyin_of(name)
    values = [name, full, initials]
    values += [normalize(v) for v in (customer.phone, customer.email, customer.external_id, customer.visitor_id) if v]
    short = _short_pieces(name) + _prefixes(full) + _prefixes(initials)
    return {"text": FIELD_SEP.join(dict.fromkeys(v for v in values + short if v))}


def upgrade() -> None:
    bind = op.get_bind()
    adapter = adapter_for(bind.dialect.name)
    for statement in adapter.search_ddl_drop():
        op.execute(statement)
    op.add_column("customer_search", sa.Column("contact", sa.Text(), nullable=False, server_default=""))
    op.add_column("customer_search", sa.Column("phone_mask", sa.Text(), nullable=False, server_default=""))
    _rewrite(_current_row)
    for statement in adapter.search_ddl():
        op.execute(statement)
    adapter.rebuild_search_index(bind)


def downgrade() -> None:
    bind = op.get_bind()
    adapter = adapter_for(bind.dialect.name)
    for statement in adapter.search_ddl_drop():
        op.execute(statement)
    _rewrite(_v1_row)
    with op.batch_alter_table("customer_search") as batch_op:
        batch_op.drop_column("phone_mask")
        batch_op.drop_column("contact")
    for statement in adapter.search_ddl_v1():
        op.execute(statement)
    if bind.dialect.name == "sqlite":
        # Fills the FTS5 table (the v1 triggers exist by now, none is added);
        # PostgreSQL's index was built by the DDL.
        adapter.rebuild_search_index(bind)
