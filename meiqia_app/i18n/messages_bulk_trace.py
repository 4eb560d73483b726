"""Messages of the bulk edit's per-customer trace (services/customers/bulk_edit.py, the timeline)."""

ENTRIES = {
    "timeline.field_bulk_line": ("{field}：批量设为 {new}", "{field}: set in bulk to {new}"),
}
