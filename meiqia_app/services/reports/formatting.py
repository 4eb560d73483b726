"""How report figures and their changes read on the pages and in the XLSX export."""

from __future__ import annotations

from meiqia_app.services.reports.measures import Measure

# --- formatting (both languages group thousands the same way) ----------------------------


def format_value(kind: str, value: float | None) -> str:
    if value is None:
        return "—"
    if kind == "rate":
        return f"{value * 100:.1f}%"
    if kind == "money":
        return f"¥{value / 100:,.2f}"
    if kind == "score":
        return f"{value:.2f}"
    return f"{int(value):,}"


def format_change(measure: Measure) -> str:
    change = measure.change
    if change is None:
        return "—"
    if measure.kind == "rate":
        return f"{change:+.1f} pp"
    if measure.kind == "score":
        return f"{change:+.2f}"
    return f"{change * 100:+.1f}%"


def change_direction(measure: Measure) -> str:
    change = measure.change
    if change is None or abs(change) < 1e-12:
        return "flat"
    return "up" if change > 0 else "down"


def change_tone(measure: Measure) -> str:
    """ "good", "bad" or "neutral": the change read against the way the measure should move."""
    direction = change_direction(measure)
    better = measure.better
    if direction == "flat" or better is None:
        return "neutral"
    return "good" if direction == better else "bad"
