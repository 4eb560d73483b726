"""Custom field values as the open API and webhooks carry them: typed JSON under ``custom_fields``.

One value per active field (retired and deleted fields are left out), the
customer's effective value (the default where they have none; None when
empty), in a form an API client can store and send back unchanged:

============== =========================================================
type           JSON value
============== =========================================================
text, long     string
text, link,
phone, email
number         number
money          number in yuan (12.3 = ¥12.30; stored as cents)
percent        number in percent (12.5 = 12.5 %)
date           "YYYY-MM-DD"
datetime       "YYYY-MM-DDTHH:MM:SSZ" (UTC)
single_select  the option's id ("o3": stable when labels are renamed)
multi_select   array of option ids, in the admin's option order
yes_no         true / false
============== =========================================================

Writing takes the same forms (services/custom_fields/values.clean_changes,
through services/customers/edit.py), and more (a select's label, money as
"¥12.30"). A sensitive field is masked for an actor without
customer.view_sensitive exactly like the record's built-in fields
(CustomerAccess.mask with ``hidden=None``): phone and e-mail types as the
console shows them (``138****5678``), every other type null; its name
("cf.<key>") is then in the record's ``masked_fields``.
"""

from __future__ import annotations

from decimal import Decimal

from meiqia_app.services.custom_fields import catalog as custom_field_catalog
from meiqia_app.services.custom_fields.field_types import FieldDef, option_sort_key
from meiqia_app.services.custom_fields.values import effective
from meiqia_app.services.customers.access import CustomerAccess


def json_value(field: FieldDef, value: object) -> object:
    """A stored value in its API form (see the table above); None stays None. Values written
    by hand into the database that do not fit the type are passed as they are."""
    if value is None:
        return None
    kind = field.field_type
    try:
        if kind == "money":
            yuan = (Decimal(int(value)) / 100).normalize()
            return int(yuan) if yuan == yuan.to_integral_value() else float(yuan)
        if kind == "multi_select":
            order = {o.id: (o.order, option_sort_key(o.id)) for o in field.options}
            ids = [str(i) for i in (value if isinstance(value, list) else [value])]
            return sorted(ids, key=lambda i: order.get(i, (1 << 30, option_sort_key(i))))
    except (TypeError, ValueError, ArithmeticError):
        return value
    return value


def record_values(access: CustomerAccess, stored: object) -> dict[str, object]:
    """{key: value} of every active field for one customer's stored document, masked as
    ``access``'s actor sees it."""
    fields = custom_field_catalog.catalog().active
    return {
        field.key: access.mask(field.name, json_value(field, effective(field, stored)), hidden=None) for field in fields
    }


def masked_names(access: CustomerAccess) -> tuple[str, ...]:
    """The "cf.<key>" names of the active sensitive fields ``access``'s actor sees masked."""
    if access.sees_sensitive:
        return ()
    return tuple(field.name for field in custom_field_catalog.catalog().active if field.sensitive)
