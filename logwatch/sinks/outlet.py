"""One sink as the daemon sees it: the changes it still owes, retried with backoff, and its health.

Why a backlog and not a retry loop: a Postfix map that cannot be rebuilt must not stop the
relay-ctrl directory, the expiry timer or the log from moving on. Every sink operation is
idempotent (put rewrites, drop of a missing entry is nothing), so the backlog can be re-sent
whole.

What a ``SinkError`` says decides what happens (``SinkError.retryable``, like Postfix's
``DICT_ERR_RETRY`` versus ``DICT_ERR_CONFIG``):

- retryable (a full disk, a busy MTA): the backlog is kept and sent again after 1 s,
  doubling up to 60 s; one log line a minute says so;
- not retryable, from ``put`` or ``drop``: only that change is dropped, for this sink, with
  one log line; the rest of the backlog goes on, so one change no retry can help never
  blocks the sink for ever;
- not retryable, from ``commit``: the batch is dropped (sending it again cannot help) and
  the sink reports failing until a commit succeeds.

A sink that may have lost what it published (a database that went away or had its table
dropped: ``SinkError.resync``) gets the whole ledger at its next try, from ``snapshot``,
with the withdrawals still owed: sending the backlog alone would leave out the grants it
lost before the failure.

A sink with a ``batch_interval`` (seconds; the SQL sink's is 20 ms) is committed to at
most that often: what arrives in between waits in the backlog and goes in the next commit
(``due`` says when, so the daemon's loop wakes for it). Why: at thousands of logins a
second, a database costs per statement and per transaction far more than per row.

``health`` joins the outlet's view (backlog, last error) with the sink's own
(``Sink.health``: the Postfix sink rebuilds on a thread of its own), so the status says
failing whenever the MTA does not see what the ledger holds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

from logwatch.durations import format_duration
from logwatch.model import DROP, PUT, Change, Grant
from logwatch.reporter import Reporter
from logwatch.sinks import Sink, SinkError
from logwatch.statusrecord import SinkStatus

log = logging.getLogger("relaywatch")

#: Retry delays for a failing sink, doubling up to the maximum, in seconds.
RETRY_MIN, RETRY_MAX = 1.0, 60.0


class Outlet:
    """A sink with the changes it still owes.

    Args:
        sink: an open sink.
        report: rate-limited logging, shared with the daemon.
        retry_min, retry_max: the backoff, in seconds.
        snapshot: every grant the ledger holds now, for a sink that asks to be resynced;
            None: the backlog alone is sent again.
    """

    def __init__(self, sink: Sink, report: Reporter, retry_min: float = RETRY_MIN,
                 retry_max: float = RETRY_MAX, snapshot: Callable[[], Iterable[Grant]] | None = None) -> None:
        self.sink = sink
        self.spec = sink.spec
        self.backlog: list[Change] = []
        self.retry_at = 0.0
        self.delay = self.retry_min = retry_min
        self.retry_max = retry_max
        self.last_ok: float | None = None
        #: One line naming the outlet's own last failure; "" once a batch went through.
        self.failing = ""
        self._report = report
        self._snapshot = snapshot
        #: The sink asked for the whole ledger at its next try (``SinkError.resync``).
        self._resync = False

    def send(self, changes: Sequence[Change], now: float) -> None:
        """Apply ``changes`` (after any backlog) and commit, unless a retry is not due yet."""
        self.backlog.extend(changes)
        if self._resync and self._snapshot is not None and now >= self.retry_at:
            self._resync = False
            self.backlog[:] = [c for c in self.backlog if c.kind == DROP] + [
                Change(PUT, grant, "restored") for grant in self._snapshot()]
        if not self.backlog or now < self.retry_at:
            return
        kept: list[Change] = []
        for n, change in enumerate(self.backlog):
            try:
                if change.kind == PUT:
                    self.sink.put(change.grant)
                elif change.kind == DROP:
                    self.sink.drop(change.grant.ip, early=change.reason != "expired")
                else:
                    raise ValueError(f"unknown change kind {change.kind!r}")
            except SinkError as exc:
                if exc.retryable:
                    self.backlog[:] = kept + self.backlog[n:]
                    self._retry_later(exc, now)
                    return
                log.error("%s; %s %s dropped for this sink (retrying cannot help)", exc, change.kind, change.ip)
                continue
            kept.append(change)
        try:
            self.sink.commit()
        except SinkError as exc:
            if exc.retryable:
                self.backlog[:] = kept
                self._retry_later(exc, now)
                return
            log.error("%s; %d change(s) dropped for this sink (retrying cannot help)", exc, len(kept))
            self.backlog.clear()
            self.failing = str(exc)
            return
        if self.failing:
            log.info("%s: working again; %d change(s) published", self.spec, len(kept))
        self.backlog.clear()
        self.failing = ""
        self.delay = self.retry_min
        self.last_ok = now
        self.retry_at = now + float(getattr(self.sink, "batch_interval", 0.0))

    def due(self) -> float | None:
        """When the backlog is next sent (None: nothing is owed)."""
        return self.retry_at if self.backlog else None

    def flush(self, now: float) -> None:
        """Send what is owed now, whatever the backoff says (at stop)."""
        self.retry_at = 0.0
        self.send((), now)

    def health(self) -> SinkStatus:
        """The outlet's view and the sink's own (``Sink.health``), as one status entry."""
        own = self.sink.health()
        # A sink failing on its own that never finished its work has no last good time.
        last_ok = own.last_ok if own.last_ok is not None else self.last_ok if own.ok else None
        return SinkStatus(self.spec, ok=not self.failing and not self.backlog and own.ok, last_ok=last_ok,
                          error=self.failing or own.error, backlog=len(self.backlog),
                          update_seconds=own.update_seconds)

    def close(self) -> None:
        """Close the sink; a failure to close is logged, never raised."""
        try:
            self.sink.close()
        except SinkError as exc:
            log.error("%s", exc)

    def _retry_later(self, exc: SinkError, now: float) -> None:
        self.failing = str(exc)
        self._resync |= exc.resync
        self.retry_at = now + self.delay
        self._report.say(f"sink {self.spec}", logging.ERROR, "%s; %d change(s) kept, retrying in %s",
                         exc, len(self.backlog), format_duration(self.delay), now=now)
        self.delay = min(self.delay * 2, self.retry_max)
