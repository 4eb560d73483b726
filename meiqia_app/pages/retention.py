"""/admin/retention — retention policies: on/off, period, preview, run now (typed confirmation
for irreversible deletes), progress and the last run. One card per registered policy."""

from __future__ import annotations

import reflex as rx

from meiqia_app.components.i18n import t
from meiqia_app.components.layout import NavItem, page_shell, register_nav
from meiqia_app.services.cleanup import retention
from meiqia_app.state.base import AppState
from meiqia_app.state.retention import RetentionState as S

register_nav(NavItem("/admin/retention", "nav.retention", "timer-reset", "settings.manage", "data", 40))

VALUE_LABELS = {
    "hours": "retention.value.hours",
    "days": "retention.value.days",
    "months": "retention.value.months",
}


def _error(message: rx.Var, error_id: str) -> rx.Component:
    return rx.text(
        rx.cond(message, message, ""),
        id=error_id,
        color="var(--red-11)",
        size="1",
        role="alert",
        display=rx.cond(message, "block", "none"),
    )


def _number_field(
    key: str, name: str, label: rx.Var, heading_id: str, value: rx.Var, error: rx.Var, handler, low: int, high: int
) -> rx.Component:
    """A labelled whole-number field with its range and its error (read by screen readers)."""
    field_id = f"retention-{name}-{key}"
    return rx.vstack(
        rx.el.label(label, html_for=field_id, id=f"{field_id}-label", class_name="retention-label"),
        rx.input(
            value=value,
            on_change=lambda v: handler(key, v),
            id=field_id,
            type="number",
            input_mode="numeric",
            min=low,
            max=high,
            step=1,
            required=True,
            disabled=~S.allowed[key],
            width="150px",
            aria_labelledby=f"{heading_id} {field_id}-label",
            aria_describedby=f"{field_id}-range {field_id}-error",
            aria_invalid=rx.cond(error, "true", "false"),
        ),
        rx.text(t("retention.range", min=low, max=high), id=f"{field_id}-range", size="1", color_scheme="gray"),
        _error(error, f"{field_id}-error"),
        spacing="1",
        min_width="0",
    )


def _sample_item(text: rx.Var) -> rx.Component:
    return rx.el.li(text, class_name="retention-sample-item")


def _preview(policy: retention.Policy, heading_id: str) -> rx.Component:
    key = policy.key
    return rx.box(
        rx.cond(
            S.allowed[key],
            rx.vstack(
                rx.text(
                    t(policy.preview_key, count=S.counts[key], size=S.sizes[key]),
                    id=f"retention-preview-{key}",
                    size="2",
                    weight="medium",
                ),
                rx.cond(
                    S.samples[key].length() > 0,
                    rx.box(
                        rx.text(t("retention.sample"), size="1", color_scheme="gray"),
                        rx.el.ul(
                            rx.foreach(S.samples[key], _sample_item),
                            class_name="retention-sample",
                            id=f"retention-sample-{key}",
                        ),
                    ),
                ),
                rx.cond(
                    S.unsaved_preview[key],
                    rx.text(t("retention.preview_unsaved"), size="1", color_scheme="amber"),
                    rx.cond(~S.saved_enabled[key], rx.text(t("retention.off"), size="1", color_scheme="amber")),
                ),
                spacing="1",
                width="100%",
            ),
            rx.text(t("retention.not_allowed"), size="2", color_scheme="gray"),
        ),
        role="status",
        aria_live="polite",
        aria_labelledby=heading_id,
        padding="8px 12px",
        border_radius="6px",
        background="var(--gray-a2)",
        width="100%",
    )


def _progress(key: str) -> rx.Component:
    return rx.cond(
        S.running_key == key,
        rx.vstack(
            rx.progress(value=S.percent, max=100, width="100%", aria_label=t("common.progress")),
            rx.text(t("retention.progress", done=S.done, total=S.total), size="1"),
            spacing="1",
            width="100%",
        ),
    )


def _card(policy: retention.Policy) -> rx.Component:
    key = policy.key
    heading_id = f"retention-title-{key}"
    switch_id = f"retention-enabled-{key}"
    fields = [
        _number_field(
            key,
            "value",
            t(VALUE_LABELS[policy.unit]),
            heading_id,
            S.values[key],
            S.value_errors[key],
            S.set_value,
            policy.minimum,
            policy.maximum,
        )
    ]
    if policy.keep is not None:
        fields.append(
            _number_field(
                key,
                "keep",
                t(policy.keep.label_key),
                heading_id,
                S.keeps[key],
                S.keep_errors[key],
                S.set_keep,
                policy.keep.minimum,
                policy.keep.maximum,
            )
        )
    busy = S.running_key != ""
    return rx.card(
        rx.el.section(
            rx.vstack(
                rx.hstack(
                    rx.heading(t(policy.label_key), size="4", as_="h2", id=heading_id),
                    rx.spacer(),
                    rx.hstack(
                        rx.switch(
                            checked=S.enabled[key],
                            disabled=~S.allowed[key],
                            on_change=lambda v: S.set_enabled(key, v),
                            id=switch_id,
                            aria_labelledby=f"{heading_id} {switch_id}-label",
                        ),
                        rx.el.label(t("retention.enabled"), html_for=switch_id, id=f"{switch_id}-label"),
                        align="center",
                        spacing="2",
                    ),
                    align="center",
                    width="100%",
                    wrap="wrap",
                ),
                rx.text(t(policy.hint_key), size="2", color_scheme="gray"),
                rx.hstack(*fields, spacing="4", wrap="wrap", align="start", width="100%"),
                _preview(policy, heading_id),
                _progress(key),
                rx.cond(
                    S.results_zh[key],
                    rx.text(
                        rx.cond(AppState.is_en, S.results_en[key], S.results_zh[key]),
                        size="2",
                        id=f"retention-result-{key}",
                        role="status",
                    ),
                ),
                rx.text(
                    rx.cond(AppState.is_en, S.last_runs_en[key], S.last_runs_zh[key]),
                    size="1",
                    color_scheme="gray",
                    id=f"retention-last-{key}",
                ),
                rx.hstack(
                    rx.button(
                        t("common.save"),
                        on_click=S.save(key),
                        loading=S.saving == key,
                        disabled=~S.allowed[key],
                        id=f"retention-save-{key}",
                        aria_labelledby=f"retention-save-{key} {heading_id}",
                    ),
                    rx.button(
                        t("retention.preview_button"),
                        on_click=S.preview_typed(key),
                        variant="outline",
                        disabled=~S.allowed[key],
                        id=f"retention-preview-button-{key}",
                        aria_labelledby=f"retention-preview-button-{key} {heading_id}",
                    ),
                    rx.button(
                        rx.icon("play", size=16, aria_hidden="true"),
                        t("retention.run_now"),
                        on_click=S.ask_run(key),
                        variant="soft",
                        color_scheme="red" if policy.typed_confirm else "gray",
                        disabled=~S.saved_enabled[key] | ~S.allowed[key] | busy | (S.counts[key] == 0),
                        id=f"retention-run-{key}",
                        aria_labelledby=f"retention-run-{key} {heading_id}",
                    ),
                    spacing="3",
                    wrap="wrap",
                ),
                spacing="3",
                width="100%",
            ),
            aria_labelledby=heading_id,
            id=f"retention-policy-{key}",
            class_name="retention-policy",
        ),
        width="100%",
        min_width="0",
    )


def confirm_dialog() -> rx.Component:
    return rx.dialog.root(
        rx.dialog.content(
            rx.dialog.title(S.confirm_title),
            rx.dialog.description(S.confirm_message, size="2"),
            rx.vstack(
                rx.cond(
                    S.confirm_typed,
                    rx.vstack(
                        rx.text(t("retention.confirm_irreversible"), size="2", color="var(--red-11)", weight="bold"),
                        rx.el.label(
                            t("retention.confirm_typed_label", count=S.confirm_count),
                            html_for="retention-confirm",
                            class_name="retention-label",
                        ),
                        rx.input(
                            value=S.confirm_text,
                            on_change=S.set_confirm_text,
                            id="retention-confirm",
                            input_mode="numeric",
                            auto_complete="off",
                            width="100%",
                            aria_describedby="retention-confirm-error",
                        ),
                        spacing="2",
                        width="100%",
                    ),
                ),
                _error(S.confirm_error, "retention-confirm-error"),
                rx.hstack(
                    rx.dialog.close(rx.button(t("common.cancel"), variant="soft", color_scheme="gray")),
                    rx.button(
                        t("retention.run_now"),
                        color_scheme="red",
                        on_click=S.run,
                        disabled=S.confirm_typed & (S.confirm_text != S.confirm_count.to_string()),
                        id="retention-confirm-run",
                    ),
                    justify="end",
                    width="100%",
                    wrap="wrap",
                ),
                spacing="3",
                margin_top="12px",
                width="100%",
            ),
            max_width="520px",
            id="retention-dialog",
        ),
        open=S.confirm_open,
        on_open_change=S.set_confirm_open,
    )


def retention_page() -> rx.Component:
    return page_shell(
        rx.text(t("retention.intro"), size="2", color_scheme="gray"),
        rx.cond(
            S.loaded,
            rx.vstack(
                rx.text(
                    rx.cond(
                        S.nightly_time != "", t("retention.nightly_at", time=S.nightly_time), t("retention.nightly_off")
                    ),
                    size="2",
                    id="retention-nightly",
                ),
                rx.grid(
                    *[_card(policy) for policy in retention.policies()],
                    columns=rx.breakpoints(initial="1", lg="2"),
                    spacing="4",
                    width="100%",
                ),
                spacing="4",
                width="100%",
            ),
        ),
        confirm_dialog(),
        title_key="nav.retention",
    )
