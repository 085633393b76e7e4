"""Tests for safefile (and the status files that use it) against real files in tmp_path.

The tests run as root (CI does): another user's file is made with ``os.chown`` to 65534.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest

from logwatch import safefile, status

LIMIT = 1 << 16


def regular(tmp_path: Path, content: bytes = b"{}\n", mode: int = 0o640) -> Path:
    path = tmp_path / "file.json"
    path.write_bytes(content)
    os.chmod(path, mode)
    return path


def test_a_regular_file_of_ours_is_read(tmp_path: Path) -> None:
    assert safefile.read(regular(tmp_path, b"hello"), LIMIT, writer=True) == b"hello"
    assert safefile.read(regular(tmp_path, b"x" * LIMIT), LIMIT, writer=True) == b"x" * LIMIT  # the limit itself


def test_a_missing_file_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        safefile.read(tmp_path / "absent", LIMIT, writer=True)


@pytest.mark.parametrize("writer", [True, False])
def test_a_symlink_is_never_followed(tmp_path: Path, writer: bool) -> None:
    target = regular(tmp_path)
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(safefile.Refused, match=r"a symbolic link, not followed") as refused:
        safefile.read(link, LIMIT, writer=writer)
    assert refused.value.filename == str(link)


def test_a_dangling_symlink_is_not_created_through(tmp_path: Path) -> None:
    link = tmp_path / "events.jsonl"
    link.symlink_to(tmp_path / "victim")
    with pytest.raises(safefile.Refused, match="symbolic link"):
        safefile.open_checked(link, os.O_WRONLY | os.O_APPEND | os.O_CREAT, writer=True)
    assert not (tmp_path / "victim").exists()


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "state.json"
    os.mkfifo(fifo)
    outcome: list[object] = []

    def read() -> None:
        try:
            outcome.append(safefile.read(fifo, LIMIT, writer=True))
        except OSError as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():  # let the blocked open return, or the test run would hang at exit
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("reading a FIFO blocked")
    (refused,) = outcome
    assert isinstance(refused, safefile.Refused) and refused.strerror == "a FIFO, not a regular file"


def test_a_device_and_a_directory_are_refused(tmp_path: Path) -> None:
    with pytest.raises(safefile.Refused, match="a character device, not a regular file"):
        safefile.read("/dev/zero", LIMIT, writer=False)
    with pytest.raises(IsADirectoryError, match="Is a directory"):  # as open says it
        safefile.read(tmp_path, LIMIT, writer=False)


def test_size_is_bounded_before_reading(tmp_path: Path) -> None:
    path = regular(tmp_path)
    with path.open("r+b") as f:
        f.truncate(5 << 30)  # sparse
    with pytest.raises(safefile.Refused, match=rf"^\[Errno 27\] {5 << 30} bytes, over the limit of {LIMIT} \(64 KiB\)"):
        safefile.read(path, LIMIT, writer=True)


@pytest.mark.parametrize("uid, mode, writer, why", [
    (65534, 0o640, True, "owned by uid 65534, not by relaywatch's uid 0"),
    (65534, 0o600, True, "owned by uid 65534"),
    (0, 0o660, True, r"writable by others than its owner \(mode 0660\)"),
    (0, 0o646, True, r"writable by others than its owner \(mode 0646\)"),
    (65534, 0o666, False, r"writable by others than its owner \(mode 0666\)"),
    (65534, 0o620, False, r"writable by others than its owner \(mode 0620\)"),
])
def test_trust(tmp_path: Path, uid: int, mode: int, writer: bool, why: str) -> None:
    path = regular(tmp_path, mode=mode)
    os.chown(path, uid, 0)
    with pytest.raises(safefile.Refused, match=why):
        safefile.read(path, LIMIT, writer=writer)


def test_a_reader_trusts_another_owner_who_alone_can_write(tmp_path: Path) -> None:
    """``relaywatch status`` run by an operator reads the daemon's 0640 files."""
    path = regular(tmp_path, b"ok", mode=0o640)
    os.chown(path, 65534, 0)
    assert safefile.read(path, LIMIT, writer=False) == b"ok"


def test_a_writer_refuses_a_hard_link(tmp_path: Path) -> None:
    """A second name could be a file elsewhere that the daemon would truncate or append to."""
    path = regular(tmp_path)
    os.link(path, tmp_path / "elsewhere")
    with pytest.raises(safefile.Refused, match="2 hard links"):
        safefile.read(path, LIMIT, writer=True)
    assert safefile.read(path, LIMIT, writer=False) == b"{}\n"


def test_open_checked_creates_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "new"
    fd, st = safefile.open_checked(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, writer=True, mode=0o640)
    os.close(fd)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(path.stat().st_mode) == 0o640


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", '{"t": -Infinity}', "[1e999]", "[-1e400]"])
def test_loads_refuses_non_finite_numbers(text: str) -> None:
    assert json.loads(text) is not None  # what the standard parser lets through
    with pytest.raises(safefile.NotFinite, match="not a finite number"):
        safefile.loads(text)


def test_loads_is_json_otherwise() -> None:
    assert safefile.loads(b'{"a": [1, 2.5, -0.0, "x", null, true]}') == {"a": [1, 2.5, -0.0, "x", None, True]}
    with pytest.raises(json.JSONDecodeError):
        safefile.loads("{")


@pytest.mark.parametrize("value, ok", [
    (0, True), (1_780_000_000.5, True), (safefile.LATEST - 1, True),
    (-1, False), (safefile.LATEST, False), (32503680000, False), (True, False), ("1", False),
    (float("nan"), False), (float("inf"), False),
])
def test_is_time(value: object, ok: bool) -> None:
    assert safefile.is_time(value) is ok


# --- The viewers' files (status.py): issue 10, item 5 ---

T0 = 1_780_000_000.0


def journal_of(directory: Path) -> Path:
    return directory / status.JOURNAL


def test_events_are_never_appended_through_a_symlink(tmp_path: Path) -> None:
    """events.jsonl -> victim: the daemon used to append its events to the victim."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    journal_of(tmp_path).symlink_to(victim)
    publisher = status.Publisher(tmp_path)
    publisher.event("authorised", T0, "192.0.2.7", "bob", "imap-login", "login")
    with pytest.raises(safefile.Refused, match=r"a symbolic link, not followed; moved to .*events.jsonl.corrupt-"):
        publisher.flush()
    assert victim.read_bytes() == b"precious\n"
    publisher.flush()  # the events were kept; a journal of its own begins
    assert stat.S_ISREG(journal_of(tmp_path).lstat().st_mode)
    assert [e["ip"] for e in status.read_events(tmp_path)] == ["192.0.2.7"]


def test_a_dangling_journal_symlink_creates_nothing(tmp_path: Path) -> None:
    journal_of(tmp_path).symlink_to(tmp_path / "created-by-root")
    publisher = status.Publisher(tmp_path)
    publisher.event("authorised", T0, "192.0.2.7")
    with pytest.raises(OSError):
        publisher.flush()
    assert not (tmp_path / "created-by-root").exists()


@pytest.mark.parametrize("uid, mode", [(65534, 0o640), (0, 0o666)])
def test_the_daemon_appends_only_to_a_journal_of_its_own(tmp_path: Path, uid: int, mode: int) -> None:
    journal = journal_of(tmp_path)
    journal.write_bytes(b"")
    os.chown(journal, uid, 0)
    os.chmod(journal, mode)
    publisher = status.Publisher(tmp_path)
    publisher.event("refused", T0, "192.0.2.7")
    with pytest.raises(safefile.Refused):
        publisher.flush()
    (aside,) = [p for p in tmp_path.iterdir() if p.name.startswith("events.jsonl.corrupt-")]
    assert aside.read_bytes() == b""


def test_the_viewer_reads_events_only_their_owner_can_write(tmp_path: Path) -> None:
    publisher = status.Publisher(tmp_path)
    publisher.event("authorised", T0, "192.0.2.7")
    publisher.flush()
    os.chown(journal_of(tmp_path), 65534, 0)  # another user's, 0640: a viewer reads it
    assert [e["ip"] for e in status.read_events(tmp_path)] == ["192.0.2.7"]
    os.chmod(journal_of(tmp_path), 0o660)
    with pytest.raises(safefile.Refused, match="writable by others than its owner") as refused:
        status.read_events(tmp_path)
    assert refused.value.filename == str(journal_of(tmp_path))


@pytest.mark.parametrize("t", [b"NaN", b"Infinity", b"1e999", b"-1", b"32503680000", b'"soon"'])
def test_an_event_at_no_time_is_dropped(tmp_path: Path, t: bytes) -> None:
    journal_of(tmp_path).write_bytes(b'{"t":%s,"kind":"authorised","ip":"203.0.113.66"}\n'
                                     b'{"t":1780000000,"kind":"authorised","ip":"192.0.2.7"}\n' % t)
    assert [e["ip"] for e in status.read_events(tmp_path)] == ["192.0.2.7"]


def status_file(directory: Path, **fields: object) -> Path:
    path = directory / status.STATUS
    body = {"format": status.FORMAT, "version": status.VERSION, "pid": 1, "started": T0, "updated": T0,
            "running": True, "sinks": [{"spec": "relayctrl:/x", "ok": True, "last_ok": T0}], "expire": 1800}
    path.write_text(json.dumps({**body, **fields}))
    os.chmod(path, status.MODE)
    return path


def test_a_symlinked_status_file_is_not_read(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    status_file(elsewhere)
    (tmp_path / status.STATUS).symlink_to(elsewhere / status.STATUS)
    with pytest.raises(ValueError, match=r"status.json: refused: a symbolic link, not followed$"):
        status.read_status(tmp_path)


def test_a_status_file_others_can_write_is_not_read(tmp_path: Path) -> None:
    os.chmod(status_file(tmp_path), 0o666)
    with pytest.raises(ValueError, match=r"refused: writable by others than its owner \(mode 0666\)"):
        status.read_status(tmp_path)


def test_a_fifo_status_file_does_not_block_the_viewer(tmp_path: Path) -> None:
    fifo = tmp_path / status.STATUS
    os.mkfifo(fifo)
    outcome: list[object] = []

    def read() -> None:
        try:
            outcome.append(status.read_status(tmp_path))
        except ValueError as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("reading a FIFO blocked the viewer")
    assert "refused: a FIFO, not a regular file" in str(outcome[0])


def test_a_huge_status_file_is_refused(tmp_path: Path) -> None:
    path = status_file(tmp_path)
    with path.open("ab") as f:
        f.write(b" " * status.STATUS_MAX_BYTES)  # still valid JSON
    with pytest.raises(ValueError, match=rf"bytes, over the limit of {status.STATUS_MAX_BYTES} \(1 MiB\)"):
        status.read_status(tmp_path)


@pytest.mark.parametrize("fields", [
    {"updated": float("nan")},
    {"started": float("inf")},
    {"updated": 1e20},
    {"started": -1},
    {"expire": float("nan")},
    {"expire": -60},
    {"sinks": [{"spec": "relayctrl:/x", "ok": True, "last_ok": 1e300}]},
])
def test_a_status_with_non_finite_or_absurd_times_is_refused(tmp_path: Path, fields: dict[str, object]) -> None:
    """``json.dumps`` writes NaN and Infinity, and ``json.loads`` read them back; a viewer
    would crash formatting the time."""
    status_file(tmp_path)
    doc = status.read_status(tmp_path)  # the same file, as the daemon writes it
    assert doc is not None and doc["updated"] == T0
    status_file(tmp_path, **fields)
    with pytest.raises(ValueError, match="not a finite number|not a time|not a number of seconds"):
        status.read_status(tmp_path)


def test_status_files_go_beside_the_state_file_not_beside_its_target(tmp_path: Path) -> None:
    """--state FILE, FILE a symlink to /etc/x: status.json used to go to /etc."""
    (tmp_path / "daemon").mkdir()
    (tmp_path / "elsewhere").mkdir()
    link = tmp_path / "daemon" / "state.json"
    link.symlink_to(tmp_path / "elsewhere" / "state.json")
    assert status.directory_of(link) == tmp_path / "daemon"
    assert status.directory_of(tmp_path / "daemon" / ".." / "daemon" / "state.json") == tmp_path / "daemon"
