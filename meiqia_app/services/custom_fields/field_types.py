"""Custom field types: what a valid value is, its canonical stored form, how it reads.

Pure: no database, no Reflex. One place decides, per type, what a person (or
an import, or an API client) may write, and the form it is stored in inside
``customer.custom_fields``, chosen so that SQL filters and sorts work on the
stored value as it is (dbadapter ``custom_value``):

============== ============================================ ========= =========================
type           stored                                       SQL kind  index (ix_cf_<key>)
============== ============================================ ========= =========================
text           string, one line, ≤ 255                      text      none (equals walks)
long_text      string, ≤ 4,000, line breaks kept            text      none
number         JSON number (int, or ≤ 4 decimals), |x|<1e12 number    (status, value, id)
money          integer cents (¥12.30 → 1230)                number    (status, value, id)
percent        JSON number in percent, ≤ 2 decimals (12.5)  number    (status, value, id)
date           "YYYY-MM-DD"                                 text      (status, value, id)
datetime       "YYYY-MM-DDTHH:MM:SSZ" (UTC)                 text      (status, value, id)
single_select  option id ("o3")                             text      (status, value, last_active_at, id)
multi_select   JSON array of option ids, in id order        —         none (any-of walks)
yes_no         true / false                                 bool      (status, value, last_active_at, id)
link           http(s) URL, ≤ 2,048                         text      none
phone          as the customer's phone (customer_validation)text      none
email          as the customer's e-mail (normalised)        text      none
============== ============================================ ========= =========================

An empty value is *no key at all* in the document (never null, "" or []):
"empty" is ``value IS NULL`` in SQL, for every type.

Errors are :class:`FieldValueError` with a message key that names the field in
both languages (its ``field`` parameter is ``{"zh": …, "en": …}``; ``i18n.tr``
picks the reader's); services turn them into ``ValidationError`` keyed
``cf.<key>``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterable, Sequence
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from urllib.parse import urlsplit

from meiqia_app.models.custom_field import FIELD_TYPES
from meiqia_app.services.customers.validation import normalize_email, normalize_phone
from meiqia_app.timeutil import as_utc, local_to_utc, to_local

#: How custom fields are named wherever built-in fields are named (exports, audit diffs,
#: the table of sensitive fields, list columns): "cf.<key>".
FIELD_PREFIX = "cf."

TEXT_MAX = 255
LONG_TEXT_MAX = 4000
LINK_MAX = 2048
NUMBER_LIMIT = Decimal(10) ** 12
NUMBER_PLACES = 4
PERCENT_LIMIT = Decimal(10) ** 6
MULTI_MAX = 50
MIN_YEAR, MAX_YEAR = 1900, 2200

# The SQL kind of each type's stored value (dbadapter.base: "text" | "number" | "bool");
# None: not comparable as one value (multi select: an array).
VALUE_KIND = {
    "text": "text",
    "long_text": "text",
    "number": "number",
    "money": "number",
    "percent": "number",
    "date": "text",
    "datetime": "text",
    "single_select": "text",
    "multi_select": None,
    "yes_no": "bool",
    "link": "text",
    "phone": "text",
    "email": "text",
}
# Which types get an index, and its shape: "equality" (status, value, last_active_at, id):
# a filter walked in the list's default order; "ordered" (status, value, id): ranges and
# sorts by the value. The others are filtered by walking the sort index (see the docs).
INDEX_SHAPE = {
    "number": "ordered",
    "money": "ordered",
    "percent": "ordered",
    "date": "ordered",
    "datetime": "ordered",
    "single_select": "equality",
    "yes_no": "equality",
}
# The filter operators each type offers (services/custom_field_values.condition).
OPERATORS = {
    "text": ("equals", "any_of", "empty", "not_empty"),
    "long_text": ("empty", "not_empty"),
    "number": ("equals", "range", "empty", "not_empty"),
    "money": ("equals", "range", "empty", "not_empty"),
    "percent": ("equals", "range", "empty", "not_empty"),
    "date": ("equals", "range", "empty", "not_empty"),
    "datetime": ("range", "empty", "not_empty"),
    "single_select": ("equals", "any_of", "empty", "not_empty"),
    "multi_select": ("any_of", "empty", "not_empty"),
    "yes_no": ("equals", "empty", "not_empty"),
    "link": ("equals", "empty", "not_empty"),
    "phone": ("equals", "empty", "not_empty"),
    "email": ("equals", "empty", "not_empty"),
}
SELECT_TYPES = ("single_select", "multi_select")
# Free text that may name or identify a person: the audit log keeps a reference
# (audit.text_ref), not the value, like the customer's name (customer_edit).
FREE_TEXT_TYPES = ("text", "long_text", "link", "phone", "email")

assert set(VALUE_KIND) == set(FIELD_TYPES) == set(OPERATORS)

_YES = {"true", "1", "yes", "y", "是", "对", "✓"}
_NO = {"false", "0", "no", "n", "否", "不是"}
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_MONEY_SIGNS = re.compile(r"^[¥￥]|^CNY|^RMB|元$", re.IGNORECASE)
_LIST_SEPARATORS = re.compile(r"[,，、;；\n]")


@dataclasses.dataclass(frozen=True)
class Option:
    """A select's option: a stable id (never reused), labels, order, retired or not."""

    id: str
    zh: str
    en: str = ""
    order: int = 0
    retired: bool = False

    def label(self, lang: str) -> str:
        return (self.en or self.zh) if lang == "en" else self.zh

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class FieldDef:
    """One custom field's definition as services use it (models/custom_field.py is the row)."""

    id: int
    key: str
    label_zh: str
    label_en: str
    field_type: str
    options: tuple[Option, ...] = ()
    group_zh: str = ""
    group_en: str = ""
    required: bool = False
    default: object = None
    sensitive: bool = False
    shown_in_list: bool = False
    sort_order: int = 0
    status: str = "active"
    version: int = 1

    @property
    def name(self) -> str:
        """The field's name among the customer's fields: "cf.<key>"."""
        return FIELD_PREFIX + self.key

    @property
    def active(self) -> bool:
        return self.status == "active"

    def label(self, lang: str) -> str:
        return (self.label_en or self.label_zh) if lang == "en" else self.label_zh

    def group(self, lang: str) -> str:
        return (self.group_en or self.group_zh) if lang == "en" else self.group_zh

    @property
    def labels(self) -> dict[str, str]:
        """The label in both languages: the ``field`` parameter of its messages."""
        return {"zh": self.label_zh, "en": self.label_en or self.label_zh}

    @property
    def value_kind(self) -> str | None:
        return VALUE_KIND[self.field_type]

    @property
    def index_shape(self) -> str | None:
        return INDEX_SHAPE.get(self.field_type)

    @property
    def operators(self) -> tuple[str, ...]:
        return OPERATORS[self.field_type]

    @property
    def sortable(self) -> bool:
        return self.index_shape is not None

    def option(self, option_id: str) -> Option | None:
        return next((o for o in self.options if o.id == option_id), None)

    def ordered_options(self, include_retired: bool = False) -> list[Option]:
        return sorted((o for o in self.options if include_retired or not o.retired), key=lambda o: (o.order, o.id))


def field_name(key: str) -> str:
    return FIELD_PREFIX + key


def key_of(name: str) -> str | None:
    """The key of a "cf.<key>" field name; None for any other name."""
    return name[len(FIELD_PREFIX) :] if isinstance(name, str) and name.startswith(FIELD_PREFIX) else None


class FieldValueError(ValueError):
    """A value the field does not accept: a message key and its parameters (``field`` named in zh and en)."""

    def __init__(self, field: FieldDef, message_key: str, **params: object) -> None:
        super().__init__(message_key)
        self.field_name = field.name
        self.message_key = message_key
        self.params = {"field": field.labels, **params}


def is_empty(raw: object) -> bool:
    if raw is None:
        return True
    if isinstance(raw, str):
        return not raw.strip()
    if isinstance(raw, (list, tuple, set)):
        return not any(not is_empty(item) for item in raw)
    return False


# --- coercion: input -> canonical -----------------------------------------------------------


def coerce(field: FieldDef, raw: object, current: object = None) -> object:
    """The canonical stored value of ``raw`` for ``field``; None for an empty value.

    ``current`` is the stored value being replaced: a select option retired since
    keeps being accepted where it is already stored (nothing is lost by saving a form).
    Raises FieldValueError. Required-ness is the caller's (an edit may leave a field alone).
    """
    if is_empty(raw):
        return None
    if isinstance(raw, dict):
        raise FieldValueError(field, _error_key(field.field_type))
    coercer = _COERCERS[field.field_type]
    return coercer(field, raw, current)


def _error_key(field_type: str) -> str:
    return {
        "text": "error.cf_text",
        "long_text": "error.cf_text",
        "number": "error.cf_number",
        "money": "error.cf_money",
        "percent": "error.cf_percent",
        "date": "error.cf_date",
        "datetime": "error.cf_datetime",
        "single_select": "error.cf_option",
        "multi_select": "error.cf_option",
        "yes_no": "error.cf_yes_no",
        "link": "error.cf_link",
        "phone": "error.cf_phone",
        "email": "error.cf_email",
    }[field_type]


def _plain_text(field: FieldDef, raw: object) -> str:
    if isinstance(raw, (list, tuple, set, bool)):
        raise FieldValueError(field, "error.cf_text")
    text = str(raw)
    if "\x00" in text:
        raise FieldValueError(field, "error.cf_text")
    return text


def _text(field: FieldDef, raw: object, _current: object) -> str:
    text = " ".join(_CONTROL.sub(" ", _plain_text(field, raw)).split())
    if len(text) > TEXT_MAX:
        raise FieldValueError(field, "error.cf_too_long", max=TEXT_MAX)
    return text


def _long_text(field: FieldDef, raw: object, _current: object) -> str:
    text = _CONTROL.sub(" ", _plain_text(field, raw).replace("\r\n", "\n").replace("\r", "\n")).strip()
    if len(text) > LONG_TEXT_MAX:
        raise FieldValueError(field, "error.cf_too_long", max=LONG_TEXT_MAX)
    return text


def _decimal(field: FieldDef, raw: object, strip: re.Pattern | None = None) -> Decimal:
    key = _error_key(field.field_type)
    if isinstance(raw, bool) or isinstance(raw, (list, tuple, set)):
        raise FieldValueError(field, key)
    if isinstance(raw, float):
        raw = repr(raw)
    text = str(raw).strip().replace(",", "").replace("，", "").replace(" ", "")
    if strip is not None:
        text = strip.sub("", text).strip()
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise FieldValueError(field, key) from None
    if not number.is_finite():
        raise FieldValueError(field, key)
    return number


def _places(number: Decimal) -> int:
    exponent = number.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def _json_number(number: Decimal) -> int | float:
    number = number.normalize()
    if number == number.to_integral_value():
        return int(number)
    return float(number)


def _number(field: FieldDef, raw: object, _current: object) -> int | float:
    number = _decimal(field, raw)
    if abs(number) >= NUMBER_LIMIT:
        raise FieldValueError(field, "error.cf_number_range", max="1,000,000,000,000")
    if _places(number) > NUMBER_PLACES:
        raise FieldValueError(field, "error.cf_places", places=NUMBER_PLACES)
    return _json_number(number)


def _money(field: FieldDef, raw: object, _current: object) -> int:
    number = _decimal(field, raw, _MONEY_SIGNS)
    if abs(number) >= NUMBER_LIMIT:
        raise FieldValueError(field, "error.cf_number_range", max="1,000,000,000,000")
    if _places(number) > 2:
        raise FieldValueError(field, "error.cf_places", places=2)
    return int((number * 100).to_integral_value(ROUND_HALF_EVEN))


def _percent(field: FieldDef, raw: object, _current: object) -> int | float:
    number = _decimal(field, raw, re.compile(r"%$|％$"))
    if abs(number) >= PERCENT_LIMIT:
        raise FieldValueError(field, "error.cf_number_range", max="1,000,000")
    if _places(number) > 2:
        raise FieldValueError(field, "error.cf_places", places=2)
    return _json_number(number)


def _date(field: FieldDef, raw: object, _current: object) -> str:
    if isinstance(raw, dt.datetime):
        day = to_local(raw).date() if raw.tzinfo else raw.date()
    elif isinstance(raw, dt.date):
        day = raw
    else:
        text = str(raw).strip().replace("/", "-").replace(".", "-")
        try:
            day = dt.date.fromisoformat(text[:10]) if len(text) >= 10 else _loose_date(text)
        except ValueError:
            raise FieldValueError(field, "error.cf_date") from None
        if len(text) > 10 and text[10] not in "T ":
            raise FieldValueError(field, "error.cf_date")
    if not MIN_YEAR <= day.year <= MAX_YEAR:
        raise FieldValueError(field, "error.cf_date")
    return day.isoformat()


def _loose_date(text: str) -> dt.date:
    """2026-1-5 (no leading zeros)."""
    parts = text.split("-")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(text)
    return dt.date(int(parts[0]), int(parts[1]), int(parts[2]))


def _datetime(field: FieldDef, raw: object, _current: object) -> str:
    """Stored as UTC "YYYY-MM-DDTHH:MM:SSZ"; a time without zone is local (the console's form)."""
    if isinstance(raw, dt.datetime):
        moment = raw
    elif isinstance(raw, dt.date):
        raise FieldValueError(field, "error.cf_datetime")
    else:
        text = str(raw).strip().replace("Z", "+00:00").replace("z", "+00:00")
        try:
            moment = dt.datetime.fromisoformat(text)
        except ValueError:
            raise FieldValueError(field, "error.cf_datetime") from None
    moment = as_utc(moment) if moment.tzinfo else local_to_utc(moment)
    if not MIN_YEAR <= moment.year <= MAX_YEAR:
        raise FieldValueError(field, "error.cf_datetime")
    return moment.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _resolve_option(field: FieldDef, raw: object, kept: Iterable[str]) -> str:
    """An option id from an id or a label (either language, letter case aside)."""
    if not isinstance(raw, (str, int)) or isinstance(raw, bool):
        raise FieldValueError(field, "error.cf_option")
    text = str(raw).strip()
    option = field.option(text)
    if option is None:
        folded = text.casefold()
        matches = [o for o in field.options if folded in (o.zh.casefold(), (o.en or "").casefold())]
        live = [o for o in matches if not o.retired]
        option = (live or matches or [None])[0]
    if option is None:
        raise FieldValueError(field, "error.cf_option", value=text[:40])
    if option.retired and option.id not in set(kept):
        raise FieldValueError(field, "error.cf_option_retired", value=option.zh)
    return option.id


def option_sort_key(option_id: str) -> tuple[int, str]:
    digits = option_id[1:]
    return (int(digits), option_id) if digits.isdigit() else (1 << 30, option_id)


def _single_select(field: FieldDef, raw: object, current: object) -> str:
    if isinstance(raw, (list, tuple)):
        if len(raw) != 1:
            raise FieldValueError(field, "error.cf_option")
        raw = raw[0]
    return _resolve_option(field, raw, [current] if isinstance(current, str) else [])


def _multi_select(field: FieldDef, raw: object, current: object) -> list[str] | None:
    if isinstance(raw, str):
        items: Sequence = [part for part in _LIST_SEPARATORS.split(raw) if part.strip()]
    elif isinstance(raw, (list, tuple, set)):
        items = [item for item in raw if not is_empty(item)]
    else:
        raise FieldValueError(field, "error.cf_option")
    if len(items) > MULTI_MAX:
        raise FieldValueError(field, "error.cf_too_many", max=MULTI_MAX)
    kept = current if isinstance(current, list) else []
    chosen = {_resolve_option(field, item, kept) for item in items}
    return sorted(chosen, key=option_sort_key) or None


def _yes_no(field: FieldDef, raw: object, _current: object) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int) and raw in (0, 1):
        return bool(raw)
    text = str(raw).strip().casefold()
    if text in _YES:
        return True
    if text in _NO:
        return False
    raise FieldValueError(field, "error.cf_yes_no")


def _link(field: FieldDef, raw: object, _current: object) -> str:
    text = _plain_text(field, raw).strip()
    if len(text) > LINK_MAX:
        raise FieldValueError(field, "error.cf_too_long", max=LINK_MAX)
    if "://" not in text:
        text = "https://" + text
    if any(ch.isspace() for ch in text) or _CONTROL.search(text):
        raise FieldValueError(field, "error.cf_link")
    try:
        parts = urlsplit(text)
    except ValueError:
        raise FieldValueError(field, "error.cf_link") from None
    host = parts.hostname or ""
    if parts.scheme.lower() not in ("http", "https") or not host or ("." not in host and host != "localhost"):
        raise FieldValueError(field, "error.cf_link")
    return text


def _phone(field: FieldDef, raw: object, _current: object) -> str:
    text = _plain_text(field, raw).strip()
    try:
        return normalize_phone(text)
    except ValueError:
        raise FieldValueError(field, "error.cf_phone") from None


def _email(field: FieldDef, raw: object, _current: object) -> str:
    text = _plain_text(field, raw).strip()
    if len(text) > 254:
        raise FieldValueError(field, "error.cf_email")
    try:
        return normalize_email(text)
    except ValueError:
        raise FieldValueError(field, "error.cf_email") from None


_COERCERS = {
    "text": _text,
    "long_text": _long_text,
    "number": _number,
    "money": _money,
    "percent": _percent,
    "date": _date,
    "datetime": _datetime,
    "single_select": _single_select,
    "multi_select": _multi_select,
    "yes_no": _yes_no,
    "link": _link,
    "phone": _phone,
    "email": _email,
}
assert set(_COERCERS) == set(FIELD_TYPES)


# --- reading: canonical -> what people see ---------------------------------------------------


def _number_text(value: int | float) -> str:
    if isinstance(value, bool):
        return str(value)
    number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    text = f"{number:,f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def display(field: FieldDef, value: object, lang: str = "zh") -> str:
    """The stored value as the detail page shows it ("" when empty). Unexpected stored
    values (written by hand into the database) are shown as they are, never raised."""
    if value is None:
        return ""
    kind = field.field_type
    try:
        if kind == "money":
            return f"¥{Decimal(int(value)) / 100:,.2f}"
        if kind == "percent":
            return _number_text(value) + "%"
        if kind == "number":
            return _number_text(value)
        if kind == "datetime":
            moment = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
            return to_local(moment).strftime("%Y-%m-%d %H:%M")
        if kind == "yes_no":
            return ("是" if value else "否") if lang != "en" else ("Yes" if value else "No")
        if kind == "single_select":
            return option_label(field, str(value), lang)
        if kind == "multi_select":
            ids = value if isinstance(value, list) else [value]
            separator = "、" if lang != "en" else ", "
            return separator.join(option_label(field, str(i), lang) for i in _in_option_order(field, ids))
    except (TypeError, ValueError, ArithmeticError):
        return str(value)
    return str(value)


def option_label(field: FieldDef, option_id: str, lang: str = "zh") -> str:
    option = field.option(option_id)
    return option.label(lang) if option is not None else option_id


def _in_option_order(field: FieldDef, ids: Sequence) -> list:
    order = {o.id: (o.order, option_sort_key(o.id)) for o in field.options}
    return sorted(ids, key=lambda i: order.get(str(i), (1 << 30, option_sort_key(str(i)))))


def form_value(field: FieldDef, value: object) -> str | list[str]:
    """The stored value as the edit form holds it: text for inputs ("12.30" for money,
    local "YYYY-MM-DDTHH:MM" for a datetime input, "true"/"false" for yes/no), the
    option ids of a multi select."""
    if value is None:
        return [] if field.field_type == "multi_select" else ""
    kind = field.field_type
    try:
        if kind == "money":
            return f"{Decimal(int(value)) / 100:.2f}"
        if kind in ("number", "percent"):
            return _number_text(value).replace(",", "")
        if kind == "datetime":
            moment = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
            return to_local(moment).strftime("%Y-%m-%dT%H:%M")
        if kind == "yes_no":
            return "true" if value else "false"
        if kind == "multi_select":
            return [str(i) for i in _in_option_order(field, value if isinstance(value, list) else [value])]
    except (TypeError, ValueError, ArithmeticError):
        return str(value)
    return str(value)


def typed(field: FieldDef, value: object) -> object:
    """The stored value as a typed Python value, for cells of the right type in exports:
    Decimal for number, money (in yuan) and percent; date; aware UTC datetime; bool;
    option ids for selects (``display`` gives their labels); str otherwise."""
    if value is None:
        return None
    kind = field.field_type
    try:
        if kind == "money":
            return Decimal(int(value)) / 100
        if kind in ("number", "percent"):
            return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
        if kind == "date":
            return dt.date.fromisoformat(str(value))
        if kind == "datetime":
            return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        if kind == "yes_no":
            return bool(value)
    except (TypeError, ValueError, ArithmeticError):
        return str(value)
    return value


def sql_bound(field: FieldDef, raw: object) -> object:
    """A filter bound or value in the stored form (a range on money is given in yuan);
    raises FieldValueError. Retired options are accepted: a filter may find old values."""
    if field.field_type in SELECT_TYPES:
        ids = {o.id for o in field.options}
        return _resolve_option(field, raw, ids)
    value = coerce(field, raw)
    if value is None:
        raise FieldValueError(field, _error_key(field.field_type))
    return value
