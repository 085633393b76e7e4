"""Answer DNS queries on loopback from a fixed table, so the DNS tests never touch the internet.

Why a server and not a mocked resolver: the PTR cache and the DNSBL gate are tested through
dnspython's real resolver, over a real UDP socket, with real timeouts. A name listed in
``silent`` is never answered, which is how a test makes a lookup time out.

Usage::

    with DnsLab(ptr={"192.0.2.7": "mail.example.test"},
                a={"2.100.51.198.dnsbl.example.test": "127.0.0.2"},
                silent={"7.2.0.192.slow.example.test"}) as lab:
        lab.address                     # "127.0.0.1:PORT", for --resolver
        lab.queries                     # every name asked, in order (lowercase, no dot)

Names not in the table get NXDOMAIN; a name in ``servfail`` gets SERVFAIL.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable, Mapping
from types import TracebackType

import dns.message
import dns.rcode
import dns.rdatatype
import dns.reversename
import dns.rrset

#: TTL of every answer, in seconds.
TTL = 300
#: Reverse names for the documentation addresses the tests use.
PTR = {
    "192.0.2.7": "mail.example.test",
    "192.0.2.10": "alice-laptop.example.test",
    "198.51.100.2": "dyn-2.isp.example.test",
    "2001:db8::25": "v6.example.test",
}
#: DNSBL listings: 198.51.100.2 is listed in dnsbl.example.test with code 127.0.0.2.
LISTINGS = {
    "2.100.51.198.dnsbl.example.test": "127.0.0.2",
    "5.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.dnsbl.example.test": "127.0.0.4",
    "3.113.0.203.errors.example.test": "127.255.255.254",
}
#: Names that never answer: the timeout tests look these up.
SILENT = {"9.113.0.203.dnsbl.example.test", "9.113.0.203.in-addr.arpa"}


def _key(name: str) -> str:
    return name.lower().rstrip(".")


class DnsLab:
    """A UDP DNS server on 127.0.0.1, answering A and PTR queries from its tables in a thread.

    Args:
        ptr: address -> name (served as PTR records of the reverse name).
        a: name -> IPv4 address (A records).
        silent: names whose queries are read and dropped.
        servfail: names answered with SERVFAIL.
    """

    def __init__(self, ptr: Mapping[str, str] = PTR, a: Mapping[str, str] = LISTINGS,
                 silent: Iterable[str] = SILENT, servfail: Iterable[str] = ()) -> None:
        self._ptr = {_key(dns.reversename.from_address(ip).to_text()): name for ip, name in ptr.items()}
        self._a = {_key(name): value for name, value in a.items()}
        self._silent = {_key(n) for n in silent}
        self._servfail = {_key(n) for n in servfail}
        self.queries: list[str] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="dnslab", daemon=True)

    def __enter__(self) -> DnsLab:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop answering and close the socket."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._sock.close()

    def count(self, name: str) -> int:
        """How many times ``name`` was asked."""
        return self.queries.count(_key(name))

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                query = dns.message.from_wire(data)
            except Exception:  # noqa: BLE001  (garbage on the socket: ignore it, as a server would)
                continue
            reply = self._answer(query)
            if reply is not None:
                self._sock.sendto(reply.to_wire(), peer)

    def _answer(self, query: dns.message.Message) -> dns.message.Message | None:
        question = query.question[0]
        name = _key(question.name.to_text())
        self.queries.append(name)
        if name in self._silent:
            return None
        reply = dns.message.make_response(query)
        if name in self._servfail:
            reply.set_rcode(dns.rcode.SERVFAIL)
            return reply
        table = {dns.rdatatype.A: self._a, dns.rdatatype.PTR: self._ptr}.get(question.rdtype, {})
        if name in table:
            value = table[name]
            text = value + "." if question.rdtype == dns.rdatatype.PTR else value
            reply.answer.append(dns.rrset.from_text(question.name, TTL, "IN", question.rdtype, text))
        elif name not in self._a and name not in self._ptr:
            reply.set_rcode(dns.rcode.NXDOMAIN)
        return reply
