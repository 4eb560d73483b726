"""An agent's daily work on customers: pinyin search, filters, saved views,
editing with validation, and the edit conflict between two pages."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import login


def _db(app_server):
    return app_server.sql()


@pytest.mark.pg
def test_agent_finds_customer_by_pinyin_initials(page, app_server):
    with _db(app_server) as db:
        name, initials = db.execute(
            "SELECT name, name_initials FROM customer WHERE status='active' AND length(name_initials) = 3 "
            "ORDER BY last_active_at DESC LIMIT 1"
        ).fetchone()
    login(page, app_server, "agent")
    page.get_by_role("searchbox").fill(initials)
    expect(page.locator("#customer-table .customer-row").filter(has_text=name).first).to_be_visible()


@pytest.mark.pg
def test_two_filters_and_a_sort_match_the_database(page, app_server):
    login(page, app_server, "manager")
    page.locator("#open-filters").click()
    page.get_by_role("checkbox", name="微信").click()
    page.get_by_label("订单数不少于").fill("2")
    page.locator("#apply-filters").click()
    expect(page.locator(".filter-chip")).to_have_count(2)
    page.get_by_role("button", name="按姓名排序").click()  # first click: ascending (A→Z)
    with _db(app_server) as db:
        expected = [
            row[0]
            for row in db.execute(
                "SELECT name FROM customer WHERE status='active' AND source='wechat' AND order_count >= 2 "
                "ORDER BY name_pinyin, id LIMIT 10"
            )
        ]
        total = db.execute(
            "SELECT count(*) FROM customer WHERE status='active' AND source='wechat' AND order_count >= 2"
        ).fetchone()[0]
    expect(page.locator("#match-count")).to_contain_text(f"{total:,}")
    names = page.locator("#customer-table .customer-row th")
    expect(names.first).to_have_text(expected[0])
    assert names.all_inner_texts()[:10] == expected


def test_saved_view_comes_back(page, app_server):
    login(page, app_server, "manager")
    page.locator("#open-filters").click()
    page.get_by_role("checkbox", name="金卡会员").click()
    page.locator("#apply-filters").click()
    expect(page.locator(".filter-chip")).to_have_count(1)
    page.locator("#views-menu").click()
    page.locator("#save-view").click()
    page.locator("#view-name").fill("金卡客户")
    page.locator("#save-view-submit").click()
    expect(page.get_by_text("已保存视图 金卡客户")).to_be_visible()
    page.locator("#clear-filters").click()
    expect(page.locator(".filter-chip")).to_have_count(0)
    page.locator("#views-menu").click()
    page.locator(".view-item").filter(has_text="金卡客户").click()
    expect(page.locator(".filter-chip")).to_have_count(1)
    expect(page.locator(".filter-chip")).to_contain_text("金卡会员")
    with _db(app_server) as db:
        gold = db.execute("SELECT count(*) FROM customer WHERE status='active' AND membership_tier='gold'").fetchone()[
            0
        ]
    expect(page.locator("#match-count")).to_contain_text(f"{gold:,}")


def _open_customer(page, customer_id: int) -> None:
    page.goto(f"/customers/{customer_id}")
    expect(page.locator("#customer-name")).to_be_visible()


def test_agent_edits_phone_invalid_refused_valid_saved_and_audited(page, app_server):
    with _db(app_server) as db:
        customer_id = db.execute(
            "SELECT id FROM customer WHERE status='active' ORDER BY id LIMIT 1 OFFSET 5"
        ).fetchone()[0]
    login(page, app_server, "agent")
    _open_customer(page, customer_id)
    page.locator("#edit-customer").click()
    page.locator("#edit-phone").fill("12345")
    page.locator("#edit-save").click()
    expect(page.get_by_text("手机号码无效")).to_be_visible()
    page.locator("#edit-phone").fill("139 0011 2233")
    page.locator("#edit-save").click()
    expect(page.get_by_text("已保存")).to_be_visible()
    expect(page.locator("#field-phone")).to_have_text("139****2233")
    with _db(app_server) as db:
        phone = db.execute("SELECT phone FROM customer WHERE id = ?", (customer_id,)).fetchone()[0]
        details = db.execute(
            "SELECT details FROM audit_entry WHERE action='customer.update' AND target_id=? ORDER BY id DESC LIMIT 1",
            (str(customer_id),),
        ).fetchone()[0]
    assert phone == "13900112233"
    assert "139****2233" in details and "13900112233" not in details


@pytest.mark.pg
def test_second_editor_gets_a_conflict_and_nothing_is_overwritten(page, browser, app_server):
    with _db(app_server) as db:
        customer_id = db.execute(
            "SELECT id FROM customer WHERE status='active' ORDER BY id LIMIT 1 OFFSET 9"
        ).fetchone()[0]
    other_context = browser.new_context(base_url=app_server.url)
    other = other_context.new_page()
    try:
        login(page, app_server, "admin")
        login(other, app_server, "manager")
        _open_customer(page, customer_id)
        _open_customer(other, customer_id)
        page.locator("#edit-customer").click()
        other.locator("#edit-customer").click()
        page.locator("#edit-company").fill("先保存的公司")
        page.locator("#edit-save").click()
        expect(page.get_by_text("已保存")).to_be_visible()
        other.locator("#edit-company").fill("后保存的公司")
        other.locator("#edit-save").click()
        expect(other.locator("#edit-conflict")).to_contain_text("系统管理员")
        with _db(app_server) as db:
            company = db.execute("SELECT company FROM customer WHERE id = ?", (customer_id,)).fetchone()[0]
        assert company == "先保存的公司"
        other.locator("#edit-reload").click()
        expect(other.locator("#field-company")).to_have_text("先保存的公司")
    finally:
        other_context.close()


def test_agent_adds_note_and_tag_and_sees_timeline(page, app_server):
    with _db(app_server) as db:
        customer_id = db.execute(
            "SELECT c.id FROM customer c WHERE c.status='active' AND c.order_count > 0 AND NOT EXISTS "
            "(SELECT 1 FROM tag_assignment ta JOIN tag t ON t.id = ta.tag_id WHERE ta.customer_id = c.id "
            "AND t.name = '待回访') ORDER BY c.id LIMIT 1"
        ).fetchone()[0]
        orders = db.execute("SELECT count(*) FROM customer_order WHERE customer_id = ?", (customer_id,)).fetchone()[0]
    login(page, app_server, "agent")
    _open_customer(page, customer_id)
    expect(page.locator("#timeline .timeline-item").first).to_be_visible()
    page.locator("#timeline-kind").click()
    page.get_by_role("option", name="订单").click()
    expect(page.locator("#timeline .timeline-item[data-kind='order']")).to_have_count(min(orders, 20))
    expect(page.locator("#timeline .timeline-item[data-kind='conversation']")).to_have_count(0)

    page.locator("#note-text").fill("客户来电询问退款进度，已告知三个工作日内到账。")
    page.locator("#note-add").click()
    page.locator("#timeline-kind").click()
    page.get_by_role("option", name="全部类型").click()
    expect(page.locator("#timeline .timeline-item").first).to_contain_text("三个工作日")

    page.locator("#tag-input").fill("回访")
    page.locator(".tag-suggestion").filter(has_text="待回访").click()
    expect(page.locator("#customer-tags")).to_contain_text("待回访")
    with _db(app_server) as db:
        note = db.execute(
            "SELECT body FROM note WHERE customer_id = ? ORDER BY id DESC LIMIT 1", (customer_id,)
        ).fetchone()[0]
        tagged = db.execute(
            "SELECT count(*) FROM tag_assignment ta JOIN tag t ON t.id = ta.tag_id "
            "WHERE ta.customer_id = ? AND t.name = '待回访'",
            (customer_id,),
        ).fetchone()[0]
        audited = db.execute(
            "SELECT count(*) FROM audit_entry WHERE action IN ('note.create', 'customer.tag_add') "
            "AND actor_name = 'agent'"
        ).fetchone()[0]
    assert "三个工作日" in note and tagged == 1 and audited >= 2


def test_agent_creates_a_customer_by_hand(page, app_server):
    login(page, app_server, "agent")
    page.locator("#new-customer").click()
    page.locator("#new-name").fill("手工新建客户")
    page.locator("#new-phone").fill("12345")
    page.locator("#new-customer-save").click()
    expect(page.get_by_text("手机号码无效")).to_be_visible()
    page.locator("#new-phone").fill("139 0011 2244")  # not the number the edit test gave a customer
    page.locator("#new-city").fill("宁波")
    page.locator("#new-customer-save").click()
    page.wait_for_function("() => /^\\/customers\\/\\d+/.test(window.location.pathname)")
    new_id = int(page.evaluate("window.location.pathname").rstrip("/").split("/")[-1])
    with _db(app_server) as db:
        row = db.execute("SELECT name, phone, city FROM customer WHERE id = ?", (new_id,)).fetchone()
        audit = db.execute(
            "SELECT actor_name FROM audit_entry WHERE action = 'customer.create' AND target_id = ?", (str(new_id),)
        ).fetchone()
    assert row == ("手工新建客户", "13900112244", "宁波")
    assert audit == ("agent",)
