"""Chinese (zh-CN) catalogue: the default language."""

from meiqia_app.i18n.messages import ENTRIES

MESSAGES: dict[str, str] = {key: pair[0] for key, pair in ENTRIES.items()}
