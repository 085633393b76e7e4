"""Decide, with DNS blocklists, whether a freshly logged-in address may be authorised to relay.

Why a gate: POP/IMAP-before-SMTP trusts any address that logged in, and a stolen password
used from a botnet host logs in like anyone else. A DNSBL (``--dnsbl ZONE``, repeatable, off
by default) names such hosts: the address ``198.51.100.2`` is listed in ``zone`` when
``2.100.51.198.zone`` has an A record (IPv6: the 32 nibbles, reversed). A listed address is
refused, with the zone and the code it returned.

Why non-blocking: the daemon's loop must never wait for DNS. ``Gate.submit`` answers from
the cache at once or starts a lookup in a worker thread; ``Gate.ready`` hands back what has
been decided since, and decides by the fail policy any lookup older than the timeout.
``Gate.admit`` and ``Gate.released`` do the same for whole logins: a login waiting for its
decision is parked in the gate, and ``holding`` tells the daemon not to save a log position
past it (a crash must re-read a login not yet decided, not skip it). A
lookup that times out or fails does not stop authorisation (``--dnsbl-fail open``, the
default) unless the admin chose ``--dnsbl-fail closed``: a dead blocklist must not lock
every user out of sending mail unless that is what the admin asked for.

Answers outside 127.0.0.0/8, and the 127.255.255.0/24 codes lists use to say "you queried
wrongly" (Spamhaus answers 127.255.255.254 to queries relayed by public resolvers), are
treated as failed lookups, not as listings: otherwise a hijacking resolver or a refused
query would list everyone.

Which zone: one that lists compromised and spamming hosts, never one of dynamic address
space. POP/IMAP-before-SMTP exists for roaming users on dial-up and residential addresses,
which is what a policy list (Spamhaus PBL, part of ``zen``) lists: ``zen`` would refuse
them all. Spamhaus's ``sbl-xbl`` (or ``xbl``) fits.
"""

from __future__ import annotations

import ipaddress
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from logwatch.durations import format_duration
from logwatch.model import LoginEvent
from logwatch.ptr import resolver_for

#: Seconds a decision from an answered lookup (listed or not) is reused.
CACHE_TTL = 900.0
#: Worker threads doing lookups.
WORKERS = 4
#: Seconds between sweeps of expired decisions out of the cache.
PRUNE_EVERY = 60.0
#: The values of ``--dnsbl-fail``: ``open`` (the default) allows when a lookup fails, ``closed`` refuses.
FAIL_POLICIES = ("open", "closed")
_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
_ERROR_CODES = ipaddress.ip_network("127.255.255.0/24")


def parse_zone(text: str, option: str = "--dnsbl") -> str:
    """Return the zone ``text`` names, lowercase, without a final dot.

    Raises:
        ValueError: one line naming ``option``: not a DNS name of at least two labels.
    """
    zone = text.strip().rstrip(".").lower()
    try:
        dns.name.from_text(zone)
    except dns.exception.DNSException as exc:
        raise ValueError(f"{option}: {text!r} is not a DNS zone ({exc})") from None
    labels = zone.split(".")
    # An IPv6 query adds 64 characters of nibbles to the zone, and a name has at most 253.
    if len(labels) < 2 or not all(labels) or any(c.isspace() or c in "\\*" for c in zone) or len(zone) > 189:
        raise ValueError(f"{option}: {text!r} is not a DNS zone; expected a name such as zen.spamhaus.org")
    return zone


def query_name(ip: str, zone: str) -> str:
    """The name to look up for ``ip`` in ``zone``: reversed octets (IPv4) or nibbles (IPv6).

    >>> query_name("198.51.100.2", "dnsbl.example.test")
    '2.100.51.198.dnsbl.example.test'

    Raises:
        ValueError: ``ip`` is not an address.
    """
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if isinstance(address, ipaddress.IPv4Address):
        labels = str(address).split(".")
    else:
        labels = list(address.exploded.replace(":", ""))
    return ".".join(reversed(labels)) + "." + zone


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether ``ip`` may be authorised, and why (one line, for the log and the event feed).

    Attributes:
        ip: the address.
        allowed: False if a zone lists it, or if a lookup failed and the gate fails closed.
        zone: the zone that listed it (or failed), else None.
        code: the A record the zone returned (``127.0.0.2``), else None.
        reason: ``listed in dnsbl.example.test (127.0.0.2)``, ``not listed in ...``,
            ``lookup timed out after 1s; fail open``...
    """

    ip: str
    allowed: bool
    zone: str | None
    code: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class _Answer:
    """One zone's answer: ``code`` if listed, ``error`` if the lookup failed, else neither."""

    zone: str
    code: str | None = None
    error: str | None = None


class _Pending:
    """A lookup under way: when it was submitted, and the zones' answers so far."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.answers: list[_Answer] = []


class Gate:
    """Look addresses up in DNS blocklists in the background and decide by the answers.

    Args:
        zones: the DNSBL zones (see ``parse_zone``); an address listed in any is refused.
        resolver: ``ADDR[:PORT]`` of the resolver to ask; None for /etc/resolv.conf's.
        timeout: seconds after ``submit`` at which an unanswered lookup is decided by the
            fail policy (at most 1 s; the DNS query itself gives up then too).
        fail_closed: refuse when a lookup times out or fails (default: allow).
        ttl: seconds an answered decision is reused for the same address.

    Raises:
        ValueError: no zone, or a zone or ``resolver`` is malformed (one line naming the option).
    """

    def __init__(self, zones: Sequence[str], resolver: str | None = None, timeout: float = 1.0,
                 fail_closed: bool = False, ttl: float = CACHE_TTL) -> None:
        if not zones:
            raise ValueError("--dnsbl: no zone given; the gate needs at least one")
        self.zones = tuple(parse_zone(z) for z in zones)
        self.timeout = min(max(timeout, 0.05), 1.0)
        self.fail_closed = fail_closed
        self._ttl = ttl
        self._resolver = resolver_for(resolver, self.timeout)
        self._cache: dict[str, tuple[Decision, float]] = {}
        self._pruned = 0.0
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()
        self._jobs: queue.Queue[tuple[str, str] | None] = queue.Queue()
        #: Logins waiting for their decision, by address (touched by the caller's thread only).
        self._parked: dict[str, list[LoginEvent]] = {}
        self._threads = [threading.Thread(target=self._work, name=f"dnsbl-{n}", daemon=True) for n in range(WORKERS)]
        for thread in self._threads:
            thread.start()

    def submit(self, ip: str, now: float) -> Decision | None:
        """A cached decision for ``ip`` at once, or None after starting its lookup.

        While a lookup for ``ip`` is under way, a second submit starts no other; its
        decision comes once, from ``ready``.
        """
        with self._lock:
            hit = self._cache.get(ip)
            if hit is not None:
                if hit[1] > now:
                    return hit[0]
                del self._cache[ip]
            if ip not in self._pending:
                self._pending[ip] = _Pending(now)
                for zone in self.zones:
                    self._jobs.put((ip, zone))
            return None

    def admit(self, event: LoginEvent, now: float) -> Decision | None:
        """The decision for ``event``'s client at once if cached; else None, and the login
        waits in the gate until ``released`` hands it back with its decision."""
        decision = self.submit(event.ip, now)
        if decision is None:
            self._parked.setdefault(event.ip, []).append(event)
        return decision

    def released(self, now: float) -> list[tuple[LoginEvent, Decision]]:
        """The parked logins decided since the last call, each with its decision."""
        return [(event, decision) for decision in self.ready(now) for event in self._parked.pop(decision.ip, [])]

    @property
    def holding(self) -> bool:
        """True while a login waits for its decision (decided at most ``timeout`` after it came)."""
        return bool(self._parked)

    def ready(self, now: float) -> list[Decision]:
        """The decisions made since the last call, in the order their lookups began.

        An address is decided as soon as one zone lists it, when every zone has answered,
        or when ``timeout`` has passed since its submit (by the fail policy).
        """
        decided: list[Decision] = []
        with self._lock:
            if now - self._pruned >= PRUNE_EVERY:  # a daemon runs for months: forget what expired
                self._cache = {ip: hit for ip, hit in self._cache.items() if hit[1] > now}
                self._pruned = now
            for ip, pending in list(self._pending.items()):
                decision = self._decide(ip, pending, now)
                if decision is None:
                    continue
                del self._pending[ip]
                decided.append(decision)
                if decision.code is not None or (decision.allowed and decision.zone is None):
                    self._cache[ip] = (decision, now + self._ttl)
        return decided

    def close(self) -> None:
        """Stop the workers; lookups under way end within the timeout, unwaited.

        Parked logins stay parked (and ``holding`` true): a stop must not save a log
        position past a login that was never decided.
        """
        with self._lock:
            self._pending.clear()
        for _ in self._threads:
            self._jobs.put(None)

    def _decide(self, ip: str, pending: _Pending, now: float) -> Decision | None:
        by_zone = {a.zone: a for a in pending.answers}
        for zone in self.zones:  # the first listing zone, in the order the admin gave
            answer = by_zone.get(zone)
            if answer is not None and answer.code is not None:
                return Decision(ip, False, zone, answer.code, f"listed in {zone} ({answer.code})")
        failed = next((by_zone[z] for z in self.zones if z in by_zone and by_zone[z].error), None)
        if failed is not None and len(by_zone) == len(self.zones):
            return self._by_policy(ip, failed.zone, failed.error or "")
        if len(by_zone) == len(self.zones):
            return Decision(ip, True, None, None, f"not listed in {', '.join(self.zones)}")
        if now - pending.started >= self.timeout:
            late = next(z for z in self.zones if z not in by_zone)
            return self._by_policy(ip, late, f"lookup in {late} timed out after {format_duration(self.timeout)}")
        return None

    def _by_policy(self, ip: str, zone: str, what: str) -> Decision:
        policy = "fail closed" if self.fail_closed else "fail open"
        return Decision(ip, not self.fail_closed, zone, None, f"{what}; {policy}")

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            ip, zone = job
            with self._lock:
                wanted = ip in self._pending
            if not wanted:  # decided already (a listing elsewhere, or the deadline)
                continue
            answer = self._lookup(ip, zone)
            with self._lock:
                pending = self._pending.get(ip)
                if pending is not None:
                    pending.answers.append(answer)

    def _lookup(self, ip: str, zone: str) -> _Answer:
        try:
            name = query_name(ip, zone)
        except ValueError:
            return _Answer(zone, error=f"{ip!r} is not an address")
        try:
            answer = self._resolver.resolve(name, dns.rdatatype.A, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return _Answer(zone)
        except dns.exception.Timeout:
            return _Answer(zone, error=f"lookup in {zone} timed out after {format_duration(self.timeout)}")
        except dns.resolver.NoNameservers:
            return _Answer(zone, error=f"lookup in {zone} failed (SERVFAIL)")
        except dns.exception.DNSException as exc:
            return _Answer(zone, error=f"lookup in {zone} failed ({exc.__class__.__name__})")
        codes = sorted((ipaddress.ip_address(r.address) for r in answer), key=int)
        if not codes or any(c not in _LOOPBACK or c in _ERROR_CODES for c in codes):
            shown = ", ".join(str(c) for c in codes)
            return _Answer(zone, error=f"{zone} answered {shown}, which is not a listing (an error code)")
        return _Answer(zone, code=str(codes[0]))
