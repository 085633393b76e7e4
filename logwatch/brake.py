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

from logwatch.model import DROP, PUT, Change

#: ``--max-addresses-per-user`` when not given (README, "The credential-stuffing brake").
DEFAULT_MAX_ADDRESSES = 10
#: Seconds between two reports of the same user held by the brake.
SAY_EVERY = 60.0
#: Change reasons that are a user's login (a manual grant belongs to no user).
_LOGIN_REASONS = frozenset(("login", "renew", "restored"))


def user_key(user: str) -> str:
    """The form a user name is compared in."""
    return user.casefold()


class UserAddresses:
    """Per user, the addresses it authorised and until when (fed the ledger's Changes)."""

    __slots__ = ("_by_user", "_by_ip")

    def __init__(self) -> None:
        self._by_user: dict[str, dict[str, float]] = {}
        self._by_ip: dict[str, set[str]] = {}

    def observe(self, changes: Iterable[Change]) -> None:
        """Follow the ledger: a login's PUT adds its address to its user, a DROP removes it from all."""
        for change in changes:
            grant = change.grant
            if change.kind == PUT and change.reason in _LOGIN_REASONS and grant.service != "manual":
                key = user_key(grant.user)
                self._by_user.setdefault(key, {})[grant.ip] = grant.until
                self._by_ip.setdefault(grant.ip, set()).add(key)
            elif change.kind == DROP:
                for key in self._by_ip.pop(grant.ip, ()):
                    held = self._by_user.get(key)
                    if held is not None:
                        held.pop(grant.ip, None)
                        if not held:
                            del self._by_user[key]

    def addresses(self, user: str, now: float) -> list[str]:
        """The addresses ``user`` authorised that are still live at ``now``, oldest end first."""
        held = self._by_user.get(user_key(user))
        if not held:
            return []
        for ip in [ip for ip, until in held.items() if until <= now]:
            del held[ip]
            users = self._by_ip.get(ip)
            if users is not None:
                users.discard(user_key(user))
                if not users:
                    del self._by_ip[ip]
        return sorted(held, key=held.__getitem__)

    def holds(self, user: str, ip: str, now: float) -> bool:
        """Whether ``user`` has ``ip`` authorised at ``now``."""
        until = self._by_user.get(user_key(user), {}).get(ip)
        return until is not None and until > now


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
