"""A tag as a coloured chip."""

from __future__ import annotations

import reflex as rx

from meiqia_app.services.customers.dto import TagChip

# Tag colours are stored as Radix colour names; anything else shows grey.
RADIX_COLORS = (
    "gray",
    "gold",
    "bronze",
    "brown",
    "yellow",
    "amber",
    "orange",
    "tomato",
    "red",
    "ruby",
    "crimson",
    "pink",
    "plum",
    "purple",
    "violet",
    "iris",
    "indigo",
    "blue",
    "cyan",
    "teal",
    "jade",
    "green",
    "grass",
    "lime",
    "mint",
    "sky",
)


def tag_chip(tag: TagChip) -> rx.Component:
    return rx.badge(
        tag.name,
        color_scheme=rx.match(tag.color, *[(c, c) for c in RADIX_COLORS], "gray"),
        variant="soft",
        radius="full",
        class_name="tag-chip",
    )
