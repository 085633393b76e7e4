"""Read the state format relaywatch wrote before SQLite: ``--state FILE`` as JSON, plus ``FILE.wal``.

Why it is kept: a daemon upgraded in place finds its grants in that format on its first
start, and ``state.open`` migrates them (this reader, then a database under a temporary
name renamed over ``FILE``); a viewer run against a daemon not yet restarted still reads
them. Nothing here writes.

The reader keeps every protection of the format it reads (issue 10): each file is opened
through ``safefile`` (no symbolic link, no FIFO or device, owned and writable only as
trusted, at most ``MAX_BYTES``), and a record we would never have written (a ``NaN``, a
time before 1970 or from 2200 on, a last login before the first, an address not as we
write it) refuses the whole file. ``load`` sets an unusable file aside in one line, like
a corrupt file; ``read`` (for viewers) moves nothing.

File format: ``{"format": "relaywatch-state", "version": 1, "saved": T, "fields": [...],
"grants": [[ip, user, service, first, last, count], ...]}``; ``FILE.wal`` holds one such
row a line, newest last (a torn last line is skipped).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from logwatch import atomic, safefile
from logwatch.addresses import normalise
from logwatch.model import Grant, SavedGrant

FORMAT = "relaywatch-state"
VERSION = 1
FIELDS = ("ip", "user", "service", "first", "last", "count")
#: The JSON state file, and its write-ahead log, are refused unread beyond this size
#: (256 MiB): room for 1,000,000 grants of 268 bytes each.
MAX_BYTES = 256 << 20
#: A grant's count of logins is below this.
MAX_COUNT = 1 << 63


class StateError(ValueError):
    """The file's content is not a state file we wrote."""


@dataclass(frozen=True, slots=True)
class Loaded:
    """What ``load`` found.

    Attributes:
        grants: the saved grants, unfiltered, each ``(ip, user, service, first, last,
            count)`` (``model.SavedGrant``: the ledger works out ``until``); every one
            checked as we write them (times, count, the address in ``normalise``'s form).
        warning: one line to log if a file was unusable and set aside, else ``""``.
        sessions: the open sessions saved with the grants (``--sessions``), as
            ``(session id, ip, start)``, unfiltered; the JSON format has none.
    """

    grants: tuple[SavedGrant, ...]
    warning: str = ""
    sessions: tuple[tuple[str, str, float], ...] = ()


def wal_path(path: str | os.PathLike[str]) -> Path:
    """The old write-ahead log beside the state file: ``FILE.wal``."""
    return Path(f"{path}.wal")


def is_json(head: bytes) -> bool:
    """Whether a file beginning with ``head`` is (meant to be) this format rather than a database.

    Anything that is not SQLite's 16-byte header is handed to this reader, which either
    parses it or refuses it with the reason: an empty file, a JSON document, garbage.
    """
    return not head.startswith(b"SQLite format 3\x00")


def load(path: str | os.PathLike[str], now: float) -> Loaded:
    """Read the grants saved in ``path`` and its write-ahead log (for the migration).

    A missing file is no grants. Anything else that cannot be read or parsed, or must not
    be trusted (``safefile``), is renamed to ``FILE.corrupt-YYYYmmddTHHMMSSZ`` (from
    ``now``) and reported in ``Loaded.warning``; so is a write-ahead log that cannot be
    read, parsed or trusted.
    """
    source = Path(path)
    warnings = []
    try:
        grants = _parse(safefile.read(source, MAX_BYTES, writer=True))
    except FileNotFoundError:
        grants = ()
    except (OSError, StateError) as error:
        grants = ()
        warnings.append(set_aside(source, now, error, f"--state {source}", "starting with no grants"))
    try:
        grants = _replay(source, grants, writer=True)
    except (OSError, StateError) as error:
        wal = wal_path(source)
        warnings.append(set_aside(wal, now, error, str(wal),
                                  "the grants made since the state file was written are not restored"))
    return Loaded(tuple((g.ip, g.user, g.service, g.first, g.last, g.count) for g in grants), "; ".join(warnings))


def read(path: str | os.PathLike[str]) -> tuple[Grant, ...]:
    """The grants in ``path`` and its write-ahead log, for viewers: nothing is ever moved.

    A viewer may be another user (in the daemon's group): it trusts files that only their
    owner can write, whoever that is (``safefile``, ``writer=False``).

    Raises:
        FileNotFoundError: there is neither a state file nor a write-ahead log.
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


def reason(error: Exception) -> str:
    """What went wrong, in words (``strerror`` for an ``OSError``)."""
    return error.strerror if isinstance(error, OSError) and error.strerror else str(error)


def set_aside(source: Path, now: float, error: Exception, name: str, consequence: str) -> str:
    """Rename an unusable file out of the way; return the one line that says so."""
    what = f"{name}: {'refused' if isinstance(error, safefile.Refused) else 'unreadable'} ({reason(error)})"
    try:
        aside = atomic.set_aside(source, now)
    except OSError as failed:
        return f"{what}; could not set it aside ({failed.strerror}); {consequence}"
    return f"{what}; moved to {aside}; {consequence}"
