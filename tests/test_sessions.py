"""Sessions in the ledger (``--sessions``), on a fake clock: time is an argument.

An address stays authorised while a session from it is open and ``expire`` after the last
one ends; a lost logout costs at most ``session_max``; Dovecot's start-up ends them all;
a connected client's grant is renewed every ``expire / 2`` (a relay-ctrl file stays fresh).
"""

from __future__ import annotations

import pytest

from logwatch.addresses import NeverList
from logwatch.ledger import Ledger
from logwatch.model import DROP, PUT, Change, LoginEvent

T = 1_000_000.0


def login(ip: str, at: float, session: str = "", user: str = "bob") -> LoginEvent:
    return LoginEvent(ip, user, "imap-login", at, "dovecot-2.0-2.3", "login", session)


def ledger(expire: float = 10, session_max: float | None = 100) -> Ledger:
    return Ledger(expire, NeverList.parse("none"), session_max=session_max)


def kinds(changes: tuple[Change, ...]) -> list[tuple[str, str, str]]:
    return [(c.kind, c.ip, c.reason) for c in changes]


def run_until(led: Ledger, start: float, stop: float, step: float = 0.5) -> list[tuple[float, str, str, str]]:
    """Call ``expire`` as the daemon's timer would, from ``start`` to ``stop``."""
    seen = []
    now = start
    while now <= stop:
        seen += [(now, c.kind, c.ip, c.reason) for c in led.expire(now)]
        now += step
    return seen


def test_a_connected_client_stays_and_leaves_expire_after_its_logout() -> None:
    led = ledger()
    assert kinds(led.grant(login("192.0.2.7", T, "S1"), T)) == [("put", "192.0.2.7", "login")]
    assert led.open_sessions("192.0.2.7") == 1
    seen = run_until(led, T, T + 60)
    assert "192.0.2.7" in led  # an hour of IDLE would do the same, up to session_max
    renewals = [now for now, kind, _, reason in seen if reason == "connected"]
    assert renewals[:3] == [T + 5, T + 10, T + 15]  # every expire / 2, last = now
    assert led.get("192.0.2.7").last == renewals[-1]  # type: ignore[union-attr]
    assert kinds(led.end("S1", T + 61, T + 61)) == [("put", "192.0.2.7", "logout")]
    assert led.get("192.0.2.7").until == T + 71  # type: ignore[union-attr]
    assert led.expire(T + 70.9) == ()
    assert kinds(led.expire(T + 71)) == [("drop", "192.0.2.7", "expired")]


def test_the_last_of_several_sessions_decides() -> None:
    led = ledger()
    led.grant(login("192.0.2.7", T, "S1"), T)
    led.grant(login("192.0.2.7", T + 1, "S2"), T + 1)
    assert led.open_sessions("192.0.2.7") == 2
    assert led.end("S1", T + 2, T + 2) == ()  # S2 still open
    run_until(led, T + 2, T + 30)
    assert "192.0.2.7" in led
    led.end("S2", T + 30, T + 30)
    assert led.open_sessions("192.0.2.7") == 0
    assert led.get("192.0.2.7").until == T + 40  # type: ignore[union-attr]


def test_a_later_login_without_a_session_can_keep_it_longer() -> None:
    led = ledger()
    led.grant(login("192.0.2.7", T, "S1"), T)
    led.grant(login("192.0.2.7", T + 3), T + 3)  # a POP3 poll, say, on 2.0
    assert led.end("S1", T + 1, T + 4) == ()  # its last login is later: nothing changes
    assert led.get("192.0.2.7").until == T + 13  # type: ignore[union-attr]


def test_a_lost_logout_ends_at_session_max() -> None:
    led = ledger(session_max=100)
    led.grant(login("192.0.2.7", T, "S1"), T)
    seen = run_until(led, T, T + 120)
    ended = [(now, kind, reason) for now, kind, _, reason in seen if reason != "connected"]
    # The session ends at T + 100, whatever the log says; the client leaves expire later.
    assert ended == [(T + 100, "put", "session-max"), (T + 110, "drop", "expired")]
    assert "192.0.2.7" not in led and led.session_count() == 0


def test_session_max_bounds_even_without_a_timer_call_in_between() -> None:
    led = ledger(session_max=100)
    led.grant(login("192.0.2.7", T, "S1"), T)
    assert kinds(led.expire(T + 500)) == [("drop", "192.0.2.7", "session-max")]


def test_a_logout_read_twice_or_of_an_unknown_session_changes_nothing() -> None:
    led = ledger()
    led.grant(login("192.0.2.7", T, "S1"), T)
    assert led.end("NOPE", T + 1, T + 1) == ()
    assert kinds(led.end("S1", T + 1, T + 1)) == [("put", "192.0.2.7", "logout")]
    assert led.end("S1", T + 1, T + 2) == ()
    # and a login line read twice (after a crash) does not open its session again
    assert led.grant(login("192.0.2.7", T, "S1"), T + 2) == ()
    assert led.session_count() == 1  # ... it does, once: the line names an open session
    led.end("S1", T + 2, T + 2)
    assert led.session_count() == 0


def test_one_address_logout_never_ends_anothers_session() -> None:
    led = ledger()
    led.grant(login("192.0.2.7", T, "S1"), T)
    led.grant(login("198.51.100.8", T, "S2"), T)
    led.end("S1", T + 1, T + 1)
    assert led.open_sessions("198.51.100.8") == 1 and led.open_sessions("192.0.2.7") == 0


def test_dovecot_startup_ends_every_session() -> None:
    led = ledger()
    led.grant(login("192.0.2.7", T, "S1"), T)
    led.grant(login("198.51.100.8", T, "S2"), T)
    changes = led.end_all(T + 3, T + 3, "dovecot-startup")
    assert sorted(kinds(changes)) == [("put", "192.0.2.7", "dovecot-startup"),
                                      ("put", "198.51.100.8", "dovecot-startup")]
    assert led.session_count() == 0
    assert led.get("192.0.2.7").until == T + 13  # type: ignore[union-attr]


def test_an_old_logout_withdraws_at_once() -> None:
    led = ledger()
    led.grant(login("192.0.2.7", T, "S1"), T)
    led.expire(T + 4)
    assert kinds(led.end("S1", T + 1, T + 30)) == [("drop", "192.0.2.7", "logout")]


def test_without_sessions_a_session_id_changes_nothing() -> None:
    led = ledger(session_max=None)
    led.grant(login("192.0.2.7", T, "S1"), T)
    assert led.session_count() == 0 and not led.following
    assert led.end("S1", T + 1, T + 1) == ()
    assert kinds(led.expire(T + 10)) == [("drop", "192.0.2.7", "expired")]


def test_a_refused_login_opens_no_session() -> None:
    led = Ledger(10, NeverList.parse("192.0.2.0/24"), session_max=100)
    assert led.grant(login("192.0.2.7", T, "S1"), T) == ()
    assert led.session_count() == 0
    assert led.grant(login("198.51.100.8", T - 50, "S2"), T) == ()  # too old to authorise
    assert led.session_count() == 0


def test_sessions_out_of_order_end_on_time() -> None:
    led = ledger(session_max=100)
    led.grant(login("192.0.2.7", T + 5, "LATE"), T + 5)
    led.grant(login("198.51.100.8", T, "EARLY"), T + 5)  # read after a later one
    led.expire(T + 100)
    assert led.open_sessions("198.51.100.8") == 0 and led.open_sessions("192.0.2.7") == 1
    assert led.next_expiry() is not None and led.next_expiry() <= T + 105  # type: ignore[operator]


def test_sessions_survive_a_restart_through_the_state() -> None:
    led = ledger()
    led.grant(login("192.0.2.7", T, "S1"), T)
    run_until(led, T, T + 30)
    saved_grants, saved_sessions = led.grants(), led.sessions()
    assert saved_sessions == [("S1", "192.0.2.7", T)]
    fresh = ledger()
    fresh.restore(saved_grants, T + 32)
    assert fresh.restore_sessions(saved_sessions, T + 32) == ()
    assert fresh.open_sessions("192.0.2.7") == 1
    run_until(fresh, T + 32, T + 60)
    assert "192.0.2.7" in fresh
    assert kinds(fresh.end("S1", T + 61, T + 61)) == [("put", "192.0.2.7", "logout")]  # read after the restart


def test_a_session_outlasting_a_long_restart_is_granted_again() -> None:
    led = ledger()
    led.grant(login("192.0.2.7", T, "S1"), T)
    fresh = ledger()
    fresh.restore(led.grants(), T + 50)  # down longer than expire: the grant has run out
    assert "192.0.2.7" not in fresh
    assert kinds(fresh.restore_sessions(led.sessions(), T + 50)) == [("put", "192.0.2.7", "restored")]
    assert fresh.open_sessions("192.0.2.7") == 1
    assert fresh.restore_sessions([("S9", "192.0.2.9", T - 200)], T + 50) == ()  # past session_max


def test_next_expiry_wakes_for_a_renewal() -> None:
    led = ledger()
    led.grant(login("192.0.2.7", T, "S1"), T)
    assert led.next_expiry() == T + 5


def test_the_cap_still_applies() -> None:
    led = Ledger(10, NeverList.parse("none"), max_entries=1, session_max=100)
    led.grant(login("192.0.2.7", T, "S1"), T)
    changes = led.grant(login("192.0.2.8", T + 1, "S2"), T + 1)
    assert (DROP, "192.0.2.7", "cap") in kinds(changes)
    assert led.end("S1", T + 2, T + 2) == ()  # its grant is gone: nothing to publish
    assert led.expire(T + 5) == ()
    assert kinds(led.expire(T + 6)) == [(PUT, "192.0.2.8", "connected")]


@pytest.mark.parametrize("bad", [0, -1])
def test_session_max_must_be_positive(bad: float) -> None:
    with pytest.raises(ValueError, match="--session-max"):
        Ledger(10, session_max=bad)
