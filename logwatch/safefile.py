"""Open the files kept beside ``--state`` so that a file someone planted there cannot hurt us.

Why: the daemon often runs as root, and it reads, truncates and appends to files in a
directory (the state file, ``FILE.wal``, ``events.jsonl``, ``status.json``, the
``tail-*.json`` checkpoints). Opened naively, a symbolic link planted at one of those names
makes it truncate or append to the link's target; a FIFO blocks the start for ever; a link
to ``/dev/zero`` or a huge file eats the memory; a file another user can write feeds it
forged grants. So every open here:

- never follows a symbolic link (``O_NOFOLLOW``) and never blocks (``O_NONBLOCK``), and
  ``lstat``s first so that a device or FIFO is not even opened;
- then checks what it opened (``fstat``): a regular file, and trusted: for the WRITER
  (the daemon, reading back or appending to its own files) owned by its effective uid,
  with one name, and not writable by group or others; for a READER (``relaywatch
  status`` and ``tui``, perhaps another user in the daemon's group) only not writable by
  anyone but its owner;
- bounds the size before reading (each caller names its limit).

A file that fails is ``Refused`` (an ``OSError``, so every caller's "cannot read" path
already handles it); the daemon's callers set it aside like a corrupt file. ``loads`` is
the JSON parser for these files: ``json.loads`` accepts ``NaN`` and ``Infinity``, which no
record of ours holds and which would crash whoever formats the time.

I/O edge, no policy: what a record may contain is each caller's business.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from typing import Any

#: Added to every open: no symlink, no blocking on a FIFO, no controlling tty, not inherited.
FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
#: Times in these files are seconds since 1970 and before this (2200-01-01T00:00:00Z); a
#: later one is an absurd year (and ``datetime`` cannot show one past 9999).
LATEST = 7_258_118_400.0


class Refused(OSError):
    """The file is not one we may use: a symlink, not a regular file, not trusted, too big.

    ``strerror`` says why, in words (a caller that sets the file aside adds where it went);
    ``filename`` names the file.
    """


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "something"


def check(st: os.stat_result, path: str | os.PathLike[str], *, writer: bool, limit: int | None = None) -> None:
    """Refuse ``st`` (of ``path``) unless it is a regular file we may trust, within ``limit`` bytes.

    Raises:
        Refused: why, in words.
        IsADirectoryError: it is a directory: unreadable, as ``open`` says, but planted or
            not it can do no harm.
    """
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), os.fspath(path))
    if stat.S_ISLNK(st.st_mode):
        raise Refused(errno.ELOOP, "a symbolic link, not followed", os.fspath(path))
    if not stat.S_ISREG(st.st_mode):
        raise Refused(errno.EINVAL, f"{_kind(st.st_mode)}, not a regular file", os.fspath(path))
    if st.st_mode & 0o022:
        raise Refused(errno.EPERM, f"writable by others than its owner (mode {stat.S_IMODE(st.st_mode):04o})",
                      os.fspath(path))
    if writer and st.st_uid != os.geteuid():
        raise Refused(errno.EPERM, f"owned by uid {st.st_uid}, not by relaywatch's uid {os.geteuid()}",
                      os.fspath(path))
    if writer and st.st_nlink > 1:
        raise Refused(errno.EPERM, f"it has {st.st_nlink} hard links", os.fspath(path))
    if limit is not None and st.st_size > limit:
        raise Refused(errno.EFBIG, f"{st.st_size} bytes, over the limit of {limit} ({_size(limit)})", os.fspath(path))


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB"


def open_checked(path: str | os.PathLike[str], flags: int, *, writer: bool, mode: int = 0o600,
                 limit: int | None = None) -> tuple[int, os.stat_result]:
    """``os.open(path, flags | FLAGS, mode)`` of a file that passes ``check``; return it and its stat.

    With ``O_CREAT`` a missing file is created (``mode``, less the umask); without it, a
    missing file raises ``FileNotFoundError`` as ``open`` does.

    Raises:
        Refused: see ``check``; nothing was opened (or it was closed again).
        OSError: the open itself failed.
    """
    try:
        check(os.lstat(path), path, writer=writer)  # a device or FIFO is not even opened
    except FileNotFoundError:
        if not flags & os.O_CREAT:
            raise
    try:
        fd = os.open(path, flags | FLAGS, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # it became a symlink since the lstat
            raise Refused(errno.ELOOP, "a symbolic link, not followed", os.fspath(path)) from None
        raise
    try:
        st = os.fstat(fd)
        check(st, path, writer=writer, limit=limit)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def read(path: str | os.PathLike[str], limit: int, *, writer: bool) -> bytes:
    """The whole content of ``path``, never more than ``limit`` bytes of it read.

    Raises:
        FileNotFoundError: there is no such file.
        Refused: see ``check`` (also if it grew past ``limit`` while being read).
        OSError: it could not be read.
    """
    fd, _ = open_checked(path, os.O_RDONLY, writer=writer, limit=limit)
    try:
        chunks = []
        total = 0
        while chunk := os.read(fd, min(1 << 20, limit + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise Refused(errno.EFBIG, f"over the limit of {limit} bytes ({_size(limit)})", os.fspath(path))
        return b"".join(chunks)
    finally:
        os.close(fd)


class NotFinite(ValueError):
    """A JSON number that is not finite (``NaN``, ``Infinity``, ``1e999``)."""


def _constant(name: str) -> float:
    raise NotFinite(f"not a finite number: {name}")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NotFinite(f"not a finite number: {text}")
    return value


def loads(data: str | bytes) -> Any:
    """``json.loads`` that refuses non-finite numbers.

    Raises:
        json.JSONDecodeError: not JSON.
        NotFinite: ``NaN``, ``Infinity``, ``-Infinity`` or a float too large to hold.
        ValueError: an integer with too many digits.
    """
    return json.loads(data, parse_constant=_constant, parse_float=_float)


def is_time(value: object) -> bool:
    """Whether ``value`` is a time we could have written: a number from 1970 up to ``LATEST``."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < LATEST
