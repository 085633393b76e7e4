"""Keep the ledger across restarts in ``--state FILE`` (written whole and atomically, now and
then) and ``FILE.wal`` (each grant appended as it is made); read them back.

Why: without it a restart forgets every client still owed relay (they would be refused until
their next login), and a crash mid-write must never leave a half file that loses them all.
So the file is written to a temporary name in the same directory, fsync'd, renamed over the
old one, and the directory fsync'd: after a SIGKILL or a power cut the file is the old
version or the new one, whole. It is 0640: it names users, so it is not for everyone, but
``relaywatch status`` and ``tui`` read it with the daemon's group.

Reading applies no policy: ``Ledger.restore`` drops what has expired under today's
``--expire`` and never-list. A file that cannot be read or parsed is reported in one line
and renamed aside (never deleted: it may be evidence), and the daemon starts empty rather
than not at all.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from logwatch import atomic
from logwatch.ledger import Ledger
from logwatch.model import Change, Grant

#: Readable by the daemon's group: ``relaywatch status`` and ``tui`` need only read access.
MODE = 0o640
FORMAT = "relaywatch-state"
VERSION = 1
FIELDS = ("ip", "user", "service", "first", "last", "count")
#: The state file is rewritten whole (folding in and emptying the write-ahead log) at most
#: this often while grants change, in seconds; ...
REWRITE_EVERY = 60.0
#: ... or sooner, once the write-ahead log has grown this large (bytes).
REWRITE_WAL_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class Loaded:
    """What ``load`` found.

    Attributes:
        grants: the saved grants, unfiltered (``until`` is recomputed by the ledger).
        warning: one line to log if the file was unusable and set aside, else ``""``.
    """

    grants: tuple[Grant, ...]
    warning: str = ""


class StateError(ValueError):
    """The file's content is not a state file we wrote."""


def save(path: str | os.PathLike[str], grants: Iterable[Grant], now: float) -> None:
    """Write ``grants`` to ``path`` atomically (temp file, fsync, rename, fsync directory).

    Raises:
        OSError: the directory is not writable, the disk is full, ...; the old file is
            left as it was, and no temporary file is left behind.
    """
    target = Path(path)
    rows = [[g.ip, g.user, g.service, g.first, g.last, g.count] for g in grants]
    body = json.dumps(
        {"format": FORMAT, "version": VERSION, "saved": now, "fields": FIELDS, "grants": rows},
        separators=(",", ":"),
        ensure_ascii=True,
    ).encode("ascii")
    atomic.write(target, body + b"\n", mode=MODE)
    try:
        os.truncate(wal_path(target), 0)  # everything in it is in the state file now
    except FileNotFoundError:
        pass


def rewrite_due(now: float, rewritten_at: float, wal_bytes: int, wal_failed: bool, stopping: bool) -> bool:
    """Whether grants changed since the state file was last written should be written now.

    Why not every second: the file holds every grant (8 MB at 100,000), while the
    write-ahead log already holds each change and costs one small append. So the file is
    rewritten once a minute, when the log has grown past ``REWRITE_WAL_BYTES``, when an
    append failed (a grant then exists only in memory), and at stop.
    """
    return stopping or wal_failed or wal_bytes >= REWRITE_WAL_BYTES or now - rewritten_at >= REWRITE_EVERY


def wal_path(path: str | os.PathLike[str]) -> Path:
    """The write-ahead log beside the state file: ``FILE.wal``."""
    return Path(f"{path}.wal")


def append(path: str | os.PathLike[str], grants: Iterable[Grant]) -> int:
    """Record ``grants`` in the write-ahead log before they are published; return the
    bytes appended.

    Why: the state file is rewritten seldom (it holds every grant; see ``rewrite_due``). A
    grant published in between and then lost to a SIGKILL would be granted a second time
    when its line is read again; with it in the log, ``load`` has it, and the line read
    again is a renewal that changes nothing. One append per batch, no fsync here: a killed
    process loses nothing the kernel already has, and ``sync_wal`` makes it durable before
    any log position past it is saved.

    Raises:
        OSError: as for ``save``; the caller must then rewrite the state file before it
            saves a log position past these grants.
    """
    rows = b"".join(json.dumps([g.ip, g.user, g.service, g.first, g.last, g.count], ensure_ascii=True,
                               separators=(",", ":")).encode("ascii") + b"\n" for g in grants)
    if not rows:
        return 0
    fd = os.open(wal_path(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, MODE)
    try:
        written = 0
        while written < len(rows):  # a short write (a full disk) raises on the next call
            written += os.write(fd, rows[written:])
    finally:
        os.close(fd)
    return written


def sync_wal(path: str | os.PathLike[str]) -> None:
    """Make what was appended to the write-ahead log durable (a power cut keeps it).

    Raises:
        OSError: it could not be opened or synced; the caller saves no log position.
    """
    try:
        fd = os.open(wal_path(path), os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    except FileNotFoundError:
        return  # a rewrite of the state file emptied it, or nothing was appended
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replay(path: Path, grants: tuple[Grant, ...]) -> tuple[Grant, ...]:
    """``grants`` updated by the write-ahead log (a torn or foreign line is skipped)."""
    try:
        data = wal_path(path).read_bytes()
    except FileNotFoundError:
        return grants
    by_ip = {g.ip: g for g in grants}
    for line in data.split(b"\n"):
        try:
            (parsed,) = _rows([json.loads(line.decode("ascii"))])
        except (UnicodeDecodeError, json.JSONDecodeError, StateError, ValueError):
            continue
        known = by_ip.get(parsed.ip)
        if known is None or parsed.last >= known.last:
            by_ip[parsed.ip] = parsed
    return tuple(by_ip.values())


def load(path: str | os.PathLike[str], now: float) -> Loaded:
    """Read the grants saved in ``path`` and its write-ahead log.

    A missing file is a first start: no grants, no warning. Anything else that cannot be
    read or parsed is renamed to ``FILE.corrupt-YYYYmmddTHHMMSSZ`` (from ``now``) and
    reported in ``Loaded.warning``; so is a write-ahead log that cannot be read.
    """
    source = Path(path)
    warnings = []
    try:
        grants = _parse(source.read_bytes())
    except FileNotFoundError:
        grants = ()
    except (OSError, StateError) as error:
        grants = ()
        warnings.append(_set_aside(source, now, _reason(error), f"--state {source}", "starting with no grants"))
    try:
        grants = _replay(source, grants)
    except OSError as error:
        wal = wal_path(source)
        warnings.append(_set_aside(wal, now, _reason(error), str(wal),
                                   "the grants made since the state file was written are not restored"))
    return Loaded(grants, "; ".join(warnings))


def _reason(error: Exception) -> str:
    return error.strerror if isinstance(error, OSError) and error.strerror else str(error)


def read(path: str | os.PathLike[str]) -> tuple[Grant, ...]:
    """The grants in ``path`` and its write-ahead log, for viewers: nothing is ever moved.

    Raises:
        FileNotFoundError: there is neither a state file nor a write-ahead log (yet).
        OSError, StateError: it cannot be read or is not a state file; the caller says so.
    """
    source = Path(path)
    try:
        data = source.read_bytes()
    except FileNotFoundError:
        if not wal_path(source).exists():
            raise
        return _replay(source, ())  # killed before its first state file: the log has it all
    return _replay(source, _parse(data))


def restore(
    path: str | os.PathLike[str], ledger: Ledger, now: float
) -> tuple[tuple[Change, ...], str]:
    """Load ``path`` into ``ledger``; return the PUTs to publish and any warning line."""
    loaded = load(path, now)
    return ledger.restore(loaded.grants, now), loaded.warning


def _parse(data: bytes) -> tuple[Grant, ...]:
    """Parse a state file's bytes, refusing anything we would not have written."""
    try:
        document = json.loads(data.decode("ascii"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise StateError(f"not JSON ({error.__class__.__name__}: {error})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise StateError(f"not a {FORMAT} file")
    if document.get("version") != VERSION:
        raise StateError(f"version {document.get('version')!r}; expected {VERSION}")
    if document.get("fields") != list(FIELDS):
        raise StateError(f"fields {document.get('fields')!r}; expected {list(FIELDS)}")
    rows = document.get("grants")
    if not isinstance(rows, list):
        raise StateError("'grants' is not a list")
    return _rows(rows)


def _rows(rows: list[object]) -> tuple[Grant, ...]:
    grants = []
    for number, row in enumerate(rows, 1):
        if not (
            isinstance(row, list)
            and len(row) == len(FIELDS)
            and all(isinstance(v, str) for v in row[:3])
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in row[3:])
            and isinstance(row[5], int)
        ):
            raise StateError(f"grant {number} is not [ip, user, service, first, last, count]")
        ip, user, service, first, last, count = row
        grants.append(Grant(ip, user, service, float(first), float(last), count, float(last)))
    return tuple(grants)


def _set_aside(source: Path, now: float, reason: str, name: str, consequence: str) -> str:
    """Rename an unusable file out of the way; return the one line that says so."""
    try:
        aside = atomic.set_aside(source, now)
    except OSError as error:
        return f"{name}: unreadable ({reason}); could not set it aside ({error.strerror}); {consequence}"
    return f"{name}: unreadable ({reason}); moved to {aside}; {consequence}"
