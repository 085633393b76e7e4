"""Resolve the reverse DNS names of client addresses in the background, with a cache.

Why in the background: a viewer redraws every half second, and one slow PTR lookup (a
resolver that never answers costs the whole timeout) must not freeze the screen. So
``PtrCache.get`` never waits: it answers from the cache, or queues the address for a worker
thread and says "not yet". Answers are kept for their TTL (at most ``positive_ttl``), a
missing PTR for ``negative_ttl`` and a failed lookup for ``failure_ttl``, so a screen full
of addresses costs one query each, not one per redraw.

A PTR name is chosen by whoever controls the reverse zone of the client's network, so it is
a hint, never proof: it is shown (through ``display.printable``) and never used for policy.

Also here, because the DNSBL gate needs the same: ``parse_server`` for ``--resolver
ADDR[:PORT]`` and ``resolver_for``, a dnspython resolver that asks only that server.
"""

from __future__ import annotations

import ipaddress
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import dns.exception
import dns.rdatatype
import dns.resolver
import dns.reversename

#: The longest any single lookup may take, in seconds (the issue's limit).
MAX_TIMEOUT = 1.0
#: Cached answers kept before expired ones are swept out (a viewer may run for weeks).
MAX_ENTRIES = 10000
DNS_PORT = 53


def parse_server(text: str, option: str = "--resolver") -> tuple[str, int]:
    """Read ``ADDR[:PORT]``: ``192.0.2.53``, ``192.0.2.53:5353``, ``::1``, ``[::1]:5353``.

    Only addresses: a resolver named by a host name would need a resolver to find it.

    Raises:
        ValueError: one line naming ``option`` and what was expected.
    """
    host, port_text = text.strip(), ""
    if host.startswith("["):
        inner, sep, rest = host[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{option}: {text!r} is not ADDR[:PORT]; write an IPv6 address with a port as [::1]:53")
        host, port_text = inner, rest[1:]
    elif host.count(":") == 1:
        host, _, port_text = host.partition(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"{option}: {text!r} is not ADDR[:PORT]; expected an IP address such as 127.0.0.1:53") from None
    port = DNS_PORT
    if port_text or text.strip().endswith(":"):
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"{option}: {text!r}: the port must be a number from 1 to 65535")
        port = int(port_text)
    return str(address), port


def resolver_for(server: str | None, timeout: float) -> dns.resolver.Resolver:
    """A dnspython resolver asking ``server`` (``ADDR[:PORT]``; None: /etc/resolv.conf's).

    Each query gets at most ``timeout`` seconds in all (capped at ``MAX_TIMEOUT``).

    Raises:
        ValueError: ``server`` is malformed, or None and the system has no resolver.
    """
    if server is None:
        try:
            resolver = dns.resolver.Resolver()
        except dns.resolver.NoResolverConfiguration:
            raise ValueError("/etc/resolv.conf names no nameserver; give --resolver ADDR[:PORT] or --no-dns") from None
    else:
        address, port = parse_server(server)
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [address]
        resolver.port = port
    limit = min(max(timeout, 0.05), MAX_TIMEOUT)
    resolver.timeout = limit
    resolver.lifetime = limit
    resolver.cache = None  # our callers keep their own caches, with their own TTLs
    return resolver


@dataclass(frozen=True, slots=True)
class Name:
    """What a PTR lookup found for one address.

    Attributes:
        ip: the address asked about.
        name: the first PTR name, without the final dot; None if there is none.
        error: ``""`` if the server answered (with a name or with none), else why not
            (``timeout``, ``SERVFAIL``...).
    """

    ip: str
    name: str | None
    error: str = ""


def label(found: Name | None) -> str:
    """How a viewer shows a lookup: the name, ``…`` while resolving, ``-`` for no PTR, ``?`` if it failed."""
    if found is None:
        return "…"
    if found.name:
        return found.name
    return "?" if found.error else "-"


class PtrCache:
    """PTR names looked up by worker threads and cached with positive and negative TTLs.

    Args:
        server: ``ADDR[:PORT]`` of the resolver to ask; None for the system's.
        timeout: seconds a lookup may take (at most 1).
        positive_ttl: longest time a name is kept (the record's TTL, if shorter, wins).
        negative_ttl: how long "no PTR" (NXDOMAIN, no answer) is kept.
        failure_ttl: how long a failed lookup (timeout, SERVFAIL) is kept before retrying.
        workers: threads doing lookups; a silent server holds one for ``timeout`` seconds.
        clock: monotonic seconds; tests pass their own.

    Raises:
        ValueError: ``server`` is not ``ADDR[:PORT]``.
    """

    def __init__(self, server: str | None = None, timeout: float = MAX_TIMEOUT, positive_ttl: float = 3600.0,
                 negative_ttl: float = 300.0, failure_ttl: float = 60.0, workers: int = 2,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._resolver = resolver_for(server, timeout)
        self._ttl = (positive_ttl, negative_ttl, failure_ttl)
        self._clock = clock
        self._cache: dict[str, tuple[Name, float]] = {}
        self._pending: set[str] = set()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._changed = threading.Condition()
        self._threads = [threading.Thread(target=self._work, name=f"ptr-{n}", daemon=True) for n in range(workers)]
        for thread in self._threads:
            thread.start()

    def get(self, ip: str) -> Name | None:
        """The cached answer for ``ip``, or None (and a lookup is queued); never waits."""
        with self._changed:
            hit = self._cache.get(ip)
            if hit is not None and hit[1] > self._clock():
                return hit[0]
            if ip not in self._pending:
                self._pending.add(ip)
                self._queue.put(ip)
            return hit[0] if hit is not None else None  # a stale answer beats a blank while refreshing

    def wait(self, ips: Iterable[str], seconds: float) -> dict[str, Name | None]:
        """Ask for every address, wait up to ``seconds`` for the answers, return what came.

        For one-shot commands (``relaywatch status``); a screen uses ``get``.
        """
        wanted = list(dict.fromkeys(ips))
        end = self._clock() + seconds
        found = {ip: self.get(ip) for ip in wanted}
        with self._changed:
            while any(v is None for v in found.values()):
                left = end - self._clock()
                if left <= 0:
                    break
                self._changed.wait(left)
                found = {ip: (v if v is not None else self._fresh(ip)) for ip, v in found.items()}
        return found

    def close(self) -> None:
        """Stop the workers (a lookup under way finishes within the timeout, unwaited)."""
        for _ in self._threads:
            self._queue.put(None)

    def _fresh(self, ip: str) -> Name | None:
        hit = self._cache.get(ip)
        return hit[0] if hit is not None and hit[1] > self._clock() else None

    def _work(self) -> None:
        while True:
            ip = self._queue.get()
            if ip is None:
                return
            found, ttl = self._lookup(ip)
            with self._changed:
                now = self._clock()
                if len(self._cache) >= MAX_ENTRIES:
                    self._cache = {k: v for k, v in self._cache.items() if v[1] > now}
                self._cache[ip] = (found, now + ttl)
                self._pending.discard(ip)
                self._changed.notify_all()

    def _lookup(self, ip: str) -> tuple[Name, float]:
        positive, negative, failure = self._ttl
        try:
            reverse = dns.reversename.from_address(ip)
        except (ValueError, dns.exception.SyntaxError):
            return Name(ip, None, "not an address"), negative
        try:
            answer = self._resolver.resolve(reverse, dns.rdatatype.PTR, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return Name(ip, None), negative
        except dns.exception.Timeout:
            return Name(ip, None, "timeout"), failure
        except dns.resolver.NoNameservers:
            return Name(ip, None, "SERVFAIL"), failure
        except dns.exception.DNSException as exc:
            return Name(ip, None, exc.__class__.__name__), failure
        names = sorted(r.target.to_text(omit_final_dot=True) for r in answer)
        ttl = min(float(answer.rrset.ttl) if answer.rrset is not None else positive, positive)
        return Name(ip, names[0] if names else None), max(ttl, 30.0)
