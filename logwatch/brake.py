"""Which addresses each user authorised, and the brake on credential stuffing built on it.

Pure: no I/O and no clock; ``now`` is passed in.

Why per user: POP-before-SMTP trusts whatever address logs in with a good password. A
botnet holding stolen credentials logs in from dozens of addresses within minutes, each one
then an open relay; a person reads mail from a handful (a phone on mobile data and on
Wi-Fi, a laptop at home and at work). ``--max-addresses-per-user N`` lets a user hold at
most N addresses authorised at once: the N+1th login from a new address authorises nothing
until one of the N expires or is revoked. A login from an address the user already holds
still renews it, so the brake never cuts off a client that relays now.

``UserAddresses`` is also what ``relaywatch revoke --user NAME`` reads: every address that
user authorised within ``--expire``, not only those whose latest login was theirs. User
names are compared case-folded (Dovecot's passdb usually is), so ``Alice`` cannot dodge a
brake or a block on ``alice``.
"""

from __future__ import annotations

from collections.abc import Iterable

from logwatch.model import DROP, PUT, Change, Grant

#: ``--max-addresses-per-user`` when not given (README, "The credential-stuffing brake").
DEFAULT_MAX_ADDRESSES = 10
#: Seconds between two reports of the same user held by the brake.
SAY_EVERY = 60.0
#: Change reasons that are a user's login (a manual grant belongs to no user).
_LOGIN_REASONS = frozenset(("login", "renew", "restored"))


def user_key(user: str) -> str:
    """The form a user name is compared in: case-folded. A name in lowercase ASCII, nearly
    every one, is its own form: the same string, not a copy (whose hash would be computed
    again by every dict it goes into)."""
    return user if user.isascii() and user.islower() else user.casefold()


class UserAddresses:
    """Per user, the addresses it authorised and until when (fed the ledger's Changes).

    Why two shapes for each entry: nearly every user holds one address and nearly every
    address one user, and at an ISP's 1,000,000 grants a dict per user and a set per
    address cost 450 bytes a grant and, at start, 3 s to build. So a user with one address
    is ``(ip, until)``, with more a dict ``{ip: until}``; an address with one user is the
    user's key, with more a set of keys.
    """

    __slots__ = ("_by_user", "_by_ip")

    def __init__(self) -> None:
        self._by_user: dict[str, tuple[str, float] | dict[str, float]] = {}
        self._by_ip: dict[str, str | set[str]] = {}

    def restore(self, grants: Iterable[Grant]) -> None:
        """Add the grants a start restored (the users' logins; manual grants belong to none).

        Inlined for the common case (a user and an address not seen yet): at 1,000,000
        grants a method call each was most of the daemon's start after the state."""
        by_user, by_ip, add = self._by_user, self._by_ip, self._add
        for grant in grants:
            if grant.service == "manual":
                continue
            user, ip = grant.user, grant.ip
            key = user if user.isascii() and user.islower() else user.casefold()  # user_key, inlined
            if ip in by_ip:  # an address two users share: the general way
                add(key, ip, grant.until)
                continue
            by_ip[ip] = key
            held = by_user.get(key)
            if held is None:
                by_user[key] = (ip, grant.until)
            elif held.__class__ is tuple:  # the user's second address
                by_user[key] = {held[0]: held[1], ip: grant.until}
            else:
                held[ip] = grant.until  # type: ignore[index]

    def observe(self, changes: Iterable[Change]) -> None:
        """Follow the ledger: a login's PUT adds its address to its user, a DROP removes it from all."""
        for change in changes:
            grant = change.grant
            if change.kind == PUT and change.reason in _LOGIN_REASONS and grant.service != "manual":
                self._add(user_key(grant.user), grant.ip, grant.until)
            elif change.kind == DROP:
                self._drop(grant.ip)

    def addresses(self, user: str, now: float) -> list[str]:
        """The addresses ``user`` authorised that are still live at ``now``, oldest end first."""
        key = user_key(user)
        held = self._by_user.get(key)
        if held is None:
            return []
        if isinstance(held, tuple):
            if held[1] > now:
                return [held[0]]
            del self._by_user[key]
            self._unlink(held[0], key)
            return []
        for ip in [ip for ip, until in held.items() if until <= now]:
            del held[ip]
            self._unlink(ip, key)
        if not held:
            del self._by_user[key]
        return sorted(held, key=held.__getitem__)

    def holds(self, user: str, ip: str, now: float) -> bool:
        """Whether ``user`` has ``ip`` authorised at ``now``."""
        held = self._by_user.get(user_key(user))
        if held is None:
            return False
        until = (held[1] if held[0] == ip else None) if isinstance(held, tuple) else held.get(ip)
        return until is not None and until > now

    def _add(self, key: str, ip: str, until: float) -> None:
        held = self._by_user.get(key)
        if held is None or (isinstance(held, tuple) and held[0] == ip):
            self._by_user[key] = (ip, until)
        elif isinstance(held, tuple):
            self._by_user[key] = {held[0]: held[1], ip: until}
        else:
            held[ip] = until
        users = self._by_ip.get(ip)
        if users is None:
            self._by_ip[ip] = key
        elif isinstance(users, str):
            if users != key:
                self._by_ip[ip] = {users, key}
        else:
            users.add(key)

    def _drop(self, ip: str) -> None:
        users = self._by_ip.pop(ip, None)
        for key in (users,) if isinstance(users, str) else users or ():
            held = self._by_user.get(key)
            if held is None:
                continue
            if isinstance(held, tuple):
                if held[0] == ip:
                    del self._by_user[key]
            else:
                held.pop(ip, None)
                if not held:
                    del self._by_user[key]

    def _unlink(self, ip: str, key: str) -> None:
        """``key`` no longer holds ``ip``: forget it from the address's side."""
        users = self._by_ip.get(ip)
        if users == key:
            del self._by_ip[ip]
        elif isinstance(users, set):
            users.discard(key)
            if not users:
                del self._by_ip[ip]


class Brake:
    """``--max-addresses-per-user``: refuse a user's new address past ``limit`` (0: off).

    Args:
        limit: most addresses one user may hold at once; 0 turns the brake off.
    """

    __slots__ = ("limit", "_said", "engaged_at")

    def __init__(self, limit: int = DEFAULT_MAX_ADDRESSES) -> None:
        if limit < 0:
            raise ValueError(f"--max-addresses-per-user: {limit!r} must be 0 (off) or more")
        self.limit = limit
        self._said: dict[str, float] = {}
        #: When the brake last held a login back (None: never).
        self.engaged_at: float | None = None

    def refusal(self, users: UserAddresses, user: str, ip: str, now: float) -> str | None:
        """Why ``user``'s login from ``ip`` may not authorise it, or None."""
        if not self.limit or users.holds(user, ip, now):
            return None
        held = len(users.addresses(user, now))
        if held < self.limit:
            return None
        self.engaged_at = now
        return (f"brake: user holds {held} address(es) already (--max-addresses-per-user {self.limit}); "
                "none more until one expires")

    def say(self, user: str, now: float) -> bool:
        """Whether to log and show this refusal: once per user and ``SAY_EVERY`` seconds."""
        key = user_key(user)
        last = self._said.get(key)
        if last is not None and now - last < SAY_EVERY:
            return False
        self._said[key] = now
        if len(self._said) > 10000:  # a daemon runs for months: forget who was said long ago
            self._said = {k: t for k, t in self._said.items() if now - t < SAY_EVERY}
        return True
