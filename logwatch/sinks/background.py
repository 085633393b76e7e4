"""An outlet on a thread of its own, for a sink that can block: a database that hangs.

Why: the SQL sink commits over the network, with timeouts of 5 s (connect) and 10 s (a
statement). On the daemon's loop, a database that stops answering (a failover, a lock held
elsewhere, a frozen VM) held the loop for up to those timeouts: no line read, no expiry,
no other sink served. Here the loop hands the changes over and goes on; this thread sends
them through the sink's ``Outlet``, as the loop did, with its backoff and resync.

Why only such sinks: measured with ``bench_load.py`` (10,000 logins/s, 50,000 live), moving
every write to a thread made publishing slower, not faster: the loop is busy with Python
most of the time, and a thread that gives the GIL up for each of its many small system
calls (a relay-ctrl file, an fsync) waits up to the switch interval to get it back each
time; p50 login -> published went from 5 to 3,900 ms. A SQL sink makes a few calls per
commit, 50 commits a second at most (``batch_interval``), so that cost stays small, and
what it buys is that nothing the database does reaches the loop.

What stays true:

- The state has every change before this outlet does (the daemon records first, on the
  loop), so a SIGKILL loses nothing here: a start publishes the whole ledger again.
- Changes go out in the order handed over; those queued while one commit runs go into the
  next one together.
- ``health`` says failing when the sink does, or when changes have waited here longer
  than ``STUCK`` seconds (the database hangs: no error yet, but no commit either).
- At stop, ``flush`` waits up to ``STOP_WAIT`` seconds for the thread; a database that
  still hangs then is left (the state has the changes; the next start sends them).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from logwatch.model import Change
from logwatch.sinks.outlet import Outlet
from logwatch.statusrecord import SinkStatus

log = logging.getLogger("relaywatch")

#: Seconds changes may wait here before the status calls the sink failing.
STUCK = 5.0
#: Seconds the stop waits for a sink that does not answer.
STOP_WAIT = 15.0


class BackgroundOutlet:
    """``outlet`` served by a thread of its own (see the module docstring).

    Args:
        outlet: the sink's outlet; from now on only this object's thread calls its
            ``send`` (the loop calls ``health``, which only reads values).
        clock: the daemon's clock, for the outlet's backoff.
    """

    def __init__(self, outlet: Outlet, clock: Callable[[], float]) -> None:
        self.outlet = outlet
        self.sink = outlet.sink
        self.spec = outlet.spec
        self._clock = clock
        self._queue: queue.SimpleQueue[tuple[list[Change], float] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        #: Changes handed over and not taken by the thread yet, and since when the oldest
        #: waits; since when the thread's current send runs (monotonic seconds).
        self._queued = 0
        self._since: float | None = None
        self._sending: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"relaywatch-outlet {self.spec}", daemon=True)
        self._thread.start()

    @property
    def failing(self) -> str:
        return self.outlet.failing

    # ----------------------------------------------------------------- the loop's side

    def send(self, changes: Sequence[Change], now: float) -> None:
        """Hand ``changes`` over; this returns at once (the thread retries on its own)."""
        if not changes:
            return
        with self._lock:
            self._queued += len(changes)
            if self._since is None:
                self._since = time.monotonic()
        self._queue.put((list(changes), now))

    def due(self) -> float | None:
        """None: the loop never needs to wake for this outlet."""
        return None

    def flush(self, now: float) -> None:
        """At stop: let the thread finish what it has (up to ``STOP_WAIT``), then send what
        is still owed once more, here."""
        self._queue.put(None)
        self._thread.join(STOP_WAIT)
        if self._thread.is_alive():
            log.warning("%s did not answer within %.0f s at stop; %d change(s) not sent (the state has them, "
                        "and the next start sends them)", self.spec, STOP_WAIT, self._queued + len(self.outlet.backlog))
            return
        self.outlet.flush(now)

    def health(self) -> SinkStatus:
        """The outlet's own, with what waits here added to its backlog."""
        status = self.outlet.health()
        with self._lock:
            queued, since, sending = self._queued, self._since, self._sending
        now = time.monotonic()
        waited = max(now - since if since is not None else 0.0, now - sending if sending is not None else 0.0)
        if not queued and waited <= STUCK:
            return status
        stuck = waited > STUCK
        return replace(status, backlog=status.backlog + queued, ok=status.ok and not stuck,
                       error=status.error or (f"{self.spec}: no commit for {waited:.0f} s (the database does not "
                                              "answer)" if stuck else ""))

    def close(self) -> None:
        if not self._thread.is_alive():
            self.outlet.close()

    # ----------------------------------------------------------------- the thread's side

    def _run(self) -> None:
        while True:
            due = self.outlet.due()
            wait = None if due is None else max(0.0, due - self._clock())
            try:
                item = self._queue.get(timeout=wait)
            except queue.Empty:
                self.outlet.send((), self._clock())  # a retry is due
                continue
            if item is None:
                return
            changes, now = list(item[0]), item[1]
            while True:  # what was queued meanwhile goes into the same commit
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)
                    break
                changes.extend(more[0])
                now = more[1]
            with self._lock:
                self._queued -= len(changes)
                self._since = time.monotonic() if self._queued else None
                self._sending = time.monotonic()
            try:
                self.outlet.send(changes, now)
            except Exception as exc:  # a bug must not end this sink's publishing for good
                log.exception("%s: internal error while publishing, please report it: %s", self.spec, exc)
            finally:
                with self._lock:
                    self._sending = None

