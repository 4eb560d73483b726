"""/customers/[customer_id] — one customer (CUST-4)."""

from __future__ import annotations

import reflex as rx

from meiqia_app.components.i18n import t
from meiqia_app.components.layout import page_shell
from meiqia_app.components.tags import tag_chip
from meiqia_app.services.customers import ConsentView
from meiqia_app.state.customer_detail import CustomerDetailState as S


def _field(label_key: str, value, field_id: str) -> rx.Component:
    return rx.data_list.item(
        rx.data_list.label(t(label_key)),
        rx.data_list.value(value, id=f"field-{field_id}"),
    )


def _consent(consent: ConsentView) -> rx.Component:
    return rx.hstack(
        rx.badge(consent.label, color_scheme=rx.cond(consent.granted, "green", "gray")),
        rx.text(
            rx.cond(consent.granted, t("customer.granted_at", at=consent.at), t("customer.not_granted")),
            size="2",
        ),
        align="center",
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
            rx.hstack(rx.foreach(c.tags, tag_chip), spacing="1", wrap="wrap", id="customer-tags"),
            rx.cond(c.erasure_pending, rx.callout(t("customer.erasure_pending"), icon="triangle-alert", color_scheme="orange")),
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
            ),
            rx.heading(t("customer.consents"), size="3", as_="h3"),
            rx.vstack(rx.foreach(c.consents, _consent), spacing="1"),
            rx.text(t("customer.updated_by", by=c.updated_by, at=c.updated_at), size="1", color_scheme="gray"),
            spacing="3",
            width="100%",
        ),
        width="100%",
    )


def customer_detail_page() -> rx.Component:
    return page_shell(
        rx.link(rx.hstack(rx.icon("arrow-left", size=16, aria_hidden="true"), t("customer.back_to_list"), align="center"), href="/customers"),
        rx.cond(
            S.not_found,
            rx.callout(t("customers.not_found"), icon="info", color_scheme="orange", id="customer-not-found"),
            rx.cond(S.customer, profile_card(), rx.spinner(size="3")),
        ),
        title_key="customer.profile",
    )
