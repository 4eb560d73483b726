"""services/custom_field_types.py: per type, what is accepted, its canonical stored form, how it reads.

Pure: no database.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from pathlib import Path

import pytest

from meiqia_app.i18n import tr
from meiqia_app.i18n.messages import ENTRIES
from meiqia_app.models.custom_field import FIELD_TYPES
from meiqia_app.services.custom_fields import field_types as types
from meiqia_app.services.custom_fields.field_types import FieldDef, FieldValueError, Option, coerce, display, form_value

OPTIONS = (
    Option("o1", "官网", "Website", 1),
    Option("o2", "门店", "Store", 2),
    Option("o3", "老客户推荐", "Referral", 3),
    Option("o4", "展会", "Trade fair", 4, retired=True),
)


def field(field_type: str, **extra) -> FieldDef:
    return FieldDef(
        id=1,
        key="probe",
        label_zh="测试字段",
        label_en="Probe",
        field_type=field_type,
        options=OPTIONS if field_type in types.SELECT_TYPES else (),
        **extra,
    )


def refused(field_type: str, raw, current=None) -> FieldValueError:
    with pytest.raises(FieldValueError) as caught:
        coerce(field(field_type), raw, current)
    return caught.value


# --- canonical forms -----------------------------------------------------------------------------

CANONICAL = [
    ("text", "  两个   空格\n换行 ", "两个 空格 换行"),
    ("long_text", " 第一行\r\n第二行 ", "第一行\n第二行"),
    ("number", "1,234", 1234),
    ("number", "-0.5", -0.5),
    ("number", 3.25, 3.25),
    ("number", "12.3400", 12.34),
    ("money", "¥1,234.5", 123450),
    ("money", "12.30元", 1230),
    ("money", 0.1, 10),
    ("money", "-3", -300),
    ("percent", "12.5%", 12.5),
    ("percent", "100", 100),
    ("date", "2026-3-5", "2026-03-05"),
    ("date", "2026/03/05", "2026-03-05"),
    ("date", dt.date(2026, 3, 5), "2026-03-05"),
    ("datetime", "2026-03-05T08:30:00Z", "2026-03-05T08:30:00Z"),
    ("datetime", "2026-03-05T16:30:00+08:00", "2026-03-05T08:30:00Z"),
    ("datetime", "2026-03-05 16:30", "2026-03-05T08:30:00Z"),  # local (Asia/Shanghai) without a zone
    ("single_select", "o2", "o2"),
    ("single_select", "门店", "o2"),
    ("single_select", "store", "o2"),
    ("multi_select", ["o3", "官网", "o3"], ["o1", "o3"]),
    ("multi_select", "官网，门店", ["o1", "o2"]),
    ("yes_no", True, True),
    ("yes_no", "是", True),
    ("yes_no", "false", False),
    ("yes_no", 0, False),
    ("link", "www.meiqia.com/a?b=1", "https://www.meiqia.com/a?b=1"),
    ("link", "http://example.cn", "http://example.cn"),
    ("phone", "+86 138-1234-5678", "13812345678"),
    ("email", " Zhang.San@Example.COM ", "Zhang.San@example.com"),
]


@pytest.mark.parametrize(("field_type", "raw", "stored"), CANONICAL)
def test_each_type_stores_its_canonical_form(field_type, raw, stored):
    value = coerce(field(field_type), raw)
    assert value == stored and type(value) is type(stored)
    # Coercing the stored form again changes nothing (a form saved unchanged stays unchanged).
    again = coerce(field(field_type), form_value(field(field_type), value))
    assert again == stored


def test_every_type_is_covered():
    assert {t for t, _raw, _stored in CANONICAL} == set(FIELD_TYPES)


@pytest.mark.parametrize("raw", [None, "", "   ", [], ["", None]])
@pytest.mark.parametrize("field_type", FIELD_TYPES)
def test_empty_input_is_no_value_for_every_type(field_type, raw):
    assert coerce(field(field_type), raw) is None


# --- refusals ------------------------------------------------------------------------------------

REFUSED = [
    ("text", "x" * 256, "error.cf_too_long"),
    ("text", "a\x00b", "error.cf_text"),
    ("text", ["a"], "error.cf_text"),
    ("long_text", "x" * 4001, "error.cf_too_long"),
    ("number", "12abc", "error.cf_number"),
    ("number", "NaN", "error.cf_number"),
    ("number", "Infinity", "error.cf_number"),
    ("number", True, "error.cf_number"),
    ("number", "1e13", "error.cf_number_range"),
    ("number", "0.12345", "error.cf_places"),
    ("money", "12.345", "error.cf_places"),
    ("money", "一百", "error.cf_money"),
    ("percent", "12.345%", "error.cf_places"),
    ("date", "2026-02-30", "error.cf_date"),
    ("date", "1899-12-31", "error.cf_date"),
    ("date", "tomorrow", "error.cf_date"),
    ("datetime", "2026-03-05 25:00", "error.cf_datetime"),
    ("datetime", dt.date(2026, 3, 5), "error.cf_datetime"),
    ("single_select", "o9", "error.cf_option"),
    ("single_select", "展会", "error.cf_option_retired"),
    ("single_select", ["o1", "o2"], "error.cf_option"),
    ("multi_select", ["o1", "nope"], "error.cf_option"),
    ("multi_select", [f"o{i}" for i in range(60)], "error.cf_too_many"),
    ("yes_no", "maybe", "error.cf_yes_no"),
    ("link", "javascript:alert(1)", "error.cf_link"),
    ("link", "ftp://example.com/file", "error.cf_link"),
    ("link", "https://exa mple.com", "error.cf_link"),
    ("link", "not a link", "error.cf_link"),
    ("phone", "12345", "error.cf_phone"),
    ("email", "not-an-email", "error.cf_email"),
]


@pytest.mark.parametrize(("field_type", "raw", "key"), REFUSED)
def test_bad_values_are_refused_with_a_message_naming_the_field(field_type, raw, key):
    error = refused(field_type, raw)
    assert error.message_key == key
    assert error.field_name == "cf.probe"
    assert tr("zh", key, **error.params).startswith("测试字段") or "测试字段" in tr("zh", key, **error.params)
    assert "Probe" in tr("en", key, **error.params)
    assert "{" not in tr("en", key, **error.params) and "{" not in tr("zh", key, **error.params)


def test_a_structured_value_is_refused_by_every_type():
    for field_type in FIELD_TYPES:
        assert refused(field_type, {"a": 1}).field_name == "cf.probe"


def test_a_retired_option_stays_accepted_where_it_is_already_stored():
    assert coerce(field("single_select"), "o4", current="o4") == "o4"
    assert coerce(field("multi_select"), ["o4", "o1"], current=["o4"]) == ["o1", "o4"]
    assert refused("multi_select", ["o4", "o1"], current=["o1"]).message_key == "error.cf_option_retired"


def test_every_error_key_of_the_types_is_in_the_catalogue_in_both_languages():
    source = Path(types.__file__).read_text(encoding="utf-8")
    keys = set(re.findall(r'"(error\.cf_\w+)"', source))
    assert keys and keys <= set(ENTRIES)


# --- reading -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field_type", "stored", "zh", "en"),
    [
        ("money", 123450, "¥1,234.50", "¥1,234.50"),
        ("number", 1234.5, "1,234.5", "1,234.5"),
        ("percent", 12.5, "12.5%", "12.5%"),
        ("date", "2026-03-05", "2026-03-05", "2026-03-05"),
        ("datetime", "2026-03-05T08:30:00Z", "2026-03-05 16:30", "2026-03-05 16:30"),
        ("single_select", "o2", "门店", "Store"),
        ("single_select", "o4", "展会", "Trade fair"),  # retired: still shown
        ("multi_select", ["o3", "o1"], "官网、老客户推荐", "Website, Referral"),
        ("yes_no", False, "否", "No"),
        ("text", "你好", "你好", "你好"),
    ],
)
def test_stored_values_read_in_both_languages(field_type, stored, zh, en):
    assert display(field(field_type), stored, "zh") == zh
    assert display(field(field_type), stored, "en") == en


def test_a_value_written_by_hand_into_the_database_is_shown_not_raised():
    assert display(field("money"), "abc") == "abc"
    assert display(field("datetime"), "yesterday") == "yesterday"
    assert display(field("single_select"), "o99") == "o99"


def test_typed_values_for_export_cells():
    assert types.typed(field("money"), 123450) == Decimal("1234.50")
    assert types.typed(field("number"), 0.1) == Decimal("0.1")
    assert types.typed(field("date"), "2026-03-05") == dt.date(2026, 3, 5)
    assert types.typed(field("datetime"), "2026-03-05T08:30:00Z") == dt.datetime(2026, 3, 5, 8, 30, tzinfo=dt.UTC)
    assert types.typed(field("yes_no"), 1) is True
    assert types.typed(field("single_select"), "o2") == "o2"
    assert types.typed(field("text"), None) is None


def test_forms_hold_text_the_inputs_understand():
    assert form_value(field("money"), 1230) == "12.30"
    assert form_value(field("datetime"), "2026-03-05T08:30:00Z") == "2026-03-05T16:30"
    assert form_value(field("yes_no"), True) == "true"
    assert form_value(field("multi_select"), ["o3", "o1"]) == ["o1", "o3"]
    assert form_value(field("number"), 1234567.5) == "1234567.5"
    assert form_value(field("multi_select"), None) == [] and form_value(field("text"), None) == ""


def test_filter_bounds_use_the_stored_form():
    assert types.sql_bound(field("money"), "12.5") == 1250
    assert types.sql_bound(field("single_select"), "展会") == "o4"  # a filter may look for retired options
    with pytest.raises(FieldValueError):
        types.sql_bound(field("number"), "")


def test_field_names_and_keys():
    assert field("text").name == "cf.probe" and types.key_of("cf.probe") == "probe"
    assert types.key_of("phone") is None and types.key_of(None) is None
    assert field("text").labels == {"zh": "测试字段", "en": "Probe"}
    assert FieldDef(1, "k2", "只有中文", "", "text").labels == {"zh": "只有中文", "en": "只有中文"}
