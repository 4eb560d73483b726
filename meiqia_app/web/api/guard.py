"""The open API's outer wall (ASGI), before any endpoint runs.

For every request under ``/api/v1`` (the OpenAPI document excepted):

1. a declared body above ``MEIQIA_API_MAX_BODY_MB`` → 413; a streamed one is
   counted and cut off at the limit (413);
2. ``Authorization: Bearer <key>`` → the key's Actor (services/integrations/api_keys.py);
   none or a bad one → 401, audited (the key's name when it is known and
   revoked, never the key). Unauthenticated requests are rate limited per
   client address, so a flood of bad keys cannot flood the audit log;
3. the key's token bucket (``MEIQIA_API_RATE_PER_SECOND`` with bursts of
   ``MEIQIA_API_RATE_BURST``) → 429 with ``Retry-After``. The buckets live
   in the process: with N app workers a key gets up to N times the rate
   (docs/api.md);
4. a POST with ``Idempotency-Key``: the stored first answer, or the request
   runs and its answer is stored (services/integrations/idempotency.py).

The endpoint then finds the actor in ``scope["state"]["api_actor"]``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import OrderedDict

from meiqia_app.config import get_settings
from meiqia_app.services.audit import log as audit
from meiqia_app.services.errors import AppError
from meiqia_app.services.integrations import api_keys, idempotency
from meiqia_app.services.integrations.api_keys import ApiAuthError
from meiqia_app.web.api import problems

log = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/api/v1/openapi.json"})
MAX_BUCKETS = 10_000


class TokenBuckets:
    """Per-name token buckets: ``rate`` tokens a second, at most ``burst`` saved up."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, name: str, rate: float, burst: int, now: float | None = None) -> float:
        """0 when a token was taken, else the seconds until one is there."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, stamp = self._buckets.get(name, (float(burst), now))
            tokens = min(float(burst), tokens + (now - stamp) * rate)
            if tokens >= 1:
                self._buckets[name] = (tokens - 1, now)
                self._buckets.move_to_end(name)
                while len(self._buckets) > MAX_BUCKETS:
                    self._buckets.popitem(last=False)
                return 0.0
            self._buckets[name] = (tokens, now)
            return (1 - tokens) / rate if rate > 0 else 60.0

    def clear(self) -> None:
        with self._lock:
            self._buckets.clear()


buckets = TokenBuckets()


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return value.decode("latin-1")
    return None


async def send_problem(send, status: int, body: dict, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    payload = problems.encode(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", problems.MEDIA_TYPE.encode()),
                (b"content-length", str(len(payload)).encode()),
                (b"cache-control", b"no-store"),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class _TooLarge(Exception):
    pass


async def _read_body(receive, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _TooLarge  # the client went away: nothing to answer
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class ApiGuard:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS or not scope["path"].startswith("/api/v1"):
            await self.app(scope, receive, send)
            return
        settings = get_settings()
        lang = problems.lang_of(_header(scope, b"accept-language"))
        path = scope["path"]
        limit = settings.api_max_body_bytes
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            _status, body = problems.problem(
                "payload-too-large", detail=_tr(lang, "api.too_large"), instance=path, limit_bytes=limit
            )
            await send_problem(send, 413, body, [(b"connection", b"close")])
            return
        client_ip = (scope.get("client") or ("", 0))[0] or ""
        try:
            actor = await asyncio.to_thread(api_keys.authenticate, _header(scope, b"authorization"), client_ip)
        except ApiAuthError as error:
            await self._refuse_unauthenticated(send, error, client_ip, path, lang)
            return
        wait = buckets.take(f"key:{actor.api_key_id}", settings.api_rate_per_second, settings.api_rate_burst)
        if wait:
            await self._rate_limited(send, wait, path, lang)
            return
        method = scope["method"].upper()
        body = b""
        if method in ("POST", "PUT", "PATCH", "DELETE"):
            try:
                body = await _read_body(receive, limit)
            except _TooLarge:
                _status, problem_body = problems.problem(
                    "payload-too-large", detail=_tr(lang, "api.too_large"), instance=path, limit_bytes=limit
                )
                await send_problem(send, 413, problem_body, [(b"connection", b"close")])
                return
        # NUL characters: PostgreSQL cannot store them in text; refused everywhere, the same on SQLite.
        raw_query = scope.get("query_string", b"") or b""
        if b"\\u0000" in body or b"\x00" in body or b"%00" in raw_query or "\x00" in path or "%00" in path:
            _status, problem_body = problems.problem(
                "validation",
                detail=_tr(lang, "error.nul_character"),
                instance=path,
                errors=[{"field": "body", "code": "nul_character", "message": _tr(lang, "error.nul_character")}],
            )
            await send_problem(send, 422, problem_body)
            return
        scope = {**scope, "state": {**(scope.get("state") or {}), "api_actor": actor}}
        replayed = False

        async def replay_receive():
            nonlocal replayed
            if replayed:
                return {"type": "http.disconnect"}
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        receive_body = replay_receive if method in ("POST", "PUT", "PATCH", "DELETE") else receive
        raw_key = _header(scope, b"idempotency-key")
        if method != "POST" or raw_key is None:
            await self.app(scope, receive_body, send)
            return
        await self._idempotent(scope, receive_body, send, actor, raw_key, method, path, body, lang)

    async def _refuse_unauthenticated(self, send, error: ApiAuthError, client_ip: str, path: str, lang: str) -> None:
        settings = get_settings()
        wait = buckets.take(f"ip:{client_ip}", settings.api_rate_per_second, settings.api_rate_burst)
        if wait:
            await self._rate_limited(send, wait, path, lang)
            return
        known = error.params.get("key_id")
        actor = (
            api_keys.actor_for(int(known), str(error.params.get("name", "")), (), client_ip)
            if known
            else api_keys.ANONYMOUS
        )
        try:
            await asyncio.to_thread(
                audit.record_refusal,
                actor if known else _with_ip(actor, client_ip),
                "open_api.authenticate",
                target_type="api",
                target_id=path[:64],
                details={"reason": error.reason},
            )
        except Exception:  # noqa: BLE001 - a refusal is answered even if it could not be written down
            log.warning("could not audit a refused API request", exc_info=True)
        _status, body = problems.problem(
            "unauthorized", detail=_tr(lang, f"api.auth_{error.reason}"), instance=path, reason=error.reason
        )
        await send_problem(send, 401, body, [(b"www-authenticate", b'Bearer realm="meiqia"')])

    async def _rate_limited(self, send, wait: float, path: str, lang: str) -> None:
        seconds = max(1, int(wait + 0.999))
        _status, body = problems.problem("rate-limited", detail=_tr(lang, "api.rate_limited"), instance=path)
        await send_problem(send, 429, body, [(b"retry-after", str(seconds).encode())])

    async def _idempotent(self, scope, receive, send, actor, raw_key, method, path, body, lang) -> None:
        query = scope.get("query_string", b"").decode("latin-1")
        try:
            key = idempotency.clean_key(raw_key)
            fingerprint = idempotency.body_hash(method, f"{path}?{query}", body)
            stored = await asyncio.to_thread(idempotency.begin, actor.api_key_id, key, method, path, fingerprint)
        except AppError as error:
            status, problem_body = problems.from_app_error(error, lang, path)
            await send_problem(send, status, problem_body)
            return
        if stored is not None:
            await send(
                {
                    "type": "http.response.start",
                    "status": stored.status_code,
                    "headers": [
                        (b"content-type", stored.content_type.encode()),
                        (b"content-length", str(len(stored.body)).encode()),
                        (b"idempotent-replayed", b"true"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": stored.body})
            return
        captured = {"status": 500, "content_type": "", "body": []}

        async def capture(message) -> None:
            if message["type"] == "http.response.start":
                captured["status"] = message["status"]
                for name, value in message.get("headers", []):
                    if name.lower() == b"content-type":
                        captured["content_type"] = value.decode("latin-1")
            elif message["type"] == "http.response.body":
                captured["body"].append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            await asyncio.to_thread(
                idempotency.finish,
                actor.api_key_id,
                key,
                captured["status"],
                captured["content_type"],
                b"".join(captured["body"]),
            )


def _with_ip(actor, client_ip: str):
    import dataclasses

    return dataclasses.replace(actor, client_ip=client_ip)


def _tr(lang: str, key: str) -> str:
    from meiqia_app.i18n import tr

    return tr(lang, key)


def problem_json(body: dict) -> str:
    return json.dumps(body, ensure_ascii=False)
