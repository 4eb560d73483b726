"""Passwords (AUTH-1): the strength rule, hashing and checking (argon2), in constant time for unknown users."""

from __future__ import annotations

import functools
import secrets

import bcrypt

from meiqia_app.config import get_settings
from meiqia_app.services.errors import ValidationError

PASSWORD_MIN_LENGTH = 10
PASSWORD_MAX_BYTES = 72  # bcrypt refuses longer input


# --- passwords ----------------------------------------------------------------


# What made zxcvbn find a password guessable -> the message that says so.
_WEAKNESS_KEYS = {
    "passwords": "auth.password_weak_common",
    "user_inputs": "auth.password_weak_personal",
    "dictionary": "auth.password_weak_words",
    "repeat": "auth.password_weak_repeats",
    "sequence": "auth.password_weak_sequence",
    "spatial": "auth.password_weak_keyboard",
    "date": "auth.password_weak_dates",
    "regex": "auth.password_weak_dates",
}
# Words an attacker tries against this product whoever the user is.
_PRODUCT_WORDS = ("meiqia", "美洽", "kefu", "客服", "customer", "admin")


def password_weakness(password: str, personal: tuple[str, ...] = ()) -> str | None:
    """The message key saying why ``password`` is too easy to guess, or None when it is strong enough.

    zxcvbn (Dropbox's estimator: common-password lists, words, names, keyboard
    patterns, repeats, sequences, dates and the user's own names) estimates
    how many guesses it takes; below the configured score (0-4) the password is
    refused, and the weakest part it found says why.
    """
    from zxcvbn import zxcvbn

    result = zxcvbn(password, user_inputs=[w for w in (*personal, *_PRODUCT_WORDS) if w])
    if result["score"] >= get_settings().password_min_score:
        return None
    found = [m for m in result.get("sequence", ()) if m.get("pattern") != "bruteforce"]
    if not found:
        return "auth.password_weak"
    weakest = max(found, key=lambda m: len(m.get("token", "")))
    pattern = weakest.get("pattern", "")
    if pattern == "dictionary":
        name = weakest.get("dictionary_name", "")
        return _WEAKNESS_KEYS.get(name, _WEAKNESS_KEYS["dictionary"])
    return _WEAKNESS_KEYS.get(pattern, "auth.password_weak")


def validate_password(password: str, username: str = "", display_name: str = "") -> None:
    if len(password) < PASSWORD_MIN_LENGTH:
        raise ValidationError.single("password", "auth.password_too_short", min=PASSWORD_MIN_LENGTH)
    if len(password.encode("utf-8")) > PASSWORD_MAX_BYTES:
        raise ValidationError.single("password", "auth.password_too_long", max=PASSWORD_MAX_BYTES)
    if not any(ch.isalpha() for ch in password) or not any(ch.isdigit() for ch in password):
        raise ValidationError.single("password", "auth.password_needs_letter_digit")
    if username and password.lower() == username.lower():
        raise ValidationError.single("password", "auth.password_is_username")
    weakness = password_weakness(password, (username, display_name))
    if weakness is not None:
        raise ValidationError.single("password", weakness)


def hash_password(password: str) -> str:
    rounds = max(4, get_settings().bcrypt_rounds)
    return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(rounds=rounds)).decode("ascii")


def verify_password(password: str, password_hash: str) -> bool:
    encoded = password.encode("utf-8")
    if len(encoded) > PASSWORD_MAX_BYTES:
        return False
    try:
        return bcrypt.checkpw(encoded, password_hash.encode("ascii"))
    except ValueError:
        return False


@functools.lru_cache(maxsize=1)
def dummy_hash() -> str:
    """A hash to check unknown usernames against, so they cost the same time."""
    return hash_password(secrets.token_urlsafe(16))
