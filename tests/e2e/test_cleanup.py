"""Cleanup and backups in the browser: a dry run whose count matches the database, an archive
with typed confirmation (rows archived, audit entry written) and a verified backup."""

from __future__ import annotations

import json
import sqlite3

from playwright.sync_api import expect

from tests.e2e.conftest import login

NO_CONTACT_SQL = ("SELECT count(*) FROM customer WHERE status='active' AND (phone IS NULL OR phone='') "
                  "AND (email IS NULL OR email='')")


def _db(app_server):
    return sqlite3.connect(app_server.db_path(), timeout=30)


def test_admin_archives_customers_without_contact_data(page, app_server):
    with _db(app_server) as db:
        db.execute("UPDATE customer SET phone=NULL, email=NULL WHERE id IN "
                   "(SELECT id FROM customer WHERE status='active' ORDER BY id DESC LIMIT 6)")
        expected = db.execute(NO_CONTACT_SQL).fetchone()[0]
        ids = [r[0] for r in db.execute(NO_CONTACT_SQL.replace("count(*)", "id"))]
    assert expected >= 6
    login(page, app_server, "admin", "/cleanup")
    page.locator("#crit-no_contact").click()
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
    page.locator("#backup-create").click()
    expect(page.locator("#backups-table .backup-integrity").first).to_have_text("ok", timeout=60_000)
    with _db(app_server) as db:
        row = db.execute("SELECT file_name, integrity, sha256 FROM backup ORDER BY id DESC LIMIT 1").fetchone()
    assert row is not None and row[1] == "ok" and len(row[2]) == 64
    expect(page.locator("#backups-table")).to_contain_text(row[0])
    assert (app_server.data_dir / "backups" / row[0]).is_file()
