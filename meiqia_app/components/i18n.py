"""Page labels in both languages, switched in the browser without a round trip."""

from __future__ import annotations

import re

import reflex as rx

from meiqia_app.i18n import EN, ZH
from meiqia_app.state.base import AppState


def t(key: str, **params: object) -> rx.Var:
    """The label for ``key`` in the page's language.

    ``params`` may be Python values or Vars; Vars are spliced in on the client.
    """
    zh, en = ZH.get(key, key), EN.get(key, ZH.get(key, key))
    if not params:
        return rx.cond(AppState.is_en, en, zh)
    return rx.cond(AppState.is_en, _format(en, params), _format(zh, params))


def _format(template: str, params: dict[str, object]) -> rx.Var:
    """str.format for Vars: split the template on {name} and concatenate."""
    parts: list[object] = []
    position = 0
    for match in re.finditer(r"\{(\w+)\}", template):
        parts.append(template[position : match.start()])
        value = params.get(match.group(1), match.group(0))
        if isinstance(value, rx.vars.StringVar):
            parts.append(value)
        elif isinstance(value, rx.Var):
            parts.append(value.to_string())  # numbers: JSON text is the plain number
        else:
            parts.append(str(value))
        position = match.end()
    parts.append(template[position:])
    var = rx.Var.create("")
    for part in parts:
        if isinstance(part, rx.Var):
            var = var + part
        elif part:
            var = var + part
    return var
