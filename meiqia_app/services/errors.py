"""Errors a user can cause. Each carries a message key the UI translates."""

from __future__ import annotations


class AppError(Exception):
    """Base of the errors shown to people (as a toast or next to a field)."""

    message_key = "error.generic"

    def __init__(self, message_key: str | None = None, **params: object):
        self.message_key = message_key or self.message_key
        self.params = params
        super().__init__(f"{self.message_key} {params}" if params else self.message_key)


class PermissionDenied(AppError):
    message_key = "error.permission_denied"


class NotAuthenticated(AppError):
    message_key = "error.not_authenticated"


class NotFound(AppError):
    message_key = "error.not_found"


class Conflict(AppError):
    """Somebody else changed the row since it was read (optimistic locking)."""

    message_key = "error.conflict"


class ReadOnly(AppError):
    """The customer may be read but not changed: archived or in the trash (until restored), or an erasure is pending."""

    message_key = "customer.read_only"


class DuplicateCustomer(AppError):
    """A new customer repeats an existing customer's phone, e-mail or external id.

    ``matches`` lists them (``services.customers.duplicates.check.ExistingCustomer``); the
    person may open one of them or save anyway (``acknowledged``).
    """

    message_key = "customer.duplicate"

    def __init__(self, matches: list, **params: object):
        super().__init__(None, **params)
        self.matches = list(matches)


class Busy(AppError):
    """The database's write lock was held past the busy timeout (SQLite, during a
    bulk cleanup batch): nothing was changed, trying again shortly works."""

    message_key = "error.busy"


class ValidationError(AppError):
    """Bad input. ``field_errors`` maps a field name to (message key, params)."""

    message_key = "error.validation"

    def __init__(
        self, field_errors: dict[str, tuple[str, dict]] | None = None, message_key: str | None = None, **params
    ):
        super().__init__(message_key, **params)
        self.field_errors = field_errors or {}

    @classmethod
    def single(cls, field: str, key: str, **params) -> ValidationError:
        return cls({field: (key, params)})


class RuleFieldGone(ValidationError):
    """A tag rule names a custom field that was retired or deleted (``fields``: its key):
    the rule is not run (it would match nobody, or everybody) until it is edited."""

    message_key = "rule.cf_field_gone"

    def __init__(self, **params: object):
        n = params.get("n", 1)
        super().__init__({f"condition_{int(n) - 1}": ("rule.cf_field_gone", dict(params))}, **params)
