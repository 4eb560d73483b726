"""Re-run issue 19's outside-in attacks against a running app and print one line per attack.

The unit and end-to-end tests replay every attack of issue 19 (their names say
which); this script is the quick outsider's pass over the same doors on a
freshly started app: the upload endpoint without a cookie, logout by GET and
from another site, a weak password, audit tampering, and the privacy of the
stored tab states. Usage::

    .venv/bin/python bench/attack_rerun.py

It starts the app like the end-to-end tests do (own data dir, free port,
prod mode) and stops it at the end. Each line: attack, what happened, HELD or
BROKEN. Exit status 1 when any attack got through.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.harness import running_app  # noqa: E402

results: list[tuple[str, str, bool]] = []


def check(attack: str, outcome: str, held: bool) -> None:
    results.append((attack, outcome, held))
    print(f"{'HELD  ' if held else 'BROKEN'}  {attack}: {outcome}", flush=True)


def _cli(app, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "meiqia_app", *args], env=app.env, capture_output=True, text=True, cwd=ROOT
    )


def upload_without_cookie(app) -> None:
    chunk, chunks = b"x" * (1 << 20), 200  # 200 MB streamed

    def body():
        for _ in range(chunks):
            yield chunk

    started = time.monotonic()
    with httpx.Client(timeout=30) as client:
        try:
            response = client.post(
                f"{app.url}/_upload",
                content=body(),
                headers={"Content-Type": "multipart/form-data; boundary=x", "Reflex-Client-Token": "stolen-token"},
            )
            status = response.status_code
        except httpx.HTTPError as error:  # the server may close the socket instead of reading on
            status = f"connection closed ({type(error).__name__})"
    seconds = time.monotonic() - started
    check(
        "5. POST /_upload, no cookie, 200 MB",
        f"{status} after {seconds:.1f} s",
        status in (401, 403, 413) or "closed" in str(status),
    )


def logout_by_get_or_other_site(app) -> None:
    with httpx.Client(timeout=10, follow_redirects=False) as client:
        get = client.get(f"{app.url}/api/session/clear")
        cross = client.post(f"{app.url}/api/session/clear", headers={"Origin": "https://evil.example"})
    check("9. GET /api/session/clear", str(get.status_code), get.status_code == 405)
    check("9. POST logout from another site", str(cross.status_code), cross.status_code == 403)


def weak_password(app) -> None:
    done = _cli(app, "create-user", "--username", "weakling", "--password", "password12", "--role", "agent")
    check(
        "11. create-user with password12",
        f"exit {done.returncode}: {(done.stderr or done.stdout).strip()[-90:]}",
        done.returncode != 0,
    )


def audit_tampering(app) -> None:
    baseline = _cli(app, "verify-audit")
    check("4. verify-audit on the untouched log", f"exit {baseline.returncode}", baseline.returncode == 0)
    db = sqlite3.connect(app.db_path())
    with db:
        db.execute("DELETE FROM audit_entry WHERE id = (SELECT max(id) FROM audit_entry)")
    after_delete = _cli(app, "verify-audit")
    check(
        "4. delete the newest audit row", f"verify-audit exit {after_delete.returncode}", after_delete.returncode != 0
    )
    with db:
        db.execute("DELETE FROM audit_entry")
    after_wipe = _cli(app, "verify-audit")
    check("4. wipe the audit table", f"verify-audit exit {after_wipe.returncode}", after_wipe.returncode != 0)
    db.close()


def state_files(app) -> None:
    from playwright.sync_api import sync_playwright

    from tests.e2e.harness import login

    states = Path(app.env["REFLEX_STATES_WORKDIR"])
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        context = browser.new_context(base_url=app.url, locale="zh-CN")
        page = context.new_page()
        login(page, app, "manager", "/customers", fresh=True)
        page.wait_for_selector(".customer-row, .customer-card", timeout=30_000)
        cookie = next(c["value"] for c in context.cookies() if c["name"] == "mq_session")
        page.goto("/account")
        page.wait_for_timeout(1000)
        context.close()
        browser.close()
    time.sleep(4)  # the disk manager writes a tab's state shortly after its last event
    files = [p for p in states.rglob("*") if p.is_file()]
    leaking = [p.name for p in files if cookie.encode() in p.read_bytes()]
    loose = [p.name for p in files if stat.S_IMODE(p.stat().st_mode) & 0o077]
    folder_mode = oct(stat.S_IMODE(states.stat().st_mode)) if states.exists() else "absent"
    check(
        "1. session cookie in stored tab states",
        f"{len(files)} state files, {len(leaking)} holding the cookie",
        not leaking,
    )
    check(
        "1. state files private to the app's user",
        f"folder {folder_mode}, {len(loose)} files readable by others",
        not loose and folder_mode in ("0o700", "absent"),
    )


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="attack-rerun-") as tmp, running_app(Path(tmp), seed_customers=200) as app:
        print(
            f"app at {app.url} (port {app.url.rsplit(':', 1)[-1]}: not 3000, so 8. the origin follows the port)",
            flush=True,
        )
        for attack in (upload_without_cookie, logout_by_get_or_other_site, weak_password, state_files, audit_tampering):
            attack(app)
    broken = [r for r in results if not r[2]]
    print(f"\n{len(results) - len(broken)} held, {len(broken)} broken")
    return 1 if broken else 0


if __name__ == "__main__":
    os.environ.setdefault("REFLEX_CHECK_LATEST_VERSION", "false")
    raise SystemExit(main())
