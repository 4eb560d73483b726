"""Retention policies in the browser (/admin/retention, RET-1).

- An admin changes the export files' hours, sees the preview change, runs
  the policy (confirmation dialog) and the export's file is gone, its row
  expired, and both the change and the run are in the audit log.
- An admin previews the pool return (公海) with a period typed but not saved,
  switches it on, runs it: the silent customers are back in the pool, one
  audit entry for the run, the return on each customer's timeline.
- An agent opening /admin/retention is refused (and the refusal audited).
- At 390 px and 1440 px, in Chinese and English, nothing runs off the side
  and every control of the page has an accessible name.

Checks go through ``app_server.sql()`` so the file also runs under ``make test-pg``.
"""

from __future__ import annotations

import datetime as dt
import re
import time

from playwright.sync_api import expect

from tests.e2e.conftest import login


def _is_pg(app_server) -> bool:
    return app_server.env.get("DATABASE_URL", "").startswith("postgresql")


def _timestamp(app_server, value: dt.datetime) -> str:
    text = value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return text + "+00:00" if _is_pg(app_server) else text


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


def _add_old_export(app_server, name: str, size: int) -> int:
    """An export that finished 3 hours ago and may still be downloaded for 21 hours (24 h policy)."""
    folder = app_server.data_dir / "exports"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(b"e" * size)
    now = dt.datetime.now(dt.UTC)
    with app_server.sql() as db:
        admin_id = db.execute("SELECT id FROM app_user WHERE username = 'admin'").fetchone()[0]
        db.execute(
            "INSERT INTO export_job (requested_by_id, requested_by_name, status, kind, purpose, scope, fields, sort, "
            "format, protected, row_estimate, row_count, progress_done, file_name, file_size, created_at, "
            "finished_at, expires_at, cancel_requested) "
            "VALUES (?, 'admin', 'done', 'customers', 'analysis', '{}', '[]', '{}', 'csv', ?, 1, 1, 1, ?, ?, ?, ?, ?, ?)",
            (
                admin_id,
                False,
                name,
                size,
                _timestamp(app_server, now - dt.timedelta(hours=3)),
                _timestamp(app_server, now - dt.timedelta(hours=3)),
                _timestamp(app_server, now + dt.timedelta(hours=21)),
                False,
            ),
        )
        if not _is_pg(app_server):
            db.commit()
        return db.execute("SELECT id FROM export_job WHERE file_name = ?", (name,)).fetchone()[0]


def _due_exports(app_server, hours: int) -> int:
    now = dt.datetime.now(dt.UTC)
    with app_server.sql() as db:
        return db.execute(
            "SELECT count(*) FROM export_job WHERE status = 'done' AND (expires_at <= ? OR finished_at <= ?)",
            (_timestamp(app_server, now), _timestamp(app_server, now - dt.timedelta(hours=hours))),
        ).fetchone()[0]


def test_admin_changes_export_hours_previews_and_runs_the_policy(page, app_server):
    export_id = _add_old_export(app_server, "retention-e2e.csv", 2048)
    login(page, app_server, "admin", "/admin/retention")
    card = page.locator("#retention-policy-export_files")
    expect(card).to_be_visible()
    expect(page.locator("#retention-value-export_files")).to_have_value("24")
    # A bad number is refused next to the field, nothing saved.
    page.locator("#retention-value-export_files").fill("0")
    page.locator("#retention-save-export_files").click()
    expect(page.locator("#retention-value-export_files-error")).to_contain_text("请输入 1 到 8760 之间的整数")
    # 24 h -> 1 h: the 3-hour-old export is due now; the preview says so.
    page.locator("#retention-value-export_files").fill("1")
    page.locator("#retention-save-export_files").click()
    due = _due_exports(app_server, 1)
    assert due >= 1
    expect(page.locator("#retention-preview-export_files")).to_contain_text(f"下次运行将删除 {due} 个导出文件")
    # The preview names the first five due files (oldest first): this one when earlier tests left fewer.
    sample = page.locator("#retention-sample-export_files li")
    expect(sample).to_have_count(min(due, 5))
    if due <= 5:
        expect(page.locator("#retention-sample-export_files")).to_contain_text("retention-e2e.csv")
    # Run now: a confirmation dialog, then the run's outcome on the card.
    page.locator("#retention-run-export_files").click()
    expect(page.locator("#retention-dialog")).to_contain_text(f"下次运行将删除 {due} 个导出文件")
    page.locator("#retention-confirm-run").click()
    expect(page.locator("#retention-result-export_files")).to_contain_text("已完成", timeout=20_000)
    expect(page.locator("#retention-preview-export_files")).to_contain_text("下次运行将删除 0 个导出文件")
    assert not (app_server.data_dir / "exports" / "retention-e2e.csv").exists()
    with app_server.sql() as db:
        assert db.execute("SELECT status FROM export_job WHERE id = ?", (export_id,)).fetchone()[0] == "expired"
        stored = db.execute("SELECT value FROM app_setting WHERE key = 'retention.export_files'").fetchone()[0]
        changes = db.execute(
            "SELECT details FROM audit_entry WHERE action = 'retention.update' AND actor_name = 'admin' "
            "AND target_id = 'retention.export_files' AND result = 'ok'"
        ).fetchall()
        runs = db.execute(
            "SELECT details FROM audit_entry WHERE action = 'retention.run' AND actor_name = 'admin' "
            "AND target_id = 'export_files' AND result = 'ok'"
        ).fetchall()
        # Back to the default for the other tests of the run.
        db.execute("DELETE FROM app_setting WHERE key = 'retention.export_files'")
        if not _is_pg(app_server):
            db.commit()
    assert '"value": 1' in stored
    assert len(changes) == 1 and '"before": {"enabled": true, "keep": null, "value": 24}' in changes[0][0]
    assert len(runs) == 1 and f'"files": {due}' in runs[0][0] and '"trigger": "manual"' in runs[0][0]


def test_admin_previews_and_runs_the_pool_return(page, app_server):
    """Two of the demo agent's customers silent for 3,700 days (nobody else's is that old):
    with the longest period (3,650 days) the preview names exactly them before saving;
    switched on and run, they are in the pool, each with the return on its timeline, and
    the run is one audit entry. Afterwards they go back to the agent, the setting is removed."""
    long_ago = _timestamp(app_server, dt.datetime.now(dt.UTC) - dt.timedelta(days=3700))
    with app_server.sql() as db:
        agent_id = db.execute("SELECT id FROM app_user WHERE username = 'agent'").fetchone()[0]
        silent = [
            row[0]
            for row in db.execute(
                "SELECT id FROM customer WHERE status = 'active' AND erased_at IS NULL ORDER BY id DESC LIMIT 2"
            ).fetchall()
        ]
        before = {
            row[0]: row[1:]
            for row in db.execute(
                f"SELECT id, owner_id, last_active_at FROM customer WHERE id IN ({silent[0]}, {silent[1]})"
            ).fetchall()
        }
        for customer_id in silent:
            db.execute(
                "UPDATE customer SET owner_id = ?, last_active_at = ? WHERE id = ?", (agent_id, long_ago, customer_id)
            )
        if not _is_pg(app_server):
            db.commit()
    try:
        login(page, app_server, "admin", "/admin/retention")
        card = page.locator("#retention-policy-pool_return")
        expect(card.locator("#retention-title-pool_return")).to_have_text("长期未联系的客户退回公海")
        expect(page.locator("#retention-enabled-pool_return")).not_to_be_checked()  # off by default
        expect(page.locator("#retention-value-pool_return")).to_have_value("30")
        # A period out of range is refused next to the field.
        page.locator("#retention-value-pool_return").fill("3651")
        page.locator("#retention-preview-button-pool_return").click()
        expect(page.locator("#retention-value-pool_return-error")).to_contain_text("请输入 1 到 3650 之间的整数")
        # Preview before saving: the two silent customers, by id.
        page.locator("#retention-value-pool_return").fill("3650")
        page.locator("#retention-preview-button-pool_return").click()
        expect(page.locator("#retention-preview-pool_return")).to_have_text("下次运行将把 2 位客户退回公海。")
        expect(card).to_contain_text("这是按输入的期限预览的结果，尚未保存。")
        sample = page.locator("#retention-sample-pool_return li")
        expect(sample).to_have_count(2)
        for customer_id in silent:
            expect(page.locator("#retention-sample-pool_return")).to_contain_text(f"#{customer_id} · 客服小美 · ")
        with app_server.sql() as db:
            assert db.execute("SELECT count(*) FROM app_setting WHERE key = 'retention.pool_return'").fetchone()[0] == 0
        # Switch on, save, run now.
        _click_until(
            page.locator("#retention-enabled-pool_return"),
            lambda: expect(page.locator("#retention-enabled-pool_return")).to_be_checked(timeout=5_000),
        )
        page.locator("#retention-save-pool_return").click()
        expect(card).not_to_contain_text("尚未保存")
        page.locator("#retention-run-pool_return").click()
        expect(page.locator("#retention-dialog")).to_contain_text("下次运行将把 2 位客户退回公海。")
        page.locator("#retention-confirm-run").click()
        expect(page.locator("#retention-result-pool_return")).to_contain_text("已完成", timeout=20_000)
        expect(page.locator("#retention-preview-pool_return")).to_have_text("下次运行将把 0 位客户退回公海。")
        with app_server.sql() as db:
            owners = db.execute(f"SELECT owner_id FROM customer WHERE id IN ({silent[0]}, {silent[1]})").fetchall()
            returns = db.execute(
                f"SELECT customer_id, old_owner_id, actor_name FROM owner_change WHERE action = 'return' "
                f"AND customer_id IN ({silent[0]}, {silent[1]}) ORDER BY customer_id"
            ).fetchall()
            runs = db.execute(
                "SELECT details FROM audit_entry WHERE action = 'retention.run' AND target_id = 'pool_return'"
            ).fetchall()
        assert owners == [(None,), (None,)]
        assert [tuple(r) for r in returns] == [(i, agent_id, "系统管理员") for i in sorted(silent)]
        assert len(runs) == 1 and '"customers": 2' in runs[0][0]
        # The customer's timeline says so.
        page.goto(f"/customers/{silent[0]}")
        expect(page.get_by_text("长期未联系，客服小美 的客户退回公海").first).to_be_visible()
    finally:
        with app_server.sql() as db:
            for customer_id, (owner_id, last_active_at) in before.items():
                db.execute(
                    "UPDATE customer SET owner_id = ?, last_active_at = ? WHERE id = ?",
                    (owner_id, last_active_at, customer_id),
                )
            db.execute("DELETE FROM app_setting WHERE key = 'retention.pool_return'")
            if not _is_pg(app_server):
                db.commit()


def test_agent_is_refused_the_retention_page(page, app_server):
    login(page, app_server, "agent")
    expect(page.locator("#nav-admin-retention")).to_have_count(0)
    page.goto("/admin/retention")
    expect(page.locator("#no-access")).to_contain_text("没有访问权限")
    expect(page.locator(".retention-policy")).to_have_count(0)
    # The refusal is written by the page load's event, which may end just after the page shows.
    deadline = time.monotonic() + 10
    while True:
        with app_server.sql() as db:
            refused = db.execute(
                "SELECT count(*) FROM audit_entry WHERE actor_name = 'agent' "
                "AND action = 'page.open' AND target_id = '/admin/retention' AND result = 'refused'"
            ).fetchone()[0]
        if refused or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert refused >= 1


# Every input, button and switch in the page's main area: its accessible name (aria-labelledby,
# aria-label, a <label for>, or its text) must not be empty.
UNNAMED_CONTROLS = """
() => {
  const nameOf = (el) => {
    const by = el.getAttribute('aria-labelledby');
    if (by) return by.split(/\\s+/).map(id => document.getElementById(id)?.textContent || '').join(' ').trim();
    if (el.getAttribute('aria-label')) return el.getAttribute('aria-label').trim();
    if (el.labels && el.labels.length) return Array.from(el.labels).map(l => l.textContent).join(' ').trim();
    return (el.textContent || '').trim();
  };
  return Array.from(document.querySelectorAll('#main input, #main button, #main [role=switch]'))
    .filter(el => !nameOf(el)).map(el => el.id || el.outerHTML.slice(0, 80));
}
"""


def test_retention_page_fits_and_names_every_control_at_390_and_1440(browser, app_server):
    for width, lang in ((390, "zh"), (390, "en"), (1440, "en"), (1440, "zh")):
        context = browser.new_context(base_url=app_server.url, locale="zh-CN", viewport={"width": width, "height": 900})
        context.set_default_timeout(20_000)
        page = context.new_page()
        try:
            login(page, app_server, "admin", "/admin/retention")
            if lang == "en":
                _click_until(
                    page.locator("#lang-switch"),
                    lambda p=page: expect(p.locator("h1")).to_have_text("Retention", timeout=5_000),
                )
                expect(page.locator("#retention-title-trash_purge")).to_have_text("Purge the trash")
            else:
                expect(page.locator("h1")).to_have_text("数据保留")
            # one card per built-in policy (tests/unit/test_retention.py BUILT_IN)
            expect(page.locator(".retention-policy")).to_have_count(8)
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{width}px {lang}: {overflow}px wider than the window"
            assert page.evaluate(UNNAMED_CONTROLS) == [], f"{width}px {lang}"
            name = "Purge the trash Enabled" if lang == "en" else "清空回收站 启用"
            expect(page.get_by_role("switch", name=name)).to_have_count(1)
            field = re.compile(r"^(Delete old backups Period \(days\)|删除旧备份 期限（天）)$")
            expect(page.get_by_role("spinbutton", name=field)).to_have_count(1)
        finally:
            context.close()
