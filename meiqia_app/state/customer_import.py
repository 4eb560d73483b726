"""State of /import: upload a file, map its columns, dry run, import (CUST-6).

The check and the import run as jobs of the runner (services/platform/jobs.py, started by
``customer_import.start_job``); this state only follows the job's progress and
shows its report, so a reload or a reconnect picks the job up again.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import ClassVar

import reflex as rx

from meiqia_app.services.customers.importing import columns as import_columns
from meiqia_app.services.customers.importing import custom_values as import_custom_values
from meiqia_app.services.customers.importing import files as import_files
from meiqia_app.services.customers.importing import job as customer_import
from meiqia_app.services.customers.importing.rows import ImportReport
from meiqia_app.services.customers.validation import EDITABLE_FIELDS
from meiqia_app.services.errors import AppError, NotAuthenticated, ValidationError
from meiqia_app.state.base import AppState
from meiqia_app.state.uploads import current_client_token, upload_actor

UPLOAD_ID = "import-upload"


@dataclasses.dataclass
class MappingRow:
    """A column of the uploaded file as shown: its header and a sample of its values."""

    index: str
    header: str
    sample: str


@dataclasses.dataclass
class ProblemRow:
    row: int
    field: str
    message: str
    value: str


class CustomerImportState(AppState):
    # Handlers Reflex's /_upload may run, and the permission the upload request's
    # session must hold (checked by web/upload_guard.py before the body is read).
    upload_handlers: ClassVar[dict[str, str]] = {"handle_upload": "customer.import"}
    # The file's headers, sample values and problem rows are customers' data:
    # shown, not kept. The chosen field of each column is in column_fields.
    _ephemeral_vars: ClassVar[frozenset[str]] = frozenset({"mapping_rows", "problems"})

    file_name: str = ""
    mapping_rows: list[MappingRow] = []
    # The field each column goes to, by column position ("" = skipped).
    column_fields: list[str] = []
    step: str = "upload"  # upload | mapping | running | report
    error: str = ""
    running_kind: str = ""  # dry_run | import
    progress_done: int = 0
    progress_expected: int = 0
    skip_duplicates: bool = True
    # Custom fields a column may go to: {"value": "cf.<key>", "label": its label}.
    custom_field_options: list[dict[str, str]] = []
    has_select_fields: bool = False
    # Required custom fields without a default: a column must go to each ({"value", "label"}).
    required_custom: list[dict[str, str]] = []
    create_options: bool = False
    new_options: list[str] = []

    report_kind: str = ""
    total_rows: int = 0
    valid: int = 0
    invalid: int = 0
    duplicates: int = 0
    inserted: int = 0
    problem_count: int = 0
    problems: list[ProblemRow] = []
    seconds: float = 0.0
    has_error_report: bool = False

    _path: str = ""
    _error_report_path: str = ""
    _job_id: int = 0
    _follower: int = 0

    @rx.event
    async def on_load(self):
        try:
            actor = self._actor()
        except AppError as error:
            return self._on_error(error)
        self._set_user(actor)
        self._load_custom_fields()
        if self.step == "running" and self._job_id:
            return CustomerImportState.follow_job  # a reload (or a restarted server) follows the job again
        if self._path and self.step in ("mapping", "report"):
            # The columns were shown, not kept: after a reload, read them again from the uploaded file.
            try:
                self._show_columns(await self._call(import_files.preview_table, actor, self._path))
            except AppError:
                self.step, self._path, self.file_name, self.column_fields = "upload", "", "", []
        return None

    def _load_custom_fields(self) -> None:
        fields = import_custom_values.active_fields()
        self.custom_field_options = [{"value": f.name, "label": f.label(self.lang)} for f in fields]
        self.has_select_fields = any(f.field_type in ("single_select", "multi_select") for f in fields)
        self.required_custom = [
            {"value": f.name, "label": f.label(self.lang)} for f in import_custom_values.unmapped_required(())
        ]

    def _show_columns(self, preview: import_files.TablePreview) -> None:
        self.mapping_rows = [
            MappingRow(
                index=str(i),
                header=header or f"#{i + 1}",
                sample=" / ".join(row[i] for row in preview.sample if i < len(row) and row[i])[:80],
            )
            for i, header in enumerate(preview.headers)
        ]

    @rx.event
    def start_over(self):
        if self.step == "running":
            return
        self.step = "upload"
        self.file_name = ""
        self.mapping_rows = []
        self.column_fields = []
        self.error = ""
        self._path = ""
        self._error_report_path = ""
        self.has_error_report = False
        return rx.clear_selected_files(UPLOAD_ID)

    @rx.event
    async def handle_upload(self, files: list[rx.UploadFile]):
        self.error = ""
        if not files or len(files) != 1:
            self.error = self._tr("import.choose_one_file")
            return None
        upload = files[0]
        original = str(upload.name or "upload")[-120:]
        limit = import_files.max_upload_bytes()
        target = None
        try:
            # The user of the upload request's own cookie (checked by web/upload_guard.py
            # before the body was read), never the tab's: see state/uploads.py.
            actor = await self._call(upload_actor, current_client_token(self), self.user_name)
            target = await self._call(import_files.upload_path_for, actor, original)
            written = 0
            with open(target, "wb") as out:
                while chunk := await upload.read(1 << 20):
                    written += len(chunk)
                    if written > limit:
                        break
                    out.write(chunk)
            if written > limit:
                target.unlink(missing_ok=True)
                self.error = self._tr("import.too_big", mb=limit // (1024 * 1024))
                return None
            preview = await self._call(import_files.preview_table, actor, target)
        except NotAuthenticated as error:
            return self._on_error(error)
        except AppError as error:
            if target is not None and isinstance(error, ValidationError):
                target.unlink(missing_ok=True)  # a refused file is not kept
            self.error = self._message(error)
            return None
        self._path = str(target)
        self.file_name = original
        self._show_columns(preview)
        self.column_fields = [preview.suggested.get(str(i), "") for i in range(len(preview.headers))]
        self.step = "mapping"
        return None

    def _message(self, error: AppError) -> str:
        if isinstance(error, ValidationError) and error.field_errors:
            return next(iter(self._field_errors(error).values()))
        return self._tr(error.message_key, **error.params)

    @rx.event
    def set_column_field(self, index: str, field: str):
        field = "" if field == "skip" else field
        if field and field not in EDITABLE_FIELDS and field not in {o["value"] for o in self.custom_field_options}:
            return
        try:
            position = int(str(index))
        except ValueError:
            return
        if 0 <= position < len(self.column_fields):
            fields = list(self.column_fields)
            fields[position] = field
            self.column_fields = fields

    @rx.event
    def set_skip_duplicates(self, value: bool):
        self.skip_duplicates = bool(value)

    @rx.event
    def set_create_options(self, value: bool):
        self.create_options = bool(value)  # the service refuses it without field.manage

    def _mapping(self) -> dict[str, str]:
        return {str(i): field for i, field in enumerate(self.column_fields) if field}

    @rx.event
    async def start_dry_run(self):
        return await self._start("dry_run")

    @rx.event
    async def start_import(self):
        return await self._start("import")

    async def _start(self, kind: str):
        if self.step not in ("mapping", "report") or not self._path:
            return None
        self.error = ""
        try:
            self._job_id = await self._call(
                customer_import.start_job,
                self._actor(),
                self._path,
                self._mapping(),
                dry_run=kind == "dry_run",
                skip_duplicates=self.skip_duplicates,
                file_name=self.file_name,
                lang=self.lang,
                create_options=self.create_options,
            )
        except NotAuthenticated as error:
            return self._on_error(error)
        except AppError as error:
            self.error = self._message(error)
            return None
        self.running_kind = kind
        self.step = "running"
        self.progress_done = 0
        self.progress_expected = 0
        return CustomerImportState.follow_job

    @rx.event
    async def cancel_import(self):
        """Stop the check or the import after its current batch (what was imported stays)."""
        if self.step != "running" or not self._job_id:
            return None
        try:
            await self._call(customer_import.cancel_job, self._actor(), self._job_id)
        except AppError as error:
            return self._on_error(error)
        return None

    @rx.event(background=True)
    async def follow_job(self):
        """Show the job's progress until it ends, then its report (or why it stopped)."""
        async with self:
            job_id, kind = self._job_id, self.running_kind
            if self.step != "running" or not job_id:
                return
            self._follower += 1  # a later loop (after a reload) takes over from this one
            me = self._follower
            try:
                actor = self._actor()
            except AppError as error:
                self.step = "mapping"
                self.error = self._message(error)
                return
        while True:
            await asyncio.sleep(0.3)
            report = None
            try:
                view = await asyncio.to_thread(customer_import.job_progress, actor, job_id)
                async with self:
                    if self._follower != me or self._job_id != job_id or self.step != "running":
                        return
                if view.status == "done":
                    report = await asyncio.to_thread(customer_import.job_report, actor, job_id)
            except AppError as error:
                async with self:
                    if self._follower == me and self._job_id == job_id:
                        self.step, self._job_id = "mapping", 0
                        self.error = self._message(error)
                return
            async with self:
                if self._follower != me or self._job_id != job_id or self.step != "running":
                    return
                self.progress_done, self.progress_expected = view.processed, view.total
                if not view.finished:
                    continue
                self._job_id = 0
                if report is not None:
                    self._show(report, kind)
                    return
                self.step = "mapping"
                if view.status == "cancelled":
                    self.error = (
                        self._tr("import.check_cancelled")
                        if kind == "dry_run"
                        else self._tr("import.cancelled", inserted=view.result.get("inserted", 0))
                    )
                else:
                    self.error = self._tr(view.error or "job.failed", **view.error_params)
                return

    def _show(self, report: ImportReport, kind: str) -> None:
        self.step = "report"
        self.report_kind = kind
        self.total_rows = report.total_rows
        self.valid = report.valid
        self.invalid = report.invalid
        self.duplicates = report.duplicates
        self.inserted = report.inserted
        self.problem_count = report.problem_count
        self.seconds = report.seconds
        self.problems = [
            ProblemRow(
                p.row,
                import_columns.field_label(p.field, self.lang) if p.field else "",
                self._tr(p.message_key, **p.params),
                p.value,
            )
            for p in report.problems[:100]
        ]
        self.new_options = [
            self._tr("import.new_options", field=import_columns.field_label(field, self.lang), labels="、".join(labels))
            for field, labels in report.new_options.items()
        ]
        self._error_report_path = report.error_report_path
        self.has_error_report = bool(report.error_report_path) and report.error_rows > 0

    @rx.event
    async def download_error_report(self):
        if not self._error_report_path:
            return None
        try:
            _name, data = await self._call(customer_import.read_error_report, self._actor(), self._error_report_path)
        except AppError as error:
            return self._on_error(error)
        stem = (self.file_name.rsplit(".", 1)[0] or "import")[:60]
        return rx.download(data=data, filename=f"{stem}-errors.csv")

    @rx.var
    def unmapped_required_text(self) -> str:
        """The mapping step's warning: required custom fields no column goes to (the service refuses it)."""
        chosen = set(self.column_fields)
        missing = [f["label"] for f in self.required_custom if f["value"] not in chosen]
        return self._tr("import.cf_required_hint", fields="、".join(missing)) if missing else ""

    @rx.var
    def progress_percent(self) -> int:
        if self.progress_expected <= 0:
            return 0
        return min(100, int(self.progress_done * 100 / self.progress_expected))
