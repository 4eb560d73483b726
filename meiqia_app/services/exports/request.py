"""An export request from the wizard: parsed and validated whatever the browser sent,
reviewed against the role's policy (count, size, approval), then recorded and started."""

from __future__ import annotations

import dataclasses
import json

from sqlmodel import select

from meiqia_app.db import read_session, write_session
from meiqia_app.models import ExportJob, SavedView
from meiqia_app.services.audit import log as audit
from meiqia_app.services.customers.query import HIDDEN_VALUE_SORTS
from meiqia_app.services.customers.selection import KIND_IDS, KIND_QUERY, Selection, check_ticked_in_reach
from meiqia_app.services.errors import ValidationError
from meiqia_app.services.exports import custom_sort
from meiqia_app.services.exports import protect as protection
from meiqia_app.services.exports.fields import FIELD_SPECS, present_fields
from meiqia_app.services.exports.info import FORMATS, ExportInfo, anomalies, audit_details, export_dto
from meiqia_app.services.exports.policy import evaluate, masked_fields
from meiqia_app.services.exports.rows import ExportSpec, RowSource
from meiqia_app.services.exports.run import start_export
from meiqia_app.services.identity.rbac import Actor, refuse, require

# --- request parsing ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ExportRequest:
    spec: ExportSpec
    fmt: str
    scope: dict  # what is stored in export_job.scope (selection + description)
    lang: str = "zh"
    skipped: tuple[str, ...] = ()  # custom fields ("cf.<key>") deleted or retired since they were chosen


_VALUE_PREFIXES = {
    "sources": "source",
    "lifecycle": "lifecycle",
    "tiers": "tier",
    "status": "status",
    "order_statuses": "order_status",
}


def query_text(query, lang: str) -> str:
    """The filter in words, for people (wizard, approvals, file headers, audit)."""
    from meiqia_app.i18n import tr
    from meiqia_app.models import Tag

    def label(key: str, fallback: str) -> str:
        text = tr(lang, key)
        return fallback if text == key else text

    data = query.to_dict()
    defaults = type(query)().to_dict()
    tag_ids = {i for key in ("tags_any", "tags_all", "tags_none") for i in data.get(key) or []}
    tag_names: dict[int, str] = {}
    if tag_ids:
        with read_session() as session:
            tag_names = {t.id: t.name for t in session.exec(select(Tag).where(Tag.id.in_(tag_ids))).all()}
    parts = []
    for key, value in data.items():
        if key in ("sort", "direction") or value == defaults.get(key) or value in ("", [], None):
            continue
        values = value if isinstance(value, list) else [value]
        if key in _VALUE_PREFIXES:
            shown = [label(f"{_VALUE_PREFIXES[key]}.{v}", str(v)) for v in values]
        elif key.startswith("tags_"):
            shown = [tag_names.get(v, f"#{v}") for v in values]
        else:
            shown = [str(v) for v in values]
        name = label("common.search", key) if key == "q" else label(f"filter.{key}", key)
        parts.append(f"{name}: {'、'.join(shown)}")
    return "; ".join(parts) if parts else tr(lang, "export.scope.all")


def parse_request(actor: Actor, data: dict, lang: str = "zh") -> ExportRequest:
    """Validate a request coming from the browser (any shape may arrive)."""
    from meiqia_app.i18n import tr
    from meiqia_app.services.customers.saved_views import load_view

    if not isinstance(data, dict):
        raise ValidationError.single("request", "error.bad_choice")
    scope = data.get("scope") or {}
    if not isinstance(scope, dict):
        raise ValidationError.single("scope", "error.bad_choice")
    stored: dict = {}
    if scope.get("kind") == "view":
        try:
            view_id = int(scope.get("view_id"))
        except (TypeError, ValueError):
            raise ValidationError.single("scope", "error.bad_choice") from None
        query = load_view(actor, view_id)
        with read_session() as session:
            view = session.get(SavedView, view_id)
            view_name = view.name if view else str(view_id)
        selection = Selection.of_query(query)
        stored = {
            "view_id": view_id,
            "text": tr(lang, "export.scope.view_text", name=view_name) + " · " + query_text(query, lang),
        }
    else:
        selection = Selection.from_dict(
            {"kind": scope.get("kind") or KIND_QUERY, "query": scope.get("query") or {}, "ids": scope.get("ids")}
        )
        check_ticked_in_reach(actor, selection, "export.request")
        if selection.kind == KIND_IDS:
            stored = {"text": tr(lang, "export.scope.ids_text", count=len(selection.ids))}
        else:
            stored = {"text": query_text(selection.query, lang)}
    stored["selection"] = selection.to_dict()
    fields = data.get("fields")
    if not isinstance(fields, (list, tuple)) or not all(isinstance(f, str) for f in fields):
        raise ValidationError.single("fields", "export.error.no_fields")
    # Custom fields are named by their key: one deleted (or retired) since a template or an
    # earlier export chose it is left out, and the review says so.
    fields, skipped = present_fields(fields)
    if not fields and skipped:
        raise ValidationError.single("fields", "export.error.fields_gone")
    fmt = data.get("format") or "csv"
    if fmt not in FORMATS:
        raise ValidationError.single("format", "error.bad_choice")
    purpose = data.get("purpose") or "analysis"
    direction = data.get("sort_dir") or "asc"
    if direction not in ("asc", "desc"):
        raise ValidationError.single("sort", "error.bad_choice")
    sort_field = data.get("sort_field") or "id"
    if not isinstance(sort_field, str):
        raise ValidationError.single("sort", "error.bad_choice")
    if custom_sort.is_custom_sort(sort_field):
        custom_sort.check_sort(actor, sort_field)  # by key: active, sortable, not hidden from the actor
    elif sort_field in HIDDEN_VALUE_SORTS and not actor.can("customer.view_sensitive"):
        # Rows in the order of an amount the file shows masked would rank the hidden amounts.
        refuse(actor, "export.request", "error.hidden_value_filter", target_type="export", fields=["sort_field"])
    spec = ExportSpec(
        selection=selection,
        fields=tuple(fields),
        sort_field=sort_field,
        descending=direction == "desc",
        purpose=purpose,
        restrict_tag_ids=actor.export_policy.allowed_tag_ids,
    )
    return ExportRequest(spec=spec, fmt=fmt, scope=stored, lang=lang if lang in ("zh", "en") else "zh", skipped=skipped)


def password_required(actor: Actor, spec: ExportSpec) -> bool:
    """Sensitive values in clear need a password; masked ones do not."""
    return bool(set(spec.sensitive_fields) - masked_fields(actor))


_BYTES_PER_KIND = {"text": 14, "int": 6, "money": 9, "date": 11, "datetime": 20, "bool": 3}


def estimate_size(fields, fmt: str, rows: int) -> int:
    per_row = sum(_BYTES_PER_KIND.get(FIELD_SPECS[f].kind, 10) + 1 for f in fields) + 1
    csv_size = per_row * rows + 200
    if fmt == "xlsx":
        return int(csv_size * 0.45) + 8_000
    if fmt == "pdf":
        return rows * 90 + 60_000
    return csv_size


# --- review and request -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ExportReview:
    """What the wizard's review step shows before a request: count, size, policy verdict."""

    row_count: int
    size_estimate: int
    reasons: list[tuple[str, dict]]  # (message key, its parameters): why refused or why approval
    allowed: bool
    needs_approval: bool
    password_required: bool
    masked: list[str]  # chosen fields this role exports masked
    scope_text: str
    skipped: list[str] = dataclasses.field(default_factory=list)  # custom fields gone since chosen ("cf.<key>")


def review(actor: Actor, data: dict, lang: str = "zh") -> ExportReview:
    """Step 6 of the wizard: row count, size estimate, policy result, approval needed."""
    require(actor, "export.request", action="export.review")
    request = parse_request(actor, data, lang)
    count = RowSource(actor, request.spec, lang).count()
    result = evaluate(actor, request.spec, request.fmt, count)
    return ExportReview(
        row_count=count,
        size_estimate=estimate_size(request.spec.fields, request.fmt, count),
        reasons=[(key, params) for key, params in result.reasons],
        allowed=result.allowed,
        needs_approval=result.needs_approval,
        password_required=password_required(actor, request.spec),
        masked=sorted(set(request.spec.fields) & masked_fields(actor)),
        scope_text=request.scope["text"],
        skipped=list(request.skipped),
    )


def request_export(actor: Actor, data: dict, password: str = "", lang: str = "zh", start: bool = True) -> ExportInfo:
    """Create an export: refused (and audited) outside the policy, pending when it
    needs approval, otherwise queued and started in the background."""
    require(actor, "export.request", action="export.request")
    request = parse_request(actor, data, lang)
    spec = request.spec
    count = RowSource(actor, spec, lang).count()
    result = evaluate(actor, spec, request.fmt, count)
    if not result.allowed:
        key, params = result.reasons[0]
        refuse(
            actor,
            "export.request",
            key,
            target_type="export",
            reasons=result.reason_keys(),
            chosen_fields=list(spec.fields),
            format=request.fmt,
            rows=count,
            scope=request.scope["text"],
            **params,
        )
    protected = bool(password)
    if password_required(actor, spec) and not protected:
        raise ValidationError.single("password", "export.error.password_required")
    if protected:
        protection.validate_password(password)
    with write_session() as session:
        job = ExportJob(
            requested_by_id=actor.user_id,
            requested_by_name=actor.username,
            status="pending_approval" if result.needs_approval else "queued",
            purpose=spec.purpose,
            scope=json.dumps(request.scope, ensure_ascii=False),
            fields=json.dumps(list(spec.fields)),
            sort=json.dumps(
                {"field": spec.sort_field, "direction": "desc" if spec.descending else "asc", "lang": request.lang}
            ),
            format=request.fmt,
            protected=protected,
            row_estimate=count,
        )
        session.add(job)
        session.flush()
        flags = anomalies(session, actor, count)
        audit.record(
            session,
            actor,
            "export.request",
            target_type="export",
            target_id=job.id,
            details=audit_details(
                job,
                rows=count,
                needs_approval=result.needs_approval,
                anomalies=flags,
                skipped_fields=list(request.skipped),
            ),
            flagged=bool(flags),
        )
        view = export_dto(job)
    if not result.needs_approval and start:
        start_export(view.id, password)
    return view
