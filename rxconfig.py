"""Reflex configuration. Settings that differ per deployment come from the
environment (see meiqia_app/config.py and README)."""

import reflex as rx

from meiqia_app.config import allowed_origins

config = rx.Config(
    app_name="meiqia_app",
    telemetry_enabled=False,
    show_built_with_reflex=False,
    # No db_url: the app reaches its database itself (meiqia_app/db.py) and keeps
    # its schema with its own Alembic migrations; with one, `reflex run` compares
    # the schema with rx.Model's (there are none) and advises `reflex db makemigrations`.
    plugins=[rx.plugins.RadixThemesPlugin(theme=rx.theme(appearance="light", accent_color="blue", radius="medium"))],
    disable_plugins=[rx.plugins.SitemapPlugin],
)
# The websocket's allowed origins default to the port the app serves on. This
# file is evaluated again after `reflex run` has put --frontend-port into the
# environment (REFLEX_FRONTEND_PORT, which rx.Config reads), and in each
# backend worker, so the port is read from the config, not cached.
_origins = allowed_origins(config.frontend_port or config.backend_port)
config.cors_allowed_origins = ("*",) if _origins == ("*",) else _origins
