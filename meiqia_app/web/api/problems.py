"""RFC 9457 problem details: every error of the open API.

Each kind of problem has a stable ``type`` (a URI reference into the API's
docs page, where it is explained), an English ``title`` that never changes,
a ``detail`` in the request's language (Accept-Language zh* → Chinese, else
English) and, for bad input, ``errors``: one entry per failing field with a
stable ``code``. The service errors (services/errors.py) map onto them here.
"""

from __future__ import annotations

import json

from meiqia_app.i18n import error_text, tr
from meiqia_app.services.errors import (
    AppError,
    Busy,
    Conflict,
    DuplicateCustomer,
    NotAuthenticated,
    NotFound,
    PermissionDenied,
    ReadOnly,
    ValidationError,
)

MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "/api/docs#problem-"

# name -> (status, title, what it means: shown on the docs page)
PROBLEMS: dict[str, tuple[int, str, str]] = {
    "bad-parameter": (
        400,
        "Bad Parameter",
        "A query parameter is unknown or its value is not valid: `errors` names each (`field` is the "
        "parameter, e.g. `cf.score.min`), with a code.",
    ),
    "unauthorized": (401, "Unauthorized", "No API key, or one that is malformed, unknown or revoked."),
    "forbidden": (403, "Forbidden", "The key lacks the scope this request needs (`missing_scope`)."),
    "not-found": (404, "Not Found", "No such resource, or the key may not see it (trashed, erased)."),
    "method-not-allowed": (405, "Method Not Allowed", "The path does not take this method."),
    "duplicate": (
        409,
        "Duplicate",
        "Another customer already has this phone, e-mail or external id (`existing_id`, `field`; "
        "only `field` for a customer outside the caller's data scope).",
    ),
    "read-only": (
        409,
        "Read-only Customer",
        "The customer is archived or has an erasure pending: it may be read, not changed.",
    ),
    "conflict": (409, "Conflict", "Somebody changed the resource meanwhile; read it again and retry."),
    "idempotency-in-progress": (
        409,
        "Idempotency Key In Use",
        "A request with this Idempotency-Key is still being answered; retry later.",
    ),
    "precondition-failed": (
        412,
        "Precondition Failed",
        "If-Match names an older version than the stored one (`current_version`).",
    ),
    "payload-too-large": (413, "Payload Too Large", "The request body is larger than the limit (`limit_bytes`)."),
    "validation": (422, "Validation Failed", "Bad input; `errors` names each failing field with a code."),
    "precondition-required": (428, "Precondition Required", "PATCH needs If-Match with the version you read."),
    "rate-limited": (429, "Too Many Requests", "The key sent too many requests; wait `Retry-After` seconds."),
    "internal": (500, "Internal Server Error", "Something failed on our side; the request may be retried."),
    "busy": (503, "Service Busy", "The database was busy; nothing was changed. Retry after `Retry-After` seconds."),
}


def lang_of(accept_language: str | None) -> str:
    return "zh" if (accept_language or "").strip().lower().startswith("zh") else "en"


def problem(
    name: str, *, detail: str = "", instance: str = "", errors: list[dict] | None = None, **extra
) -> tuple[int, dict]:
    status, title, _meaning = PROBLEMS[name]
    body = {"type": TYPE_BASE + name, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    if errors:
        body["errors"] = errors
    body.update({k: v for k, v in extra.items() if v is not None})
    return status, body


def encode(body: dict) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def field_errors(error: ValidationError, lang: str) -> list[dict]:
    return [
        {"field": field, "code": key.rsplit(".", 1)[-1], "message": tr(lang, key, **params)}
        for field, (key, params) in error.field_errors.items()
    ]


def from_app_error(error: AppError, lang: str, instance: str = "") -> tuple[int, dict]:
    """The problem for a service error."""
    detail = error_text(lang, error)
    if isinstance(error, ValidationError):
        return problem("validation", detail=detail, instance=instance, errors=field_errors(error, lang))
    if isinstance(error, NotFound):
        return problem("not-found", detail=detail, instance=instance)
    if isinstance(error, PermissionDenied):
        from meiqia_app.services.integrations.api_keys import PERMISSION_SCOPES

        permission = error.params.get("permission")
        return problem(
            "forbidden",
            detail=detail,
            instance=instance,
            missing_scope=PERMISSION_SCOPES.get(str(permission)) if permission else None,
        )
    if isinstance(error, NotAuthenticated):
        return problem("unauthorized", detail=detail, instance=instance)
    if isinstance(error, DuplicateCustomer):
        # services/customers/duplicates/check.ExistingCustomer as the caller may see it: no id when out of scope.
        first = error.matches[0] if error.matches else None
        return problem(
            "duplicate",
            detail=detail,
            instance=instance,
            existing_id=first.customer_id if first else None,
            field=first.field if first else None,
        )
    if isinstance(error, ReadOnly):
        return problem("read-only", detail=detail, instance=instance, reason=error.message_key.rsplit(".", 1)[-1])
    if error.message_key == "error.idempotency_in_progress":
        return problem("idempotency-in-progress", detail=detail, instance=instance)
    if isinstance(error, Conflict):
        return problem("conflict", detail=detail, instance=instance)
    if isinstance(error, Busy):
        return problem("busy", detail=detail, instance=instance)
    return problem("validation", detail=detail, instance=instance)
