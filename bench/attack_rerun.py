"""Re-run every attack of issue 19 (items 1-13) on the finished code and print one line per attack.

The app runs for real (tests/e2e/harness.running_app: own data dir, free port
that is not 3000, prod mode). Attacks over HTTP or the websocket go to that
app (a browser where the page is needed); attacks that are a sequence of
searches or other service calls use the same service calls the UI's state
makes, with the Actor of a real session (``resolve_session`` of a cookie the
app set after a real login); CLI steps run ``python -m meiqia_app …``.
Usage::

    .venv/bin/python bench/attack_rerun.py

Phases: (A) the app runs: items 1, 2, 5, 6, 8-13 and the start of 7
(an export in a job runner process that is killed with SIGKILL, together
with the app); (B) the app is started again: the rest of 7 and the first half
of 3 (backup, erase, export); (C) the app is stopped: the restore of 3 and
the audit tampering of 4 (each on its own copy of the data dir).
Each line: HELD or BROKEN, the attack, what happened. Exit status 1 when any
attack got through. docs/security-rerun.md has the last run's table.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import sqlite3
import stat
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pyotp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.harness import CHROMIUM, CHROMIUM_ARGS, SESSION_COOKIE, running_app  # noqa: E402

DIGITS = "0123456789"
EMAIL_CHARS = string.ascii_lowercase + DIGITS + "._-"
BOUNDARY = "----attack-rerun-boundary"
PRIVACY_MANAGER = {"username": "rerun_mgr", "password": "Rerun-mgr-2026!x", "role": "manager"}
# The app and this process must agree on the per-address throttle (the harness relaxes it for the suite).
APP_ENV = {"MEIQIA_IP_LOCKOUT_THRESHOLD": "10", "MEIQIA_IP_LOCKOUT_MINUTES": "15"}

results: list[tuple[str, str, bool]] = []


def check(attack: str, outcome: str, held: bool) -> None:
    results.append((attack, outcome, held))
    print(f"{'HELD  ' if held else 'BROKEN'}  {attack}: {outcome}", flush=True)


def not_run(attack: str, why: str) -> None:
    """An attack this script could not replay: reported as BROKEN (not silently skipped)."""
    check(attack, f"NOT REPLAYED: {why}", False)


def _cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "meiqia_app", *args], env=env, capture_output=True, text=True, cwd=ROOT, timeout=600
    )


def _tail(done: subprocess.CompletedProcess) -> str:
    return " ".join((done.stderr or done.stdout).strip().split())[-110:]


# --- pointing this process at a data dir (the service calls the UI makes) ----------------------


def point_at(data_dir: Path, env: dict) -> None:
    for key in ("MEIQIA_DATA_DIR", "REFLEX_STATES_WORKDIR", *APP_ENV):
        os.environ[key] = env.get(key, "") if key != "MEIQIA_DATA_DIR" else str(data_dir)
    os.environ["MEIQIA_SCHEDULER"] = "off"
    os.environ.pop("DATABASE_URL", None)
    from meiqia_app.config import reload_settings
    from meiqia_app.db import reset_engine
    from meiqia_app.services.customers import listing

    reload_settings()
    reset_engine()
    listing.forget_cached_counts()


def sql(data_dir: Path, statement: str, params=()) -> list:
    with sqlite3.connect(data_dir / "meiqia.db", timeout=30) as db:
        return db.execute(statement, params).fetchall()


def actor_of(cookie: str):
    from meiqia_app.services.identity.sessions import resolve_session

    return resolve_session(cookie, "127.0.0.1")


def claim_over_http(app, ticket: str) -> str:
    """Trade a login ticket for the session cookie at the app's own route (as the browser does)."""
    response = httpx.get(f"{app.url}/api/session/claim", params={"ticket": ticket, "next": "/customers"})
    return response.cookies.get(SESSION_COOKIE, "")


def login_in_process(app, username: str, password: str, code: str) -> str:
    """The login page's two service calls (password, then code), then the claim route: a real session."""
    from meiqia_app.services.identity import login as auth

    accepted = auth.begin_login(username, password, "127.0.0.1")
    done = auth.complete_login(accepted.challenge, code, "127.0.0.1")
    return claim_over_http(app, done.ticket)


# --- browser phase (items 1, 5, 8, 10) ------------------------------------------------------


def _multipart(name: str, content: bytes) -> bytes:
    head = (
        f"--{BOUNDARY}\r\n"
        f'Content-Disposition: form-data; name="files"; filename="{name}"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    ).encode()
    return head + content + f"\r\n--{BOUNDARY}--\r\n".encode()


def _post_upload(app, headers: dict, body: bytes, cookie: str | None = None, declared: int | None = None):
    """POST to /_upload; the answer also when the server refuses before reading the body."""
    host = urlsplit(app.url)
    conn = http.client.HTTPConnection(host.hostname, host.port, timeout=60)
    started = time.monotonic()
    try:
        conn.putrequest("POST", "/_upload")
        conn.putheader("Content-Type", f"multipart/form-data; boundary={BOUNDARY}")
        conn.putheader("Content-Length", str(declared if declared is not None else len(body)))
        for key, value in headers.items():
            conn.putheader(key, value)
        if cookie:
            conn.putheader("Cookie", f"{SESSION_COOKIE}={cookie}")
        conn.endheaders()
        try:
            for start in range(0, len(body), 1 << 16):
                conn.send(body[start : start + (1 << 16)])
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the body was read
        try:
            response = conn.getresponse()
            return response.status, response.read(), time.monotonic() - started
        except (ConnectionResetError, http.client.RemoteDisconnected) as error:
            return f"closed ({type(error).__name__})", b"", time.monotonic() - started
    finally:
        conn.close()


def _stored_imports(app) -> set[str]:
    folder = app.data_dir / "imports"
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def _stored_states(app) -> dict[str, bytes]:
    folder = Path(app.env["REFLEX_STATES_WORKDIR"])
    return {str(p): p.read_bytes() for p in folder.rglob("*") if p.is_file()} if folder.exists() else {}


def browser_phase(app) -> dict:
    """Everything that needs a page. Returns cookies and what the pages showed, for the later checks."""
    from playwright.sync_api import expect, sync_playwright

    from tests.e2e.harness import login, wait_for_path, wait_ready

    seen: dict = {}
    app.cli(
        "create-user",
        "--username",
        PRIVACY_MANAGER["username"],
        "--password",
        PRIVACY_MANAGER["password"],
        "--role",
        "manager",
    )
    with sqlite3.connect(app.db_path(), timeout=30) as db:  # this manager enrols an authenticator at login
        db.execute("UPDATE app_user SET totp_secret_enc=NULL WHERE username=?", (PRIVACY_MANAGER["username"],))
    csv_file = app.data_dir / "legit-upload.csv"
    csv_file.write_text("姓名,手机号码\n上传甲,13912345670\n", encoding="utf-8")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)

        def new_page():
            context = browser.new_context(base_url=app.url, locale="zh-CN", viewport={"width": 1400, "height": 900})
            context.set_default_timeout(30_000)
            return context, context.new_page()

        def cookie_of(page) -> str:
            return next(c["value"] for c in page.context.cookies() if c["name"] == SESSION_COOKIE)

        # 1. A manager enrols an authenticator at login, sees unmasked phones and imports a file.
        context, page = new_page()
        page.goto("/login?next=/customers")
        page.get_by_label("用户名").fill(PRIVACY_MANAGER["username"])
        page.get_by_label("密码").fill(PRIVACY_MANAGER["password"])
        page.locator("#login-submit").click()
        expect(page.locator("#enrol-secret")).not_to_have_text("")
        seen["enrol_secret"] = page.locator("#enrol-secret").inner_text().strip()
        page.locator("#code").fill(pyotp.TOTP(seen["enrol_secret"]).now())
        page.locator("#code-submit").click()
        expect(page.locator("#recovery-codes .recovery-code").first).to_be_visible()
        seen["recovery_codes"] = [c.strip() for c in page.locator("#recovery-codes .recovery-code").all_inner_texts()]
        page.locator("#recovery-done").click()
        wait_for_path(page, "/customers")
        wait_ready(page)
        expect(page.locator("#customer-table .customer-row").first).to_be_visible()
        seen["phones"] = [
            t.strip()
            for t in page.locator("#customer-table .customer-row .col-phone").all_inner_texts()
            if t.strip() and "*" not in t
        ]
        seen["manager_cookie"] = cookie_of(page)
        page.goto("/import")
        wait_ready(page)
        page.locator("#import-upload input[type=file]").set_input_files(str(csv_file))
        with page.expect_request("**/_upload") as captured:
            page.locator("#import-upload-submit").click()
        expect(page.locator(".mapping-row")).to_have_count(2)
        sent = captured.value.headers
        seen["tab"] = {
            "Reflex-Client-Token": sent["reflex-client-token"],
            "Reflex-Event-Handler": sent["reflex-event-handler"],
        }
        seen["token"] = page.evaluate("() => window.sessionStorage.getItem('token')")
        context.close()  # the tab is gone; its state stays on the server
        time.sleep(2)

        # 1. Hydrate the closed tab with its stolen client token and no cookie.
        context, attacker = new_page()
        frames: list[str] = []
        attacker.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(str(payload))))
        attacker.add_init_script(f"window.sessionStorage.setItem('token', {seen['token']!r})")
        attacker.goto("/customers")
        wait_for_path(attacker, "/login")
        expect(attacker.locator("#login-submit")).to_be_enabled()
        used = attacker.evaluate("() => window.sessionStorage.getItem('token')") == seen["token"]
        context.close()
        received = "".join(frames)
        leaked = [p for p in seen["phones"] if p in received]
        check(
            "1. hydrate a closed manager tab with its stolen client token, no cookie",
            f"stolen token used={used}, hydration snapshot={'is_hydrated' in received}, "
            f"landed on /login, {len(leaked)} of {len(seen['phones'])} phones the tab showed came over the websocket",
            used and "is_hydrated" in received and not leaked and bool(seen["phones"]),
        )

        # 5. /_upload: the manager's tab token without a cookie / with other users' sessions / oversize.
        context_a, agent_page = new_page()
        login(agent_page, app, "agent", "/customers")
        seen["agent_cookie"] = cookie_of(agent_page)
        context_b, admin_page = new_page()
        login(admin_page, app, "admin", "/customers")
        seen["admin_cookie"] = cookie_of(admin_page)
        body = _multipart("evil.csv", "姓名\n攻击者\n".encode() * 50_000)
        before = _stored_imports(app)
        status, _, _ = _post_upload(app, seen["tab"], body)
        check("5. POST /_upload with the manager's client token, no cookie", f"status {status}", status in (401, 403))
        status, _, _ = _post_upload(app, seen["tab"], body, cookie=seen["agent_cookie"])
        check(
            "5. POST /_upload with the manager's tab and an agent's cookie (no import permission)",
            f"status {status}",
            status in (401, 403),
        )
        status, answer, _ = _post_upload(app, seen["tab"], body, cookie=seen["admin_cookie"])
        refused = "上传被拒绝".encode() in answer
        check(
            "5. POST /_upload with the manager's tab and an admin's cookie (another importer)",
            f"status {status}, answer says refused={refused}",
            status != 200 or refused,
        )
        status, _, seconds = _post_upload(
            app, seen["tab"], b"x" * (1 << 20), cookie=seen["manager_cookie"], declared=60 * 1024 * 1024
        )
        check(
            "5. POST /_upload with the manager's own cookie, 60 MB declared (cap 50 MB)",
            f"status {status} after {seconds:.1f} s",
            status == 413 or "closed" in str(status),
        )
        stored = _stored_imports(app) - before
        check("5. files stored by the refused uploads", f"{len(stored)} new files in imports/", not stored)

        # 10. An event naming an unknown handler, sent with the admin's cookie.
        log_before = app.log_path.read_text(errors="replace")
        answer = admin_page.evaluate(
            """async () => {
                const token = window.sessionStorage.getItem('token') + '-probe';
                const url = location.origin.replace('http', 'ws') + '/_event/?EIO=4&transport=websocket&token=' + token;
                const ws = new WebSocket(url);
                const received = [];
                await new Promise((resolve, reject) => {
                    ws.onmessage = (m) => {
                        received.push(m.data);
                        if (m.data.startsWith('0')) ws.send('40/_event,');
                        if (m.data.startsWith('40/_event')) {
                            ws.send('42/_event,' + JSON.stringify(['event', {
                                name: 'reflex___state____state.no_such_handler_probe',
                                payload: {}, router_data: {pathname: '/customers', query: {}},
                            }]));
                            setTimeout(resolve, 1500);
                        }
                    };
                    ws.onerror = reject;
                });
                ws.close();
                return received;
            }"""
        )
        deadline, log = time.time() + 15, ""
        while time.time() < deadline:
            log = app.log_path.read_text(errors="replace")[len(log_before) :]
            if "no_such_handler_probe" in log:
                break
            time.sleep(0.5)
        flat = log.replace("\n", "").replace(" ", "")
        check(
            "10. unknown handler event sent with the admin's cookie",
            f"connected={any(m.startswith('40/_event') for m in answer)}, event logged="
            f"{'no_such_handler_probe' in log}, cookie in the log={seen['admin_cookie'] in flat}",
            "no_such_handler_probe" in log and seen["admin_cookie"] not in flat,
        )
        context_a.close()
        context_b.close()

        # 8. The app runs on a port that is not 3000: its own origin works, another is refused and told.
        port = app.url.rsplit(":", 1)[1]
        context, page = new_page()
        page.goto(f"{app.url}/login")
        expect(page.locator("#login-submit")).to_be_enabled()
        own_ok = page.locator("#login-submit").is_enabled()
        own_error = page.locator("#connection-error").count()
        refused_origin = f"http://127.0.0.2:{port}"
        page.goto(f"{refused_origin}/login")
        banner = page.locator("#connection-error")
        try:
            expect(banner).to_be_visible()
            text = banner.inner_text()
        except AssertionError:
            text = ""
        context.close()
        check(
            f"8. app on port {port} (not 3000): own origin / origin {refused_origin}",
            f"own origin: login usable={own_ok}, error banners={own_error}; other origin: banner="
            f"{bool(text)}, names MEIQIA_ALLOWED_ORIGINS={'MEIQIA_ALLOWED_ORIGINS' in text}",
            own_ok and own_error == 0 and "MEIQIA_ALLOWED_ORIGINS" in text and refused_origin in text,
        )
        browser.close()
    return seen


# --- item 2: undoing the mask through search ------------------------------------------------


def _observe(actor, typed: str) -> tuple:
    from meiqia_app.services.customers import listing
    from meiqia_app.services.customers.query import ListQuery
    from meiqia_app.services.errors import AppError

    query = ListQuery.from_dict({"q": typed})
    try:
        page = listing.list_customers(actor, query, page_size=100)
        listing.forget_cached_counts()
        exact = listing.count_customers(actor, query, exact=True).value
    except AppError as error:
        return ("refused", error.message_key)
    return tuple((r.id, r.match, r.phone, r.email) for r in page.rows), exact


def _victim_rows(answers: list[tuple], victim: int) -> list:
    """What the answers show of the victim: its row (with its match label) or nothing, per guess."""
    return [
        next((row for row in answer[0] if row[0] == victim), None) if answer[0] != "refused" else answer
        for answer in answers
    ]


def _guessing(actor, victim: int, families: list[list[str]], truths: list[str], change, restore) -> dict:
    """Replay the guesses; then give the victim another hidden part that looks the same masked and replay them.

    ``learned``: families where the victim shows up for the guess of the true character and not for
    every guess, and that changes with the hidden part (what the attacker reads). ``visible``: families
    where it shows up for some guesses only, the same whatever the hidden part is (matched through
    something the role sees, e.g. a visitor ID or the visible digits).
    ``depends``: families whose answers (rows, labels, exact counts) change with the hidden part: the
    criterion of tests/unit/test_search_masking.py.
    """
    before = [[_observe(actor, typed) for typed in guesses] for guesses in families]
    change()
    try:
        after = [[_observe(actor, typed) for typed in guesses] for guesses in families]
    finally:
        restore()
    learned, visible = [], []
    for guesses, answers, changed, truth in zip(families, before, after, truths):
        shown = [typed for typed, row in zip(guesses, _victim_rows(answers, victim)) if row is not None]
        if shown and len(shown) < len(guesses):
            # Telling only if it hangs on the hidden part: the same guesses show the customer just the
            # same once its hidden part is another (then a field the role sees made the match).
            (learned if truth in shown and answers != changed else visible).append(f"{truth}: {shown[:2]}…")
    depends = [guesses[0] for guesses, a, b in zip(families, before, after) if a != b]
    return {
        "learned": learned,
        "visible": visible,
        "depends": depends,
        "searches": 2 * sum(len(g) for g in families),
    }


def search_unmasking(data_dir: Path, agent, manager) -> None:
    from meiqia_app.services.customers import listing, saved_views
    from meiqia_app.services.customers.query import ListQuery
    from meiqia_app.services.errors import AppError, PermissionDenied
    from meiqia_app.services.exports import request as exports
    from tests.unit.test_search_masking import change_hidden_part

    page = listing.list_customers(agent, ListQuery.from_dict({}), page_size=100)
    target = next(r for r in page.rows if "*" in r.phone and r.email.count("@") == 1 and len(r.phone) == 11)
    name, phone, email = sql(data_dir, "SELECT name, phone, email FROM customer WHERE id=?", (target.id,))[0]
    hidden = [i for i, ch in enumerate(target.phone) if ch == "*"]
    other_phone = "".join(str((int(ch) + 5) % 10) if i in hidden else ch for i, ch in enumerate(phone))
    # For each hidden digit, three families of ten searches that differ only in the guess for it,
    # next to the true digits around it (worst case: the attacker got those right already).
    families, truths = [], []
    for p in hidden:
        before, after = phone[max(0, p - 3) : p], phone[p + 1 : p + 4]
        families.append([f"{name} {before}{d}" for d in DIGITS])
        families.append([f"{before}{d}" for d in DIGITS])
        families.append([f"{name} {d}{after}" for d in DIGITS])
        truths += [f"{name} {before}{phone[p]}", f"{before}{phone[p]}", f"{name} {phone[p]}{after}"]
    for who, actor in (("agent", agent), ("manager (sees phones: the control)", manager)):
        found = _guessing(
            actor,
            target.id,
            families,
            truths,
            lambda: change_hidden_part(target.id, phone=other_phone),
            lambda: change_hidden_part(target.id, phone=phone),
        )
        check(
            f"2. {who} guesses the hidden digits of {target.phone} ('{name} {phone[:3]}0'..'9' and the like)",
            f"the true digit's guess singles the customer out in {len(found['learned'])} of {len(families)} "
            f"guess families {found['learned'][:2]}; answers depend on the hidden digits in "
            f"{len(found['depends'])} families ({found['searches']} searches)",
            (not found["learned"] and not found["depends"]) if actor is agent else bool(found["depends"]),
        )
    local, _, domain = email.lower().partition("@")
    families = [[f"{name} {c}@{domain}" for c in EMAIL_CHARS], [f"{c}{local[-1]}@{domain}" for c in EMAIL_CHARS]]
    truths = [f"{name} {local[-1]}@{domain}", f"{local[-2:]}@{domain}"]
    for known in range(1, min(len(local), 4)):
        families.append([f"{name} {local[:known]}{c}" for c in EMAIL_CHARS])
        families.append([f"{local[:known]}{c}" for c in EMAIL_CHARS])
        truths += [f"{name} {local[: known + 1]}", local[: known + 1]]
    # A guess that is the whole address is an exact match, which the rule allows (and rate-limits).
    whole = [g for guesses in families for g in guesses if g.split()[-1] == email.lower()]
    families = [[g for g in guesses if g not in whole] for guesses in families]
    other_email = f"{local[0]}x9q-{local[1:][::-1]}@{domain}"
    found = _guessing(
        agent,
        target.id,
        families,
        truths,
        lambda: change_hidden_part(target.id, email=other_email),
        lambda: change_hidden_part(target.id, email=email),
    )
    check(
        f"2. agent guesses the hidden characters of {target.email}",
        f"the true character's guess singles the customer out in {len(found['learned'])} of {len(families)} "
        f"families {found['learned'][:2]}; answers depend on the hidden part in {len(found['depends'])} "
        f"families; shown for some guesses only, the same whatever the hidden part is, in "
        f"{len(found['visible'])} {found['visible'][:2]} ({found['searches']} searches; {len(whole)} guesses "
        "equal to the whole address left out: exact matches are allowed)",
        not found["learned"] and not found["depends"],
    )
    # Saved views: a manager shares views searching each guess, the agent loads them.
    answers = set()
    for d in DIGITS:
        view = saved_views.save_view(manager, f"rerun guess {d}", ListQuery.from_dict({"q": f"{name} {phone[:3]}{d}"}))
        try:
            loaded = saved_views.load_view(agent, view.id)
            answers.add(_observe(agent, loaded.q) + (tuple(r.id for r in listing.list_customers(agent, loaded).rows),))
        except AppError as error:
            answers.add(("refused", error.message_key))
    check(
        "2. the same guesses as a manager's saved views loaded by the agent",
        f"{len(answers)} distinct answer(s) over 10 digits (not shared views cannot be loaded: "
        f"{next(iter(answers))[0] == 'refused'})",
        len(answers) == 1,
    )
    shared = set()
    for d in DIGITS:
        view = saved_views.save_view(
            manager, f"rerun shared {d}", ListQuery.from_dict({"q": f"{name} {phone[:3]}{d}"}), shared=True
        )
        loaded = saved_views.load_view(agent, view.id)
        shared.add(
            (tuple(r.id for r in listing.list_customers(agent, loaded).rows),)
            + (listing.count_customers(agent, loaded, exact=True).value,)
        )
        listing.forget_cached_counts()
    check(
        "2. the guesses as shared views a manager saved, loaded and listed by the agent",
        f"{len(shared)} distinct answer(s) over 10 digits",
        len(shared) == 1,
    )
    # Duplicate finder and export scopes: reachable for the agent?
    for what, call in (
        ("duplicate finder (phone groups)", lambda: _duplicates(agent)),
        ("export review with a guessing scope", lambda: _export_counts(exports, agent, name, phone)),
    ):
        try:
            outcome = call()
        except PermissionDenied:
            check(f"2. {what} as the agent", "refused (PermissionDenied, audited)", True)
            continue
        check(f"2. {what} as the agent", outcome[0], outcome[1])
    # The list's filters: ListQuery has no phone/e-mail filter; 'q' is the only field that matches them.
    from dataclasses import fields

    contact = [f.name for f in fields(ListQuery) if "phone" in f.name or "email" in f.name]
    check("2. list filters on phone/e-mail", f"ListQuery fields naming phone/e-mail: {contact or 'none'}", not contact)


def _duplicates(agent) -> tuple[str, bool]:
    from meiqia_app.services.customers.duplicates.finding import find_duplicate_groups

    page = find_duplicate_groups(agent, "phone")
    shown = [m.phone for g in page.groups for m in g.members]
    return f"{len(page.groups)} groups, unmasked phones shown: {sum('*' not in p for p in shown)}", all(
        "*" in p for p in shown if p
    )


def _export_counts(exports, agent, name, phone) -> tuple[str, bool]:
    counts = set()
    for d in DIGITS:
        data = {
            "scope": {"kind": "query", "query": {"q": f"{name} {phone[:3]}{d}", "status": "all"}},
            "fields": ["id", "name"],
            "format": "csv",
        }
        counts.add(exports.review(agent, data).row_count)
    return f"{len(counts)} distinct row counts over 10 digits", len(counts) == 1


# --- items 5 (import files), 6, 11, 12, 13 --------------------------------------------------


def import_bombs(admin) -> None:
    import resource

    from meiqia_app.config import get_settings
    from meiqia_app.services.customers.importing.columns import suggest_mapping
    from meiqia_app.services.customers.importing.files import preview_table
    from meiqia_app.services.customers.importing.job import dry_run
    from meiqia_app.services.errors import ValidationError
    from tests.unit.test_import_bounds import bomb_xlsx

    packed, unpacked = bomb_xlsx("rerun-bomb.xlsx", 400_000, 2_000_000)
    path = get_settings().imports_dir / "rerun-bomb.xlsx"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    try:
        preview_table(admin, path)
        outcome, held = "opened", False
    except ValidationError as error:
        outcome, held = f"refused {error.field_errors.get('file')}", True
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak) // 1024
    check(
        f"5. zip-bomb XLSX ({packed // 1024} KB packed, {unpacked // 1024 // 1024} MB unpacked) previewed as admin",
        f"{outcome} in {time.monotonic() - started:.2f} s, memory grew {grown} MB",
        held and grown < 100,
    )
    nul = get_settings().imports_dir / "rerun-nul.csv"
    nul.write_bytes(
        "姓名,手机号码,城市\n张\x00三,19912340011,北京\n李四,19912340012,上\x00海\n王五,19912340013,杭州\n".encode()
    )
    report = dry_run(admin, nul, suggest_mapping(["姓名", "手机号码", "城市"]))
    problems = [(p.row, p.field, p.message_key) for p in report.problems]
    check(
        "5. CSV with NUL bytes in two cells (dry run as admin)",
        f"valid {report.valid}, invalid {report.invalid}: {problems}",
        report.invalid == 2 and all(k == "import.invalid_characters" for _, _, k in problems),
    )


def two_step_replacement(app, seen: dict) -> None:
    from meiqia_app.services.errors import AppError as AuthError
    from meiqia_app.services.identity import account_security

    codes = seen["recovery_codes"]
    session_b = login_in_process(app, PRIVACY_MANAGER["username"], PRIVACY_MANAGER["password"], codes[0])
    actor = actor_of(session_b)
    outcomes = []
    for password, code in (("", codes[1]), (PRIVACY_MANAGER["password"], "000000"), ("", "")):
        try:
            account_security.begin_reenrol(actor, password, code)
            outcomes.append("accepted")
        except AuthError as error:
            outcomes.append(error.message_key)
    check(
        "6. replace 2FA holding only a session (no password / wrong code / neither)",
        ", ".join(outcomes),
        "accepted" not in outcomes,
    )
    enrolment = account_security.begin_reenrol(actor, PRIVACY_MANAGER["password"], codes[1])
    done = account_security.confirm_reenrol(actor, enrolment.challenge, pyotp.TOTP(enrolment.secret).now())
    other = actor_of(seen["manager_cookie"])
    over_http = httpx.get(
        f"{app.url}/api/backups/download", cookies={SESSION_COOKIE: seen["manager_cookie"]}, follow_redirects=False
    )
    check(
        "6. real 2FA change (password + recovery code): the browser session from before",
        f"sessions revoked {done.sessions_revoked}, old cookie still resolves={other is not None}, "
        f"still valid for this session={actor_of(session_b) is not None} (HTTP with old cookie: {over_http.status_code})",
        other is None and done.sessions_revoked >= 1,
    )


def weak_passwords_and_spraying(app) -> None:
    from meiqia_app.services.errors import AppError as AuthError
    from meiqia_app.services.identity import login as auth

    for weak in ("password12", "aaaaaaaaa1"):
        done = _cli(app.env, "create-user", "--username", f"weak{weak[:4]}", "--password", weak, "--role", "agent")
        check(f"11. create-user with {weak}", f"exit {done.returncode}: {_tail(done)}", done.returncode != 0)
    answers = []
    for n in range(20):
        try:
            auth.begin_login(f"nobody{n}", "Wrong-password-1", "203.0.113.9")
            answers.append("accepted")
        except AuthError as error:
            answers.append(error.message_key)
    locked = answers.count("auth.address_locked")
    check(
        "11. 20 unknown usernames from one address (203.0.113.9)",
        f"{answers.count('auth.invalid_credentials')} told invalid, then {locked} address_locked",
        locked >= 10 and "accepted" not in answers,
    )
    try:
        auth.begin_login("admin", app.accounts["admin"].password, "203.0.113.9")
        real = "accepted"
    except AuthError as error:
        real = error.message_key
    check("11. then the right admin password from that address", real, real == "auth.address_locked")


def audit_privacy_and_mentions(data_dir: Path, admin, seen: dict) -> str:
    """Items 12 and 13; returns the erased customer's phone (one the manager's tab showed)."""
    from meiqia_app.services.cleanup import actions as cleanup
    from meiqia_app.services.cleanup import preview as cleanup_preview
    from meiqia_app.services.cleanup.criteria import Criteria
    from meiqia_app.services.customers import notes
    from meiqia_app.services.platform import jobs
    from meiqia_app.services.privacy import erasure

    phones = seen["phones"]
    target, name, phone, email = sql(
        data_dir,
        f"SELECT id, name, phone, email FROM customer WHERE status='active' AND email IS NOT NULL "
        f"AND phone IN ({','.join('?' * len(phones))}) ORDER BY id LIMIT 1",
        phones,
    )[0]
    other = sql(
        data_dir,
        "SELECT c.id FROM customer c JOIN conversation v ON v.customer_id=c.id WHERE c.id<>? "
        "AND c.status='active' AND c.erased_at IS NULL ORDER BY c.id LIMIT 1",
        (target,),
    )[0][0]
    note_text = f"转介绍人：{name}，电话 {phone}，邮箱 {email}（复跑 {time.time_ns()}）"
    note_id = notes.add_note(admin, other, note_text)
    reason = f"客户来电要求删除，身份证尾号 4431，复跑 {time.time_ns()}"
    erasure.request_erasure(admin, target, reason)
    audit_text = " ".join(str(r) for r in sql(data_dir, "SELECT details, target_id, action FROM audit_entry"))
    check(
        "12. note text and erasure reason in the audit log",
        f"note text in audit={note_text in audit_text or name + '，电话' in audit_text}, "
        f"reason in audit={reason in audit_text or '4431' in audit_text}",
        note_text not in audit_text and reason not in audit_text and "4431" not in audit_text,
    )
    dry = cleanup_preview.dry_run(admin, Criteria(erasure_pending=True, scope="all"), "erase")
    listed = {m["key"]: m for m in dry.mentions or []}
    key = f"note:{note_id}"
    check(
        "13. erasing a customer: other records naming them listed in the dry run",
        f"{len(listed)} mention(s) listed; the other customer's note: "
        f"{key in listed and sorted(listed[key]['fields'])}",
        key in listed and {"name", "phone"} <= set(listed[key]["fields"]),
    )
    original = jobs.start_in_background
    jobs.start_in_background = jobs.run_job  # the job in this process, to its end
    try:
        job_id = cleanup.start_action(
            admin, Criteria(erasure_pending=True, scope="all"), "erase", confirm=str(dry.count), redact=[key]
        )
    finally:
        jobs.start_in_background = original
    report = cleanup.job_report(admin, job_id)
    body = sql(data_dir, "SELECT body FROM note WHERE id=?", (note_id,))[0][0]
    erased_audit = " ".join(
        r[0] for r in sql(data_dir, "SELECT details FROM audit_entry WHERE action='erasure.execute'")
    )
    check(
        "13. erasure with the mention ticked: report and redaction",
        f"report mentions={report.mentions}, name/phone left in the note="
        f"{name in body or phone in body}, values in the erasure audit={phone in erased_audit}",
        key in (report.mentions or {}).get("redacted", [])
        and name not in body
        and phone not in body
        and phone not in erased_audit,
    )
    return phone


def state_files(app, seen: dict, erased_phone: str) -> None:
    time.sleep(4)  # the disk manager writes a tab's state shortly after its last event
    stored = _stored_states(app)
    secrets = {
        "manager's cookie": seen["manager_cookie"],
        "agent's cookie": seen["agent_cookie"],
        "admin's cookie": seen["admin_cookie"],
        "TOTP secret shown at enrolment": seen["enrol_secret"],
        **{f"recovery code {c}": c for c in seen["recovery_codes"]},
        "erased customer's phone": erased_phone,
        **{f"listed phone {p}": p for p in seen["phones"]},
    }
    leaks = sorted({what for data in stored.values() for what, value in secrets.items() if value.encode() in data})
    check(
        "1. stored tab states: cookies, TOTP secret, recovery codes, phones seen, erased phone",
        f"{len(stored)} state files scanned for {len(secrets)} values: leaks {leaks or 'none'}",
        len(stored) > 3 and not leaks,
    )
    folder = Path(app.env["REFLEX_STATES_WORKDIR"])
    loose = [p for p in folder.rglob("*") if p.is_file() and stat.S_IMODE(p.stat().st_mode) != 0o600]
    mode = oct(stat.S_IMODE(folder.stat().st_mode))
    check(
        "1. states folder / files private to the app's user",
        f"folder {mode}, {len(loose)} files not 0600",
        mode == "0o700" and not loose,
    )


def logout_by_get_or_other_site(app, seen: dict) -> None:
    from meiqia_app.services.identity.sessions import resolve_session

    cookie = {SESSION_COOKIE: seen["agent_cookie"]}
    with httpx.Client(timeout=10, follow_redirects=False, cookies=cookie) as client:
        get = client.get(f"{app.url}/api/session/clear")
        cross = client.post(f"{app.url}/api/session/clear", headers={"Origin": "https://evil.example"})
        bare = client.post(f"{app.url}/api/session/clear")
    alive = resolve_session(seen["agent_cookie"], touch=False) is not None
    check(
        "9. logout by GET / from another site / with no Origin, with the agent's cookie",
        f"GET {get.status_code}, cross-site POST {cross.status_code}, bare POST {bare.status_code}; "
        f"session still alive={alive}",
        get.status_code in (403, 405) and cross.status_code == 403 and bare.status_code == 403 and alive,
    )


# --- item 7: a job killed mid-way --------------------------------------------------------------

_EXPORT_CHILD = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from meiqia_app.services.exports import request as r, run as s
from meiqia_app.services.identity.sessions import resolve_session

def slow(items):
    # The file is open and the first rows are written; the rest take a minute (the kill comes first).
    for item in items:
        yield item
        time.sleep(60)

lines, batches = s.write_csv_lines, s.write_csv
s.write_csv_lines = lambda plain, meta, rows, progress: lines(plain, meta, slow(rows), progress)
s.write_csv = lambda plain, meta, rows, progress: batches(plain, meta, slow(rows), progress)
actor = resolve_session(sys.argv[2])
info = r.request_export(actor, {"scope": {"kind": "query", "query": {}}, "fields": ["id", "name"], "format": "csv"})
print(info.id, info.status, flush=True)
time.sleep(600)
"""


def _app_processes(data_dir: Path) -> list[int]:
    """The app's process group leaders this script started (their environment names its data dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if f"MEIQIA_DATA_DIR={data_dir}".encode() in environ and b"reflex" in cmdline and b"run" in cmdline:
            found.append(int(entry.name))
    return found


def kill_during_export(app, seen: dict) -> dict:
    exports_dir = app.data_dir / "exports"
    child = subprocess.Popen(
        [sys.executable, "-c", _EXPORT_CHILD, str(ROOT), seen["admin_cookie"]],
        env={**os.environ},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    first = child.stdout.readline().split()
    export_id = int(first[0]) if first else 0
    deadline = time.time() + 60
    parts: list[Path] = []
    while time.time() < deadline and not parts:
        parts = list(exports_dir.glob(".export-*.part.*")) if exports_dir.exists() else []
        time.sleep(0.3)
    status = sql(app.data_dir, "SELECT status FROM export_job WHERE id=?", (export_id,))
    child.kill()  # SIGKILL: the job runner process dies mid-export
    child.wait()
    leaders = _app_processes(app.data_dir)
    for pid in leaders:  # and the app itself, by its process group (started by this script)
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    return {
        "export_id": export_id,
        "status_before": status[0][0] if status else "none",
        "parts": [p.name for p in parts],
        "killed_app": len(leaders),
        "child_err": child.stderr.read()[-300:] if not first else "",
    }


def after_restart(app, killed: dict, started: float) -> None:
    if not killed["export_id"]:
        not_run("7. export killed mid-way", f"the export did not start: {killed['child_err']}")
        return
    status, error = sql(app.data_dir, "SELECT status, error FROM export_job WHERE id=?", (killed["export_id"],))[0]
    running = sql(app.data_dir, "SELECT count(*) FROM job WHERE status='running'")[0][0]
    left = [p.name for p in (app.data_dir / "exports").glob("*.part.*")]
    own = [p.name for p in (app.data_dir / "exports").glob(f"*export-{killed['export_id']}-*")]
    check(
        "7. kill -9 of the job runner and the app during an export, then restart",
        f"before: export {killed['status_before']}, .part files {killed['parts']}, app processes killed "
        f"{killed['killed_app']}; {time.monotonic() - started:.0f} s after the restart began: export {status} "
        f"({error}), running jobs {running}, .part files left {left}, files of that export left {own}",
        bool(killed["parts"])
        and status in ("failed", "done")
        and not left
        and running == 0
        and (status == "done" or not own),
    )


# --- item 3: backup, erase, restore -------------------------------------------------------------


def backup_then_erase(app, admin) -> dict:
    from meiqia_app.services.exports import request as exports
    from meiqia_app.services.exports.run import wait_for_export
    from meiqia_app.services.privacy import erasure

    done = _cli(app.env, "backup", "--note", "attack-rerun")
    backup_file = done.stdout.split()[0] if done.returncode == 0 else ""
    target, phone = sql(
        app.data_dir,
        "SELECT id, phone FROM customer WHERE status='active' AND phone IS NOT NULL AND erased_at IS NULL "
        "AND NOT EXISTS (SELECT 1 FROM erasure_request r WHERE r.customer_id=customer.id) ORDER BY id LIMIT 1",
    )[0]
    erasure.erase_customer(admin, target, confirm=str(target))
    info = exports.request_export(
        admin, {"scope": {"kind": "query", "query": {}}, "fields": ["id", "name"], "format": "csv"}
    )
    wait_for_export(info.id, timeout=60)
    export_file = sql(app.data_dir, "SELECT file_name FROM export_job WHERE id=?", (info.id,))[0][0]
    recorded = sql(app.data_dir, "SELECT id, entry_hash, action FROM audit_entry ORDER BY id")
    return {
        "backup": backup_file,
        "backup_out": _tail(done),
        "target": target,
        "phone": phone,
        "export_file": export_file,
        "recorded": recorded,
    }


def restore_and_check(data_dir: Path, env: dict, before: dict) -> None:
    if not before["backup"]:
        not_run("3. backup → erase → restore", f"backup failed: {before['backup_out']}")
        return
    done = _cli(env, "restore", before["backup"], "--yes")
    customer = sql(data_dir, "SELECT phone, erased_at FROM customer WHERE id=?", (before["target"],))[0]
    now = sql(data_dir, "SELECT id, entry_hash, action FROM audit_entry ORDER BY id")
    kept = now[: len(before["recorded"])] == before["recorded"]
    restores = [r for r in now[len(before["recorded"]) :] if r[2] == "backup.restore"]
    file_left = bool(before["export_file"]) and (data_dir / "exports" / before["export_file"]).exists()
    verify = _cli(env, "verify-audit")
    check(
        "3. backup → erase a customer → restore (CLI, app stopped)",
        f"restore exit {done.returncode}; customer phone back={customer[0] == before['phone']}, erased_at set="
        f"{customer[1] is not None}",
        done.returncode == 0 and customer[0] != before["phone"] and customer[1] is not None,
    )
    check(
        "3. audit rows written after the backup (erasure, export) after the restore",
        f"all {len(before['recorded'])} rows kept with their hashes={kept}, restore recorded={len(restores)}, "
        f"verify-audit exit {verify.returncode}",
        kept and len(restores) == 1 and verify.returncode == 0,
    )
    check(
        "3. export file made after the backup (no row after the restore)",
        f"{before['export_file'] or 'no export file'} still on disk={file_left}",
        bool(before["export_file"]) and not file_left,
    )


# --- item 4: audit tampering (each on its own copy of the stopped app's data dir) ---------------


def _copy(data_dir: Path, into: Path) -> tuple[Path, dict]:
    target = into / f"copy-{time.time_ns()}"
    shutil.copytree(data_dir, target, ignore=shutil.ignore_patterns("states", "exports", "imports", "backups"))
    from meiqia_app.services.audit.anchor import FILE_NAME

    anchors = data_dir / "backups" / FILE_NAME  # the anchor file lives beside the backups
    if anchors.exists():
        (target / "backups").mkdir()
        shutil.copy2(anchors, target / "backups" / FILE_NAME)
    env = {**os.environ, "MEIQIA_DATA_DIR": str(target)}
    env.pop("DATABASE_URL", None)
    return target, env


def audit_tampering(data_dir: Path, scratch: Path) -> None:
    from meiqia_app.db import read_session
    from meiqia_app.models import AuditEntry
    from meiqia_app.services.audit import log as audit

    baseline = _cli({**os.environ, "MEIQIA_DATA_DIR": str(data_dir)}, "verify-audit")
    check("4. verify-audit on the untouched log", f"exit {baseline.returncode}", baseline.returncode == 0)

    copy, env = _copy(data_dir, scratch)  # truncate the newest rows and fix the head
    rows = sql(copy, "SELECT id, entry_hash FROM audit_entry ORDER BY id DESC LIMIT 4")
    keep_id, keep_hash = rows[-1]
    sql(copy, "DELETE FROM audit_entry WHERE id > ?", (keep_id,))
    sql(
        copy,
        "UPDATE app_setting SET value=? WHERE key=?",
        (json.dumps({"id": keep_id, "hash": keep_hash}), audit.HEAD_KEY),
    )
    done = _cli(env, "verify-audit")
    check(
        "4. delete the 3 newest rows and fix the stored head",
        f"verify-audit exit {done.returncode}: {_tail(done)}",
        done.returncode != 0,
    )

    copy, env = _copy(data_dir, scratch)  # edit one row and recompute every hash after it
    point_at(copy, env)
    with read_session() as session:
        entries = list(session.exec(select_all(AuditEntry)).all())
    edit_at = entries[len(entries) // 2].id
    previous = next(e.entry_hash for e in entries if e.id == edit_at - 1)
    with sqlite3.connect(copy / "meiqia.db") as db:
        for entry in (e for e in entries if e.id >= edit_at):
            if entry.id == edit_at:
                entry.details = json.dumps({"forged": True})
            entry.prev_hash = previous
            entry.entry_hash = audit.compute_hash(entry)
            previous = entry.entry_hash
            db.execute(
                "UPDATE audit_entry SET details=?, prev_hash=?, entry_hash=? WHERE id=?",
                (entry.details, entry.prev_hash, entry.entry_hash, entry.id),
            )
        db.execute(
            "UPDATE app_setting SET value=? WHERE key=?",
            (json.dumps({"id": entries[-1].id, "hash": previous}), audit.HEAD_KEY),
        )
    done = _cli(env, "verify-audit")
    check(
        f"4. edit row {edit_at} and recompute every hash after it (and the head)",
        f"verify-audit exit {done.returncode}: {_tail(done)}",
        done.returncode != 0,
    )

    for also in ("", "and the head"):
        copy, env = _copy(data_dir, scratch)
        sql(copy, "DELETE FROM audit_entry")
        if also:
            sql(copy, "DELETE FROM app_setting WHERE key=?", (audit.HEAD_KEY,))
        done = _cli(env, "verify-audit")
        check(
            f"4. wipe the audit table {also}".strip(),
            f"verify-audit exit {done.returncode}: {_tail(done)}",
            done.returncode != 0,
        )


def select_all(model):
    from sqlmodel import select

    return select(model).order_by(model.id)


# --- the run -------------------------------------------------------------------------------------


def main() -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="attack-rerun-") as tmp:
        data_dir, scratch = Path(tmp) / "data", Path(tmp) / "scratch"
        data_dir.mkdir()
        scratch.mkdir()
        with running_app(data_dir, seed_customers=200, extra_env=APP_ENV) as app:
            print(f"app at {app.url} ({time.monotonic() - started:.0f} s)", flush=True)
            point_at(app.data_dir, app.env)
            seen = browser_phase(app)
            agent, admin = actor_of(seen["agent_cookie"]), actor_of(seen["admin_cookie"])
            manager = actor_of(seen["manager_cookie"])
            logout_by_get_or_other_site(app, seen)
            search_unmasking(app.data_dir, agent, manager)
            import_bombs(admin)
            weak_passwords_and_spraying(app)
            erased_phone = audit_privacy_and_mentions(app.data_dir, admin, seen)
            state_files(app, seen, erased_phone)
            two_step_replacement(app, seen)  # signs the manager's browser session out: after the scans
            killed = kill_during_export(app, seen)
        restart = time.monotonic()
        with running_app(data_dir, seed_customers=None, extra_env=APP_ENV) as app:
            after_restart(app, killed, restart)
            point_at(app.data_dir, app.env)
            before = backup_then_erase(app, actor_of(seen["admin_cookie"]))
            env = app.env
        restore_and_check(data_dir, env, before)
        audit_tampering(data_dir, scratch)
    broken = [r for r in results if not r[2]]
    print(f"\n{len(results) - len(broken)} held, {len(broken)} broken, {time.monotonic() - started:.0f} s")
    return 1 if broken else 0


if __name__ == "__main__":
    os.environ.setdefault("REFLEX_CHECK_LATEST_VERSION", "false")
    raise SystemExit(main())
