"""Users, roles, sessions and the short-lived secrets of the login flow."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Column, Index, Text
from sqlmodel import Field, SQLModel

from meiqia_app.timeutil import utcnow

# A role's data scope (issue 21): which customers its users reach, by owner.
DATA_SCOPES = ("own_pool", "team_pool", "team", "all")


class Team(SQLModel, table=True):
    """A group of users; a customer belongs to its owner's team."""

    __tablename__ = "team"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, unique=True)
    # The lead (an app_user id; no foreign key: app_user already refers to team, and users are never deleted).
    lead_user_id: int | None = None
    created_at: dt.datetime = Field(default_factory=utcnow)


class Role(SQLModel, table=True):
    __tablename__ = "role"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=32, unique=True)
    label_zh: str = Field(default="", max_length=64)
    label_en: str = Field(default="", max_length=64)
    is_builtin: bool = False
    permissions: str = Field(default="[]", sa_column=Column(Text, nullable=False))  # JSON list
    export_policy: str = Field(default="{}", sa_column=Column(Text, nullable=False))  # JSON object
    # own_pool | team_pool | team | all (DATA_SCOPES): services/customers/access.py applies it.
    data_scope: str = Field(default="all", max_length=16, sa_column_kwargs={"server_default": "all"})
    created_at: dt.datetime = Field(default_factory=utcnow)
    updated_at: dt.datetime = Field(default_factory=utcnow)


class User(SQLModel, table=True):
    __tablename__ = "app_user"

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=32, unique=True)
    display_name: str = Field(default="", max_length=64)
    password_hash: str = Field(max_length=128)
    role_id: int = Field(foreign_key="role.id")
    # The user's team (services/identity/teams.py); no foreign key, like customer.owner_id: adding
    # one would copy app_user, which every session and audit row refers to.
    team_id: int | None = Field(default=None, index=True)
    is_active: bool = True
    # Fernet-encrypted base32 secret; None until the user has enrolled.
    totp_secret_enc: str | None = Field(default=None, max_length=255)
    totp_enrolled_at: dt.datetime | None = None
    # The last RFC 6238 time step accepted: codes at or before it are replays.
    totp_last_step: int = 0
    password_changed_at: dt.datetime = Field(default_factory=utcnow)
    last_login_at: dt.datetime | None = None
    created_at: dt.datetime = Field(default_factory=utcnow)
    updated_at: dt.datetime = Field(default_factory=utcnow)


class RecoveryCode(SQLModel, table=True):
    __tablename__ = "recovery_code"
    __table_args__ = (Index("ix_recovery_code_user", "user_id"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="app_user.id", ondelete="CASCADE")
    code_hash: str = Field(max_length=128)
    used_at: dt.datetime | None = None


class UserSession(SQLModel, table=True):
    """A logged-in browser. Only the SHA-256 of the cookie token is stored."""

    __tablename__ = "user_session"
    __table_args__ = (Index("ix_user_session_user", "user_id", "revoked_at"),)

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True)
    user_id: int = Field(foreign_key="app_user.id", ondelete="CASCADE")
    created_at: dt.datetime = Field(default_factory=utcnow)
    last_seen_at: dt.datetime = Field(default_factory=utcnow)
    expires_at: dt.datetime
    revoked_at: dt.datetime | None = None
    revoked_reason: str | None = Field(default=None, max_length=32)
    client_ip: str | None = Field(default=None, max_length=64)
    user_agent: str | None = Field(default=None, max_length=255)


class LoginChallenge(SQLModel, table=True):
    """A password that was right, waiting for its second factor (or enrolment).

    The browser tab holds the random challenge secret in backend-only state;
    the row holds its hash, so any worker can continue the login.
    """

    __tablename__ = "login_challenge"

    id: int | None = Field(default=None, primary_key=True)
    challenge_hash: str = Field(max_length=64, unique=True)
    user_id: int = Field(foreign_key="app_user.id", ondelete="CASCADE")
    purpose: str = Field(default="totp", max_length=16)  # totp | enrol | ticket
    pending_secret_enc: str | None = Field(default=None, max_length=255)
    created_at: dt.datetime = Field(default_factory=utcnow)
    expires_at: dt.datetime
    used_at: dt.datetime | None = None
    attempts: int = 0


class LoginThrottle(SQLModel, table=True):
    """Failed login attempts per typed username, known or not.

    Keyed by the name as typed (normalised), so an unknown username is
    throttled, locked and answered exactly like a real one.
    """

    __tablename__ = "login_throttle"

    username_key: str = Field(primary_key=True, max_length=64)
    failures: int = 0
    locked_until: dt.datetime | None = None
    updated_at: dt.datetime = Field(default_factory=utcnow)


class LoginAddressThrottle(SQLModel, table=True):
    """Failed logins per client address, whatever usernames were typed.

    ``failures`` counts the failures since ``window_started_at``; reaching the
    threshold within the window locks the address until ``locked_until``. In
    the database, so every worker sees the same count.
    """

    __tablename__ = "login_address_throttle"

    client_ip: str = Field(primary_key=True, max_length=64)
    failures: int = 0
    window_started_at: dt.datetime = Field(default_factory=utcnow)
    locked_until: dt.datetime | None = None
    updated_at: dt.datetime = Field(default_factory=utcnow)
