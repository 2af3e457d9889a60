"""Console accounts on both store backends: users, argon2 hashes, sessions, idle timeout, login throttling."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher

from anpr.config import ConsoleConfig, StoreConfig
from anpr.console.accounts import Accounts, LoginResult, Role, User
from anpr.console.audit import AuditLog
from anpr.store import Store, console_sessions, login_failures, users

PASSWORD = "correct horse battery"
CFG = ConsoleConfig(max_login_failures=5, failure_window_s=600, idle_timeout_s=900)


class Clock:
    """The time Accounts sees; tests move it on."""

    def __init__(self) -> None:
        self.now = datetime(2025, 7, 1, 8, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def store(store_url: str | None, tmp_path: Path) -> Iterator[Store]:
    s = Store.from_config(StoreConfig(url=store_url, data_dir=tmp_path / "store"))
    yield s
    s.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def audit(store: Store) -> AuditLog:
    return AuditLog(store)


@pytest.fixture
def accounts(store: Store, audit: AuditLog, clock: Clock) -> Accounts:
    return Accounts(store, CFG, audit, clock=clock)


def actions(audit: AuditLog) -> list[tuple[str, str, str, dict[str, object], str]]:
    """(actor, action, target, detail, ip) oldest first."""
    return [(r.actor, r.action, r.target, r.detail, r.ip) for r in reversed(audit.rows(limit=1000))]


def column(store: Store, col: sa.Column[str], where: sa.ColumnElement[bool]) -> list[str]:
    with store.engine.connect() as conn:
        return list(conn.scalars(sa.select(col).where(where)))


def test_roles_are_ordered() -> None:
    assert Role.ADMIN.at_least(Role.SUPERVISOR) and Role.ADMIN.at_least(Role.OFFICER)
    assert Role.SUPERVISOR.at_least(Role.OFFICER) and Role.SUPERVISOR.at_least(Role.SUPERVISOR)
    assert not Role.OFFICER.at_least(Role.SUPERVISOR)
    assert not Role.SUPERVISOR.at_least(Role.ADMIN)


def test_users_are_stored_with_an_argon2_hash_and_audited(store: Store, accounts: Accounts, audit: AuditLog) -> None:
    assert accounts.add_user("olena", Role.SUPERVISOR, PASSWORD, by="root") == User(
        "olena", Role.SUPERVISOR, False, None
    )
    accounts.add_user("ivan", Role.OFFICER, "another password", by="root")
    (stored,) = column(store, users.c.password_hash, users.c.name == "olena")
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    assert PasswordHasher().verify(stored, PASSWORD)

    assert accounts.get("ivan") == User("ivan", Role.OFFICER, False, None)
    assert accounts.get("nobody") is None
    assert [u.name for u in accounts.users()] == ["ivan", "olena"]

    with pytest.raises(ValueError, match="already exists"):
        accounts.add_user("ivan", Role.ADMIN, "yet another password")
    with pytest.raises(ValueError, match="at least 10"):
        accounts.add_user("petro", Role.OFFICER, "short")
    for bad_name in ("", "has space", "x" * 65, "-dash", "semi;colon", "ivan\n"):
        with pytest.raises(ValueError, match="user name"):
            accounts.add_user(bad_name, Role.OFFICER, PASSWORD)
    assert accounts.get("ivan") == User("ivan", Role.OFFICER, False, None)
    assert accounts.get("petro") is None
    assert actions(audit) == [
        ("root", "user_add", "olena", {"role": "supervisor"}, ""),
        ("root", "user_add", "ivan", {"role": "officer"}, ""),
    ]

    accounts.set_language("ivan", "ro")
    assert accounts.get("ivan") == User("ivan", Role.OFFICER, False, "ro")
    with pytest.raises(ValueError, match="language"):
        accounts.set_language("ivan", "de")
    with pytest.raises(ValueError, match="no user"):
        accounts.set_language("nobody", "uk")


def test_login_opens_a_session_the_database_knows_only_by_hash(
    store: Store, accounts: Accounts, audit: AuditLog, clock: Clock
) -> None:
    accounts.add_user("ivan", Role.OFFICER, PASSWORD)
    result = accounts.login("ivan", PASSWORD, "192.0.2.10")
    assert result.outcome == "ok" and result.token is not None and result.session is not None
    token = result.token
    assert len(token) >= 43 and len(result.session.csrf) >= 43 and result.session.csrf != token
    assert result.session.user == User("ivan", Role.OFFICER, False, None)

    # Only the token's SHA-256 is stored: the table alone opens no session.
    (stored,) = column(store, console_sessions.c.token_sha256, console_sessions.c.user_name == "ivan")
    assert stored == hashlib.sha256(token.encode()).hexdigest()
    assert accounts.session(stored) is None

    clock.advance(30)
    s = accounts.session(token)
    assert s is not None and s.user.name == "ivan" and s.csrf == result.session.csrf
    assert (s.created_at, s.last_seen) == (result.session.created_at, clock.now)
    assert accounts.session("not-a-token") is None

    accounts.logout(token)
    assert accounts.session(token) is None
    assert actions(audit)[-1] == ("ivan", "login", "ivan", {}, "192.0.2.10")


def test_a_bad_password_or_unknown_user_is_bad_and_audited(accounts: Accounts, audit: AuditLog) -> None:
    accounts.add_user("ivan", Role.OFFICER, PASSWORD)
    assert accounts.login("ivan", "wrong password", "192.0.2.10") == LoginResult("bad", None, None)
    assert accounts.login("x", "y", "z") == LoginResult("bad", None, None)
    assert accounts.login("ivan", PASSWORD.upper(), "192.0.2.11").outcome == "bad"
    assert [a[1:] for a in actions(audit)[1:]] == [
        ("login_failed", "ivan", {"reason": "bad password"}, "192.0.2.10"),
        ("login_failed", "x", {"reason": "unknown user"}, "z"),
        ("login_failed", "ivan", {"reason": "bad password"}, "192.0.2.11"),
    ]


def test_after_too_many_failures_even_the_right_password_is_refused_until_the_window_passes(
    store: Store, accounts: Accounts, audit: AuditLog, clock: Clock
) -> None:
    accounts.add_user("ivan", Role.OFFICER, PASSWORD)
    accounts.add_user("olena", Role.OFFICER, PASSWORD)
    for _ in range(5):
        clock.advance(10)
        assert accounts.login("ivan", "guess", "198.51.100.1").outcome == "bad"
    clock.advance(10)
    assert accounts.login("ivan", PASSWORD, "192.0.2.10") == LoginResult("throttled", None, None)
    assert actions(audit)[-1][1:4] == ("login_refused", "ivan", {"reason": "throttled"})
    # Per user: another one logs in.
    assert accounts.login("olena", PASSWORD, "192.0.2.10").outcome == "ok"

    # The first failure has left the window, but the refused attempt counts as one more.
    clock.advance(CFG.failure_window_s - 45)
    assert accounts.login("ivan", PASSWORD, "192.0.2.10").outcome == "throttled"
    clock.advance(CFG.failure_window_s + 1)
    ok = accounts.login("ivan", PASSWORD, "192.0.2.10")
    assert ok.outcome == "ok" and ok.token is not None and accounts.session(ok.token) is not None
    # A success clears the count: five more mistakes are allowed again.
    assert column(store, login_failures.c.user_name, login_failures.c.user_name == "ivan") == []
    for _ in range(5):
        assert accounts.login("ivan", "guess", "198.51.100.1").outcome == "bad"
    assert accounts.login("ivan", PASSWORD, "192.0.2.10").outcome == "throttled"
    assert audit.verify().ok


@pytest.mark.slow
def test_parallel_guesses_get_no_more_password_checks_than_the_limit(accounts: Accounts) -> None:
    accounts.add_user("ivan", Role.OFFICER, PASSWORD)
    outcomes: list[str] = []
    start = threading.Barrier(16)

    def guess(i: int) -> None:
        start.wait()
        outcomes.append(accounts.login("ivan", f"guess number {i}", "198.51.100.1").outcome)

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outcomes) == 16
    assert outcomes.count("bad") <= CFG.max_login_failures
    assert outcomes.count("bad") + outcomes.count("throttled") == 16
    assert accounts.login("ivan", PASSWORD, "192.0.2.10").outcome == "throttled"


def test_an_idle_session_ends(accounts: Accounts, clock: Clock) -> None:
    accounts.add_user("ivan", Role.OFFICER, PASSWORD)
    token = accounts.login("ivan", PASSWORD, "192.0.2.10").token
    assert token is not None
    # Each use restarts the idle time.
    for _ in range(3):
        clock.advance(CFG.idle_timeout_s - 1)
        assert accounts.session(token) is not None
    clock.advance(CFG.idle_timeout_s + 1)
    assert accounts.session(token) is None
    clock.now -= timedelta(seconds=CFG.idle_timeout_s)  # gone for good, not just too old
    assert accounts.session(token) is None


def test_a_new_password_ends_sessions_and_unlocks(accounts: Accounts, audit: AuditLog) -> None:
    accounts.add_user("ivan", Role.OFFICER, PASSWORD)
    token = accounts.login("ivan", PASSWORD, "192.0.2.10").token
    assert token is not None
    for _ in range(6):
        accounts.login("ivan", "guess", "198.51.100.1")
    accounts.set_password("ivan", "a brand new password", by="admin1")
    assert accounts.session(token) is None
    assert accounts.login("ivan", PASSWORD, "192.0.2.10").outcome == "bad"
    assert accounts.login("ivan", "a brand new password", "192.0.2.10").outcome == "ok"
    assert ("admin1", "user_passwd", "ivan", {}, "") in actions(audit)
    with pytest.raises(ValueError, match="at least 10"):
        accounts.set_password("ivan", "short")
    with pytest.raises(ValueError, match="no user"):
        accounts.set_password("nobody", "a brand new password")


def test_a_disabled_user_is_logged_out_and_refused(accounts: Accounts, audit: AuditLog) -> None:
    accounts.add_user("ivan", Role.OFFICER, PASSWORD)
    token = accounts.login("ivan", PASSWORD, "192.0.2.10").token
    assert token is not None
    accounts.disable("ivan", by="admin1")
    assert accounts.get("ivan") == User("ivan", Role.OFFICER, True, None)
    assert accounts.session(token) is None
    assert accounts.login("ivan", PASSWORD, "192.0.2.10").outcome == "disabled"
    # Without the password, nothing tells the account apart from a live one.
    assert accounts.login("ivan", "wrong password", "192.0.2.10").outcome == "bad"
    assert [a[:3] for a in actions(audit)[-3:]] == [
        ("admin1", "user_disable", "ivan"),
        ("ivan", "login_refused", "ivan"),
        ("ivan", "login_failed", "ivan"),
    ]
    with pytest.raises(ValueError, match="no user"):
        accounts.disable("nobody")

    accounts.enable("ivan", by="admin1")
    assert accounts.login("ivan", PASSWORD, "192.0.2.10").outcome == "ok"


def test_a_hash_with_old_parameters_is_upgraded_at_login(store: Store, audit: AuditLog, clock: Clock) -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    Accounts(store, CFG, audit, clock=clock, hasher=weak).add_user("ivan", Role.OFFICER, PASSWORD)
    (before,) = column(store, users.c.password_hash, users.c.name == "ivan")
    current = PasswordHasher()
    assert current.check_needs_rehash(before)

    assert Accounts(store, CFG, audit, clock=clock, hasher=current).login("ivan", PASSWORD, "ip").outcome == "ok"
    (after,) = column(store, users.c.password_hash, users.c.name == "ivan")
    assert after != before and not current.check_needs_rehash(after) and current.verify(after, PASSWORD)
