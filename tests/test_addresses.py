"""Addresses: one normal form per client, and a never-list that cannot be talked around."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logwatch.addresses import NeverList, NormaliseCache, normalise


@pytest.mark.parametrize("text, expected", [
    ("192.0.2.7", "192.0.2.7"),
    ("::ffff:192.0.2.7", "192.0.2.7"),
    ("::FFFF:198.51.100.1", "198.51.100.1"),
    ("2001:db8::7", "2001:db8::7"),
    ("2001:DB8::A7", "2001:db8::a7"),
    ("2001:0db8:0000:0000:0000:0000:0000:0007", "2001:db8::7"),
    ("::1", "::1"),
    ("192.0.2.256", None),
    ("192.0.2", None),
    ("1.2.3.4.5", None),
    ("fe80::1%eth0", None),
    ("", None),
    ("host.example.org", None),
    ("2001:db8::7::8", None),
    ("0192.0.2.7", None),  # leading zeros: octal or decimal? ipaddress refuses, so do we
    ("1" * 100, None),
])
def test_normalise(text: str, expected: str | None) -> None:
    assert normalise(text) == expected
    assert NormaliseCache(size=2)(text) == expected


def test_cache_is_bounded() -> None:
    cache = NormaliseCache(size=3)
    for i in range(10):
        assert cache(f"192.0.2.{i}") == f"192.0.2.{i}"
        assert cache[f"192.0.2.{i}"] == f"192.0.2.{i}"
        assert len(cache) <= 3
    assert cache["192.0.2.300"] is None and len(cache) <= 3


def test_default_never_list() -> None:
    never = NeverList.default()
    for ip in ("127.0.0.1", "127.1.2.3", "::1", "169.254.1.1", "fe80::1", "0.0.0.0", "::"):
        assert ip in never
    for ip in ("192.0.2.7", "2001:db8::7", "198.51.100.1"):
        assert ip not in never


def test_never_list_parsing() -> None:
    never = NeverList.parse("192.0.2.0/24, 2001:db8::/32,203.0.113.5")
    assert "192.0.2.200" in never and "2001:db8:1::1" in never and "203.0.113.5" in never
    assert "203.0.113.6" not in never
    assert NeverList.parse("none").networks == ()
    assert str(NeverList.parse("none")) == "none"


@pytest.mark.parametrize("text", ["192.0.2.0/33", "nowhere", "192.0.2.0/24,,x"])
def test_never_list_errors_name_the_option(text: str) -> None:
    with pytest.raises(ValueError, match=r"^--never: '.*' is not a network; expected CIDRs"):
        NeverList.parse(text)


@pytest.mark.parametrize("text, number", [
    ("192.0.2.7", 0xC0000207), ("0.0.0.0", 0), ("255.255.255.255", 0xFFFFFFFF),
    ("192.0.2.07", None), ("256.0.0.1", None), ("1.2.3", None), ("1.2.3.4.5", None), ("", None),
    ("::ffff:192.0.2.7", None), ("2001:db8::1", None), ("1.2.3.\u0664", None), (" 1.2.3.4", None),
])
def test_ipv4_int_takes_only_the_canonical_dotted_quad(text: str, number: int | None) -> None:
    from logwatch.addresses import ipv4_int

    assert ipv4_int(text) == number


def test_the_never_lists_quick_path_agrees_with_ipaddress() -> None:
    """The integer test for IPv4 must say what ``ipaddress`` says, for every network size."""
    import random

    never = NeverList.parse("127.0.0.0/8,192.0.2.128/25,198.51.100.7,0.0.0.0/32,2001:db8::/32")
    rng = random.Random(7)
    for _ in range(20000):
        ip = str(ipaddress.IPv4Address(rng.choice([0x7F000000, 0xC0000200, 0xC6336400, 0]) + rng.randrange(512)))
        expected = any(ipaddress.ip_address(ip) in n for n in never.networks)
        assert (ip in never) is expected, ip


# --- NeverList.listed: the bulk test a start-up makes of a million restored addresses ----------

#: Networks near the addresses below, of every size: a byte or 16 bits boundary or not,
#: one address, the whole of IPv6, and wider than ``MAX_HEADS6`` first 16 bits.
_NETWORKS = st.one_of(
    st.builds(lambda n, p: str(ipaddress.ip_network((n, p), strict=False)),
              st.sampled_from([0x7F000001, 0xA9FE0102, 0, 0x0A000000, 0xC0000280]), st.integers(0, 32)),
    st.builds(lambda n, p: str(ipaddress.ip_network((n, p), strict=False)),
              st.sampled_from([1, 0, 0xFE80 << 112, 0x20010DB8 << 96, 0x0FE8 << 112, 0x127 << 112]),
              st.integers(0, 128)),
)
#: Addresses in ``normalise``'s form, in those networks, beside them, and anywhere.
_ADDRESSES = st.one_of(
    st.builds(lambda base, off: str(ipaddress.IPv4Address((base + off) % (1 << 32))),
              st.sampled_from([0x7F000000, 0xA9FE0000, 0, 0x0A000000, 0xC0000200, 0x7E000000]),
              st.integers(-300, 300)),
    st.builds(lambda base, off: ipaddress.IPv6Address((base + off) % (1 << 128)).compressed,
              st.sampled_from([0, 0xFE80 << 112, 0xFEC0 << 112, 0x20010DB8 << 96, 0x0FE8 << 112, 0x127 << 112,
                               0xFFFF << 32]),
              st.integers(-(1 << 20), 1 << 20)),
    st.integers(0, (1 << 32) - 1).map(lambda n: str(ipaddress.IPv4Address(n))),
    st.integers(0, (1 << 128) - 1).map(lambda n: ipaddress.IPv6Address(n).compressed),
).map(lambda text: normalise(text) or text)


@settings(max_examples=300, deadline=None, database=None)
@given(networks=st.lists(_NETWORKS, max_size=4), ips=st.lists(_ADDRESSES, max_size=40))
def test_listed_says_what_ipaddress_says(networks: list[str], ips: list[str]) -> None:
    """The bulk test, its look-up by the text before the first dot or colon included, finds
    exactly the addresses ``ipaddress`` puts in the networks."""
    never = NeverList.parse(networks or "none")
    expected = {n for n, ip in enumerate(ips)
                if any(ipaddress.ip_address(ip) in network for network in never.networks)}
    assert never.listed(ips) == expected
    assert expected == {n for n, ip in enumerate(ips) if ip in never}


def test_listed_with_the_default_list_and_none() -> None:
    ips = ["127.0.0.1", "128.0.0.1", "169.254.1.1", "169.253.1.1", "0.0.0.0", "0.0.0.1", "::1", "::", "::2",
           "fe80::1", "febf:1::", "fec0::1", "fe8::1", "2001:db8::1", "12.0.0.1"]
    assert sorted(NeverList.default().listed(ips)) == [0, 2, 4, 6, 7, 9, 10]
    assert NeverList.parse("none").listed(ips) == set()
    assert NeverList.parse("::/0").listed(ips) == set(range(6, 14))  # too wide to list its heads: all tested
