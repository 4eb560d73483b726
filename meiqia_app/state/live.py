"""Which page each tab of this process shows, for the live timeline's watchers.

The event guard notes the page path of every event a tab sends (its router
data), in process memory only; a watcher compares it with the customer it
watches once a second, without taking the tab's state lock (with Redis state
that lock is a round trip and a wait behind the tab's own events). A tab's
events arrive at the worker holding its websocket, which is also where its
watcher runs. Nothing here is stored: a path names a customer id at most.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

MAX_TABS = 20_000

_lock = threading.Lock()
_paths: OrderedDict[str, str] = OrderedDict()


def note_path(token: str, path: str) -> None:
    if not token or not path:
        return
    with _lock:
        _paths[token] = path.rstrip("/") or "/"
        _paths.move_to_end(token)
        while len(_paths) > MAX_TABS:
            _paths.popitem(last=False)


def path_of(token: str) -> str | None:
    with _lock:
        return _paths.get(token)
