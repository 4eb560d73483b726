"""Lifecycle stage and membership tier: how they follow from a customer's activity.

Stages (TAG-4): 潜在 prospect (never purchased) / 新 new (first purchase within
``new_days``) / 活跃 active (activity within ``active_days``) / 流失 churned (no
activity for more than ``churn_days``). Between active and churned a customer
is 沉睡 dormant, so every customer has exactly one stage.
"""

from __future__ import annotations

import dataclasses
import datetime as dt


@dataclasses.dataclass(frozen=True)
class LifecycleThresholds:
    new_days: int = 30
    active_days: int = 90
    churn_days: int = 180

    def validate(self) -> None:
        if not (0 < self.new_days and 0 < self.active_days < self.churn_days <= 3650):
            raise ValueError("lifecycle thresholds must satisfy 0 < active_days < churn_days <= 3650")


@dataclasses.dataclass(frozen=True)
class TierThresholds:
    silver_cents: int = 300_000  # 3,000 yuan
    gold_cents: int = 1_000_000  # 10,000 yuan


def lifecycle_stage(
    first_purchase_at: dt.datetime | None,
    last_active_at: dt.datetime | None,
    now: dt.datetime,
    thresholds: LifecycleThresholds = LifecycleThresholds(),
) -> str:
    if first_purchase_at is None:
        return "prospect"
    if now - first_purchase_at <= dt.timedelta(days=thresholds.new_days):
        return "new"
    idle = now - last_active_at if last_active_at is not None else dt.timedelta.max
    if idle <= dt.timedelta(days=thresholds.active_days):
        return "active"
    if idle > dt.timedelta(days=thresholds.churn_days):
        return "churned"
    return "dormant"


def membership_tier(total_spent_cents: int, thresholds: TierThresholds = TierThresholds()) -> str:
    if total_spent_cents >= thresholds.gold_cents:
        return "gold"
    if total_spent_cents >= thresholds.silver_cents:
        return "silver"
    return "regular"
