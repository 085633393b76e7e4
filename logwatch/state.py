"""Keep the ledger across restarts in ``--state FILE``: write it whole and atomically, read it back.

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


def wal_path(path: str | os.PathLike[str]) -> Path:
    """The write-ahead log beside the state file: ``FILE.wal``."""
    return Path(f"{path}.wal")


def append(path: str | os.PathLike[str], grants: Iterable[Grant]) -> None:
    """Record ``grants`` in the write-ahead log before they are published.

    Why: the state file is rewritten at most once a second (it holds every grant). A grant
    published in between and then lost to a SIGKILL would be granted a second time when
    its line is read again; with it in the log, ``load`` has it, and the line read again is
    a renewal that changes nothing. One append per batch, no fsync: a killed process loses
    nothing the kernel already has (a power cut may lose the last second, and then a line
    is acted on twice, never not at all).

    Raises:
        OSError: as for ``save``; the caller goes on (it only costs exactly-once).
    """
    rows = b"".join(json.dumps([g.ip, g.user, g.service, g.first, g.last, g.count], ensure_ascii=True,
                               separators=(",", ":")).encode("ascii") + b"\n" for g in grants)
    if not rows:
        return
    fd = os.open(wal_path(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, MODE)
    try:
        os.write(fd, rows)
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
    """Read the grants saved in ``path``.

    A missing file is a first start: no grants, no warning. Anything else that cannot be
    read or parsed is renamed to ``FILE.corrupt-YYYYmmddTHHMMSSZ`` (from ``now``) and
    reported in ``Loaded.warning``.
    """
    source = Path(path)
    try:
        data = source.read_bytes()
        grants = _parse(data)
    except FileNotFoundError:
        return Loaded(_replay(source, ()))
    except (OSError, StateError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        return Loaded(_replay(source, ()), _set_aside(source, now, reason))
    return Loaded(_replay(source, grants))


def read(path: str | os.PathLike[str]) -> tuple[Grant, ...]:
    """The grants in ``path`` and its write-ahead log, for viewers: nothing is ever moved.

    Raises:
        FileNotFoundError: there is no state file (yet).
        OSError, StateError: it cannot be read or is not a state file; the caller says so.
    """
    source = Path(path)
    return _replay(source, _parse(source.read_bytes()))


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


def _set_aside(source: Path, now: float, reason: str) -> str:
    """Rename an unusable state file out of the way; return the one line that says so."""
    try:
        aside = atomic.set_aside(source, now)
    except OSError as error:
        return (
            f"--state {source}: unreadable ({reason}); could not set it aside "
            f"({error.strerror}); starting with no grants"
        )
    return f"--state {source}: unreadable ({reason}); moved to {aside}; starting with no grants"
