"""The daemon's status as a typed record: what ``status.json`` holds, from writer to viewers.

Pure: values in, values out. The daemon builds a ``DaemonStatus`` and hands ``to_json()`` to
``status.Publisher``; a viewer reads the file with ``status.read_status`` and turns it back
with ``DaemonStatus.from_json``, which checks every field's type once, so the views work on
attributes instead of testing each ``dict.get`` by hand.

The keys (``status.py`` adds ``format`` and ``version``)::

    {"pid", "started", "updated", "running", "logs": [{"path", "backend"}],
     "sinks": [{"spec", "ok", "last_ok", "error", "backlog"}], "pattern_sets": [...],
     "hits": {"set/pattern": n}, "counts": {"authorised", "refreshed", "withdrawn",
     "refused", "ignored"}, "logins_last_minute", "log_lag",
     "loop": {"step", "step_lines", "pause", "long_pauses", "gc"}, "expire", "state", "grants"}

A key that is missing reads as its default (a file from an older relaywatch); a key of the
wrong type is an error naming it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

@dataclass(frozen=True, slots=True)
class LogStatus:
    """One followed log: its path and how it is followed (``inotify``, ``polling``, ``stdin``)."""

    path: str
    backend: str


@dataclass(frozen=True, slots=True)
class SinkStatus:
    """One sink's health, as its outlet and the sink itself report it.

    Attributes:
        spec: ``type:name``.
        ok: False while changes are owed to it or its own work fails.
        last_ok: when the MTA last saw everything committed (None: never yet).
        error: one line naming the failure, ``""`` when ok.
        backlog: changes owed to it.
        update_seconds: how long its last publication took, for a sink that works after
            ``commit`` (the Postfix map's batch or rebuild); None otherwise.
    """

    spec: str
    ok: bool = True
    last_ok: float | None = None
    error: str = ""
    backlog: int = 0
    update_seconds: float | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"spec": self.spec, "ok": self.ok, "last_ok": self.last_ok, "error": self.error,
                               "backlog": self.backlog}
        if self.update_seconds is not None:  # only a sink that works after commit has it
            doc["update_seconds"] = self.update_seconds
        return doc

    @classmethod
    def from_json(cls, doc: object) -> SinkStatus:
        """Raises ValueError naming the key that is not what the daemon writes."""
        d = _mapping(doc, "sinks[]")
        return cls(_typed(d, "spec", str, "?"), _typed(d, "ok", bool, False), _number(d, "last_ok"),
                   _typed(d, "error", str, ""), _typed(d, "backlog", int, 0), _number(d, "update_seconds"))


#: A pause of the loop longer than this is counted (``LoopTimes.long_pauses``): issue 12's goal.
LONG_PAUSE = 0.05


@dataclass(frozen=True, slots=True)
class LoopTimes:
    """The longest turns of the daemon's loop since the last periodic status, in seconds.

    A turn is busy from the moment its lines are read until it is ready to wait again: the
    lines handled, then the expiries, the sinks' commits, the state's save and the viewers'
    files. Waiting for lines is not counted. Two maxima, because they mean different things:

    Attributes:
        step: the longest busy turn; it grows with the lines a turn handled (a catch-up
            reads many at once), so ``step_lines`` says how many that turn had.
        pause: the longest time after a turn's lines during which no line was read: what
            does not depend on the log (a sink's commit on the loop, a save). The issue's
            goal is that this stays under 50 ms at any live-set size.
        long_pauses: how many turns paused longer than ``LONG_PAUSE`` since the daemon
            started (a counter: it is not reset with the maxima).
        gc: the longest pass of Python's cyclic garbage collector (``collector``), which
            holds the loop wherever it falls.
    """

    step: float = 0.0
    step_lines: int = 0
    pause: float = 0.0
    long_pauses: int = 0
    gc: float = 0.0

    def noted(self, busy: float, lines: int, pause: float) -> LoopTimes:
        """These maxima with one more turn (``busy`` seconds, ``lines`` lines, of which
        ``pause`` seconds after the lines)."""
        if busy <= self.step and pause <= self.pause and pause <= LONG_PAUSE:
            return self
        longer = busy > self.step
        return LoopTimes(busy if longer else self.step, lines if longer else self.step_lines,
                         max(pause, self.pause), self.long_pauses + (pause > LONG_PAUSE), self.gc)

    def to_json(self) -> dict[str, Any]:
        return {"step": round(self.step, 4), "step_lines": self.step_lines, "pause": round(self.pause, 4),
                "long_pauses": self.long_pauses, "gc": round(self.gc, 4)}

    @classmethod
    def from_json(cls, doc: object) -> LoopTimes:
        """Raises ValueError naming the key that is not what the daemon writes."""
        d = _mapping(doc, "loop")
        return cls(_number(d, "step") or 0.0, _typed(d, "step_lines", int, 0), _number(d, "pause") or 0.0,
                   _typed(d, "long_pauses", int, 0), _number(d, "gc") or 0.0)


@dataclass(frozen=True, slots=True)
class DaemonStatus:
    """What the daemon says of itself (see the module docstring for the JSON keys).

    Attributes:
        pid: its process id.
        started, updated: when it started and when this record was written (epoch seconds).
        running: False in the record written at stop.
        logs, sinks: one entry per followed log and per sink.
        pattern_sets: the names of the sets in use, in claim order.
        hits: ``("set/pattern", n)`` per pattern that claimed a line, sorted.
        counts: ``(kind, n)`` for each of ``status.KINDS``.
        log_lag: the most a login acted on since the record before lagged behind its own
            line's time, in seconds (None: no login since); for ``--metrics``.
        logins_last_minute: logins (new, renewed or refused) read in the last 60 seconds;
            None from a daemon that did not count them. Why the daemon counts: a renewal is
            no event (at thousands a second, one each would be most of the work).
        loop: the longest turns of the loop since the record before (``LoopTimes``); None
            from a daemon that did not time them.
        expire: ``--expire`` in seconds.
        state: the ``--state`` path.
        grants: clients authorised now.
    """

    pid: int | None = None
    started: float | None = None
    updated: float | None = None
    running: bool = False
    logs: tuple[LogStatus, ...] = ()
    sinks: tuple[SinkStatus, ...] = ()
    pattern_sets: tuple[str, ...] = ()
    hits: tuple[tuple[str, int], ...] = ()
    counts: tuple[tuple[str, int], ...] = ()
    logins_last_minute: int | None = None
    log_lag: float | None = None
    loop: LoopTimes | None = None
    expire: float | None = None
    state: str | None = None
    grants: int = 0

    def count(self, kind: str) -> int:
        """How many events of ``kind`` the daemon counted (0 if unknown)."""
        return dict(self.counts).get(kind, 0)

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid, "started": self.started, "updated": self.updated, "running": self.running,
            "logs": [{"path": x.path, "backend": x.backend} for x in self.logs],
            "sinks": [x.to_json() for x in self.sinks],
            "pattern_sets": list(self.pattern_sets),
            "hits": dict(self.hits),
            "counts": dict(self.counts),
            "logins_last_minute": self.logins_last_minute, "log_lag": self.log_lag,
            "loop": None if self.loop is None else self.loop.to_json(),
            "expire": self.expire, "state": self.state, "grants": self.grants,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> DaemonStatus:
        """The record ``doc`` (a parsed ``status.json``) describes.

        Raises:
            ValueError: a key holds a value of another type than the daemon writes (one line).
        """
        logs = tuple(LogStatus(_typed(d, "path", str, "?"), _typed(d, "backend", str, "?"))
                     for d in (_mapping(x, "logs[]") for x in _list(doc, "logs")))
        return cls(
            pid=_typed(doc, "pid", int, None), started=_number(doc, "started"), updated=_number(doc, "updated"),
            running=_typed(doc, "running", bool, False), logs=logs,
            sinks=tuple(SinkStatus.from_json(x) for x in _list(doc, "sinks")),
            pattern_sets=tuple(_str(x, "pattern_sets[]") for x in _list(doc, "pattern_sets")),
            hits=_tally(doc, "hits"), counts=_tally(doc, "counts"),
            logins_last_minute=_typed(doc, "logins_last_minute", int, None), log_lag=_number(doc, "log_lag"),
            loop=None if doc.get("loop") is None else LoopTimes.from_json(doc["loop"]),
            expire=_number(doc, "expire"), state=_typed(doc, "state", str, None), grants=_typed(doc, "grants", int, 0),
        )


def hits_of(hits: Iterable[tuple[tuple[str, str], int]]) -> tuple[tuple[str, int], ...]:
    """``{(set, pattern): n}`` items as the record spells them: ``("set/pattern", n)``, sorted."""
    return tuple((f"{s}/{p}", n) for (s, p), n in sorted(hits))


def _mapping(value: object, key: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{key}: expected an object")
    return value


def _list(doc: Mapping[str, Any], key: str) -> list[Any]:
    value = doc.get(key, [])
    if not isinstance(value, list):
        raise ValueError(f"{key}: expected a list")
    return value


def _str(value: object, key: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{key}: expected a string")
    return value


def _typed(doc: Mapping[str, Any], key: str, kind: type[Any], default: Any) -> Any:
    value = doc.get(key, default)
    if value is None and default is None:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"{key}: expected {kind.__name__}, not {type(value).__name__}")
    return value


def _number(doc: Mapping[str, Any], key: str) -> float | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(f"{key}: expected a number, not {type(value).__name__}")
    return float(value)


def _tally(doc: Mapping[str, Any], key: str) -> tuple[tuple[str, int], ...]:
    value = _mapping(doc.get(key, {}), key)
    out = []
    for name, n in value.items():
        if not isinstance(n, int) or isinstance(n, bool):
            raise ValueError(f"{key}.{name}: expected a whole number")
        out.append((str(name), n))
    return tuple(out)
