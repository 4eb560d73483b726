"""/admin/backups — verified backups: list, create now, download, restore (typed confirmation)."""

from __future__ import annotations

import reflex as rx

from meiqia_app.components.i18n import t
from meiqia_app.components.layout import NavItem, page_shell, register_nav
from meiqia_app.state.backups import BackupRow
from meiqia_app.state.backups import BackupsState as S

register_nav(NavItem("/admin/backups", "nav.backups", "database-backup", "backup.manage", "data", 30))


def _row(row: BackupRow) -> rx.Component:
    return rx.table.row(
        rx.table.cell(rx.text(row.file_name, size="1", font_family="monospace")),
        rx.table.cell(row.kind),
        rx.table.cell(row.size_text),
        rx.table.cell(rx.text(row.sha_short, title=row.sha256, font_family="monospace", size="1")),
        rx.table.cell(
            rx.badge(row.integrity, color_scheme=rx.cond(row.ok, "green", "red"), class_name="backup-integrity")
        ),
        rx.table.cell(row.created_at),
        rx.table.cell(row.created_by_name),
        rx.table.cell(
            rx.hstack(
                rx.button(
                    t("backup.download"),
                    size="1",
                    variant="soft",
                    on_click=S.download(row.id),
                    disabled=~row.on_disk,
                    id="download-" + row.id.to_string(),
                ),
                rx.button(
                    t("backup.restore"),
                    size="1",
                    variant="soft",
                    color_scheme="red",
                    on_click=S.ask_restore(row.id),
                    disabled=~row.on_disk,
                    id="restore-" + row.id.to_string(),
                ),
                spacing="2",
            )
        ),
    )


def restore_dialog() -> rx.Component:
    return rx.dialog.root(
        rx.dialog.content(
            rx.dialog.title(t("backup.restore_title")),
            rx.dialog.description(t("backup.restore_warning", name=S.restore_name), size="2"),
            rx.vstack(
                rx.input(
                    value=S.restore_confirm,
                    on_change=S.set_restore_confirm,
                    id="restore-confirm",
                    placeholder=S.restore_name,
                    aria_label=t("backup.restore_confirm_label"),
                    width="100%",
                ),
                rx.cond(S.restore_error != "", rx.text(S.restore_error, color="var(--red-11)", size="1", role="alert")),
                rx.hstack(
                    rx.dialog.close(rx.button(t("common.cancel"), variant="soft", color_scheme="gray")),
                    rx.button(
                        t("backup.restore"),
                        color_scheme="red",
                        on_click=S.restore,
                        loading=S.restoring,
                        disabled=S.restore_confirm != S.restore_name,
                        id="restore-submit",
                    ),
                    justify="end",
                    width="100%",
                ),
                spacing="3",
                margin_top="12px",
            ),
            max_width="560px",
        ),
        open=S.restore_open,
        on_open_change=S.set_restore_open,
    )


def backups_page() -> rx.Component:
    return page_shell(
        rx.hstack(
            rx.text(t("backup.hint"), size="2", color_scheme="gray"),
            rx.spacer(),
            rx.button(
                rx.icon("database-backup", size=16),
                t("backup.create_now"),
                on_click=S.create_now,
                loading=S.creating,
                id="backup-create",
            ),
            width="100%",
            align="center",
        ),
        rx.table.root(
            rx.table.header(
                rx.table.row(
                    *[
                        rx.table.column_header_cell(t(key), scope="col")
                        for key in (
                            "backup.col.file",
                            "backup.col.kind",
                            "backup.col.size",
                            "backup.col.sha",
                            "backup.col.integrity",
                            "common.created_at",
                            "backup.col.by",
                            "common.actions",
                        )
                    ]
                )
            ),
            rx.table.body(rx.foreach(S.backups, _row)),
            id="backups-table",
            width="100%",
        ),
        rx.cond(S.backups.length() == 0, rx.text(t("common.empty"), color_scheme="gray")),
        restore_dialog(),
        title_key="nav.backups",
    )
