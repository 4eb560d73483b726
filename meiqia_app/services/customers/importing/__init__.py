"""Importing customers from CSV or XLSX files (CUST-6)."""
