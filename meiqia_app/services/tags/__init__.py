"""Tags: the catalogue, tags on a customer, how names compare, and rule-based auto-tagging."""
