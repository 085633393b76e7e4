"""What the daemon tells its viewers: each event as it happens, counts and hits, and the status record.

The daemon calls ``event`` for every authorisation, withdrawal and refusal, ``renewal`` for a
refresh (counted only), ``ignored`` for an ignored line (journalled up to a rate), ``hit`` for every line a pattern claimed, and ``publish`` at most once a second with
the ``DaemonStatus`` it built. Without ``--state`` nothing is written, but the counts are
still kept (the demo shows them). The files are ``status.Publisher``'s.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path

from logwatch.reporter import Reporter
from logwatch.status import KINDS, Publisher
from logwatch.statusrecord import DaemonStatus, hits_of

#: Events kept queued while the journal cannot be written.
KEEP_PENDING = 10000
#: The kinds of event that are a login read from the log.
LOGIN_KINDS = frozenset(("authorised", "refreshed", "refused"))
#: Ignored lines (failed and aborted logins) journalled per second at most; the rest are
#: counted only. Why: failures are the one kind of line a stranger can make Dovecot write
#: as fast as it likes (a password sprayer), and one event each was a tenth of the loop's
#: time at 10,000 logins a second with a failure each (bench_load.py).
IGNORED_PER_SECOND = 20


class Viewers:
    """The daemon's side of ``relaywatch status`` and ``tui``.

    Args:
        directory: where the files go (the state file's directory), or None for nowhere.
        report: rate-limited logging for files that cannot be written.
    """

    def __init__(self, directory: str | Path | None, report: Reporter) -> None:
        self.publisher = Publisher(directory) if directory is not None else None
        self.counts: Counter[str] = Counter()
        self.hits: Counter[tuple[str, str]] = Counter()
        self._report = report
        #: ``[second, logins]`` for the seconds of the last minute that had any.
        self._per_second: deque[list[int]] = deque()
        #: ``(second, ignored lines journalled in it)``.
        self._ignored = (0, 0)

    def event(self, kind: str, now: float, ip: str, user: str, service: str, reason: str) -> None:
        """Count one event and queue it for ``events.jsonl``."""
        self.counts[kind] += 1
        if kind in LOGIN_KINDS and reason != "restored":
            self._login(now)
        if self.publisher is not None:
            self.publisher.event(kind, now, ip, user, service, reason)

    def ignored(self, now: float, user: str, service: str, reason: Callable[[], str]) -> None:
        """Count one ignored line; journal it as an event unless ``IGNORED_PER_SECOND`` were
        journalled in this second already (``reason`` is only called for one journalled)."""
        second, n = self._ignored
        if int(now) != second:
            second, n = int(now), 0
        if n >= IGNORED_PER_SECOND:
            self.counts["ignored"] += 1
            return
        self._ignored = (second, n + 1)
        self.event("ignored", now, "", user, service, reason())

    def renewal(self, now: float) -> None:
        """Count a renewal: a login of a client already authorised. No event is queued: at
        an ISP's thousands a second, writing one each would be most of the daemon's work."""
        self.counts["refreshed"] += 1
        self._login(now)

    def logins_last_minute(self, now: float) -> int:
        """Logins (new, renewed, refused) counted in the 60 seconds up to ``now``."""
        self._forget(now)
        return sum(n for _, n in self._per_second)

    def _login(self, now: float) -> None:
        second = int(now)
        buckets = self._per_second
        if buckets and buckets[-1][0] == second:
            buckets[-1][1] += 1
        else:
            buckets.append([second, 1])
            self._forget(now)

    def _forget(self, now: float) -> None:
        buckets = self._per_second
        while buckets and buckets[0][0] <= now - 60:
            buckets.popleft()

    def hit(self, pattern_set: str, pattern: str) -> None:
        """Count one line claimed by ``pattern_set/pattern``."""
        self.hits[pattern_set, pattern] += 1

    def tallies(self) -> tuple[tuple[tuple[str, int], ...], tuple[tuple[str, int], ...]]:
        """``(hits, counts)`` as ``DaemonStatus`` spells them."""
        return hits_of(self.hits.items()), tuple((kind, self.counts[kind]) for kind in KINDS)

    def publish(self, record: DaemonStatus, now: float) -> None:
        """Append the queued events, then replace ``status.json`` with ``record``.

        A directory that cannot be written is reported (rate-limited), and the newest
        events stay queued for the next try.
        """
        if self.publisher is None:
            return
        try:
            self.publisher.flush()
            self.publisher.status(record.to_json())
        except OSError as exc:
            self.publisher.drop_pending(keep=KEEP_PENDING)
            self._report.say("status", logging.WARNING, "cannot write the status for viewers: %s",
                             exc.strerror or exc, now=now)
