"""``relaywatch status``: print who may relay now, read from the files beside ``--state``.

Reads, never writes: the state database (the grants, through a read-only connection that
never blocks the daemon), ``status.json`` (the daemon's health) and ``events.jsonl`` (recent
events), all published by the daemon for its viewers (see ``logwatch.status``). So it needs only read permission, works while the daemon runs, and
after it stopped (then it says so, and shows the grants as the daemon left them).

``--json`` writes one object for scripts; its keys (times are seconds since the epoch)::

    {"format": "relaywatch-status-view", "version": 1, "now", "state",
     "daemon": {"running", "pid", "started", "updated"},       (null if it never ran)
     "expire",                                                 (seconds, null if unknown)
     "entries", "oldest",                                      (earliest first login, or null)
     "sinks": [{"spec", "ok", "last_ok", "error", "backlog"}],
     "pattern_sets": {"set": hits}, "logins_per_minute",
     "sessions",                                               (open sessions, --sessions)
     "grants": [{"ip", "name", "user", "service", "first", "last", "count", "until", "left",
                 "sessions", "why"}]}

``grants`` come soonest-to-expire first. ``name`` is the PTR name, or null (``--no-dns``,
no PTR, or no answer within 1 s); ``left`` is ``until - now`` in seconds (negative once
expired: a stopped daemon withdrew nothing); ``until`` and ``left`` are null when the
daemon's ``--expire`` is unknown (no ``status.json``). ``sessions`` is how many sessions
from that address are open (``--sessions``; the state's ``sessions`` table), and ``why`` says
why it may relay: ``connected`` (a session is open: no countdown) or ``last login`` (until
``--expire`` after its last login, or after its last session ended).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console

from logwatch import ptr, state, status
from logwatch.faces import check
from logwatch.faces.views import GrantTable, Header, Snapshot, matched_sets, session_counts, sort_grants
from logwatch.model import Grant
from logwatch.statusrecord import DaemonStatus

FORMAT = "relaywatch-status-view"
VERSION = 1
#: Events read for the header (logins per minute) and the TUI's feed.
EVENTS = 200


class UsageError(Exception):
    """Bad usage or unreadable files: one line for standard error, exit status 2."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``status`` (``tui`` shares all but ``--json``)."""
    add_source_arguments(parser)
    parser.add_argument("--json", action="store_true", help="one JSON object for scripts (keys: see the README)")
    parser.add_argument("--check", action="store_true",
                        help="one line and exit 0 (ok), 1 (warning) or 2 (critical), for Nagios, Icinga or monit")


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """``--state``, ``--no-dns`` and ``--resolver``: what both viewers read and resolve."""
    parser.add_argument("--state", metavar="FILE", required=True,
                        help="the daemon's --state file; its directory holds status.json and events.jsonl")
    parser.add_argument("--no-dns", action="store_true", help="do not look up the addresses' PTR names")
    parser.add_argument("--resolver", metavar="ADDR[:PORT]", default=None,
                        help="DNS server for PTR lookups (default: the system's, from /etc/resolv.conf)")


@dataclass
class _Seen:
    key: tuple[tuple[int, int, int], ...] | None = None
    value: Any = None


class Reader:
    """Reads snapshots from the files beside ``--state``, re-reading only files that changed.

    Why: the TUI takes a snapshot twice a second, and the event journal can be a megabyte.

    Args:
        path: the ``--state`` file.

    Raises:
        UsageError: the directory does not exist, or holds neither a state file nor a status.
    """

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.directory = status.directory_of(path)
        if not self.directory.is_dir():
            raise UsageError(f"--state {path}: the directory {self.directory} does not exist")
        if not self.path.exists() and not (self.directory / status.STATUS).exists():
            raise UsageError(f"--state {path}: no such file, and no {status.STATUS} beside it "
                             f"(is the daemon run with --state {path}?)")
        self._state = _Seen()
        self._status = _Seen()
        self._events = _Seen()

    def snapshot(self, now: float) -> Snapshot:
        """What the files say at ``now``.

        Raises:
            UsageError: a file cannot be read (permission) or is not what the daemon writes.
        """
        grants: tuple[Grant, ...]
        grants, sessions = self._cached(self._state, state.watched(self.path), self._read_grants)
        record: tuple[DaemonStatus, bool] | None = self._cached(self._status, [self.directory / status.STATUS],
                                                                self._read_status)
        events = self._cached(self._events, [self.directory / status.JOURNAL, self.directory / (status.JOURNAL + ".1")],
                              self._read_events)
        doc = record[0] if record else None
        expire = doc.expire if doc is not None and doc.expire is not None and doc.expire > 0 else None
        if expire is not None:
            grants = tuple(replace(g, until=g.last + expire) for g in grants)
        running = record is not None and record[1] and _exists(doc.pid if doc else None)
        return Snapshot(now, grants, expire, doc, running, events, str(self.path), session_counts(sessions))

    @staticmethod
    def _cached(seen: _Seen, paths: list[Path], read: Callable[[], Any]) -> Any:
        key = []
        for p in paths:
            try:
                st = p.stat()
                key.append((st.st_ino, st.st_mtime_ns, st.st_size))
            except FileNotFoundError:
                key.append((0, 0, 0))
            except OSError:
                key.append((-1, 0, 0))  # the read that follows says why, in one line
        signature = tuple(key)
        if seen.key != signature:
            seen.value, seen.key = read(), signature
        return seen.value

    def _read_grants(self) -> tuple[tuple[Grant, ...], tuple[state.SessionRow, ...]]:
        """The grants and the open sessions (one read transaction)."""
        # state.read_all, not state.load: a read-only connection that never blocks the daemon,
        # and load renames an unreadable file aside: a viewer must never move the daemon's files.
        try:
            return state.read_all(self.path)
        except FileNotFoundError:
            return (), ()
        except OSError as exc:
            raise UsageError(f"--state {self.path}: cannot read: {exc.strerror}") from None
        except state.StateError as exc:
            raise UsageError(f"--state {self.path}: {exc}") from None

    def _read_events(self) -> tuple[dict[str, Any], ...]:
        try:
            return tuple(status.read_events(self.directory, EVENTS))
        except OSError as exc:
            raise UsageError(f"{exc.filename}: cannot read the daemon's events: {exc.strerror}") from None

    def _read_status(self) -> tuple[DaemonStatus, bool] | None:
        """The record, and whether the daemon said it runs."""
        try:
            doc = status.read_status(self.directory)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if doc is None:
            return None
        try:
            return DaemonStatus.from_json(doc), bool(doc.get("running"))
        except ValueError as exc:
            raise UsageError(f"{self.directory / status.STATUS}: not what relaywatch writes: {exc}") from None


def _exists(pid: int | None) -> bool:
    """True if the process the status names still exists (``status.alive``)."""
    return pid is not None and status.alive({"running": True, "pid": pid})


def names_for(args: argparse.Namespace) -> ptr.PtrCache | None:
    """The PTR cache the options ask for (None with ``--no-dns``).

    Raises:
        UsageError: ``--resolver`` is malformed, or there is no resolver to ask.
    """
    if args.no_dns:
        return None
    try:
        return ptr.PtrCache(args.resolver)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def document(snap: Snapshot, names: dict[str, str | None] | None) -> dict[str, Any]:
    """The ``--json`` object (keys in the module docstring)."""
    doc = snap.status
    return {
        "format": FORMAT, "version": VERSION, "now": snap.now, "state": snap.state,
        "daemon": {"running": snap.running, "pid": doc.pid, "started": doc.started,
                   "updated": doc.updated} if doc is not None else None,
        "expire": snap.expire,
        "entries": len(snap.grants),
        "oldest": min((g.first for g in snap.grants), default=None),
        "sinks": [sink.to_json() for sink in doc.sinks] if doc is not None else [],
        "pattern_sets": dict(matched_sets(snap.status)),
        "logins_per_minute": snap.logins_per_minute(),
        "sessions": sum(snap.sessions.values()),
        "grants": [{"ip": g.ip, "name": (names or {}).get(g.ip), "user": g.user, "service": g.service,
                    "first": g.first, "last": g.last, "count": g.count,
                    "until": g.until if snap.expire else None,
                    "left": round(g.until - snap.now, 3) if snap.expire else None,
                    "sessions": snap.sessions.get(g.ip, 0),
                    "why": "connected" if snap.sessions.get(g.ip) else "last login"}
                   for g in sort_grants(snap.grants, "left", snap.sessions)],
    }


def run(args: argparse.Namespace, console: Console | None = None, now: float | None = None) -> int:
    """Print the header and the grants (or ``--json``); return 0, or 2 with one line on stderr."""
    if getattr(args, "check", False):
        return _check(args, time.time() if now is None else now)
    cache = None
    try:
        cache = names_for(args)
        reader = Reader(args.state)
        snap = reader.snapshot(time.time() if now is None else now)
        found = None if cache is None else cache.wait([g.ip for g in snap.grants], ptr.MAX_TIMEOUT)
    except UsageError as exc:
        print(f"relaywatch status: {exc}", file=sys.stderr)
        return 2
    finally:
        if cache is not None:
            cache.close()
    if args.json:
        names = None if found is None else {ip: (n.name if n else None) for ip, n in found.items()}
        out = json.dumps(document(snap, names), ensure_ascii=True, indent=1)
        sys.stdout.write(out + "\n")
        return 0
    console = console or Console(highlight=False)
    labels = None if found is None else {ip: ptr.label(n) for ip, n in found.items()}
    console.print(Header(snap))
    if snap.running and (check.age(snap) or 0.0) > check.STALE:  # hung, or killed without a word
        console.print(check.written_line(snap), style="bold red")
    console.print(GrantTable(sort_grants(snap.grants, "left", snap.sessions), snap.now, snap.expire, labels,
                             sessions=snap.sessions))
    return 0


def _check(args: argparse.Namespace, now: float) -> int:
    """``--check``: the verdict's line on standard output, its status as the exit status."""
    try:
        code, line = check.verdict(Reader(args.state).snapshot(now))
    except UsageError as exc:
        code, line = check.CRITICAL, f"RELAYWATCH CRITICAL - {exc}"
    print(line)
    return code


if __name__ == "__main__":  # pragma: no cover
    _parser = argparse.ArgumentParser(prog="relaywatch status")
    add_arguments(_parser)
    sys.exit(run(_parser.parse_args()))
