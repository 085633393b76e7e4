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
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from logwatch import atomic

FORMAT = "relaywatch-status"
VERSION = 1
STATUS = "status.json"
JOURNAL = "events.jsonl"
#: Bytes of events kept in the current journal before it is rotated once.
JOURNAL_MAX = 1 << 20
#: Mode of the files a viewer reads.
MODE = 0o640
KINDS = ("authorised", "refreshed", "withdrawn", "refused", "ignored")


def directory_of(state: str | os.PathLike[str]) -> Path:
    """The directory of the status files for ``--state FILE``: the file's own directory."""
    return Path(state).resolve().parent


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

        Raises:
            OSError: the directory cannot be written; the events stay queued (at most a
                journal's worth) and the next flush tries again.
        """
        if not self._pending:
            return
        data = ("\n".join(self._pending) + "\n").encode("ascii")
        try:
            size = self._journal.stat().st_size
        except FileNotFoundError:
            size = 0
        if size and size + len(data) > JOURNAL_MAX:
            os.replace(self._journal, self._journal.with_name(JOURNAL + ".1"))
        fd = os.open(self._journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, MODE)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        self._pending.clear()

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
        ValueError: the file is not a relaywatch status (one line naming it).
    """
    path = Path(directory) / STATUS
    try:
        doc = json.loads(path.read_text(encoding="ascii"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the daemon's status: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise ValueError(f"{path}: not a relaywatch status file (version {VERSION})")
    return doc


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
    """Return the newest ``limit`` events, oldest first (a torn last line is skipped)."""
    lines: list[str] = []
    for name in (JOURNAL + ".1", JOURNAL):
        try:
            lines.extend((Path(directory) / name).read_text(encoding="ascii", errors="replace").splitlines())
        except FileNotFoundError:
            continue
    events = []
    for line in lines[-limit:]:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("kind") in KINDS:
            events.append(record)
    return events


def hits_document(hits: Iterable[tuple[tuple[str, str], int]]) -> dict[str, int]:
    """``{(set, pattern): n}`` as the status file spells it (``"set/pattern": n``)."""
    return {f"{s}/{p}": n for (s, p), n in sorted(hits)}
