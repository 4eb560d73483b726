"""Reflex configuration. Settings that differ per deployment come from the
environment (see meiqia_app/config.py and README)."""

import reflex as rx

from meiqia_app.config import get_settings

_settings = get_settings()

config = rx.Config(
    app_name="meiqia_app",
    telemetry_enabled=False,
    show_built_with_reflex=False,
    db_url=_settings.database_url,
    cors_allowed_origins=list(_settings.allowed_origins) or ["*"],
    plugins=[rx.plugins.RadixThemesPlugin(theme=rx.theme(appearance="light", accent_color="blue", radius="medium"))],
    disable_plugins=[rx.plugins.SitemapPlugin],
)
