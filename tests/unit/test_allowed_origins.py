"""``PORT=3101 make run``: the websocket accepts the app's own origin on that port.

``make run`` starts ``reflex run --frontend-port $(PORT) --backend-port $(PORT)``;
Reflex passes the ports to the backend process in REFLEX_FRONTEND_PORT and
REFLEX_BACKEND_PORT. The check runs in a fresh process, the way a backend
worker imports the app, and reads the origins off the app's Socket.IO server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import json
from meiqia_app.meiqia_app import app
print(json.dumps(app.sio.eio.cors_allowed_origins))
"""


def _socket_origins(tmp_path: Path, **env: str) -> list[str] | str:
    environment = {k: v for k, v in os.environ.items() if k != "MEIQIA_ALLOWED_ORIGINS"}
    environment.update({"MEIQIA_DATA_DIR": str(tmp_path), "REFLEX_STATES_WORKDIR": str(tmp_path / "states"), **env})
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_default_origins_follow_the_port_the_app_serves_on(tmp_path):
    origins = _socket_origins(tmp_path, REFLEX_FRONTEND_PORT="3101", REFLEX_BACKEND_PORT="3101")
    assert sorted(origins) == ["http://127.0.0.1:3101", "http://localhost:3101"]


def test_configured_origins_win(tmp_path):
    origins = _socket_origins(
        tmp_path, REFLEX_FRONTEND_PORT="3101", MEIQIA_ALLOWED_ORIGINS="https://crm.example.com, https://b.example"
    )
    assert sorted(origins) == ["https://b.example", "https://crm.example.com"]
