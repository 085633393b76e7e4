"""PTR names in the background: parsing --resolver, the cache and its TTLs, never waiting."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from logwatch.ptr import Name, PtrCache, label, parse_server
from tests.dnslab import DnsLab


@pytest.mark.parametrize("text, expected", [
    ("192.0.2.53", ("192.0.2.53", 53)),
    ("127.0.0.1:5353", ("127.0.0.1", 5353)),
    ("::1", ("::1", 53)),
    ("[::1]:5353", ("::1", 5353)),
    ("[2001:DB8::35]", ("2001:db8::35", 53)),
])
def test_parse_server(text: str, expected: tuple[str, int]) -> None:
    assert parse_server(text) == expected


@pytest.mark.parametrize("text, message", [
    ("ns.example.test", "--resolver: 'ns.example.test' is not ADDR[:PORT]; expected an IP address"),
    ("127.0.0.1:0", "--resolver: '127.0.0.1:0': the port must be a number from 1 to 65535"),
    ("127.0.0.1:", "--resolver: '127.0.0.1:': the port must be a number from 1 to 65535"),
    ("[::1]x", "--resolver: '[::1]x' is not ADDR[:PORT]; write an IPv6 address with a port as [::1]:53"),
])
def test_parse_server_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError) as error:
        parse_server(text)
    assert str(error.value).startswith(message)


@pytest.mark.parametrize("found, shown", [
    (None, "…"), (Name("192.0.2.7", "mail.example.test"), "mail.example.test"),
    (Name("192.0.2.8", None), "-"), (Name("192.0.2.9", None, "timeout"), "?"),
])
def test_label(found: Name | None, shown: str) -> None:
    assert label(found) == shown


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def lab() -> Iterator[DnsLab]:
    with DnsLab() as server:
        yield server


def wait_get(cache: PtrCache, ip: str, deadline: float = 20.0) -> Name:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        found = cache.get(ip)
        if found is not None:
            return found
        time.sleep(0.01)
    raise AssertionError(f"no answer for {ip}")


def test_names_come_in_the_background_and_are_cached(lab: DnsLab) -> None:
    clock = Clock()
    cache = PtrCache(lab.address, clock=clock, positive_ttl=3600, negative_ttl=60)
    try:
        assert cache.get("192.0.2.7") is None  # never waits: asks, and says "not yet"
        assert wait_get(cache, "192.0.2.7") == Name("192.0.2.7", "mail.example.test")
        assert wait_get(cache, "2001:db8::25") == Name("2001:db8::25", "v6.example.test")
        assert wait_get(cache, "192.0.2.99") == Name("192.0.2.99", None)  # no PTR: NXDOMAIN
        for _ in range(5):
            cache.get("192.0.2.7")
            cache.get("192.0.2.99")
        assert lab.count("7.2.0.192.in-addr.arpa") == 1
        assert lab.count("99.2.0.192.in-addr.arpa") == 1
        clock.t += 61  # past the negative TTL, within the record's TTL (300 s)
        assert cache.get("192.0.2.99") == Name("192.0.2.99", None)  # the stale answer while it refreshes
        assert cache.get("192.0.2.7") == Name("192.0.2.7", "mail.example.test")
        end = time.monotonic() + 20
        while lab.count("99.2.0.192.in-addr.arpa") < 2 and time.monotonic() < end:
            time.sleep(0.01)
        assert lab.count("99.2.0.192.in-addr.arpa") == 2
        assert lab.count("7.2.0.192.in-addr.arpa") == 1
        clock.t += 300  # past the record's TTL
        cache.get("192.0.2.7")
        while lab.count("7.2.0.192.in-addr.arpa") < 2 and time.monotonic() < end:
            time.sleep(0.01)
        assert lab.count("7.2.0.192.in-addr.arpa") == 2
    finally:
        cache.close()


def test_a_silent_server_costs_at_most_the_timeout_and_never_blocks_get(lab: DnsLab) -> None:
    cache = PtrCache(lab.address, timeout=1.0)
    try:
        started = time.monotonic()
        assert cache.get("203.0.113.9") is None
        assert time.monotonic() - started < 0.5  # well under the 1 s the lookup itself takes
        found = wait_get(cache, "203.0.113.9")
        assert found == Name("203.0.113.9", None, "timeout")
    finally:
        cache.close()


def test_wait_returns_what_came_by_the_deadline(lab: DnsLab) -> None:
    cache = PtrCache(lab.address, timeout=1.0)
    try:
        started = time.monotonic()
        found = cache.wait(["192.0.2.7", "203.0.113.9", "192.0.2.7"], 0.3)
        assert time.monotonic() - started < 5.0
        assert found["203.0.113.9"] is None  # still resolving when the wait ended
        assert found == {"192.0.2.7": found["192.0.2.7"], "203.0.113.9": None}
        found = cache.wait(["192.0.2.7"], 10.0)
        assert found == {"192.0.2.7": Name("192.0.2.7", "mail.example.test")}
    finally:
        cache.close()
