"""`anpr users ...` and `anpr audit ...` against a real store (SQLite and PostgreSQL), as an operator types them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import typer
import yaml
from typer.testing import CliRunner, Result

from anpr.config import ConsoleConfig, StoreConfig
from anpr.console.accounts import Accounts
from anpr.console.audit import AuditLog
from anpr.console.cli import register
from anpr.store import Store

PASSWORD = "correct horse battery"


@pytest.fixture
def app() -> typer.Typer:
    a = typer.Typer()
    register(a)
    return a


@pytest.fixture
def config(store_url: str | None, tmp_path: Path) -> Path:
    store: dict[str, str] = {"data_dir": str(tmp_path / "store")}
    if store_url is not None:
        store["url"] = store_url
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"store": store}), encoding="utf-8")
    return path


@pytest.fixture
def store(store_url: str | None, tmp_path: Path) -> Iterator[Store]:
    s = Store.from_config(StoreConfig(url=store_url, data_dir=tmp_path / "store"))
    yield s
    s.close()


def run(app: typer.Typer, config: Path, *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(app, [*args, "--config", str(config)], input=stdin)


def one_error(result: Result, status: int = 2) -> str:
    """The single line an operator sees for bad input."""
    assert result.exit_code == status, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_users_add_list_passwd_disable(app: typer.Typer, config: Path, store: Store) -> None:
    done = run(
        app, config, "users", "add", "ivan", "--role", "officer", "--password-stdin", "--by", "root", stdin=PASSWORD
    )
    assert done.exit_code == 0, done.output
    assert done.stdout == "added officer ivan\n"
    # Typed twice at the prompt, without echo.
    typed = run(app, config, "users", "add", "olena", "--role", "admin", stdin=f"{PASSWORD}!\n{PASSWORD}!\n")
    assert typed.exit_code == 0, typed.output
    assert PASSWORD not in typed.stdout

    listed = run(app, config, "users", "list")
    assert listed.exit_code == 0, listed.output
    rows = [[w for w in line.split() if w.isalnum()] for line in listed.stdout.splitlines()]
    assert [r for r in rows if r and r[0] in ("ivan", "olena")] == [
        ["ivan", "officer", "active"],
        ["olena", "admin", "active"],
    ]

    accounts = Accounts(store, ConsoleConfig(), AuditLog(store))
    assert accounts.login("ivan", PASSWORD, "ip").outcome == "ok"
    assert accounts.login("olena", PASSWORD + "!", "ip").outcome == "ok"

    new = "a brand new password"
    assert run(app, config, "users", "passwd", "ivan", "--password-stdin", stdin=f"{new}\r\n").exit_code == 0
    assert accounts.login("ivan", PASSWORD, "ip").outcome == "bad"
    assert accounts.login("ivan", new, "ip").outcome == "ok"

    assert run(app, config, "users", "disable", "ivan", "--by", "root").exit_code == 0
    assert accounts.login("ivan", new, "ip").outcome == "disabled"
    assert "disabled" in run(app, config, "users", "list").stdout
    assert run(app, config, "users", "enable", "ivan", "--by", "root").exit_code == 0
    assert accounts.login("ivan", new, "ip").outcome == "ok"

    audited = [(r.actor, r.action, r.target) for r in reversed(AuditLog(store).rows()) if r.action.startswith("user_")]
    assert audited[0] == ("root", "user_add", "ivan")
    assert [a[1:] for a in audited] == [
        ("user_add", "ivan"),
        ("user_add", "olena"),
        ("user_passwd", "ivan"),
        ("user_disable", "ivan"),
        ("user_enable", "ivan"),
    ]


def test_bad_input_is_one_line_and_status_2(app: typer.Typer, config: Path, store: Store) -> None:
    assert (
        run(app, config, "users", "add", "ivan", "--role", "officer", "--password-stdin", stdin=PASSWORD).exit_code == 0
    )
    cases = [
        (("users", "add", "petro", "--password-stdin"), PASSWORD, "error: --role is required"),
        (("users", "add", "petro", "--role", "chief", "--password-stdin"), PASSWORD, "error: --role 'chief' is not"),
        (
            ("users", "add", "ivan", "--role", "admin", "--password-stdin"),
            PASSWORD,
            "error: user 'ivan' already exists",
        ),
        (("users", "add", "petro", "--role", "officer", "--password-stdin"), "short\n", "error: password too short"),
        (("users", "add", "petro", "--role", "officer", "--password-stdin"), "", "error: --password-stdin: nothing"),
        (("users", "add", "pe tro", "--role", "officer", "--password-stdin"), PASSWORD, "error: user name 'pe tro'"),
        (("users", "add", "petro", "--role", "officer"), f"{PASSWORD}\n{PASSWORD}x\n", "error: the two passwords"),
        (("users", "passwd", "nobody", "--password-stdin"), PASSWORD, "error: no user 'nobody'"),
        (("users", "passwd", "ivan", "--password-stdin"), "short", "error: password too short"),
        (("users", "disable", "nobody"), None, "error: no user 'nobody'"),
    ]
    for args, stdin, message in cases:
        assert one_error(run(app, config, *args, stdin=stdin)).startswith(message), args
    assert [u.name for u in Accounts(store, ConsoleConfig(), AuditLog(store)).users()] == ["ivan"]
    assert Accounts(store, ConsoleConfig(), AuditLog(store)).login("ivan", PASSWORD, "ip").outcome == "ok"


@pytest.mark.parametrize("tamper", ["detail", "actor", "delete"])
def test_audit_verify_fails_naming_the_row_after_it_is_changed_in_the_database(
    app: typer.Typer, config: Path, store: Store, tamper: str
) -> None:
    log = AuditLog(store)
    for i in range(5):
        log.record(f"officer{i}", "hit_ack", f"hit-{i}", {"note": f"checked {i}"}, ip="192.0.2.1")
    intact = run(app, config, "audit", "verify")
    assert (intact.exit_code, intact.stdout) == (0, "audit chain intact: 5 rows\n")

    statement = {
        "detail": 'UPDATE audit_log SET detail = \'{"note":"nothing found"}\' WHERE id = 3',
        "actor": "UPDATE audit_log SET actor = 'officer9' WHERE id = 3",
        "delete": "DELETE FROM audit_log WHERE id = 3",
    }[tamper]
    with store.engine.begin() as conn:
        conn.execute(sa.text(statement))
    broken = run(app, config, "audit", "verify")
    assert broken.exit_code == 1
    why = "removed (ids jump from 2 to 4)" if tamper == "delete" else "altered: its contents do not match its hash"
    assert broken.stdout == f"audit chain broken at row 3: row 3 {why}\n"


def test_audit_list_shows_the_newest_rows(app: typer.Typer, config: Path, store: Store) -> None:
    log = AuditLog(store)
    log.record("ivan", "search", "plate", {"plate": "ВН2741КХ"}, ip="192.0.2.1")
    log.record("olena", "watchlist_add", "entry-1")
    log.record("ivan", "event_view", "event-1")
    table = run(app, config, "audit", "list", "--limit", "2")
    assert table.exit_code == 0, table.output
    assert "event_view" in table.stdout and "watchlist_add" in table.stdout and "search" not in table.stdout

    as_json = run(app, config, "audit", "list", "--actor", "ivan", "--json")
    assert as_json.exit_code == 0, as_json.output
    rows = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [(r["id"], r["action"], r["target"]) for r in rows] == [(3, "event_view", "event-1"), (1, "search", "plate")]
    assert rows[1]["detail"] == {"plate": "ВН2741КХ"} and rows[1]["ip"] == "192.0.2.1"


def test_an_unreachable_database_is_one_line_and_status_1(app: typer.Typer, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump({"store": {"url": "postgresql+psycopg://postgres@127.0.0.1:1/none", "data_dir": str(tmp_path)}}),
        encoding="utf-8",
    )
    for args in (("audit", "verify"), ("users", "list")):
        assert one_error(run(app, path, *args), status=1).startswith("error: store unavailable")


def test_console_reports_a_bad_config_before_starting(app: typer.Typer, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"console": {"port": 0}}), encoding="utf-8")
    result = run(app, path, "console")
    assert result.exit_code == 2
    assert "console.port" in result.stderr
