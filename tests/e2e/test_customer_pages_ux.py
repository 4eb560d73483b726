"""The customer pages' defects a user reported, checked in the browser: the
duplicate warning of the new-customer dialog (5), the merge dialog and the
read-only merged-away customer (11), the list count after a bulk archive
(15), the per-customer export on the detail page (18), recording an
unsubscribe (19), the tag input and the first sort click (24); Chinese and
English, and the detail page at 390 and 1440 px."""

from __future__ import annotations

import io
import json
import re
import zipfile

import pyzipper
from playwright.sync_api import expect

from meiqia_app.services.customers.validation import normalize_phone
from tests.e2e.conftest import login
from tests.e2e.test_retention import _click_until


def _db(app_server):
    return app_server.sql()


def _to_english(page) -> None:
    _click_until(
        page.locator("#lang-switch"),
        lambda: expect(page.locator("#lang-switch")).to_have_text("中文", timeout=5_000),
    )


def _customer_with_valid_phone(app_server) -> tuple[int, str, str]:
    with _db(app_server) as db:
        found = db.execute(
            "SELECT id, phone, name FROM customer WHERE status = 'active' AND erased_at IS NULL AND phone IS NOT NULL ORDER BY id DESC"
        ).fetchall()
    for customer_id, phone, name in found:
        try:
            if normalize_phone(phone) == phone:
                return customer_id, phone, name
        except ValueError:
            continue
    raise AssertionError("no customer with a valid phone")


def _open_customer(page, customer_id: int) -> None:
    page.goto(f"/customers/{customer_id}")
    expect(page.locator("#customer-name")).to_be_visible()


# --- 5 -----------------------------------------------------------------------------------------------


def test_new_customer_dialog_names_the_existing_customer_links_to_it_and_saves_anyway(page, app_server):
    existing_id, phone, name = _customer_with_valid_phone(app_server)
    login(page, app_server, "agent")
    page.locator("#new-customer").click()
    page.locator("#new-name").fill("重复电话的新客户")
    page.locator("#new-phone").fill(phone)
    page.locator("#new-customer-save").click()
    warning = page.locator("#new-customer-duplicates")
    expect(warning).to_contain_text(f"电话与已有客户 {name}（#{existing_id}）相同")
    link = warning.locator(".duplicate-link")
    expect(link).to_have_attribute("href", f"/customers/{existing_id}")
    link.click()  # open the existing customer: the dialog closes, nothing is saved
    page.wait_for_function("p => location.pathname === p", arg=f"/customers/{existing_id}")
    expect(page.locator("#customer-name")).to_have_text(name)
    with _db(app_server) as db:
        assert db.execute("SELECT count(*) FROM customer WHERE name = '重复电话的新客户'").fetchone()[0] == 0

    page.goto("/customers")
    page.locator("#new-customer").click()
    page.locator("#new-name").fill("重复电话的新客户")
    page.locator("#new-phone").fill(phone)
    page.locator("#new-customer-save").click()
    expect(page.locator("#new-customer-duplicates")).to_contain_text(name)
    page.locator("#new-customer-save-anyway").click()  # save anyway
    page.wait_for_function("() => /^\\/customers\\/\\d+/.test(window.location.pathname)")
    new_id = int(page.evaluate("window.location.pathname").rstrip("/").split("/")[-1])
    assert new_id != existing_id
    with _db(app_server) as db:
        row = db.execute("SELECT name, phone FROM customer WHERE id = ?", (new_id,)).fetchone()
        details = db.execute(
            "SELECT details FROM audit_entry WHERE action = 'customer.create' AND target_id = ?", (str(new_id),)
        ).fetchone()[0]
    assert row == ("重复电话的新客户", phone)
    assert json.loads(details)["saved_despite_duplicates"] == [existing_id]


def test_the_duplicate_warning_in_english_for_an_external_id(page, app_server):
    with _db(app_server) as db:
        existing_id, external_id, name = db.execute(
            "SELECT id, external_id, name FROM customer WHERE status = 'active' AND erased_at IS NULL AND external_id IS NOT NULL "
            "ORDER BY id LIMIT 1"
        ).fetchone()
    login(page, app_server, "manager")
    _to_english(page)
    page.locator("#new-customer").click()
    page.locator("#new-name").fill("External twin")
    page.locator("#new-external_id").fill(external_id)
    page.locator("#new-customer-save").click()
    expect(page.locator("#new-customer-duplicates")).to_contain_text(
        f"External id matches existing customer {name} (#{existing_id})"
    )
    expect(page.locator("#new-customer-save-anyway")).to_have_text("Save anyway")


# --- 11 ----------------------------------------------------------------------------------------------

ZH_LABELS = {"姓名", "性别", "生日", "电话", "邮箱", "地址", "省份", "城市", "公司", "来源渠道", "外部 ID", "访客 ID"}
ZH_LABELS |= {"生命周期", "会员等级"}
EN_LABELS = {"Name", "Gender", "Birthday", "Phone", "E-mail", "Address", "Province", "City", "Company"}
EN_LABELS |= {"Source channel", "External id", "Visitor id", "Lifecycle", "Tier"}


def test_merge_dialog_names_fields_and_counts_orders_like_the_profile_and_the_merged_away_customer_is_read_only(
    page, browser, app_server
):
    login(page, app_server, "manager", "/duplicates")
    group = page.locator(".dup-group").first
    expect(group).to_be_visible()
    hrefs = group.locator(".dup-member a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    ids = [int(re.search(r"(\d+)$", href).group(1)) for href in hrefs][:5]
    group.locator(".dup-merge").click()
    expect(page.locator(".merge-candidate")).to_have_count(len(ids))
    labels = page.locator(".merge-field-label").all_inner_texts()
    assert labels and set(labels) <= ZH_LABELS, labels
    with _db(app_server) as db:
        paid = {i: db.execute("SELECT order_count FROM customer WHERE id = ?", (i,)).fetchone()[0] for i in ids}
    for customer_id in ids:
        card = page.locator(".merge-candidate").filter(has_text=f"#{customer_id}")
        expect(card).to_contain_text(f"订单数（已付款）{paid[customer_id]}，")

    page.keyboard.press("Escape")
    _to_english(page)
    group.locator(".dup-merge").click()
    expect(page.locator(".merge-candidate")).to_have_count(len(ids))
    english = page.locator(".merge-field-label").all_inner_texts()
    assert english and set(english) <= EN_LABELS, english
    expect(page.locator(".merge-candidate").first).to_contain_text("Orders (paid)")
    page.locator("#confirm-merge").click()
    expect(page.get_by_text(re.compile(r"Merged \d+ customers into #"))).to_be_visible()

    with _db(app_server) as db:
        statuses = dict(db.execute(f"SELECT id, status FROM customer WHERE id IN ({','.join('?' * len(ids))})", ids))
        tiers = db.execute(
            "SELECT count(*) FROM tag_assignment a JOIN tag t ON t.id = a.tag_id WHERE a.customer_id = ? "
            "AND t.name IN ('普通会员', '银卡会员', '金卡会员')",
            ([i for i, s in statuses.items() if s != "trashed"][0],),
        ).fetchone()[0]
    loser = next(i for i, status in statuses.items() if status == "trashed")
    assert tiers <= 1  # rule tags recomputed on the survivor, not copied from everyone

    # The admin may open the trash: the merged-away customer is shown read-only.
    context = browser.new_context(base_url=app_server.url, locale="zh-CN", viewport={"width": 1440, "height": 900})
    context.set_default_timeout(20_000)
    admin = context.new_page()
    try:
        login(admin, app_server, "admin", f"/customers/{loser}")
        expect(admin.locator("#customer-name")).to_be_visible()
        expect(admin.locator("#customer-read-only")).to_contain_text("回收站")
        for control in ("#edit-customer", "#tag-input", "#note-text", "#note-add", "#consent-marketing-toggle"):
            expect(admin.locator(control)).to_have_count(0)
        expect(admin.locator("#customer-tags button")).to_have_count(0)  # no "remove tag" either
    finally:
        context.close()


# --- 15 ----------------------------------------------------------------------------------------------


def test_the_list_count_follows_a_bulk_archive(page, app_server):
    login(page, app_server, "manager")
    with _db(app_server) as db:
        active = db.execute("SELECT count(*) FROM customer WHERE status = 'active'").fetchone()[0]
    expect(page.locator("#match-count")).to_have_text(f"共 {active:,} 位客户")
    rows = page.locator("#customer-table .customer-row")
    for i in (4, 5):
        rows.nth(i).locator(".row-select").click()
    page.locator("#bulk-archive").click()
    page.locator("#status-confirm").fill("2")
    page.locator("#status-confirm-submit").click()
    expect(page.get_by_text("已归档 2 位客户")).to_be_visible()
    expect(page.locator("#match-count")).to_have_text(f"共 {active - 2:,} 位客户")


# --- 18 ----------------------------------------------------------------------------------------------


def test_the_customers_data_downloads_from_the_detail_page_and_holds_that_customer(page, app_server, tmp_path):
    customer_id, phone, name = _customer_with_valid_phone(app_server)
    with _db(app_server) as db:
        orders = db.execute("SELECT count(*) FROM customer_order WHERE customer_id = ?", (customer_id,)).fetchone()[0]
    login(page, app_server, "agent")  # an agent may not export (no export.request): no button
    _open_customer(page, customer_id)
    expect(page.locator("#portability-open")).to_have_count(0)

    login(page, app_server, "manager")
    _open_customer(page, customer_id)
    page.locator("#portability-open").click()
    page.locator("#portability-password").fill("Portable-2026!")
    with page.expect_download() as download_info:
        page.locator("#portability-submit").click()
    path = tmp_path / "customer.zip"
    download_info.value.save_as(path)
    expect(page).to_have_url(re.compile(f"/customers/{customer_id}$"))  # still on the customer
    with pyzipper.AESZipFile(path) as archive:
        archive.setpassword(b"Portable-2026!")
        data = json.loads(archive.read("customer.json"))
        assert "customer.xlsx" in archive.namelist()
    with zipfile.ZipFile(io.BytesIO(path.read_bytes())) as plain:
        assert plain.namelist() == ["customer.json", "customer.xlsx"]
    assert (data["customer"]["id"], data["customer"]["name"], data["customer"]["phone"]) == (customer_id, name, phone)
    assert len(data["orders"]) == orders


# --- 19 ----------------------------------------------------------------------------------------------


def test_an_agent_records_an_unsubscribe_and_the_timeline_and_the_audit_show_it(page, app_server):
    with _db(app_server) as db:
        customer_id = db.execute(
            "SELECT id FROM customer WHERE status = 'active' AND erased_at IS NULL AND consent_marketing = 1 AND updated_by_name IS NULL "
            "ORDER BY id LIMIT 1"
        ).fetchone()[0]
    login(page, app_server, "agent")
    _open_customer(page, customer_id)
    expect(page.locator("#customer-updated")).to_contain_text("由系统导入或初始化创建于")  # 14: no empty name
    marketing = page.locator(".consent-row[data-consent='marketing']")
    expect(marketing).to_contain_text("授权于")
    page.locator("#consent-marketing-toggle").click()
    expect(marketing).to_contain_text("已退订")
    first = page.locator("#timeline .timeline-item").first
    expect(first).to_have_attribute("data-kind", "consent")
    expect(first).to_contain_text("客户退订营销推送")
    expect(first).to_contain_text("由 客服小美 记录")
    expect(page.locator("#customer-updated")).to_contain_text("最后由 客服小美 于")
    with _db(app_server) as db:
        flag, at = db.execute(
            "SELECT consent_marketing, consent_marketing_at FROM customer WHERE id = ?", (customer_id,)
        ).fetchone()
        actor, details = db.execute(
            "SELECT actor_name, details FROM audit_entry WHERE action = 'customer.consent' AND target_id = ? "
            "ORDER BY id DESC LIMIT 1",
            (str(customer_id),),
        ).fetchone()
    assert flag == 0 and at is not None
    assert actor == "agent" and json.loads(details)["changes"] == {"consent_marketing": [True, False]}

    _to_english(page)
    page.reload()
    expect(page.locator(".consent-row[data-consent='marketing']")).to_contain_text("Withdrawn")
    expect(page.locator("#timeline .timeline-item").first).to_contain_text("Consent withdrawn: Marketing messages")
    page.locator("#consent-marketing-toggle").click()  # and back: consent given again
    expect(page.locator(".consent-row[data-consent='marketing']")).to_contain_text("Granted")
    expect(page.locator("#timeline .timeline-item").first).to_contain_text("Consent given: Marketing messages")


# --- 24 ----------------------------------------------------------------------------------------------


def test_enter_in_the_tag_input_takes_the_only_suggestion(page, app_server):
    with _db(app_server) as db:
        customer_id = db.execute(
            "SELECT c.id FROM customer c WHERE c.status = 'active' AND c.erased_at IS NULL AND NOT EXISTS ("
            "SELECT 1 FROM tag_assignment a JOIN tag t ON t.id = a.tag_id "
            "WHERE a.customer_id = c.id AND t.name = 'VIP客户') ORDER BY c.id LIMIT 1"
        ).fetchone()[0]
    login(page, app_server, "agent")
    _open_customer(page, customer_id)
    page.locator("#tag-input").fill("VIP")
    expect(page.locator(".tag-suggestion-highlighted")).to_have_text("VIP客户")
    page.locator("#tag-input").press("Enter")
    expect(page.locator("#customer-tags")).to_contain_text("VIP客户")
    with _db(app_server) as db:
        assert (
            db.execute(
                "SELECT count(*) FROM tag_assignment a JOIN tag t ON t.id = a.tag_id "
                "WHERE a.customer_id = ? AND t.name = 'VIP客户'",
                (customer_id,),
            ).fetchone()[0]
            == 1
        )
        assert db.execute("SELECT count(*) FROM tag WHERE name = 'VIP'").fetchone()[0] == 0


def test_the_first_click_on_name_sorts_a_to_z_in_english_too(page, app_server):
    login(page, app_server, "agent")
    _to_english(page)
    page.get_by_role("button", name="Sort by Name").click()
    with _db(app_server) as db:
        expected = [
            r[0]
            for r in db.execute("SELECT name FROM customer WHERE status = 'active' ORDER BY name_pinyin, id LIMIT 5")
        ]
    names = page.locator("#customer-table .customer-row th")
    expect(names.first).to_have_text(expected[0])
    assert names.all_inner_texts()[:5] == expected


# --- layout --------------------------------------------------------------------------------------------


def test_the_detail_page_and_the_new_customer_warning_fit_at_390_and_1440(browser, app_server):
    existing_id, phone, _name = _customer_with_valid_phone(app_server)
    for width in (390, 1440):
        context = browser.new_context(base_url=app_server.url, locale="zh-CN", viewport={"width": width, "height": 900})
        context.set_default_timeout(20_000)
        page = context.new_page()
        try:
            login(page, app_server, "manager", f"/customers/{existing_id}")
            expect(page.locator("#portability-open")).to_be_visible()
            expect(page.locator("#consent-marketing-toggle")).to_be_visible()
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"detail at {width}px: {overflow}px wider than the window"
            page.goto("/customers")
            page.locator("#new-customer").click()
            page.locator("#new-name").fill("版式检查")
            page.locator("#new-phone").fill(phone)
            page.locator("#new-customer-save").click()
            warning = page.locator("#new-customer-duplicates")
            expect(warning).to_be_visible()
            box = warning.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= width, (width, box)
        finally:
            context.close()
