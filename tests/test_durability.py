"""Tests for durability.py on tmp_path: the state database before the sinks before the
checkpoints, including a crash injected while a checkpoint is saved, a write that fails,
and a tick's cost counted in rows, against the size of the live set."""

from __future__ import annotations

import gc
import ipaddress
import logging
import sqlite3
from pathlib import Path

import pytest

from logwatch import checkpoint, state
from logwatch.checkpoint import FilePosition, LogCheckpoint
from logwatch.durability import Durability
from logwatch.ledger import Ledger
from logwatch.model import DROP, PUT, Change, Grant, LoginEvent
from logwatch.reporter import Reporter

T0 = 1_780_000_000.0
LOG = "/var/log/mail.log"


class Crash(BaseException):
    pass


def put(ip: str, when: float = T0, count: int = 1) -> Change:
    return Change(PUT, Grant(ip, "bob", "imap-login", when, when, count, when + 600), "login")


def drop(ip: str, when: float = T0) -> Change:
    return Change(DROP, Grant(ip, "bob", "imap-login", when, when, 1, when + 600), "expired")


def position(offset: int) -> list[LogCheckpoint]:
    return [LogCheckpoint(LOG, (FilePosition(1, 2, offset, "f"),))]


def durable(tmp_path: Path) -> Durability:
    return Durability(str(tmp_path / "state.json"), Reporter(logging.getLogger("test")), T0)


def in_state(tmp_path: Path) -> dict[str, float]:
    return {g.ip: g.last for g in state.read(tmp_path / "state.json")}


def test_each_checkpoint_is_saved_only_when_the_grants_before_it_are_in_the_state(tmp_path: Path) -> None:
    seen: list[set[str]] = []

    def save(directory: str, cp: LogCheckpoint) -> None:
        seen.append(set(in_state(tmp_path)))
        checkpoint.save(directory, cp)

    d = Durability(str(tmp_path / "state.json"), Reporter(logging.getLogger("test")), T0, save)
    assert d.restore(Ledger(), T0) == ()
    d.record([put("192.0.2.7")], T0)
    assert set(in_state(tmp_path)) == {"192.0.2.7"}  # committed before any sink sees it
    d.persist(T0, lambda: [], position(100))
    d.record([put("192.0.2.8", T0 + 1)], T0 + 1)
    d.persist(T0 + 1, lambda: [], position(200))
    assert seen == [{"192.0.2.7"}, {"192.0.2.7", "192.0.2.8"}]
    d.close()


def test_a_crash_while_a_checkpoint_is_saved_leaves_the_state_whole_and_the_old_position(tmp_path: Path) -> None:
    def crash(directory: str, cp: LogCheckpoint) -> None:
        raise Crash()

    ok = Durability(str(tmp_path / "state.json"), Reporter(logging.getLogger("test")), T0)
    ok.restore(Ledger(), T0)
    ok.record([put("192.0.2.7")], T0)
    ok.persist(T0, lambda: [put("192.0.2.7").grant], position(100))
    d = Durability(str(tmp_path / "state.json"), Reporter(logging.getLogger("test")), T0, crash)
    d.restore(Ledger(), T0)
    d.record([put("192.0.2.8", T0 + 1)], T0 + 1)
    with pytest.raises(Crash):
        d.persist(T0 + 1, lambda: [], position(200))
    ledger = Ledger()
    restored = Durability(str(tmp_path / "state.json"), Reporter(logging.getLogger("test")), T0 + 2).restore(
        ledger, T0 + 2)
    assert {c.ip for c in restored} == {"192.0.2.7", "192.0.2.8"}
    saved = checkpoint.load(tmp_path, LOG)
    assert saved is not None and saved.files[0].offset == 100  # read again from there: renewals


def test_a_failed_write_holds_every_position_back_until_it_is_written(tmp_path: Path) -> None:
    """The disk is full at one tick: the sinks still publish (the daemon goes on), but no
    checkpoint is saved until the changes are in the database; the next write carries them."""
    saved: list[int] = []
    d = Durability(str(tmp_path / "state.json"), Reporter(logging.getLogger("test")), T0,
                   lambda directory, cp: saved.append(cp.files[0].offset))
    d.restore(Ledger(), T0)
    store = d.store
    assert store is not None
    real = store.write
    failures = [sqlite3.OperationalError("database or disk is full")] * 2

    def flaky(puts: object, drops: object, opened: object = (), closed: object = ()) -> int:
        if failures:
            raise failures.pop()
        return real(puts, drops, opened, closed)  # type: ignore[arg-type]

    store.write = flaky  # type: ignore[method-assign]
    d.record([put("192.0.2.7")], T0)
    assert d.owed(T0) and in_state(tmp_path) == {}
    with pytest.raises(OSError, match="not in the database yet"):
        d.persist(T0, lambda: [], position(10))
    assert saved == []
    d.record([put("192.0.2.8", T0 + 1)], T0 + 1)  # this write carries the one that failed
    assert in_state(tmp_path) == {"192.0.2.7": T0, "192.0.2.8": T0 + 1} and not d.owed(T0 + 1)
    d.persist(T0 + 1, lambda: [], position(20))
    assert saved == [20]
    d.close()


def test_a_withdrawal_deletes_its_row_at_once(tmp_path: Path) -> None:
    """A reload that withdraws a client (or an expiry) deletes its row in that tick's
    transaction: viewers, who judge rows by the new --expire, never see it again."""
    d = durable(tmp_path)
    d.restore(Ledger(), T0)
    d.record([put("192.0.2.7"), put("192.0.2.8")], T0)
    d.record([drop("192.0.2.7", T0 + 5)], T0 + 5)
    assert set(in_state(tmp_path)) == {"192.0.2.8"}
    d.rewrite_soon()
    assert not d.owed(T0 + 5)
    d.close()


def test_a_tick_writes_each_address_once_and_its_latest_grant(tmp_path: Path) -> None:
    d = durable(tmp_path)
    d.restore(Ledger(), T0)
    d.record([put("192.0.2.7", T0, 1), put("192.0.2.7", T0 + 1, 2), put("192.0.2.8", T0),
              put("192.0.2.9", T0), drop("192.0.2.9", T0 + 1), drop("192.0.2.10", T0 + 1)], T0 + 1)
    store = d.store
    assert store is not None
    assert store.rows_written == 3 + 1  # 192.0.2.7 once (its renewal), .8, .9's drop; .10: a delete of nothing
    assert in_state(tmp_path) == {"192.0.2.7": T0 + 1, "192.0.2.8": T0}
    (seven,) = [g for g in state.read(tmp_path / "state.json") if g.ip == "192.0.2.7"]
    assert seven.count == 2
    d.close()


def v6(i: int) -> str:
    return str(ipaddress.IPv6Address(0x20010DB8 << 96 | i))


def _tick_rows(tmp_path: Path, live: int) -> int:
    """Rows one tick of 300 changes writes, with ``live`` grants in the database."""
    d = Durability(str(tmp_path / f"state-{live}.db"), Reporter(logging.getLogger("test")), T0)
    d.restore(Ledger(), T0)
    d.record([put(v6(i), T0) for i in range(live)], T0)
    store = d.store
    assert store is not None
    before = store.rows_written
    tick = ([put(v6(2 * k * (live // 400)), T0 + 1, 2) for k in range(200)]
            + [put(f"198.51.100.{i}", T0 + 1) for i in range(50)] + [drop(v6(2 * i + 1)) for i in range(50)])
    d.record(tick, T0 + 1)
    written = store.rows_written - before
    d.close()
    assert len(state.read(tmp_path / f"state-{live}.db")) == live + 50 - 50
    return written


def test_a_ticks_cost_does_not_grow_with_the_live_set(tmp_path: Path) -> None:
    """Issue 12: the state was rewritten whole (every grant) once a minute. A tick now writes
    its own rows only: the same 300 changes write 300 rows at 1,000 grants and at 50,000.
    (Timings go in benchmarks/bench_state.py; this counts rows.)"""
    assert _tick_rows(tmp_path, 1_000) == _tick_rows(tmp_path, 50_000) == 300


def test_restore_deletes_the_rows_the_ledger_does_not_take(tmp_path: Path) -> None:
    d = durable(tmp_path)
    d.restore(Ledger(), T0)
    d.record([put("192.0.2.7", T0), put("192.0.2.8", T0 + 500)], T0 + 500)
    d.close()
    again = durable(tmp_path)
    restored = again.restore(Ledger(expire_after=600), T0 + 700)  # 192.0.2.7 expired meanwhile
    assert [c.ip for c in restored] == ["192.0.2.8"]
    assert set(in_state(tmp_path)) == {"192.0.2.8"}
    again.close()


def test_restore_into_a_ledger_not_empty_still_deletes_what_it_does_not_take(tmp_path: Path) -> None:
    """As many grants after as rows read, yet one row not taken: the ledger held one before."""
    d = durable(tmp_path)
    d.restore(Ledger(), T0)
    d.record([put("192.0.2.7", T0), put("192.0.2.8", T0 + 500)], T0 + 500)
    d.close()
    ledger = Ledger(expire_after=600)
    ledger.grant(LoginEvent("192.0.2.99", "ann", "imap-login", T0 + 690), T0 + 690)
    again = durable(tmp_path)
    assert [c.ip for c in again.restore(ledger, T0 + 700)] == ["192.0.2.8"]  # 192.0.2.7 expired meanwhile
    assert len(ledger) == 2 and set(in_state(tmp_path)) == {"192.0.2.8"}
    again.close()


def test_restore_turns_the_collector_back_on_only_if_it_was_on(tmp_path: Path) -> None:
    """Off while the grants are made, frozen after; a caller that turned it off for its
    whole start (the brake's index, the sinks' first batch) finds it off still."""
    assert gc.isenabled()
    d = durable(tmp_path)
    d.restore(Ledger(), T0)
    d.close()
    assert gc.isenabled()
    gc.disable()
    try:
        d = durable(tmp_path)
        d.restore(Ledger(), T0)
        d.close()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_without_state_nothing_is_written(tmp_path: Path) -> None:
    d = Durability(None, Reporter(logging.getLogger("test")), T0)
    assert d.restore(Ledger(), T0) == () and d.directory is None
    d.record([put("192.0.2.7")], T0)
    d.persist(T0, lambda: [], position(1))
    assert list(tmp_path.iterdir()) == []


def test_checkpoints_go_beside_a_symlinked_state_file_not_beside_its_target(tmp_path: Path) -> None:
    """A state file that is a symbolic link must not move the checkpoints (and the viewers'
    files) into its target's directory: that is a directory relaywatch never chose."""
    mine, elsewhere = tmp_path / "mine", tmp_path / "elsewhere"
    mine.mkdir()
    elsewhere.mkdir()
    (mine / "state.json").symlink_to(elsewhere / "state.json")
    durability = Durability(str(mine / "state.json"), Reporter(logging.getLogger("test")), 0.0)
    assert durability.directory == str(mine)
