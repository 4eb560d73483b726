"""Audit entries as sentences people read, in both languages (AUDIT-2).

``role.update role:5 {"granted":["report.view"]}`` reads "系统管理员 把 查看报告
授予 角色 数据分析师". Every action the code writes has

- a label, ``audit.act.<action>`` (a noun phrase: "角色权限修改"), used when the
  action was refused or failed: "张三 的操作被拒绝：角色权限修改（缺少权限：管理角色）";
- when the code records it as done (``audit.record``), a sentence
  ``audit.say.<action>`` whose parameters come from the entry's details
  (:data:`PHRASES`). Actions that are only ever written as refusals (the
  ``action=`` of ``rbac.require``) need the label alone (:data:`REFUSAL_ONLY`).

``tests/unit/test_audit_sentences.py`` reads every action out of the code
and fails when one has no label or no sentence.

Ids in the details (roles, users, tags, rules) are turned into today's names
when the page is shown, in one query per kind for the whole page (the
phrases run twice: once to collect the ids, once to write the sentence).
Customers stay numbers (#123) and details keep what they hold: the sentence
never shows a personal value the details do not already hold masked (it
names fields, not values).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable
from typing import Any

from sqlmodel import select

from meiqia_app.i18n import CATALOGS, tr
from meiqia_app.models import AuditEntry, CustomField, Role, Tag, TagRule, User
from meiqia_app.services.custom_fields.field_types import key_of

LANGS = ("zh", "en")
SEPARATOR = {"zh": "、", "en": ", "}


# --- names resolved for a whole page --------------------------------------------------------
class Names:
    """Today's names of the ids a page of entries mentions, looked up in batches."""

    KINDS = ("role", "role_name", "user", "tag", "rule", "field")
    # Kinds looked up by a name rather than an id: a custom field by its key.
    BY_NAME = ("role_name", "field")

    def __init__(self) -> None:
        self.wanted: dict[str, set] = {kind: set() for kind in self.KINDS}
        self.found: dict[str, dict] = {kind: {} for kind in self.KINDS}

    def want(self, kind: str, key: Any) -> None:
        if key in (None, ""):
            return
        if kind not in self.BY_NAME:
            try:
                key = int(key)
            except (TypeError, ValueError):
                return
        self.wanted[kind].add(key)

    def load(self, session) -> None:
        """One query per kind (none for a kind nobody asked for)."""
        roles_by_id = sorted(self.wanted["role"])
        roles_by_name = sorted(self.wanted["role_name"])
        if roles_by_id or roles_by_name:
            query = select(Role.id, Role.name, Role.label_zh, Role.label_en).where(
                Role.id.in_(roles_by_id) | Role.name.in_(roles_by_name)
            )
            for role_id, name, label_zh, label_en in session.exec(query).all():
                labels = {"zh": label_zh or name, "en": label_en or label_zh or name}
                self.found["role"][role_id] = labels
                self.found["role_name"][name] = labels
        if self.wanted["user"]:
            query = select(User.id, User.username, User.display_name).where(User.id.in_(sorted(self.wanted["user"])))
            for user_id, username, display in session.exec(query).all():
                self.found["user"][user_id] = display or username
        if self.wanted["tag"]:
            for tag_id, name in session.exec(select(Tag.id, Tag.name).where(Tag.id.in_(sorted(self.wanted["tag"])))):
                self.found["tag"][tag_id] = name
        if self.wanted["rule"]:
            query = select(TagRule.id, TagRule.name).where(TagRule.id.in_(sorted(self.wanted["rule"])))
            for rule_id, name in session.exec(query).all():
                self.found["rule"][rule_id] = name
        if self.wanted["field"]:
            query = select(CustomField.key, CustomField.label_zh, CustomField.label_en).where(
                CustomField.key.in_(sorted(self.wanted["field"]))
            )
            for key, label_zh, label_en in session.exec(query).all():
                self.found["field"][key] = {"zh": label_zh, "en": label_en or label_zh}


@dataclasses.dataclass
class Ctx:
    """What a phrase reads: the entry's details and target, names, the language."""

    details: dict
    target_id: str
    names: Names
    lang: str
    collecting: bool = False
    actor_name: str = ""  # the username the entry was written with (typed, for failed logins)

    # -- plain values ---------------------------------------------------------------------
    def get(self, key: str, default: Any = "") -> Any:
        value = self.details.get(key, default)
        return default if value is None else value

    def n(self, value: Any) -> str:
        """A count with thousands separators ("1,234"); a list counts its items."""
        if isinstance(value, list | tuple | set | dict):
            value = len(value)
        try:
            return f"{int(value):,}"
        except (TypeError, ValueError):
            return str(value or 0)

    def t(self, key: str, **params: Any) -> str:
        return "" if self.collecting else tr(self.lang, key, **params)

    def label(self, prefix: str, code: Any) -> str:
        """``tr(prefix.code)`` when the catalogue has it, else the code itself."""
        key = f"{prefix}.{code}"
        return self.t(key) if key in CATALOGS["zh"] else str(code)

    def join(self, items: Iterable[str]) -> str:
        return SEPARATOR.get(self.lang, ", ").join(str(item) for item in items if item != "")

    def perms(self, codes: Iterable[str]) -> str:
        return self.join(self.label("perm", code) for code in codes or ())

    def customer(self, value: Any = None) -> str:
        value = self.target_id if value is None else value
        return f"#{value}" if value not in (None, "") else ""

    # -- names looked up at display time ----------------------------------------------------
    def _name(self, kind: str, key: Any, fallback: Any = "") -> str:
        self.names.want(kind, key)
        if self.collecting:
            return ""
        if kind not in Names.BY_NAME:
            try:
                key = int(key)
            except (TypeError, ValueError):
                return str(fallback or key or "")
        found = self.names.found[kind].get(key)
        if isinstance(found, dict):
            return found.get(self.lang) or found["zh"]
        if found:
            return found
        return str(fallback or (f"#{key}" if kind not in Names.BY_NAME else key))

    def role(self, role_id: Any = None, fallback: Any = "") -> str:
        return self._name("role", self.target_id if role_id is None else role_id, fallback)

    def role_named(self, name: Any) -> str:
        return self._name("role_name", name, name)

    def user(self, user_id: Any = None, fallback: Any = "") -> str:
        return self._name("user", self.target_id if user_id is None else user_id, fallback)

    def tag(self, tag_id: Any = None, fallback: Any = "") -> str:
        return self._name("tag", self.target_id if tag_id is None else tag_id, fallback)

    def tags(self, tag_ids: Iterable[Any]) -> str:
        return self.join(self.tag(tag_id) for tag_id in tag_ids or ())

    def rule(self, rule_id: Any = None, fallback: Any = "") -> str:
        return self._name("rule", self.target_id if rule_id is None else rule_id, fallback)

    def field(self, key: Any, fallback: Any = "") -> str:
        """A custom field by its key: today's label in the reader's language ("label（key）"
        in the entries of the field itself), the label it had, or the key."""
        return self._name("field", key, fallback or key)


Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Phrase:
    """How an action done reads: the parameters of ``audit.say.<action>``.

    ``params`` may return ``(variant, params)`` to pick ``audit.say.<action>.<variant>``
    (listed in ``variants``). ``always``: the sentence fits every result (a lockout is
    written as "refused" by nature), so no generic refusal wording is used.
    """

    params: Callable[[Ctx], Params | tuple[str, Params]] = lambda c: {}
    variants: tuple[str, ...] = ()
    always: bool = False


def _export(c: Ctx) -> Params:
    return {
        "id": c.get("export_id") or c.target_id,
        "rows": c.n(c.get("rows") or c.get("row_count") or 0),
        "format": str(c.get("format") or "").upper(),
        "purpose": c.label("export.purpose", c.get("purpose") or "analysis"),
        "requester": c.get("requester"),
    }


# Built-in fields a bulk edit sets (services/customers/bulk_edit.py): the prefix of their choices' labels.
_BULK_CHOICE_PREFIX = {"source": "source", "gender": "gender"}


def _bulk_edit(c: Ctx) -> Params:
    field = str(c.get("field"))
    value = c.get("value")
    if field.startswith("cf."):
        labels = c.get("label") or {}
        name = c.field(field[3:], labels.get("zh", "") if isinstance(labels, dict) else "")
    else:
        name = c.label("bulk_edit.field", field)
        if field in _BULK_CHOICE_PREFIX and isinstance(value, str) and value:
            value = c.label(_BULK_CHOICE_PREFIX[field], value)
    if isinstance(value, dict):  # free text: a reference, never the text
        value = c.t("bulk_edit.text_value")
    elif value in ("", None):
        value = c.t("bulk_edit.cleared")
    return {"field": name, "value": value, "count": c.n(c.get("count", 0))}


def _role_update(c: Ctx) -> tuple[str, Params]:
    granted, revoked = c.get("granted", []) or [], c.get("revoked", []) or []
    params = {"role": c.role(), "granted": c.perms(granted), "revoked": c.perms(revoked)}
    if granted and revoked:
        return "both", params
    return ("grant" if granted else "revoke" if revoked else "none"), params


def _user_update(c: Ctx) -> Params:
    changes = c.get("changes", {}) or {}
    parts = []
    if "display_name" in changes:
        parts.append(c.t("audit.change.display_name"))
    if "role" in changes:
        old, new = (list(changes["role"]) + ["", ""])[:2]
        parts.append(c.t("audit.change.role", before=c.role_named(old), after=c.role_named(new)))
    if "is_active" in changes:
        active = bool((list(changes["is_active"]) + [None, None])[1])
        parts.append(c.t("audit.change.activated" if active else "audit.change.deactivated"))
    return {"user": c.user(), "changes": c.join(parts)}


def _fields(c: Ctx, names: Iterable[str]) -> str:
    """Field names as people read them; custom fields ("cf.<key>") by today's label."""
    return c.join(c.field(key_of(name)) if key_of(name) else c.label("customer", name) for name in names)


def _field_target(c: Ctx) -> Params:
    key = c.get("key")
    return {"field": f"{c.field(key, c.get('label'))} ({key})" if key else c.target_id}


def _field_update(c: Ctx) -> Params:
    changes = c.get("changes", {}) or {}
    return {**_field_target(c), "changes": c.join(c.t(f"field.attr.{name}") for name in changes)}


def _field_option(c: Ctx) -> tuple[str, Params]:
    change = c.get("change") or "add"
    variant = change if change in FIELD_OPTION_CHANGES else "add"
    return variant, {**_field_target(c), "option": c.get("option_label") or c.get("option")}


FIELD_OPTION_CHANGES = ("add", "rename", "move", "retire", "restore")


def _cleanup(c: Ctx) -> Params:
    return {"count": c.n(c.get("processed", 0)), "tag": c.tag(c.get("tag_id")) if c.get("tag_id") else ""}


def _session_revoke(c: Ctx) -> tuple[str, Params]:
    device = c.get("device") or c.t("account.unknown_device")
    return ("current" if c.get("current") else "other"), {"device": device}


def _retention(c: Ctx) -> Params:
    return {"policy": c.label("retention.policy", c.get("policy") or c.target_id)}


def _user_target(c: Ctx) -> Params:
    return {"user": c.user()}


def _sessions(c: Ctx) -> Params:
    return {"user": c.user(), "sessions": c.n(c.get("sessions") or c.get("sessions_revoked") or 0)}


def _tag_target(c: Ctx) -> Params:
    return {"tag": c.tag(None, c.get("name") or c.get("tag"))}


def _rule_target(c: Ctx) -> Params:
    after = c.get("after", {}) or {}
    return {"rule": c.rule(None, c.get("name") or after.get("name", "")), "tag": c.tag(after.get("tag_id"))}


#: action -> how it reads when done. Keep sorted by action; both languages in messages_audit.py.
PHRASES: dict[str, Phrase] = {
    "apikey.create": Phrase(lambda c: {"name": c.get("name"), "prefix": c.get("prefix")}),
    "apikey.revoke": Phrase(lambda c: {"name": c.get("name"), "prefix": c.get("prefix")}),
    "audit.anchor": Phrase(lambda c: {"reason": c.label("audit.anchor.reason", c.get("reason") or "manual")}),
    "audit.verify": Phrase(lambda c: {"checked": c.n(c.get("checked", 0))}),
    "auth.address_lockout": Phrase(
        lambda c: {"ip": c.get("client_ip"), "minutes": c.get("minutes")},
        always=True,
    ),
    "auth.lockout": Phrase(lambda c: {"user": c.user(None, c.actor_name)}, always=True),
    "auth.login": Phrase(),
    "auth.logout": Phrase(),
    "auth.logout_all": Phrase(lambda c: {"sessions": c.n(c.get("sessions", 0))}),
    "auth.password_change": Phrase(lambda c: {"sessions": c.n(c.get("other_sessions_revoked", 0))}),
    "auth.recovery_code_used": Phrase(),
    "auth.recovery_codes_renew": Phrase(
        lambda c: {"codes": c.n(c.get("codes", 0)), "unused": c.n(c.get("unused_replaced", 0))}
    ),
    "auth.second_factor": Phrase(),
    "auth.session_revoke": Phrase(_session_revoke, variants=("current", "other")),
    "auth.totp_enrolled": Phrase(),
    "auth.totp_reenrol": Phrase(),
    "auth.totp_reenrolled": Phrase(lambda c: {"sessions": c.n(c.get("other_sessions_revoked", 0))}),
    "backup.create": Phrase(lambda c: {"file": c.get("file"), "kind": c.label("backup.kind", c.get("kind"))}),
    "backup.download": Phrase(lambda c: {"file": c.get("file")}),
    "backup.restore": Phrase(lambda c: {"file": c.get("file")}),
    "backup.retention": Phrase(lambda c: {"count": c.n(c.get("removed", []))}),
    "cleanup.archive": Phrase(_cleanup),
    "cleanup.erase": Phrase(_cleanup),
    "cleanup.purge": Phrase(_cleanup),
    "cleanup.restore_archived": Phrase(lambda c: {"count": c.n(c.get("restored", 0))}),
    "cleanup.restore_trashed": Phrase(lambda c: {"count": c.n(c.get("restored", 0))}),
    "cleanup.tag": Phrase(_cleanup),
    "cleanup.trash": Phrase(_cleanup),
    "customer.consent": Phrase(
        lambda c: (
            "granted" if c.get("granted") else "withdrawn",
            {"customer": c.customer(), "consent": c.t(f"consent.{c.get('consent')}") if c.get("consent") else ""},
        ),
        variants=("granted", "withdrawn"),
    ),
    "customer.create": Phrase(lambda c: {"customer": c.customer()}),
    "customer.claim": Phrase(lambda c: {"customer": c.customer()}),
    "customer.assign": Phrase(lambda c: {"customer": c.customer(), "owner": c.user(c.get("owner_id"))}),
    "customer.transfer": Phrase(
        lambda c: {"customer": c.customer(), "old": c.user(c.get("old_owner_id")), "owner": c.user(c.get("owner_id"))}
    ),
    "customer.bulk_edit": Phrase(_bulk_edit),
    "customer.release": Phrase(lambda c: {"customer": c.customer(), "old": c.user(c.get("old_owner_id"))}),
    "customer.bulk_assign": Phrase(
        lambda c: (
            "assign" if c.get("owner_id") not in (None, "") else "release",
            {"count": c.n(c.get("count", 0)), "owner": c.user(c.get("owner_id")) if c.get("owner_id") else ""},
        ),
        variants=("assign", "release"),
    ),
    "customer.import": Phrase(
        lambda c: {
            "file": c.get("file"),
            "inserted": c.n(c.get("inserted", 0)),
            "invalid": c.n(c.get("invalid", 0)),
            "duplicates": c.n(c.get("duplicates", 0)),
        }
    ),
    "customer.merge": Phrase(
        lambda c: {
            "customer": c.customer(c.get("survivor_id") or c.target_id),
            "merged": c.join(c.customer(i) for i in c.get("merged_ids", []) or []),
        }
    ),
    "customer.order_add": Phrase(
        lambda c: {"customer": c.customer(), "product": c.get("product"), "quantity": c.get("quantity")}
    ),
    "customer.tag_add": Phrase(lambda c: {"customer": c.customer(), "tag": c.tag(c.get("tag_id"), c.get("tag"))}),
    "customer.tag_remove": Phrase(lambda c: {"customer": c.customer(), "tag": c.tag(c.get("tag_id"), c.get("tag"))}),
    "customer.update": Phrase(
        lambda c: {"customer": c.customer(), "fields": _fields(c, (c.get("changes", {}) or {}).keys())}
    ),
    "data.seed": Phrase(),
    "erasure.execute": Phrase(lambda c: {"count": c.n(c.get("customers", 0))}),
    "erasure.request": Phrase(lambda c: {"customer": c.customer(), "request": c.get("request_id")}),
    "event.ingest": Phrase(
        lambda c: {
            "accepted": c.n(c.get("accepted", 0)),
            "records": c.n(c.get("records", 0)),
            "customers": c.n(c.get("customers", 0)),
        }
    ),
    "field.create": Phrase(_field_target),
    "field.delete": Phrase(_field_target),
    "field.option": Phrase(_field_option, variants=FIELD_OPTION_CHANGES),
    "field.purge": Phrase(lambda c: {**_field_target(c), "count": c.n(c.get("removed", 0))}),
    "field.restore": Phrase(_field_target),
    "field.retire": Phrase(_field_target),
    "field.update": Phrase(_field_update),
    "export.approve": Phrase(_export),
    "export.cancel": Phrase(_export),
    "export.download": Phrase(_export),
    "export.expire": Phrase(lambda c: {"count": c.n(c.get("export_ids", []))}),
    "export.failed": Phrase(
        lambda c: {**_export(c), "error": c.t(c.get("error")) if c.get("error") else ""},
        always=True,
    ),
    "export.portability": Phrase(lambda c: {"customer": c.customer()}),
    "export.reject": Phrase(_export),
    "export.request": Phrase(
        lambda c: ("approval" if c.get("needs_approval") else "direct", _export(c)),
        variants=("approval", "direct"),
    ),
    "export.run": Phrase(_export),
    "lifecycle.recompute": Phrase(lambda c: {"count": c.n(c.get("changed", 0))}),
    "note.create": Phrase(lambda c: {"customer": c.customer(c.get("customer_id"))}),
    "note.delete": Phrase(lambda c: {"customer": c.customer(c.get("customer_id"))}),
    "note.update": Phrase(lambda c: {"customer": c.customer(c.get("customer_id"))}),
    "report.export": Phrase(
        lambda c: {"report": c.label("audit.report", c.target_id), "format": str(c.get("format")).upper()}
    ),
    "retention.run": Phrase(_retention),
    "retention.update": Phrase(_retention),
    "role.create": Phrase(lambda c: {"role": c.role(None, c.get("name")), "perms": c.perms(c.get("permissions"))}),
    "role.delete": Phrase(lambda c: {"role": c.get("name") or c.role()}),
    "role.export_policy": Phrase(lambda c: {"role": c.role()}),
    "role.update": Phrase(_role_update, variants=("both", "grant", "revoke", "none")),
    "rule.apply_customer": Phrase(
        lambda c: {"customer": c.customer(), "added": c.tags(c.get("added")), "removed": c.tags(c.get("removed"))}
    ),
    "rule.create": Phrase(_rule_target),
    "rule.defaults_installed": Phrase(lambda c: {"count": c.n(c.get("rules", 0))}),
    "rule.delete": Phrase(lambda c: {"rule": c.get("name") or c.rule()}),
    "rule.disable": Phrase(_rule_target),
    "rule.enable": Phrase(_rule_target),
    "rule.run": Phrase(
        lambda c: {
            "rule": c.rule(None, c.get("name")),
            "tag": c.tag(c.get("tag_id")),
            "added": c.n(c.get("added", 0)),
            "removed": c.n(c.get("removed", 0)),
        }
    ),
    "rule.update": Phrase(_rule_target),
    "setting.update": Phrase(lambda c: {"setting": c.target_id}),
    "team.create": Phrase(lambda c: {"team": c.get("name")}),
    "team.rename": Phrase(lambda c: {"old": c.get("old"), "team": c.get("name")}),
    "team.delete": Phrase(lambda c: {"team": c.get("name"), "count": c.n(c.get("members", 0))}),
    "team.set_lead": Phrase(
        lambda c: (
            "set" if c.get("lead_id") else "none",
            {"team": c.get("name"), "lead": c.user(c.get("lead_id")) if c.get("lead_id") else ""},
        ),
        variants=("set", "none"),
    ),
    "user.set_team": Phrase(
        lambda c: ("set" if c.get("team_id") else "none", {"user": c.user(), "team": c.get("team")}),
        variants=("set", "none"),
    ),
    "role.data_scope": Phrase(
        lambda c: {
            "role": c.role(),
            "before": c.label("scope", c.get("before")),
            "after": c.label("scope", c.get("after")),
        }
    ),
    "tag.bulk_add": Phrase(lambda c: {"tag": c.tag(None, c.get("tag")), "count": c.n(c.get("count", 0))}),
    "tag.bulk_remove": Phrase(lambda c: {"tag": c.tag(None, c.get("tag")), "count": c.n(c.get("count", 0))}),
    "tag.create": Phrase(_tag_target),
    "tag.delete": Phrase(lambda c: {"tag": c.get("name") or c.tag(), "count": c.n(c.get("customers", 0))}),
    "tag.merge": Phrase(
        lambda c: {"source": c.get("from"), "tag": c.tag(None, c.get("into")), "count": c.n(c.get("moved", 0))}
    ),
    "tag.update": Phrase(_tag_target),
    "user.create": Phrase(lambda c: {"user": c.user(None, c.get("username")), "role": c.role_named(c.get("role"))}),
    "user.reset_password": Phrase(_sessions),
    "user.reset_totp": Phrase(_sessions),
    "user.revoke_sessions": Phrase(_sessions),
    "user.unlock": Phrase(_user_target),
    "user.update": Phrase(_user_update),
    "webhook.create": Phrase(lambda c: {"url": c.get("url")}),
    "webhook.delete": Phrase(lambda c: {"url": c.get("url")}),
    "webhook.disabled": Phrase(lambda c: {"url": c.get("url")}),
    "webhook.resend": Phrase(lambda c: {"event": c.get("event"), "delivery": c.get("delivery_id")}),
    "webhook.update": Phrase(lambda c: {"url": c.get("url")}),
    "view.delete": Phrase(lambda c: {"view": c.get("name")}),
    "view.save": Phrase(lambda c: {"view": c.get("name")}),
}

#: Actions only ever written as refusals (the ``action=`` of ``rbac.require``): a label is enough.
REFUSAL_ONLY: frozenset[str] = frozenset(
    {
        "page.open",
        "apikey.list",
        "customer.lookup",
        "customer.upsert",
        "open_api.authenticate",
        "open_api.read",
        "open_api.upsert",
        "open_api.write",
        "tag.lookup",
        "webhook.deliveries",
        "webhook.list",
        "webhook.view",
        "audit.anchors",
        "audit.list",
        "backup.list",
        "backup.view",
        "cleanup.browse",
        "cleanup.dry_run",
        "conversation.view",
        "customer.count",
        "customer.find_duplicates",
        "customer.import_dry_run",
        "customer.import_error_report",
        "customer.import_preview",
        "customer.import_upload",
        "customer.list",
        "customer.merge_preview",
        "team.list",
        "customer.timeline",
        "customer.view",
        "erasure.list",
        "erasure.mentions",
        "export.approvals",
        "export.history",
        "export.review",
        "field.list",
        "lifecycle.thresholds",
        "report.cohorts",
        "report.compare",
        "report.dashboard",
        "report.segment",
        "report.snapshot",
        "report.top_products",
        "report.trend",
        "retention.preview",
        "retention.view",
        "role.list",
        "rule.list",
        "rule.preview",
        "rule.products",
        "rule.run_all",
        "rule.save",
        "rule.schedule",
        "rule.view",
        "tag.bulk_invalid",
        "tag.hygiene",
        "tag.list",
        "tag.merge_preview",
        "tag.suggest",
        "upload",
        "user.list",
        "view.list",
        "view.load",
    }
)

KNOWN_ACTIONS: frozenset[str] = frozenset(PHRASES) | REFUSAL_ONLY


def label_key(action: str) -> str:
    return f"audit.act.{action}"


def sentence_keys(action: str) -> list[str]:
    """Every message key the action's sentence may use."""
    phrase = PHRASES.get(action)
    if phrase is None:
        return []
    base = f"audit.say.{action}"
    return [f"{base}.{variant}" for variant in phrase.variants] if phrase.variants else [base]


# --- writing the sentence -------------------------------------------------------------------
def _details(entry: AuditEntry) -> dict:
    try:
        value = json.loads(entry.details or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _why(c: Ctx) -> str:
    """Why a refusal or a failure happened, in words: the missing permission, the reason, the problem."""
    permission = c.get("missing_permission")
    if permission:
        # One permission, or several comma-separated (a page that needs them all).
        names = c.join(c.label("perm", code) for code in str(permission).split(",") if code)
        return c.t("audit.why", text=c.t("audit.why.missing_permission", perm=names))
    for key in ("problem", "error", "reason", "outcome"):
        value = c.get(key)
        if not value or not isinstance(value, str):
            continue
        if value in CATALOGS["zh"]:  # a message key (export.reason.*, note.not_own…) with its params
            params = {k: v for k, v in c.details.items() if isinstance(v, str | int | float)}
            text = c.t(value, **params)
        elif f"audit.reason.{value}" in CATALOGS["zh"]:
            text = c.t(f"audit.reason.{value}")
        elif key == "problem" and f"audit.problem.{value}" in CATALOGS["zh"]:
            text = c.t(f"audit.problem.{value}")
        else:
            text = value[:160]
        return c.t("audit.why", text=text)
    return ""


def _actor_name(entry: AuditEntry, c: Ctx) -> str:
    if entry.actor_id is None:
        if entry.actor_name == "system":
            return c.t("audit.system")
        return c.t("audit.someone", name=entry.actor_name or "?")
    return c.user(entry.actor_id, entry.actor_name)


def _sentence(entry: AuditEntry, c: Ctx) -> str:
    actor = _actor_name(entry, c)
    action = entry.action
    phrase = PHRASES.get(action)
    if action not in KNOWN_ACTIONS:
        return c.t("audit.unknown_action", actor=actor, action=action)
    act = c.t(label_key(action))
    if phrase is not None and (entry.result == "ok" or phrase.always):
        made = phrase.params(c)
        variant, params = made if isinstance(made, tuple) else ("", made)
        key = f"audit.say.{action}" + (f".{variant}" if variant else "")
        return c.t(key, actor=actor, **params)
    if entry.result == "refused":
        return c.t("audit.refused", actor=actor, act=act, why=_why(c))
    return c.t("audit.failed", actor=actor, act=act, why=_why(c))


def sentences(session, entries: list[AuditEntry]) -> list[dict[str, str]]:
    """``{"zh": …, "en": …}`` for each entry, names looked up once for the whole list."""
    names = Names()
    prepared = [(entry, _details(entry)) for entry in entries]
    for lang in LANGS[:1]:  # first pass: which ids the sentences name
        for entry, details in prepared:
            _sentence(entry, Ctx(details, entry.target_id, names, lang, collecting=True, actor_name=entry.actor_name))
    names.load(session)
    return [
        {
            lang: _sentence(entry, Ctx(details, entry.target_id, names, lang, actor_name=entry.actor_name))
            for lang in LANGS
        }
        for entry, details in prepared
    ]
