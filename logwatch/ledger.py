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
- With ``--sessions`` (``session_max`` given): a login that names its session
  (``LoginEvent.session``) opens it, and the client stays authorised while any session
  from its address is open, and until ``expire`` after the last one ends (or after its
  last login, whichever is later). A session ends on its logout (``end``), when Dovecot
  starts or stops (``end_all``), or ``session_max`` after it began, whatever happens: a
  lost logout line or a killed process can never keep an address for ever. While a
  session is open, the grant is renewed every ``expire / 2`` with ``last`` = now (reason
  ``connected``), so a relay-ctrl file's mtime stays fresh for ``relay-ctrl-check``.
- At most ``max_entries`` grants exist; beyond that the oldest is withdrawn first, and the
  Change says so in a warning, because that overrides policy rather than applying it.

Why the odd data structure: all grants share one ``expire``, so expiry order is login
order. Grants live in one dict kept in ``until`` order (a renewal moves its key to the
end), and expiry reads from the front. A login that arrives out of order (``until`` earlier
than the newest) is also pushed on a small heap so it expires on time, not behind its
neighbours. No per-entry heap or linked list: that keeps a grant under 300 bytes of
process memory at a million entries (about 270 measured; ``benchmarks/bench_ledger.py``).

Sessions, the same way: one dict, session id -> ``(ip, start)``, in start order (all share
``session_max``, so that is also the order they are forced to end), a small heap for the
ones that arrive out of order, a count of open sessions per address, and a heap of
``(refresh due, ip)`` for connected addresses only (stale items are skipped). An open
session costs about 200 bytes beyond its grant (``benchmarks/bench_sessions.py``).
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import operator
import sys
from collections.abc import Iterable, Iterator, Mapping

from logwatch import model
from logwatch.addresses import NeverList, canonical_number, normalise
from logwatch.model import DROP, PUT, Change, Grant, LoginEvent, SavedGrant

#: ``--max-entries`` when not given. A provider with a million mailboxes polling every five
#: minutes has about 400,000 clients live within a 30-minute window (issue 12); the cap is
#: 2.5 times that, and still bounds what a flood of forged lines can cost: about 270 MB of
#: grants (270 bytes each, ``benchmarks/bench_ledger.py``) and a map of 1,000,000 keys.
DEFAULT_MAX_ENTRIES = 1_000_000

#: ``--expire`` when not given, in seconds.
DEFAULT_EXPIRE = 1800

#: ``--session-max`` when not given, in seconds: a working day, so a client that stays
#: connected all day keeps relaying, and a lost logout costs at most that.
DEFAULT_SESSION_MAX = 12 * 3600


class Ledger:
    """The set of clients allowed to relay: per normalised IP, one ``Grant``.

    Args:
        expire_after: seconds a grant lasts after the client's last login (``--expire``).
        never: addresses never authorised (``--never``); default ``NeverList.default()``.
        max_entries: the cap on grants (``--max-entries``).
        session_max: follow sessions (``--sessions``), each for at most this many seconds
            (``--session-max``); None: sessions are not followed (a login's session id is
            ignored).
    """

    __slots__ = ("expire_after", "never", "max_entries", "_grants", "_late", "_tail", "session_max",
                 "_sessions", "_late_sessions", "_session_tail", "_open", "_refresh", "_session_log")

    def __init__(
        self,
        expire_after: float = DEFAULT_EXPIRE,
        never: NeverList | None = None,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        session_max: float | None = None,
    ) -> None:
        if expire_after <= 0:
            raise ValueError(f"--expire: {expire_after!r} must be a positive number of seconds")
        if max_entries < 1:
            raise ValueError(f"--max-entries: {max_entries!r} must be at least 1")
        if session_max is not None and session_max <= 0:
            raise ValueError(f"--session-max: {session_max!r} must be a positive number of seconds")
        self.expire_after = expire_after
        self.never = NeverList.default() if never is None else never
        self.max_entries = max_entries
        # In ``until`` order, except keys also on ``_late``.
        self._grants: dict[str, Grant] = {}
        # (until, ip) for grants inserted behind a later one; stale items are skipped.
        self._late: list[tuple[float, str]] = []
        # The largest ``until`` inserted in order so far.
        self._tail = float("-inf")
        self.session_max = session_max
        # Session id -> (ip, start), in start order except ids also on ``_late_sessions``.
        self._sessions: dict[str, tuple[str, float]] = {}
        self._late_sessions: list[tuple[float, str]] = []
        self._session_tail = float("-inf")
        # ip -> how many of its sessions are open (only addresses with one or more).
        self._open: dict[str, int] = {}
        # (when the grant of a connected ip is due for renewal, ip); stale items skipped.
        self._refresh: list[tuple[float, str]] = []
        # Sessions opened (id -> (ip, start)) or ended (id -> None) since ``session_changes``
        # last ran: what the state must write in this step's transaction.
        self._session_log: dict[str, tuple[str, float] | None] = {}

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
        """When ``expire`` next has work: a grant runs out (its ``until``), a connected
        client's grant is due for renewal, or a session reaches ``session_max``; None if
        nothing is pending.

        Why: the daemon sleeps until exactly then, so an idle log still withdraws a client
        on time instead of when the next line happens to arrive.
        """
        oldest = self._oldest()
        due = [] if oldest is None else [oldest.until]
        if self._refresh:
            due.append(self._refresh[0][0])
        first = self._first_session()
        if first is not None and self.session_max is not None:
            due.append(first[1] + self.session_max)
        return min(due) if due else None

    @property
    def following(self) -> bool:
        """True if sessions are followed (``--sessions``)."""
        return self.session_max is not None

    def open_sessions(self, ip: str) -> int:
        """How many sessions from ``ip`` (normalised) are open."""
        return self._open.get(ip, 0)

    def session_count(self) -> int:
        """How many sessions are open, from every address."""
        return len(self._sessions)

    def sessions(self) -> list[tuple[str, str, float]]:
        """Every open session as ``(session id, ip, start)``, oldest first: for the state."""
        return sorted(((sid, ip, start) for sid, (ip, start) in self._sessions.items()), key=_by_start)

    def session_changes(self) -> tuple[list[tuple[str, str, float]], list[str]]:
        """The sessions opened (``(id, ip, start)``) and the ids ended since the last call,
        and forget them: the daemon writes them with the grants' changes of the same step
        (``durability.record``). A session opened and ended in between is an end."""
        log = self._session_log
        if not log:
            return [], []
        self._session_log = {}
        opened = [(sid, row[0], row[1]) for sid, row in log.items() if row is not None]
        return opened, [sid for sid, row in log.items() if row is None]

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
        file's grants, read from disk, are checked by ``state`` and restored by ``restore_saved``.

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
                self._open_session(event.session, ip, when, now)
                return ()
            new = Grant(
                ip, user, service, old.first, when, old.count + 1, when + self.expire_after
            )
            del self._grants[ip]
            self._insert(new)
            if ip in self._open:
                self._schedule(new)
            self._open_session(event.session, ip, when, now)
            return (Change(PUT, new, "renew"),)
        dropped = self._make_room(1)
        new = Grant(ip, user, service, when, when, 1, when + self.expire_after)
        self._insert(new)
        self._open_session(event.session, ip, when, now)
        return (*dropped, Change(PUT, new, "login"))

    def end(self, session: str, when: float, now: float) -> tuple[Change, ...]:
        """A session's logout was read: it is over at ``when`` (at most ``now``).

        Returns:
            ``()`` if the session is not open (never opened, a line read twice, sessions
            not followed) or the address has other open sessions; else, for its last
            session, a ``PUT`` (reason ``logout``: the grant now lasts ``expire`` after
            ``when``) or a ``DROP`` if that time has passed already.
        """
        found = self._sessions.pop(session, None)
        if found is None:
            return ()
        self._note_end(session)
        return self._closed(found[0], min(when, now), now, "logout")

    def end_all(self, when: float, now: float, reason: str) -> tuple[Change, ...]:
        """Every open session is over at ``when`` (Dovecot started or stopped, or its log
        shows that sessions cannot be followed): each address is kept ``expire`` after that."""
        ended = list(self._sessions.values())
        for session in self._sessions:
            self._note_end(session)
        self._sessions.clear()
        self._late_sessions.clear()
        self._session_tail = float("-inf")
        changes: list[Change] = []
        for ip, _start in ended:
            changes.extend(self._closed(ip, min(when, now), now, reason))
        return tuple(changes)

    def restore_sessions(self, saved: Iterable[tuple[str, str, float]], now: float,
                         grants: Mapping[str, SavedGrant] | None = None) -> tuple[Change, ...]:
        """Reopen sessions saved with the state (call after ``restore``), under today's
        ``session_max`` and never-list. A session whose address lost its grant while
        relaywatch was down (it outlasted ``expire``) is granted again from ``now``: the
        session is open until its logout, which is read from the log where it was left.
        ``grants``: the saved grants by address, whose user, service, first login and count
        such a grant keeps (else they are unknown: empty).

        Returns:
            ``PUT`` changes with reason ``restored`` for grants made again.
        """
        if self.session_max is None:
            return ()
        changes: list[Change] = []
        for session, raw_ip, start in sorted(saved, key=_by_start):
            ip = normalise(raw_ip)
            if ip is None or ip in self.never or session in self._sessions:
                continue
            start = min(start, now)
            if start + self.session_max <= now:
                continue
            grant = self._grants.get(ip)
            if grant is None:
                changes.extend(self._make_room(1))
                old = grants.get(ip) if grants is not None else None
                grant = (Grant(ip, "", "", start, now, 1, now + self.expire_after) if old is None else
                         Grant(ip, sys.intern(old[1]), sys.intern(old[2]), min(old[3], start, now), now,
                               max(1, int(old[5])), now + self.expire_after))
                self._insert(grant)
                changes.append(Change(PUT, grant, "restored"))
            self._open_session(session, ip, start, now)
        return tuple(changes)

    def expire(self, now: float) -> tuple[Change, ...]:
        """Withdraw every grant whose ``until`` is at or before ``now``.

        With sessions: first every session open for ``session_max`` ends (reason
        ``session-max``), then every connected client's grant due for renewal is renewed
        (``PUT``, reason ``connected``), and a connected client is never withdrawn.

        Returns:
            One ``DROP`` with reason ``expired`` per grant withdrawn, oldest first (after
            the session changes).
        """
        changes: list[Change] = []
        if self.session_max is not None:
            changes.extend(self._end_overdue(now))
            changes.extend(self._renew_connected(now))
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
        for grant in gone:
            if grant.ip in self._open:  # connected, and its renewal came late: renew it now
                changes.append(self._renew(grant, now))
            else:
                changes.append(Change(DROP, grant, "expired"))
        return tuple(changes)

    def restore(self, grants: Iterable[Grant], now: float) -> tuple[Change, ...]:
        """``restore_saved`` for grants as the ledger holds them (a reload's, or a viewer's
        read of the state): their ``until`` is not read, and their addresses are checked."""
        return self.restore_saved([(g.ip, g.user, g.service, g.first, g.last, g.count) for g in grants], now)

    def restore_saved(self, saved: Iterable[SavedGrant], now: float, *, checked: bool = False) -> tuple[Change, ...]:
        """Load grants saved by ``--state``, under today's policy, and return their PUTs.

        A saved grant is dropped if its last login plus the *current* ``--expire`` has
        passed, if its address is now on the never-list, or if it is not an address;
        ``until`` is recomputed, so shortening ``--expire`` takes effect across a restart.
        A restart therefore withdraws nobody still owed relay and re-grants nobody expired.
        A last login in the future counts as ``now``.

        ``checked``: every row is as ``state`` hands them on, which it refuses otherwise
        (finite times, ``first <= last``, a count of at least one, the address in
        ``normalise``'s form), so the addresses are not parsed but for the never-list.

        Why two ways: a start-up restores a million grants into an empty ledger, which in
        bulk is a sort, a bisection for the expired, one pass over the addresses for the
        never-list (``NeverList.listed``) and a ``Grant`` and a ``Change`` each, made in
        bulk (``model.grants``), all in order, so the dict of grants needs no late heap; anything else (a ledger not empty,
        rows not ``checked``, more than ``max_entries`` live, an address twice) takes one
        grant at a time (``_restore_each``), with the same result.

        Returns:
            ``PUT`` changes with reason ``restored``, oldest last login first (and ``DROP``s
            with reason ``cap`` if the saved set exceeds ``max_entries``; the oldest go first).
        """
        expire = self.expire_after
        rows = sorted(saved, key=_saved_last)
        if not checked or self._grants:
            return self._restore_each(rows, now)
        # Live from ``cut`` on: ``min(last, now) + expire`` only grows along ``rows``.
        cut = bisect.bisect_right(rows, now, key=lambda row: min(row[4], now) + expire)
        rows = rows[cut:]
        listed = self.never.listed([row[0] for row in rows])
        if listed:
            rows = [row for position, row in enumerate(rows) if position not in listed]
        if len(rows) > self.max_entries:
            return self._restore_each(rows, now)
        future = bisect.bisect_right(rows, now, key=_saved_last)  # logged ahead of our clock: as at ``now``
        # The services are a handful: interned, a million strings go. The users' names are
        # not: interning a million fresh names cost 0.55 s and left the process larger,
        # not smaller (the names read are freed either way); a login interns its own.
        intern = sys.intern
        made = model.grants(itertools.chain(
            ((ip, user, intern(service), first, last, count, last + expire)
             for ip, user, service, first, last, count in rows[:future]),
            ((ip, user, intern(service), min(first, now), now, count, now + expire)
             for ip, user, service, first, _last, count in rows[future:])))
        grants = dict(zip(map(_saved_ip, rows), made))
        if len(grants) < len(made):  # an address twice: the one-at-a-time rules decide which stays
            return self._restore_each(rows, now)
        self._grants = grants
        if made:
            self._tail = made[-1].until
        return tuple(model.changes(PUT, made, "restored"))

    def _restore_each(self, rows: list[SavedGrant], now: float) -> tuple[Change, ...]:
        """``restore_saved`` one grant at a time, ``rows`` in ``last`` order."""
        changes: list[Change] = []
        for saved_ip, user, service, saved_first, saved_last, saved_count in rows:
            last = min(saved_last, now)
            if last + self.expire_after <= now:
                continue
            known = canonical_number(saved_ip)  # the quick path: the store writes canonical addresses
            if known is not None:
                ip = saved_ip
                if self.never.has(*known):
                    continue
            else:
                normalised = normalise(saved_ip)
                if normalised is None or normalised in self.never:
                    continue
                ip = normalised
            old = self._grants.get(ip)
            if old is not None:
                if old.last >= last:
                    continue
                del self._grants[ip]
            elif len(self._grants) >= self.max_entries:
                changes.extend(self._make_room(1))
            first = min(saved_first, last)
            count = max(1, int(saved_count))
            until = last + self.expire_after
            grant = Grant(ip, sys.intern(user), sys.intern(service), first, last, count, until)
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

    def _open_session(self, session: str, ip: str, start: float, now: float) -> None:
        """Record ``session`` from ``ip`` as open since ``start`` (its grant exists)."""
        if not session or self.session_max is None or session in self._sessions:
            return  # none named, not followed, or a line read twice
        if start + self.session_max <= now:
            return
        self._sessions[session] = (ip, start)
        self._session_log[session] = (ip, start)
        if start < self._session_tail:
            heapq.heappush(self._late_sessions, (start, session))
        else:
            self._session_tail = start
        count = self._open.get(ip, 0)
        self._open[ip] = count + 1
        if count == 0:
            grant = self._grants.get(ip)
            if grant is not None:
                self._schedule(grant)

    def _note_end(self, session: str) -> None:
        """For the state: ``session`` ended, its row goes (a delete of a row never written,
        for a session opened and ended in one step, costs nothing and is always right)."""
        self._session_log[session] = None

    def _schedule(self, grant: Grant) -> None:
        """Renew the grant of a connected client when half its ``expire`` has passed."""
        heapq.heappush(self._refresh, (grant.last + self.expire_after / 2, grant.ip))

    def _renew(self, grant: Grant, now: float) -> Change:
        """A connected client's grant, renewed as if it were seen now."""
        new = Grant(grant.ip, grant.user, grant.service, grant.first, now, grant.count,
                    now + self.expire_after)
        self._grants.pop(grant.ip, None)
        self._insert(new)
        self._schedule(new)
        return Change(PUT, new, "connected")

    def _renew_connected(self, now: float) -> list[Change]:
        changes = []
        refresh = self._refresh
        while refresh and refresh[0][0] <= now:
            due, ip = heapq.heappop(refresh)
            grant = self._grants.get(ip)
            if grant is None or ip not in self._open or grant.last + self.expire_after / 2 != due:
                continue  # gone, no longer connected, or renewed since
            changes.append(self._renew(grant, now))
        return changes

    def _first_session(self) -> tuple[str, float] | None:
        """The open session that began first, as ``(id, start)``."""
        late = self._late_sessions
        while late and late[0][1] not in self._sessions:
            heapq.heappop(late)
        front = next(iter(self._sessions.items()), None)
        first = None if front is None else (front[0], front[1][1])
        if late and (first is None or late[0][0] < first[1]):
            first = (late[0][1], late[0][0])
        return first

    def _end_overdue(self, now: float) -> list[Change]:
        """End every session open for ``session_max``: at its start plus that."""
        assert self.session_max is not None
        changes: list[Change] = []
        while True:
            first = self._first_session()
            if first is None or first[1] + self.session_max > now:
                break
            session, start = first
            ip, _ = self._sessions.pop(session)
            self._note_end(session)
            changes.extend(self._closed(ip, start + self.session_max, now, "session-max"))
        if not self._sessions:
            self._late_sessions.clear()
            self._session_tail = float("-inf")
        return changes

    def _closed(self, ip: str, end: float, now: float, reason: str) -> tuple[Change, ...]:
        """One session from ``ip`` ended at ``end``; if it was the last, the grant now lasts
        ``expire`` after ``end`` (or after its last login, if later)."""
        count = self._open.get(ip, 0) - 1
        if count > 0:
            self._open[ip] = count
            return ()
        self._open.pop(ip, None)
        grant = self._grants.get(ip)
        if grant is None:
            return ()
        last = max(grant.last, end)
        if last + self.expire_after <= now:
            del self._grants[ip]
            return (Change(DROP, grant, reason),)
        if last == grant.last:
            return ()
        new = Grant(ip, grant.user, grant.service, grant.first, last, grant.count, last + self.expire_after)
        del self._grants[ip]
        self._insert(new)
        return (Change(PUT, new, reason),)

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


#: A saved grant's ``last``, and its address (``SavedGrant``).
_saved_last = operator.itemgetter(4)
_saved_ip = operator.itemgetter(0)


def _by_start(row: tuple[str, str, float]) -> float:
    return row[2]
