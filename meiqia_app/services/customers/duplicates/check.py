"""The one rule for "this customer is already here", used by the new-customer
dialog (services/customers/edit.create_customer) and the import
(services/customers/importing/).

A customer repeats another when they share

* the phone number (as stored: validation normalises it),
* the e-mail address, letter case aside (looked up as typed and in lower case,
  through ``ix_customer_email``), or
* the external id (the key of another system: exact).

Only customers that are neither in the trash nor erased count: a trashed one is
on its way out (a merge puts the merged-away customers there, with the
survivor's phone), and nobody can open it but the people who may empty the
trash. (The duplicate finder on /duplicates also looks at a name in the same
city; that is a hint for a person, not a reason to stop a save or skip a row.)

A customer outside the data scope of the person saving still counts (the
number is taken), but what they are told names nobody: :meth:`ExistingCustomer.as_shown`
drops the id and the name ("a customer you cannot see already has this phone").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from sqlalchemy import Connection, select

from meiqia_app.models import Customer
from meiqia_app.models.customer import STATUS_TRASHED
from meiqia_app.services.customers.access import CustomerAccess

C = Customer.__table__.c

#: The fields that identify a customer, in the order a warning names them.
IDENTITY_FIELDS = ("phone", "email", "external_id")
LOOKUP_CHUNK = 500  # values per IN (...)

Key = tuple[str, str]


@dataclasses.dataclass
class ExistingCustomer:
    """One customer a new one repeats, and by which field (plain values: a DTO).

    ``visible``: within the data scope of the person saving. One that is not
    must leave the service only as :meth:`as_shown` makes it: no id, no name.
    """

    field: str  # phone | email | external_id
    customer_id: int | None
    name: str
    visible: bool = True

    def as_shown(self) -> ExistingCustomer:
        """What the person saving may be told: all of a visible customer, only the field of another."""
        return self if self.visible else ExistingCustomer(field=self.field, customer_id=None, name="", visible=False)


def identity_keys(cleaned: dict) -> list[Key]:
    """(field, comparable value) for each identifying field the cleaned values have."""
    keys: list[Key] = []
    for field in IDENTITY_FIELDS:
        value = cleaned.get(field)
        if not value:
            continue
        keys.append((field, str(value).lower() if field == "email" else str(value)))
    return keys


def _chunks(values: Sequence, size: int):
    for start in range(0, len(values), size):
        yield values[start : start + size]


def existing_by_key(conn: Connection, cleaned_rows: Iterable[dict]) -> dict[Key, int]:
    """(field, value) -> the lowest id of a live customer with it, for the keys of ``cleaned_rows``.

    Indexed IN look-ups, ``LOOKUP_CHUNK`` values at a time (an import asks for
    a whole batch of rows at once).
    """
    wanted: dict[str, set[str]] = {field: set() for field in IDENTITY_FIELDS}
    for cleaned in cleaned_rows:
        for field in IDENTITY_FIELDS:
            value = cleaned.get(field)
            if not value:
                continue
            wanted[field].add(str(value))
            if field == "email":
                wanted[field].add(str(value).lower())
    found: dict[Key, int] = {}
    live = (C.status != STATUS_TRASHED, C.erased_at.is_(None))
    for field in IDENTITY_FIELDS:
        column = C[field]
        for chunk in _chunks(sorted(wanted[field]), LOOKUP_CHUNK):
            for customer_id, value in conn.execute(select(C.id, column).where(column.in_(chunk), *live)):
                key = (field, value.lower() if field == "email" else value)
                if key not in found or customer_id < found[key]:
                    found[key] = customer_id
    return found


def existing_customers(conn: Connection, cleaned: dict, access: CustomerAccess | None = None) -> list[ExistingCustomer]:
    """The live customers a new customer with these (cleaned) values would repeat,
    one entry per field and customer, in the order of IDENTITY_FIELDS; each
    ``visible`` when ``access`` (the person saving) may reach it (no access: all are)."""
    keys = identity_keys(cleaned)
    if not keys:
        return []
    found = existing_by_key(conn, [cleaned])
    hits = [(field, found[(field, value)]) for field, value in keys if (field, value) in found]
    if not hits:
        return []
    ids = sorted({i for _f, i in hits})
    names = dict(conn.execute(select(C.id, C.name).where(C.id.in_(ids))).all())
    reachable = set(names) if access is None else set(access.load_many(conn, ids, columns=[]))
    return [
        ExistingCustomer(field=field, customer_id=i, name=names.get(i, ""), visible=i in reachable) for field, i in hits
    ]


def reachable_ids(conn: Connection, access: CustomerAccess, ids: Iterable[int]) -> set[int]:
    """Those of ``ids`` the person may reach (an import's report names only those)."""
    wanted = sorted(set(ids))
    if access.scope_condition() is None:  # scope "all": every live customer (the only kind looked up)
        return set(wanted)
    found: set[int] = set()
    for chunk in _chunks(wanted, LOOKUP_CHUNK):
        found.update(access.load_many(conn, chunk, columns=[]))
    return found


__all__ = [
    "IDENTITY_FIELDS",
    "ExistingCustomer",
    "existing_by_key",
    "existing_customers",
    "identity_keys",
    "reachable_ids",
]
