"""Connected systems: API keys, idempotency, ingested events and webhooks (docs/api.md)."""
