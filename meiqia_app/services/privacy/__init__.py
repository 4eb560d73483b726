"""Personal-data rights: erasure, the erasure ledger a restore re-applies, mentions in other records."""
