"""Pre-aggregated report figures (services/reports/aggregates.py).

``report_daily`` holds additive figures per local day (in the zone they were
built for); ``report_ledger`` what each customer contributed to it (so a change
to one customer is applied as the difference between its old and new
contribution); ``report_dirty`` the customers whose rows changed since (filled
by database triggers on customer, customer_order, conversation and
behavior_event, so every writer — services, imports, the CLI, another worker —
marks them).
"""

from __future__ import annotations

from sqlalchemy import Column, Integer, LargeBinary
from sqlmodel import Field, SQLModel


class ReportDaily(SQLModel, table=True):
    __tablename__ = "report_daily"
    __table_args__ = {"sqlite_with_rowid": False}  # the primary key is the only index read

    kind: str = Field(primary_key=True, max_length=4)
    day: int = Field(primary_key=True)  # local date as an ordinal (date.toordinal())
    k1: str = Field(default="", primary_key=True, max_length=64)  # source / province / lifecycle / ""
    k2: int = Field(default=0, primary_key=True)  # a second day (previous activity, first purchase...), 0 = none
    k3: int = Field(default=0, primary_key=True)  # a third day (second purchase), 0 = none
    n: int = 0
    s1: int = 0
    s2: int = 0
    s3: int = 0


class ReportLedger(SQLModel, table=True):
    __tablename__ = "report_ledger"

    customer_id: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))  # marshal of (key, values) pairs


class ReportDirty(SQLModel, table=True):
    __tablename__ = "report_dirty"

    customer_id: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
