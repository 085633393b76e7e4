"""Tests for durability.py on tmp_path: the write-ahead log before the state file's rewrite
before the checkpoints, including a crash injected while a checkpoint is saved."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from logwatch import checkpoint, state
from logwatch.checkpoint import FilePosition, LogCheckpoint
from logwatch.durability import Durability
from logwatch.ledger import Ledger
from logwatch.model import PUT, Change, Grant
from logwatch.reporter import Reporter

T0 = 1_780_000_000.0
LOG = "/var/log/mail.log"


class Crash(BaseException):
    pass


def put(ip: str, when: float = T0) -> Change:
    return Change(PUT, Grant(ip, "bob", "imap-login", when, when, 1, when + 600), "login")


def position(offset: int) -> list[LogCheckpoint]:
    return [LogCheckpoint(LOG, (FilePosition(1, 2, offset, "f"),))]


def durable(tmp_path: Path) -> Durability:
    return Durability(str(tmp_path / "state.json"), Reporter(logging.getLogger("test")), T0)


def test_each_checkpoint_is_saved_only_when_the_grants_before_it_are_in_the_state(tmp_path: Path) -> None:
    seen: list[set[str]] = []

    def save(directory: str, cp: LogCheckpoint) -> None:
        seen.append({g.ip for g in state.read(tmp_path / "state.json")})
        checkpoint.save(directory, cp)

    d = Durability(str(tmp_path / "state.json"), Reporter(logging.getLogger("test")), T0, save)
    assert d.restore(Ledger(), T0) == ()
    d.record([put("192.0.2.7")], T0)
    assert {g.ip for g in state.read(tmp_path / "state.json")} == {"192.0.2.7"}  # appended at once
    d.persist(T0, lambda: [put("192.0.2.7").grant], position(100))  # a first start: the file is written
    d.record([put("192.0.2.8", T0 + 1)], T0 + 1)
    d.persist(T0 + 1, lambda: [], position(200))  # within the minute: the log is synced, not rewritten
    assert seen == [{"192.0.2.7"}, {"192.0.2.7", "192.0.2.8"}]
    assert state.wal_path(tmp_path / "state.json").read_text().count("192.0.2.8") == 1


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


def test_a_failed_append_rewrites_the_state_file_before_any_position(tmp_path: Path) -> None:
    d = durable(tmp_path)
    state.save(tmp_path / "state.json", [], T0)
    d.restore(Ledger(), T0)
    state.wal_path(tmp_path / "state.json").mkdir()
    d.record([put("192.0.2.7")], T0)
    state.wal_path(tmp_path / "state.json").rmdir()
    assert d.owed(T0) is False  # not due by time; but the next persist rewrites first
    d.persist(T0 + 1, lambda: [put("192.0.2.7").grant], position(10))
    assert "192.0.2.7" in (tmp_path / "state.json").read_text()


def test_a_policy_change_has_the_state_file_rewritten_at_the_next_persist(tmp_path: Path) -> None:
    d = durable(tmp_path)
    d.restore(Ledger(), T0)
    d.record([put("192.0.2.7")], T0)
    d.persist(T0, lambda: [put("192.0.2.7").grant], None)
    assert not d.owed(T0 + 10)
    d.rewrite_soon()
    assert d.owed(T0 + 10)
    d.persist(T0 + 10, lambda: [], None)
    assert "192.0.2.7" not in (tmp_path / "state.json").read_text()


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
