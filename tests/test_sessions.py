"""Sessions in the ledger (``--sessions``), on a fake clock: time is an argument.

An address stays authorised while a session from it is open and ``expire`` after the last
one ends; a lost logout costs at most ``session_max``; Dovecot's start-up ends them all;
a connected client's grant is renewed every ``expire / 2`` (a relay-ctrl file stays fresh).
"""

from __future__ import annotations

import time

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


# --------------------------------------------------------------------- the daemon's loop

from pathlib import Path  # noqa: E402

from logwatch import state  # noqa: E402
from logwatch.matcher import Matcher  # noqa: E402
from logwatch.patternset import builtin  # noqa: E402
from logwatch.sinks.memory import MemorySink  # noqa: E402
from tests.looplab import T0, Lab  # noqa: E402


def stamp_of(at: float) -> str:
    return time.strftime("%b %e %H:%M:%S", time.localtime(at))

SID = "kcwIVMRgFZp/AAAD"


def imap_login(ip: str, at: float, session: str = SID, user: str = "bob") -> str:
    return (f"{stamp_of(at)} mx dovecot: imap-login: Login: user=<{user}>, method=PLAIN, rip={ip}, "
            f"lip=192.0.2.1, mpid=4101, TLS, session=<{session}>")


def imap_logout(at: float, session: str = SID, user: str = "bob", process: str = "imap") -> str:
    return f"{stamp_of(at)} mx dovecot: {process}({user})<4101><{session}>: Disconnected: Logged out in=32 out=788"


def sessions_lab(tmp_path: Path, sink: MemorySink, *extra: tuple[str, object]) -> Lab:
    lab = Lab(tmp_path, [sink], ("sessions", True), ("expire", "10s"), ("session-max", "100s"), *extra)
    lab.daemon.start()
    return lab


def test_loop_keeps_a_connected_client_then_lets_it_go(tmp_path: Path) -> None:
    sink = MemorySink("a")
    lab = sessions_lab(tmp_path, sink)
    lab.step(imap_login("192.0.2.7", T0))
    for t in range(1, 40):
        lab.at(T0 + t).step()
        assert "192.0.2.7" in sink.published, t
    assert sink.published["192.0.2.7"].last >= T0 + 35  # renewed: a relay-ctrl file stays fresh
    lab.at(T0 + 40).step(imap_logout(T0 + 40))
    lab.at(T0 + 49.5).step()
    assert "192.0.2.7" in sink.published
    lab.at(T0 + 50).step()
    assert sink.published == {}


def test_loop_a_hibernated_session_ends_on_imap_hibernate_line(tmp_path: Path) -> None:
    sink = MemorySink("a")
    lab = sessions_lab(tmp_path, sink)
    lab.step(imap_login("192.0.2.7", T0))
    lab.at(T0 + 30).step(imap_logout(T0 + 30, process="imap-hibernate"))
    lab.at(T0 + 40).step()
    assert sink.published == {}


def test_loop_a_hostile_name_never_ends_anothers_session(tmp_path: Path) -> None:
    sink = MemorySink("a")
    lab = sessions_lab(tmp_path, sink)
    lab.step(imap_login("192.0.2.7", T0))
    lab.step(imap_login("198.51.100.9", T0, session="OwnSessionIdAAAA", user=f"x)<4101><{SID}>: Disconnected: y"))
    forged = imap_logout(T0 + 1, session="OwnSessionIdAAAA", user=f"x)<4101><{SID}>: Disconnected: y")
    lab.at(T0 + 1).step(forged)
    assert lab.daemon.ledger.open_sessions("192.0.2.7") == 1
    lab.at(T0 + 30).step()
    assert "192.0.2.7" in sink.published


def test_loop_dovecot_restart_ends_every_session(tmp_path: Path) -> None:
    sink = MemorySink("a")
    lab = sessions_lab(tmp_path, sink)
    lab.step(imap_login("192.0.2.7", T0))
    lab.at(T0 + 20).step(f"{stamp_of(T0 + 20)} mx dovecot: master: Warning: Killed with signal 15 "
                         "(by pid=1 uid=0 code=kill)")
    assert lab.daemon.ledger.session_count() == 0
    lab.at(T0 + 30).step()
    assert sink.published == {}


def test_loop_dovecot_startup_ends_every_session(tmp_path: Path) -> None:
    sink = MemorySink("a")
    lab = sessions_lab(tmp_path, sink)
    lab.step(imap_login("192.0.2.7", T0))
    lab.at(T0 + 20).step(f"{stamp_of(T0 + 20)} mx dovecot: master: Dovecot v2.3.19.1 (9f57dc1bb0) starting up "
                         "for imap, pop3")
    assert lab.daemon.ledger.session_count() == 0
    lab.at(T0 + 30).step()
    assert sink.published == {}


def test_loop_a_log_without_session_prefixes_falls_back(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sink = MemorySink("a")
    lab = sessions_lab(tmp_path, sink)
    lab.step(imap_login("192.0.2.7", T0))
    lab.at(T0 + 2).step(f"{stamp_of(T0 + 2)} mx dovecot: imap(carol): Disconnected: Logged out in=1 out=2")
    assert "sessions cannot be followed" in caplog.text
    lab.at(T0 + 12).step()
    assert sink.published == {}


def test_loop_session_max_bounds_a_lost_logout(tmp_path: Path) -> None:
    sink = MemorySink("a")
    lab = sessions_lab(tmp_path, sink)
    lab.step(imap_login("192.0.2.7", T0))
    for t in range(1, 111):
        lab.at(T0 + t).step()
    assert sink.published == {}


def test_loop_without_sessions_nothing_changes(tmp_path: Path) -> None:
    sink = MemorySink("a")
    lab = Lab(tmp_path, [sink], ("expire", "10s"))
    lab.daemon.start()
    lab.step(imap_login("192.0.2.7", T0))
    assert not lab.daemon.matcher.sessions and not lab.daemon.ledger.following
    lab.at(T0 + 10).step()
    assert sink.published == {}


def test_matcher_reads_logouts_only_with_sessions() -> None:
    line = imap_logout(T0)
    assert Matcher(builtin()).match(line).result == "nomatch"
    on = Matcher(builtin(), sessions=True)
    verdict = on.match(line)
    assert (verdict.result, verdict.session, verdict.user) == ("logout", SID, "bob")
    assert on.classify(line) == ("logout", verdict.pattern_set, "logout")
    assert on.match(imap_login("192.0.2.7", T0)).session == SID
    assert Matcher(builtin()).match(imap_login("192.0.2.7", T0)).session == SID


# --------------------------------------------------------------------- across a restart

from tests.looplab import Clock  # noqa: E402


def restarted(tmp_path: Path, clock: Clock, sink: MemorySink) -> Lab:
    """A second daemon over the same --state, as after a restart of relaywatch."""
    lab = Lab(tmp_path, [sink], ("sessions", True), ("expire", "10s"), ("session-max", "100s"), clock=clock)
    lab.daemon.start()
    return lab


@pytest.mark.parametrize("how", ["stopped", "killed"])
def test_loop_a_session_survives_a_restart_and_its_logout_after_it_closes_it(tmp_path: Path, how: str) -> None:
    sink = MemorySink("a")
    first = sessions_lab(tmp_path, sink)
    first.step(imap_login("192.0.2.7", T0), imap_login("198.51.100.8", T0, session="OtherSessionAAAA"))
    first.at(T0 + 5).step(imap_logout(T0 + 5, session="OtherSessionAAAA"))
    if how == "stopped":
        first.daemon.shutdown()
    # killed: nothing more; every step's transaction is durable when it returns
    assert [row[:2] for row in state.read_all(first.state)[1]] == [(SID, "192.0.2.7")]
    again = MemorySink("b")
    second = restarted(tmp_path, Clock(T0 + 30), again)  # down for longer than --expire
    assert second.daemon.ledger.open_sessions("192.0.2.7") == 1
    assert "192.0.2.7" in again.published and "198.51.100.8" not in again.published
    for t in range(31, 60):
        second.at(T0 + t).step()
        assert "192.0.2.7" in again.published, t
    second.at(T0 + 60).step(imap_logout(T0 + 60))  # read after the restart: still closes its session
    assert second.daemon.ledger.session_count() == 0
    assert state.read_all(second.state)[1] == ()
    second.at(T0 + 69.5).step()
    assert "192.0.2.7" in again.published
    second.at(T0 + 70).step()
    assert again.published == {}


def test_loop_sessions_saved_are_dropped_when_restarted_without_sessions(tmp_path: Path) -> None:
    sink = MemorySink("a")
    first = sessions_lab(tmp_path, sink)
    first.step(imap_login("192.0.2.7", T0))
    first.daemon.shutdown()
    plain = Lab(tmp_path, [MemorySink("b")], ("expire", "10s"), clock=Clock(T0 + 2))
    plain.daemon.start()
    assert plain.daemon.ledger.session_count() == 0
    assert state.read_all(plain.state)[1] == ()  # not kept for a later --sessions to revive
    plain.at(T0 + 10).step()
    assert plain.daemon.ledger.get("192.0.2.7") is None


def test_loop_a_session_past_session_max_is_not_restored(tmp_path: Path) -> None:
    sink = MemorySink("a")
    first = sessions_lab(tmp_path, sink)
    first.step(imap_login("192.0.2.7", T0))
    first.daemon.shutdown()
    again = MemorySink("b")
    second = restarted(tmp_path, Clock(T0 + 150), again)
    assert second.daemon.ledger.session_count() == 0 and again.published == {}
    assert state.read_all(second.state) == ((), ())


def test_loop_a_session_opened_without_a_grant_change_is_saved_too(tmp_path: Path) -> None:
    """A second session from a client whose grant this login cannot extend (an older line)
    changes no grant: its row is written all the same, and its logout after a restart counts."""
    sink = MemorySink("a")
    first = sessions_lab(tmp_path, sink)
    first.at(T0 + 2).step(imap_login("192.0.2.7", T0 + 2))
    first.step(imap_login("192.0.2.7", T0 + 1, session="SecondSessionAAA"))
    assert {row[0] for row in state.read_all(first.state)[1]} == {SID, "SecondSessionAAA"}
    first.at(T0 + 3).step(imap_logout(T0 + 3))
    assert [row[0] for row in state.read_all(first.state)[1]] == ["SecondSessionAAA"]
    second = restarted(tmp_path, Clock(T0 + 20), MemorySink("b"))
    assert second.daemon.ledger.open_sessions("192.0.2.7") == 1


# --------------------------------------------------------------------- a real relaywatch run, restarted

import signal  # noqa: E402
from collections.abc import Callable  # noqa: E402

from tests.daemonlab import Run, wait_for  # noqa: E402


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_run_restarted_while_a_session_is_open_keeps_it_until_its_logout(run: Callable[..., Run], sig: int) -> None:
    """``relaywatch run --sessions --expire 3s``: a client logs in and stays connected; relaywatch is
    stopped (or killed) and started again 5 s later, longer than --expire; the client still relays
    until its logout, written after the restart, and stops relaying --expire after it."""
    r = run("--sessions", "--expire", "3s", "--session-max", "5m")
    r.start()
    r.write(imap_login("192.0.2.7", time.time()))
    wait_for(lambda: r.granted() == {"192.0.2.7"}, "the grant")
    wait_for(lambda: [row[0] for row in state.read_all(r.state)[1]] == [SID], "the session in the state")
    assert r.stop(sig) == (0 if sig == signal.SIGTERM else -sig)
    time.sleep(5)
    r.start()
    wait_for(lambda: "restored 1 open session(s)" in r.errors(), "the session restored")
    end = time.monotonic() + 5  # longer than --expire again: kept because it is connected
    while time.monotonic() < end:
        assert r.granted() == {"192.0.2.7"}
        time.sleep(0.1)
    r.write(imap_logout(time.time()))
    logged_out = time.monotonic()
    wait_for(lambda: r.granted() == set(), "the withdrawal --expire after the logout", deadline=30)
    assert 1.5 < time.monotonic() - logged_out < 6  # --expire (3 s) after a stamp of whole seconds
    wait_for(lambda: state.read_all(r.state)[1] == (), "the session's row deleted")
    assert r.stop() == 0
    assert "withdrawn 192.0.2.7 (imap-login, user=<bob>): expired" in r.errors()
