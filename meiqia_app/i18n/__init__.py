"""Message catalogues (UX-1): Chinese by default, English on request.

Server-side text (errors, toasts, labels inside DTOs) goes through ``tr``;
page labels go through ``meiqia_app.components.i18n.t``, which compiles both
languages into the page so switching is instant.
"""

from __future__ import annotations

from meiqia_app.i18n.en import MESSAGES as EN
from meiqia_app.i18n.zh_CN import MESSAGES as ZH

LANGS = ("zh", "en")
DEFAULT_LANG = "zh"
CATALOGS = {"zh": ZH, "en": EN}


def normalize_lang(lang: str | None) -> str:
    return lang if lang in CATALOGS else DEFAULT_LANG


def localized(value: object, lang: str | None) -> object:
    """A parameter given in both languages (``{"zh": …, "en": …}``, e.g. a custom field's
    label in an error) as ``lang`` reads it; any other value as it is."""
    if isinstance(value, dict) and DEFAULT_LANG in value:
        return value.get(lang or DEFAULT_LANG) or value[DEFAULT_LANG]
    return value


def tr(lang: str | None, key: str, **params: object) -> str:
    """The message for ``key`` in ``lang`` (falling back to Chinese, then the key).

    A parameter may be given in both languages (see ``localized``)."""
    catalog = CATALOGS.get(lang or DEFAULT_LANG, ZH)
    text = catalog.get(key) or ZH.get(key) or key
    if params:
        try:
            return text.format(**{name: localized(value, lang) for name, value in params.items()})
        except (KeyError, IndexError, ValueError):
            return text
    return text


def error_text(lang: str | None, error) -> str:
    """Translate an AppError (message key + params)."""
    return tr(lang, error.message_key, **getattr(error, "params", {}))
