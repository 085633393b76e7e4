"""Client addresses: normalise what Dovecot logged, and decide which may never relay.

Pure: no I/O. ``NeverList.parse`` takes the text of ``--never``; importing Postfix's
``mynetworks`` (which runs ``postconf``) happens at the edge that owns Postfix.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Never authorised unless ``--never`` says otherwise: a client on these addresses is this
#: host itself, a link-local neighbour, or nobody at all. Loopback relays through
#: ``permit_mynetworks`` anyway; a grant for it would only hide a misconfiguration.
DEFAULT_NEVER = (
    "127.0.0.0/8",
    "::1/128",
    "169.254.0.0/16",
    "fe80::/10",
    "0.0.0.0/32",
    "::/128",
)

_HEXDIGITS = frozenset("0123456789abcdefABCDEF:.")
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED_QUAD = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}")


def ipv4_int(ip: str) -> int | None:
    """The number of ``ip`` if it is an IPv4 address in canonical dotted-quad form
    (``192.0.2.7``: no leading zeros, each part at most 255), else None.

    Why not ``ipaddress``: restoring a million grants asks it twice per address (is it
    canonical, is it on the never-list), and its parsing was most of a start-up's time.
    """
    m = _DOTTED_QUAD.fullmatch(ip)
    if m is None:
        return None
    a, b, c, d = m.groups()
    return int(a) << 24 | int(b) << 16 | int(c) << 8 | int(d)


def normalise(text: str) -> str | None:
    """Return ``text`` as an address in the form the sinks store, or None if it is not one.

    IPv6 becomes lowercase and zero-compressed; an IPv4-mapped address ``::ffff:a.b.c.d``
    becomes ``a.b.c.d``.

    Why: RHEL 4's Dovecot and every Dovecot listening on a dual-stack socket log IPv4
    clients as ``::ffff:192.0.2.7``, while Postfix looks the client up as ``192.0.2.7``;
    stored mapped, the grant would never match. And whatever ``ipaddress`` rejects (a zone
    index ``%eth0``, a host name, a truncated field) must never authorise anything, so it
    gives None rather than a guess.
    """
    if not text or len(text) > 45 or not _HEXDIGITS.issuperset(text):
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if address.version == 6:
        mapped = address.ipv4_mapped
        if mapped is not None:
            return str(mapped)
        return address.compressed
    return str(address)


class NormaliseCache(dict[str, "str | None"]):
    """``normalise`` with a bounded memo, for the hot path: ``cache[text]`` (or
    ``cache(text)``) is ``normalise(text)``.

    Why: a busy server's logins come from a few thousand addresses over and over, and
    ``ipaddress`` costs microseconds per call. A dict whose ``__missing__`` computes the
    answer costs no Python call at all when it knows it. The memo is cleared when full, so
    an attacker who cycles through addresses costs memory no larger than ``size`` entries.
    """

    __slots__ = ("size",)

    def __init__(self, size: int = 65536) -> None:
        super().__init__()
        self.size = size

    def __missing__(self, text: str) -> str | None:
        if len(self) >= self.size:
            self.clear()
        result = self[text] = normalise(text)
        return result

    __call__ = dict.__getitem__


@dataclass(frozen=True, slots=True)
class NeverList:
    """Networks whose addresses are never authorised, whatever the log says.

    Attributes:
        networks: the networks, as given (after parsing).
    """

    networks: tuple[IPNetwork, ...]
    #: The IPv4 networks as ``(network number, mask)``, for ``__contains__``'s quick path.
    _v4: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        v4 = tuple((int(n.network_address), int(n.netmask)) for n in self.networks if n.version == 4)
        object.__setattr__(self, "_v4", v4)

    @classmethod
    def parse(cls, text: str | Iterable[str], option: str = "--never") -> NeverList:
        """Build a never-list from ``NET[,NET...]`` (or an iterable of NETs).

        ``none`` alone gives the empty list. A bare address means that one address.

        Raises:
            ValueError: one line naming ``option`` and the item that is not a network.
        """
        items = text.split(",") if isinstance(text, str) else list(text)
        items = [item.strip() for item in items if item.strip()]
        if items == ["none"]:
            return cls(())
        networks: list[IPNetwork] = []
        for item in items:
            try:
                network = ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(
                    f"{option}: {item!r} is not a network; expected CIDRs such as "
                    f"192.0.2.0/24,2001:db8::/32, or 'none'"
                ) from None
            networks.append(network)
        return cls(tuple(networks))

    @classmethod
    def default(cls) -> NeverList:
        """The list used when ``--never`` is not given (see ``DEFAULT_NEVER``)."""
        return cls.parse(DEFAULT_NEVER)

    def __contains__(self, ip: str) -> bool:
        """True if ``ip`` (a normalised address) lies in one of the networks."""
        number = ipv4_int(ip)
        if number is not None:
            return self.has_v4(number)
        address = ipaddress.ip_address(ip)
        return any(address in network for network in self.networks)

    def has_v4(self, number: int) -> bool:
        """True if the IPv4 address numbered ``number`` lies in one of the networks."""
        for network, mask in self._v4:
            if number & mask == network:
                return True
        return False

    def __str__(self) -> str:
        return ",".join(str(n) for n in self.networks) if self.networks else "none"
