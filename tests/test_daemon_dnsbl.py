"""The DNSBL gate in relaywatch run, against a DNS server on loopback that the test starts."""

from __future__ import annotations

from collections.abc import Callable
import pytest

from tests.dnslab import DnsLab
from tests.daemonlab import LOGIN, Run, stamp, wait_for


@pytest.mark.parametrize("fail", ["open", "closed"])
def test_listed_refused_unlisted_authorised_timeout_per_policy(run: Callable[..., Run], fail: str) -> None:
    with DnsLab() as dns:
        r = run("--dnsbl", "dnsbl.example.test", "--resolver", dns.address, "--dnsbl-fail", fail)
        r.start()
        r.write(LOGIN.format(stamp=stamp(), user="listed", ip="198.51.100.2"))
        r.write(LOGIN.format(stamp=stamp(), user="clean", ip="192.0.2.7"))
        r.write(LOGIN.format(stamp=stamp(), user="slow", ip="203.0.113.9"))  # the server never answers
        wait_for(lambda: "192.0.2.7" in r.granted(), "the unlisted address")
        wait_for(lambda: "refused 198.51.100.2" in r.errors(), "the listed address to be refused")
        assert "listed in dnsbl.example.test (127.0.0.2)" in r.errors()
        if fail == "open":
            wait_for(lambda: "203.0.113.9" in r.granted(), "the timed-out lookup to fail open")
        else:
            wait_for(lambda: "refused 203.0.113.9" in r.errors(), "the timed-out lookup to fail closed")
            assert "203.0.113.9" not in r.granted()
        assert "198.51.100.2" not in r.granted()
        assert r.stop() == 0
        assert dns.count("2.100.51.198.dnsbl.example.test") >= 1
