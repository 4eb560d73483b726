"""Keys derived from the secret key, one per purpose (no I/O, no database).

The audit log's MACs, its anchors and the erasure ledger need a key that an
attacker with the database alone does not have: the application's secret
key (``MEIQIA_SECRET_KEY`` or ``data_dir/secret.key``, see config.py) is not
stored in the database and not in its backups. Each purpose gets its own key,
HMAC-SHA256(secret, "meiqia-integrity/v1/<purpose>"), so a MAC made for one
purpose (say an audit entry) is never valid for another (the chain head).

Keep the secret key: with another key every MAC written so far fails to
verify (and the TOTP secrets it encrypts are unreadable too).
"""

from __future__ import annotations

import functools
import hashlib
import hmac

from meiqia_app.config import get_settings

AUDIT_ENTRY = "audit-entry"
AUDIT_HEAD = "audit-head"
AUDIT_UPGRADE = "audit-upgrade"
AUDIT_ANCHOR = "audit-anchor"
AUDIT_TEXT = "audit-text"
ERASURE_LEDGER = "erasure-ledger"
ERASURE_IDENTIFIER = "erasure-identifier"
WEBHOOK_SECRET = "webhook-secret"  # encrypts the signing secrets of webhook endpoints


@functools.lru_cache(maxsize=32)
def _derive(secret: str, purpose: str) -> bytes:
    return hmac.new(secret.encode("utf-8"), f"meiqia-integrity/v1/{purpose}".encode(), hashlib.sha256).digest()


def derive(purpose: str) -> bytes:
    """The key for ``purpose`` (cached per secret key: tests switch data dirs)."""
    return _derive(get_settings().secret_key, purpose)


@functools.lru_cache(maxsize=32)
def _keyed(secret: str, purpose: str) -> hmac.HMAC:
    """An HMAC with the key already set up; copied per message (half the cost of a new one)."""
    return hmac.new(_derive(secret, purpose), digestmod=hashlib.sha256)


def mac(purpose: str, message: bytes | str) -> str:
    """HMAC-SHA256 of ``message`` with the purpose's key, as 64 hex digits."""
    data = message.encode("utf-8") if isinstance(message, str) else message
    keyed = _keyed(get_settings().secret_key, purpose).copy()
    keyed.update(data)
    return keyed.hexdigest()


def matches(purpose: str, message: bytes | str, expected: object) -> bool:
    return isinstance(expected, str) and hmac.compare_digest(mac(purpose, message), expected)
