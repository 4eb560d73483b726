"""The second factor (AUTH-2): TOTP secrets (encrypted at rest), codes with replay protection, and single-use recovery codes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import secrets
import time

import pyotp
from cryptography.fernet import Fernet, InvalidToken
from sqlmodel import Session, select

from meiqia_app.config import get_settings
from meiqia_app.models import RecoveryCode
from meiqia_app.services.identity.tokens import AuthError
from meiqia_app.timeutil import utcnow

ISSUER = "美洽客户数据"
TOTP_INTERVAL = 30
RECOVERY_CODE_COUNT = 10


# --- TOTP ---------------------------------------------------------------------


def _fernet() -> Fernet:
    digest = hashlib.sha256(("totp-secret:" + get_settings().secret_key).encode("utf-8")).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def encrypt_secret(secret: str) -> str:
    return _fernet().encrypt(secret.encode("ascii")).decode("ascii")


def decrypt_secret(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode("ascii")).decode("ascii")
    except InvalidToken as exc:  # the secret key changed under the database
        raise AuthError("auth.totp_unreadable") from exc


def new_totp_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(secret: str, username: str) -> str:
    return pyotp.TOTP(secret, interval=TOTP_INTERVAL).provisioning_uri(name=username, issuer_name=ISSUER)


def qr_data_uri(text: str) -> str:
    import qrcode

    image = qrcode.make(text, box_size=6, border=2)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def current_step(now: float | None = None) -> int:
    return int((time.time() if now is None else now) // TOTP_INTERVAL)


def match_totp_step(secret: str, code: str, last_step: int, now: float | None = None) -> int:
    """The time step the code belongs to (±1 step of drift).

    Raises AuthError for a wrong code, or ``auth.code_reused`` when the code
    is right but its step was already used (RFC 6238 §5.2: accept once).
    """
    code = code.strip().replace(" ", "")
    if not (len(code) == 6 and code.isdigit()):
        raise AuthError("auth.invalid_code")
    totp = pyotp.TOTP(secret, interval=TOTP_INTERVAL)
    step_now = current_step(now)
    reused = False
    for step in (step_now - 1, step_now, step_now + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            if step > last_step:
                return step
            reused = True
    raise AuthError("auth.code_reused" if reused else "auth.invalid_code")


# --- recovery codes -----------------------------------------------------------


def _recovery_hash(code: str) -> str:
    normalized = code.strip().lower().replace("-", "").replace(" ", "")
    key = ("recovery:" + get_settings().secret_key).encode("utf-8")
    return hmac.new(key, normalized.encode("utf-8"), hashlib.sha256).hexdigest()


def new_recovery_codes() -> list[str]:
    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
    codes = []
    for _ in range(RECOVERY_CODE_COUNT):
        raw = "".join(secrets.choice(alphabet) for _ in range(10))
        codes.append(f"{raw[:5]}-{raw[5:]}")
    return codes


def store_recovery_codes(session: Session, user_id: int, codes: list[str]) -> None:
    for old in session.exec(select(RecoveryCode).where(RecoveryCode.user_id == user_id)).all():
        session.delete(old)
    for code in codes:
        session.add(RecoveryCode(user_id=user_id, code_hash=_recovery_hash(code)))


def burn_recovery_code(session: Session, user_id: int, code: str) -> bool:
    wanted = _recovery_hash(code)
    for row in session.exec(
        select(RecoveryCode).where(RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))
    ).all():
        if hmac.compare_digest(row.code_hash, wanted):
            row.used_at = utcnow()
            return True
    return False


def looks_like_recovery_code(code: str) -> bool:
    compact = code.strip().replace("-", "").replace(" ", "")
    return len(compact) == 10 and compact.isalnum() and not compact.isdigit()
