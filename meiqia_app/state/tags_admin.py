"""State of /tags: the tag table, create/edit/merge/delete, hygiene, the rule builder and rule runs."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import ClassVar

import reflex as rx

from meiqia_app.models.tag import TAG_GROUPS
from meiqia_app.services.customers import lifecycle_update
from meiqia_app.services.errors import AppError, ValidationError
from meiqia_app.services.identity.rbac import Actor
from meiqia_app.services.platform import jobs
from meiqia_app.services.tags import catalog as tags
from meiqia_app.services.tags.catalog import NearDuplicate, TagView
from meiqia_app.services.tags.names import tag_key
from meiqia_app.services.tags.rules import conditions as rule_conditions
from meiqia_app.services.tags.rules import custom_conditions
from meiqia_app.services.tags.rules import definitions as rule_definitions
from meiqia_app.services.tags.rules import runs as rules
from meiqia_app.state.base import AppState

TABS = ("tags", "rules", "hygiene")
MAX_ROWS = rule_conditions.MAX_CONDITIONS
OP_SYMBOLS = {"gte": "≥", "gt": ">", "lte": "≤", "lt": "<", "eq": "=", "ne": "≠"}
# How the builder shows a custom field's value input, by type (the built-in kinds' inputs).
CF_KINDS = {
    "number": "number",
    "money": "number",
    "percent": "number",
    "date": "date",
    "datetime": "date",
    "single_select": "choice",
    "multi_select": "choice",
    "yes_no": "bool",
}


@dataclasses.dataclass
class Option:
    value: str
    label: str


@dataclasses.dataclass
class CondRow:
    """One row of the rule builder (strings: what the inputs hold)."""

    field: str = "order_count"
    op: str = "gte"
    value: str = ""
    days: str = ""
    product_id: str = ""
    kind: str = "number"
    window: str = "none"
    product: bool = False
    ops: list[Option] = dataclasses.field(default_factory=list)
    choices: list[Option] = dataclasses.field(default_factory=list)
    valueless: bool = False  # empty / not empty: no value input


@dataclasses.dataclass
class CfChoice:
    """A custom field the rule builder offers (definitions, not customer data)."""

    name: str
    label: str
    field_type: str
    ops: list[str]
    options: list[Option]


@dataclasses.dataclass
class RuleRow:
    id: int
    name: str
    tag_name: str
    tag_color: str
    mode: str
    enabled: bool
    summary: str
    last_run_at: str
    last_run: str
    flag: str = ""  # names retired or deleted custom fields: not run until edited


class TagsAdminState(AppState):
    # A rule preview's sample customers: shown, not kept.
    _ephemeral_vars: ClassVar[frozenset[str]] = frozenset({"preview_sample"})

    tab: str = "tags"
    tags: list[TagView] = []
    tag_options: list[Option] = []
    products: list[Option] = []
    cf_choices: list[CfChoice] = []
    cf_field_options: list[Option] = []

    # create / edit
    edit_open: bool = False
    edit_id: int = 0
    edit_name: str = ""
    edit_group: str = "custom"
    edit_color: str = "gray"
    edit_description: str = ""
    edit_errors: dict[str, str] = {}

    # merge
    merge_open: bool = False
    merge_source_id: int = 0
    merge_source_name: str = ""
    merge_target: str = ""
    # the chosen target's preview: both tags' customer counts, the overlap, whether a typed confirmation is needed
    merge_ready: bool = False
    merge_source_count: int = 0
    merge_target_name: str = ""
    merge_target_count: int = 0
    merge_both: int = 0
    merge_needs_confirm: bool = False
    merge_confirm: str = ""

    # delete
    delete_open: bool = False
    delete_id: int = 0
    delete_name: str = ""
    delete_count: int = 0

    # hygiene
    idle_days: str = "90"
    unused: list[TagView] = []
    stale: list[TagView] = []
    duplicates: list[NearDuplicate] = []

    # rules
    rules: list[RuleRow] = []
    rule_open: bool = False
    rule_id: int = 0
    rule_name: str = ""
    rule_tag: str = ""
    rule_match: str = "all"
    rule_mode: str = "add_only"
    rows: list[CondRow] = []
    rule_error: str = ""
    preview_ready: bool = False
    preview_matching: int = 0
    preview_gain: int = 0
    preview_lose: int = 0
    preview_sample: list[dict[str, str]] = []

    schedule: str = ""

    # lifecycle thresholds (admins)
    lc_new: str = ""
    lc_active: str = ""
    lc_churn: str = ""

    # a running job (rule run)
    job_id: int = 0
    job_percent: int = 0
    job_status: str = ""
    job_running: bool = False
    job_result: str = ""

    # --- helpers ------------------------------------------------------------------------
    async def _reload(self):
        actor = self._actor()
        self._set_user(actor)
        self.tags = await self._call(tags.list_tags, actor)
        self.tag_options = [Option(str(v.id), v.name) for v in self.tags]
        if self.tab == "rules" and actor.can("rule.manage"):
            await self._reload_rules(actor)
        if self.tab == "hygiene" and actor.can("tag.manage"):
            await self._reload_hygiene(actor)

    async def _reload_rules(self, actor: Actor):
        if not self.products:
            self.products = [
                Option(str(i), name) for i, name in await self._call(rule_conditions.product_choices, actor)
            ]
        await self._load_cf_choices(actor)
        views = await self._call(rule_definitions.list_rules, actor)
        self.rules = [
            RuleRow(
                id=v.id,
                name=v.name,
                tag_name=v.tag_name,
                tag_color=v.tag_color,
                mode=v.mode,
                enabled=v.enabled,
                summary=self._summary(v.match, v.conditions),
                last_run_at=v.last_run_at,
                last_run=self._run_text(v.last_run),
                flag=self._tr("rule.cf_flag", fields=", ".join(v.missing_fields)) if v.missing_fields else "",
            )
            for v in views
        ]
        self.schedule = await self._call(rule_definitions.get_rule_schedule)
        thresholds = await self._call(lifecycle_update.get_thresholds)
        self.lc_new, self.lc_active, self.lc_churn = (
            str(thresholds.new_days),
            str(thresholds.active_days),
            str(thresholds.churn_days),
        )

    async def _reload_hygiene(self, actor: Actor):
        try:
            days = int(self.idle_days)
        except ValueError:
            days = 90
        report = await self._call(tags.tag_hygiene, actor, days)
        self.unused, self.stale, self.duplicates = report.unused, report.stale, report.near_duplicates

    async def _load_cf_choices(self, actor: Actor):
        choices = await self._call(custom_conditions.rule_field_choices, actor, self.lang)
        self.cf_choices = [
            CfChoice(c.name, c.label, c.field_type, list(c.ops), [Option(i, label) for i, label in c.options])
            for c in choices
        ]
        self.cf_field_options = [Option(c.name, c.label) for c in self.cf_choices]

    def _cf(self, name: str) -> CfChoice | None:
        return next((c for c in self.cf_choices if c.name == name), None)

    def _cf_value_text(self, name: str, op: str, value: object) -> str:
        """A custom condition's value as the builder and the summary show it (labels, not ids)."""
        if value is None or op in custom_conditions.VALUELESS_OPS:
            return ""
        choice = self._cf(name)
        items = value if isinstance(value, list) else [value]
        if isinstance(value, bool):
            return "true" if value else "false"
        if choice is not None and choice.options:
            labels = {o.value: o.label for o in choice.options}
            return ",".join(labels.get(str(v), str(v)) for v in items)
        return ",".join(str(v) for v in items)

    def _cf_summary(self, c: dict) -> str:
        name, op = str(c.get("field")), str(c.get("op"))
        choice = self._cf(name)
        label = choice.label if choice else name.removeprefix("cf.") + self._tr("rule.cf_gone_suffix")
        value = self._cf_value_text(name, op, c.get("value"))
        if isinstance(c.get("value"), bool):
            value = self._tr("rule.yes") if c["value"] else self._tr("rule.no")
        symbol = OP_SYMBOLS.get(op) or self._tr(f"rule.op.{op}")
        return f"{label} {symbol}" + (f" {value}" if value else "")

    def _summary(self, match: str, conditions: list[dict]) -> str:
        parts = []
        for c in conditions:
            if custom_conditions.is_custom(c.get("field")):
                parts.append(self._cf_summary(c))
                continue
            field = self._tr(f"rule.field.{c.get('field')}")
            op = OP_SYMBOLS.get(c.get("op"), self._tr(f"rule.op.{c.get('op')}"))
            value = c.get("value")
            if isinstance(value, list):
                value = ",".join(str(v) for v in value)
            text = f"{field} {op}" + (f" {value}" if value not in (None, "") else "")
            if c.get("product_id"):
                name = next((p.label for p in self.products if p.value == str(c["product_id"])), str(c["product_id"]))
                text += f" [{name}]"
            if c.get("days"):
                text += " " + self._tr("rule.in_days", days=c["days"])
            parts.append(text)
        joiner = self._tr("rule.and") if match == "all" else self._tr("rule.or")
        return f" {joiner} ".join(parts)

    def _run_text(self, summary: dict) -> str:
        if not summary:
            return ""
        return self._tr(
            "rule.last_run",
            matched=summary.get("matched", 0),
            added=summary.get("added", 0),
            removed=summary.get("removed", 0),
        )

    def _cf_row(self, field: str, op: str, value: str) -> CondRow:
        choice = self._cf(field)
        if choice is None:  # retired or deleted (or sensitive for this person): shown, to be changed
            return CondRow(
                field=field,
                op=op,
                value=value,
                kind="cf_gone",
                ops=[Option(op, OP_SYMBOLS.get(op) or self._tr(f"rule.op.{op}"))],
                valueless=True,
            )
        kind = CF_KINDS.get(choice.field_type, "text")
        op = op if op in choice.ops else choice.ops[0]
        if kind == "bool":
            choices = [Option("true", self._tr("rule.yes")), Option("false", self._tr("rule.no"))]
            if value not in ("true", "false"):
                value = "true"
        else:
            choices = list(choice.options)
        if kind == "choice" and op == "eq" and value not in {o.value for o in choices} and choices:
            value = choices[0].value
        return CondRow(
            field=field,
            op=op,
            value=value,
            kind=kind,
            ops=[Option(o, OP_SYMBOLS.get(o) or self._tr(f"rule.op.{o}")) for o in choice.ops],
            choices=choices,
            valueless=op in custom_conditions.VALUELESS_OPS,
        )

    def _row(self, field: str, op: str = "", value: str = "", days: str = "", product_id: str = "") -> CondRow:
        if custom_conditions.is_custom(field):
            return self._cf_row(field, op, value)
        spec = rule_conditions.FIELDS.get(field) or rule_conditions.FIELDS["order_count"]
        ops = [Option(o, OP_SYMBOLS.get(o) or self._tr(f"rule.op.{o}")) for o in spec.ops]
        if spec.kind == "bool":
            choices = [Option("true", self._tr("rule.yes")), Option("false", self._tr("rule.no"))]
        else:
            prefix = {"source": "source", "lifecycle_stage": "lifecycle", "membership_tier": "tier"}.get(spec.key)
            choices = [Option(c, self._tr(f"{prefix}.{c}")) for c in spec.choices] if prefix else []
        op = op if op in spec.ops else spec.ops[0]
        if spec.kind == "bool" and value not in ("true", "false"):
            value = "true"
        if choices and spec.kind == "choice" and op in ("eq", "ne") and value not in spec.choices:
            value = spec.choices[0]
        if spec.window == "required" and not days:
            days = "30"
        if spec.product and not product_id and self.products:
            product_id = self.products[0].value
        return CondRow(
            field=spec.key,
            op=op,
            value=value,
            days=days,
            product_id=product_id,
            kind=spec.kind,
            window=spec.window,
            product=spec.product,
            ops=ops,
            choices=choices,
        )

    def _rule_data(self) -> dict:
        conditions = []
        for row in self.rows:
            item = {"field": row.field, "op": row.op, "value": row.value}
            if row.valueless:
                item.pop("value")
            if row.kind == "choice" and row.op in ("in", "not_in"):
                item["value"] = [v.strip() for v in row.value.split(",") if v.strip()]
            if row.window != "none":
                item["days"] = row.days
            if row.product:
                item["product_id"] = row.product_id
            conditions.append(item)
        return {
            "name": self.rule_name,
            "tag_id": self.rule_tag,
            "match": self.rule_match,
            "mode": self.rule_mode,
            "conditions": conditions,
        }

    # --- page ---------------------------------------------------------------------------
    @rx.event
    async def on_load(self):
        self.preview_ready = False  # its sample customers were shown, not kept
        try:
            await self._reload()
        except AppError as error:
            return self._on_error(error)

    @rx.event
    async def set_tab(self, tab: str):
        self.tab = tab if tab in TABS else "tags"
        try:
            await self._reload()
        except AppError as error:
            return self._on_error(error)

    # --- create / edit ------------------------------------------------------------------
    @rx.event
    def open_create(self):
        self.edit_id, self.edit_name, self.edit_group, self.edit_color, self.edit_description = (
            0,
            "",
            "custom",
            "gray",
            "",
        )
        self.edit_errors = {}
        self.edit_open = True

    @rx.event
    def open_edit(self, tag_id: int):
        try:
            tag_id = self._as_id(tag_id)
        except ValidationError:
            return
        tag = next((v for v in self.tags if v.id == tag_id), None)
        if tag is None:
            return
        self.edit_id, self.edit_name, self.edit_group = tag.id, tag.name, tag.group
        self.edit_color, self.edit_description = tag.color, tag.description
        self.edit_errors = {}
        self.edit_open = True

    @rx.event
    def set_edit_open(self, value: bool):
        self.edit_open = bool(value)

    @rx.event
    def set_edit_field(self, field: str, value: str):
        if field in ("name", "group", "color", "description"):
            setattr(self, f"edit_{field}", str(value or "")[:255])

    @rx.event
    async def save_tag(self):
        self.edit_errors = {}
        try:
            actor = self._actor()
            args = (
                self.edit_name,
                self.edit_group if self.edit_group in TAG_GROUPS else "",
                self.edit_color,
                self.edit_description,
            )
            if self.edit_id:
                await self._call(tags.update_tag, actor, self.edit_id, *args)
            else:
                await self._call(tags.create_tag, actor, *args)
            self.edit_open = False
            await self._reload()
        except ValidationError as error:
            self.edit_errors = self._field_errors(error)
            return None
        except AppError as error:
            return self._on_error(error)
        return rx.toast.success(self._tr("tagadmin.saved", name=self.edit_name))

    # --- merge --------------------------------------------------------------------------
    def _reset_merge(self, source: TagView) -> None:
        self.merge_source_id, self.merge_source_name, self.merge_target = source.id, source.name, ""
        self.merge_ready, self.merge_needs_confirm, self.merge_confirm = False, False, ""
        self.merge_source_count, self.merge_target_name, self.merge_target_count, self.merge_both = (
            source.usage,
            "",
            0,
            0,
        )

    async def _load_merge_preview(self) -> None:
        self.merge_ready, self.merge_confirm = False, ""
        if not self.merge_target:
            return
        preview = await self._call(
            tags.merge_preview, self._actor(), self.merge_source_id, self._as_id(self.merge_target)
        )
        self.merge_source_count, self.merge_target_name = preview.source_usage, preview.target_name
        self.merge_target_count, self.merge_both = preview.target_usage, preview.both
        self.merge_needs_confirm = preview.needs_confirm
        self.merge_ready = True

    @rx.event
    def open_merge(self, tag_id: int):
        try:
            tag_id = self._as_id(tag_id)
        except ValidationError:
            return
        tag = next((v for v in self.tags if v.id == tag_id), None)
        if tag is None:
            return
        self._reset_merge(tag)
        self.merge_open = True

    @rx.event
    async def open_merge_into(self, source_id: int, target_id: int):
        """From a near-duplicate pair: the dialog opens with both tags' counts; nothing is merged yet."""
        try:
            source_id, target_id = self._as_id(source_id), self._as_id(target_id)
        except ValidationError:
            return None
        tag = next((v for v in self.tags if v.id == source_id), None)
        if tag is None or not any(v.id == target_id for v in self.tags):
            return None
        self._reset_merge(tag)
        self.merge_target = str(target_id)
        self.merge_open = True
        try:
            await self._load_merge_preview()
        except AppError as error:
            return self._on_error(error)
        return None

    @rx.event
    def set_merge_open(self, value: bool):
        self.merge_open = bool(value)

    @rx.event
    async def set_merge_target(self, value: str):
        self.merge_target = str(value or "")[:20]
        try:
            await self._load_merge_preview()
        except AppError as error:
            return self._on_error(error)
        return None

    @rx.event
    def set_merge_confirm(self, value: str):
        self.merge_confirm = str(value or "")[:64]

    @rx.var
    def merge_can_submit(self) -> bool:
        if not self.merge_ready:
            return False
        return not self.merge_needs_confirm or tag_key(self.merge_confirm) == tag_key(self.merge_source_name)

    @rx.event
    async def merge(self):
        try:
            actor = self._actor()
            target = self._as_id(self.merge_target)
            moved = await self._call(tags.merge_tags, actor, self.merge_source_id, target, self.merge_confirm)
            self.merge_open = False
            await self._reload()
        except AppError as error:
            return self._on_error(error)
        return rx.toast.success(self._tr("tagadmin.merged", count=moved))

    # --- delete -------------------------------------------------------------------------
    @rx.event
    async def ask_delete(self, tag_id: int):
        try:
            actor = self._actor()
            tag_id = self._as_id(tag_id)
            tag = next((v for v in self.tags if v.id == tag_id), None)
            if tag is None:
                return None
            self.delete_count = await self._call(tags.tag_usage, actor, tag_id)
            self.delete_id, self.delete_name = tag.id, tag.name
            self.delete_open = True
        except AppError as error:
            return self._on_error(error)
        return None

    @rx.event
    def set_delete_open(self, value: bool):
        self.delete_open = bool(value)

    @rx.event
    async def delete_tag(self):
        self.delete_open = False
        try:
            actor = self._actor()
            affected = await self._call(tags.delete_tag, actor, self.delete_id)
            await self._reload()
        except AppError as error:
            return self._on_error(error)
        return rx.toast.success(self._tr("tagadmin.deleted", name=self.delete_name, count=affected))

    # --- hygiene ------------------------------------------------------------------------
    @rx.event
    def set_idle_days(self, value: str):
        self.idle_days = "".join(ch for ch in str(value or "") if ch.isdigit())[:4]

    @rx.event
    async def refresh_hygiene(self):
        try:
            await self._reload_hygiene(self._actor())
        except AppError as error:
            return self._on_error(error)

    # --- rule builder -------------------------------------------------------------------
    @rx.event
    async def open_new_rule(self):
        try:
            if not self.products:
                choices = await self._call(rule_conditions.product_choices, self._actor())
                self.products = [Option(str(i), name) for i, name in choices]
            await self._load_cf_choices(self._actor())
        except AppError as error:
            return self._on_error(error)
        self.rule_id, self.rule_name, self.rule_match, self.rule_mode = 0, "", "all", "add_only"
        self.rule_tag = self.tag_options[0].value if self.tag_options else ""
        self.rows = [self._row("order_count", "gte", "3")]
        self.rule_error, self.preview_ready = "", False
        self.rule_open = True
        return None

    @rx.event
    async def open_rule(self, rule_id: int):
        try:
            actor = self._actor()
            view = await self._call(rule_definitions.get_rule, actor, self._as_id(rule_id))
            await self._load_cf_choices(actor)
        except AppError as error:
            return self._on_error(error)
        self.rule_id, self.rule_name, self.rule_tag = view.id, view.name, str(view.tag_id)
        self.rule_match, self.rule_mode = view.match, view.mode
        rows = []
        for c in view.conditions:
            value = c.get("value")
            if custom_conditions.is_custom(c.get("field")):
                text = self._cf_value_text(str(c.get("field")), str(c.get("op")), value)
                if c.get("op") == "eq" and not isinstance(value, bool):
                    text = "" if value is None else str(value)  # an option id for the select
                rows.append(self._row(str(c.get("field")), str(c.get("op")), text))
                continue
            value = (
                ",".join(value)
                if isinstance(value, list)
                else ("" if value is None else str(value).lower() if isinstance(value, bool) else str(value))
            )
            rows.append(
                self._row(
                    str(c.get("field")),
                    str(c.get("op")),
                    value,
                    str(c.get("days") or ""),
                    str(c.get("product_id") or ""),
                )
            )
        self.rows = rows
        self.rule_error, self.preview_ready = "", False
        self.rule_open = True
        return None

    @rx.event
    def set_rule_open(self, value: bool):
        self.rule_open = bool(value)

    @rx.event
    def set_rule_field(self, field: str, value: str):
        value = str(value or "")
        if field == "name":
            self.rule_name = value[: rule_conditions.MAX_NAME]
        elif field == "tag":
            self.rule_tag = value[:20]
        elif field == "match" and value in rule_conditions.MATCHES:
            self.rule_match = value
        elif field == "mode" and value in rule_conditions.MODES:
            self.rule_mode = value
        self.preview_ready = False

    @rx.event
    def add_row(self):
        if len(self.rows) < MAX_ROWS:
            self.rows = [*self.rows, self._row("source", "eq", "wechat")]
        self.preview_ready = False

    @rx.event
    def remove_row(self, index: int):
        try:
            index = int(index)
        except (TypeError, ValueError):
            return
        if 0 <= index < len(self.rows) and len(self.rows) > 1:
            self.rows = [row for i, row in enumerate(self.rows) if i != index]
        self.preview_ready = False

    @rx.event
    def set_row(self, index: int, key: str, value: str):
        try:
            index = int(index)
        except (TypeError, ValueError):
            return
        if not 0 <= index < len(self.rows) or key not in ("field", "op", "value", "days", "product_id"):
            return
        row = self.rows[index]
        value = str(value or "")[:64]
        if key == "field":
            if value not in rule_conditions.FIELDS and self._cf(value) is None:
                return
            new = self._row(value)
        elif key == "op":
            new = self._row(row.field, value, row.value, row.days, row.product_id)
        else:
            values = {"op": row.op, "value": row.value, "days": row.days, "product_id": row.product_id, key: value}
            new = self._row(row.field, **values)
        rows = list(self.rows)
        rows[index] = new
        self.rows = rows
        self.preview_ready = False

    @rx.event
    async def preview(self):
        self.rule_error = ""
        try:
            actor = self._actor()
            result = await self._call(rule_definitions.preview_rule, actor, self._rule_data(), self.rule_id or None)
        except ValidationError as error:
            self.rule_error = next(iter(self._field_errors(error).values()), self._tr(error.message_key))
            return None
        except AppError as error:
            return self._on_error(error)
        self.preview_matching, self.preview_gain, self.preview_lose = (
            result.matching,
            result.would_gain,
            result.would_lose,
        )
        self.preview_sample = [{k: str(v) for k, v in row.items()} for row in result.sample]
        self.preview_ready = True
        return None

    @rx.event
    async def save_rule(self):
        self.rule_error = ""
        try:
            actor = self._actor()
            self.rule_id = await self._call(rule_definitions.save_rule, actor, self._rule_data(), self.rule_id or None)
            self.rule_open = False
            await self._reload_rules(actor)
        except ValidationError as error:
            self.rule_error = next(iter(self._field_errors(error).values()), self._tr(error.message_key))
            return None
        except AppError as error:
            return self._on_error(error)
        return rx.toast.success(self._tr("rule.saved", name=self.rule_name))

    @rx.event
    async def toggle_rule(self, rule_id: int, enabled: bool):
        try:
            actor = self._actor()
            await self._call(rule_definitions.set_rule_enabled, actor, self._as_id(rule_id), enabled is True)
            await self._reload_rules(actor)
        except AppError as error:
            return self._on_error(error)

    @rx.event
    async def delete_rule(self, rule_id: int):
        try:
            actor = self._actor()
            await self._call(rule_definitions.delete_rule, actor, self._as_id(rule_id))
            await self._reload_rules(actor)
        except AppError as error:
            return self._on_error(error)
        return rx.toast.success(self._tr("rule.deleted"))

    # --- schedule -------------------------------------------------------------------------
    @rx.event
    def set_schedule(self, value: str):
        self.schedule = str(value or "")[:5]

    @rx.event
    async def save_schedule(self):
        try:
            value = await self._call(rule_definitions.set_rule_schedule, self._actor(), self.schedule)
        except AppError as error:
            return self._on_error(error)
        self.schedule = value
        return rx.toast.success(self._tr("rule.schedule_saved", value=value))

    # --- lifecycle thresholds -------------------------------------------------------------
    @rx.event
    def set_lc(self, which: str, value: str):
        value = "".join(ch for ch in str(value or "") if ch.isdigit())[:4]
        if which in ("new", "active", "churn"):
            setattr(self, f"lc_{which}", value)

    @rx.event
    async def save_thresholds(self):
        if self.job_running:
            return None
        try:
            actor = self._actor()
            await self._call(lifecycle_update.set_thresholds, actor, self.lc_new, self.lc_active, self.lc_churn)
            job_id = await self._call(lifecycle_update.start_recompute_job, actor)
        except ValidationError as error:
            return rx.toast.error(next(iter(self._field_errors(error).values()), self._tr(error.message_key)))
        except AppError as error:
            return self._on_error(error)
        self.job_id, self.job_percent, self.job_status, self.job_running, self.job_result = (
            job_id,
            0,
            "queued",
            True,
            "",
        )
        return [rx.toast.success(self._tr("tagadmin.thresholds_saved")), TagsAdminState.poll_job]

    # --- running --------------------------------------------------------------------------
    @rx.event
    async def run_rule(self, rule_id: int):
        if self.job_running:
            return None
        try:
            actor = self._actor()
            job_id = await self._call(rules.start_rule_run_job, actor, self._as_id(rule_id))
        except AppError as error:
            return self._on_error(error)
        self.job_id, self.job_percent, self.job_status, self.job_running, self.job_result = (
            job_id,
            0,
            "queued",
            True,
            "",
        )
        return TagsAdminState.poll_job

    @rx.event
    async def run_all(self):
        if self.job_running:
            return None
        try:
            actor = self._actor()
            job_id = await self._call(rules.start_rule_run_job, actor, None)
        except AppError as error:
            return self._on_error(error)
        self.job_id, self.job_percent, self.job_status, self.job_running, self.job_result = (
            job_id,
            0,
            "queued",
            True,
            "",
        )
        return TagsAdminState.poll_job

    @rx.event(background=True)
    async def poll_job(self):
        """Follow the job's progress from the database until it ends."""
        for _ in range(7200):  # at most an hour of polling
            async with self:
                job_id = self.job_id
                try:
                    actor = self._actor()
                except AppError:
                    self.job_running = False
                    return
            if not job_id:
                return
            try:
                view = await asyncio.to_thread(jobs.job_view, actor, job_id)
            except AppError:
                async with self:
                    self.job_running = False
                return
            async with self:
                self.job_percent, self.job_status = view.percent, view.status
                if view.finished:
                    self.job_running = False
                    result = view.result or {}
                    if view.kind == lifecycle_update.RECOMPUTE_JOB_KIND:
                        self.job_result = self._tr("tagadmin.recomputed", count=result.get("changed", 0))
                    else:
                        self.job_result = (
                            self._run_text(result)
                            if view.status == "done"
                            else self._tr(view.error, **view.error_params)
                        )
                    await self._reload_rules(actor)
                    self.tags = await self._call(tags.list_tags, actor)
                    return
            await asyncio.sleep(0.5)
