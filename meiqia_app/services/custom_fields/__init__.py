"""Custom fields (自定义字段): definitions (definitions.py), the cached catalogue (catalog.py),
types with their validation and stored forms (field_types.py) and customers' values (values.py)."""
