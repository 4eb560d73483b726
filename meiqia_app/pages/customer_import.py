"""/import — bring customers in from CSV or XLSX (CUST-6)."""

from __future__ import annotations

import reflex as rx

from meiqia_app.components.i18n import t
from meiqia_app.components.layout import NavItem, page_shell, register_nav
from meiqia_app.services.customers.importing.columns import FIELD_LABEL_KEYS
from meiqia_app.services.customers.importing.files import max_upload_bytes
from meiqia_app.services.customers.validation import EDITABLE_FIELDS
from meiqia_app.state.customer_import import UPLOAD_ID
from meiqia_app.state.customer_import import CustomerImportState as S

register_nav(NavItem("/import", "nav.import", "upload", "customer.import", "customers", 30))


def _with_labelled_file_input(upload: rx.Component, label: rx.Var) -> rx.Component:
    """Give the drop zone's hidden file input a name (screen readers, axe's "label" rule)."""
    pending = [upload]
    while pending:
        component = pending.pop()
        if getattr(component, "tag", None) == "input":
            component.custom_attrs["aria-label"] = label
        pending.extend(getattr(component, "children", []))
    return upload


def upload_step() -> rx.Component:
    return rx.vstack(
        rx.text(t("import.intro"), size="2"),
        _with_labelled_file_input(
            rx.upload(
                rx.vstack(
                    rx.icon("file-up", size=28, aria_hidden="true"),
                    rx.text(t("import.drop_here"), size="2"),
                    rx.button(t("import.choose_file"), variant="soft", type="button"),
                    align="center",
                    spacing="2",
                ),
                id=UPLOAD_ID,
                accept={
                    "text/csv": [".csv", ".tsv", ".txt"],
                    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": [".xlsx"],
                },
                max_files=1,
                multiple=False,
                # The browser refuses a bigger file at once (a toast); the server enforces it anyway.
                max_size=max_upload_bytes(),
                border="1px dashed var(--gray-8)",
                padding="32px",
                border_radius="8px",
                width="100%",
            ),
            t("label.choose_file"),
        ),
        rx.hstack(rx.foreach(rx.selected_files(UPLOAD_ID), lambda name: rx.badge(name)), spacing="2"),
        rx.button(
            t("import.upload"),
            on_click=S.handle_upload(rx.upload_files(upload_id=UPLOAD_ID)),
            id="import-upload-submit",
        ),
        spacing="3",
        width="100%",
    )


def _field_select(row, index) -> rx.Component:
    field = S.column_fields[index].to(str)
    return rx.select.root(
        rx.select.trigger(aria_label=t("import.field_for", column=row.header), class_name="import-field"),
        rx.select.content(
            rx.select.item(t("import.skip_column"), value="skip"),
            *[rx.select.item(t(FIELD_LABEL_KEYS[field]), value=field) for field in EDITABLE_FIELDS],
            rx.foreach(S.custom_field_options, lambda o: rx.select.item(o["label"], value=o["value"])),
        ),
        value=rx.cond(field == "", "skip", field),
        on_change=lambda value: S.set_column_field(row.index, value),
        size="2",
    )


def _mapping_row(row, index) -> rx.Component:
    return rx.table.row(
        rx.table.row_header_cell(row.header),
        rx.table.cell(rx.text(row.sample, size="1", color_scheme="gray")),
        rx.table.cell(_field_select(row, index)),
        class_name="mapping-row",
    )


def mapping_step() -> rx.Component:
    return rx.vstack(
        rx.hstack(rx.icon("file-spreadsheet", size=16), rx.text(S.file_name, weight="medium"), align="center"),
        rx.text(t("import.mapping_intro"), size="2"),
        rx.table.root(
            rx.table.header(
                rx.table.row(
                    rx.table.column_header_cell(t("import.col_column")),
                    rx.table.column_header_cell(t("import.col_sample")),
                    rx.table.column_header_cell(t("import.col_field")),
                )
            ),
            rx.table.body(rx.foreach(S.mapping_rows, _mapping_row)),
            width="100%",
            id="import-mapping",
        ),
        rx.el.label(
            rx.checkbox(
                checked=S.skip_duplicates,
                on_change=S.set_skip_duplicates,
                id="import-skip-dups",
                aria_label=t("import.skip_duplicates"),
            ),
            t("import.skip_duplicates"),
            display="flex",
            gap="6px",
            align_items="center",
            font_size="14px",
        ),
        rx.cond(
            S.has_select_fields & S.perms.contains("field.manage"),
            rx.el.label(
                rx.checkbox(
                    checked=S.create_options,
                    on_change=S.set_create_options,
                    id="import-create-options",
                    aria_label=t("import.create_options"),
                ),
                t("import.create_options"),
                display="flex",
                gap="6px",
                align_items="center",
                font_size="14px",
            ),
        ),
        rx.cond(
            S.unmapped_required_text != "",
            rx.callout(
                S.unmapped_required_text, icon="triangle-alert", color_scheme="amber", id="import-required-unmapped"
            ),
        ),
        rx.hstack(
            rx.button(t("common.back"), variant="soft", color_scheme="gray", on_click=S.start_over),
            rx.button(
                t("import.dry_run"),
                variant="soft",
                on_click=S.start_dry_run,
                id="import-dry-run",
                disabled=S.unmapped_required_text != "",
            ),
            rx.button(
                t("import.run"), on_click=S.start_import, id="import-run", disabled=S.unmapped_required_text != ""
            ),
            spacing="3",
        ),
        spacing="3",
        width="100%",
    )


def running_step() -> rx.Component:
    return rx.vstack(
        rx.text(rx.cond(S.running_kind == "dry_run", t("import.checking"), t("import.importing")), size="2"),
        rx.progress(value=S.progress_percent, max=100, width="100%", id="import-progress"),
        rx.text(
            t("import.rows_done", done=S.progress_done, expected=S.progress_expected), size="1", color_scheme="gray"
        ),
        rx.button(
            t("import.cancel"),
            variant="soft",
            color_scheme="gray",
            on_click=S.cancel_import,
            id="import-cancel",
            align_self="flex-start",
        ),
        spacing="2",
        width="100%",
    )


def _stat(label_key: str, value, stat_id: str) -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.text(t(label_key), size="1", color_scheme="gray"),
            rx.text(value, size="5", weight="bold", id=stat_id),
            spacing="1",
        )
    )


def _problem_row(problem) -> rx.Component:
    return rx.table.row(
        rx.table.cell(problem.row),
        rx.table.cell(problem.field),
        rx.table.cell(problem.message),
        rx.table.cell(rx.text(problem.value, size="1")),
    )


def report_step() -> rx.Component:
    return rx.vstack(
        rx.heading(
            rx.cond(S.report_kind == "dry_run", t("import.dry_run_report"), t("import.import_report")),
            size="4",
            as_="h2",
        ),
        rx.hstack(
            _stat("import.total_rows", S.total_rows, "import-total"),
            _stat("import.valid_rows", S.valid, "import-valid"),
            _stat("import.invalid_rows", S.invalid, "import-invalid"),
            _stat("import.duplicate_rows", S.duplicates, "import-duplicates"),
            rx.cond(S.report_kind == "import", _stat("import.inserted_rows", S.inserted, "import-inserted")),
            spacing="3",
            wrap="wrap",
        ),
        rx.foreach(S.new_options, lambda line: rx.text(line, size="2", class_name="import-new-options")),
        rx.cond(
            S.problems.length() > 0,
            rx.vstack(
                rx.text(t("import.problems_shown", shown=S.problems.length(), total=S.problem_count), size="2"),
                rx.table.root(
                    rx.table.header(
                        rx.table.row(
                            rx.table.column_header_cell(t("import.col_row")),
                            rx.table.column_header_cell(t("import.col_field")),
                            rx.table.column_header_cell(t("import.col_problem")),
                            rx.table.column_header_cell(t("import.col_value")),
                        )
                    ),
                    rx.table.body(rx.foreach(S.problems, _problem_row)),
                    size="1",
                    width="100%",
                    id="import-problems",
                ),
                width="100%",
            ),
        ),
        rx.hstack(
            rx.cond(
                S.has_error_report,
                rx.button(
                    rx.icon("download", size=14),
                    t("import.download_errors"),
                    variant="soft",
                    on_click=S.download_error_report,
                    id="import-error-report",
                ),
            ),
            rx.button(
                t("import.another_file"), variant="soft", color_scheme="gray", on_click=S.start_over, id="import-again"
            ),
            rx.cond(
                S.report_kind == "dry_run",
                rx.button(t("import.run"), on_click=S.start_import, id="import-run-after-check"),
            ),
            spacing="3",
        ),
        spacing="3",
        width="100%",
    )


def import_page() -> rx.Component:
    return page_shell(
        rx.cond(S.error != "", rx.callout(S.error, icon="triangle-alert", color_scheme="red", id="import-error")),
        rx.match(
            S.step,
            ("mapping", mapping_step()),
            ("running", running_step()),
            ("report", report_step()),
            upload_step(),
        ),
        title_key="import.title",
    )
