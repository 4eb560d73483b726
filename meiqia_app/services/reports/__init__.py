"""Dashboard and data reports (REP-1, REP-2): measures, aggregates, what the pages show."""
