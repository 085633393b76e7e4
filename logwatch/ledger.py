"""Decide which clients may relay, and until when: logins in, immutable Changes out.

Pure: no I/O and no clock. Every method that needs the time takes ``now`` (seconds since
the epoch), so the daemon's timer, a replay and a test all drive the same code, and a test
never patches a global.

Policy, in one place:

- A login authorises its client until ``last login + expire``; a later login renews it.
- A login whose own time already lies more than ``expire`` in the past authorises nothing.
  Why: after a restart the daemon re-reads the log it missed; those logins are history,
  and re-granting them would open relay to clients whose permission has run out.
- A login stamped in the future counts as happening ``now``. Why: a log clock ahead of
  ours (or a wrong year guessed for a syslog stamp) must not stretch a grant past policy.
- Addresses on the never-list are never authorised.
- At most ``max_entries`` grants exist; beyond that the oldest is withdrawn first, and the
  Change says so in a warning, because that overrides policy rather than applying it.

Why the odd data structure: all grants share one ``expire``, so expiry order is login
order. Grants live in one dict kept in ``until`` order (a renewal moves its key to the
end), and expiry reads from the front. A login that arrives out of order (``until`` earlier
than the newest) is also pushed on a small heap so it expires on time, not behind its
neighbours. No per-entry heap or linked list: that keeps a grant under 300 bytes of
process memory at a million entries (about 270 measured; ``benchmarks/bench_ledger.py``).
"""

from __future__ import annotations

import heapq
import sys
from collections.abc import Iterable, Iterator

from logwatch.addresses import NeverList, normalise
from logwatch.model import DROP, PUT, Change, Grant, LoginEvent

#: ``--max-entries`` when not given. A provider with a million mailboxes polling every five
#: minutes has about 400,000 clients live within a 30-minute window (issue 12); the cap is
#: 2.5 times that, and still bounds what a flood of forged lines can cost: about 270 MB of
#: grants (270 bytes each, ``benchmarks/bench_ledger.py``) and a map of 1,000,000 keys.
DEFAULT_MAX_ENTRIES = 1_000_000

#: ``--expire`` when not given, in seconds.
DEFAULT_EXPIRE = 1800


class Ledger:
    """The set of clients allowed to relay: per normalised IP, one ``Grant``.

    Args:
        expire_after: seconds a grant lasts after the client's last login (``--expire``).
        never: addresses never authorised (``--never``); default ``NeverList.default()``.
        max_entries: the cap on grants (``--max-entries``).
    """

    __slots__ = ("expire_after", "never", "max_entries", "_grants", "_late", "_tail")

    def __init__(
        self,
        expire_after: float = DEFAULT_EXPIRE,
        never: NeverList | None = None,
        max_entries: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
        if expire_after <= 0:
            raise ValueError(f"--expire: {expire_after!r} must be a positive number of seconds")
        if max_entries < 1:
            raise ValueError(f"--max-entries: {max_entries!r} must be at least 1")
        self.expire_after = expire_after
        self.never = NeverList.default() if never is None else never
        self.max_entries = max_entries
        # In ``until`` order, except keys also on ``_late``.
        self._grants: dict[str, Grant] = {}
        # (until, ip) for grants inserted behind a later one; stale items are skipped.
        self._late: list[tuple[float, str]] = []
        # The largest ``until`` inserted in order so far.
        self._tail = float("-inf")

    # ----------------------------------------------------------------- queries

    def __len__(self) -> int:
        return len(self._grants)

    def __contains__(self, ip: object) -> bool:
        return ip in self._grants

    def get(self, ip: str) -> Grant | None:
        """The grant for ``ip`` (normalised), or None."""
        return self._grants.get(ip)

    def grants(self) -> list[Grant]:
        """Every grant, oldest last login first: a snapshot for sinks, state and faces."""
        return sorted(self._grants.values(), key=_by_until)

    def __iter__(self) -> Iterator[Grant]:
        return iter(self.grants())

    def next_expiry(self) -> float | None:
        """When the next grant runs out (its ``until``), or None if there are none.

        Why: the daemon sleeps until exactly then, so an idle log still withdraws a client
        on time instead of when the next line happens to arrive.
        """
        oldest = self._oldest()
        return None if oldest is None else oldest.until

    def refusal(self, event: LoginEvent, now: float) -> str | None:
        """Why ``event`` would not authorise its client, or None if it would.

        The faces call this to explain a login that produced no grant.
        """
        ip = event.ip  # normalised by the matcher, once
        if ip not in self._grants and ip in self.never:
            return f"{ip} is on the never-list ({self.never})"
        if min(event.when, now) + self.expire_after <= now:
            return f"login at {event.when:.0f} is older than --expire ({self.expire_after:g}s)"
        return None

    # ----------------------------------------------------------------- changes

    def grant(self, event: LoginEvent, now: float) -> tuple[Change, ...]:
        """Record a successful login and return what the sinks must do.

        ``event.ip`` must be normalised (``LoginEvent``: the matcher did it); the state
        file's grants, read from disk, are normalised by ``restore``.

        Returns:
            ``()`` if the login authorises nothing (see ``refusal``) or renews nothing (an
            out-of-order older line for a client already granted); otherwise a ``PUT``
            with reason ``login`` or ``renew``, preceded by any ``DROP`` the cap forced.
        """
        when = min(event.when, now)
        if when + self.expire_after <= now:
            return ()
        ip = event.ip  # normalised by the matcher, once: not parsed again here
        old = self._grants.get(ip)
        if old is None and ip in self.never:
            return ()
        user = sys.intern(event.user)
        service = sys.intern(event.service)
        if old is not None:
            if when <= old.last:
                # An older or simultaneous line: count it, but it cannot extend anything.
                self._grants[ip] = Grant(
                    ip, old.user, old.service, old.first, old.last, old.count + 1, old.until
                )
                return ()
            new = Grant(
                ip, user, service, old.first, when, old.count + 1, when + self.expire_after
            )
            del self._grants[ip]
            self._insert(new)
            return (Change(PUT, new, "renew"),)
        dropped = self._make_room(1)
        new = Grant(ip, user, service, when, when, 1, when + self.expire_after)
        self._insert(new)
        return (*dropped, Change(PUT, new, "login"))

    def expire(self, now: float) -> tuple[Change, ...]:
        """Withdraw every grant whose ``until`` is at or before ``now``.

        Returns:
            One ``DROP`` with reason ``expired`` per grant withdrawn, oldest first.
        """
        gone: list[Grant] = []
        for ip, grant in self._grants.items():
            if grant.until > now:
                break
            gone.append(grant)
        for grant in gone:
            del self._grants[grant.ip]
        late = self._late
        while late and late[0][0] <= now:
            until, ip = heapq.heappop(late)
            behind = self._grants.get(ip)
            if behind is not None and behind.until == until:
                del self._grants[ip]
                gone.append(behind)
        if not self._grants:
            self._late.clear()
            self._tail = float("-inf")
        gone.sort(key=_by_until)
        return tuple(Change(DROP, grant, "expired") for grant in gone)

    def restore(self, grants: Iterable[Grant], now: float) -> tuple[Change, ...]:
        """Load grants saved by ``--state``, under today's policy, and return their PUTs.

        A saved grant is dropped if its last login plus the *current* ``--expire`` has
        passed, if its address is now on the never-list, or if it is not an address;
        ``until`` is recomputed, so shortening ``--expire`` takes effect across a restart.
        A restart therefore withdraws nobody still owed relay and re-grants nobody expired.

        Returns:
            ``PUT`` changes with reason ``restored`` (and ``DROP``s with reason ``cap`` if
            the saved set exceeds ``max_entries``; the oldest go first).
        """
        changes: list[Change] = []
        for saved in sorted(grants, key=_by_last):
            last = min(saved.last, now)
            if last + self.expire_after <= now:
                continue
            ip = normalise(saved.ip)
            if ip is None or ip in self.never:
                continue
            old = self._grants.get(ip)
            if old is not None:
                if old.last >= last:
                    continue
                del self._grants[ip]
            else:
                changes.extend(self._make_room(1))
            first = min(saved.first, last)
            count = max(1, int(saved.count))
            grant = Grant(
                ip, sys.intern(saved.user), sys.intern(saved.service),
                first, last, count, last + self.expire_after,
            )
            self._insert(grant)
            changes.append(Change(PUT, grant, "restored"))
        return tuple(changes)

    def allow(self, ip: str, user: str, until: float, now: float, reason: str = "manual") -> tuple[Change, ...]:
        """Authorise ``ip`` by hand until ``until`` (``relaywatch allow``); the never-list holds.

        The grant's ``last`` is ``until - expire_after``, so every sink and every restart reads
        the same end (a relay-ctrl file's mtime is ``last``), and a later login extends it only
        where a login would (``grant``). ``last`` may lie ahead of ``now``: that is the encoding.

        Returns:
            ``()`` if ``ip`` is on the never-list or ``until`` is not after ``now``; else the
            ``PUT`` (with ``reason``), preceded by any ``DROP`` the cap forced.
        """
        if ip in self.never or until <= now:
            return ()
        old = self._grants.pop(ip, None)
        dropped = self._make_room(1) if old is None else []
        last = until - self.expire_after
        new = Grant(ip, sys.intern(user), "manual", min(now, old.first if old else now), last,
                    (old.count if old else 0) + 1, until)
        self._insert(new)
        return (*dropped, Change(PUT, new, reason))

    def withdraw(self, ip: str, reason: str) -> Change | None:
        """Withdraw ``ip`` now (``relaywatch revoke``); None if it holds no grant."""
        grant = self._grants.pop(ip, None)
        return None if grant is None else Change(DROP, grant, reason)

    # ----------------------------------------------------------------- internals

    def _insert(self, grant: Grant) -> None:
        """Append ``grant`` (its key already absent) and keep the expiry order true."""
        self._grants[grant.ip] = grant
        if grant.until < self._tail:
            heapq.heappush(self._late, (grant.until, grant.ip))
        else:
            self._tail = grant.until

    def _oldest(self) -> Grant | None:
        """The grant that runs out first, after discarding stale heap items."""
        late = self._late
        while late:
            until, ip = late[0]
            grant = self._grants.get(ip)
            if grant is not None and grant.until == until:
                break
            heapq.heappop(late)
        front = next(iter(self._grants.values()), None)
        if late:
            behind = self._grants[late[0][1]]
            if front is None or behind.until < front.until:
                return behind
        return front

    def _make_room(self, wanted: int) -> list[Change]:
        """Withdraw the oldest grants until ``wanted`` more fit under the cap."""
        dropped: list[Change] = []
        while self._grants and len(self._grants) + wanted > self.max_entries:
            oldest = self._oldest()
            assert oldest is not None
            del self._grants[oldest.ip]
            dropped.append(
                Change(
                    DROP, oldest, "cap",
                    warning=(
                        f"--max-entries {self.max_entries} reached: withdrew {oldest.ip} "
                        f"(last login {oldest.last:.0f}) before its expiry at "
                        f"{oldest.until:.0f}"
                    ),
                )
            )
        return dropped


def _by_until(grant: Grant) -> float:
    return grant.until


def _by_last(grant: Grant) -> float:
    return grant.last
