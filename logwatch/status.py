"""What a running daemon publishes for its viewers, and how a viewer reads it back.

Beside the state file (``--state DIR/state.json``, the grants) the daemon keeps:

- ``status.json``: its health, replaced atomically at most once a second and at stop:
  ``{"format": "relaywatch-status", "version": 1, "pid", "started", "updated", "running",
  "logs": [{"path", "backend"}], "sinks": [{"spec", "ok", "last_ok", "error", "backlog"}],
  "pattern_sets": [...], "hits": {"set/pattern": n}, "counts": {"authorised", "refreshed",
  "withdrawn", "refused", "ignored"}, "expire", "state"}``;
- ``events.jsonl``: recent events, one JSON object a line, appended once per batch:
  ``{"t", "kind", "ip", "user", "service", "reason"}`` with ``kind`` one of
  ``authorised``, ``refreshed``, ``withdrawn``, ``refused``, ``ignored``. Past
  ``JOURNAL_MAX`` bytes it is renamed to ``events.jsonl.1`` (replacing the older one) and
  begun again, so it never grows without bound.

Why files: a viewer (``relaywatch status``, ``relaywatch tui``) needs only read permission
(mode 0640: give the operators the daemon's group), cannot block or slow the daemon, and
the files still tell the last known state after the daemon stopped.

Both sides open them through ``safefile``: the daemon never appends to ``events.jsonl``
through a symbolic link (a planted one is set aside, and the next flush starts a new
journal), nor to a file not its own or writable by others; a viewer reads only regular
files that no one but their owner can write, at most ``STATUS_MAX_BYTES`` or
``EVENTS_MAX_BYTES``, and drops an event whose time is not finite or not from 1970 to 2200.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from logwatch import atomic, safefile

FORMAT = "relaywatch-status"
VERSION = 1
STATUS = "status.json"
JOURNAL = "events.jsonl"
#: Bytes of events kept in the current journal before it is rotated once.
JOURNAL_MAX = 1 << 20
#: A viewer reads at most this much of ``status.json`` (it holds a few KiB) ...
STATUS_MAX_BYTES = 1 << 20
#: ... and of each journal (one flush can carry it past ``JOURNAL_MAX``); more is refused.
EVENTS_MAX_BYTES = 16 << 20
#: Mode of the files a viewer reads.
MODE = 0o640
KINDS = ("authorised", "refreshed", "withdrawn", "refused", "ignored")


def directory_of(state: str | os.PathLike[str]) -> Path:
    """The directory of the status files for ``--state FILE``: the file's own directory.

    The directory's path is resolved, the file's name is not: were ``FILE`` a symbolic
    link, its target's directory would get the status files.
    """
    return Path(state).parent.resolve()


class Publisher:
    """The daemon's side: append events, replace the status.

    Args:
        directory: where the files live (``directory_of(--state)``).
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._journal = self.directory / JOURNAL
        self._pending: list[str] = []

    def event(self, kind: str, now: float, ip: str, user: str = "", service: str = "", reason: str = "") -> None:
        """Queue one event; ``flush`` writes the queue in one append."""
        record = {"t": round(now, 3), "kind": kind, "ip": ip, "user": user, "service": service, "reason": reason}
        self._pending.append(json.dumps(record, ensure_ascii=True, separators=(",", ":")))

    def flush(self) -> None:
        """Append the queued events (one ``write``), rotating the journal when it is full.

        The queue is taken whole before the write, and put back in front if it fails, so
        the journal keeps the events' order whatever happens to one write.

        Raises:
            OSError: the directory cannot be written; the events stay queued (at most a
                journal's worth) and the next flush tries again.
        """
        if not self._pending:
            return
        taken, self._pending = self._pending, []
        data = ("\n".join(taken) + "\n").encode("ascii")
        try:
            fd, st = self._open()
            try:
                if st.st_size and st.st_size + len(data) > JOURNAL_MAX:
                    os.replace(self._journal, self._journal.with_name(JOURNAL + ".1"))
                    os.close(fd)
                    fd = -1
                    fd, _ = self._open()
                os.write(fd, data)
            finally:
                if fd >= 0:
                    os.close(fd)
        except OSError:
            self._pending[:0] = taken  # before what was queued meanwhile: the journal's order
            raise

    def _open(self) -> tuple[int, os.stat_result]:
        """Open the journal to append, through ``safefile``; a refused one is set aside.

        Raises:
            OSError: it cannot be opened; ``safefile.Refused`` (it was set aside, and the
                next flush begins a new journal).
        """
        try:
            return safefile.open_checked(self._journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, writer=True, mode=MODE)
        except safefile.Refused as refused:
            try:
                said = f"moved to {atomic.set_aside(self._journal)}"
            except OSError as error:
                said = f"could not set it aside ({error.strerror})"
            raise safefile.Refused(refused.errno, f"{self._journal}: {refused.strerror}; {said}",
                                   str(self._journal)) from None

    def drop_pending(self, keep: int) -> None:
        """Keep only the newest ``keep`` queued events (when the journal cannot be written)."""
        del self._pending[:-keep]

    def status(self, document: Mapping[str, Any]) -> None:
        """Replace ``status.json`` with ``document`` (format and version are added)."""
        body = {"format": FORMAT, "version": VERSION, **document}
        atomic.write(self.directory / STATUS, json.dumps(body, ensure_ascii=True, indent=1).encode("ascii") + b"\n",
                     mode=MODE)


def read_status(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Return the last status the daemon wrote in ``directory``, or None if there is none.

    Raises:
        ValueError: the file cannot be read, must not be trusted (``safefile``), or is not a
            relaywatch status (one line naming it).
    """
    path = Path(directory) / STATUS
    try:
        doc = safefile.loads(safefile.read(path, STATUS_MAX_BYTES, writer=False).decode("ascii"))
    except FileNotFoundError:
        return None
    except safefile.Refused as exc:
        raise ValueError(f"{path}: refused: {exc.strerror}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # ValueError: not JSON, not finite
        raise ValueError(f"{path}: cannot read the daemon's status: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise ValueError(f"{path}: not a relaywatch status file (version {VERSION})")
    wrong = _out_of_range(doc)
    if wrong:
        raise ValueError(f"{path}: not a relaywatch status file ({wrong})")
    return doc


def _out_of_range(doc: Mapping[str, Any]) -> str:
    """What in ``doc`` the daemon could not have written (a time out of range), or ``""``."""
    for key in ("started", "updated"):
        if key in doc and not safefile.is_time(doc[key]):
            return f"{key!r} is not a time from 1970 to 2200"
    expire = doc.get("expire")
    if expire is not None and not safefile.is_time(expire):
        return "'expire' is not a number of seconds"
    sinks = doc.get("sinks")
    for sink in sinks if isinstance(sinks, list) else ():
        last_ok = sink.get("last_ok") if isinstance(sink, dict) else None
        if last_ok is not None and not safefile.is_time(last_ok):
            return "a sink's 'last_ok' is not a time from 1970 to 2200"
    return ""


def alive(doc: Mapping[str, Any]) -> bool:
    """True if the status says running and its process still exists."""
    pid = doc.get("pid")
    if not doc.get("running") or not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists; it is just not ours to signal
    return True


def read_events(directory: str | os.PathLike[str], limit: int = 200) -> list[dict[str, Any]]:
    """Return the newest ``limit`` events, oldest first (a torn last line is skipped, and so
    is an event whose time is not finite or not from 1970 to 2200).

    Raises:
        OSError: a journal cannot be read, or must not be trusted (``safefile.Refused``).
    """
    lines: list[str] = []
    for name in (JOURNAL + ".1", JOURNAL):
        try:
            data = safefile.read(Path(directory) / name, EVENTS_MAX_BYTES, writer=False)
        except FileNotFoundError:
            continue
        lines.extend(data.decode("ascii", errors="replace").splitlines())
    events = []
    for line in lines[-limit:]:
        try:
            record = safefile.loads(line)
        except ValueError:  # json.JSONDecodeError, safefile.NotFinite
            continue
        if isinstance(record, dict) and record.get("kind") in KINDS and safefile.is_time(record.get("t")):
            events.append(record)
    return events


def hits_document(hits: Iterable[tuple[tuple[str, str], int]]) -> dict[str, int]:
    """``{(set, pattern): n}`` as the status file spells it (``"set/pattern": n``)."""
    return {f"{s}/{p}": n for (s, p), n in sorted(hits)}
