"""Tests for state.py against real files: round trip, SIGKILL mid-write, corrupt files set aside."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from logwatch import state
from logwatch.addresses import NeverList
from logwatch.ledger import Ledger
from logwatch.model import Grant, LoginEvent

T0 = 1_780_000_000.0
CHECKOUT = Path(__file__).resolve().parent.parent


def grants(n: int, start: float = T0) -> list[Grant]:
    return [
        Grant(f"198.51.100.{i % 250}" if i < 250 else f"2001:db8::{i:x}", f"user{i}",
              "imap-login", start + i, start + i, i + 1, start + i + 1800)
        for i in range(n)
    ]


def test_round_trip_and_mode(tmp_path: Path) -> None:
    path = tmp_path / "relaywatch.state"
    saved = grants(300)
    state.save(path, saved, now=T0)
    loaded = state.load(path, now=T0)
    assert loaded.warning == ""
    assert [(g.ip, g.user, g.service, g.first, g.last, g.count) for g in loaded.grants] == [
        (g.ip, g.user, g.service, g.first, g.last, g.count) for g in saved
    ]
    assert stat.S_IMODE(path.stat().st_mode) == state.MODE == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["relaywatch.state"]


def test_missing_file_is_a_quiet_first_start(tmp_path: Path) -> None:
    assert state.load(tmp_path / "absent", now=T0) == state.Loaded(())


def test_user_names_are_escaped_not_trusted(tmp_path: Path) -> None:
    path = tmp_path / "s"
    hostile = Grant("192.0.2.7", 'x"\n}{\u2028é', "imap-login", T0, T0, 1, T0 + 1)
    state.save(path, [hostile], now=T0)
    assert path.read_bytes().count(b"\n") == 1
    assert state.load(path, now=T0).grants[0].user == hostile.user


def test_restore_drops_what_expired_while_we_were_down(tmp_path: Path) -> None:
    path = tmp_path / "s"
    ledger = Ledger(expire_after=600, never=NeverList.parse("none"))
    ledger.grant(LoginEvent("192.0.2.1", "a", "imap-login", T0), now=T0)
    ledger.grant(LoginEvent("192.0.2.2", "b", "pop3-login", T0 + 500), now=T0 + 500)
    state.save(path, ledger.grants(), now=T0 + 500)

    again = Ledger(expire_after=600, never=NeverList.parse("none"))
    changes, warning = state.restore(path, again, now=T0 + 700)
    assert warning == ""
    assert [c.ip for c in changes] == ["192.0.2.2"]
    assert again.get("192.0.2.2") == ledger.get("192.0.2.2")


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{not json",
        b"\xff\xfe",
        b"[]",
        b'{"format": "something-else"}',
        b'{"format": "relaywatch-state", "version": 99}',
        b'{"format": "relaywatch-state", "version": 1, "fields": ["ip"], "grants": []}',
        b'{"format":"relaywatch-state","version":1,'
        b'"fields":["ip","user","service","first","last","count"],"grants":[["192.0.2.1"]]}',
        b'{"format":"relaywatch-state","version":1,'
        b'"fields":["ip","user","service","first","last","count"],'
        b'"grants":[["192.0.2.1","u","s",1,"2",1]]}',
    ],
)
def test_corrupt_file_is_reported_in_one_line_and_set_aside(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "relaywatch.state"
    path.write_bytes(content)
    loaded = state.load(path, now=T0)
    assert loaded.grants == ()
    assert loaded.warning.startswith(f"--state {path}: unreadable (")
    assert "\n" not in loaded.warning
    assert not path.exists()
    (aside,) = tmp_path.iterdir()
    assert aside.name.startswith("relaywatch.state.corrupt-") and aside.read_bytes() == content
    assert str(aside) in loaded.warning


def test_second_corrupt_file_does_not_overwrite_the_first(tmp_path: Path) -> None:
    path = tmp_path / "s"
    for content in (b"one", b"two"):
        path.write_bytes(content)
        state.load(path, now=T0)
    assert sorted(p.read_bytes() for p in tmp_path.iterdir()) == [b"one", b"two"]


def test_unreadable_path_is_set_aside_too(tmp_path: Path) -> None:
    path = tmp_path / "s"
    path.mkdir()
    loaded = state.load(path, now=T0)
    assert loaded.grants == () and "unreadable" in loaded.warning


@pytest.mark.parametrize("since, wal_bytes, failed, stopping, due", [
    (1.0, 100, False, False, False),                        # a busy second: the log is enough
    (state.REWRITE_EVERY - 1, 100, False, False, False),
    (state.REWRITE_EVERY, 100, False, False, True),          # once a minute
    (1.0, state.REWRITE_WAL_BYTES, False, False, True),     # the log has grown large
    (1.0, 0, True, False, True),                            # a grant is only in memory
    (1.0, 0, False, True, True),                            # at stop
])
def test_when_the_state_file_is_rewritten(since: float, wal_bytes: int, failed: bool, stopping: bool,
                                           due: bool) -> None:
    assert state.rewrite_due(T0 + since, T0, wal_bytes, failed, stopping) is due


def test_unreadable_write_ahead_log_is_set_aside_and_the_file_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "s"
    state.save(path, [Grant("192.0.2.1", "u", "imap-login", T0, T0, 1, T0)], T0)
    state.wal_path(path).mkdir()
    loaded = state.load(path, now=T0)
    assert [g.ip for g in loaded.grants] == ["192.0.2.1"]
    assert loaded.warning.startswith(f"{state.wal_path(path)}: unreadable (") and "\n" not in loaded.warning
    assert not state.wal_path(path).exists()


def test_failed_save_leaves_no_temp(tmp_path: Path) -> None:
    """The rename fails (the target is a non-empty directory): nothing is left behind."""
    path = tmp_path / "s"
    path.mkdir()
    (path / "keep").write_text("x")
    with pytest.raises(OSError):
        state.save(path, grants(3), now=T0)
    assert [p.name for p in tmp_path.iterdir()] == ["s"]
    assert (path / "keep").read_text() == "x"


WRITER = """
import sys
from logwatch import state
from logwatch.model import Grant
path = sys.argv[1]
n = 0
while True:
    n += 1
    rows = [Grant(f"198.51.100.{i % 250}", "u", "imap-login", 1.0, float(n), n, 0.0)
            for i in range(2000 + n % 500)]
    state.save(path, rows, now=float(n))
    print(n, flush=True)
"""


def test_state_survives_sigkill_mid_write(tmp_path: Path) -> None:
    """Kill a writer at arbitrary moments; every time, the file loads whole."""
    path = tmp_path / "s"
    for delay in (0.05, 0.11, 0.2, 0.33, 0.41):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)], cwd=CHECKOUT,
            stdout=subprocess.PIPE, text=True,
        )
        assert writer.stdout is not None
        writer.stdout.readline()  # at least one save completed
        time.sleep(delay)
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        writer.stdout.close()
        loaded = state.load(path, now=T0)
        assert loaded.warning == ""
        n = int(loaded.grants[0].last)
        assert len(loaded.grants) == 2000 + n % 500
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "s"]
    assert all(name.startswith(".s.") and name.endswith(".tmp") for name in leftovers)


def test_write_ahead_log_is_merged_and_emptied_by_save(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A grant published after the last save survives a SIGKILL through FILE.wal."""
    from logwatch.model import Grant

    path = tmp_path / "state.json"
    old = Grant("192.0.2.1", "a", "imap-login", 100.0, 100.0, 1, 100.0)
    state.save(path, [old], 100.0)
    newer = Grant("192.0.2.1", "a", "imap-login", 100.0, 150.0, 2, 150.0)
    fresh = Grant("198.51.100.2", "b", "pop3-login", 160.0, 160.0, 1, 160.0)
    state.append(path, [newer, fresh])
    with state.wal_path(path).open("ab") as f:
        f.write(b'["torn", "last line')  # a write cut short
    loaded = {g.ip: g.last for g in state.load(path, 200.0).grants}
    assert loaded == {"192.0.2.1": 150.0, "198.51.100.2": 160.0}
    state.save(path, [newer, fresh], 200.0)
    assert state.wal_path(path).read_bytes() == b""
    assert {g.ip for g in state.load(path, 200.0).grants} == {"192.0.2.1", "198.51.100.2"}
