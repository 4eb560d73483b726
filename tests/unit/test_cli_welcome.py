"""`make run`'s closing words: the address, the demo accounts and how to log in."""

from __future__ import annotations

import json

from meiqia_app import cli
from meiqia_app.seed.loader import demo_accounts_file


def test_welcome_names_the_address_every_demo_account_and_the_login_steps(db, capsys):
    assert cli.main(["welcome", "--url", "http://localhost:3456"]) == 0
    out = capsys.readouterr().out
    assert "http://localhost:3456/login" in out
    for account in json.loads(demo_accounts_file().read_text()):
        assert account["username"] in out and account["password"] in out and account["totp_secret"] in out
    assert "totp-code" in out
    # Nothing of the advice that does not apply to this app.
    for misleading in ("makemigrations", "uv pip", "Failed to connect"):
        assert misleading not in out


def test_welcome_waits_for_the_app_and_says_nothing_when_it_never_answers(db, capsys):
    assert cli.main(["welcome", "--url", "http://127.0.0.1:9", "--wait", "1.5"]) == 1
    assert capsys.readouterr().out == ""
