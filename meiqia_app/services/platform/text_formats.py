"""Small formatting rules shared by several pages and files (one place, so
"1.5 MB" reads the same on the export history, the backups and retention)."""

from __future__ import annotations


def file_size_text(size: int) -> str:
    """A byte count for people: "512 B", "12.3 KB", "1.5 MB", "2.0 GB"."""
    value = float(max(int(size), 0))
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{value:,.1f} GB"  # unreachable: the loop ends at GB
