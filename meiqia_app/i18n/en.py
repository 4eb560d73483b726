"""English catalogue."""

from meiqia_app.i18n.messages import ENTRIES

MESSAGES: dict[str, str] = {key: pair[1] for key, pair in ENTRIES.items()}
