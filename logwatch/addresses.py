"""Client addresses: normalise what Dovecot logged, and decide which may never relay.

Pure: no I/O. ``NeverList.parse`` takes the text of ``--never``; importing Postfix's
``mynetworks`` (which runs ``postconf``) happens at the edge that owns Postfix.
"""

from __future__ import annotations

import ipaddress
import re
import socket
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


def canonical_number(ip: str) -> tuple[int, int] | None:
    """``(version, number)`` of ``ip`` if it is already in ``normalise``'s form, else None
    (then ask ``normalise``: it may still be an address, in another form).

    Why: restoring a million grants asked ``ipaddress`` twice per address (is it canonical,
    is it on the never-list), most of a start-up's time. The C library's ``inet_pton`` and
    ``inet_ntop`` answer both in well under a microsecond: text that ``inet_ntop`` prints
    back unchanged, without a dot in IPv6 (glibc prints an IPv4-mapped address with one;
    ``normalise`` makes it IPv4), is glibc's form, which for IPv6 is also Python's
    compressed one (lowercase, the longest run of zeros as ``::``).
    """
    try:
        if ":" in ip:
            packed = socket.inet_pton(socket.AF_INET6, ip)
            if "." in ip or socket.inet_ntop(socket.AF_INET6, packed) != ip:
                return None
            return 6, int.from_bytes(packed, "big")
        packed = socket.inet_pton(socket.AF_INET, ip)
        if socket.inet_ntop(socket.AF_INET, packed) != ip:
            return None
        return 4, int.from_bytes(packed, "big")
    except (OSError, ValueError, TypeError):
        return None


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
    #: The networks as ``(network number, mask)`` per IP version, for the quick path.
    _v4: tuple[tuple[int, int], ...] = ()
    _v6: tuple[tuple[int, int], ...] = ()
    #: For ``listed``: the text before the first ``.`` of every IPv4 address the networks
    #: hold, and before the first ``:`` of every IPv6 one (None: too many to list), as
    #: ``normalise`` writes them (``_heads``).
    _heads4: frozenset[str] = frozenset()
    _heads6: frozenset[str] | None = frozenset()

    def __post_init__(self) -> None:
        for version, name in ((4, "_v4"), (6, "_v6")):
            numbers = tuple((int(n.network_address), int(n.netmask)) for n in self.networks if n.version == version)
            object.__setattr__(self, name, numbers)
        object.__setattr__(self, "_heads4", _heads(4, self._v4) or frozenset())  # never None: 256 at most
        object.__setattr__(self, "_heads6", _heads(6, self._v6))

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
        return self.has(4, number)

    def has(self, version: int, number: int) -> bool:
        """True if the address of IP ``version`` numbered ``number`` lies in one of the networks."""
        for network, mask in self._v4 if version == 4 else self._v6:
            if number & mask == network:
                return True
        return False

    def listed(self, ips: Iterable[str]) -> set[int]:
        """The positions in ``ips`` of the addresses on the list; each must be in
        ``normalise``'s form (``Ledger.restore_saved``'s rows, which ``state`` checked).

        Why in bulk, and by the text first: a start-up asks this of a million addresses.
        The text before an address's first ``.`` or ``:`` (its first byte, or its first
        16 bits, as ``normalise`` writes them) is looked up among those of the networks'
        addresses (``_heads``), and only an address found there is parsed and tested:
        0.11 s at a million, whatever the number of networks, where parsing each cost
        0.29 s with the default list (and a call of ``has`` each, 0.75 s).

        Raises:
            ValueError: an address looked at closely is not one.
        """
        v4, v6, heads4, heads6 = self._v4, self._v6, self._heads4, self._heads6
        found: set[int] = set()
        if not v4 and not v6:
            return found
        for position, ip in enumerate(ips):
            if ":" in ip:
                if v6 and (heads6 is None or ip.partition(":")[0] in heads6) and self.has(6, _number(6, ip)):
                    found.add(position)
            elif v4 and ip.partition(".")[0] in heads4 and self.has(4, _number(4, ip)):
                found.add(position)
        return found

    def __str__(self) -> str:
        return ",".join(str(n) for n in self.networks) if self.networks else "none"


#: Above this many first 16 bits, an IPv6 network's are not listed (``_heads``): every
#: IPv6 address is then tested in full.
MAX_HEADS6 = 4096


def _heads(version: int, networks: tuple[tuple[int, int], ...]) -> frozenset[str] | None:
    """The text before the first ``.`` (IPv4) or ``:`` (IPv6) of every address of IP
    ``version`` in ``networks`` (``(number, mask)``), as ``normalise`` writes it: an IPv4
    address's first byte in decimal; an IPv6 address's first 16 bits in lowercase
    hexadecimal without leading zeros, or ``""`` where they are zero and ``::`` begins the
    address. None if an IPv6 network spans more than ``MAX_HEADS6`` values of its first 16 bits."""
    bits = 32 if version == 4 else 128
    shift, every = bits - (8 if version == 4 else 16), (1 << bits) - 1
    heads: set[str] = set()
    for network, mask in networks:
        first, last = network >> shift, (network | ~mask & every) >> shift
        if last - first >= MAX_HEADS6:
            return None
        heads.update(str(head) if version == 4 else format(head, "x") for head in range(first, last + 1))
        if version == 6 and first == 0:
            heads.add("")
    return frozenset(heads)


def _number(version: int, ip: str) -> int:
    """The number of ``ip``, an address of IP ``version``.

    Raises:
        ValueError: it is not one.
    """
    try:
        return int.from_bytes(socket.inet_pton(socket.AF_INET if version == 4 else socket.AF_INET6, ip), "big")
    except OSError:
        raise ValueError(f"not an IPv{version} address: {ascii(ip)[:60]}") from None
