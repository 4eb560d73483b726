"""Customer import (CUST-6): column mapping, dry-run report, batched import, error report."""

from __future__ import annotations

import csv
import datetime as dt
import gc
import json
import random
import sys
import threading
from pathlib import Path

import pytest
from openpyxl import Workbook
from sqlalchemy import text

from meiqia_app.config import get_settings
from meiqia_app.db import get_engine, write_session
from meiqia_app.models import Job
from meiqia_app.services.customers import listing as customer_list
from meiqia_app.services.customers.importing import columns as import_columns
from meiqia_app.services.customers.importing import files as import_files
from meiqia_app.services.customers.importing import job as customer_import
from meiqia_app.services.customers.importing import rows as import_rows
from meiqia_app.services.customers.importing.columns import suggest_mapping
from meiqia_app.services.customers.importing.files import read_table
from meiqia_app.services.customers.importing.job import dry_run, run_import
from meiqia_app.services.customers.query import ListQuery
from meiqia_app.services.customers.validation import normalize_phone
from meiqia_app.services.errors import NotFound, PermissionDenied, ValidationError
from meiqia_app.services.platform import jobs
from meiqia_app.timeutil import utcnow

HEADERS = ["姓名", "手机号码", "邮箱", "性别", "来源", "会员等级", "生日", "城市", "备注"]


def rows(sql: str, **params) -> list:
    with get_engine().connect() as conn:
        return conn.execute(text(sql), params).all()


def scalar(sql: str, **params):
    with get_engine().connect() as conn:
        return conn.execute(text(sql), params).scalar_one()


def write_csv(name: str, data: list[list], encoding: str = "utf-8", delimiter: str = ",") -> Path:
    """A file where uploads are saved (the services read nothing else)."""
    folder = get_settings().imports_dir
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    with path.open("w", encoding=encoding, newline="") as handle:
        csv.writer(handle, delimiter=delimiter).writerows(data)
    return path


def write_xlsx(name: str, data: list[list]) -> Path:
    folder = get_settings().imports_dir
    folder.mkdir(parents=True, exist_ok=True)
    workbook = Workbook()
    sheet = workbook.active
    for values in data:
        sheet.append(values)
    path = folder / name
    workbook.save(path)
    return path


def read_report(path: str) -> list[list[str]]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        return list(csv.reader(handle))


def import_audits() -> list:
    return rows("SELECT action, result, details FROM audit_entry WHERE action LIKE 'customer.import%' ORDER BY id")


def existing_valid_phone() -> tuple[int, str]:
    for customer_id, phone in rows("SELECT id, phone FROM customer WHERE phone IS NOT NULL ORDER BY id"):
        try:
            if normalize_phone(phone) == phone:
                return customer_id, phone
        except ValueError:
            continue
    raise AssertionError("the seed has no valid phone")


NEW_PHONES = ("19912340001", "19912340002", "19912340004", "19912340005")


def mixed_file(existing_phone: str) -> list[list]:
    """Two good rows and one of each problem (plus a blank row, which is ignored)."""
    return [
        HEADERS,
        ["张三", "199 1234 0001", "zhangsan@example.com", "男", "微信", "金卡会员", "1990/3/5", "北京", "x"],  # 2 ok
        ["李四", "19912340002", "", "女", "小程序", "", "", "上海", ""],  # 3 ok
        ["王五", "12345", "wangwu@example.com", "", "", "", "", "", ""],  # 4 bad phone
        ["赵六", "19912340004", "not-an-email", "", "", "", "", "", ""],  # 5 bad e-mail
        ["", "19912340005", "", "", "", "", "", "", ""],  # 6 no name
        ["", "", "", "", "", "", "", "", ""],  # 7 blank
        ["张三丰", "19912340001", "", "", "", "", "", "", ""],  # 8 = row 2
        ["钱七", existing_phone, "", "", "", "", "", "", ""],  # 9 = customer
    ]


@pytest.fixture()
def mixed(seeded_db):
    customer_id, phone = existing_valid_phone()
    assert rows(f"SELECT id FROM customer WHERE phone IN {NEW_PHONES}") == []
    path = write_csv("mixed.csv", mixed_file(phone))
    return {"path": path, "existing_id": customer_id, "mapping": suggest_mapping(HEADERS)}


# --- reading and mapping ------------------------------------------------------------------------


def test_suggest_mapping_recognises_chinese_headers():
    headers = [
        "客户姓名",
        "手机号码（必填）",
        "电子邮箱",
        "性别",
        "出生日期",
        "详细地址",
        "省份",
        "城市",
        "公司名称",
        "来源渠道",
        "外部ID",
        "访客ID",
        "生命周期",
        "会员等级",
        "备注",
    ]
    assert suggest_mapping(headers) == {
        0: "name",
        1: "phone",
        2: "email",
        3: "gender",
        4: "birthday",
        5: "address",
        6: "province",
        7: "city",
        8: "company",
        9: "source",
        10: "external_id",
        11: "visitor_id",
        12: "lifecycle_stage",
        13: "membership_tier",
    }


def test_suggest_mapping_recognises_english_headers():
    headers = [
        "Name",
        "Mobile Phone",
        "E-mail",
        "Gender",
        "Date of birth",
        "Address",
        "Province",
        "City",
        "Company Name",
        "Source",
        "External ID",
        "visitor_id",
        "Lifecycle stage",
        "Tier",
        "Notes",
    ]
    assert suggest_mapping(headers) == {
        0: "name",
        1: "phone",
        2: "email",
        3: "gender",
        4: "birthday",
        5: "address",
        6: "province",
        7: "city",
        8: "company",
        9: "source",
        10: "external_id",
        11: "visitor_id",
        12: "lifecycle_stage",
        13: "membership_tier",
    }


def test_suggest_mapping_proposes_each_field_once_preferring_exact_names():
    # "联系手机" only contains a phone word; "电话" is an exact one and wins the field.
    assert suggest_mapping(["联系手机", "电话", "姓名", "姓名"]) == {1: "phone", 2: "name"}


def test_suggest_mapping_does_not_guess_from_general_words():
    assert suggest_mapping(["客户类型", "产品名称", "会员卡号", "Customer Type", "备注"]) == {}
    assert suggest_mapping(["客户来源", "公司电话", "收货地址"]) == {0: "source", 1: "phone", 2: "address"}


def test_every_field_and_choice_label_used_by_the_import_exists():
    from meiqia_app.i18n.messages import ENTRIES

    assert set(import_columns.FIELD_LABEL_KEYS.values()) <= set(ENTRIES)
    labels = import_rows.CHOICE_LABELS
    assert (
        labels["source"]["微信"],
        labels["gender"]["男"],
        labels["membership_tier"]["金卡会员"],
        labels["lifecycle_stage"]["流失"],
        labels["source"]["website"],
    ) == ("wechat", "M", "gold", "churned", "web")


def test_resolve_mapping_accepts_header_names_and_refuses_bad_mappings():
    headers = ["姓名", "电话", "备注"]
    assert import_columns.resolve_mapping(headers, {"姓名": "name", "1": "phone", 2: ""}) == {0: "name", 1: "phone"}
    for bad, key in (
        ({1: "phone"}, "import.name_not_mapped"),
        ({0: "name", 1: "password_hash"}, "import.unknown_field"),
        ({0: "name", 7: "phone"}, "import.unknown_column"),
        ({"手机": "phone", 0: "name"}, "import.unknown_column"),
        ({0: "name", 1: "phone", 2: "phone"}, "import.field_mapped_twice"),
    ):
        with pytest.raises(ValidationError) as caught:
            import_columns.resolve_mapping(headers, bad)
        assert caught.value.field_errors["mapping"][0] == key, bad


def test_read_table_handles_gb18030_and_sniffs_the_delimiter(db):
    path = write_csv(
        "gbk.csv",
        [["姓名", "电话"], ["张伟", "13800138000"], ["李娜", "13900139000"]],
        encoding="gb18030",
        delimiter=";",
    )
    headers, data = read_table(path)
    assert headers == ["姓名", "电话"]
    assert list(data) == [(2, ["张伟", "13800138000"]), (3, ["李娜", "13900139000"])]


def test_read_table_reads_utf8_with_bom_and_tabs(db):
    path = write_csv("bom.csv", [["姓名", "地址"], ["张伟", "北京市, 朝阳区"]], encoding="utf-8-sig", delimiter="\t")
    headers, data = read_table(path)
    assert headers == ["姓名", "地址"]
    assert list(data) == [(2, ["张伟", "北京市, 朝阳区"])]


def test_files_outside_the_imports_dir_or_of_other_types_are_refused(db, tmp_path):
    outside = tmp_path / "elsewhere.csv"
    outside.write_text("姓名\n张伟\n", encoding="utf-8")
    for path in (outside, get_settings().imports_dir / "missing.csv", Path("/etc/passwd")):
        with pytest.raises(ValidationError) as caught:
            read_table(path)
        assert caught.value.field_errors["file"][0] == "import.file_missing"
    with pytest.raises(ValidationError):
        import_files.new_upload_path("customers.xls")
    assert import_files.new_upload_path("客户.XLSX").parent == get_settings().imports_dir


# --- dry run ------------------------------------------------------------------------------------


def test_dry_run_counts_valid_invalid_and_duplicate_rows_with_reasons(seeded_actors, mixed):
    before = scalar("SELECT count(*) FROM customer")
    report = dry_run(seeded_actors["manager"], mixed["path"], mixed["mapping"])

    assert (report.total_rows, report.valid, report.invalid, report.duplicates) == (7, 2, 3, 2)
    assert (report.duplicates_existing, report.duplicates_in_file, report.inserted) == (1, 1, 0)
    assert [(p.row, p.field, p.message_key, p.params) for p in report.problems] == [
        (4, "phone", "error.phone_invalid", {}),
        (5, "email", "error.email_invalid", {}),
        (6, "name", "error.required", {}),
        (8, "phone", "import.duplicate_in_file", {"row": "2"}),
        (9, "phone", "import.duplicate_existing", {"id": str(mixed["existing_id"])}),
    ]
    assert report.reason_counts == {
        "error.phone_invalid": 1,
        "error.email_invalid": 1,
        "error.required": 1,
        "import.duplicate_in_file": 1,
        "import.duplicate_existing": 1,
    }
    assert report.problems[0].value == "12345"
    assert scalar("SELECT count(*) FROM customer") == before  # nothing saved
    error_rows = read_report(report.error_report_path)
    assert [r[0] for r in error_rows[1:]] == ["4", "5", "6", "8", "9"]
    assert Path(report.error_report_path).parent == get_settings().imports_dir


def test_dry_run_finds_duplicates_by_email_too(seeded_actors):
    customer_id, email = rows("SELECT id, email FROM customer WHERE email LIKE '%@qq.com' ORDER BY id LIMIT 1")[0]
    path = write_csv("email.csv", [["name", "email"], ["Li Lei", email.upper().replace("@QQ.COM", "@qq.com")]])
    report = dry_run(seeded_actors["admin"], path, {0: "name", 1: "email"})
    assert report.duplicates_existing == 1
    assert (report.problems[0].field, report.problems[0].params) == ("email", {"id": str(customer_id)})


def test_a_clean_file_has_no_error_report(actors):
    path = write_csv("clean.csv", [["姓名", "电话"], ["张伟", "13800138000"]])
    report = dry_run(actors["admin"], path, {0: "name", 1: "phone"})
    assert (report.valid, report.error_rows, report.error_report_path) == (1, 0, "")


# --- import -------------------------------------------------------------------------------------


def test_run_import_inserts_exactly_the_valid_rows(seeded_actors, mixed):
    manager = seeded_actors["manager"]
    before = scalar("SELECT count(*) FROM customer")
    audits_before = len(import_audits())
    seen_progress = []
    report = run_import(
        manager,
        mixed["path"],
        mixed["mapping"],
        progress=lambda done, total: seen_progress.append(done),
        file_name="客户名单.csv",
    )

    assert (report.inserted, report.skipped, report.invalid, report.duplicates) == (2, 5, 3, 2)
    assert seen_progress == [7]
    assert scalar("SELECT count(*) FROM customer") == before + 2
    new = rows(
        "SELECT name, phone, email, gender, source, membership_tier, CAST(birthday AS TEXT), city, name_pinyin, "
        "name_initials, updated_by_name, created_at FROM customer WHERE phone IN ('19912340001', '19912340002') "
        "ORDER BY phone"
    )
    assert [tuple(r[:10]) for r in new] == [
        ("张三", "19912340001", "zhangsan@example.com", "M", "wechat", "gold", "1990-03-05", "北京", "zhangsan", "zs"),
        ("李四", "19912340002", None, "F", "miniprogram", "regular", None, "上海", "lisi", "ls"),
    ]
    assert new[0].updated_by_name == manager.display_name
    # Timestamps are stored as UTC, the way every other writer stores them.
    created = dt.datetime.fromisoformat(str(new[0].created_at)).replace(tzinfo=dt.UTC)
    assert abs((dt.datetime.now(dt.UTC) - created).total_seconds()) < 60
    # The search index knows the new customers (phone fragment, name, pinyin initials).
    for term in ("1234000", "9912340002", "李四"):
        page = customer_list.list_customers(manager, ListQuery.from_dict({"q": term}))
        assert "李四" in [row.name for row in page.rows], term

    error_rows = read_report(report.error_report_path)
    assert error_rows[0] == ["行号", *HEADERS, "问题"]
    by_row = {r[0]: r for r in error_rows[1:]}
    assert sorted(by_row) == ["4", "5", "6", "8", "9"]
    assert by_row["4"][1:3] == ["王五", "12345"] and by_row["4"][-1] == "电话: 手机号码无效"
    assert by_row["5"][-1] == "邮箱: 电子邮箱无效"
    assert by_row["6"][-1] == "姓名: 必填"
    assert by_row["8"][-1] == "电话: 与文件第 2 行重复"
    assert by_row["9"][-1] == f"电话: 与已有客户 #{mixed['existing_id']} 重复"

    audits = import_audits()[audits_before:]
    assert len(audits) == 1
    action, result, details = audits[0]
    assert (action, result) == ("customer.import", "ok")
    details = json.loads(details)
    assert {
        k: details[k]
        for k in ("file", "rows", "inserted", "invalid", "duplicates", "duplicates_existing", "duplicates_in_file")
    } == {
        "file": "客户名单.csv",
        "rows": 7,
        "inserted": 2,
        "invalid": 3,
        "duplicates": 2,
        "duplicates_existing": 1,
        "duplicates_in_file": 1,
    }
    assert "19912340001" not in json.dumps(details)  # no personal data in the log
    assert scalar("SELECT count(*) FROM audit_entry WHERE action = 'customer.create'") == 0


def test_run_import_can_keep_duplicates(seeded_actors, mixed):
    report = run_import(seeded_actors["admin"], mixed["path"], mixed["mapping"], skip_duplicates=False)
    assert (report.inserted, report.invalid, report.duplicates) == (4, 3, 2)
    assert scalar("SELECT count(*) FROM customer WHERE phone = '19912340001'") == 2
    assert len(read_report(report.error_report_path)) == 1 + 3  # only the invalid rows


def test_the_same_file_imported_twice_adds_nobody_the_second_time(actors):
    path = write_csv("twice.csv", [["姓名", "电话"], ["张伟", "13800138000"], ["李娜", "13900139000"]])
    first = run_import(actors["admin"], path, {0: "name", 1: "phone"})
    second = run_import(actors["admin"], path, {0: "name", 1: "phone"})
    assert (first.inserted, second.inserted, second.duplicates_existing) == (2, 0, 2)
    assert scalar("SELECT count(*) FROM customer") == 2
    assert scalar("SELECT count(*) FROM customer_search") == 2


def test_xlsx_input_works_with_typed_cells(actors):
    path = write_xlsx(
        "customers.xlsx",
        [
            ["Name", "Mobile", "Email", "Birthday", "Gender", "Lifecycle", "External ID"],
            ["Zhang Wei", 13800138000, "zw@example.com", dt.datetime(1988, 7, 1), "Male", "活跃", 10086],
            [None, None, None, None, None, None, None],
            ["王芳", "13900139000", "bad@", dt.date(1990, 1, 2), "女", "流失", "A-1"],
            ["刘洋", 13700137000.0, None, "1995年12月3日", "f", "churned", None],
        ],
    )
    headers, _data = read_table(path)
    mapping = suggest_mapping(headers)
    assert mapping == {
        0: "name",
        1: "phone",
        2: "email",
        3: "birthday",
        4: "gender",
        5: "lifecycle_stage",
        6: "external_id",
    }
    preview = dry_run(actors["manager"], path, mapping)
    assert (preview.total_rows, preview.valid, preview.invalid) == (3, 2, 1)
    assert [(p.row, p.field) for p in preview.problems] == [(4, "email")]

    report = run_import(actors["manager"], path, mapping)
    assert report.inserted == 2
    assert rows(
        "SELECT name, phone, CAST(birthday AS TEXT), gender, lifecycle_stage, external_id FROM customer ORDER BY id"
    ) == [
        ("Zhang Wei", "13800138000", "1988-07-01", "M", "active", "10086"),
        ("刘洋", "13700137000", "1995-12-03", "F", "churned", None),
    ]
    assert read_report(report.error_report_path)[1][0] == "4"


def test_error_report_cells_cannot_run_as_formulas_and_read_back_unchanged(actors):
    formula = '=HYPERLINK("http://x","点我")'
    path = write_csv(
        "formula.csv", [["姓名", "电话", "邮箱"], [formula, "13800138000", "bad@"], ["张伟", "+86 138 0013 9000", ""]]
    )
    report = dry_run(actors["admin"], path, {0: "name", 1: "phone", 2: "email"})
    assert report.valid == 1  # +86… is a phone, not a formula
    error_rows = read_report(report.error_report_path)
    assert error_rows[1][:4] == ["2", "'" + formula, "13800138000", "bad@"]
    # The report can be imported again: the apostrophe is dropped on reading.
    again = run_import(actors["admin"], report.error_report_path, {"姓名": "name", "电话": "phone"})
    assert again.inserted == 1
    assert scalar("SELECT name FROM customer") == formula


def test_an_unparseable_csv_row_is_reported_and_the_rest_imported(actors):
    folder = get_settings().imports_dir
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "huge_field.csv"
    path.write_text(
        '姓名,电话\n张伟,13800138000\n"' + "x" * 200_000 + '",13900139000\n李娜,13700137000\n', encoding="utf-8"
    )
    report = run_import(actors["admin"], path, {0: "name", 1: "phone"})
    assert (report.inserted, report.invalid) == (2, 1)
    assert report.problems[0].message_key == "import.unreadable_row"


# --- permissions --------------------------------------------------------------------------------


def test_an_agent_may_not_import_and_the_refusal_is_audited(actors):
    path = write_csv("agent.csv", [["姓名", "电话"], ["张伟", "13800138000"]])
    for service, action in ((dry_run, "customer.import_dry_run"), (run_import, "customer.import")):
        with pytest.raises(PermissionDenied):
            service(actors["agent"], path, {0: "name", 1: "phone"})
        action_seen, result, details = import_audits()[-1]
        assert (action_seen, result) == (action, "refused")
        assert json.loads(details) == {"missing_permission": "customer.import"}
    assert scalar("SELECT count(*) FROM customer") == 0


# --- size ---------------------------------------------------------------------------------------

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华"


def big_file(count: int, first: int = 0, name: str = "big.csv") -> Path:
    """``count`` people with phones and e-mails numbered from ``first``; 1 % of the phones are bad."""
    rng = random.Random(6 + first)
    sources = ("微信", "网站", "小程序", "抖音", "线下")
    data = [["姓名", "手机", "邮箱", "性别", "来源", "城市", "生日"]]
    for i in range(first, first + count):
        name_ = rng.choice(SURNAMES) + rng.choice(GIVEN) + rng.choice(GIVEN)
        phone = f"1{rng.choice('3589')}{i:09d}"
        email = f"user{i}@example.com"
        if i % 100 == 7:
            phone = "12345"  # 1 % bad phones
        birthday = f"19{rng.randrange(50, 99)}-0{rng.randrange(1, 9)}-1{rng.randrange(0, 9)}"
        data.append([name_, phone, email, rng.choice("男女"), rng.choice(sources), "杭州", birthday])
    return write_csv(name, data)


def _peak_python_memory(work):
    """Run ``work()``; return its result and the peak rise of Python's allocated blocks meanwhile.

    Blocks, not RSS: SQLite's page cache (64 MiB per connection) and its
    memory-mapped file pages fill up as the database grows and would hide
    what the import itself holds; tracemalloc would see it but makes the
    import three times slower.
    """
    gc.collect()  # what earlier work left for the collector is not the import's
    start = sys.getallocatedblocks()
    peak = [start]
    stop = threading.Event()

    def sample():
        while not stop.wait(0.005):
            peak[0] = max(peak[0], sys.getallocatedblocks())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = work()
    finally:
        stop.set()
        sampler.join()
    return result, peak[0] - start


def test_import_memory_does_not_grow_with_the_file(actors):
    """Streaming: the import holds a batch of rows at a time, plus the phones
    and e-mails seen so far (duplicates within the file), about 5 blocks per
    row. Holding the rows themselves costs 20 or more blocks each (a dict per
    row, its strings, the cleaned values)."""
    mapping = suggest_mapping(["姓名", "手机", "邮箱", "性别", "来源", "城市", "生日"])
    # A first import pays the one-time costs (caches, compiled statements, imported modules),
    # so the two measured ones differ only by their rows, whatever ran before this test.
    run_import(actors["admin"], big_file(500, 60_000, "warm.csv"), mapping)
    small_path, large_path = big_file(10_000, 0, "small.csv"), big_file(40_000, 10_000, "large.csv")
    small, small_growth = _peak_python_memory(lambda: run_import(actors["admin"], small_path, mapping))
    large, large_growth = _peak_python_memory(lambda: run_import(actors["admin"], large_path, mapping))
    per_extra_row = (large_growth - small_growth) / 30_000
    print(f"\nimport peak blocks: 10k rows +{small_growth}, 40k rows +{large_growth}: {per_extra_row:.1f} a row")

    assert (small.total_rows, small.invalid, small.inserted) == (10_000, 100, 9_900)
    assert (large.total_rows, large.invalid, large.inserted) == (40_000, 400, 39_600)
    assert scalar("SELECT count(*) FROM customer") == 495 + 49_500
    assert scalar("SELECT count(*) FROM customer_search") == 495 + 49_500
    assert len(read_report(large.error_report_path)) == 1 + 400
    assert len(import_audits()) == 3
    # Holding the rows would cost 20 or more blocks each. The bound leaves room for the sampler
    # missing the small import's peak on a loaded machine (its rise then reads low: ~10 a row).
    assert per_extra_row < 12


# --- as jobs of the runner -------------------------------------------------------------------------


def _job_row(job_id: int):
    return rows("SELECT status, params, checkpoint, result, error, processed, total FROM job WHERE id = :i", i=job_id)[
        0
    ]


def test_a_check_and_an_import_run_as_jobs_and_the_job_row_keeps_no_cell_values(seeded_actors, mixed):
    manager = seeded_actors["manager"]
    _existing_id, existing_phone = existing_valid_phone()
    check = customer_import.start_job(manager, mixed["path"], mixed["mapping"], dry_run=True, file_name="mixed.csv")
    assert jobs.wait([check], 30)
    report = customer_import.job_report(manager, check)
    assert (report.total_rows, report.valid, report.invalid, report.duplicates) == (7, 2, 3, 2)
    assert report.problems[1].value == "not-an-email"  # the page of the person who ran it sees the values
    status, params, checkpoint, result, error, processed, total = _job_row(check)
    assert (status, error, processed) == ("done", None, 7) and total >= 7
    stored = " ".join((params, checkpoint, result))
    assert "error.email_invalid" in stored  # the reasons are kept …
    assert "not-an-email" not in stored and existing_phone not in stored  # … the customers' values are not
    assert customer_import.job_report(manager, check).problems[1].value == ""  # read back from the row

    before = scalar("SELECT count(*) FROM customer")
    run = customer_import.start_job(manager, mixed["path"], mixed["mapping"], dry_run=False, file_name="mixed.csv")
    assert jobs.wait([run], 30)
    assert customer_import.job_report(manager, run).inserted == 2
    assert scalar("SELECT count(*) FROM customer") == before + 2
    assert json.loads(_job_row(run)[2])["inserted"] == 2  # the checkpoint counts committed rows
    with pytest.raises(NotFound):
        customer_import.job_progress(seeded_actors["analyst"], run)  # only its starter (or job.view_all)


def test_an_agent_cannot_start_an_import_job_and_the_refusal_is_audited(actors):
    path = write_csv("agent.csv", [["姓名"], ["张伟"]])
    with pytest.raises(PermissionDenied):
        customer_import.start_job(actors["agent"], path, {"0": "name"}, dry_run=False)
    assert rows("SELECT count(*) FROM job")[0][0] == 0
    assert import_audits()[-1][:2] == ("customer.import", "refused")


def test_a_cancelled_import_keeps_the_committed_batch_and_says_how_many(seeded_actors, mixed, monkeypatch):
    manager = seeded_actors["manager"]
    before = scalar("SELECT count(*) FROM customer")
    monkeypatch.setattr(import_rows, "BATCH_ROWS", 2)
    monkeypatch.setattr(jobs, "start_in_background", lambda job_id, memory=None: jobs.run_job(job_id, memory))
    original = jobs.JobContext.progress

    def cancel_then_progress(ctx, *args, **kwargs):
        jobs.request_cancel(manager, ctx.job_id)  # the Stop button, pressed during the first batch
        return original(ctx, *args, **kwargs)

    monkeypatch.setattr(jobs.JobContext, "progress", cancel_then_progress)
    job_id = customer_import.start_job(manager, mixed["path"], mixed["mapping"], dry_run=False)
    view = customer_import.job_progress(manager, job_id)
    assert (view.status, view.result) == ("cancelled", {"inserted": 2, "rows": 2})
    assert scalar("SELECT count(*) FROM customer") == before + 2
    action, result, details = import_audits()[-1]
    assert (action, result, json.loads(details)["inserted"]) == ("customer.import", "error", 2)


def _orphaned_job(actor, kind: str, params: dict, checkpoint: dict) -> int:
    """A job a process on another machine was running and stopped beating for long."""
    job_id = jobs.create_job(actor, kind, params)
    with write_session() as session:
        job = session.get(Job, job_id)
        job.status, job.owner = "running", "other-host|boot|pid:[1]|4242|99"
        job.heartbeat_at = utcnow() - dt.timedelta(hours=1)
        job.checkpoint = json.dumps(checkpoint)
        session.add(job)
    return job_id


def test_after_a_restart_an_interrupted_import_fails_saying_what_went_in_and_a_check_runs_again(seeded_actors, mixed):
    manager = seeded_actors["manager"]
    before = scalar("SELECT count(*) FROM customer")
    params = {"path": str(mixed["path"]), "mapping": {str(k): v for k, v in mixed["mapping"].items()}}
    interrupted = _orphaned_job(
        manager, customer_import.IMPORT_JOB_KIND, {**params, "file_name": "mixed.csv"}, {"rows": 2, "inserted": 2}
    )
    check = _orphaned_job(manager, customer_import.CHECK_JOB_KIND, params, {})

    assert sorted(jobs.resume_interrupted_jobs()) == sorted([interrupted, check])
    assert jobs.wait([interrupted, check], 30)

    view = customer_import.job_progress(manager, interrupted)
    assert (view.status, view.error, view.error_params) == ("failed", "import.error.interrupted", {"inserted": "2"})
    assert scalar("SELECT count(*) FROM customer") == before  # not imported a second time
    action, result, details = import_audits()[-1]
    assert (action, result, json.loads(details)["inserted"], json.loads(details)["file"]) == (
        "customer.import",
        "error",
        2,
        "mixed.csv",
    )
    assert customer_import.job_report(manager, check).total_rows == 7  # a check saves nothing: it ran again
