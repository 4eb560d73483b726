"""``Idempotency-Key`` for the open API's POST requests.

The first request with a key (per API key) is answered as usual and its
answer stored; the same key with the same method, path and body within 24 h
gets that answer again, without running anything. The same key with another
body is refused (422): it is a client bug, not a retry. While the first
request is still being answered, a second one gets 409. An answer of 5xx is
not kept (the request may be retried for real), and a request whose process
died while answering it is taken over after STALE_SECONDS.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from meiqia_app.db import get_engine, write_session
from meiqia_app.models import ApiIdempotency
from meiqia_app.services.errors import Conflict, ValidationError
from meiqia_app.timeutil import as_utc, utcnow

KEEP_HOURS = 24
STALE_SECONDS = 120
MAX_KEY = 255
HEADER = "Idempotency-Key"

I = ApiIdempotency.__table__.c  # noqa: E741 - the table's columns, as elsewhere


class InProgress(Conflict):
    message_key = "error.idempotency_in_progress"


@dataclasses.dataclass(frozen=True)
class StoredAnswer:
    status_code: int
    content_type: str
    body: bytes


def body_hash(method: str, path: str, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (method.upper().encode(), b"\0", path.encode(), b"\0", body):
        digest.update(part)
    return digest.hexdigest()


def clean_key(raw: str | None) -> str:
    key = (raw or "").strip()
    if not key or len(key) > MAX_KEY or not key.isascii() or not key.isprintable():
        raise ValidationError.single(HEADER, "error.idempotency_key")
    return key


def begin(api_key_id: int, key: str, method: str, path: str, fingerprint: str) -> StoredAnswer | None:
    """The stored answer for a repeat, or None when this request is the first (and now reserved)."""
    now = utcnow()
    for _attempt in range(2):
        with write_session() as session:
            row = session.execute(
                select(ApiIdempotency.__table__).where(I.api_key_id == api_key_id, I.idem_key == key)
            ).first()
            if row is not None:
                expired = now - as_utc(row.created_at) > dt.timedelta(hours=KEEP_HOURS)
                stale = row.status_code == 0 and now - as_utc(row.created_at) > dt.timedelta(seconds=STALE_SECONDS)
                if expired or stale:
                    session.execute(delete(ApiIdempotency.__table__).where(I.id == row.id))
                else:
                    if row.body_hash != fingerprint:
                        raise ValidationError.single(HEADER, "error.idempotency_reused")
                    if row.status_code == 0:
                        raise InProgress()
                    return StoredAnswer(row.status_code, row.content_type, row.response_body.encode("utf-8"))
            try:
                session.add(
                    ApiIdempotency(
                        api_key_id=api_key_id,
                        idem_key=key,
                        method=method.upper()[:8],
                        path=path[:255],
                        body_hash=fingerprint,
                        created_at=now,
                    )
                )
                session.flush()
            except IntegrityError:
                session.rollback()
                continue  # another worker reserved it this instant: look again
            return None
    raise InProgress()


def finish(api_key_id: int, key: str, status_code: int, content_type: str, body: bytes) -> None:
    """Keep the answer (not a 5xx: then the key is free again)."""
    with get_engine().begin() as conn:
        if status_code >= 500:
            conn.execute(delete(ApiIdempotency.__table__).where(I.api_key_id == api_key_id, I.idem_key == key))
            return
        conn.execute(
            update(ApiIdempotency.__table__)
            .where(I.api_key_id == api_key_id, I.idem_key == key)
            .values(
                status_code=status_code,
                content_type=content_type[:64],
                response_body=_without_secrets(body.decode("utf-8", errors="replace")),
            )
        )


def _without_secrets(text: str) -> str:
    """A generated webhook secret is shown once: the stored answer (24 h in the database) drops it."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if isinstance(value, dict) and value.get("secret"):
        value["secret"] = None
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text


def prune(now: dt.datetime | None = None) -> int:
    edge = (now or utcnow()) - dt.timedelta(hours=KEEP_HOURS)
    with get_engine().begin() as conn:
        return conn.execute(delete(ApiIdempotency.__table__).where(I.created_at < edge)).rowcount
