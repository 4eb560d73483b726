"""/customers/[customer_id] — one customer (CUST-4)."""

from __future__ import annotations

import reflex as rx

from meiqia_app.components.custom_fields import custom_field_groups, custom_field_inputs
from meiqia_app.components.dialogs import field_error, form_buttons
from meiqia_app.components.i18n import t
from meiqia_app.components.layout import page_shell
from meiqia_app.models.customer import GENDERS, LIFECYCLE_STAGES, MEMBERSHIP_TIERS, SOURCES
from meiqia_app.pages.customer_activity import tags_editor, timeline_card
from meiqia_app.pages.export import portability_button
from meiqia_app.services.customers.profile import ConsentView
from meiqia_app.state.base import AppState
from meiqia_app.state.customer_detail import CustomerDetailState as S
from meiqia_app.state.erasure_request import ErasureRequestState as E


def _field(label_key: str, value, field_id: str) -> rx.Component:
    return rx.data_list.item(
        rx.data_list.label(t(label_key)),
        rx.data_list.value(value, id=f"field-{field_id}"),
    )


def _consent(consent: ConsentView) -> rx.Component:
    return rx.hstack(
        rx.badge(consent.label, color_scheme=rx.cond(consent.granted, "green", "gray")),
        rx.text(
            rx.cond(
                consent.granted,
                t("customer.granted_at", at=consent.at),
                rx.cond(consent.at != "", t("customer.withdrawn_at", at=consent.at), t("customer.not_granted")),
            ),
            size="2",
            class_name="consent-state",
        ),
        rx.cond(
            AppState.perms.contains("customer.edit") & ~S.customer.read_only,
            rx.button(
                rx.cond(consent.granted, t("consent.withdraw"), t("consent.grant")),
                size="1",
                variant="soft",
                color_scheme=rx.cond(consent.granted, "orange", "green"),
                on_click=S.set_consent(consent.key, ~consent.granted),
                id="consent-" + consent.key + "-toggle",
            ),
        ),
        align="center",
        wrap="wrap",
        class_name="consent-row",
        data_consent=consent.key,
    )


def read_only_notice() -> rx.Component:
    """Archived or trashed: the page shows the customer and offers no change until it is restored."""
    c = S.customer
    return rx.cond(
        c.read_only & ~c.erased,
        rx.callout(
            rx.cond(c.status_code == "trashed", t("customer.read_only_trashed"), t("customer.read_only_archived")),
            icon="lock",
            color_scheme="orange",
            id="customer-read-only",
        ),
    )


def owner_line() -> rx.Component:
    """负责人: the owner and their team, or 公海; claim / transfer / release for those who may."""
    return rx.hstack(
        rx.text(t("owner.label"), weight="medium", size="2"),
        rx.cond(
            S.owner_in_pool,
            rx.badge(t("owner.pool"), color_scheme="gray", variant="soft", id="customer-owner"),
            rx.text(
                S.owner_name,
                rx.cond(S.owner_team != "", " · " + S.owner_team, ""),
                size="2",
                id="customer-owner",
            ),
        ),
        rx.cond(
            S.can_claim,
            rx.button(rx.icon("hand", size=14), t("owner.claim"), size="1", on_click=S.claim, id="claim-customer"),
        ),
        rx.cond(
            S.can_assign,
            rx.select.root(
                rx.select.trigger(
                    placeholder=rx.cond(S.owner_in_pool, t("owner.assign"), t("owner.transfer")),
                    aria_label=rx.cond(S.owner_in_pool, t("owner.assign"), t("owner.transfer")),
                    id="assign-customer",
                ),
                rx.select.content(
                    rx.foreach(S.owner_choices, lambda o: rx.select.item(o["label"], value=o["value"])),
                ),
                value="",
                on_change=S.assign_to,
                size="1",
            ),
        ),
        rx.cond(
            S.can_release,
            rx.button(
                t("owner.release"),
                size="1",
                variant="soft",
                color_scheme="gray",
                on_click=S.release,
                id="release-customer",
            ),
        ),
        spacing="3",
        align="center",
        wrap="wrap",
        id="owner-line",
    )


def profile_card() -> rx.Component:
    c = S.customer
    return rx.card(
        rx.vstack(
            rx.hstack(
                rx.heading(c.name, size="7", id="customer-name", as_="h2"),
                rx.badge(c.lifecycle, size="2"),
                rx.badge(c.tier, size="2", color_scheme="gold"),
                rx.cond(c.status_code != "active", rx.badge(c.status, color_scheme="orange", size="2")),
                align="center",
                spacing="3",
            ),
            owner_line(),
            tags_editor(),
            rx.cond(
                c.erasure_pending,
                rx.callout(t("customer.erasure_pending"), icon="triangle-alert", color_scheme="orange"),
            ),
            rx.grid(
                rx.data_list.root(
                    _field("customer.phone", c.phone, "phone"),
                    _field("customer.email", c.email, "email"),
                    _field("customer.gender", c.gender, "gender"),
                    _field("customer.birthday", c.birthday, "birthday"),
                    _field("customer.address", c.address, "address"),
                    _field("customer.region", c.region, "region"),
                    _field("customer.company", c.company, "company"),
                    _field("customer.source", c.source, "source"),
                ),
                rx.data_list.root(
                    _field("customer.registered_at", c.registered_at, "registered_at"),
                    _field("customer.last_active_at", c.last_active_at, "last_active_at"),
                    _field("customer.first_purchase_at", c.first_purchase_at, "first_purchase_at"),
                    _field("customer.last_purchase_at", c.last_purchase_at, "last_purchase_at"),
                    _field("customer.order_count", c.order_count, "order_count"),
                    _field("customer.total_spent", c.total_spent, "total_spent"),
                    _field("customer.external_id", c.external_id, "external_id"),
                    _field("customer.visitor_id", c.visitor_id, "visitor_id"),
                ),
                columns="2",
                spacing="6",
                width="100%",
                class_name="stack-on-narrow",
            ),
            custom_field_groups(c.custom_groups),
            rx.heading(t("customer.consents"), size="3", as_="h3"),
            rx.vstack(rx.foreach(c.consents, _consent), spacing="1"),
            rx.text(c.updated_line, size="1", color_scheme="gray", id="customer-updated"),
            spacing="3",
            width="100%",
        ),
        width="100%",
    )


def _text_input(label_key: str, field: str, value, input_type: str = "text", placeholder=None) -> rx.Component:
    return rx.vstack(
        rx.el.label(t(label_key), html_for=f"edit-{field}", font_size="13px"),
        rx.input(
            id=f"edit-{field}",
            name=field,
            type=input_type,
            default_value=value,
            width="100%",
            placeholder=placeholder if placeholder is not None else "",
            aria_invalid=rx.cond(S.edit_errors.contains(field), "true", "false"),
        ),
        field_error(S.edit_errors.get(field, "")),
        spacing="1",
        width="100%",
    )


def _choice(label_key: str, field: str, value, codes: tuple[str, ...], prefix: str) -> rx.Component:
    return rx.vstack(
        rx.el.label(t(label_key), html_for=f"edit-{field}", font_size="13px"),
        rx.select.root(
            rx.select.trigger(id=f"edit-{field}", aria_label=t(label_key), width="100%"),
            rx.select.content(*[rx.select.item(t(f"{prefix}.{code}"), value=code) for code in codes]),
            name=field,
            default_value=value,
        ),
        field_error(S.edit_errors.get(field, "")),
        spacing="1",
        width="100%",
    )


def _sensitive_input(label_key: str, field: str, value, input_type: str = "text") -> rx.Component:
    """People who may not see a value get an empty field with the masked value
    as a hint: leaving it empty keeps the stored value."""
    return rx.cond(
        S.customer.masked_fields.contains(field),
        _text_input(label_key, field, "", input_type, placeholder=t("customer.masked_hint", value=value)),
        _text_input(label_key, field, value, input_type),
    )


def edit_dialog() -> rx.Component:
    c = S.customer
    return rx.dialog.root(
        rx.dialog.content(
            rx.dialog.title(t("common.edit"), " · ", c.name),
            rx.cond(
                S.conflict != "",
                rx.callout(
                    rx.hstack(
                        rx.text(S.conflict),
                        rx.button(t("common.reload"), size="1", on_click=S.reload_after_conflict, id="edit-reload"),
                        align="center",
                        spacing="3",
                    ),
                    icon="triangle-alert",
                    color_scheme="red",
                    id="edit-conflict",
                    role="alert",
                ),
            ),
            rx.form(
                rx.grid(
                    _text_input("customer.name", "name", c.name),
                    _choice("customer.gender", "gender", c.gender_code, GENDERS, "gender"),
                    _sensitive_input("customer.phone", "phone", c.phone, "tel"),
                    _sensitive_input("customer.email", "email", c.email, "email"),
                    rx.cond(
                        c.masked_fields.contains("birthday"),
                        _text_input("customer.birthday", "birthday", "", "date"),
                        _text_input("customer.birthday", "birthday", c.birthday, "date"),
                    ),
                    _sensitive_input("customer.address", "address", c.address),
                    _text_input("customer.province", "province", c.province),
                    _text_input("customer.city", "city", c.city),
                    _text_input("customer.company", "company", c.company),
                    _choice("customer.source", "source", c.source_code, SOURCES, "source"),
                    _text_input("customer.external_id", "external_id", c.external_id),
                    _text_input("customer.visitor_id", "visitor_id", c.visitor_id),
                    _choice("customer.lifecycle", "lifecycle_stage", c.lifecycle_code, LIFECYCLE_STAGES, "lifecycle"),
                    _choice("customer.tier", "membership_tier", c.tier_code, MEMBERSHIP_TIERS, "tier"),
                    columns="2",
                    spacing="3",
                    width="100%",
                ),
                custom_field_inputs(c.custom_fields, S.edit_errors, "edit-"),
                rx.box(form_buttons("edit-save", loading=S.saving), width="100%", margin_top="16px"),
                on_submit=S.save,
                reset_on_submit=False,
                key=c.version,
            ),
            max_width="720px",
        ),
        open=S.editing,
        on_open_change=S.set_editing,
    )


def actions_bar() -> rx.Component:
    return rx.hstack(
        rx.cond(
            AppState.perms.contains("customer.edit") & ~S.customer.read_only,
            rx.button(rx.icon("pencil", size=16), t("common.edit"), on_click=S.start_edit, id="edit-customer"),
        ),
        rx.cond(
            # services/exports/portability.py: export.request; a trashed or erased customer is not exported.
            AppState.perms.contains("export.request") & (S.customer.status_code != "trashed") & ~S.customer.erased,
            portability_button(S.customer.id),
        ),
        rx.cond(
            AppState.perms.contains("customer.edit") & ~S.customer.erasure_pending & ~S.customer.erased,
            rx.button(
                rx.icon("user-x", size=16),
                t("cleanup.erasure.request"),
                variant="soft",
                color_scheme="red",
                on_click=E.set_erasure_open(True),
                id="request-erasure",
            ),
        ),
        erasure_dialog(),
        spacing="2",
        wrap="wrap",
    )


def erasure_dialog() -> rx.Component:
    """Confirmation with a reason before filing an erasure request (executed later on /cleanup)."""
    return rx.dialog.root(
        rx.dialog.content(
            rx.dialog.title(t("cleanup.erasure.request")),
            rx.dialog.description(t("cleanup.erasure.request_hint"), size="2"),
            rx.form(
                rx.vstack(
                    rx.el.label(t("cleanup.erasure.reason"), html_for="erasure-reason", font_size="13px"),
                    rx.text_area(id="erasure-reason", name="reason", max_length=255, width="100%", required=True),
                    field_error(E.erasure_error),
                    form_buttons("erasure-submit", submit_key="cleanup.erasure.submit", color_scheme="red"),
                    spacing="2",
                    width="100%",
                    margin_top="12px",
                ),
                on_submit=E.submit_erasure,
                reset_on_submit=True,
            ),
            max_width="480px",
        ),
        open=E.erasure_open,
        on_open_change=E.set_erasure_open,
    )


def customer_detail_page() -> rx.Component:
    return page_shell(
        rx.link(
            rx.hstack(rx.icon("arrow-left", size=16, aria_hidden="true"), t("customer.back_to_list"), align="center"),
            href="/customers",
        ),
        rx.cond(
            S.not_found,
            rx.callout(t("customers.not_found"), icon="info", color_scheme="orange", id="customer-not-found"),
            rx.cond(
                S.customer,
                rx.vstack(
                    actions_bar(),
                    read_only_notice(),
                    profile_card(),
                    edit_dialog(),
                    timeline_card(),
                    width="100%",
                    spacing="3",
                ),
                rx.spinner(size="3"),
            ),
        ),
        title_key="customer.profile",
    )
