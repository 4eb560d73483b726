"""Rule-based auto-tagging (TAG-3): a rule = a tag + conditions, combined with all / any."""
