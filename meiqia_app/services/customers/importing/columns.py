"""Which column holds which field: header aliases in Chinese and English, the suggested mapping, the chosen mapping checked."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from meiqia_app.i18n.messages import ENTRIES
from meiqia_app.services.custom_fields.field_types import FieldDef
from meiqia_app.services.customers.importing.custom_values import field_of, header_names
from meiqia_app.services.customers.validation import EDITABLE_FIELDS
from meiqia_app.services.errors import ValidationError

# --- mapping --------------------------------------------------------------------------------

_HEADER_ALIASES: dict[str, tuple[str, ...]] = {
    "name": (
        "姓名",
        "名字",
        "客户姓名",
        "客户名称",
        "客户名",
        "名称",
        "联系人",
        "联系人姓名",
        "客户",
        "真实姓名",
        "name",
        "fullname",
        "customername",
        "customer",
        "contactname",
        "contact",
    ),
    "gender": ("性别", "gender", "sex"),
    "birthday": ("生日", "出生日期", "出生年月日", "出生年月", "birthday", "birthdate", "dateofbirth", "dob"),
    "phone": (
        "手机",
        "手机号",
        "手机号码",
        "电话",
        "电话号码",
        "联系电话",
        "联系方式",
        "移动电话",
        "手机电话",
        "phone",
        "phonenumber",
        "mobile",
        "mobilephone",
        "mobilenumber",
        "tel",
        "telephone",
        "cellphone",
        "cell",
    ),
    "email": ("邮箱", "电子邮箱", "邮件", "电子邮件", "邮箱地址", "电邮", "email", "emailaddress", "mail"),
    "address": (
        "地址",
        "详细地址",
        "联系地址",
        "收货地址",
        "通讯地址",
        "家庭地址",
        "address",
        "streetaddress",
        "street",
    ),
    "province": ("省份", "省", "所在省份", "省市", "省/直辖市", "province", "state"),
    "city": ("城市", "市", "所在城市", "city", "town"),
    "company": (
        "公司",
        "公司名称",
        "单位",
        "工作单位",
        "企业",
        "企业名称",
        "所属公司",
        "company",
        "companyname",
        "organization",
        "organisation",
        "org",
        "employer",
    ),
    "source": ("来源", "来源渠道", "渠道", "客户来源", "source", "channel", "leadsource"),
    "external_id": (
        "外部id",
        "外部编号",
        "客户编号",
        "客户id",
        "会员编号",
        "会员id",
        "会员号",
        "externalid",
        "customerid",
        "customerno",
        "memberid",
        "memberno",
    ),
    "visitor_id": ("访客id", "访客编号", "美洽访客id", "visitorid", "visitor"),
    "lifecycle_stage": ("生命周期", "生命周期阶段", "客户阶段", "阶段", "lifecycle", "lifecyclestage", "stage"),
    "membership_tier": (
        "会员等级",
        "等级",
        "会员级别",
        "会员类型",
        "会员",
        "tier",
        "membershiptier",
        "membership",
        "memberlevel",
        "level",
    ),
}
# Our own labels for the fields (the export's column headers) map back too.
FIELD_LABEL_KEYS: dict[str, str] = {
    field: {"lifecycle_stage": "customer.lifecycle", "membership_tier": "customer.tier"}.get(field, f"customer.{field}")
    for field in EDITABLE_FIELDS
}
# Words too general to suggest a field when they only appear inside a longer
# header (客户类型 is not a name, 产品名称 is not one either).
_EXACT_ONLY = {
    "客户",
    "会员",
    "名称",
    "等级",
    "阶段",
    "单位",
    "企业",
    "联系人",
    "联系方式",
    "mail",
    "cell",
    "level",
    "stage",
    "state",
    "town",
    "customer",
    "contact",
    "visitor",
    "membership",
    "street",
    "channel",
}
_BRACKETS = re.compile(r"[(（\[【].*?[)）\]】]")
_HEADER_NOISE = re.compile(r"[\s_\-.:：*＊#]+")


def _header_key(header: str) -> str:
    """张三's "手机号码（必填）*" and "Mobile_Phone" alike: NFKC, lower case, no brackets or punctuation."""
    text = unicodedata.normalize("NFKC", str(header or "")).lower()
    text = _BRACKETS.sub("", text)
    return _HEADER_NOISE.sub("", text)


def _build_aliases() -> dict[str, str]:
    aliases: dict[str, str] = {}
    for field in EDITABLE_FIELDS:
        names = list(_HEADER_ALIASES.get(field, ())) + [field]
        names += list(ENTRIES.get(FIELD_LABEL_KEYS[field], ()))
        for name in names:
            aliases.setdefault(_header_key(name), field)
    return aliases


_ALIASES = _build_aliases()


def _header_guess(header: str) -> tuple[int, str] | None:
    """(score, field): an exact alias scores highest, else the longest alias inside the header."""
    key = _header_key(header)
    if not key:
        return None
    if key in _ALIASES:
        return 1000, _ALIASES[key]
    best: tuple[int, str] | None = None
    for alias, field in _ALIASES.items():
        short_latin = alias.isascii() and len(alias) < 4
        if len(alias) < 2 or short_latin or alias in _EXACT_ONLY or alias not in key:
            continue
        if best is None or len(alias) > best[0]:
            best = (len(alias), field)
    return best


def _custom_aliases(fields: Sequence[FieldDef]) -> dict[str, str]:
    """Header key -> "cf.<key>" of the given custom fields: a header equal to a field's label
    (either language) or its key. Matched exactly only, and before the built-in names (an
    admin who names a field "来源" means that column)."""
    aliases: dict[str, str] = {}
    for field in fields:
        for name in header_names(field):
            aliases.setdefault(_header_key(name), field.name)
    return aliases


def suggest_mapping(headers: Sequence[str], custom_fields: Sequence[FieldDef] = ()) -> dict[int, str]:
    """Column index -> customer field (or custom field "cf.<key>"), for the headers we recognise.

    ``custom_fields``: the active custom fields (``custom_values.active_fields()``).
    Each field is proposed for one column at most: exact names first (custom fields'
    labels and keys before built-in names), then the column whose header contains the
    longest known built-in name, left to right.
    """
    guesses = []
    custom = _custom_aliases(custom_fields)
    for index, header in enumerate(headers):
        if _header_key(header) in custom:
            guesses.append((-1001, index, custom[_header_key(header)]))
            continue
        guess = _header_guess(header)
        if guess is not None:
            guesses.append((-guess[0], index, guess[1]))
    mapping: dict[int, str] = {}
    taken: set[str] = set()
    for _score, index, field in sorted(guesses):
        if field not in taken:
            mapping[index] = field
            taken.add(field)
    return dict(sorted(mapping.items()))


def field_label(field: str, lang: str = "zh") -> str:
    """A mapped field's name for people: a custom field's label, a built-in field's message."""
    from meiqia_app.i18n import tr

    found = field_of(field)
    if found is not None:
        return found.label(lang)
    key = FIELD_LABEL_KEYS.get(field)
    return tr(lang, key) if key else field


def resolve_mapping(headers: Sequence[str], mapping: dict) -> dict[int, str]:
    """Check a mapping from the page: keys are column indexes (or header texts), values fields
    (built-in, or an active custom field "cf.<key>").

    Empty values mean "do not import this column". Raises ValidationError.
    """
    if not isinstance(mapping, dict):
        raise ValidationError.single("mapping", "import.unknown_column")
    positions = {header: index for index, header in reversed(list(enumerate(headers)))}
    resolved: dict[int, str] = {}
    for key, field in mapping.items():
        if field in (None, ""):
            continue
        if field not in EDITABLE_FIELDS and field_of(field) is None:
            raise ValidationError.single("mapping", "import.unknown_field")
        if isinstance(key, bool):
            raise ValidationError.single("mapping", "import.unknown_column")
        if isinstance(key, int):
            index = key
        elif isinstance(key, str) and key in positions:
            index = positions[key]
        elif isinstance(key, str) and key.strip().isdigit():
            index = int(key)
        else:
            raise ValidationError.single("mapping", "import.unknown_column")
        if not 0 <= index < len(headers):
            raise ValidationError.single("mapping", "import.unknown_column")
        if field in resolved.values() and resolved.get(index) != field:
            raise ValidationError.single("mapping", "import.field_mapped_twice")
        resolved[index] = field
    if "name" not in resolved.values():
        raise ValidationError.single("mapping", "import.name_not_mapped")
    return dict(sorted(resolved.items()))
