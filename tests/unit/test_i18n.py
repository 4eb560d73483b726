"""The message catalogue: complete in both languages, and every key the code uses exists."""

from __future__ import annotations

import re
import string
from pathlib import Path

import pytest

import meiqia_app
from meiqia_app.i18n import EN, ZH, error_text, tr
from meiqia_app.i18n.messages import ENTRIES
from meiqia_app.models.activity import ORDER_STATUSES
from meiqia_app.models.customer import GENDERS, LIFECYCLE_STAGES, MEMBERSHIP_TIERS, SOURCES, STATUSES
from meiqia_app.services.customers.query import STATUS_CHOICES
from meiqia_app.services.errors import NotFound, ValidationError

SOURCE_ROOT = Path(meiqia_app.__file__).resolve().parent
KEY = r"""(["'])([A-Za-z_][\w-]*(?:\.[\w-]+)+)\1"""  # a quoted dotted literal: group 2


def _source_files() -> list[Path]:
    return sorted(p for p in SOURCE_ROOT.rglob("*.py") if "migrations" not in p.parts)


def _app_error_classes(sources: dict[Path, str]) -> set[str]:
    """AppError and every class defined in the code that derives from it (transitively)."""
    bases: dict[str, set[str]] = {}
    for text in sources.values():
        for name, parents in re.findall(r"^class\s+(\w+)\(([^)]*)\)", text, re.M):
            bases[name] = {p.strip().split(".")[-1] for p in parents.split(",")}
    found = {"AppError"}
    changed = True
    while changed:
        changed = False
        for name, parents in bases.items():
            if name not in found and parents & found:
                found.add(name)
                changed = True
    return found


def _patterns(error_classes: set[str]) -> list[re.Pattern]:
    errors = "|".join(sorted(error_classes))
    return [
        re.compile(p, re.S)
        for p in (
            rf"(?<![\w.])t\(\s*{KEY}",  # t("key") in pages and components
            rf"(?<![\w.])tr\(\s*[^,()'\"]+,\s*{KEY}",  # tr(lang, "key")
            rf"\._tr\(\s*{KEY}",  # self._tr("key")
            rf"\bmessage_key\s*(?:=|==|!=)\s*{KEY}",  # message_key = "key"
            rf"\b(?!foreign_key\b)\w*_key\s*=\s*{KEY}",  # title_key="key", label_key="key"
            rf"\b(?:{errors})\(\s*{KEY}",  # AuthError("key")
            rf"\b(?:{errors})\.single\(\s*['\"][^'\"]*['\"]\s*,\s*{KEY}",  # ValidationError.single(field, "key")
            rf"\brefuse\(\s*[^,()]+,\s*['\"][^'\"]*['\"],\s*{KEY}",  # rbac.refuse(actor, action, "key")
            rf"\bNavItem\(\s*['\"][^'\"]*['\"],\s*{KEY}",  # NavItem(href, "label key", ...)
        )
    ]


def _message_in_tuple(text: str) -> list[str]:
    """``error.message_key in ("a", "b")``"""
    keys = []
    for group in re.findall(r"\bmessage_key\s+(?:not\s+)?in\s+\(([^)]*)\)", text):
        keys += [m.group(2) for m in re.finditer(KEY, group)]
    return keys


def keys_used_in(sources: dict[Path, str]) -> dict[str, list[str]]:
    """Message keys written as literals in the code -> where."""
    used: dict[str, list[str]] = {}
    patterns = _patterns(_app_error_classes(sources))
    for path, text in sources.items():
        where = str(path.relative_to(SOURCE_ROOT.parent))
        for pattern in patterns:
            for match in pattern.finditer(text):
                key = match.groups()[-1]
                used.setdefault(key, []).append(f"{where}:{text.count(chr(10), 0, match.start()) + 1}")
        for key in _message_in_tuple(text):
            used.setdefault(key, []).append(where)
    return used


@pytest.fixture(scope="module")
def sources() -> dict[Path, str]:
    return {path: path.read_text(encoding="utf-8") for path in _source_files()}


# --- the catalogue itself -------------------------------------------------------------------


def test_every_entry_has_chinese_and_english_text():
    for key, pair in ENTRIES.items():
        assert isinstance(pair, tuple) and len(pair) == 2, key
        zh, en = pair
        assert isinstance(zh, str) and zh.strip(), f"{key}: empty Chinese text"
        assert isinstance(en, str) and en.strip(), f"{key}: empty English text"


def test_keys_are_well_formed():
    bad = [key for key in ENTRIES if not re.fullmatch(r"[a-z_]+(\.[A-Za-z0-9_]+)+", key)]
    assert bad == []


def placeholders(template: str) -> set[str]:
    return {field for _lit, field, _spec, _conv in string.Formatter().parse(template) if field is not None}


def test_placeholders_are_the_same_in_both_languages():
    mismatched = {
        key: (placeholders(zh), placeholders(en))
        for key, (zh, en) in ENTRIES.items()
        if placeholders(zh) != placeholders(en)
    }
    assert mismatched == {}


def test_placeholders_are_plain_names():
    for key, (zh, en) in ENTRIES.items():
        for name in placeholders(zh) | placeholders(en):
            assert re.fullmatch(r"[a-z_]+", name), f"{key}: placeholder {{{name}}}"


def test_catalogues_are_read_off_the_table():
    assert set(ZH) == set(EN) == set(ENTRIES)
    assert all(ZH[k] == zh and EN[k] == en for k, (zh, en) in ENTRIES.items())


def test_tr_formats_and_falls_back():
    assert tr("en", "auth.locked", minutes=15) == "Too many attempts; the account is locked. Try again in 15 minutes"
    assert "15" in tr("zh", "auth.locked", minutes=15)
    assert tr("fr", "auth.invalid_code") == ZH["auth.invalid_code"]  # unknown language: Chinese
    assert tr("en", "no.such.key") == "no.such.key"
    assert tr("en", "auth.locked") == EN["auth.locked"]  # missing params: the template, no crash


def test_error_text_translates_app_errors():
    assert error_text("en", NotFound()) == EN["error.not_found"]
    error = ValidationError(message_key="error.unknown_role", name="boss")
    assert error_text("en", error) == "No such role: boss"


# --- keys used by the code ---------------------------------------------------------------------


def test_the_scan_finds_the_keys_the_code_uses(sources):
    used = keys_used_in(sources)
    # Known uses, one per pattern: if these are not found the regexes are broken.
    for key in (
        "auth.username",
        "auth.session_expired",
        "auth.invalid_credentials",
        "auth.locked",
        "auth.password_too_short",
        "error.bad_choice",
        "error.last_admin",
        "nav.customers",
        "error.permission_denied",
        "auth.challenge_expired",
    ):
        assert key in used, key
    assert len(used) > 60


def test_the_scan_reports_a_missing_key():
    sample = {
        SOURCE_ROOT / "sample.py": (
            "class AuthError(AppError):\n    pass\n"
            "class ValidationError(AppError):\n    pass\n"
            'user_id: int = Field(foreign_key="app_user.id")\n'
            'rx.text(t("nope.page_label"))\n'
            'raise AuthError("nope.auth")\n'
            'raise ValidationError.single("field", "nope.field")\n'
            'self.error = self._tr("nope.state")\n'
            'x = tr(lang, "nope.tr")\n'
            'class MyError(AppError):\n    message_key = "nope.class"\n'
            'raise MyError("nope.subclass")\n'
            'page_shell(title_key="nope.title")\n'
            'text = "not.a.message"  # a plain string is not a message key\n'
        )
    }
    assert set(keys_used_in(sample)) == {
        "nope.page_label",
        "nope.auth",
        "nope.field",
        "nope.state",
        "nope.tr",
        "nope.class",
        "nope.subclass",
        "nope.title",
    }


def test_every_message_key_used_in_the_code_exists(sources):
    missing = {key: places for key, places in keys_used_in(sources).items() if key not in ENTRIES}
    assert missing == {}


UI_PACKAGES = ("pages", "components", "state", "web")


def test_every_label_key_in_ui_code_exists(sources):
    """Pages pass keys through small helpers (``_field("customer.phone", ...)``, column lists),
    so in UI code every quoted dotted literal under a catalogue prefix is a message key
    (permission names such as ``customer.view`` excepted)."""
    from meiqia_app.services.identity.rbac import PERMISSIONS

    prefixes = {key.split(".")[0] for key in ENTRIES}
    missing: dict[str, list[str]] = {}
    checked = 0
    for path, text in sources.items():
        if path.relative_to(SOURCE_ROOT).parts[0] not in UI_PACKAGES:
            continue
        for match in re.finditer(KEY, text):
            key = match.group(2)
            if key.split(".")[0] not in prefixes or key in PERMISSIONS:
                continue
            checked += 1
            if key not in ENTRIES:
                line = text.count("\n", 0, match.start()) + 1
                missing.setdefault(key, []).append(f"{path.relative_to(SOURCE_ROOT.parent)}:{line}")
    assert checked > 50
    assert missing == {}


@pytest.mark.parametrize(
    ("prefix", "codes"),
    [
        ("status", STATUSES + tuple(c for c in STATUS_CHOICES if c not in STATUSES)),
        ("lifecycle", LIFECYCLE_STAGES),
        ("tier", MEMBERSHIP_TIERS),
        ("source", SOURCES),
        ("gender", GENDERS),
        ("consent", ("marketing", "analytics")),
        ("order_status", ORDER_STATUSES),
    ],
)
def test_every_code_shown_as_a_label_has_a_message(prefix, codes):
    # customer_dto.label(lang, prefix, code) builds these keys at run time.
    assert [f"{prefix}.{code}" for code in codes if f"{prefix}.{code}" not in ENTRIES] == []
