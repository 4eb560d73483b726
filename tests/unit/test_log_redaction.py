"""No cookie, token or password in the logs (meiqia_app/log_redaction.py).

The attack: a websocket event naming a handler that does not exist. Reflex's
event processor logs the whole event, the connection's headers (the session
cookie) and the payload (a password) included.
"""

from __future__ import annotations

import asyncio
import io
import logging

import pytest
from reflex.istate.manager.memory import StateManagerMemory
from reflex_base.event import Event
from reflex_base.event.processor import BaseStateEventProcessor

import meiqia_app.meiqia_app  # noqa: F401 - the app installs the redaction when it starts
from tests.unit.tabs import run

COOKIE_VALUE = "Zm9vYmFyLXNlc3Npb24tdG9rZW4tZm9yLXRlc3Q"


def _capture() -> tuple[io.StringIO, list[tuple[logging.Logger, logging.Handler]]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    attached = []
    for logger in (logging.getLogger(), logging.getLogger("reflex")):
        logger.addHandler(handler)
        attached.append((logger, handler))
    return out, attached


def test_an_event_for_an_unknown_handler_is_logged_without_the_cookie_or_the_password():
    out, attached = _capture()

    async def send():
        processor = BaseStateEventProcessor().configure(state_manager=StateManagerMemory())
        async with processor:
            await processor.enqueue(
                "client-token-1",
                Event(
                    name="reflex___state____state.no_such_handler",
                    payload={"form": {"username": "admin", "password": "Demo-admin-2026"}},
                    router_data={
                        "headers": {
                            "cookie": f"theme=light; mq_session={COOKIE_VALUE}",
                            "authorization": "Bearer abc.def.ghi",
                            "host": "127.0.0.1:3000",
                        },
                        "pathname": "/login",
                    },
                ),
            )
            await asyncio.sleep(0.3)

    try:
        run(send())
    finally:
        for logger, handler in attached:
            logger.removeHandler(handler)
    log = out.getvalue()
    assert "no_such_handler" in log  # the event was logged…
    assert COOKIE_VALUE not in log and "Demo-admin-2026" not in log and "abc.def.ghi" not in log  # …without secrets
    assert "127.0.0.1:3000" in log  # the rest stays readable


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("HeaderData(host='h', cookie='mq_session=s3cr3t; a=b')", "s3cr3t"),
        ('{"Cookie": "mq_session=s3cr3t"}', "s3cr3t"),
        ("Authorization: Bearer s3cr3t", "s3cr3t"),
        ("GET /api/session/claim?ticket=s3cr3t&next=/ 303", "s3cr3t"),
        ("GET /api/backups/download?token=s3cr3t 200", "s3cr3t"),
        ("wss://host/_event/?EIO=4&transport=websocket&token=s3cr3t", "s3cr3t"),
        ("mq_session=s3cr3t", "s3cr3t"),
        ("{'challenge': 's3cr3t', 'code': '123456'}", "s3cr3t"),
        ("{'recovery_codes': ['abcd-s3cr3t']}", "s3cr3t"),
    ],
)
def test_redact_removes_credentials(text, secret):
    from meiqia_app.log_redaction import redact

    assert secret not in redact(text)


def test_a_traceback_holding_a_secret_is_redacted_too():
    out, attached = _capture()
    try:
        try:
            raise ValueError("bad event {'cookie': 'mq_session=s3cr3t'}")
        except ValueError:
            logging.getLogger("reflex.test").exception("while handling")
    finally:
        for logger, handler in attached:
            logger.removeHandler(handler)
    assert "s3cr3t" not in out.getvalue() and "ValueError" in out.getvalue()
