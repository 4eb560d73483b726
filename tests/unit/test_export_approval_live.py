"""Export approval as the two people see it: the approver sees what each request is
for, and the requester's open wizard keeps following a request waiting for approval."""

from __future__ import annotations

from meiqia_app.services.exports import approval as export_approval
from meiqia_app.services.exports import info as export_info
from meiqia_app.services.exports import request as export_request
from meiqia_app.services.exports import run as export_run
from meiqia_app.state.base import AppState
from meiqia_app.state.export import ExportApprovalsState, ExportWizardState
from tests.unit.tabs import live_token, new_tab, pickled, run, serve
from tests.unit.test_export_services import _request, _set_policy


def _cookie(token: str) -> str:
    return f"mq_session={token}"


def test_the_approver_sees_the_purpose_of_each_request(seeded_db):
    actors = _set_policy("data_analyst", approval_over_rows=0, window_days=0)
    marketing = export_request.request_export(actors["analyst"], _request(purpose="marketing"), start=False)
    service_desk = export_request.request_export(actors["analyst"], _request(purpose="service"), start=False)
    assert marketing.status == service_desk.status == "pending_approval"
    token = live_token(seeded_db, "manager")

    tab = new_tab()
    served = run(serve(tab, ExportApprovalsState, "on_load", _cookie(token), "/exports/approvals"))
    rows = {row["id"]: row for row in served.value(ExportApprovalsState, "pending")}
    assert rows[marketing.id]["purpose"] == "营销"
    assert rows[service_desk.id]["purpose"] == "客户服务"

    english = new_tab()
    run(serve(english, AppState, "set_lang", _cookie(token), "/exports/approvals", {"lang": "en"}))
    served = run(serve(english, ExportApprovalsState, "on_load", _cookie(token), "/exports/approvals"))
    rows = {row["id"]: row for row in served.value(ExportApprovalsState, "pending")}
    assert rows[marketing.id]["purpose"] == "Marketing"


def test_the_wizard_keeps_following_a_request_that_waits_for_approval(seeded_db):
    """Submitting a request that needs approval starts the wizard's watch (it polls the
    database, so an approval on another worker is seen); before, it stopped at 待审批."""
    _set_policy("data_analyst", approval_over_rows=0, window_days=0)
    token = live_token(seeded_db, "analyst")
    tab = new_tab()
    run(serve(tab, ExportWizardState, "on_load", _cookie(token), "/export"))
    served = run(serve(tab, ExportWizardState, "run", _cookie(token), "/export", {"form": {}}))
    assert served.value(ExportWizardState, "run_status") == "pending_approval"
    chained = [event.name for event in served.events]
    assert any(name.endswith(".poll") for name in chained), chained


def test_an_approved_protected_export_starts_from_the_open_wizard_with_its_password(seeded_db):
    password = "s3cret-Export!"
    actors = _set_policy("data_analyst", approval_over_rows=0, window_days=0)
    pending = export_request.request_export(actors["analyst"], _request(), password=password, start=False)
    assert export_approval.decide(actors["manager"], pending.id, True).status == "approved"
    token = live_token(seeded_db, "analyst")
    tab = new_tab()
    run(serve(tab, ExportWizardState, "on_load", _cookie(token), "/export"))
    # The wizard as it stands after the request was submitted and approved.
    wizard = tab.get_substate(ExportWizardState.get_full_name().split("."))
    wizard.export_id, wizard.run_status, wizard.step = pending.id, "approved", 5

    served = run(
        serve(tab, ExportWizardState, "start_approved", _cookie(token), "/export", {"form": {"password": password}})
    )

    assert served.value(ExportWizardState, "run_status") in ("queued", "running", "done")
    assert any(event.name.endswith(".poll") for event in served.events)
    assert password.encode() not in pickled(tab)
    assert export_run.wait_for_export(pending.id, 30)
    assert export_info.export_view(actors["analyst"], pending.id).status == "done"
