"""Follow log files across rotation, truncation and restarts, handing on complete lines in batches.

The follower reads; watchdog only wakes it. Every wake-up (an inotify event, a polling
observer's event, or a recheck timer as a safety net) runs the same sweep, which for every
followed path:

1. compares ``stat(path)`` with the open file: a different file means rename+create,
   delete+recreate or a replaced parent directory. The old file is kept open and drained
   until it has been quiet for a grace period, because syslog daemons and Dovecot keep
   writing to it until they reopen;
2. checks the live file for truncation: its size below our offset, or a different first
   line (copytruncate under a writer without O_APPEND leaves a NUL hole and grows past
   our offset at once). It restarts at 0, and first drains the copy logrotate made, from
   our offset, if it is found next to the log;
3. reads what was appended, through ``LineSplitter``: only complete lines, each capped.

A batch carries decoded lines and the position to resume from after them. The caller acts
on a batch first and saves the checkpoint after, so a crash re-reads a line rather than
losing one. Opening a file that cannot be read (permissions, a vanished directory) is
retried with backoff and reported once; nothing here raises for a log that misbehaves.

A file without a checkpoint starts at its end, or, with ``first_start`` (the daemon passes
``--expire``), at the first line inside ``--expire`` before its end, found by bisection on
the lines' own times (``lookback``): only the live file, never a rotated predecessor.

Why not trust events alone: inotify misses writes on NFS and events for a directory that
was replaced; the recheck timer (``RECHECK`` seconds) bounds how late such a change is seen.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.polling import PollingObserver

from logwatch import checkpoint as ckpt
from logwatch.checkpoint import FilePosition, LogCheckpoint
from logwatch.durations import format_duration
from logwatch.reporter import Reporter
from logwatch.sources import Batch, LineSource, lookback
from logwatch.sources.lines import DEFAULT_CAP, LineSplitter, decode_batch
from logwatch.sources.stdin import StdinSource

log = logging.getLogger("relaywatch.tail")

#: Bytes asked of the kernel per read: 64 KiB reads stay in the CPU's cache while they are
#: split and decoded (catch-up 3.7 M lines/s against 2.7 M with 1 MiB, bench_tail.py).
CHUNK = 1 << 16
#: Bytes read from one file per sweep, so one busy log cannot starve the others and a turn
#: of the daemon's loop stays short while it catches up (64 KiB: about 500 lines; with
#: 4 MiB a catch-up turn held the loop for a second, expiries and revokes waiting behind it).
BUDGET = 1 << 16
#: Bytes of the first line that make a file's fingerprint.
FINGERPRINT_BYTES = 4096
#: Seconds a rotated file must be quiet before it is closed.
GRACE = 5.0
#: Seconds between sweeps when no event arrives (also the polling observer's interval).
RECHECK = 0.5
#: Retry delays for a file that cannot be opened: start, doubling up to the maximum.
BACKOFF_MIN, BACKOFF_MAX = 0.25, 8.0
#: Rotated names that are never read back: compressed by logrotate, not lines.
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".Z", ".lzma")
#: A log directory's live file (daemontools multilog, runit svlogd, s6-log) and its rotated
#: files: ``@`` + TAI64N of the rotation + ``.s`` (complete) or ``.u`` (cut by a crash). Their
#: names sort in rotation order.
LOGDIR_CURRENT = "current"
_LOGDIR_ROTATED = re.compile(r"@[0-9a-f]{24}\.[su]\Z")

Backend = Literal["auto", "inotify", "polling"]


def fingerprint(first: bytes) -> str:
    """Return the fingerprint of a file whose first line (capped) is ``first``; "" if empty."""
    return hashlib.blake2b(first, digest_size=16).hexdigest() if first else ""


def _first_line(fd: int) -> bytes:
    """The first line of the open file, newline included, capped at FINGERPRINT_BYTES.

    Empty while the file holds no complete line shorter than the cap: that line may still
    be growing, and a fingerprint taken of half of it would never match again.
    """
    head = os.pread(fd, FINGERPRINT_BYTES, 0)
    end = head.find(b"\n")
    if end >= 0:
        return head[: end + 1]
    return head if len(head) == FINGERPRINT_BYTES else b""


@dataclass(frozen=True)
class FirstStart:
    """How far a first start (no checkpoint) reads back: ``--expire`` before ``now``.

    Attributes:
        expire: seconds (``--expire``).
        now: seconds since the epoch at start: the window is ``now - expire`` on (less
            ``lookback.SLACK``), and year-less stamps take their year from it.
    """

    expire: float
    now: float


def _ago(seconds: float) -> str:
    """``28m14s``, ``1h02m03s``, ``45s``: how far a first start looked back."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class _Open:
    """One open file being read: its identity, read position and partial line."""

    def __init__(self, fd: int, st: os.stat_result, offset: int, cap: int, now: float) -> None:
        self.fd = fd
        self.device, self.inode = st.st_dev, st.st_ino
        self.cap = cap
        self.first = _first_line(fd)
        self.cut_reported = 0
        self.last_data = now
        self._seek(offset)

    def _seek(self, offset: int) -> None:
        os.lseek(self.fd, offset, os.SEEK_SET)
        self.start = offset
        self.pos = offset  # the next byte to read
        self.splitter = LineSplitter(self.cap)

    @property
    def offset(self) -> int:
        """Just past the newline of the last line handed on: where to resume."""
        return self.start + self.splitter.consumed

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.first)

    def position(self) -> FilePosition:
        return FilePosition(self.device, self.inode, self.offset, self.fingerprint)

    def restart(self) -> None:
        """Read again from 0: the file was truncated or rewritten under us."""
        self.first = _first_line(self.fd)
        self._seek(0)

    def replaced_in_place(self) -> str | None:
        """Why the file no longer holds what we read (truncated or rewritten), or None."""
        size = os.fstat(self.fd).st_size
        read_to = self.pos
        if size < read_to:
            return f"truncated to {size} bytes, below the {read_to} already read"
        if size == read_to:
            return None  # nothing new: skip the first-line check on an idle file
        if not self.first:
            self.first = _first_line(self.fd)
            return None
        if os.pread(self.fd, len(self.first), 0) != self.first:
            return "its first line changed (copytruncate, then written past our offset)"
        return None

    def read(self, budget: int) -> list[str]:
        """Return the complete lines appended since the last read, up to ``budget`` bytes.

        Each read's lines are decoded at once, while they are still in the CPU cache:
        decoding a whole batch afterwards halves the catch-up speed.
        """
        lines: list[str] = []
        got = 0
        splitter = self.splitter
        while got < budget:
            data = os.read(self.fd, CHUNK)
            if not data:
                break
            got += len(data)
            full = len(data) == CHUNK
            self.pos += len(data)
            lines += decode_batch(splitter.feed(data))
            if not full:
                break
        if not self.first and got:
            self.first = _first_line(self.fd)
        return lines

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _open(path: str) -> tuple[int, os.stat_result]:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise IsADirectoryError(0, "not a regular file", path) if stat.S_ISDIR(st.st_mode) else OSError(
                0, "not a regular file", path
            )
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _end_offset(fd: int, size: int) -> int:
    """Offset just past the last newline: where a first start begins.

    Why not ``size``: a line being written at that moment would be handed on as a headless
    fragment; starting after the last newline hands it on whole once it is complete.
    """
    pos = size
    step = 65536
    while pos > 0:
        lo = max(0, pos - step)
        block = os.pread(fd, pos - lo, lo)
        nl = block.rfind(b"\n")
        if nl >= 0:
            return lo + nl + 1
        pos = lo
    return 0


class _Follower:
    """Follow one path: its live file and any rotated files still being drained."""

    def __init__(self, path: str, resume: LogCheckpoint | None, cap: int, grace: float, now: float,
                 first: FirstStart | None = None) -> None:
        self.path = path
        self.first_start = first
        #: What the first start's look back found (None: not done, or started at the end).
        self.looked_back: lookback.Start | None = None
        self.directory, self.base = os.path.split(path)
        self.cap = cap
        self.grace = grace
        self.live: _Open | None = None
        self.draining: list[_Open] = []
        self.report = Reporter(log)
        self.retry_at = 0.0
        self.backoff = BACKOFF_MIN
        self.unreadable: str | None = None  # the error last reported, while it lasts
        self.missing_said = False
        self.searched = False  # for a checkpointed file missing at start, among rotated names
        self.end_seen: tuple[int, int] | None = None  # (inode, size) of an unreadable first start
        self.cut_total = 0
        #: The position of a live file that was renamed away, until the next one appears.
        self._retired: FilePosition | None = None
        #: How to position the next live file: "end" on a first start, a checkpointed
        #: position to look for, or 0 (everything in a file that appeared later is new).
        self.want: Literal["end"] | FilePosition | int = "end"
        if resume is not None:
            self._resume(resume, now)

    # -- start-up -----------------------------------------------------------------------

    def _resume(self, resume: LogCheckpoint, now: float) -> None:
        *rotated, current = resume.files
        for pos in rotated:
            # multilog's rotated file is a copy (the processor's output): its first line tells it.
            if not (self._find_rotated(pos, now, by_inode=True)
                    or (self.base == LOGDIR_CURRENT and self._find_rotated(pos, now, by_inode=False))):
                self._gone(pos)
        self.want = current

    def _siblings(self) -> Iterable[str]:
        """Rotated versions of our log in its directory (mail.log.1, mail.log-20240310...)."""
        try:
            names = os.listdir(self.directory or ".")
        except OSError:
            return []
        return sorted(
            os.path.join(self.directory, n)
            for n in names
            if (n != self.base and n.startswith(self.base) and not n.endswith(_COMPRESSED))
            or (self.base == LOGDIR_CURRENT and _LOGDIR_ROTATED.match(n))
        )

    def _drain_after(self, old: FilePosition, now: float) -> None:
        """In a log directory, drain the files rotated after the one that held ``old`` (found
        by inode, or by first line: multilog's rotated file is its processor's copy)."""
        for name in self._siblings():
            try:
                st = os.stat(name)
                if st.st_ino != old.inode:
                    if not old.fingerprint:
                        continue
                    with open(name, "rb") as f:
                        if fingerprint(_first_line(f.fileno())) != old.fingerprint:
                            continue
            except OSError:
                continue
            self._drain_newer(name, now)
            return

    def _drain_newer(self, name: str, now: float) -> None:
        """In a log directory (``DIR/current``), drain from their start the files rotated
        after ``name``: a multilog ``s4096`` rotates many times while relaywatch is down, or
        between two sweeps, and every one of them holds lines not read yet."""
        if self.base != LOGDIR_CURRENT or not _LOGDIR_ROTATED.match(os.path.basename(name)):
            return
        taken = {f.inode for f in self.draining}
        if self.live is not None:
            taken.add(self.live.inode)
        for other in self._siblings():
            if os.path.basename(other) <= os.path.basename(name) or not _LOGDIR_ROTATED.match(os.path.basename(other)):
                continue
            try:
                fd, st = _open(other)
            except OSError as exc:
                log.warning("%s: cannot open rotated %s: %s", self.path, other, exc.strerror)
                continue
            if st.st_ino in taken:
                os.close(fd)
                continue
            self.draining.append(_Open(fd, st, 0, self.cap, now))
            taken.add(st.st_ino)
            log.info("%s: reading rotated file %s from its start", self.path, other)

    def _find_rotated(self, pos: FilePosition, now: float, by_inode: bool) -> bool:
        """Open the rotated file that holds ``pos`` and drain it from ``pos.offset``.

        By inode: the file was renamed (logrotate ``create``). Otherwise by first line
        alone: a copy (logrotate ``copytruncate``) holds the same first line and, up to
        the moment of the copy, the lines after our offset.
        """
        if not by_inode and not pos.fingerprint:
            return False  # no first line to recognise a copy by
        taken = {f.inode for f in self.draining}
        if self.live is not None:
            taken.add(self.live.inode)
        for name in self._siblings():
            try:
                st = os.stat(name)
            except OSError:
                continue
            if by_inode and st.st_ino != pos.inode:
                continue
            if st.st_size < pos.offset or st.st_ino in taken or (not by_inode and st.st_ino == pos.inode):
                continue
            try:
                fd, st = _open(name)
            except OSError as exc:
                log.warning("%s: cannot open rotated %s to finish it: %s", self.path, name, exc.strerror)
                continue
            if fingerprint(_first_line(fd)) != pos.fingerprint:
                os.close(fd)
                continue
            f = _Open(fd, st, pos.offset, self.cap, now)
            self.draining.append(f)
            log.info("%s: finishing rotated file %s from offset %d", self.path, name, pos.offset)
            self._drain_newer(name, now)
            return True
        return False

    # -- the sweep ----------------------------------------------------------------------

    def sweep(self, now: float, budget: int) -> tuple[list[Batch], bool]:
        """Check identity, then read rotated files and the live one.

        Returns the batches and whether a file still has more to read than the budget let.
        """
        self._check_path(now)
        batches: list[Batch] = []
        more = False
        for f in list(self.draining):
            try:
                lines = f.read(budget)
            except OSError as exc:
                self.report.say(
                    "drain-error", logging.WARNING, "%s: reading rotated file (inode %d) failed: %s; closing it",
                    self.path, f.inode, exc.strerror, now=now,
                )
                self._close_rotated(f, now, reason="error")
                continue
            if lines:
                f.last_data = now
                batches.append(self._batch(f, lines, now))
                if self._has_more(f):  # the log's order: this file's rest before any newer line
                    return batches, True
            elif now - f.last_data >= self.grace:
                self._close_rotated(f, now, reason="quiet")
        live = self.live
        if live is not None:
            try:
                why = live.replaced_in_place()
                if why is not None:
                    # Read a copy logrotate made (now draining) before the new lines.
                    self._truncated(live, why, now)
                    return batches, True
                lines = live.read(budget)
            except OSError as exc:
                self.report.say(
                    "read-error", logging.WARNING, "%s: read failed: %s; reopening", self.path, exc.strerror, now=now
                )
                self._retire_live(now)
                return batches, more
            if lines:
                live.last_data = now
                batches.append(self._batch(live, lines, now))
                more = more or self._has_more(live)
        return batches, more

    @staticmethod
    def _has_more(f: _Open) -> bool:
        try:
            return os.fstat(f.fd).st_size > f.pos
        except OSError:
            return False

    def _batch(self, f: _Open, lines: list[str], now: float) -> Batch:
        if f.splitter.cut > f.cut_reported:
            self.cut_total += f.splitter.cut - f.cut_reported
            f.cut_reported = f.splitter.cut
            self.report.say(
                "cut", logging.WARNING,
                "%s: a line longer than %d bytes was cut to that length (%d so far)",
                self.path, self.cap, self.cut_total, now=now,
            )
        return Batch(self.path, tuple(lines), f.position(), self.checkpoint())

    def checkpoint(self) -> LogCheckpoint | None:
        files = [f.position() for f in self.draining]
        if self.live is not None:
            files.append(self.live.position())
        elif isinstance(self.want, FilePosition):
            files.append(self.want)  # not reopened yet: keep what we were told
        if not files:
            return None
        return LogCheckpoint(self.path, tuple(files))

    def open_now(self, now: float) -> None:
        """Open the live file (or note it missing) without reading: fixes the start position."""
        self._check_path(now)

    def _check_path(self, now: float) -> None:
        """Notice rotation, deletion or a vanished directory; open the live file if due."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self.live is not None:
                # Part of every rename rotation: the new file is usually a moment away.
                log.info(
                    "%s: removed or renamed; draining the old file until quiet for %gs, waiting for a new one",
                    self.path, self.grace,
                )
                self._retired = self.live.position()
                self._retire_live(now)
                self.missing_said = True
            elif not self.missing_said:
                log.warning("%s: does not exist; waiting for it to appear", self.path)
                self.missing_said = True
            if self.want == "end":
                self.want = 0  # it will appear after we started: all of it is new
            elif isinstance(self.want, FilePosition) and not self.searched:
                self.searched = True  # once: a directory listing per sweep would cost too much
                if self._find_rotated(self.want, now, by_inode=True):
                    self.want = 0  # renamed while we were stopped, no new file yet: finish the old one
            return
        except OSError as exc:
            # A directory we may not search: the live file (if any) is still readable.
            if self.live is None:
                self._unreadable(exc, now)
            return
        if self.live is not None:
            if (st.st_dev, st.st_ino) == (self.live.device, self.live.inode):
                return
            log.info(
                "%s: replaced by a new file (inode %d); draining the old one until quiet for %gs",
                self.path, st.st_ino, self.grace,
            )
            old = self.live.position()
            self._retire_live(now)
            self.want = 0
            if self.base == LOGDIR_CURRENT:  # rotated more than once since the last sweep?
                self._drain_after(old, now)
        if now < self.retry_at:
            return
        self._open_live(now, st)

    def _open_live(self, now: float, seen: os.stat_result) -> None:
        try:
            fd, st = _open(self.path)
        except FileNotFoundError:
            return  # gone between stat and open: the next sweep sees it
        except OSError as exc:
            if self.want == "end" and self.end_seen is None:
                # A first start we cannot read yet: its end is now, not when we can read.
                self.end_seen = (seen.st_ino, seen.st_size)
            self._unreadable(exc, now)
            return
        if self.unreadable is not None:
            log.info("%s: readable again", self.path)
            self.unreadable = None
        if self.missing_said:
            log.info("%s: appeared (inode %d)", self.path, st.st_ino)
            self.missing_said = False
        if self._retired is not None and self.base == LOGDIR_CURRENT:
            self._drain_after(self._retired, now)  # rotated more than once while it was missing?
        self._retired = None
        self.backoff = BACKOFF_MIN
        want = self.want
        if want == "end":
            if self.end_seen is None:
                offset = _end_offset(fd, st.st_size)
            elif self.end_seen[0] == st.st_ino:
                offset = _end_offset(fd, min(self.end_seen[1], st.st_size))
            else:
                offset = 0  # replaced since we started: all of it is new
            if self.first_start is not None and (self.end_seen is None or self.end_seen[0] == st.st_ino):
                offset = self._look_back(fd, offset, self.first_start)
            else:
                log.info("%s: first start, reading from its end (offset %d)", self.path, offset)
        elif isinstance(want, FilePosition):
            offset = self._resume_offset(fd, st, want, now)
        else:
            offset = want
            log.info("%s: reading inode %d from offset %d", self.path, st.st_ino, offset)
        self.live = _Open(fd, st, offset, self.cap, now)
        self.want = 0

    def _look_back(self, fd: int, end: int, first: FirstStart) -> int:
        """Where a first start reads from: the first line inside ``--expire`` (``lookback``).

        Only the live file is searched, never a rotated predecessor (``mail.log.1``): a first
        start happens once per install, the predecessor may be compressed or named by date,
        and a POP-before-SMTP client checks its mail every few minutes, so one whose login
        is in the predecessor is authorised again at its next check. Said when it matters.
        """
        def read(offset: int, size: int) -> bytes:
            return os.pread(fd, size, offset)

        time_of = lookback.line_timer(datetime.fromtimestamp(first.now).astimezone())
        found = lookback.find_start(read, end, first.now - first.expire - lookback.SLACK, time_of)
        self.looked_back = found
        expire = format_duration(first.expire)
        if found.newest is None:
            log.info("%s: first start: no line in its last %d bytes carries a time relaywatch can read (no "
                     "timestamps?); reading from its end (offset %d), as lines without a time would be taken "
                     "as new", self.path, min(end, lookback.TAIL_MAX), end)
        elif found.offset == end:
            log.info("first start: nothing of %s is within --expire %s (its last line is %s old); reading from "
                     "its end (offset %d)", self.path, expire, _ago(first.now - found.newest), end)
        else:
            back = _ago(first.now - found.oldest) if found.oldest is not None else "?"
            log.info("first start: read back %s (%s bytes) of %s to cover --expire %s (searched %s bytes)",
                     back, f"{end - found.offset:,}", self.path, expire, f"{found.bytes_read:,}")
            if found.offset == 0 and found.oldest is not None and first.now - found.oldest < first.expire:
                log.info("%s: its first line is only %s old: logins before it (if any, in the rotated file) "
                         "are not read back (such a client gets its grant at its next login)",
                         self.path, _ago(first.now - found.oldest))
        return found.offset

    def _resume_offset(self, fd: int, st: os.stat_result, want: FilePosition, now: float) -> int:
        # The device is not compared: LVM, NFS and btrfs may number it differently after a
        # reboot. Inode and first line together tell the same file from a new one.
        same = st.st_ino == want.inode and fingerprint(_first_line(fd)) == want.fingerprint
        if same and st.st_size >= want.offset:
            log.info("%s: resuming at offset %d", self.path, want.offset)
            return want.offset
        # Rotated, replaced or truncated while we were stopped. The lines after our offset
        # may live on in a renamed file or a copy: finish that first, then read the new one.
        found = self._find_rotated(want, now, by_inode=True) or self._find_rotated(want, now, by_inode=False)
        if not found and want.offset > 0:
            self._gone(want)
        log.info("%s: changed while stopped; reading the current file from the start", self.path)
        return 0

    def _gone(self, pos: FilePosition) -> None:
        log.warning(
            "%s: the file read up to offset %d (inode %d) is gone (deleted or compressed); "
            "lines written to it after that offset, if any, cannot be read",
            self.path, pos.offset, pos.inode,
        )

    def _unreadable(self, exc: OSError, now: float) -> None:
        if self.unreadable != exc.strerror:
            log.warning(
                "%s: cannot read: %s; retrying with backoff (up to %.0fs)", self.path, exc.strerror, BACKOFF_MAX
            )
            self.unreadable = exc.strerror
        self.retry_at = now + self.backoff
        self.backoff = min(self.backoff * 2, BACKOFF_MAX)

    def _retire_live(self, now: float) -> None:
        if self.live is not None:
            self.live.last_data = now
            self.draining.append(self.live)
            self.live = None

    def _truncated(self, f: _Open, why: str, now: float) -> None:
        self.report.say("truncated", logging.WARNING, "%s: %s; reading it from the start", self.path, why, now=now)
        old = f.position()
        f.restart()
        # logrotate's copytruncate copied the file before truncating it: the copy holds
        # the lines between our offset and the copy. Finish it before the new lines.
        if old.offset > 0 and old.fingerprint and not self._find_rotated(old, now, by_inode=False):
            log.info(
                "%s: no uncompressed copy with its first line found; lines written between our last read "
                "(offset %d) and the truncation, if any, were not read",
                self.path, old.offset,
            )

    def _close_rotated(self, f: _Open, now: float, reason: str) -> None:
        if f.splitter.pending:
            log.info(
                "%s: rotated file (inode %d) ended in an incomplete line of %d bytes; dropped",
                self.path, f.inode, f.splitter.pending,
            )
        if reason == "quiet":
            log.info(
                "%s: closed rotated file (inode %d) at offset %d after %gs quiet",
                self.path, f.inode, f.offset, self.grace,
            )
        f.close()
        self.draining.remove(f)

    def close(self) -> None:
        """Close the files but keep their positions: ``checkpoint()`` still answers."""
        for f in self.draining:
            f.close()
        if self.live is not None:
            self.live.close()


class _Waker(FileSystemEventHandler):
    """Wake the reader on any event that may concern a followed log or its directory."""

    def __init__(self, wake: threading.Event, prefixes: tuple[str, ...], directories: frozenset[str]) -> None:
        self.wake = wake
        self.prefixes = prefixes
        self.directories = directories

    def dispatch(self, event: FileSystemEvent) -> None:
        for p in (event.src_path, getattr(event, "dest_path", "")):  # watchdog 2.2 (Debian 12): only moves have one
            if not p:
                continue
            p = os.fsdecode(p)
            if p.startswith(self.prefixes) or p in self.directories:
                self.wake.set()
                return


class Tail:
    """Follow one or more log files; the ``LineSource`` for ``--log PATH``.

    Args:
        paths: the logs to follow.
        resume: saved checkpoints by path (see ``checkpoint.load``); a path without one
            starts at the end of its file, or ``first_start.expire`` back from it.
        backend: "auto" (inotify where available, else polling), "inotify" or "polling".
            Polling is for file systems where inotify sees nothing (NFS, some FUSE).
        cap: the most bytes kept of one line.
        grace: seconds a rotated file must be quiet before it is closed.
        recheck: seconds between sweeps when no event comes.
        first_start: for a path without a checkpoint, read back this far (``lookback``);
            None starts at its end.
    """

    def __init__(
        self,
        paths: Iterable[str],
        resume: Mapping[str, LogCheckpoint | None] | None = None,
        *,
        backend: Backend = "auto",
        cap: int = DEFAULT_CAP,
        grace: float = GRACE,
        recheck: float = RECHECK,
        first_start: FirstStart | None = None,
    ) -> None:
        resume = {os.path.abspath(p): cp for p, cp in (resume or {}).items()}
        now = time.monotonic()
        self._followers = []
        for p in dict.fromkeys(os.path.abspath(p) for p in paths):
            self._followers.append(_Follower(p, resume.get(p), cap, grace, now, first_start))
        if not self._followers:
            raise ValueError("no log to follow")
        self.recheck = recheck
        self._wake = threading.Event()
        dirs = frozenset(f.directory for f in self._followers)
        self._handler = _Waker(self._wake, tuple(os.path.join(f.directory, f.base) for f in self._followers), dirs)
        self._watches: dict[str, tuple[tuple[int, int], ObservedWatch] | None] = dict.fromkeys(sorted(dirs))
        # Watch first, then open: a change between the two still wakes the first poll.
        self._observer, self.backend = self._start_observer(backend)
        log.info("following %s with %s", ", ".join(f.path for f in self._followers), self.backend)
        try:
            for f in self._followers:
                f.open_now(now)  # fix every start position before the caller writes anything
        except BaseException:
            self._observer.stop()
            for f in self._followers:
                f.close()
            raise
        self._next_recheck = 0.0
        self._closed = False

    def _start_observer(self, backend: Backend) -> tuple[BaseObserver, str]:
        if backend in ("auto", "inotify"):
            try:
                from watchdog.observers.inotify import InotifyObserver

                observer: BaseObserver = InotifyObserver(timeout=self.recheck)
                observer.start()
                try:
                    self._schedule_all(observer, strict=True)
                except BaseException:
                    observer.stop()
                    observer.join()
                    raise
                return observer, "inotify"
            except Exception as exc:  # ImportError off Linux, OSError when out of watches
                if backend == "inotify":
                    raise
                why = getattr(exc, "strerror", None) or str(exc)
                log.warning("inotify unavailable (%s); polling every %.2fs instead", why, self.recheck)
        observer = PollingObserver(timeout=self.recheck)
        observer.start()
        self._schedule_all(observer, strict=False)
        return observer, "polling"

    def _schedule_all(self, observer: BaseObserver, strict: bool) -> None:
        for d in self._watches:
            self._schedule(observer, d, strict)

    def _schedule(self, observer: BaseObserver, directory: str, strict: bool) -> None:
        """Watch ``directory`` (not recursively). A missing one is retried at each recheck.

        With ``strict``, an error other than "missing" or "denied" propagates: it means
        inotify itself is out of watches or instances, and polling should take over.
        """
        try:
            st = os.stat(directory)
            watch = observer.schedule(self._handler, directory, recursive=False)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            self._watches[directory] = None
            return
        except OSError:
            if strict:
                raise
            self._watches[directory] = None
            return
        self._watches[directory] = ((st.st_dev, st.st_ino), watch)

    def _recheck_watches(self) -> None:
        """Re-aim a watch whose directory was replaced or appeared (inotify watches inodes)."""
        for d, held in list(self._watches.items()):
            try:
                st = os.stat(d)
                ident: tuple[int, int] | None = (st.st_dev, st.st_ino)
            except OSError:
                ident = None
            if held is not None and held[0] == ident:
                continue
            if held is not None:
                try:
                    self._observer.unschedule(held[1])
                except (KeyError, OSError):
                    pass
                self._watches[d] = None
            if ident is not None:
                self._schedule(self._observer, d, strict=False)
                self._wake.set()

    @property
    def finished(self) -> bool:
        return False

    def wake(self) -> None:
        """End a ``poll`` that is waiting, from another thread (``both.Both``: the journal changed)."""
        self._wake.set()

    def poll(self, timeout: float) -> list[Batch]:
        deadline = time.monotonic() + max(0.0, timeout)
        while not self._closed:
            self._wake.clear()
            now = time.monotonic()
            if now >= self._next_recheck:
                self._recheck_watches()
                self._next_recheck = now + self.recheck
            batches: list[Batch] = []
            more = False
            for f in self._followers:
                got, again = f.sweep(now, BUDGET)
                batches += got
                more = more or again
            if more:
                self._wake.set()
            if batches:
                return batches
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            self._wake.wait(min(remaining, max(0.0, self._next_recheck - time.monotonic())))
        return []

    @property
    def looked_back(self) -> dict[str, lookback.Start]:
        """What each first start's look back found, by path (``FirstStart``)."""
        return {f.path: f.looked_back for f in self._followers if f.looked_back is not None}

    def checkpoints(self) -> list[LogCheckpoint]:
        out = []
        for f in self._followers:
            cp = f.checkpoint()
            if cp is not None:
                out.append(cp)
        return out

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._observer.stop()
        self._observer.join(timeout=5)
        for f in self._followers:
            f.close()


def open_source(
    logs: Iterable[str],
    state_dir: str | os.PathLike[str] | None = None,
    *,
    backend: Backend = "auto",
    cap: int = DEFAULT_CAP,
    grace: float = GRACE,
    first_start: FirstStart | None = None,
) -> LineSource:
    """Return the source for ``--log`` arguments: files to follow, or ``-`` alone.

    Args:
        logs: the paths, or ["-"] for standard input.
        state_dir: where checkpoints live; None starts every file at its end (or
            ``first_start`` back from it).
        first_start: how far back a file without a checkpoint is read (``--expire``);
            None: from its end.
    Raises:
        ValueError: ``-`` combined with files, or no log at all.
    """
    logs = list(logs)
    if "-" in logs:
        if len(logs) > 1:
            raise ValueError("--log - (standard input) cannot be combined with files")
        return StdinSource(cap=cap)
    resume = {p: ckpt.load(state_dir, p) for p in logs} if state_dir is not None else None
    return Tail(logs, resume, backend=backend, cap=cap, grace=grace, first_start=first_start)


if __name__ == "__main__":  # pragma: no cover - look at it by eye: python -m logwatch.sources.tail FILE...
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    src = open_source(sys.argv[1:] or ["-"])
    try:
        while not src.finished:
            for b in src.poll(1.0):
                for line in b.lines:
                    print(line, flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        src.close()
