"""Tests for the log follower: real files, real rotations, a writer running concurrently.

Every rotation test asserts the one property that matters: each line written is delivered
exactly once, and in order within each file. Nothing here sleeps and hopes: waits are on
conditions with generous deadlines (a loaded 2-core CI machine), and no test times anything.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from logwatch import checkpoint
from logwatch.sources import Batch, LineSource
from logwatch.sources.stdin import StdinSource
from logwatch.sources.tail import Tail, open_source

DEADLINE = 60.0
HARNESS = Path(__file__).with_name("follow_harness.py")


def line_for(n: int) -> str:
    """A Dovecot login line carrying its sequence number in the session field."""
    return (
        f"Jun 10 12:00:00 mx dovecot: imap-login: Login: user=<u{n}>, method=PLAIN, "
        f"rip=192.0.2.{1 + n % 250}, lip=192.0.2.1, session=<{n:07d}>"
    )


def seq_of(line: str) -> int:
    return int(line[-8:-1])


def wait_for(cond: Callable[[], bool], what: str, deadline: float = DEADLINE) -> None:
    end = time.monotonic() + deadline
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def poll_until(source: LineSource, done: Callable[[list[Batch]], bool], what: str) -> list[Batch]:
    """Poll from this thread until ``done(batches so far)``; fail after DEADLINE."""
    got: list[Batch] = []
    end = time.monotonic() + DEADLINE
    while not done(got):
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        got += source.poll(0.2)
    return got


def texts(batches: list[Batch]) -> list[str]:
    return [line for b in batches for line in b.lines]


class Writer(threading.Thread):
    """Append numbered lines like syslog or Dovecot: one write() per line, then reopen on request.

    Args:
        append: open with O_APPEND (syslog daemons); False writes at the writer's own
            offset, which leaves a NUL hole after copytruncate.
        pace: pause after every 10 lines, so rotations land mid-stream.
    """

    def __init__(self, path: Path, total: int, first: int = 0, append: bool = True, pace: float = 0.001) -> None:
        super().__init__(daemon=True)
        self.path, self.total, self.first, self.append, self.pace = path, total, first, append, pace
        self.pause = threading.Lock()  # held by a test while it copies and truncates
        self.reopen = threading.Event()
        self.count = 0
        self.gate: Callable[[int], bool] = lambda n: True

    def _open(self) -> int:
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if self.append else 0)
        fd = os.open(self.path, flags, 0o644)
        if not self.append:
            os.lseek(fd, 0, os.SEEK_END)
        return fd

    def run(self) -> None:
        fd = self._open()
        for n in range(self.first, self.first + self.total):
            while not self.gate(n):
                time.sleep(0.002)
            if self.reopen.is_set():
                os.close(fd)
                fd = self._open()
                self.reopen.clear()
            with self.pause:
                os.write(fd, (line_for(n) + "\n").encode())
            self.count += 1
            if n % 10 == 9 and self.pace:
                time.sleep(self.pace)
        os.close(fd)

    def wait_written(self, n: int) -> None:
        wait_for(lambda: self.count >= n, f"writer to write {n} lines")

    @property
    def expected(self) -> list[int]:
        return list(range(self.first, self.first + self.total))


class Consumer(threading.Thread):
    """Poll a source from its own thread, as the daemon will, keeping every batch."""

    def __init__(self, source: LineSource) -> None:
        super().__init__(daemon=True)
        self.source = source
        self.batches: list[Batch] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.stop.is_set():
            got = self.source.poll(0.1)
            with self.lock:
                self.batches += got

    def seqs(self) -> list[int]:
        with self.lock:
            return [seq_of(line) for b in self.batches for line in b.lines]

    def finish(self, expected: list[int]) -> list[Batch]:
        """Wait until every expected line arrived, then until the source is quiet."""
        want = set(expected)
        wait_for(lambda: want <= set(self.seqs()), f"all {len(want)} lines")
        self.stop.set()
        self.join(DEADLINE)
        while True:  # anything still coming (a duplicate) must be seen by the assertion
            more = self.source.poll(0.5)
            if not more:
                break
            self.batches += more
        return self.batches


def assert_exactly_once(batches: list[Batch], expected: list[int]) -> None:
    seqs = [seq_of(line) for b in batches for line in b.lines]
    assert sorted(seqs) == expected, "lost or repeated lines"
    per_file: dict[tuple[int, int], list[int]] = {}
    for b in batches:
        assert b.position is not None
        per_file.setdefault((b.position.device, b.position.inode), []).extend(map(seq_of, b.lines))
    for key, got in per_file.items():
        assert got == sorted(got), f"out of order within file {key}"


@pytest.fixture
def log(tmp_path: Path) -> Path:
    p = tmp_path / "mail.log"
    p.write_text("".join(line_for(n) + "\n" for n in range(-5, 0)))  # history: not for us
    return p


def follow(path: Path, **kw: object) -> Tail:
    kw.setdefault("grace", 0.3)
    return Tail([str(path)], **kw)  # type: ignore[arg-type]


# -- basics --------------------------------------------------------------------------------


def test_tail_is_a_line_source_and_reports_its_backend(log: Path) -> None:
    t = follow(log)
    try:
        assert isinstance(t, LineSource)
        assert t.backend == ("inotify" if sys.platform.startswith("linux") else "polling")
    finally:
        t.close()
    p = follow(log, backend="polling")
    try:
        assert p.backend == "polling"
    finally:
        p.close()


def test_first_start_begins_at_end_and_partial_line_waits(log: Path) -> None:
    with log.open("ab") as f:
        f.write(b"half of a li")  # being written as we start
    t = follow(log)
    try:
        assert t.poll(0.2) == []
        with log.open("ab") as f:
            f.write(b"ne\nsecond\nthird wit")
        got = t.poll(DEADLINE)
        assert [line for b in got for line in b.lines] == ["half of a line", "second"]
        size = log.stat().st_size
        assert got[-1].position is not None and got[-1].position.offset == size - len(b"third wit")
        assert t.checkpoints() == [got[-1].resume]
    finally:
        t.close()
    assert t.checkpoints() == [got[-1].resume]  # a shutdown may close first, then save
    assert t.poll(0.1) == []


@pytest.mark.parametrize("backend", ["auto", "polling"])
def test_two_files_followed_at_once(tmp_path: Path, backend: str) -> None:
    a, b = tmp_path / "a.log", tmp_path / "sub" / "b.log"
    b.parent.mkdir()
    a.touch()
    b.touch()
    t = Tail([str(a), str(b)], backend=backend)  # type: ignore[arg-type]
    c = Consumer(t)
    c.start()
    wa, wb = Writer(a, 300), Writer(b, 300, first=1000)
    wa.start()
    wb.start()
    try:
        batches = c.finish(wa.expected + wb.expected)
        assert_exactly_once(batches, wa.expected + wb.expected)
        assert {bt.log for bt in batches} == {str(a), str(b)}
    finally:
        t.close()


# -- rotation, each with a writer running -----------------------------------------------------


@pytest.mark.parametrize("backend", ["auto", "polling"])
def test_rename_create_keeps_draining_old_file(log: Path, backend: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "relaywatch.tail")
    t = follow(log, backend=backend)
    c = Consumer(t)
    c.start()
    w = Writer(log, 3000)
    rotated = threading.Event()
    w.gate = lambda n: n < 1000 or rotated.is_set()
    w.start()
    try:
        w.wait_written(1000)
        os.rename(log, log.with_name("mail.log.1"))  # logrotate "create"
        os.close(os.open(log, os.O_CREAT | os.O_WRONLY, 0o640))
        rotated.set()
        w.wait_written(1500)  # the writer keeps writing to the renamed file...
        w.reopen.set()  # ...until it is told to reopen (postrotate HUP)
        batches = c.finish(w.expected)
        assert_exactly_once(batches, w.expected)
        assert len({(b.position.device, b.position.inode) for b in batches if b.position}) == 2
        extra = poll_until(t, lambda got: "closed rotated file" in caplog.text, "old file closed")
        assert extra == []
    finally:
        t.close()


@pytest.mark.parametrize("append", [True, False], ids=["o_append", "nul_hole"])
def test_copytruncate_restarts_at_zero_and_reads_the_copy(log: Path, append: bool) -> None:
    t = follow(log)
    c = Consumer(t)
    c.start()
    w = Writer(log, 3000, append=append)
    w.start()
    try:
        w.wait_written(1200)
        with w.pause:  # logrotate loses lines written between copy and truncate; we must not
            shutil.copyfile(log, log.with_name("mail.log.1"))
            os.truncate(log, 0)
        batches = c.finish(w.expected)
        assert_exactly_once(batches, w.expected)
    finally:
        t.close()


def test_delete_and_recreate(log: Path) -> None:
    t = follow(log)
    c = Consumer(t)
    c.start()
    w = Writer(log, 2000)
    deleted = threading.Event()
    w.gate = lambda n: n < 700 or deleted.is_set()
    w.start()
    try:
        w.wait_written(700)
        os.unlink(log)
        deleted.set()
        w.wait_written(900)  # still writing into the deleted file
        w.reopen.set()  # O_CREAT: a new file at the same name
        batches = c.finish(w.expected)
        assert_exactly_once(batches, w.expected)
    finally:
        t.close()


def test_missing_at_start_is_said_once_and_picked_up(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "relaywatch.tail")
    log = tmp_path / "mail.log"
    t = follow(log)
    try:
        for _ in range(5):
            assert t.poll(0.05) == []
        c = Consumer(t)
        c.start()
        w = Writer(log, 500)
        w.start()
        assert_exactly_once(c.finish(w.expected), w.expected)  # from 0: all of it is new
    finally:
        t.close()
    said = [r for r in caplog.records if "does not exist" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING


def test_parent_directory_replaced(tmp_path: Path) -> None:
    d = tmp_path / "dovecot"
    d.mkdir()
    log = d / "mail.log"
    log.touch()
    t = follow(log)
    c = Consumer(t)
    c.start()
    w = Writer(log, 2000)
    moved = threading.Event()
    w.gate = lambda n: n < 800 or moved.is_set()
    w.start()
    try:
        w.wait_written(800)
        os.rename(d, tmp_path / "dovecot.old")
        d.mkdir()
        moved.set()
        w.wait_written(1000)  # into the old file, now in the moved directory
        w.reopen.set()  # creates dovecot/mail.log in the new directory
        batches = c.finish(w.expected)
        assert_exactly_once(batches, w.expected)
    finally:
        t.close()


def test_fast_writer_and_repeated_rotations(log: Path) -> None:
    """A burst far above 50,000 lines/s, rotated three times mid-burst."""
    t = follow(log)
    c = Consumer(t)
    c.start()
    w = Writer(log, 200_000, pace=0.0)
    w.start()
    try:
        for i, at in enumerate((40_000, 90_000, 140_000)):
            w.wait_written(at)
            os.rename(log, log.with_name(f"mail.log.{i + 1}"))
            w.reopen.set()
        batches = c.finish(w.expected)
        assert_exactly_once(batches, w.expected)
    finally:
        t.close()


# -- bad input -----------------------------------------------------------------------------


def test_bad_input_is_cut_or_replaced_never_fatal(log: Path, caplog: pytest.LogCaptureFixture) -> None:
    t = follow(log)
    try:
        with log.open("ab") as f:
            f.write(b"x" * (10 << 20))  # 10 MB without a newline, in one go
        assert t.poll(0.5) == []
        with log.open("ab") as f:
            f.write(b"end of the long one\n")
            f.write(b"\xff\xfe binary \x00 junk \xc3\x28\r\n")
            f.write(b"x" * 20000 + b"\n")
            f.write(line_for(1).encode() + b"\n")
        lines = texts(poll_until(t, lambda got: len(texts(got)) >= 4, "4 lines"))
        assert lines[0] == "x" * 16384
        assert lines[1] == "\ufffd\ufffd binary \x00 junk \ufffd("
        assert lines[2] == "x" * 16384
        assert lines[3] == line_for(1)
    finally:
        t.close()
    cut = [r for r in caplog.records if "was cut" in r.getMessage()]
    assert len(cut) == 1  # said once, then counted


# -- checkpoints -----------------------------------------------------------------------------


def _drain(t: LineSource, want: int) -> list[Batch]:
    return poll_until(t, lambda got: len(texts(got)) >= want, f"{want} lines")


def _append(path: Path, seqs: range) -> None:
    with path.open("a") as f:
        f.write("".join(line_for(n) + "\n" for n in seqs))


@pytest.mark.parametrize("rotation", ["none", "rename", "rename-no-new-file-yet", "copytruncate", "delete"])
def test_resume_from_checkpoint_after_changes_while_stopped(log: Path, tmp_path: Path, rotation: str) -> None:
    state = tmp_path / "state"
    state.mkdir()
    t = follow(log)
    _append(log, range(0, 100))
    got = _drain(t, 100)
    for cp in t.checkpoints():
        checkpoint.save(state, cp)
    t.close()
    _append(log, range(100, 150))  # written while we are stopped
    old = log.with_name("mail.log.1")
    if rotation.startswith("rename"):
        os.rename(log, old)
    elif rotation == "copytruncate":
        shutil.copyfile(log, old)
        os.truncate(log, 0)
    elif rotation == "delete":
        os.unlink(log)  # the lines 100..149 are gone with it: nothing can bring them back
    expected = list(range(0, 200)) if rotation != "delete" else list(range(0, 100)) + list(range(150, 200))
    if rotation != "rename-no-new-file-yet":
        _append(log, range(150, 200))
    t = follow(log, resume={str(log): checkpoint.load(state, str(log))})
    try:
        if rotation == "rename-no-new-file-yet":
            got += _drain(t, 50)  # the renamed file is finished before any new one exists
            _append(log, range(150, 200))
            got += _drain(t, 50)
        else:
            got += _drain(t, len(expected) - 100)
        assert_exactly_once(got, expected)
    finally:
        t.close()


def test_corrupt_checkpoint_starts_at_end(log: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "state"
    state.mkdir()
    checkpoint.checkpoint_file(state, str(log)).write_text('{"version": 1, "path": ')
    src = open_source([str(log)], state, backend="polling")
    try:
        _append(log, range(0, 3))
        got = _drain(src, 3)
        assert [seq_of(x) for b in got for x in b.lines] == [0, 1, 2]  # history skipped
    finally:
        src.close()
    # This log's own line, once (another test's source, still winding down in a thread, may
    # log its own checkpoint's words meanwhile).
    mine = str(checkpoint.checkpoint_file(state, str(log)))
    assert sum("corrupt" in r.getMessage() and mine in r.getMessage() for r in caplog.records) == 1


# -- standard input --------------------------------------------------------------------------


def test_stdin_source_hands_on_lines_and_finishes() -> None:
    r, w = os.pipe()
    src = StdinSource(os.fdopen(r, "rb", buffering=1 << 16))
    try:
        os.write(w, b"2024-03-10T00:00:01+0100 mx dovecot[7]: imap-login: Login: user=<a>, rip=203.0.113.5\nhal")
        got = texts(poll_until(src, lambda b: len(texts(b)) >= 1, "a line"))
        os.write(w, b"f\nlast without newline")
        os.close(w)
        got += texts(poll_until(src, lambda b: src.finished, "EOF"))
        assert got == [
            "2024-03-10T00:00:01+0100 mx dovecot[7]: imap-login: Login: user=<a>, rip=203.0.113.5",
            "half",
            "last without newline",
        ]
        assert src.checkpoints() == []
    finally:
        src.close()


def test_stdin_cannot_be_mixed_with_files(log: Path) -> None:
    with pytest.raises(ValueError, match="cannot be combined"):
        open_source(["-", str(log)])


# -- a killed process, restarted (tests/follow_harness.py) -----------------------------------


class Harness:
    """tests/follow_harness.py as a subprocess, its stdout collected by a thread."""

    def __init__(self, state: Path, logs: list[Path], *extra: str) -> None:
        self.err_path = state.parent / f"harness-{time.monotonic_ns()}.err"
        self.err = self.err_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, str(HARNESS), "--state", str(state), "--grace", "0.5", *extra, *map(str, logs)],
            stdout=subprocess.PIPE, stderr=self.err, text=True, bufsize=1,
        )
        self.records: list[str] = []
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        wait_for(lambda: any(r.startswith("# ready") for r in self.snapshot()) or self.proc.poll() is not None, "ready")
        assert self.proc.poll() is None, self.stderr()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for rec in self.proc.stdout:
            with self.lock:
                self.records.append(rec.rstrip("\n"))

    def snapshot(self) -> list[str]:
        with self.lock:
            return list(self.records)

    def seqs(self) -> list[int]:
        return [seq_of(r.split("\t", 1)[1]) for r in self.snapshot() if r.startswith("L ")]

    def stderr(self) -> str:
        self.err.flush()
        return self.err_path.read_text()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(DEADLINE)
        self.reader.join(DEADLINE)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(DEADLINE)
        self.reader.join(DEADLINE)

    def committed(self, state: Path, log: Path) -> tuple[list[int], list[int]]:
        """Split what a killed run received into committed lines and the uncommitted rest.

        The checkpoint on disk decides: lines before the last ``@`` record equal to it were
        committed; lines after it were handed on but not saved, so they come again.
        """
        saved = checkpoint.load(state, str(log))
        assert saved is not None
        mark = json.dumps([saved.path, [[p.device, p.inode, p.offset, p.fingerprint] for p in saved.files]])
        recs = self.snapshot()
        cut = max(i for i, r in enumerate(recs) if r == "@ " + mark)
        before = [seq_of(r.split("\t", 1)[1]) for r in recs[:cut] if r.startswith("L ")]
        after = [seq_of(r.split("\t", 1)[1]) for r in recs[cut:] if r.startswith("L ")]
        return before, after


def test_sigkill_mid_stream_then_restart_receives_every_line_once(log: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    h1 = Harness(state, [log])
    w = Writer(log, 4000, pace=0.002)
    down = threading.Event()
    w.gate = lambda n: n < 1500 or down.is_set()
    w.start()
    wait_for(lambda: len(h1.seqs()) >= 1000, "1000 lines received before the kill")
    h1.kill()
    down.set()
    committed, uncommitted = h1.committed(state, log)
    w.wait_written(2000)  # written while nobody follows
    os.rename(log, log.with_name("mail.log.1"))  # and rotated while down
    w.wait_written(2200)
    w.reopen.set()
    w.wait_written(2500)
    h2 = Harness(state, [log])
    try:
        want = set(w.expected) - set(committed)
        wait_for(lambda: want <= set(h2.seqs()), "every line after the kill")
    finally:
        h2.stop()
    again = h2.seqs()
    assert again[: len(uncommitted)] == uncommitted  # handed on before the kill, not saved: re-read
    assert committed + again == w.expected  # every line committed exactly once, in order
    assert "cannot be read" not in h2.stderr()


def _can_drop_dac() -> bool:
    """True if a harness process with ``--drop-dac`` is refused a file of mode 000."""
    if not sys.platform.startswith("linux"):
        return False
    with tempfile.TemporaryDirectory() as d:
        probe = os.path.join(d, "probe")
        os.close(os.open(probe, os.O_CREAT | os.O_WRONLY, 0o000))
        os.chmod(probe, 0o000)
        code = (
            f"import sys; sys.path.insert(0, {str(HARNESS.parent)!r}); import follow_harness as h; "
            f"h.drop_dac(); open({probe!r}, 'rb')"
        )
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return run.returncode != 0 and "PermissionError" in run.stderr


@pytest.mark.skipif(not _can_drop_dac() and os.environ.get("CI") != "true",
                    reason="cannot make file modes bind this user (capset unavailable)")
def test_permission_lost_and_regained(tmp_path: Path) -> None:
    """The new log after rotation is created mode 000, then fixed: one message, no crash.

    Why capabilities: CI runs as root, whom file modes do not stop. The follower process
    drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (``--drop-dac``), so the kernel's own
    permission check refuses it, exactly as it refuses an unprivileged daemon.
    """
    base = tmp_path  # owned by us: the follower, same uid without the override, may enter
    state = base / "state"
    state.mkdir()
    log = base / "mail.log"
    log.touch(0o644)
    h = Harness(state, [log], "--drop-dac")
    w = Writer(log, 1500)
    rotated = threading.Event()
    w.gate = lambda n: n < 500 or rotated.is_set()
    w.start()
    try:
        w.wait_written(500)
        os.rename(log, base / "mail.log.1")
        os.close(os.open(log, os.O_CREAT | os.O_WRONLY, 0o000))
        os.chmod(log, 0o000)
        rotated.set()
        w.reopen.set()  # root's writer may write a 000 file; the follower may not read it
        wait_for(lambda: "Permission denied" in h.stderr(), "the permission message")
        w.wait_written(1500)
        time.sleep(1.0)  # let a few retries happen; the assertions below hold either way
        os.chmod(log, 0o644)
        wait_for(lambda: set(w.expected) <= set(h.seqs()), "every line after the permission came back")
    finally:
        h.stop()
    assert sorted(h.seqs()) == w.expected
    err = h.stderr()
    assert err.count("cannot read") == 1, err
    assert err.count("readable again") == 1, err


@pytest.mark.parametrize(
    "raw",
    [
        [b"plain", b"", b"caf\xc3\xa9"],
        [b"cut in the middle \xc3", b"\xa9 of a character"],  # never merged across a newline
        [b"\xff\xfe", b"\xf0\x9f\x98", b"ok"],
        [b"crlf\r", b"plain"],  # the slow path: one CR anywhere
        [b"\0\0hole", b"x"],
        [b"mid\0dle", b"x\r\r"],
    ],
)
def test_decode_batch_equals_decoding_each_line(raw: list[bytes]) -> None:
    from logwatch.sources.lines import decode
    from logwatch.sources.lines import decode_batch

    assert decode_batch(raw) == tuple(map(decode, raw))


def test_stdin_pipe_through_a_process_ends_at_eof(tmp_path: Path) -> None:
    """``journalctl -f -o short-iso -u dovecot | relaywatch run --log -``, with a pipe for journalctl."""
    lines = [
        "2024-03-10T00:00:01+0100 mx dovecot[712]: imap-login: Login: user=<a>, method=PLAIN, rip=2001:db8::7, lip=2001:db8::1",
        "2024-03-10T00:00:02+0100 mx dovecot[712]: pop3-login: Login: user=<b>, method=PLAIN, rip=198.51.100.9, lip=192.0.2.1",
    ]
    run = subprocess.run(
        [sys.executable, str(HARNESS), "--state", str(tmp_path), "-"],
        input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=DEADLINE,
    )
    assert run.returncode == 0, run.stderr
    out = run.stdout.splitlines()
    assert out[0] == "# ready stdin"
    assert [r.split("\t", 1)[1] for r in out if r.startswith("L ")] == lines
    assert "standard input ended" in run.stderr


@pytest.mark.skipif(not _can_drop_dac() and os.environ.get("CI") != "true",
                    reason="cannot make file modes bind this user (capset unavailable)")
def test_unreadable_at_restart_resumes_from_checkpoint_once_readable(log: Path, tmp_path: Path) -> None:
    """Restarted while the log is unreadable (a lost group, a 0600 rotation): wait, then resume
    exactly at the checkpoint, so the lines written meanwhile are neither lost nor repeated."""
    state = tmp_path / "state"
    state.mkdir()
    h1 = Harness(state, [log])
    _append(log, range(0, 100))
    wait_for(lambda: len(h1.seqs()) >= 100, "100 lines")
    h1.stop()  # SIGTERM: saves its checkpoint on the way out
    _append(log, range(100, 200))
    os.chmod(log, 0o000)
    h2 = Harness(state, [log], "--drop-dac")
    try:
        wait_for(lambda: "Permission denied" in h2.stderr(), "the permission message")
        _append(log, range(200, 300))  # root's writer is not stopped by the mode
        os.chmod(log, 0o640)
        wait_for(lambda: len(h2.seqs()) >= 200, "the lines written since the checkpoint")
    finally:
        h2.stop()
    assert h1.seqs() + h2.seqs() == list(range(0, 300))
    err = h2.stderr()
    assert err.count("cannot read") == 1 and "readable again" in err and "resuming at offset" in err, err


FALLBACK = r"""
import logging, os, resource, sys, time
sys.path.insert(0, sys.argv[2])
logging.basicConfig(level=logging.INFO, format="%(message)s")
from logwatch.sources.tail import Tail
import watchdog.observers.inotify  # imported while descriptors are free
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
fill = []
try:
    while True:
        fill.append(os.open(os.devnull, os.O_RDONLY))  # every descriptor taken: inotify_init fails
except OSError:
    pass
t = Tail([sys.argv[1]], backend="auto")
for fd in fill:
    os.close(fd)
print(t.backend, flush=True)
with open(sys.argv[1], "a") as f:
    f.write("after\n")
end = time.monotonic() + 60
got = []
while "after" not in got and time.monotonic() < end:
    got += [x for b in t.poll(0.2) for x in b.lines]
t.close()
print(got, flush=True)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux only")
def test_falls_back_to_polling_when_inotify_cannot_start(log: Path) -> None:
    """No free descriptor for inotify_init (EMFILE): say why, poll instead, and still deliver."""
    run = subprocess.run(
        [sys.executable, "-c", FALLBACK, str(log), str(HARNESS.parent.parent)],
        capture_output=True, text=True, timeout=DEADLINE,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["polling", "['after']"]
    assert "inotify unavailable (" in run.stderr and "polling every 0.50s instead" in run.stderr
    # The log could not be opened either (no descriptor); "after" was written before it
    # could, and is still delivered: the end of a first start is where it was when we started.
    assert "cannot read: Too many open files" in run.stderr
