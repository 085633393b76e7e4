"""Where a first start begins reading a log file: far enough back to cover ``--expire``.

With no checkpoint for a ``--log`` file, relaywatch does not start at the end of it (the
clients who logged in during the last ``--expire`` would not be authorised until they log in
again) nor at its start (a year of log). It bisects the file's byte offsets by the lines'
own timestamps for the first line inside the window, and reads on from there; the ledger
refuses any login older than ``--expire`` anyway, so landing a little too early costs a few
lines read, never a grant, while landing too late would lose grants. The cost is a few
dozen reads of ``BLOCK`` bytes whatever the file's size.

Pure: ``find_start`` reads through the ``read(offset, size)`` it is given and times a line
through ``time_of``; ``open_file``-style I/O (``os.pread`` on a descriptor) is the caller's.

A line's time: its prefix parsed as the matcher parses a login's (``prefix.SOURCE``, the
``ts`` groups), else a timestamp at the very start of the line (after a TAI64N label, or
``dovecot: `` for Dovecot 1.x's own file) -- the syslog daemon's or multilog's stamp on a
line of any program. Read by ``timestamps.parse``, so year-less syslog stamps get the same
year as the matcher gives them. Text a client controls never stands at a line's start, so it
cannot steer the search; a line without a time it can read (no stamp, a NUL hole) is
skipped. Lines are assumed to be written in time order, as a log is; a few out of order at
the boundary only move the start by those lines (``SLACK`` reads a minute more).

A file in which no line near the end has a time (Dovecot with ``log_timestamp = ""`` into
a file without a stamping logger) is not searched: its lines' time is when they are read,
so reading any of them back would grant old logins as new ones. It starts at its end.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, tzinfo

from logwatch import prefix, timestamps

#: Bytes read per call at most; a probe starts with ``FIRST`` and doubles.
BLOCK = 64 << 10
FIRST = 4 << 10
#: Bytes a probe scans forward from its offset for a line with a time before it gives up
#: (a region of lines without one, such as a NUL hole, counts as inside the window).
PROBE_MAX = 1 << 20
#: Bytes scanned back from the end for the last line with a time: none there, no search.
TAIL_MAX = 1 << 20
#: Bytes of a line's start examined for its time (the longest prefix is far shorter).
HEAD = 512
#: Seconds read back beyond ``--expire``: lines a little out of order at the boundary.
SLACK = 60.0

_SOURCE = re.compile(prefix.SOURCE)
_TS_GROUPS = tuple(_SOURCE.groupindex[name] for name in prefix.TS_GROUPS)
_LEADING = re.compile(f"(?:{prefix.TAI64N} )?(?:dovecot: )?({prefix.TIMESTAMP})[ :]")

Read = Callable[[int, int], bytes]
TimeOf = Callable[[bytes], "float | None"]


def stamp_of(head: str) -> str | None:
    """The timestamp text of a line (its first ``HEAD`` characters), or None."""
    m = _SOURCE.match(head)
    if m is not None:
        for group in _TS_GROUPS:
            if m[group]:
                return str(m[group])
    m = _LEADING.match(head)
    return m[1] if m is not None else None


def line_timer(now: datetime, tz: tzinfo | None = None,
               tai_offset: float = timestamps.TAI_OFFSET) -> TimeOf:
    """A ``time_of`` for ``find_start``: a line's bytes to seconds since the epoch, or None.

    Args:
        now: an aware datetime, the reference for year-less stamps (``timestamps.parse``).
        tz, tai_offset: as ``timestamps.parse`` takes them.
    """
    def time_of(line: bytes) -> float | None:
        stamp = stamp_of(line[:HEAD].decode("utf-8", "replace"))
        if stamp is None:
            return None
        moment = timestamps.parse(stamp, now, tz, tai_offset)
        return None if moment is None else moment.timestamp()
    return time_of


@dataclass(frozen=True)
class Start:
    """Where to begin, and what the search saw.

    Attributes:
        offset: a line's start (0, or just after a newline): read from here.
        end: the end searched to (just after the last complete line at start).
        oldest: the time of the first line with a time at or after ``offset`` (None: no
            such line before ``end``).
        newest: the time of the last line with a time before ``end`` (None: none found
            in the last ``TAIL_MAX`` bytes, so ``offset == end``).
        bytes_read: what the search read, all calls of ``read`` together.
    """

    offset: int
    end: int
    oldest: float | None
    newest: float | None
    bytes_read: int


class _Counting:
    def __init__(self, read: Read) -> None:
        self._read = read
        self.total = 0

    def __call__(self, offset: int, size: int) -> bytes:
        data = self._read(offset, size)
        self.total += len(data)
        return data


def _lines(read: Read, start: int, limit: int, budget: int) -> Iterator[tuple[int, int, bytes]]:
    """The complete lines that start at or after ``start`` (a line's start) and end by ``limit``.

    Yields ``(line start, next line's start, the line's first HEAD bytes)``; stops once
    ``budget`` bytes have been read without the caller stopping it.
    """
    pos = line_at = start
    head = b""
    size = FIRST
    while pos < limit and pos - start < budget:
        block = read(pos, min(size, limit - pos))
        size = min(2 * size, BLOCK)
        if not block:
            return
        i = 0
        while True:
            nl = block.find(b"\n", i)
            if nl < 0:
                if len(head) < HEAD:
                    head += block[i:i + HEAD - len(head)]
                break
            if len(head) < HEAD:
                head += block[i:min(nl, i + HEAD - len(head))]
            yield line_at, pos + nl + 1, head
            line_at, head, i = pos + nl + 1, b"", nl + 1
        pos += len(block)


def _next_line(read: Read, offset: int, limit: int) -> int | None:
    """The start of the first line at or after ``offset``, or None before ``limit``."""
    if offset == 0:
        return 0
    pos = offset - 1  # a newline just before ``offset`` makes it a line's start
    size = FIRST
    while pos < min(limit, offset - 1 + PROBE_MAX):
        block = read(pos, min(size, limit - pos))
        size = min(2 * size, BLOCK)
        if not block:
            return None
        nl = block.find(b"\n")
        if nl >= 0:
            return pos + nl + 1
        pos += len(block)
    return None


def _probe(read: Read, time_of: TimeOf, offset: int, limit: int) -> tuple[int, int, float] | None:
    """The first line with a time at or after ``offset``: (start, end, time); None if none
    within ``PROBE_MAX`` bytes or before ``limit``."""
    start = _next_line(read, offset, limit)
    if start is None:
        return None
    for at, after, head in _lines(read, start, limit, PROBE_MAX):
        t = time_of(head)
        if t is not None:
            return at, after, t
    return None


def _last_time(read: Read, time_of: TimeOf, end: int) -> float | None:
    """The time of the last line with one before ``end``, looking back at most ``TAIL_MAX``."""
    hi = end
    while hi > 0 and end - hi < TAIL_MAX:
        lo = max(0, hi - BLOCK)
        start = _next_line(read, lo, hi)
        if start is None or start >= hi:
            hi = lo  # no line starts in this block: part of one longer than a block
            continue
        times = [t for _, _, head in _lines(read, start, hi, hi - start) if (t := time_of(head)) is not None]
        if times:
            return times[-1]
        hi = start
    return None


def find_start(read: Read, end: int, since: float, time_of: TimeOf) -> Start:
    """The offset of the first line (roughly) whose time is at or after ``since``.

    Args:
        read: ``read(offset, size)`` returns up to ``size`` bytes of the file at ``offset``.
        end: where the search ends: just after the last complete line at start.
        since: seconds since the epoch: ``now - --expire`` (``SLACK`` is the caller's).
        time_of: a line's bytes (no newline, its first ``HEAD`` bytes) to its time or None.

    Returns:
        ``Start``. The bisection keeps two bounds: every line with a time before ``lo``
        is older than ``since`` (lines in time order), and the window starts before ``hi``
        or lines without a time stand there (read too, rather than lose a login).
    """
    counting = _Counting(read)
    newest = _last_time(counting, time_of, end)
    if newest is None:
        return Start(end, end, None, None, counting.total)
    if newest < since:
        return Start(end, end, None, newest, counting.total)
    lo, hi = 0, end
    while hi - lo > BLOCK:
        mid = (lo + hi) // 2
        found = _probe(counting, time_of, mid, hi)
        if found is None or found[2] >= since:
            hi = mid  # the window starts before mid (or mid is in lines without a time)
        else:
            lo = found[1]  # an old line: the window starts after it
    # Within the last block (or a region without times): step over the lines still too old.
    start, oldest = lo, None
    for _at, after, head in _lines(counting, lo, end, hi - lo + PROBE_MAX):
        t = time_of(head)
        if t is None:
            continue
        if t >= since:
            oldest = t
            break
        start = after
    return Start(start, end, oldest, newest, counting.total)
