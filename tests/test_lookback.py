"""A first start reads back ``--expire`` of a log file by the lines' own times, never the whole file.

The search (``lookback.find_start``) on bytes in memory and on real files, through ``Tail``
(bytes read counted by a wrapper around ``os.pread``), and ``relaywatch run`` as a process
over a log of the last hour with ``--expire 30m``. Nothing here times anything: the cost is
measured in bytes read.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from logwatch.sources import lookback
from logwatch.sources.tail import FirstStart, Tail, _ago
from tests.daemonlab import LOGIN, Run, stamp, wait_for

GIB = 1 << 30


def login(at: float, n: int) -> str:
    """A syslog login line stamped ``at`` (local time, no year), from an address of its own."""
    return LOGIN.format(stamp=stamp(at), user=f"u{n}", ip=address(n))


def address(n: int) -> str:
    return f"198.51.100.{n}" if n < 256 else f"2001:db8::{n:x}"


def memory(data: bytes) -> tuple[Callable[[int, int], bytes], list[int]]:
    """A ``read`` over ``data`` and the list of sizes it returned."""
    sizes: list[int] = []

    def read(offset: int, size: int) -> bytes:
        got = data[offset:offset + size]
        sizes.append(len(got))
        return got
    return read, sizes


def timer(now: float) -> lookback.TimeOf:
    return lookback.line_timer(datetime.fromtimestamp(now).astimezone())


def hour_of_lines(now: float, every: float = 1.0) -> tuple[bytes, list[float]]:
    """Login lines, one each ``every`` seconds over the hour before ``now``, noise between."""
    out, times = [], []
    t = now - 3600
    n = 0
    while t <= now:
        out.append(login(t, n % 250 + 1))
        out.append(f"{stamp(t)} mx postfix/smtpd[{n}]: connect from unknown[203.0.113.{n % 250}]")
        times += [t, t]
        t += every
        n += 1
    return ("\n".join(out) + "\n").encode(), times


# -- the search, on bytes ---------------------------------------------------------------


def test_the_start_is_the_first_line_inside_the_window_and_the_search_reads_little() -> None:
    now = float(int(time.time()))
    data, times = hour_of_lines(now, every=0.25)
    read, sizes = memory(data)
    found = lookback.find_start(read, len(data), now - 1800, timer(now))
    lines = data.split(b"\n")
    before = data[:found.offset].count(b"\n")
    first = next(i for i, t in enumerate(times) if int(t) >= now - 1800)
    assert before == first  # exactly: every line before is older, the line at the offset is not
    assert lines[before].startswith(stamp(times[first]).encode())
    assert found.oldest == int(times[first]) and found.newest == int(times[-1])
    assert sum(sizes) == found.bytes_read < len(data) / 10


def test_a_file_whose_every_line_is_recent_is_read_whole() -> None:
    now = time.time()
    data = "".join(login(now - 600 + i, i) + "\n" for i in range(600)).encode()
    found = lookback.find_start(memory(data)[0], len(data), now - 1800, timer(now))
    assert found.offset == 0


def test_a_file_older_than_the_window_starts_at_its_end() -> None:
    now = time.time()
    data = "".join(login(now - 7200 + i, i) + "\n" for i in range(600)).encode()
    found = lookback.find_start(memory(data)[0], len(data), now - 1800, timer(now))
    assert (found.offset, found.oldest) == (len(data), None)
    assert found.newest is not None and found.newest < now - 1800


def test_an_empty_file() -> None:
    found = lookback.find_start(memory(b"")[0], 0, time.time() - 1800, timer(time.time()))
    assert (found.offset, found.end, found.newest, found.bytes_read) == (0, 0, None, 0)


def test_a_file_without_timestamps_starts_at_its_end_and_reads_only_its_tail() -> None:
    # Dovecot with log_timestamp = "" into a file: the lines' time is when they are read, so
    # reading them back would grant old logins as new ones.
    line = b"imap-login: Info: Login: user=<bob>, method=PLAIN, rip=192.0.2.7, lip=192.0.2.1, mpid=1\n"
    data = line * 100_000
    read, sizes = memory(data)
    found = lookback.find_start(read, len(data), time.time() - 1800, timer(time.time()))
    assert (found.offset, found.newest) == (len(data), None)
    assert sum(sizes) <= 2 * lookback.TAIL_MAX < len(data) / 4


def test_lines_without_a_time_are_skipped_while_searching() -> None:
    now = float(int(time.time()))
    out = []
    for i in range(7200):
        out.append(login(now - 7200 + i, i % 250 + 1))
        out.append("\t(a continuation line without a stamp)" if i % 3 else "\x00" * 300)
    data = ("\n".join(out) + "\n").encode()
    found = lookback.find_start(memory(data)[0], len(data), now - 1800, timer(now))
    rest = data[found.offset:]
    # The line without a time just before the first one inside is read too, rather than lost.
    assert rest.startswith(stamp(now - 1800).encode()) or rest.split(b"\n", 1)[1].startswith(stamp(now - 1800).encode())
    assert found.oldest == now - 1800


def test_year_less_stamps_across_new_year_take_the_year_the_matcher_gives_them() -> None:
    utc = timezone.utc
    now = datetime(2027, 1, 1, 0, 20, tzinfo=utc)
    out = []
    for minute in range(-60, 20):
        at = datetime.fromtimestamp(now.timestamp() + minute * 60, utc)
        out.append(f"{at:%b %e %H:%M:%S} mx dovecot: imap-login: Login: user=<u>, rip=192.0.2.{minute + 61}, "
                   "lip=192.0.2.1, mpid=1")
    data = ("\n".join(out) + "\n").encode()
    time_of = lookback.line_timer(now, tz=utc)
    found = lookback.find_start(memory(data)[0], len(data), now.timestamp() - 1800, time_of)
    assert data[found.offset:].startswith(b"Dec 31 23:50:00 ")  # not "a year ahead", not the whole file


def test_tai64n_labels_of_multilog() -> None:
    now = float(int(time.time()))

    def label(at: float) -> str:
        return f"@{(1 << 62) + int(at) + 10:016x}{0:08x}"
    data = "".join(f"{label(now - 3600 + i)} imap-login: Info: Login: user=<u>, rip=192.0.2.{i % 250}, "
                   "lip=192.0.2.1, mpid=1\n" for i in range(3600)).encode()
    found = lookback.find_start(memory(data)[0], len(data), now - 600, timer(now))
    assert data[found.offset:].startswith(label(now - 600).encode())


def test_text_a_client_controls_does_not_steer_the_search() -> None:
    # A user name that carries a stamp stands inside the line, never at its start.
    now = float(int(time.time()))
    out = []
    for i in range(3600):
        at = now - 3600 + i
        out.append(f"{stamp(at)} mx dovecot: imap-login: Disconnected (auth failed, 1 attempts): "
                   f"user=<{stamp(now)} mx dovecot: imap-login: x>, method=PLAIN, rip=192.0.2.1, lip=192.0.2.2")
    data = ("\n".join(out) + "\n").encode()
    found = lookback.find_start(memory(data)[0], len(data), now - 600, timer(now))
    assert data[found.offset:].startswith(stamp(now - 600).encode())


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (45, "45s"), (28 * 60 + 14, "28m14s"), (3723, "1h02m03s")])
def test_how_far_back_is_said(seconds: float, text: str) -> None:
    assert _ago(seconds) == text


# -- Tail on real files -----------------------------------------------------------------


@pytest.fixture
def pread_counter(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Every ``os.pread`` from here on, counted in bytes returned (a wrapper, not the code's own count)."""
    got: list[int] = []
    real = os.pread

    def counting(fd: int, size: int, offset: int) -> bytes:
        data = real(fd, size, offset)
        got.append(len(data))
        return data
    monkeypatch.setattr(os, "pread", counting)
    yield got


def read_all(tail: Tail) -> list[str]:
    lines: list[str] = []
    while True:
        batches = tail.poll(0.2)
        if not batches:
            return lines
        for b in batches:
            lines += b.lines


def test_tail_first_start_delivers_the_last_half_hour(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    now = float(int(time.time()))
    data, times = hour_of_lines(now, every=2.0)
    log = tmp_path / "mail.log"
    log.write_bytes(data)
    caplog.set_level(logging.INFO, logger="relaywatch.tail")
    tail = Tail([str(log)], backend="polling", first_start=FirstStart(1800, now))
    try:
        lines = read_all(tail)
    finally:
        tail.close()
    since = now - 1800 - lookback.SLACK
    assert len(lines) == sum(1 for t in times if int(t) >= since)
    assert lines[0].startswith(stamp(since))
    said = [r.getMessage() for r in caplog.records if "first start" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("first start: read back 31m00s (")
    assert said[0].endswith(f"of {log} to cover --expire 30m (searched "
                            f"{tail.looked_back[str(log)].bytes_read:,} bytes)")


def test_tail_without_first_start_still_begins_at_the_end(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(hour_of_lines(time.time())[0])
    tail = Tail([str(log)], backend="polling")
    try:
        assert read_all(tail) == [] and tail.looked_back == {}
    finally:
        tail.close()


def test_tail_empty_file_then_lines(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.touch()
    tail = Tail([str(log)], backend="polling", first_start=FirstStart(1800, time.time()))
    try:
        assert read_all(tail) == []
        with log.open("a") as f:
            f.write(login(time.time(), 1) + "\n")
        assert len(read_all(tail)) == 1
    finally:
        tail.close()


def test_tail_file_without_timestamps_reads_only_new_lines(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log = tmp_path / "current"
    old = "imap-login: Info: Login: user=<old>, method=PLAIN, rip=192.0.2.7, lip=192.0.2.1, mpid=1\n"
    log.write_text(old * 1000)
    caplog.set_level(logging.INFO, logger="relaywatch.tail")
    tail = Tail([str(log)], backend="polling", first_start=FirstStart(1800, time.time()))
    try:
        assert read_all(tail) == []
        with log.open("a") as f:
            f.write(old.replace("old", "new"))
        assert read_all(tail) == [old.replace("old", "new").rstrip("\n")]
    finally:
        tail.close()
    assert "carries a time relaywatch can read" in caplog.text


def sparse_gigabyte(path: Path, now: float, step: int = 64 << 10) -> list[tuple[int, float]]:
    """A 1 GiB file: a login line every ``step`` bytes over the two hours before ``now``,
    holes (NUL bytes, ended by a newline) between them. Returns (offset, time) of each line."""
    count = GIB // step
    placed = []
    with path.open("wb") as f:
        for i in range(count):
            at = now - 7200 + 7200 * i / count
            line = (login(at, i % 250 + 1) + "\n").encode()
            offset = (i + 1) * step - len(line)
            f.seek(offset - 1)
            f.write(b"\n" + line)
            placed.append((offset, at))
    assert path.stat().st_size == GIB
    return placed


def test_a_gigabyte_is_not_read_whole(tmp_path: Path, pread_counter: list[int]) -> None:
    now = float(int(time.time()))
    log = tmp_path / "mail.log"
    placed = sparse_gigabyte(log, now)
    del pread_counter[:]
    tail = Tail([str(log)], backend="polling", first_start=FirstStart(1800, now))
    try:
        found = tail.looked_back[str(log)]
    finally:
        tail.close()
    since = now - 1800 - lookback.SLACK
    first_new = next(offset for offset, at in placed if int(at) >= since)
    last_old = max(offset for offset, at in placed if int(at) < since)
    assert last_old < found.offset <= first_new  # at most the hole between them too
    assert found.bytes_read <= sum(pread_counter) < 8 << 20  # a few MiB of 1 GiB, holes included


# -- relaywatch run ---------------------------------------------------------------------


def test_first_start_authorises_exactly_the_last_half_hour(run: Callable[..., Run]) -> None:
    r = run("--expire", "30m")
    now = time.time()
    recent: set[str] = set()
    with r.log.open("w") as f:
        for n in range(1, 121):  # one login every 30 s over the last hour, each its own address
            at = now - 3600 + 30 * (n - 1)
            if abs(at - (now - 1800)) < 120:
                continue  # too close to the edge to say which side the clock puts it on
            f.write(login(at, n) + "\n")
            f.write(f"{stamp(at)} mx postfix/smtpd[{n}]: disconnect from unknown[203.0.113.{n}]\n")
            if at > now - 1800:
                recent.add(address(n))
    r.start()
    r.write(login(time.time(), 200))  # written while it starts: not lost
    wait_for(lambda: r.granted() == recent | {address(200)}, "the logins of the last 30 minutes")
    assert r.stop() == 0
    said = re.search(r"first start: read back (\d+)m\d\ds \([\d,]+ bytes\) of (\S+) to cover --expire 30m", r.errors())
    assert said is not None and 27 <= int(said[1]) <= 31 and said[2] == str(r.log)
