"""Cleanup and backups in the browser: a dry run whose count matches the database, an archive
with typed confirmation (rows archived, audit entry written) and a verified backup."""

from __future__ import annotations

import json

from playwright.sync_api import expect

from tests.e2e.conftest import login

NO_CONTACT_SQL = ("SELECT count(*) FROM customer WHERE status='active' AND (phone IS NULL OR phone='') "
                  "AND (email IS NULL OR email='')")


def _click_until(locator, check, attempts: int = 3) -> None:
    """Click, and click again if the page was not hydrated yet and the click was lost."""
    for attempt in range(attempts):
        locator.click()
        try:
            check()
            return
        except AssertionError:
            if attempt == attempts - 1:
                raise


def _db(app_server):
    return app_server.sql()


def test_admin_archives_customers_without_contact_data(page, app_server):
    with _db(app_server) as db:
        db.execute("UPDATE customer SET phone=NULL, email=NULL WHERE id IN "
                   "(SELECT id FROM customer WHERE status='active' ORDER BY id DESC LIMIT 6)")
        expected = db.execute(NO_CONTACT_SQL).fetchone()[0]
        ids = [r[0] for r in db.execute(NO_CONTACT_SQL.replace("count(*)", "id"))]
    assert expected >= 6
    login(page, app_server, "admin", "/cleanup")
    _click_until(page.locator("#crit-no_contact"),
                 lambda: expect(page.locator("#crit-no_contact")).to_have_attribute("data-state", "checked",
                                                                                    timeout=5_000))
    page.locator("#cleanup-dry-run").click()
    expect(page.locator("#cleanup-count")).to_contain_text(str(expected))
    expect(page.locator("#cleanup-sample")).to_contain_text("无联系方式")
    page.locator("#cleanup-confirm").fill(str(expected))
    page.locator("#cleanup-run").click()
    expect(page.locator("#cleanup-report")).to_contain_text("已完成", timeout=60_000)
    expect(page.locator("#cleanup-report")).to_contain_text("客户列表查询耗时")
    with _db(app_server) as db:
        statuses = {r[0] for r in db.execute(
            f"SELECT status FROM customer WHERE id IN ({','.join(map(str, ids))})")}
        entry = db.execute("SELECT details FROM audit_entry WHERE action='cleanup.archive' "
                           "ORDER BY id DESC LIMIT 1").fetchone()
    assert statuses == {"archived"}
    assert entry is not None and json.loads(entry[0])["processed"] == expected


def test_admin_creates_a_verified_backup(page, app_server):
    login(page, app_server, "admin", "/admin/backups")
    _click_until(page.locator("#backup-create"),
                 lambda: expect(page.locator("#backups-table .backup-integrity").first).to_have_text(
                     "ok", timeout=20_000))
    with _db(app_server) as db:
        row = db.execute("SELECT file_name, integrity, sha256 FROM backup ORDER BY id DESC LIMIT 1").fetchone()
    assert row is not None and row[1] == "ok" and len(row[2]) == 64
    expect(page.locator("#backups-table")).to_contain_text(row[0])
    assert (app_server.data_dir / "backups" / row[0]).is_file()


def test_agent_requests_erasure_from_the_detail_page(page, app_server):
    with _db(app_server) as db:
        customer_id = db.execute(
            "SELECT id FROM customer c WHERE status='active' AND NOT EXISTS "
            "(SELECT 1 FROM erasure_request r WHERE r.customer_id=c.id) ORDER BY id LIMIT 1").fetchone()[0]
    login(page, app_server, "agent", f"/customers/{customer_id}")
    _click_until(page.locator("#request-erasure"),
                 lambda: expect(page.locator("#erasure-reason")).to_be_visible(timeout=5_000))
    page.locator("#erasure-reason").fill("客户来电要求删除")
    page.locator("#erasure-submit").click()
    expect(page.get_by_text("已申请删除个人数据，等待执行")).to_be_visible()
    with _db(app_server) as db:
        row = db.execute("SELECT status, reason FROM erasure_request WHERE customer_id=?", (customer_id,)).fetchone()
    assert row == ("pending", "客户来电要求删除")


def test_admin_restores_from_archive_and_trash_and_empties_the_trash(page, app_server):
    with _db(app_server) as db:
        ids = [r[0] for r in db.execute("SELECT id FROM customer WHERE status='active' ORDER BY id LIMIT 3")]
        db.execute(f"UPDATE customer SET status='archived', archived_at='2026-11-01 00:00:00.000000' "
                   f"WHERE id={ids[0]}")
        db.execute(f"UPDATE customer SET status='trashed', trashed_at='2026-11-20 00:00:00.000000' "
                   f"WHERE id IN ({ids[1]}, {ids[2]})")
    login(page, app_server, "admin", "/cleanup/archive")
    _click_until(page.locator(f"#restore-{ids[0]}"),
                 lambda: expect(page.locator(f"#restore-{ids[0]}")).to_have_count(0, timeout=5_000))
    page.get_by_role("radio", name="回收站").click()
    page.locator(f"#restore-{ids[1]}").click()
    expect(page.locator(f"#restore-{ids[1]}")).to_have_count(0)
    with _db(app_server) as db:
        trashed = db.execute("SELECT count(*) FROM customer WHERE status='trashed'").fetchone()[0]
    page.locator("#purge-confirm").fill(str(trashed))
    page.locator("#empty-trash").click()
    expect(page.locator("#purge-message")).to_contain_text("已永久删除", timeout=60_000)
    with _db(app_server) as db:
        assert db.execute(f"SELECT status FROM customer WHERE id={ids[0]}").fetchone()[0] == "active"
        assert db.execute(f"SELECT status FROM customer WHERE id={ids[1]}").fetchone()[0] == "active"
        assert db.execute(f"SELECT count(*) FROM customer WHERE id={ids[2]}").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM backup WHERE kind='pre_purge'").fetchone()[0] >= 1
