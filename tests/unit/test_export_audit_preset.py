"""The /audit page's "exports" preset: every export step and nothing else; "export alerts": flagged ones."""

from __future__ import annotations

import pytest

from meiqia_app.services.audit import log as audit
from meiqia_app.services.audit import reading as audit_log
from meiqia_app.services.audit.reading import AuditFilter
from meiqia_app.services.errors import PermissionDenied, ValidationError
from meiqia_app.services.exports import info as export_info
from meiqia_app.services.exports import request as export_request
from meiqia_app.services.exports import run as export_run


def _actions(who, **raw) -> list[str]:
    return [row.action for row in audit_log.list_entries(who, AuditFilter.from_dict(raw), limit=200).rows]


def test_exports_preset_lists_every_export_step_and_nothing_else(seeded_actors, monkeypatch):
    admin, manager, analyst = seeded_actors["admin"], seeded_actors["manager"], seeded_actors["analyst"]
    for action in ("auth.login", "customer.update", "exporter.thing", "report.view", "tag.create"):
        audit.record_now(manager, action, target_type="x", target_id="1")
    audit.record_now(manager, "report.export", target_type="report", target_id="overview")
    audit.record_now(admin, "role.export_policy", target_type="role", target_id="3")
    monkeypatch.setattr(export_info, "LARGE_EXPORT_ROWS", 5)  # this export is "large": flagged
    data = {
        "scope": {"kind": "query", "query": {"sources": ["wechat"]}},
        "fields": ["id", "name"],
        "format": "csv",
        "sort_field": "id",
        "sort_dir": "asc",
    }
    view = export_request.request_export(manager, data, start=False)
    export_run.run_export(view.id)
    with pytest.raises(PermissionDenied):  # a refusal is an export step too
        export_request.request_export(analyst, {**data, "fields": ["id", "phone"]}, start=False)

    listed = _actions(admin, preset="exports")
    assert {"export.request", "export.run", "report.export", "role.export_policy"} <= set(listed)
    assert all(a.startswith("export.") or a in ("report.export", "role.export_policy") for a in listed)
    assert "exporter.thing" not in listed and "auth.login" not in listed
    refused = audit_log.list_entries(admin, AuditFilter.from_dict({"preset": "exports", "result": "refused"})).rows
    assert refused and all(r.actor == "analyst" and r.action == "export.request" for r in refused)

    alerts = audit_log.list_entries(admin, AuditFilter.from_dict({"preset": "exports", "flagged": "1"})).rows
    assert alerts and all(r.flagged for r in alerts)
    assert {r.action for r in alerts} <= {"export.request", "export.run"} and "large" in alerts[0].details
    # Presets combine with the other filters.
    assert set(_actions(admin, preset="exports", actor="admin")) == {"role.export_policy"}


def test_unknown_presets_are_refused_and_the_log_needs_audit_view(seeded_actors):
    with pytest.raises(ValidationError):
        AuditFilter.from_dict({"preset": "everything"})
    with pytest.raises(PermissionDenied):
        audit_log.list_entries(seeded_actors["manager"], AuditFilter.from_dict({"preset": "exports"}))
    assert AuditFilter.from_dict({"flagged": "on"}).flagged_only and not AuditFilter.from_dict({}).flagged_only
