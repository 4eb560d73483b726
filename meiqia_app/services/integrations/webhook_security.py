"""Webhooks' secrets, signatures and the addresses they may reach (services/integrations/webhooks.py).

Secrets are stored encrypted with a key derived from the app's secret key. Server-side
request forgery: URLs must be http(s) without credentials; the host is resolved and every
address must be public unless ``MEIQIA_WEBHOOKS_ALLOW_PRIVATE=true`` (checked when an
endpoint is saved and again at each send: webhook_delivery.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
import socket
from urllib.parse import urlsplit

from cryptography.fernet import Fernet, InvalidToken

from meiqia_app.config import get_settings
from meiqia_app.services.errors import ValidationError
from meiqia_app.services.identity.rbac import Actor
from meiqia_app.services.platform import keys

MAX_URL = 2048
MIN_SECRET = 16
MAX_SECRET = 128


# --- secrets ------------------------------------------------------------------------------


def _fernet() -> Fernet:
    return Fernet(base64.urlsafe_b64encode(keys.derive(keys.WEBHOOK_SECRET)))


def encrypt_secret(secret: str) -> str:
    return _fernet().encrypt(secret.encode("utf-8")).decode("ascii")


def decrypt_secret(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode("ascii")).decode("utf-8")
    except InvalidToken:  # the secret key changed under the database
        return ""


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(24)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Meiqia-Signature`` value for ``body`` sent at ``timestamp``."""
    message = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


# --- addresses --------------------------------------------------------------------------------


class AddressRefused(Exception):
    """The URL's host is, or resolves to, an address webhooks may not reach."""

    def __init__(self, key: str, host: str = ""):
        super().__init__(key)
        self.key = key
        self.host = host


def _address_allowed(address: ipaddress._BaseAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def resolve_target(url: str, allow_private: bool | None = None) -> tuple[str, str, int, str]:
    """(scheme, host, port, the address to connect to) for ``url``; raises AddressRefused.

    Every address the host resolves to must be allowed (a name with one public
    and one private address is refused: which one is used is not ours to say).
    """
    allow = get_settings().webhooks_allow_private if allow_private is None else allow_private
    parts = urlsplit(url)
    scheme = (parts.scheme or "").lower()
    if scheme not in ("http", "https"):
        raise AddressRefused("webhook.bad_scheme")
    if parts.username or parts.password:
        raise AddressRefused("webhook.credentials_in_url")
    host = parts.hostname or ""
    if not host:
        raise AddressRefused("webhook.bad_url")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise AddressRefused("webhook.bad_url", host) from None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        raise AddressRefused("webhook.unresolvable", host) from None
    addresses = []
    for info in infos:
        text = info[4][0].split("%", 1)[0]
        try:
            addresses.append(ipaddress.ip_address(text))
        except ValueError:
            raise AddressRefused("webhook.unresolvable", host) from None
    if not addresses:
        raise AddressRefused("webhook.unresolvable", host)
    if not allow and not all(_address_allowed(a) for a in addresses):
        raise AddressRefused("webhook.private_address", host)
    return scheme, host, port, str(addresses[0])


def clean_url(raw) -> str:
    url = str(raw or "").strip()
    if not url:
        raise ValidationError.single("url", "error.required")
    if len(url) > MAX_URL or any(ch.isspace() for ch in url):
        raise ValidationError.single("url", "webhook.bad_url")
    try:
        resolve_target(url)
    except AddressRefused as refused:
        raise ValidationError.single("url", refused.key, host=refused.host[:100]) from None
    return url


def clean_secret(raw) -> str:
    secret = str(raw or "").strip()
    if not MIN_SECRET <= len(secret) <= MAX_SECRET or not secret.isascii() or not secret.isprintable():
        raise ValidationError.single("secret", "webhook.bad_secret", min=MIN_SECRET, max=MAX_SECRET)
    return secret


def data_level_of(actor: Actor) -> str:
    """What deliveries may carry: what the endpoint's creator may see of customers."""
    if actor.can("customer.view") and actor.can("customer.view_sensitive"):
        return "full"
    if actor.can("customer.view"):
        return "masked"
    return "ids"


def url_for_audit(url: str) -> str:
    """Scheme and host only: a path may carry the receiver's own token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"
