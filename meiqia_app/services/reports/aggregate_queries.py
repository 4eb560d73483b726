"""Reading the daily aggregates: the figures of a period for the whole working set
(``measures``, ``group_counts``, ``daily``, ``cohort``, ``products``) and the same
figures for a segment summed in memory from the ledger (``SegmentTotals``).

The tables are kept by ``reports/aggregates.py`` (build, incremental upkeep); this
module only reads them.
"""

from __future__ import annotations

import datetime as dt
import marshal
from collections import defaultdict
from collections.abc import Iterable, Iterator

from sqlalchemy import Connection, text

from meiqia_app.services.reports.aggregates import (
    ACTIVITY,
    BUYER,
    CHATS,
    COHORT,
    CONVERSION,
    PAID,
    PRODUCT,
    PRODUCT_BUYER,
    REG_LIFECYCLE,
    REG_PROVINCE,
    REG_SOURCE,
    Key,
)

# --- queries ---------------------------------------------------------------------------------------


def _one(conn: Connection, sql: str, **params) -> tuple:
    return tuple(int(v or 0) for v in conn.execute(text(sql), params).one())


def measures(conn: Connection, first: dt.date, last: dt.date) -> dict[str, int]:
    """The raw counts of one period (local days ``first`` .. ``last``) for the whole working set."""
    d1, d2 = first.toordinal(), last.toordinal()
    p = {"d1": d1, "d2": d2}
    (total,) = _one(conn, "SELECT sum(n) FROM report_daily WHERE kind = 'rl' AND day <= :d2", **p)
    (new,) = _one(conn, "SELECT sum(n) FROM report_daily WHERE kind = 'rl' AND day BETWEEN :d1 AND :d2", **p)
    (active,) = _one(
        conn, "SELECT sum(n) FROM report_daily WHERE kind = 'ac' AND day BETWEEN :d1 AND :d2 AND k2 < :d1", **p
    )
    registered, converted = _one(
        conn,
        "SELECT sum(n), sum(CASE WHEN k2 <> 0 AND k2 <= :d2 THEN n ELSE 0 END) "
        "FROM report_daily WHERE kind = 'cv' AND day BETWEEN :d1 AND :d2",
        **p,
    )
    orders, amount = _one(
        conn, "SELECT sum(n), sum(s1) FROM report_daily WHERE kind = 'or' AND day BETWEEN :d1 AND :d2", **p
    )
    buyers, repeat = _one(
        conn,
        "SELECT sum(n), sum(CASE WHEN k2 <> 0 OR (k3 <> 0 AND k3 <= :d2) THEN n ELSE 0 END) "
        "FROM report_daily WHERE kind = 'by' AND day BETWEEN :d1 AND :d2 AND k2 < :d1",
        **p,
    )
    chats, complaints, rated, rating_sum = _one(
        conn,
        "SELECT sum(n), sum(s1), sum(s2), sum(s3) FROM report_daily WHERE kind = 'ch' AND day BETWEEN :d1 AND :d2",
        **p,
    )
    return {
        "total": total,
        "new": new,
        "active": active,
        "registered": registered,
        "converted": converted,
        "orders": orders,
        "amount": amount,
        "buyers": buyers,
        "repeat": repeat,
        "conversations": chats,
        "complaints": complaints,
        "rated": rated,
        "rating_sum": rating_sum,
    }


GROUP_KINDS = {"lifecycle_stage": REG_LIFECYCLE, "source": REG_SOURCE, "province": REG_PROVINCE}


def group_counts(
    conn: Connection, column_name: str, first: dt.date | None = None, last: dt.date | None = None
) -> dict[str, int]:
    """Customers of the working set per lifecycle / source / province, all or registered within the days."""
    kind = GROUP_KINDS[column_name]
    sql = "SELECT k1, sum(n) FROM report_daily WHERE kind = :kind"
    params: dict = {"kind": kind}
    if first is not None:
        sql += " AND day BETWEEN :d1 AND :d2"
        params.update(d1=first.toordinal(), d2=last.toordinal())
    return {str(k): int(n) for k, n in conn.execute(text(sql + " GROUP BY k1"), params) if n}


def daily(conn: Connection, first: dt.date, last: dt.date) -> dict[int, list[int]]:
    """Per local day: [new customers, paid orders, amount, conversations]."""
    out: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    rows = conn.execute(
        text(
            "SELECT kind, day, sum(n), sum(s1) FROM report_daily WHERE kind IN ('rl', 'or', 'ch') AND day BETWEEN :d1 AND :d2 "
            "GROUP BY kind, day"
        ),
        {"d1": first.toordinal(), "d2": last.toordinal()},
    )
    for kind, day, n, s1 in rows:
        row = out[int(day)]
        if kind == REG_LIFECYCLE:
            row[0] += int(n or 0)
        elif kind == PAID:
            row[1] += int(n or 0)
            row[2] += int(s1 or 0)
        else:
            row[3] += int(n or 0)
    return out


def cohort(conn: Connection, month_first: dt.date, boundaries: Iterable[dt.date]) -> tuple[int, list[int]]:
    """(customers registered in the month, of whom last active on or after each boundary day)."""
    rows = conn.execute(
        text("SELECT k2, sum(n) FROM report_daily WHERE kind = 'co' AND day = :d GROUP BY k2"),
        {"d": month_first.toordinal()},
    ).all()
    size = sum(int(n) for _k, n in rows)
    return size, [sum(int(n) for k, n in rows if int(k) >= b.toordinal()) for b in boundaries]


def products(conn: Connection, first: dt.date, last: dt.date) -> list[tuple[str, int, int, int, int]]:
    """(product, paid orders, quantity, amount, distinct buyers) within the days, every product."""
    p = {"d1": first.toordinal(), "d2": last.toordinal()}
    buyers = {
        str(k): int(n)
        for k, n in conn.execute(
            text(
                "SELECT k1, sum(n) FROM report_daily WHERE kind = 'pb' AND day BETWEEN :d1 AND :d2 AND k2 < :d1 GROUP BY k1"
            ),
            p,
        )
    }
    return [
        (str(k), int(n or 0), int(q or 0), int(a or 0), buyers.get(str(k), 0))
        for k, n, q, a in conn.execute(
            text(
                "SELECT k1, sum(n), sum(s1), sum(s2) FROM report_daily WHERE kind = 'pr' AND day BETWEEN :d1 AND :d2 GROUP BY k1"
            ),
            p,
        )
        if n
    ]


# --- segments: the same figures summed over the ledger of the segment's customers --------------------


class SegmentTotals:
    """report_daily restricted to a segment, in memory: the contributions of the
    segment's customers (read from the ledger through the segment's conditions)
    summed per key. Answers the same questions as the SQL functions above."""

    def __init__(self, by_kind: dict[str, list[tuple]]) -> None:
        self.by_kind = by_kind

    @classmethod
    def load(cls, conn: Connection, customer_ids_select) -> SegmentTotals:
        from sqlalchemy import select

        from meiqia_app.models import ReportLedger

        ledger = ReportLedger.__table__.c
        totals: dict[Key, list[int]] = {}
        get = totals.get
        statement = select(ledger.data).where(ledger.customer_id.in_(customer_ids_select))
        for (data,) in conn.execute(statement):
            for key, values in marshal.loads(bytes(data)):
                row = get(key)
                if row is None:
                    totals[key] = list(values)
                else:
                    row[0] += values[0]
                    row[1] += values[1]
                    row[2] += values[2]
                    row[3] += values[3]
        by_kind: dict[str, list[tuple]] = defaultdict(list)
        for (kind, day, k1, k2, k3), (n, s1, s2, s3) in totals.items():
            if n or s1 or s2 or s3:
                by_kind[kind].append((day, k1, k2, k3, n, s1, s2, s3))
        return cls(dict(by_kind))

    def _rows(self, kind: str, first: dt.date | None = None, last: dt.date | None = None) -> Iterator[tuple]:
        rows = self.by_kind.get(kind, ())
        if first is None:
            return iter(rows)
        d1, d2 = first.toordinal(), last.toordinal()
        return (r for r in rows if d1 <= r[0] <= d2)

    def measures(self, first: dt.date, last: dt.date) -> dict[str, int]:
        d1, d2 = first.toordinal(), last.toordinal()
        out = dict.fromkeys(
            (
                "total",
                "new",
                "active",
                "registered",
                "converted",
                "orders",
                "amount",
                "buyers",
                "repeat",
                "conversations",
                "complaints",
                "rated",
                "rating_sum",
            ),
            0,
        )
        for day, _k1, _k2, _k3, n, *_ in self.by_kind.get(REG_LIFECYCLE, ()):
            if day <= d2:
                out["total"] += n
                if day >= d1:
                    out["new"] += n
        for _day, _k1, k2, _k3, n, *_ in self._rows(ACTIVITY, first, last):
            if k2 < d1:
                out["active"] += n
        for _day, _k1, k2, _k3, n, *_ in self._rows(CONVERSION, first, last):
            out["registered"] += n
            if k2 and k2 <= d2:
                out["converted"] += n
        for _day, _k1, _k2, _k3, n, s1, *_ in self._rows(PAID, first, last):
            out["orders"] += n
            out["amount"] += s1
        for _day, _k1, k2, k3, n, *_ in self._rows(BUYER, first, last):
            if k2 < d1:
                out["buyers"] += n
                if k2 or (k3 and k3 <= d2):
                    out["repeat"] += n
        for _day, _k1, _k2, _k3, n, s1, s2, s3 in self._rows(CHATS, first, last):
            out["conversations"] += n
            out["complaints"] += s1
            out["rated"] += s2
            out["rating_sum"] += s3
        return out

    def cohort(self, month_first: dt.date, boundaries: Iterable[dt.date]) -> tuple[int, list[int]]:
        day = month_first.toordinal()
        rows = [(k2, n) for d, _k1, k2, _k3, n, *_ in self.by_kind.get(COHORT, ()) if d == day]
        return sum(n for _k, n in rows), [sum(n for k, n in rows if k >= b.toordinal()) for b in boundaries]

    def products(self, first: dt.date, last: dt.date) -> list[tuple[str, int, int, int, int]]:
        d1 = first.toordinal()
        figures: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        for _day, product, _k2, _k3, n, s1, s2, _s3 in self._rows(PRODUCT, first, last):
            row = figures[product]
            row[0] += n
            row[1] += s1
            row[2] += s2
        for _day, product, k2, _k3, n, *_ in self._rows(PRODUCT_BUYER, first, last):
            if k2 < d1:
                figures[product][3] += n
        return [(product, *values) for product, values in figures.items() if values[0]]
