"""Which process runs a job or an export, and whether that process still lives.

A job row left "running" by a process that was killed must be taken over
(or failed) when the app starts again, but a job that another live worker
runs must be left alone. Each running row records its owner:

    "<host>|<boot id>|<pid namespace>|<pid>|<process start time>"

On the same machine (same host name, boot and pid namespace) a later process
can tell for certain: the pid no longer exists, or it now belongs to another
process (different start time), or the machine rebooted → the owner is dead.
Anywhere else (another machine or container) it cannot look, and the
heartbeat decides: the owning process touches ``heartbeat_at`` of its running
rows every few seconds (:class:`Heartbeats`), so a heartbeat older than
``MEIQIA_JOB_STALE_SECONDS`` means the owner is gone.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
from pathlib import Path

from sqlalchemy import update

from meiqia_app.config import get_settings
from meiqia_app.db import write_session
from meiqia_app.timeutil import as_utc, utcnow

log = logging.getLogger(__name__)

ALIVE, DEAD, UNKNOWN = "alive", "dead", "unknown"


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _host() -> str:
    return socket.gethostname()[:64].replace("|", "_")


def _boot_id() -> str:
    return _read("/proc/sys/kernel/random/boot_id")


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat from field 3 (state) on; [] if unknown."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat or ")" not in stat:
        return []
    return stat.rsplit(")", 1)[1].split()


def _start_ticks(pid: int) -> str:
    """When the process started (clock ticks since boot, field 22); "" if unknown."""
    fields = _stat_fields(pid)
    return fields[19] if len(fields) > 19 else ""


def _pid_exists(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # somebody else's process, but it exists
    fields = _stat_fields(pid)
    return not (fields and fields[0] in ("Z", "X"))  # a zombie is dead, only not yet reaped


_owner_cache: dict[int, str] = {}


def current_owner() -> str:
    """This process's owner string (computed once per pid: a forked worker gets its own)."""
    pid = os.getpid()
    owner = _owner_cache.get(pid)
    if owner is None:
        owner = f"{_host()}|{_boot_id()}|{_pid_namespace()}|{pid}|{_start_ticks(pid)}"
        _owner_cache[pid] = owner
    return owner


def owner_state(owner: str | None) -> str:
    """ALIVE or DEAD when this process can tell; UNKNOWN otherwise (then the heartbeat decides)."""
    if not owner:
        return UNKNOWN
    parts = owner.split("|")
    if len(parts) != 5:
        return UNKNOWN
    host, boot, namespace, pid_text, ticks = parts
    if host != _host() or namespace != _pid_namespace():
        return UNKNOWN
    current_boot = _boot_id()
    if boot and current_boot and boot != current_boot:
        return DEAD  # this machine restarted since
    try:
        pid = int(pid_text)
    except ValueError:
        return UNKNOWN
    if not _pid_exists(pid):
        return DEAD
    now_ticks = _start_ticks(pid)
    if ticks and now_ticks and ticks != now_ticks:
        return DEAD  # the pid was reused by a newer process
    return ALIVE


def stale_after() -> dt.timedelta:
    return dt.timedelta(seconds=max(5, get_settings().job_stale_seconds))


def heartbeat_interval() -> float:
    """How often the owner touches its rows: well inside the stale limit."""
    return max(1.0, stale_after().total_seconds() / 4)


def is_orphaned(owner: str | None, heartbeat_at: dt.datetime | None, fallback: dt.datetime | None = None) -> bool:
    """True when the row's process is certainly dead, or cannot be checked and its heartbeat is stale."""
    state = owner_state(owner)
    if state == DEAD:
        return True
    if state == ALIVE:
        return False
    beat = heartbeat_at or fallback
    return beat is None or as_utc(beat) < utcnow() - stale_after()


class Heartbeats:
    """Touches ``heartbeat_at`` of the rows this process runs, every :func:`heartbeat_interval` seconds.

    A batch of a job may take longer than the stale limit (one big statement);
    this thread keeps the row alive meanwhile, so another worker starting up
    does not take over a job that is merely busy. It writes nothing while
    this process runs nothing.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[type, set[int]] = {}
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    def track(self, model: type, row_id: int) -> None:
        with self._lock:
            self._rows.setdefault(model, set()).add(int(row_id))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="job-heartbeats", daemon=True)
                self._thread.start()

    def untrack(self, model: type, row_id: int) -> None:
        with self._lock:
            self._rows.get(model, set()).discard(int(row_id))

    def tracked(self, model: type) -> set[int]:
        with self._lock:
            return set(self._rows.get(model, set()))

    def beat(self) -> None:
        """Touch every tracked row still running under this process's name (one UPDATE per table)."""
        owner = current_owner()
        with self._lock:
            work = {model: sorted(ids) for model, ids in self._rows.items() if ids}
        for model, ids in work.items():
            columns = model.__table__.c
            with write_session() as session:
                session.execute(
                    update(model.__table__)
                    .where(columns.id.in_(ids), columns.owner == owner, columns.status == "running")
                    .values(heartbeat_at=utcnow())
                )

    def _run(self) -> None:
        while True:
            self._wake.wait(heartbeat_interval())
            try:
                self.beat()
            except Exception:  # noqa: BLE001 - a missed beat is retried; the thread must not die
                log.exception("job heartbeat failed")


HEARTBEATS = Heartbeats()
