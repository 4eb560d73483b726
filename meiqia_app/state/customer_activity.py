"""The detail page's second half: timeline, notes and tags of one customer."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import ClassVar

import reflex as rx
from reflex_base.event import Event
from reflex_base.event.context import EventContext

from meiqia_app.services.customers import notes, timeline
from meiqia_app.services.customers.timeline import MessageItem, TimelineItem
from meiqia_app.services.errors import AppError, ValidationError
from meiqia_app.services.identity import sessions
from meiqia_app.services.tags import assignments as customer_tags
from meiqia_app.services.tags.assignments import TagOption
from meiqia_app.services.tags.names import tag_key
from meiqia_app.state import live
from meiqia_app.state.customer_detail import CustomerDetailState

KINDS = ("conversation", "order", "event", "note", "consent", "field")
PAGE_SIZE = 20
MAX_PAGES = 50  # "load more" stops at 1,000 items

# Live timeline: while a customer's page is open, a watcher task of its tab
# reads the customer's activity counter and edit version (one primary-key
# read) every LIVE_POLL_SECONDS, in this process, without touching the tab's
# state. Only when they changed does it queue the tab's ``live_refresh`` event,
# an ordinary event that waits its turn behind the tab's own (a Reflex
# background task would take the tab's state lock beside them: with Redis,
# that contention stalled the tab's next event for the lock's 10-s expiry).
# Ingested records can arrive at any worker: the counter is in the database,
# and the watcher runs in the worker that holds the tab's websocket.
LIVE_POLL_SECONDS = 1.0
LIVE_RECHECK_SECONDS = 15.0  # the session, checked this often
LIVE_MAX_SECONDS = 8 * 3600
LIVE_REFRESH = "live_refresh"
# Client token -> the watcher task of that tab (one per tab, this process).
_WATCHERS: dict[str, asyncio.Task] = {}
log = logging.getLogger(__name__)


def _tab_connected_here(token: str) -> bool:
    """Whether the tab's websocket is open on this process (False ends its watcher)."""
    try:
        from reflex.utils.prerequisites import get_app

        namespace = get_app().app.event_namespace
        manager = namespace._token_manager
        record = manager.token_to_socket.get(token)
    except Exception:  # noqa: BLE001 - no app (unit tests) or another Reflex: rely on the other checks
        return True
    return record is not None and record.instance_id == manager.instance_id


class CustomerActivityState(CustomerDetailState):
    # The timeline (orders, chats, notes) and a conversation's messages are
    # shown, not kept: "load more" reads the shown pages again plus one.
    _ephemeral_vars: ClassVar[frozenset[str]] = frozenset({"items", "messages"})

    items: list[TimelineItem] = []
    kind: str = "all"
    has_more: bool = False
    loading_more: bool = False
    expanded_key: str = ""
    messages: list[MessageItem] = []

    note_error: str = ""
    editing_note_id: int = 0

    tag_query: str = ""
    tag_suggestions: list[TagOption] = []
    # The typed text names no tag and the person may create tags: offer "create tag …".
    tag_can_create: bool = False

    _cursor: str = ""
    _pages: int = 1

    def _kinds(self) -> set[str] | None:
        return None if self.kind == "all" else {self.kind}

    async def _load_timeline(self, pages: int = 1, actor=None):
        """The first ``pages`` pages of the timeline (the server keeps none of them)."""
        actor = actor or self._actor()
        pages = max(1, min(MAX_PAGES, pages))
        items: list[TimelineItem] = []
        cursor = ""
        for _ in range(pages):
            page = await self._call(
                timeline.customer_timeline,
                actor,
                self._customer_id(),
                self._kinds(),
                cursor,
                PAGE_SIZE,
                self.lang,
            )
            items.extend(page.items)
            cursor = page.next_cursor
            if not cursor:
                break
        self.items = items
        self._pages = pages
        self._cursor = cursor if pages < MAX_PAGES else ""
        self.has_more = bool(self._cursor)

    @rx.event
    async def on_load_activity(self):
        self.kind = "all"
        self.expanded_key = ""
        self.messages = []
        self.items = []
        self.editing_note_id = 0
        self.tag_query = ""
        self.tag_suggestions = []
        try:
            await self._load_timeline()
        except AppError as error:
            if error.message_key == "error.not_found":
                return None
            return self._on_error(error)
        self._start_watcher()
        return None

    def _start_watcher(self) -> None:
        """Watch the customer on the page for activity (replacing the tab's previous watcher)."""
        token = self.router.session.client_token
        customer_id = self._shown_id
        try:
            ctx = EventContext.get()
        except LookupError:  # no Reflex event (unit tests calling the handler directly)
            return
        if not token or not customer_id:
            return
        previous = _WATCHERS.pop(token, None)
        if previous is not None:
            previous.cancel()
        watcher = asyncio.get_running_loop().create_task(
            _watch(ctx, token, customer_id, self._actor(), self._session_token(), self._client_ip())
        )
        _WATCHERS[token] = watcher

    @rx.event
    async def live_refresh(self, customer_id: int):
        """Queued by the tab's watcher when the customer's activity changed: read again what
        the tab shows (the pages of the timeline it loaded, the profile unless it is being edited)."""
        try:
            if self._shown_id != self._as_id(customer_id):
                return None
            await self._load_timeline(self._pages)
            if not self.editing:
                return await self._reload()
        except AppError as error:
            if error.message_key == "error.not_found":
                return None
            return self._on_error(error)
        return None

    @rx.event
    async def refresh_timeline(self):
        """Read the shown pages again (after a change made elsewhere on the page: a consent)."""
        try:
            await self._load_timeline(self._pages)
        except AppError as error:
            return self._on_error(error)

    @rx.event
    async def set_kind(self, kind: str):
        if kind not in ("all", *KINDS):
            return None
        self.kind = kind
        try:
            await self._load_timeline()
        except AppError as error:
            return self._on_error(error)

    @rx.event
    async def load_more(self):
        if not self._cursor:
            return
        self.loading_more = True
        yield
        try:
            await self._load_timeline(self._pages + 1)
        except AppError as error:
            yield self._on_error(error)
        self.loading_more = False

    @rx.event
    async def toggle_messages(self, key: str, conversation_id: int):
        if self.expanded_key == key:
            self.expanded_key = ""
            self.messages = []
            return None
        try:
            self.messages = await self._call(
                timeline.conversation_messages, self._actor(), self._as_id(conversation_id), 200, self.lang
            )
        except AppError as error:
            return self._on_error(error)
        self.expanded_key = str(key)[:40]
        return None

    # --- notes ----------------------------------------------------------------------------
    @rx.event
    async def add_note(self, form: dict):
        self.note_error = ""
        try:
            await self._call(notes.add_note, self._actor(), self._customer_id(), str(form.get("text", ""))[:4000])
            await self._load_timeline()
        except ValidationError as error:
            self.note_error = next(iter(self._field_errors(error).values()), "")
            return None
        except AppError as error:
            return self._on_error(error)
        return [rx.set_value("note-text", ""), rx.toast.success(self._tr("common.saved"))]

    @rx.event
    def start_note_edit(self, note_id: int):
        self.editing_note_id = self._as_id(note_id)
        self.note_error = ""

    @rx.event
    def cancel_note_edit(self):
        self.editing_note_id = 0

    @rx.event
    async def save_note(self, form: dict):
        self.note_error = ""
        try:
            await self._call(notes.edit_note, self._actor(), self.editing_note_id, str(form.get("text", ""))[:4000])
            self.editing_note_id = 0
            await self._load_timeline()
        except ValidationError as error:
            self.note_error = next(iter(self._field_errors(error).values()), "")
            return None
        except AppError as error:
            return self._on_error(error)
        return rx.toast.success(self._tr("common.saved"))

    @rx.event
    async def delete_note(self, note_id: int):
        try:
            await self._call(notes.delete_note, self._actor(), self._as_id(note_id))
            await self._load_timeline()
        except AppError as error:
            return self._on_error(error)
        return rx.toast.success(self._tr("note.deleted"))

    # --- tags -----------------------------------------------------------------------------
    def _clear_tag_input(self) -> None:
        self.tag_query = ""
        self.tag_suggestions = []
        self.tag_can_create = False

    @rx.event(supersedes=True)
    async def suggest(self, text: str):
        self.tag_query = str(text or "")[:32]
        try:
            actor = self._actor()
            self.tag_suggestions = await self._call(
                customer_tags.suggest_tags, actor, self.tag_query, 8, self._customer_id()
            )
        except AppError as error:
            return self._on_error(error)
        key = tag_key(self.tag_query)
        self.tag_can_create = (
            bool(key)
            and actor.can("tag.manage")
            and all(tag_key(option.name) != key for option in self.tag_suggestions)
        )

    async def _add(self, tag: int | str):
        try:
            await self._call(customer_tags.add_tag, self._actor(), self._customer_id(), tag)
        except AppError as error:
            return self._on_error(error)
        self._clear_tag_input()
        failed = await self._reload()
        return failed if failed is not None else rx.set_value("tag-input", "")

    @rx.event
    async def add_tag(self, tag_id: int):
        return await self._add(self._as_id(tag_id))

    @rx.event
    async def add_tag_by_name(self, form: dict):
        """Enter or 添加标签: the typed tag, else the highlighted (or only) suggestion."""
        if not isinstance(form, dict):
            return None
        name = str(form.get("tag", "") or "").strip()[:32]
        if not name:
            return None
        try:
            choice = await self._call(
                customer_tags.pick_typed_tag,
                self._actor(),
                self._customer_id(),
                name,
                str(form.get("highlighted", "") or "")[:12],
            )
        except AppError as error:
            return self._on_error(error)
        return await self._add(choice)

    @rx.event
    async def create_typed_tag(self):
        """A manager's explicit "create tag …" for the typed text (the service checks tag.manage)."""
        if not self.tag_query.strip():
            return None
        return await self._add(self.tag_query.strip())

    @rx.event
    async def remove_tag(self, tag_id: int):
        try:
            await self._call(customer_tags.remove_tag, self._actor(), self._customer_id(), self._as_id(tag_id))
        except AppError as error:
            return self._on_error(error)
        return await self._reload()


async def _watch(ctx: EventContext, token: str, customer_id: int, actor, cookie: str, client_ip: str) -> None:
    """The tab's watcher (see LIVE_POLL_SECONDS): ends when the tab shows another page, closes or
    moves to another worker, its session ends, a newer watcher replaces it, or after LIVE_MAX_SECONDS."""
    page = f"/customers/{customer_id}"
    refresh = f"{CustomerActivityState.get_full_name()}.{LIVE_REFRESH}"
    try:
        marker = await asyncio.to_thread(timeline.activity_marker, actor, customer_id)
        started = checked = time.monotonic()
        while marker is not None and time.monotonic() - started < LIVE_MAX_SECONDS:
            await asyncio.sleep(LIVE_POLL_SECONDS)
            if not _tab_connected_here(token):
                return
            shown = live.path_of(token)
            if shown and "[" not in shown and shown != page:
                return
            if time.monotonic() - checked > LIVE_RECHECK_SECONDS:
                checked = time.monotonic()
                # The session may have ended meanwhile; this check is not activity (no touch).
                actor = await asyncio.to_thread(sessions.resolve_session, cookie, client_ip, False)
                if actor is None:
                    return
            current = await asyncio.to_thread(timeline.activity_marker, actor, customer_id)
            if current != marker:
                marker = current
                await ctx.enqueue(
                    Event(name=refresh, payload={"customer_id": customer_id}, router_data=ctx.router_data)
                )
    except AppError:
        return
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001 - a watcher that fails only stops showing news live
        log.warning("live timeline watcher stopped", exc_info=True)
    finally:
        if _WATCHERS.get(token) is asyncio.current_task():
            _WATCHERS.pop(token, None)
