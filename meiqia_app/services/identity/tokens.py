"""Tokens and challenges of logging in: random tokens stored only as their SHA-256, the short-lived login challenges, and the error a failed step raises."""

from __future__ import annotations

import hashlib
import secrets

from sqlmodel import Session, select

from meiqia_app.models import LoginChallenge
from meiqia_app.services.errors import AppError
from meiqia_app.timeutil import as_utc, utcnow

CHALLENGE_MINUTES = 5


class AuthError(AppError):
    message_key = "auth.invalid_credentials"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def load_challenge(session: Session, challenge: str, purposes: tuple[str, ...]) -> LoginChallenge:
    row = session.exec(
        select(LoginChallenge).where(LoginChallenge.challenge_hash == token_hash(challenge or ""))
    ).first()
    if row is None or row.purpose not in purposes or row.used_at is not None or as_utc(row.expires_at) < utcnow():
        raise AuthError("auth.challenge_expired")
    return row
