"""The DNSBL gate: query names (pure), and decisions against a DNS server on loopback."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from logwatch.dnsbl import Decision, Gate, parse_zone, query_name
from tests.dnslab import DnsLab

ZONE = "dnsbl.example.test"


@pytest.mark.parametrize("ip, expected", [
    ("198.51.100.2", "2.100.51.198.dnsbl.example.test"),
    ("192.0.2.7", "7.2.0.192.dnsbl.example.test"),
    ("::ffff:192.0.2.7", "7.2.0.192.dnsbl.example.test"),
    ("2001:db8::25", "5.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.dnsbl.example.test"),
    ("2001:DB8:0:0:1::a", "a.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.dnsbl.example.test"),
])
def test_query_name(ip: str, expected: str) -> None:
    assert query_name(ip, ZONE) == expected


def test_query_name_refuses_what_is_not_an_address() -> None:
    with pytest.raises(ValueError):
        query_name("192.0.2.300", ZONE)


@pytest.mark.parametrize("text, zone", [("Zen.Example.Test.", "zen.example.test"), ("dnsbl.example.test", ZONE)])
def test_parse_zone(text: str, zone: str) -> None:
    assert parse_zone(text) == zone


@pytest.mark.parametrize("text", ["", "test", "a..test", "bad zone.test", "*.example.test", "x" * 64 + ".test"])
def test_parse_zone_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=r"^--dnsbl: "):
        parse_zone(text)


@pytest.fixture
def lab() -> Iterator[DnsLab]:
    with DnsLab() as server:
        yield server


def decide(gate: Gate, ip: str, deadline: float = 20.0) -> tuple[Decision, float]:
    """Submit ``ip`` and poll ``ready`` with the real clock until it is decided."""
    start = time.time()
    first = gate.submit(ip, start)
    if first is not None:
        return first, 0.0
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        for decision in gate.ready(time.time()):
            assert decision.ip == ip
            return decision, time.time() - start
        time.sleep(0.01)
    raise AssertionError(f"no decision for {ip}")


def test_a_listed_address_is_refused_with_zone_and_code(lab: DnsLab) -> None:
    gate = Gate([ZONE], resolver=lab.address)
    try:
        decision, _ = decide(gate, "198.51.100.2")
        assert decision == Decision("198.51.100.2", False, ZONE, "127.0.0.2",
                                    "listed in dnsbl.example.test (127.0.0.2)")
        v6, _ = decide(gate, "2001:db8::25")
        assert (v6.allowed, v6.code) == (False, "127.0.0.4")
    finally:
        gate.close()


def test_an_unlisted_address_is_allowed_and_cached(lab: DnsLab) -> None:
    gate = Gate([ZONE], resolver=lab.address)
    try:
        decision, _ = decide(gate, "192.0.2.7")
        assert decision == Decision("192.0.2.7", True, None, None, "not listed in dnsbl.example.test")
        again = gate.submit("192.0.2.7", time.time())
        assert again == decision  # at once, from the cache
        assert lab.count("7.2.0.192.dnsbl.example.test") == 1
        listed, _ = decide(gate, "198.51.100.2")
        assert gate.submit("198.51.100.2", time.time()) == listed
        assert gate.submit("198.51.100.2", time.time() + 3600) is None  # the cache expired
    finally:
        gate.close()


def test_the_first_listing_zone_in_order_decides(lab: DnsLab) -> None:
    gate = Gate(["clean.example.test", ZONE], resolver=lab.address)
    try:
        decision, _ = decide(gate, "198.51.100.2")
        assert (decision.allowed, decision.zone) == (False, ZONE)
    finally:
        gate.close()


@pytest.mark.parametrize("fail_closed, allowed, policy", [(False, True, "fail open"), (True, False, "fail closed")])
def test_a_timeout_is_decided_by_the_fail_policy_within_the_timeout(
        lab: DnsLab, fail_closed: bool, allowed: bool, policy: str) -> None:
    gate = Gate([ZONE], resolver=lab.address, timeout=0.5, fail_closed=fail_closed)
    try:
        decision, took = decide(gate, "203.0.113.9")
        assert decision == Decision("203.0.113.9", allowed, ZONE, None,
                                    f"lookup in dnsbl.example.test timed out after 0.5s; {policy}")
        assert took < 5.0  # the deadline is the timeout; the slack is for a loaded machine
        assert gate.submit("203.0.113.9", time.time()) is None  # a failure is not cached: asked again
    finally:
        gate.close()


def test_ready_decides_by_the_deadline_even_if_the_worker_has_not_answered(lab: DnsLab) -> None:
    gate = Gate([ZONE], resolver=lab.address, timeout=1.0)
    try:
        t = time.time()
        assert gate.submit("203.0.113.9", t) is None
        assert gate.ready(t + 0.2) == []
        (decision,) = gate.ready(t + 1.0)
        assert decision.reason == "lookup in dnsbl.example.test timed out after 1s; fail open"
        assert gate.ready(t + 2.0) == []  # decided once
    finally:
        gate.close()


def test_an_error_code_is_not_a_listing(lab: DnsLab) -> None:
    gate = Gate(["errors.example.test"], resolver=lab.address, fail_closed=False)
    try:
        decision, _ = decide(gate, "203.0.113.3")
        assert decision.allowed
        assert decision.reason == ("errors.example.test answered 127.255.255.254, which is not a listing "
                                   "(an error code); fail open")
    finally:
        gate.close()


def test_servfail_is_a_failure() -> None:
    with DnsLab(servfail={"7.2.0.192.dnsbl.example.test"}) as lab:
        gate = Gate([ZONE], resolver=lab.address, fail_closed=True)
        try:
            decision, _ = decide(gate, "192.0.2.7")
            assert decision == Decision("192.0.2.7", False, ZONE, None,
                                        "lookup in dnsbl.example.test failed (SERVFAIL); fail closed")
        finally:
            gate.close()


def test_a_bad_resolver_is_one_line() -> None:
    with pytest.raises(ValueError, match=r"^--resolver: 'localhost:53' is not ADDR\[:PORT\]"):
        Gate([ZONE], resolver="localhost:53")


def test_no_zone_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^--dnsbl: no zone given"):
        Gate([])


def test_expired_decisions_are_swept_from_the_cache(lab: DnsLab) -> None:
    gate = Gate([ZONE], resolver=lab.address, ttl=10)
    try:
        decide(gate, "192.0.2.7")
        assert gate.submit("192.0.2.7", time.time()) is not None
        gate.ready(time.time() + 3600)  # a sweep, long after the TTL
        assert gate._cache == {}  # noqa: SLF001  (what the sweep is for: memory over months)
    finally:
        gate.close()
