"""Duplicate customers: the one duplicate rule, finding groups, merging them."""
