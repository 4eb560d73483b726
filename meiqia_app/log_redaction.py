"""No cookie, token or password reaches a log.

Libraries log whatever they hold: Reflex, for one, logs a whole websocket
event (its router data with the request headers, the session cookie
included, and its payload) when the event names an unknown handler. A filter
on a handler would miss handlers that Reflex or granian attach (and re-attach)
later, so :func:`install` wraps the log record factory instead: every record,
of every logger, is redacted once, when it is created, before any handler
sees it. The message is formatted with its arguments and redacted; a
traceback that held a secret is redacted into the message too.

What is redacted: the value of the session cookie wherever it appears, whole
``Cookie`` / ``Authorization`` header values (in dict reprs, ``name=value``
reprs and ``Name: value`` lines), ``token`` / ``ticket`` / ``challenge``
query parameters, dict entries whose key names a password, secret,
token, ticket, challenge or one-time code, and open API keys (``mqk_…``) and
webhook secrets (``whsec_…``) anywhere.
"""

from __future__ import annotations

import logging
import re
import traceback

REDACTED = "[redacted]"
SESSION_COOKIE = "mq_session"

_HEADER_NAMES = r"cookie|set-cookie|authorization|proxy-authorization|x-forwarded-access-token"
_SECRET_KEYS = r"[\w-]*(?:password|secret|token|ticket|challenge)[\w-]*|code|recovery_codes"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # {'cookie': '…'} / {"Authorization": "…"} / {'password': '…'}: the whole value.
    (
        re.compile(rf"""(['"])((?i:{_HEADER_NAMES}|{_SECRET_KEYS}))\1(\s*:\s*)(['"])(?:\\.|(?!\4).)*\4"""),
        rf"\1\2\1\3\4{REDACTED}\4",
    ),
    # {'recovery_codes': ['…', '…']}
    (re.compile(r"""(['"])(recovery_codes|codes)\1(\s*:\s*)\[[^\]]*\]"""), rf"\1\2\1\3[{REDACTED}]"),
    # HeaderData(cookie='…') / password="…"
    (
        re.compile(rf"""\b((?i:{_HEADER_NAMES.replace("-", "_")}|{_SECRET_KEYS}))=(['"])(?:\\.|(?!\2).)*\2"""),
        rf"\1=\2{REDACTED}\2",
    ),
    # Cookie: … / Authorization: Bearer … (a header line)
    (re.compile(rf"""(?im)^(\s*(?:{_HEADER_NAMES})\s*:\s*)\S.*$"""), rf"\1{REDACTED}"),
    # mq_session=… anywhere (a cookie string, a URL)
    (re.compile(rf"""({SESSION_COOKIE}=)[^;\s'"&,]+"""), rf"\1{REDACTED}"),
    # ?ticket=… &token=… (claim and download links, the websocket URL)
    (re.compile(r"""([?&](?:ticket|token|challenge)=)[^&\s'"#]+"""), rf"\1{REDACTED}"),
    # An open API key or a webhook signing secret wherever it appears (services/integrations/api_keys.py, webhooks.py)
    (re.compile(r"""\b(mqk|whsec)_[A-Za-z0-9_-]{8,}"""), rf"\1_{REDACTED}"),
)


def redact(text: str) -> str:
    """``text`` with every cookie, token, password or code value replaced by ``[redacted]``."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except (TypeError, ValueError):  # a bad format string: leave the record to logging's own handling
        return
    clean = redact(message)
    if clean != message:
        record.msg, record.args = clean, ()
    if record.exc_info and record.exc_info[0] is not None:
        text = "".join(traceback.format_exception(*record.exc_info))
        clean_text = redact(text)
        if clean_text != text:
            # The handlers format exc_info themselves: hand them the redacted text instead.
            record.msg, record.args = f"{record.msg}\n{clean_text.rstrip()}", ()
            record.exc_info, record.exc_text = None, None
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


def install() -> None:
    """Redact every log record of the process from now on (idempotent)."""
    current = logging.getLogRecordFactory()
    if getattr(current, "_meiqia_redacting", False):
        return

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = current(*args, **kwargs)
        _redact_record(record)
        return record

    factory._meiqia_redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
