"""In the browser: the erasure's review of mentions in other customers' records, and the
audit chain's anchors on /audit (issue items 4 and 13)."""

from __future__ import annotations

import json
import time

from playwright.sync_api import expect

from tests.e2e.conftest import login
from tests.e2e.harness import wait_ready
from tests.e2e.test_cleanup import _choose, _click_until

NAME, PHONE, EMAIL = "提及测试人", "13912340077", "mention.test.person@example.org"


def _grows(path, lines: int, seconds: float = 30) -> None:
    """Wait until the file has more than ``lines`` lines (AssertionError otherwise)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) > lines:
            return
        time.sleep(0.2)
    raise AssertionError(f"{path.name} did not grow")


def _commit(db) -> None:
    if hasattr(db, "commit"):
        db.commit()


def test_admin_reviews_mentions_redacts_the_ticked_one_and_sees_the_anchors(page, app_server):
    with app_server.sql() as db:
        target, other = [
            row[0]
            for row in db.execute(
                "SELECT c.id FROM customer c WHERE status='active' AND NOT EXISTS "
                "(SELECT 1 FROM erasure_request r WHERE r.customer_id=c.id) ORDER BY id DESC LIMIT 2"
            ).fetchall()
        ]
        db.execute("UPDATE customer SET name=?, phone=?, email=? WHERE id=?", (NAME, PHONE, EMAIL, target))
        for body in (f"推荐人 {NAME}，电话 {PHONE}", f"朋友的邮箱 {EMAIL}"):
            db.execute(
                "INSERT INTO note (customer_id, author_name, body, created_at, updated_at) "
                "VALUES (?, 'agent', ?, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
                (other, body),
            )
        db.execute(
            "INSERT INTO erasure_request (customer_id, requested_by_name, requested_at, reason, status) "
            "VALUES (?, 'agent', CURRENT_TIMESTAMP, '客户要求', 'pending')",
            (target,),
        )
        _commit(db)
        pending = db.execute(
            "SELECT count(DISTINCT r.customer_id) FROM erasure_request r JOIN customer c "
            "ON c.id=r.customer_id WHERE r.status='pending' AND c.status='active'"
        ).fetchone()[0]
        named, kept = [
            row[0]
            for row in db.execute(
                "SELECT id FROM note WHERE customer_id=? AND (body LIKE ? OR body LIKE ?) ORDER BY id",
                (other, f"%{NAME}%", f"%{EMAIL}%"),
            ).fetchall()
        ]
    assert pending <= 20  # the seed files almost no requests: the mentions are searched

    login(page, app_server, "admin", "/cleanup")
    wait_ready(page)
    page.locator("#crit-erasure_pending").click()
    expect(page.locator("#crit-erasure_pending")).to_have_attribute("data-state", "checked")
    _choose(page, "#cleanup-action", "删除个人数据（不可恢复）")
    page.locator("#cleanup-dry-run").click()
    expect(page.locator("#cleanup-count")).to_contain_text(str(pending))
    mentions = page.locator("#cleanup-mentions .mention-row")
    expect(mentions.filter(has_text=NAME)).to_have_count(1)
    expect(mentions.filter(has_text=EMAIL)).to_have_count(1)
    # Every mention is ticked; the admin leaves the e-mail one as it is.
    page.locator(f"#mention-note-{kept}").click()
    expect(page.locator(f"#mention-note-{kept}")).to_have_attribute("data-state", "unchecked")
    page.locator("#cleanup-confirm").fill(str(pending))
    page.locator("#cleanup-run").click()
    report = page.locator("#cleanup-report")
    expect(report).to_contain_text("已完成", timeout=60_000)
    expect(report).to_contain_text("已遮盖 1 处")
    expect(report).to_contain_text(f"已遮盖：备注 #{named}")
    expect(report).to_contain_text(f"未遮盖（请人工查看）：备注 #{kept}")
    with app_server.sql() as db:
        assert (
            db.execute("SELECT body FROM note WHERE id=?", (named,)).fetchone()[0] == "推荐人 [已删除]，电话 [已删除]"
        )
        assert EMAIL in db.execute("SELECT body FROM note WHERE id=?", (kept,)).fetchone()[0]
        details = db.execute(
            "SELECT details FROM audit_entry WHERE action='erasure.execute' ORDER BY id DESC LIMIT 1"
        ).fetchone()[0]
    assert json.loads(details)["mentions"]["redacted"] == [f"note:{named}"] and NAME not in details

    # A backup anchors the chain outside the database; /audit shows the anchor to write down.
    anchors = app_server.data_dir / "backups" / "audit-anchors.log"
    before = len(anchors.read_text().splitlines()) if anchors.exists() else 0
    page.goto("/admin/backups")
    wait_ready(page)
    _click_until(page.locator("#backup-create"), lambda: _grows(anchors, before))
    anchor = json.loads(anchors.read_text().splitlines()[-1])
    page.goto("/audit")
    wait_ready(page)
    first = page.locator("#audit-anchors .anchor-row").first
    expect(first).to_contain_text(anchor["hash"])
    expect(first).to_contain_text("备份后")
    page.locator("#audit-verify").click()
    expect(page.locator("#audit-verify-result")).to_contain_text("锚点均一致")
