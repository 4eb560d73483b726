"""Cleanup of invalid and stale data (CLEAN-1..7) and retention policies (RET-1)."""
