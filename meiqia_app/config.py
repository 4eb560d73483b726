"""Settings from the environment, read in one place.

Every knob an operator may turn lives here, with its default. Nothing else in
the code reads ``os.environ`` for product settings.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import secrets
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return int(raw)


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


@dataclasses.dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    secret_key: str
    timezone: str
    session_idle_minutes: int
    session_max_hours: int
    lockout_threshold: int
    lockout_minutes: int
    ip_lockout_threshold: int
    ip_lockout_minutes: int
    password_min_score: int
    bcrypt_rounds: int
    cookie_secure: bool
    allowed_origins: tuple[str, ...]
    export_ttl_hours: int
    export_pdf_max_rows: int
    export_workers: int
    trash_retention_days: int
    backup_keep: int
    scheduler_enabled: bool
    max_upload_mb: int
    import_max_rows: int
    import_max_columns: int
    import_max_uncompressed_mb: int
    job_stale_seconds: int
    api_rate_per_second: float
    api_rate_burst: int
    api_max_body_mb: int
    webhooks_allow_private: bool
    webhook_retry_hours: int
    webhook_timeout_seconds: int

    @property
    def api_max_body_bytes(self) -> int:
        return self.api_max_body_mb * 1024 * 1024

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    @property
    def exports_dir(self) -> Path:
        return self.data_dir / "exports"

    @property
    def backups_dir(self) -> Path:
        return self.data_dir / "backups"

    @property
    def imports_dir(self) -> Path:
        return self.data_dir / "imports"


def _load_secret_key(data_dir: Path) -> str:
    """The key that encrypts TOTP secrets at rest.

    An operator sets MEIQIA_SECRET_KEY in production; on a laptop we create one
    beside the database on first start so `make run` needs no set-up.
    """
    from_env = os.environ.get("MEIQIA_SECRET_KEY")
    if from_env:
        return from_env
    key_file = data_dir / "secret.key"
    if key_file.exists():
        return key_file.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    key_file.write_text(key)
    key_file.chmod(0o600)
    return key


DEFAULT_PORT = 3000


def allowed_origins(port: int | None) -> tuple[str, ...]:
    """The origins allowed to open the websocket.

    ``MEIQIA_ALLOWED_ORIGINS`` when set (``*`` allows any); otherwise the
    app's own address on the port it serves on (``reflex run --frontend-port``,
    which ``make run`` sets from ``PORT``), so ``PORT=3101 make run`` works
    without further configuration.
    """
    explicit = get_settings().allowed_origins
    if explicit:
        return explicit
    port = port or DEFAULT_PORT
    return (f"http://localhost:{port}", f"http://127.0.0.1:{port}")


def _load() -> Settings:
    data_dir = Path(os.environ.get("MEIQIA_DATA_DIR", PROJECT_ROOT / "data")).resolve()
    database_url = os.environ.get("DATABASE_URL") or f"sqlite:///{data_dir / 'meiqia.db'}"
    # Empty: derived from the port the app serves on (allowed_origins()).
    origins = os.environ.get("MEIQIA_ALLOWED_ORIGINS", "")
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        secret_key=_load_secret_key(data_dir),
        timezone=os.environ.get("MEIQIA_TIMEZONE", "Asia/Shanghai"),
        session_idle_minutes=_env_int("MEIQIA_SESSION_IDLE_MINUTES", 30),
        session_max_hours=_env_int("MEIQIA_SESSION_MAX_HOURS", 12),
        lockout_threshold=_env_int("MEIQIA_LOCKOUT_THRESHOLD", 5),
        lockout_minutes=_env_int("MEIQIA_LOCKOUT_MINUTES", 15),
        # Failed logins from one client address (any usernames) within the window lock that address.
        ip_lockout_threshold=_env_int("MEIQIA_IP_LOCKOUT_THRESHOLD", 10),
        ip_lockout_minutes=_env_int("MEIQIA_IP_LOCKOUT_MINUTES", 15),
        # zxcvbn score (0-4) a new password must reach.
        password_min_score=_env_int("MEIQIA_PASSWORD_MIN_SCORE", 3),
        bcrypt_rounds=_env_int("MEIQIA_BCRYPT_ROUNDS", 12),
        cookie_secure=_env_bool("MEIQIA_COOKIE_SECURE", False),
        allowed_origins=tuple(o.strip() for o in origins.split(",") if o.strip()),
        export_ttl_hours=_env_int("MEIQIA_EXPORT_TTL_HOURS", 24),  # retention policy default, see below
        export_pdf_max_rows=_env_int("MEIQIA_EXPORT_PDF_MAX_ROWS", 20000),
        # Threads building database-built export rows (CSV/XLSX), each on its own connection.
        # 1 by default: on the shared 2-core box two threads cost twice the CPU for no gain
        # (bench/export.py --workers 2 to compare on a quiet machine).
        # Threads building CSV/XLSX rows in the database: two cores' worth
        # (1M rows sorted by registration date: 181k rows/s with one, 252k with two).
        export_workers=_env_int("MEIQIA_EXPORT_WORKERS", min(2, os.cpu_count() or 1)),
        # Defaults of the retention policies (services/cleanup/retention_policies.py): a policy saved
        # on /admin/retention takes precedence; these apply until one is saved.
        trash_retention_days=_env_int("MEIQIA_TRASH_RETENTION_DAYS", 30),
        backup_keep=_env_int("MEIQIA_BACKUP_KEEP", 10),
        scheduler_enabled=_env_bool("MEIQIA_SCHEDULER", True),
        max_upload_mb=_env_int("MEIQIA_MAX_UPLOAD_MB", 50),
        import_max_rows=_env_int("MEIQIA_IMPORT_MAX_ROWS", 1_000_000),
        import_max_columns=_env_int("MEIQIA_IMPORT_MAX_COLUMNS", 200),
        import_max_uncompressed_mb=_env_int("MEIQIA_IMPORT_MAX_UNCOMPRESSED_MB", 500),
        # A running job or export whose heartbeat is older than this belongs to a dead process.
        job_stale_seconds=_env_int("MEIQIA_JOB_STALE_SECONDS", 60),
        # The open API (docs/api.md): requests per second per key (a token bucket per
        # app process) and the burst it allows; the largest request body.
        api_rate_per_second=float(os.environ.get("MEIQIA_API_RATE_PER_SECOND") or 20),
        api_rate_burst=_env_int("MEIQIA_API_RATE_BURST", 40),
        api_max_body_mb=_env_int("MEIQIA_API_MAX_BODY_MB", 5),
        # Webhooks to loopback / private / link-local addresses are refused unless this is set (tests).
        webhooks_allow_private=_env_bool("MEIQIA_WEBHOOKS_ALLOW_PRIVATE", False),
        # A delivery is retried (exponential backoff) this long, then marked failed; an
        # endpoint failing this long is disabled.
        webhook_retry_hours=_env_int("MEIQIA_WEBHOOK_RETRY_HOURS", 24),
        webhook_timeout_seconds=_env_int("MEIQIA_WEBHOOK_TIMEOUT_SECONDS", 10),
    )


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    return _load()


def reload_settings() -> Settings:
    """Forget the cached settings (tests point the app at a fresh data dir)."""
    get_settings.cache_clear()
    return get_settings()
