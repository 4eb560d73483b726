"""Cleanup and backups in the browser (issue 6 acceptance).

- The wizard for "inactive > 12 months": count equal to a direct SQL count,
  archive, the list no longer shows them, restore one, move 10 to the trash
  from the list, restore 5, empty the trash, and the backup taken before the
  purge restores them all (restored into a copy with the app's own restore).
- Erasure: requested by an agent on the detail page, executed by an admin in
  the wizard; afterwards no table (every text column of every table) and no
  export file contains the customer's name, phone or e-mail, nor (SQLite) the
  bytes of the database file.
- A manual, verified backup.

Checks go through ``app_server.sql()`` so the file also runs under ``make test-pg``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import login
from tests.e2e.harness import ROOT, _pg_create_database, _PostgresChecks, wait_ready


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


def test_admin_creates_a_verified_backup(page, app_server):
    login(page, app_server, "admin", "/admin/backups")
    _click_until(
        page.locator("#backup-create"),
        lambda: expect(page.locator("#backups-table .backup-integrity").first).to_have_text("ok", timeout=20_000),
    )
    with _db(app_server) as db:
        row = db.execute("SELECT file_name, integrity, sha256 FROM backup ORDER BY id DESC LIMIT 1").fetchone()
    assert row is not None and row[1] == "ok" and len(row[2]) == 64
    expect(page.locator("#backups-table")).to_contain_text(row[0])
    assert (app_server.data_dir / "backups" / row[0]).is_file()


def _is_pg(app_server) -> bool:
    return app_server.env.get("DATABASE_URL", "").startswith("postgresql")


def _timestamp(app_server, value: dt.datetime) -> str:
    """A UTC timestamp parameter both engines compare with their stored values."""
    text = value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return text + "+00:00" if _is_pg(app_server) else text


def _months_ago(now: dt.datetime, months: int) -> dt.datetime:
    from meiqia_app.services.cleanup.criteria import _months_ago as months_ago

    return months_ago(now, months)


def _choose(page, trigger: str, option: str) -> None:
    page.locator(trigger).click()
    page.get_by_role("option", name=option, exact=True).click()
    expect(page.locator(trigger)).to_contain_text(option)


def _search_shows(page, text: str, customer_id: int, shown: bool) -> None:
    page.get_by_role("searchbox").fill(text)
    row = page.locator(f"#customer-table .customer-row[data-customer-id='{customer_id}']")
    if shown:
        expect(row).to_have_count(1)
    else:
        expect(page.locator("#customers-empty")).to_be_visible()
        expect(row).to_have_count(0)


def _restore_into_copy(app_server, backup_file: Path, copy_dir: Path):
    """Restore ``backup_file`` with the app's own CLI into a fresh copy; a DB-API connection to the copy."""
    copy_dir.mkdir(parents=True, exist_ok=True)
    for name in ("secret.key",):
        if (app_server.data_dir / name).exists():
            (copy_dir / name).write_bytes((app_server.data_dir / name).read_bytes())
    env = {**app_server.env, "MEIQIA_DATA_DIR": str(copy_dir), "MEIQIA_SCHEDULER": "off"}
    if _is_pg(app_server):
        server, _, _ = app_server.env["DATABASE_URL"].rpartition("/")
        database = f"e2e_restore_{os.getpid()}_{int(time.time())}"
        _pg_create_database(server, database)
        env["DATABASE_URL"] = f"{server}/{database}"
    for args in (["migrate"], ["restore", str(backup_file), "--yes"]):
        done = subprocess.run(
            [sys.executable, "-m", "meiqia_app", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stdout + done.stderr
    if _is_pg(app_server):
        return _PostgresChecks(env["DATABASE_URL"])
    return sqlite3.connect(copy_dir / "meiqia.db", timeout=30)


@pytest.mark.pg
def test_acceptance_inactive_archive_restore_trash_purge_and_the_backup_restores_them(page, app_server, tmp_path):
    cutoff = _timestamp(app_server, _months_ago(dt.datetime.now(dt.UTC), 12))
    with _db(app_server) as db:
        inactive = [
            r[0]
            for r in db.execute(
                "SELECT id FROM customer WHERE status='active' AND last_active_at < ? ORDER BY id", (cutoff,)
            )
        ]
        phones = dict(
            db.execute(
                f"SELECT id, phone FROM customer WHERE id IN ({','.join(map(str, inactive))}) "
                "AND phone IS NOT NULL AND length(phone) = 11"
            ).fetchall()
        )
    assert len(inactive) >= 2 and len(phones) >= 2
    # 1. The wizard: inactive > 12 months, the dry run's count is the SQL count.
    login(page, app_server, "admin", "/cleanup")
    _choose(page, "#crit-inactive", "超过 12 个月")
    page.locator("#cleanup-dry-run").click()
    expect(page.locator("#cleanup-count")).to_contain_text(str(len(inactive)))
    expect(page.locator("#cleanup-sample")).to_contain_text("长期不活跃")
    page.locator("#cleanup-confirm").fill(str(len(inactive) + 1))
    expect(page.locator("#cleanup-run")).to_be_disabled()  # only the exact count lets it run
    page.locator("#cleanup-confirm").fill(str(len(inactive)))
    page.locator("#cleanup-run").click()
    expect(page.locator("#cleanup-report")).to_contain_text("已完成", timeout=60_000)
    expect(page.locator("#cleanup-report")).to_contain_text("客户列表查询耗时")
    with _db(app_server) as db:
        statuses = {
            r[0] for r in db.execute(f"SELECT status FROM customer WHERE id IN ({','.join(map(str, inactive))})")
        }
        entry = db.execute(
            "SELECT details FROM audit_entry WHERE action='cleanup.archive' ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert statuses == {"archived"}
    assert entry is not None and json.loads(entry[0])["processed"] == len(inactive)
    # 2. The list no longer shows them.
    restored_id, kept_id = list(phones)[:2]
    page.goto("/customers")
    wait_ready(page)
    _search_shows(page, phones[kept_id], kept_id, shown=False)
    # 3. Restore one from the archive: it is back in the list.
    page.goto("/cleanup/archive")
    wait_ready(page)
    page.locator(f"#restore-{restored_id}").click()
    expect(page.locator(f"#restore-{restored_id}")).to_have_count(0)
    page.goto("/customers")
    wait_ready(page)
    _search_shows(page, phones[restored_id], restored_id, shown=True)
    # 4. Move 10 to the trash from the list (ticked rows, typed count).
    page.get_by_role("searchbox").fill("")
    rows = page.locator("#customer-table .customer-row")
    expect(rows.nth(10)).to_be_visible()
    trashed = [int(rows.nth(i).get_attribute("data-customer-id")) for i in range(10)]
    for i in range(10):
        rows.nth(i).locator(".row-select").click()
    page.locator("#bulk-trash").click()
    page.locator("#status-confirm").fill("10")
    page.locator("#status-confirm-submit").click()
    expect(page.get_by_text("已将 10 位客户移到回收站")).to_be_visible(timeout=60_000)
    with _db(app_server) as db:
        assert (
            db.execute(
                f"SELECT count(*) FROM customer WHERE status='trashed' AND id IN ({','.join(map(str, trashed))})"
            ).fetchone()[0]
            == 10
        )
    # 5. Restore 5 of them from the trash.
    page.goto("/cleanup/archive")
    wait_ready(page)
    page.get_by_role("radio", name="回收站").click()
    for customer_id in trashed[:5]:
        page.locator(f"#restore-{customer_id}").click()
        expect(page.locator(f"#restore-{customer_id}")).to_have_count(0)
    purged = trashed[5:]
    with _db(app_server) as db:
        back = {
            r[0] for r in db.execute(f"SELECT status FROM customer WHERE id IN ({','.join(map(str, trashed[:5]))})")
        }
        in_trash = db.execute("SELECT count(*) FROM customer WHERE status='trashed'").fetchone()[0]
    assert back == {"active"} and in_trash >= 5
    # 6. Empty the trash (typed count); an automatic backup is taken first.
    page.locator("#purge-confirm").fill(str(in_trash))
    page.locator("#empty-trash").click()
    expect(page.locator("#purge-message")).to_contain_text("已永久删除", timeout=120_000)
    with _db(app_server) as db:
        assert (
            db.execute(f"SELECT count(*) FROM customer WHERE id IN ({','.join(map(str, purged))})").fetchone()[0] == 0
        )
        assert (
            db.execute(
                f"SELECT count(*) FROM customer_order WHERE customer_id IN ({','.join(map(str, purged))})"
            ).fetchone()[0]
            == 0
        )
        details = json.loads(
            db.execute(
                "SELECT details FROM audit_entry WHERE action='cleanup.purge' ORDER BY id DESC LIMIT 1"
            ).fetchone()[0]
        )
        kind = db.execute("SELECT kind FROM backup WHERE file_name=?", (details["backup"],)).fetchone()
    assert details["backup"] and kind == ("pre_purge",)
    expect(page.locator("#purge-message")).to_contain_text(details["backup"])
    # 7. The backup taken before the purge, restored into a copy, holds them all.
    with _restore_into_copy(
        app_server, app_server.data_dir / "backups" / details["backup"], tmp_path / "restored"
    ) as copy:
        rows = copy.execute(f"SELECT id, status FROM customer WHERE id IN ({','.join(map(str, purged))})").fetchall()
        orders = copy.execute(
            f"SELECT count(*) FROM customer_order WHERE customer_id IN ({','.join(map(str, purged))})"
        ).fetchone()[0]
    assert sorted(rows) == [(customer_id, "trashed") for customer_id in sorted(purged)]
    assert orders >= 0


ERASED = {"name": "厉测删", "phone": "13987650123", "email": "erase.me.e2e@example.net"}


def _text_columns(db, pg: bool) -> list[tuple[str, str]]:
    if pg:
        return [
            tuple(r)
            for r in db.execute(
                "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema='public' "
                "AND data_type IN ('text', 'character varying')"
            ).fetchall()
        ]
    columns = []
    tables = [
        r[0]
        for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type='table' "
            "AND name NOT LIKE 'sqlite_%' AND sql NOT LIKE 'CREATE VIRTUAL%'"
        )
    ]
    for table in tables:
        for row in db.execute(f"PRAGMA table_info('{table}')"):
            columns.append((table, row[1]))
    return columns


def _tables_holding(app_server, values) -> list[tuple[str, str, str]]:
    hits = []
    with _db(app_server) as db:
        for table, column in _text_columns(db, _is_pg(app_server)):
            for value in values:
                count = db.execute(
                    f'SELECT count(*) FROM "{table}" WHERE CAST("{column}" AS TEXT) LIKE ?', (f"%{value}%",)
                ).fetchone()[0]
                if count:
                    hits.append((table, column, value))
    return hits


@pytest.mark.pg
def test_erased_customer_is_in_no_table_and_no_export_file(page, app_server, browser):
    with _db(app_server) as db:
        customer_id = db.execute(
            "SELECT c.id FROM customer c WHERE status='active' AND email IS NOT NULL AND NOT EXISTS "
            "(SELECT 1 FROM erasure_request r WHERE r.customer_id=c.id) AND EXISTS "
            "(SELECT 1 FROM customer_order o WHERE o.customer_id=c.id) ORDER BY id LIMIT 1"
        ).fetchone()[0]
        # Values found nowhere else, so "no table holds them" is a sharp check.
        db.execute(
            "UPDATE customer SET name=?, phone=?, email=? WHERE id=?",
            (ERASED["name"], ERASED["phone"], ERASED["email"], customer_id),
        )
        db.execute(
            "UPDATE customer_search SET text=? WHERE customer_id=?",
            (f"{ERASED['name']} {ERASED['phone']} {ERASED['email']}", customer_id),
        )
        db.execute(
            "UPDATE customer_order SET recipient_name=?, recipient_phone=? WHERE customer_id=?",
            (ERASED["name"], ERASED["phone"], customer_id),
        )
        if not _is_pg(app_server):
            db.commit()
        pending_before = db.execute(
            "SELECT count(DISTINCT r.customer_id) FROM erasure_request r JOIN customer c "
            "ON c.id=r.customer_id WHERE r.status='pending' AND c.status='active'"
        ).fetchone()[0]
    # An export made before the erasure (all active customers) holds the customer.
    # Not filtered by the customer's phone: a typed search is kept in export_job.scope and
    # in the hash-chained audit entry, which erasure does not rewrite (see the report).
    login(page, app_server, "admin", "/customers")
    page.get_by_role("link", name="数据导出").click()
    page.wait_for_url("**/export")
    wait_ready(page)
    for step in (2, 3, 4):  # one step at a time: a click before the step shows is lost
        page.locator("#export-next").click()
        expect(page.locator(f"#export-step-{step}")).to_have_class(re.compile(r"rt-variant-solid"))
    page.locator("#export-run").click()
    expect(page.locator("#export-download")).to_be_visible(timeout=60_000)
    exports = app_server.data_dir / "exports"
    assert any(ERASED["name"].encode() in f.read_bytes() for f in exports.iterdir() if f.is_file())
    # The agent files the request on the detail page.
    agent_context = browser.new_context(
        base_url=app_server.url, locale="zh-CN", viewport={"width": 1400, "height": 900}
    )
    agent_context.set_default_timeout(20_000)
    agent = agent_context.new_page()
    try:
        login(agent, app_server, "agent", f"/customers/{customer_id}")
        agent.locator("#request-erasure").click()
        expect(agent.locator("#erasure-reason")).to_be_visible()
        agent.locator("#erasure-reason").fill("客户来电要求删除")
        agent.locator("#erasure-submit").click()
        expect(agent.get_by_text("已申请删除个人数据，等待执行")).to_be_visible()
    finally:
        agent_context.close()
    with _db(app_server) as db:
        row = db.execute("SELECT status, reason FROM erasure_request WHERE customer_id=?", (customer_id,)).fetchone()
    assert tuple(row) == ("pending", "客户来电要求删除")
    # The admin executes the pending requests in the wizard.
    page.goto("/cleanup")
    wait_ready(page)
    page.locator("#crit-erasure_pending").click()
    expect(page.locator("#crit-erasure_pending")).to_have_attribute("data-state", "checked")
    _choose(page, "#cleanup-action", "删除个人数据（不可恢复）")
    page.locator("#cleanup-dry-run").click()
    expect(page.locator("#cleanup-count")).to_contain_text(str(pending_before + 1))
    page.locator("#cleanup-confirm").fill(str(pending_before + 1))
    page.locator("#cleanup-run").click()
    expect(page.locator("#cleanup-report")).to_contain_text("已完成", timeout=60_000)
    with _db(app_server) as db:
        assert (
            db.execute("SELECT status FROM erasure_request WHERE customer_id=?", (customer_id,)).fetchone()[0] == "done"
        )
        assert (
            db.execute("SELECT count(*) FROM customer_order WHERE customer_id=?", (customer_id,)).fetchone()[0] >= 1
        )  # orders (aggregates) stay, anonymous
    # No table, no export file, and (SQLite) not the database file holds the values.
    assert _tables_holding(app_server, ERASED.values()) == []
    for path in exports.iterdir():
        if path.is_file():
            data = path.read_bytes()
            assert not any(value.encode() in data for value in ERASED.values()), path.name
    if not _is_pg(app_server):
        for name in ("meiqia.db", "meiqia.db-wal"):
            path = app_server.data_dir / name
            if path.exists():
                data = path.read_bytes()
                assert not [v for v in ERASED.values() if v.encode() in data], name
