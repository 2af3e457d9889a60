"""Console accounts: users and roles, argon2 password hashes, sessions, login throttling.

A session cookie carries a random token; the database keeps only its SHA-256, so a copy of the
database (a backup, a replica) logs nobody in. Sessions end after `idle_timeout_s` without use, when
the password changes, and when the user is disabled.

Throttling counts failed logins per user name within `failure_window_s`. An attempt is written down
as a failure before the password is checked and struck off only when it succeeds, so a burst of
parallel guesses gets no more than `max_login_failures` checks between them. Once over the limit,
even the right password is refused until old failures leave the window.

Every login attempt, and every change to an account, is in the audit log, committed together with
the change it records.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cached_property
from typing import Any, Literal

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from anpr.config import ConsoleConfig
from anpr.console.audit import AuditLog
from anpr.schema import utc_now
from anpr.store import _IMMEDIATE, Store, _available, console_sessions, login_failures, users

MIN_PASSWORD = 10
LANGUAGES = ("uk", "ro", "en")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_COLUMN = 64  # user names and addresses in the tables

# A session seen again within this is not written back: reads stay reads (idle timeouts are minutes).
_TOUCH_EVERY = timedelta(seconds=30)


class Role(StrEnum):
    OFFICER = "officer"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"

    def at_least(self, other: Role) -> bool:
        """ADMIN >= SUPERVISOR >= OFFICER."""
        order = list(Role)
        return order.index(self) >= order.index(Role(other))


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    disabled: bool
    language: str | None


@dataclass(frozen=True)
class Session:
    user: User
    csrf: str
    created_at: datetime
    last_seen: datetime


@dataclass(frozen=True)
class LoginResult:
    outcome: Literal["ok", "bad", "throttled", "disabled"]
    token: str | None
    session: Session | None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _user(row: Any) -> User:
    """A user from a row with its name, role, disabled and language columns."""
    return User(name=row.name, role=Role(row.role), disabled=bool(row.disabled), language=row.language)


class Accounts:
    """Every account and session operation; one instance is safe to share between threads."""

    def __init__(
        self,
        store: Store,
        cfg: ConsoleConfig,
        audit: AuditLog,
        clock: Callable[[], datetime] = utc_now,
        hasher: PasswordHasher | None = None,
    ) -> None:
        self._engine = store.engine
        self._cfg = cfg
        self._audit = audit
        self._clock = clock
        self._hasher = hasher or PasswordHasher()

    @cached_property
    def _decoy_hash(self) -> str:
        """Checked against for unknown names, so a login takes as long whether the user exists or not."""
        return self._hasher.hash(secrets.token_urlsafe(16))

    def _hash_password(self, password: str) -> str:
        if len(password) < MIN_PASSWORD:
            raise ValueError(f"password too short: at least {MIN_PASSWORD} characters")
        return self._hasher.hash(password)

    def _password_ok(self, stored: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False

    # -- users -----------------------------------------------------------------------------------

    def add_user(self, name: str, role: Role, password: str, by: str = "cli") -> User:
        """ValueError for a name already taken, a name that is no plain identifier, or a weak password."""
        if not NAME_PATTERN.fullmatch(name):
            raise ValueError(
                f"user name {name!r}: 1 to 64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit"
            )
        role = Role(role)
        digest = self._hash_password(password)
        try:
            with self._audit.transaction() as conn:
                conn.execute(
                    sa.insert(users).values(
                        name=name, role=role.value, password_hash=digest, disabled=False, created_at=self._clock()
                    )
                )
                self._audit.append(conn, by, "user_add", name, {"role": role.value})
        except IntegrityError:
            raise ValueError(f"user {name!r} already exists") from None
        return User(name=name, role=role, disabled=False, language=None)

    def _change(self, name: str, by: str, action: str, values: dict[str, Any], unlock: bool = False) -> None:
        """Update one user, end their sessions (and clear failed logins) and audit it in one transaction.

        ValueError if there is no such user.
        """
        with self._audit.transaction() as conn:
            if conn.execute(sa.update(users).where(users.c.name == name).values(**values)).rowcount != 1:
                raise ValueError(f"no user {name!r}")
            conn.execute(sa.delete(console_sessions).where(console_sessions.c.user_name == name))
            if unlock:
                conn.execute(sa.delete(login_failures).where(login_failures.c.user_name == name))
            self._audit.append(conn, by, action, name)

    def set_password(self, name: str, password: str, by: str = "cli") -> None:
        """New password; ends the user's sessions and clears their failed logins (an admin's unlock)."""
        self._change(name, by, "user_passwd", {"password_hash": self._hash_password(password)}, unlock=True)

    def disable(self, name: str, by: str = "cli") -> None:
        """The user can no longer log in; their sessions end at once. Rows they left behind stay theirs."""
        self._change(name, by, "user_disable", {"disabled": True})

    def enable(self, name: str, by: str = "cli") -> None:
        """Undo `disable`."""
        self._change(name, by, "user_enable", {"disabled": False})

    def users(self) -> list[User]:
        with _available(), self._engine.connect() as conn:
            return [_user(r) for r in conn.execute(sa.select(users).order_by(users.c.name))]

    def get(self, name: str) -> User | None:
        with _available(), self._engine.connect() as conn:
            row = conn.execute(sa.select(users).where(users.c.name == name)).first()
        return None if row is None else _user(row)

    def set_language(self, name: str, language: str) -> None:
        """The UI language the user picked (uk, ro or en); ValueError for another or an unknown user."""
        if language not in LANGUAGES:
            raise ValueError(f"language {language!r} is not one of {', '.join(LANGUAGES)}")
        with _available(), self._engine.begin() as conn:
            if conn.execute(sa.update(users).where(users.c.name == name).values(language=language)).rowcount != 1:
                raise ValueError(f"no user {name!r}")

    # -- logins and sessions ---------------------------------------------------------------------

    def login(self, name: str, password: str, ip: str) -> LoginResult:
        """Check a password and open a session; every attempt is audited (login, login_failed, login_refused)."""
        key, ip = name[:_COLUMN], ip[:_COLUMN]
        now = self._clock()
        window_start = now - timedelta(seconds=self._cfg.failure_window_s)
        with _available():
            # Written down (committed) before anything is checked: see the module docstring.
            with self._engine.begin() as conn:
                conn.execute(sa.insert(login_failures).values(user_name=key, at=now, ip=ip))
            with self._engine.connect() as conn:
                failures = conn.scalar(
                    sa.select(sa.func.count())
                    .select_from(login_failures)
                    .where(login_failures.c.user_name == key, login_failures.c.at >= window_start)
                )
                row = conn.execute(sa.select(users).where(users.c.name == key)).first()
            refused: tuple[Literal["bad", "throttled", "disabled"], str, str] | None = None
            if int(failures or 0) > self._cfg.max_login_failures:
                refused = ("throttled", "login_refused", "throttled")
            elif not self._password_ok(row.password_hash if row is not None else self._decoy_hash, password):
                refused = ("bad", "login_failed", "unknown user" if row is None else "bad password")
            elif row is not None and row.disabled:
                refused = ("disabled", "login_refused", "disabled")
            if refused is not None:
                outcome, action, reason = refused
                with self._audit.transaction() as conn:
                    self._prune(conn, now)
                    self._audit.append(conn, key, action, key, {"reason": reason}, ip)
                return LoginResult(outcome, None, None)
            assert row is not None  # the decoy matches no password
            token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
            rehashed = self._hasher.hash(password) if self._hasher.check_needs_rehash(row.password_hash) else None
            now = self._clock()
            with self._audit.transaction() as conn:
                self._prune(conn, now)
                # This attempt and the failures before it are struck off.
                conn.execute(sa.delete(login_failures).where(login_failures.c.user_name == key))
                conn.execute(
                    sa.insert(console_sessions).values(
                        token_sha256=token_hash(token), user_name=key, csrf=csrf, created_at=now, last_seen=now, ip=ip
                    )
                )
                if rehashed is not None:
                    conn.execute(sa.update(users).where(users.c.name == key).values(password_hash=rehashed))
                self._audit.append(conn, key, "login", key, {}, ip)
        return LoginResult("ok", token, Session(_user(row), csrf, now, now))

    def _prune(self, conn: Connection, now: datetime) -> None:
        """Forget failures out of the window and sessions idle too long.

        Only under the audit chain's lock, so two pruners never lock the same old rows in different orders.
        """
        conn.execute(
            sa.delete(login_failures).where(login_failures.c.at < now - timedelta(seconds=self._cfg.failure_window_s))
        )
        conn.execute(
            sa.delete(console_sessions).where(
                console_sessions.c.last_seen < now - timedelta(seconds=self._cfg.idle_timeout_s)
            )
        )

    def session(self, token: str) -> Session | None:
        """The live session of this cookie token, touched; None when unknown, idle too long or its user disabled.

        Most requests only read: `last_seen` is written when it is more than `_TOUCH_EVERY` old, in a
        write transaction of its own, so parallel requests of one page never race for SQLite's lock.
        """
        digest = token_hash(token)
        now = self._clock()
        s = console_sessions.c
        with _available(), self._engine.connect() as conn:
            row = conn.execute(
                sa.select(
                    s.csrf, s.created_at, s.last_seen, users.c.name, users.c.role, users.c.disabled, users.c.language
                )
                .join(users, users.c.name == s.user_name)
                .where(s.token_sha256 == digest)
            ).first()
        if row is None:
            return None
        expired = row.disabled or now - row.last_seen > timedelta(seconds=self._cfg.idle_timeout_s)
        if expired or now - row.last_seen > _TOUCH_EVERY:
            with _available(), self._engine.connect() as conn:
                conn = conn.execution_options(**{_IMMEDIATE: True})
                with conn.begin():
                    if expired:
                        conn.execute(sa.delete(console_sessions).where(s.token_sha256 == digest))
                    else:
                        conn.execute(sa.update(console_sessions).where(s.token_sha256 == digest).values(last_seen=now))
        return None if expired else Session(_user(row), row.csrf, row.created_at, now)

    def logout(self, token: str) -> None:
        """End the session (the app audits it: it knows the address)."""
        with _available(), self._engine.begin() as conn:
            conn.execute(sa.delete(console_sessions).where(console_sessions.c.token_sha256 == token_hash(token)))
