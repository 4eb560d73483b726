"""Importing a CSV in the browser: mapping, check, import, and what landed in the database."""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import login


@pytest.mark.pg
def test_manager_checks_and_imports_a_csv(page, app_server, tmp_path):
    with app_server.sql() as db:
        existing_phone = db.execute("SELECT phone FROM customer WHERE phone LIKE '1__________' LIMIT 1").fetchone()[0]
        taken = {row[0] for row in db.execute("SELECT phone FROM customer WHERE phone IS NOT NULL")}
    rng = random.Random(5)
    fresh = []
    while len(fresh) < 2:
        phone = f"139{rng.randrange(10**8):08d}"
        if phone not in taken and phone not in fresh:
            fresh.append(phone)
    csv_file = tmp_path / "新客户.csv"
    csv_file.write_text(
        "姓名,手机号码,邮箱,城市\n"
        f"导入甲,{fresh[0]},jia@example.com,杭州\n"
        f"导入乙,{fresh[1]},,苏州\n"
        "导入丙,12345,,南京\n"
        f"导入丁,{existing_phone},,上海\n",
        encoding="utf-8-sig",
    )
    login(page, app_server, "manager")
    page.goto("/import")
    page.locator("#import-upload input[type=file]").set_input_files(str(csv_file))
    page.locator("#import-upload-submit").click()
    expect(page.locator(".mapping-row")).to_have_count(4)
    # The headers were recognised: 手机号码 → phone.
    expect(page.get_by_role("combobox", name="“手机号码”对应的字段")).to_contain_text("电话")
    # The server does not keep the file's headers and sample values (customers' data):
    # a reload reads them again from the uploaded file.
    page.reload()
    expect(page.locator(".mapping-row")).to_have_count(4)
    expect(page.locator("#import-mapping")).to_contain_text(fresh[0])
    expect(page.get_by_role("combobox", name="“手机号码”对应的字段")).to_contain_text("电话")

    page.locator("#import-dry-run").click()
    expect(page.locator("#import-total")).to_have_text("4")
    expect(page.locator("#import-valid")).to_have_text("2")
    expect(page.locator("#import-invalid")).to_have_text("1")
    expect(page.locator("#import-duplicates")).to_have_text("1")
    expect(page.locator("#import-problems")).to_contain_text("手机号码无效")
    with page.expect_download() as download_info:
        page.locator("#import-error-report").click()
    report_rows = list(csv.reader(io.StringIO(Path(download_info.value.path()).read_text(encoding="utf-8-sig"))))
    bad = [row for row in report_rows if "导入丙" in row]
    assert len(bad) == 1 and any("手机号码无效" in cell for cell in bad[0]), report_rows
    with app_server.sql() as db:
        assert db.execute("SELECT count(*) FROM customer WHERE name LIKE '导入%'").fetchone()[0] == 0

    page.locator("#import-run-after-check").click()
    expect(page.locator("#import-inserted")).to_have_text("2")
    with app_server.sql() as db:
        rows = dict(db.execute("SELECT name, phone FROM customer WHERE name LIKE '导入%'").fetchall())
        audit = db.execute(
            "SELECT actor_name, details FROM audit_entry WHERE action = 'customer.import' ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert rows == {"导入甲": fresh[0], "导入乙": fresh[1]}
    assert audit[0] == "manager" and '"inserted": 2' in audit[1]


def test_a_long_check_shows_its_progress_and_stops_when_asked(page, app_server, tmp_path):
    """The check runs as a job: the page follows its progress, and Stop ends it after the current batch."""
    csv_file = tmp_path / "many.csv"
    with csv_file.open("w", encoding="utf-8") as handle:
        handle.write("姓名,手机号码,城市\n")
        for n in range(200_000):
            handle.write(f"客户{n},1{n % 10}{n:09d},杭州\n")
    login(page, app_server, "manager")
    page.goto("/import")
    page.locator("#import-upload input[type=file]").set_input_files(str(csv_file))
    page.locator("#import-upload-submit").click()
    expect(page.locator(".mapping-row")).to_have_count(3)
    page.locator("#import-dry-run").click()
    expect(page.locator("#import-progress")).to_be_visible()
    page.locator("#import-cancel").click()
    expect(page.locator("#import-error")).to_contain_text("已停止检查")
    expect(page.locator("#import-dry-run")).to_be_visible()  # back at the mapping: the person may start again
    with app_server.sql() as db:
        status = db.execute(
            "SELECT status, processed FROM job WHERE kind = 'customer.import_check' ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert status[0] == "cancelled" and status[1] < 200_000
