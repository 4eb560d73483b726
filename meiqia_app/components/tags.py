"""A tag as a coloured chip."""

from __future__ import annotations

import reflex as rx

from meiqia_app.services.customers.dto import TagChip
from meiqia_app.services.tags.catalog import TAG_COLORS


# Tag colours are stored as Radix colour names (the catalogue's TAG_COLORS, the
# only list of them); anything else shows grey.
def tag_color_scheme(color: rx.Var) -> rx.Var:
    return rx.match(color, *[(c, c) for c in TAG_COLORS], "gray")


def tag_chip(tag: TagChip) -> rx.Component:
    return rx.badge(
        tag.name,
        color_scheme=tag_color_scheme(tag.color),
        variant="soft",
        radius="full",
        class_name="tag-chip",
    )
