"""Validating and normalising a customer's editable fields (CUST-4, import).

One place decides what a valid phone, e-mail, date or choice is, so the edit
form, hand-made customers and imported rows agree. Errors are field-keyed
message keys; nothing here touches the database.
"""

from __future__ import annotations

import datetime as dt

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from meiqia_app.models.customer import GENDERS, LIFECYCLE_STAGES, MEMBERSHIP_TIERS, SOURCES
from meiqia_app.services.errors import ValidationError

# Field → maximum length (mirrors the columns).
TEXT_LIMITS = {
    "name": 64,
    "address": 255,
    "province": 32,
    "city": 32,
    "company": 128,
    "external_id": 64,
    "visitor_id": 64,
}
CHOICES = {
    "gender": GENDERS,
    "source": SOURCES,
    "lifecycle_stage": LIFECYCLE_STAGES,
    "membership_tier": MEMBERSHIP_TIERS,
}
EDITABLE_FIELDS = (
    "name",
    "gender",
    "birthday",
    "phone",
    "email",
    "address",
    "province",
    "city",
    "company",
    "source",
    "external_id",
    "visitor_id",
    "lifecycle_stage",
    "membership_tier",
)
REQUIRED_FIELDS = ("name",)
DEFAULT_REGION = "CN"


def normalize_phone(raw: str, region: str = DEFAULT_REGION) -> str:
    """Chinese numbers are stored nationally (13812345678); others in E.164.

    Raises ValueError when the number is not a valid one.
    """
    text = raw.strip()
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        raise ValueError(text) from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError(text)
    if number.country_code == 86:
        return str(number.national_number)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_email(raw: str) -> str:
    try:
        return validate_email(raw.strip(), check_deliverability=False).normalized
    except EmailNotValidError:
        raise ValueError(raw) from None


def clean_customer_fields(raw: dict, *, partial: bool = False) -> dict:
    """Validated, normalised values for the fields present in ``raw``.

    ``partial``: only the given fields are checked (an edit form that sends
    everything is not partial; required fields must then be there).
    Unknown keys are ignored. Empty strings become None (except required ones).
    """
    errors: dict[str, tuple[str, dict]] = {}
    cleaned: dict = {}
    for field in EDITABLE_FIELDS:
        if field not in raw:
            if not partial and field in REQUIRED_FIELDS:
                errors[field] = ("error.required", {})
            continue
        value = raw[field]
        text = "" if value is None else str(value).strip()
        if "\x00" in text:
            errors[field] = ("error.nul_character", {})
            continue
        if not text:
            if field in REQUIRED_FIELDS:
                errors[field] = ("error.required", {})
            elif field in CHOICES:
                continue  # keep the current / default choice
            else:
                cleaned[field] = None
            continue
        if field in TEXT_LIMITS and len(text) > TEXT_LIMITS[field]:
            errors[field] = ("error.too_long", {"max": TEXT_LIMITS[field]})
            continue
        try:
            if field == "phone":
                cleaned[field] = normalize_phone(text)
            elif field == "email":
                cleaned[field] = normalize_email(text)
            elif field == "birthday":
                day = dt.date.fromisoformat(text[:10])
                if day > dt.date.today() or day.year < 1900:
                    raise ValueError(text)
                cleaned[field] = day
            elif field in CHOICES:
                if text not in CHOICES[field]:
                    raise ValueError(text)
                cleaned[field] = text
            else:
                cleaned[field] = text
        except ValueError:
            errors[field] = (
                {
                    "phone": "error.phone_invalid",
                    "email": "error.email_invalid",
                    "birthday": "error.bad_date",
                }.get(field, "error.bad_choice"),
                {},
            )
    if errors:
        raise ValidationError(errors)
    return cleaned


MAX_ATTRIBUTE_KEY = 32
MAX_ATTRIBUTE_VALUE = 255
MAX_ATTRIBUTES_PER_CHANGE = 50
CONSENT_FIELDS = ("consent_marketing", "consent_analytics")


def clean_extras(raw: dict) -> dict:
    """Custom attributes (extend fields: ``{key: text or None}``, None removes the key)
    and consents (booleans) present in ``raw``; raises ValidationError."""
    cleaned: dict = {}
    if raw.get("custom_attributes") is not None:
        attributes = raw["custom_attributes"]
        if not isinstance(attributes, dict) or len(attributes) > MAX_ATTRIBUTES_PER_CHANGE:
            raise ValidationError.single("custom_attributes", "error.bad_attributes", max=MAX_ATTRIBUTES_PER_CHANGE)
        values: dict[str, str | None] = {}
        for key, value in attributes.items():
            name = " ".join(str(key).split())
            if not name or len(name) > MAX_ATTRIBUTE_KEY:
                raise ValidationError.single("custom_attributes", "error.bad_attributes", max=MAX_ATTRIBUTES_PER_CHANGE)
            if value is not None:
                if isinstance(value, (dict, list)):
                    raise ValidationError.single(
                        "custom_attributes", "error.bad_attributes", max=MAX_ATTRIBUTES_PER_CHANGE
                    )
                value = str(value).strip()
                if len(value) > MAX_ATTRIBUTE_VALUE:
                    raise ValidationError.single("custom_attributes", "error.too_long", max=MAX_ATTRIBUTE_VALUE)
            values[name] = value
        cleaned["custom_attributes"] = values
    for field in CONSENT_FIELDS:
        if raw.get(field) is not None:
            if not isinstance(raw[field], bool):
                raise ValidationError.single(field, "error.bad_choice")
            cleaned[field] = raw[field]
    return cleaned
