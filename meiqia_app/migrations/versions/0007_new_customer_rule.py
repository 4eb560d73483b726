"""The shipped 新客户 rule means what its name says

Until now the shipped rule for the tag 新客户 was "registration to first
purchase ≤ 30 days": once true it stays true, so the tag never came off and
customers registered years ago (churned ones among them) kept it. The rule now
is "registered within the last 30 days" (``registered_days ≤ 30``), in sync
mode as before, so the nightly rule run (``tag_rules``, 02:30) takes the tag
off a customer on the 31st day.

This revision corrects the rule in an existing database when it is still the
shipped one (an administrator's own edit is left alone), and the tag's
description when it is still the shipped text. The assignments follow at the
next rule run (nightly, or "run now" on /tags).

Revision ID: 0007_new_customer_rule
Revises: 0006_partial_status_indexes
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_new_customer_rule"
down_revision: str | None = "0006_partial_status_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TAG_KEY = "新客户"  # services/tags/names.tag_key of the tag's name
OLD_CONDITIONS = [{"field": "first_purchase_days", "op": "lte", "value": 30, "days": 0, "product_id": None}]
NEW_CONDITIONS = [{"field": "registered_days", "op": "lte", "value": 30, "days": 0, "product_id": None}]
OLD_DESCRIPTION = "注册后 30 天内首次购买"
NEW_DESCRIPTION = "最近 30 天内注册"

tag = sa.table(
    "tag", sa.column("id", sa.Integer), sa.column("name_key", sa.String), sa.column("description", sa.String)
)
tag_rule = sa.table(
    "tag_rule",
    sa.column("id", sa.Integer),
    sa.column("tag_id", sa.Integer),
    sa.column("conditions", sa.Text),
)


def _same(stored: str, conditions: list[dict]) -> bool:
    try:
        found = json.loads(stored or "[]")
    except ValueError:
        return False
    if not isinstance(found, list) or len(found) != len(conditions):
        return False
    keys = ("field", "op", "value", "days", "product_id")
    return all(isinstance(a, dict) and all(a.get(k) == b.get(k) for k in keys) for a, b in zip(found, conditions))


def _replace(before: list[dict], after: list[dict], before_text: str, after_text: str) -> None:
    conn = op.get_bind()
    tag_ids = [row.id for row in conn.execute(sa.select(tag.c.id).where(tag.c.name_key == TAG_KEY))]
    if not tag_ids:
        return
    rules = conn.execute(sa.select(tag_rule.c.id, tag_rule.c.conditions).where(tag_rule.c.tag_id.in_(tag_ids))).all()
    for rule in rules:
        if _same(rule.conditions, before):
            conn.execute(
                tag_rule.update()
                .where(tag_rule.c.id == rule.id)
                .values(conditions=json.dumps(after, ensure_ascii=False))
            )
    conn.execute(
        tag.update().where(tag.c.id.in_(tag_ids), tag.c.description == before_text).values(description=after_text)
    )


def upgrade() -> None:
    _replace(OLD_CONDITIONS, NEW_CONDITIONS, OLD_DESCRIPTION, NEW_DESCRIPTION)


def downgrade() -> None:
    _replace(NEW_CONDITIONS, OLD_CONDITIONS, NEW_DESCRIPTION, OLD_DESCRIPTION)
