"""Command line: ``python -m meiqia_app <command>`` (OPS-3)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sqlite3
import sys


def _cmd_migrate(_args) -> int:
    from meiqia_app.migrate import upgrade_to_head

    upgrade_to_head()
    print("database is at the newest migration")
    return 0


def _cmd_seed(args) -> int:
    from meiqia_app.seed.loader import customer_count, seed

    if args.if_empty and customer_count() > 0:
        print(f"database already has {customer_count():,} customers; not seeding again")
        return 0
    as_of = dt.datetime.fromisoformat(args.as_of).replace(tzinfo=dt.UTC) if args.as_of else None
    report = seed(args.customers, seed_value=args.seed, as_of=as_of, workers=args.workers)
    print(
        f"seeded {report.customers:,} customers, {report.orders:,} orders, {report.conversations:,} conversations, "
        f"{report.messages:,} messages, {report.events:,} events, {report.notes:,} notes "
        f"in {report.seconds:,.1f} s; database {report.database_bytes / 1e6:,.0f} MB"
    )
    return 0


def _cmd_init_demo(_args) -> int:
    """Reference data and demo accounts only (no customers)."""
    from meiqia_app.seed.loader import ensure_reference_data

    ensure_reference_data()
    return 0


def _cmd_demo_accounts(_args) -> int:
    from meiqia_app.seed.loader import demo_accounts_file

    path = demo_accounts_file()
    if not path.exists():
        print("no demo accounts yet (run `python -m meiqia_app seed`)", file=sys.stderr)
        return 1
    accounts = json.loads(path.read_text())
    print("Demo accounts (add the TOTP secret to any authenticator app, e.g. Google Authenticator):")
    print(f"  {'username':<10} {'password':<22} {'role':<14} TOTP secret")
    for account in accounts:
        print(f"  {account['username']:<10} {account['password']:<22} {account['role']:<14} {account['totp_secret']}")
    print("Or print a current code: .venv/bin/python -m meiqia_app totp-code SECRET")
    return 0


def _wait_until_up(url: str, seconds: float) -> bool:
    """True once ``url``/ping answers (the app started), False after ``seconds``."""
    import time
    import urllib.request

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/ping", timeout=2) as response:
                if response.status == 200:
                    urllib.request.urlopen(url.rstrip("/") + "/login", timeout=30).read()
                    return True
        except OSError:
            pass
        time.sleep(1)
    return False


def _cmd_welcome(args) -> int:
    """What a newcomer needs once `make run` has started the app: where, who, how to log in."""
    from meiqia_app.seed.loader import demo_accounts_file

    if args.wait and not _wait_until_up(args.url, args.wait):
        return 1  # the app did not start; its own error is above
    path = demo_accounts_file()
    accounts = json.loads(path.read_text()) if path.exists() else []
    url = args.url.rstrip("/")
    line = "-" * 78
    print(f"\n{line}\n美洽客户数据 / Meiqia Customer Data is running: {url}\n")
    if accounts:
        print(f"Log in at {url}/login with a demo account:")
        print(f"  {'username':<10} {'password':<22} {'role':<14} TOTP secret (for the code)")
        for account in accounts:
            print(
                f"  {account['username']:<10} {account['password']:<22} {account['role']:<14} {account['totp_secret']}"
            )
        print(
            "\n  1. Enter the username and password.\n"
            "  2. Enter the 6-digit code of an authenticator app (e.g. Google Authenticator) to which you added the\n"
            "     account's TOTP secret, or print the current code: .venv/bin/python -m meiqia_app totp-code SECRET"
        )
    else:
        print("No demo accounts yet: run `make run` (it seeds them) or `.venv/bin/python -m meiqia_app seed`.")
    print(f"\nStop the app with Ctrl+C.\n{line}", flush=True)
    return 0


def _cmd_totp_code(args) -> int:
    import pyotp

    print(pyotp.TOTP(args.secret).now())
    return 0


def _print_field_errors(error) -> None:
    """A validation error in words (English: the console's language), one line per field."""
    from meiqia_app.i18n import tr

    for field, (key, params) in error.field_errors.items():
        print(f"error: {field}: {tr('en', key, **(params or {}))}", file=sys.stderr)


def _cmd_create_api_key(args) -> int:
    from meiqia_app.migrate import upgrade_to_head
    from meiqia_app.services.errors import ValidationError
    from meiqia_app.services.identity.rbac import SYSTEM_ACTOR
    from meiqia_app.services.integrations import api_keys

    upgrade_to_head()
    try:
        view, raw = api_keys.create_key(SYSTEM_ACTOR, args.name, args.scopes, via="cli")
    except ValidationError as error:
        _print_field_errors(error)
        return 2
    print(f"API key {view.name!r} (id {view.id}, scopes {', '.join(view.scopes)}). It is shown only now:")
    print(raw)
    return 0


def _parse_pins(raw: list[str]):
    from meiqia_app.services.audit.log import Pin

    pins = []
    for value in raw or []:
        entry_id, _, entry_hash = value.partition(":")
        if not entry_id.isdigit() or len(entry_hash) != 64:
            raise ValueError(value)
        pins.append(Pin(int(entry_id), entry_hash.lower()))
    return pins


def _cmd_verify_audit(args) -> int:
    """Check the audit chain: hashes, links, MACs, the head, the anchors (and --pin ID:HASH copies).

    Exit 1 and name the first bad entry (or what is wrong) if it does not verify.
    """
    from meiqia_app.db import read_session
    from meiqia_app.services.audit import log as audit
    from meiqia_app.services.identity.rbac import SYSTEM_ACTOR

    try:
        pins = _parse_pins(args.pin)
    except ValueError as error:
        print(f"--pin wants ID:HASH (64 hex digits), got {error}", file=sys.stderr)
        return 2
    with read_session() as session:
        report = audit.verify_chain(session, pins=pins)
    audit.record_now(
        SYSTEM_ACTOR,
        "audit.verify",
        result="ok" if report.ok else "failed",
        details={
            "checked": report.checked,
            "first_bad_id": report.first_bad_id,
            "problem": report.problem,
            "anchors": report.anchors,
            "pins": len(pins),
            "via": "cli",
        },
        flagged=not report.ok,
    )
    if report.ok:
        print(
            f"audit log intact: {report.checked:,} entries checked, MACs and head verified, "
            f"{report.anchors:,} anchors and {len(pins)} pins hold"
        )
        return 0
    print(
        f"audit log BROKEN at entry {report.first_bad_id} ({report.problem}); {report.checked:,} entries read",
        file=sys.stderr,
    )
    return 1


def _cmd_anchor_audit(_args) -> int:
    """Anchor the audit chain's head now (the nightly task does it too); print it to keep a copy elsewhere."""
    from meiqia_app.services.audit import anchor as audit_anchor

    anchor = audit_anchor.write_anchor("manual")
    if anchor is None:
        print("the audit log does not verify; nothing anchored (run verify-audit)", file=sys.stderr)
        return 1
    print(f"{anchor.at}  id={anchor.id}  hash={anchor.hash}")
    print(f"keep a copy; check it later with: verify-audit --pin {anchor.id}:{anchor.hash}")
    return 0


def _cmd_create_user(args) -> int:
    from meiqia_app.db import write_session
    from meiqia_app.migrate import upgrade_to_head
    from meiqia_app.services.audit import log as audit
    from meiqia_app.services.errors import ValidationError
    from meiqia_app.services.identity import second_factor, users
    from meiqia_app.services.identity.rbac import SYSTEM_ACTOR

    upgrade_to_head()
    secret = args.totp_secret or second_factor.new_totp_secret()
    try:
        with write_session() as session:
            users.ensure_builtin_roles(session)
            user = users.create_user_record(
                session, args.username, args.password, args.role, args.display_name or "", totp_secret=secret
            )
            details = {"username": user.username, "role": args.role, "via": "cli"}
            if args.team:
                from meiqia_app.services.identity import teams

                user.team_id = teams.team_id_by_name(session, args.team)
                session.add(user)
                details["team_id"] = user.team_id
            audit.record(
                session,
                SYSTEM_ACTOR,
                "user.create",
                target_type="user",
                target_id=user.id,
                details=details,
            )
    except ValidationError as error:
        _print_field_errors(error)
        return 2
    print(f"created user {args.username} with role {args.role}" + (f" in team {args.team}" if args.team else ""))
    if not args.totp_secret:
        print(f"TOTP secret: {secret}")
    return 0


def _cmd_create_team(args) -> int:
    from meiqia_app.db import write_session
    from meiqia_app.migrate import upgrade_to_head
    from meiqia_app.services.audit import log as audit
    from meiqia_app.services.errors import ValidationError
    from meiqia_app.services.identity import teams
    from meiqia_app.services.identity.rbac import SYSTEM_ACTOR

    upgrade_to_head()
    try:
        with write_session() as session:
            team = teams.create_team_record(session, args.name)
            audit.record(
                session,
                SYSTEM_ACTOR,
                "team.create",
                target_type="team",
                target_id=team.id,
                details={"name": team.name, "via": "cli"},
            )
    except ValidationError as error:
        for field, (key, params) in error.field_errors.items():
            print(f"error: {field}: {key} {params or ''}", file=sys.stderr)
        return 2
    print(f"created team {args.name}")
    return 0


def _cmd_backup(args) -> int:
    from meiqia_app.i18n import error_text
    from meiqia_app.services.errors import AppError
    from meiqia_app.services.identity.rbac import SYSTEM_ACTOR
    from meiqia_app.services.platform import backup

    try:
        view = backup.create_backup(SYSTEM_ACTOR, kind="manual", note=args.note or "cli")
    except AppError as error:
        print(f"backup failed: {error_text('en', error)}", file=sys.stderr)
        return 1
    print(f"{backup.path_of(view.file_name)}  {view.size_text}  sha256={view.sha256}  integrity={view.integrity}")
    return 0 if view.ok else 1


def _cmd_restore(args) -> int:
    """Restore FILE over the live database (stop the app first: see services/platform/backup.py)."""
    from pathlib import Path

    from meiqia_app.i18n import error_text
    from meiqia_app.services.errors import AppError
    from meiqia_app.services.identity.rbac import SYSTEM_ACTOR
    from meiqia_app.services.platform import backup

    path = Path(args.file).resolve()
    if not args.yes:
        typed = input(f"This replaces the whole database with {path.name}. Type the file name to confirm: ")
        if typed.strip() != path.name:
            print("not confirmed; nothing changed", file=sys.stderr)
            return 2
    try:
        safety = backup.restore_file(SYSTEM_ACTOR, path)
    except AppError as error:
        print(f"restore refused: {error_text('en', error)}", file=sys.stderr)
        return 1
    print(f"restored {path.name}; the previous state is in {backup.path_of(safety.file_name)}")
    return 0


def _cmd_compact(args) -> int:
    """Rewrite an SQLite database with the current page size (stop the app first)."""
    from meiqia_app.config import get_settings
    from meiqia_app.dbadapter import adapter_for_url
    from meiqia_app.dbadapter.sqlite import SQLITE_PAGE_SIZE

    url = get_settings().database_url
    adapter = adapter_for_url(url)
    if not adapter.can_compact:
        print("compact is for SQLite databases; PostgreSQL needs nothing here", file=sys.stderr)
        return 2
    try:
        before, after = adapter.rewrite_with_page_size(url, args.page_size or SQLITE_PAGE_SIZE)
    except (RuntimeError, sqlite3.OperationalError) as error:
        print(f"compact failed, nothing changed: {error}", file=sys.stderr)
        return 1
    print(f"rewrote the database: page size {before} -> {after} bytes")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m meiqia_app", description="美洽客户数据 console commands")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("migrate", help="upgrade the database schema").set_defaults(func=_cmd_migrate)

    seed = sub.add_parser("seed", help="fill an empty database with demo data")
    seed.add_argument("--customers", type=int, default=5000)
    seed.add_argument("--seed", type=int, default=42)
    seed.add_argument("--as-of", help="UTC date-time the history ends at (default: now), e.g. 2026-01-31T12:00")
    seed.add_argument("--workers", type=int, default=None)
    seed.add_argument("--if-empty", action="store_true", help="do nothing when customers exist (make run)")
    seed.set_defaults(func=_cmd_seed)

    sub.add_parser("init-demo", help="roles, products, default tags and demo accounts").set_defaults(
        func=_cmd_init_demo
    )
    sub.add_parser("demo-accounts", help="print the demo accounts").set_defaults(func=_cmd_demo_accounts)

    welcome = sub.add_parser("welcome", help="print the app's address, the demo accounts and how to log in")
    welcome.add_argument("--url", default="http://localhost:3000")
    welcome.add_argument("--wait", type=float, default=0, help="first wait up to this many seconds for the app")
    welcome.set_defaults(func=_cmd_welcome)

    code = sub.add_parser("totp-code", help="print the current TOTP code for a secret")
    code.add_argument("secret")
    code.set_defaults(func=_cmd_totp_code)

    verify = sub.add_parser("verify-audit", help="check the audit log: hash chain, MACs, head and anchors")
    verify.add_argument(
        "--pin", action="append", default=[], metavar="ID:HASH", help="an anchor kept elsewhere (repeatable)"
    )
    verify.set_defaults(func=_cmd_verify_audit)
    sub.add_parser("anchor-audit", help="anchor the audit log's head now and print it").set_defaults(
        func=_cmd_anchor_audit
    )

    backup = sub.add_parser("backup", help="back up the database now (checked, recorded, retention applied)")
    backup.add_argument("--note", default="")
    backup.set_defaults(func=_cmd_backup)

    restore = sub.add_parser("restore", help="restore a backup file (takes a safety backup first)")
    restore.add_argument("file")
    restore.add_argument("--yes", action="store_true", help="do not ask to type the file name")
    restore.set_defaults(func=_cmd_restore)

    compact = sub.add_parser(
        "compact", help="SQLite: rewrite the database (VACUUM) with 16 KiB pages; stop the app first"
    )
    compact.add_argument("--page-size", type=int, choices=(4096, 8192, 16384, 32768, 65536), default=None)
    compact.set_defaults(func=_cmd_compact)

    create = sub.add_parser("create-user", help="create a user")
    create.add_argument("--username", required=True)
    create.add_argument("--password", required=True)
    create.add_argument("--role", required=True)
    create.add_argument("--display-name")
    create.add_argument("--totp-secret", help="BASE32 secret; generated and printed when omitted")
    create.add_argument("--team", help="put the user in this team (see create-team)")
    create.set_defaults(func=_cmd_create_user)

    team = sub.add_parser("create-team", help="create a team (小组)")
    team.add_argument("name")
    team.set_defaults(func=_cmd_create_team)

    key = sub.add_parser("create-api-key", help="make an open API key (printed once)")
    key.add_argument("--name", required=True, help="who uses it, e.g. shop-sync (shown in audit and timeline)")
    key.add_argument(
        "--scopes",
        required=True,
        help="comma-separated: customers:read, customers:read_sensitive, customers:write, tags:write, "
        "events:write, webhooks:manage",
    )
    key.set_defaults(func=_cmd_create_api_key)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
