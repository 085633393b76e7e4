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
than not at all. So is a file it must not trust (see ``safefile``: a symbolic link, not a
regular file, not the daemon's own, writable by others, over ``MAX_BYTES``), and one whose
values we would never have written (a non-finite number, a time before 1970 or after 2200,
a last login before the first, an address not as we write it): every open and every
record goes through those checks, so a planted file can neither redirect a write, block
the start, exhaust the memory, nor feed in a grant.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from logwatch import atomic, safefile
from logwatch.addresses import normalise
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
#: The state file, and its write-ahead log, are refused unread beyond this size (256 MiB):
#: room for 1,000,000 grants of 268 bytes each (100,000 take 8 MB), while a file the size
#: of the disk is never parsed.
MAX_BYTES = 256 << 20
#: A grant's count of logins is below this.
MAX_COUNT = 1 << 63


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
    wal = wal_path(target)
    try:  # everything in it is in the state file now; never truncate through a symlink
        fd, _ = safefile.open_checked(wal, os.O_WRONLY, writer=True)
    except FileNotFoundError:
        return
    except safefile.Refused as refused:
        raise _refused(wal, refused, now) from None
    try:
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)


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
            saves a log position past these grants. ``safefile.Refused`` if ``FILE.wal`` is
            not a file to trust (it is then set aside, and the next append starts anew).
    """
    rows = b"".join(json.dumps([g.ip, g.user, g.service, g.first, g.last, g.count], ensure_ascii=True,
                               separators=(",", ":")).encode("ascii") + b"\n" for g in grants)
    if not rows:
        return 0
    wal = wal_path(path)
    try:
        fd, _ = safefile.open_checked(wal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, writer=True, mode=MODE)
    except safefile.Refused as refused:
        raise _refused(wal, refused) from None
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
    wal = wal_path(path)
    try:
        fd, _ = safefile.open_checked(wal, os.O_WRONLY | os.O_APPEND, writer=True)
    except FileNotFoundError:
        return  # a rewrite of the state file emptied it, or nothing was appended
    except safefile.Refused as refused:
        raise _refused(wal, refused) from None
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replay(path: Path, grants: tuple[Grant, ...], writer: bool) -> tuple[Grant, ...]:
    """``grants`` updated by the write-ahead log.

    A line that is not JSON is skipped: a write torn by a crash or a full disk leaves one.
    A line that is JSON but not a row we would write (a ``NaN``, a time out of range) is
    no accident, and refuses the whole log.

    Raises:
        OSError: it cannot be read; ``safefile.Refused``: it must not be trusted.
        StateError: a line holds a record we never write.
    """
    try:
        data = safefile.read(wal_path(path), MAX_BYTES, writer=writer)
    except FileNotFoundError:
        return grants
    by_ip = {g.ip: g for g in grants}
    for number, line in enumerate(data.split(b"\n"), 1):
        try:
            (parsed,) = _rows([safefile.loads(line.decode("ascii"))])
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        except ValueError as error:  # StateError, or safefile.NotFinite
            raise StateError(f"line {number}: {error}") from None
        known = by_ip.get(parsed.ip)
        if known is None or parsed.last >= known.last:
            by_ip[parsed.ip] = parsed
    return tuple(by_ip.values())


def load(path: str | os.PathLike[str], now: float) -> Loaded:
    """Read the grants saved in ``path`` and its write-ahead log.

    A missing file is a first start: no grants, no warning. Anything else that cannot be
    read or parsed, or must not be trusted (``safefile``), is renamed to
    ``FILE.corrupt-YYYYmmddTHHMMSSZ`` (from ``now``) and reported in ``Loaded.warning``;
    so is a write-ahead log that cannot be read, parsed or trusted.
    """
    source = Path(path)
    warnings = []
    try:
        grants = _parse(safefile.read(source, MAX_BYTES, writer=True))
    except FileNotFoundError:
        grants = ()
    except (OSError, StateError) as error:
        grants = ()
        warnings.append(_set_aside(source, now, error, f"--state {source}", "starting with no grants"))
    try:
        grants = _replay(source, grants, writer=True)
    except (OSError, StateError) as error:
        wal = wal_path(source)
        warnings.append(_set_aside(wal, now, error, str(wal),
                                   "the grants made since the state file was written are not restored"))
    return Loaded(grants, "; ".join(warnings))


def _reason(error: Exception) -> str:
    return error.strerror if isinstance(error, OSError) and error.strerror else str(error)


def _refused(path: Path, refused: safefile.Refused, now: float | None = None) -> safefile.Refused:
    """Set aside ``path``, which a writer refused to open; return the error that says both."""
    try:
        said = f"moved to {atomic.set_aside(path, now)}"
    except OSError as error:
        said = f"could not set it aside ({error.strerror})"
    return safefile.Refused(refused.errno, f"{refused.strerror}; {said}", str(path))


def read(path: str | os.PathLike[str]) -> tuple[Grant, ...]:
    """The grants in ``path`` and its write-ahead log, for viewers: nothing is ever moved.

    A viewer may be another user (in the daemon's group): it trusts files that only their
    owner can write, whoever that is (``safefile``, ``writer=False``).

    Raises:
        FileNotFoundError: there is neither a state file nor a write-ahead log (yet).
        OSError, StateError: it cannot be read, must not be trusted (``safefile.Refused``)
            or is not a state file; the caller says so.
    """
    source = Path(path)
    try:
        data = safefile.read(source, MAX_BYTES, writer=False)
    except FileNotFoundError:
        if not os.path.lexists(wal_path(source)):
            raise
        return _replay_for_viewer(source, ())  # killed before its first state file: the log has it all
    return _replay_for_viewer(source, _parse(data))


def _replay_for_viewer(source: Path, grants: tuple[Grant, ...]) -> tuple[Grant, ...]:
    try:
        return _replay(source, grants, writer=False)
    except safefile.Refused as refused:  # say which file: the caller names the state file
        raise safefile.Refused(refused.errno, f"{wal_path(source).name}: {refused.strerror}",
                               str(wal_path(source))) from None
    except StateError as error:
        raise StateError(f"{wal_path(source).name}: {error}") from None


def restore(
    path: str | os.PathLike[str], ledger: Ledger, now: float
) -> tuple[tuple[Change, ...], str]:
    """Load ``path`` into ``ledger``; return the PUTs to publish and any warning line."""
    loaded = load(path, now)
    return ledger.restore(loaded.grants, now), loaded.warning


def _parse(data: bytes) -> tuple[Grant, ...]:
    """Parse a state file's bytes, refusing anything we would not have written."""
    try:
        document = safefile.loads(data.decode("ascii"))
    except safefile.NotFinite as error:
        raise StateError(str(error)) from None
    except (UnicodeDecodeError, ValueError) as error:  # json.JSONDecodeError, too many digits
        raise StateError(f"not JSON ({error.__class__.__name__}: {error})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise StateError(f"not a {FORMAT} file")
    if document.get("version") != VERSION:
        raise StateError(f"version {document.get('version')!r}; expected {VERSION}")
    if not safefile.is_time(document.get("saved")):
        raise StateError("'saved' is not a time from 1970 to 2200")
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
        if normalise(ip) != ip:
            raise StateError(f"grant {number}: the address is not one relaywatch writes")
        if not (safefile.is_time(first) and safefile.is_time(last) and first <= last):
            raise StateError(f"grant {number}: first {first!r} and last {last!r} are not times from 1970 to 2200, "
                             f"first no later than last")
        if not 0 < count < MAX_COUNT:
            raise StateError(f"grant {number}: count {count!r} is out of range")
        grants.append(Grant(ip, user, service, float(first), float(last), count, float(last)))
    return tuple(grants)


def _set_aside(source: Path, now: float, error: Exception, name: str, consequence: str) -> str:
    """Rename an unusable file out of the way; return the one line that says so."""
    what = f"{name}: {'refused' if isinstance(error, safefile.Refused) else 'unreadable'} ({_reason(error)})"
    try:
        aside = atomic.set_aside(source, now)
    except OSError as failed:
        return f"{what}; could not set it aside ({failed.strerror}); {consequence}"
    return f"{what}; moved to {aside}; {consequence}"
