"""The console's commands: `anpr users ...` (accounts), `anpr audit ...` (the audit log), `anpr console`.

Bad input is one line "error: ..." and exit status 2, an unreachable database one line and status 1,
as for the history commands. A broken audit chain is one line naming the first bad row, status 1.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from anpr.history_cli import ByOpt, ConfigOpt, _config, _console, _t, _who, bad, opened

if TYPE_CHECKING:
    from anpr.config import AnprConfig
    from anpr.console.accounts import Accounts
    from anpr.store import Store

PasswordStdinOpt = Annotated[
    bool, typer.Option("--password-stdin", help="read the password from the first line of standard input")
]


def _accounts(store: Store, cfg: AnprConfig) -> Accounts:
    from anpr.console.accounts import Accounts
    from anpr.console.audit import AuditLog

    return Accounts(store, cfg.console, AuditLog(store))


def _change(cfg: AnprConfig, change: Callable[[Accounts], object]) -> None:
    """One account change; a refusal (unknown user, weak password...) is one line and exit 2."""
    with opened(cfg) as store:
        try:
            change(_accounts(store, cfg))
        except ValueError as exc:
            raise bad(str(exc)) from None


def _password(from_stdin: bool) -> str:
    """From stdin's first line, or typed twice without echo."""
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise bad("--password-stdin: nothing on standard input")
        return line.rstrip("\r\n")
    first = typer.prompt("Password", hide_input=True)
    if typer.prompt("Password again", hide_input=True) != first:
        raise bad("the two passwords differ; nothing changed")
    return first


def register(app: typer.Typer) -> None:
    """Add `users`, `audit` and `console` to the `anpr` app."""
    users_app = typer.Typer(no_args_is_help=True, help="Console accounts: officers, supervisors, admins.")
    audit_app = typer.Typer(no_args_is_help=True, help="The console's audit log: list it, verify its hash chain.")
    app.add_typer(users_app, name="users")
    app.add_typer(audit_app, name="audit")

    @app.command("console")
    def console(config: ConfigOpt = None) -> None:
        """Serve the officers' web console (settings: the config's `console` section)."""
        cfg = _config(config)
        from anpr.console.app import serve

        serve(cfg)

    # -- users -----------------------------------------------------------------------------------

    @users_app.command("add")
    def users_add(
        name: str,
        role: Annotated[str | None, typer.Option(help="officer | supervisor | admin")] = None,
        password_stdin: PasswordStdinOpt = False,
        by: ByOpt = None,
        config: ConfigOpt = None,
    ) -> None:
        """Add a console user; asks for the password twice unless --password-stdin."""
        from anpr.console.accounts import Role

        if role is None:
            raise bad("--role is required: officer, supervisor or admin")
        if role not in {r.value for r in Role}:
            raise bad(f"--role {role!r} is not one of officer, supervisor, admin")
        cfg = _config(config)
        password = _password(password_stdin)
        _change(cfg, lambda accounts: accounts.add_user(name, Role(role), password, by=_who(by)))
        typer.echo(f"added {role} {name}")

    @users_app.command("passwd")
    def users_passwd(
        name: str, password_stdin: PasswordStdinOpt = False, by: ByOpt = None, config: ConfigOpt = None
    ) -> None:
        """Set a user's password; their open sessions end and failed logins are cleared."""
        cfg = _config(config)
        password = _password(password_stdin)
        _change(cfg, lambda accounts: accounts.set_password(name, password, by=_who(by)))
        typer.echo(f"password of {name} changed")

    @users_app.command("disable")
    def users_disable(name: str, by: ByOpt = None, config: ConfigOpt = None) -> None:
        """Stop a user from logging in; their open sessions end at once."""
        _change(_config(config), lambda accounts: accounts.disable(name, by=_who(by)))
        typer.echo(f"{name} disabled")

    @users_app.command("enable")
    def users_enable(name: str, by: ByOpt = None, config: ConfigOpt = None) -> None:
        """Let a disabled user log in again."""
        _change(_config(config), lambda accounts: accounts.enable(name, by=_who(by)))
        typer.echo(f"{name} enabled")

    @users_app.command("list")
    def users_list(config: ConfigOpt = None) -> None:
        """The console users."""
        cfg = _config(config)
        with opened(cfg) as store:
            found = _accounts(store, cfg).users()
        table = Table("user", "role", "status", "language")
        for u in found:
            table.add_row(u.name, u.role.value, "disabled" if u.disabled else "active", u.language or "")
        _console().print(table)

    # -- audit -----------------------------------------------------------------------------------

    @audit_app.command("verify")
    def audit_verify(config: ConfigOpt = None) -> None:
        """Check the hash chain from the first row; exit 1 naming the first row removed or altered."""
        from anpr.console.audit import AuditLog

        with opened(_config(config)) as store:
            check = AuditLog(store).verify()
        if not check.ok:
            typer.echo(f"audit chain broken at row {check.first_bad}: {check.reason}")
            raise typer.Exit(1)
        typer.echo(f"audit chain intact: {check.rows} rows")

    @audit_app.command("list")
    def audit_list(
        limit: Annotated[int, typer.Option(min=1, help="newest N")] = 50,
        actor: Annotated[str | None, typer.Option(help="only what this user did")] = None,
        action: Annotated[str | None, typer.Option(help="only this action (login, hit_ack, ...)")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
        config: ConfigOpt = None,
    ) -> None:
        """The newest audit rows."""
        from anpr.console.audit import AuditLog

        with opened(_config(config)) as store:
            found = AuditLog(store).rows(limit=limit, actor=actor, action=action)
        if as_json:
            for r in found:
                out = {
                    "id": r.id,
                    "at": r.at.isoformat(),
                    "actor": r.actor,
                    "action": r.action,
                    "target": r.target,
                    "detail": r.detail,
                    "ip": r.ip,
                    "hash": r.hash,
                }
                print(json.dumps(out, ensure_ascii=False))
            return
        table = Table("id", "at", "actor", "action", "target", "detail", "ip")
        for r in found:
            detail = json.dumps(r.detail, ensure_ascii=False) if r.detail else ""
            table.add_row(str(r.id), _t(r.at), r.actor, r.action, r.target, detail, r.ip)
        _console().print(table)
