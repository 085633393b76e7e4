"""Values that cross the seams between relaywatch's parts.

Every value here is a frozen dataclass: once the matcher has produced an event, nothing
downstream can change what the log said.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, fields, make_dataclass


@dataclass(frozen=True, slots=True)
class LoginEvent:
    """One successful pop3/imap login, as read from Dovecot's log.

    Attributes:
        ip: the client address, normalised (see ``addresses.normalise``).
        user: the user name as Dovecot logged it (display only: never trusted for policy).
        service: the login service, ``imap-login`` or ``pop3-login``.
        when: the login time from the line's own timestamp, seconds since the epoch.
        pattern_set: the name of the pattern set that recognised the line.
        pattern: the name of the pattern within that set.
        session: Dovecot's id for the session the login began (``session=<...>`` of the
            login line's server-written tail), or ``""``; with ``--sessions`` the ledger
            keeps the client while it is open.
    """

    ip: str
    user: str
    service: str
    when: float
    pattern_set: str = ""
    pattern: str = ""
    session: str = ""


@dataclass(frozen=True, slots=True)
class Grant:
    """One client allowed to relay, as the ledger holds it and the sinks publish it.

    Attributes:
        ip: the client address, normalised: the key every sink stores.
        user: the user of the latest login (display only).
        service: the service of the latest login.
        first: time of the first login in this run of grants, seconds since the epoch.
        last: time of the latest login; a relay-ctrl file carries it as its mtime.
        count: logins seen since ``first``.
        until: ``last`` plus ``--expire``: the grant is live while ``now < until``.
    """

    ip: str
    user: str
    service: str
    first: float
    last: float
    count: int
    until: float


#: A grant as ``--state`` keeps it: ``(ip, user, service, first, last, count)``, each as
#: ``Grant`` has it. No ``until``: that is ``last`` plus the ``--expire`` of the day it is
#: read, the ledger's to work out (``Ledger.restore_saved``). A plain tuple, not a ``Grant``:
#: a start-up reads a million of them, and makes each into the ledger's ``Grant`` once.
SavedGrant = tuple[str, str, str, float, float, int]


#: ``Change.kind`` values. A sink puts on ``PUT`` and drops on ``DROP``; nothing else exists.
PUT = "put"
DROP = "drop"


@dataclass(frozen=True, slots=True)
class Change:
    """One thing the sinks must do: publish (or renew) a grant, or withdraw it.

    Attributes:
        kind: ``PUT`` or ``DROP``.
        grant: for ``PUT`` the grant as it now stands; for ``DROP`` the grant withdrawn.
        reason: why: ``login`` (new), ``renew``, ``expired``, ``cap`` or ``restored``; with
            ``--sessions`` also ``connected`` (a connected client's grant renewed),
            ``logout`` (its last session ended), ``session-max``, ``dovecot-startup`` or
            ``dovecot-shutdown`` (its sessions ended with that line), ``no-sessions``.
        warning: one line the caller should log, or ``""`` (set when the cap withdrew a grant
            early, because that is policy being overridden, not applied).
    """

    kind: str
    grant: Grant
    reason: str
    warning: str = ""

    @property
    def ip(self) -> str:
        """The address the change is about."""
        return self.grant.ip


# --- in bulk: a start-up's million ------------------------------------------------------------
#
# A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__`` (its own
# ``__setattr__`` refuses), which makes a Grant cost 0.7 µs and a Change 0.45 µs: most of
# filling the ledger at start-up. A plain slotted dataclass with the same fields, in the same
# order, sets them as fast as any class (0.15 µs), and has the same memory layout, so Python
# lets an instance be given the frozen class as its ``__class__``: from then on it is that
# class in every way (frozen, equal to, hashed and printed as one made by its ``__init__``).


def _draft(frozen: type) -> type:
    """A plain slotted dataclass with the fields of ``frozen``, in its order."""
    return make_dataclass(f"_{frozen.__name__}Draft", [(f.name, f.type) for f in fields(frozen)], slots=True)


_GrantDraft = _draft(Grant)
_ChangeDraft = _draft(Change)


def grants(values: Iterable[tuple[str, str, str, float, float, int, float]]) -> list[Grant]:
    """``Grant(*fields)`` for each of ``values``, in bulk (see above): for a start-up."""
    made = list(itertools.starmap(_GrantDraft, values))
    for grant in made:
        grant.__class__ = Grant
    return made


def changes(kind: str, of: Iterable[Grant], reason: str) -> list[Change]:
    """``Change(kind, grant, reason)`` for each grant ``of``, in bulk (see above)."""
    made = [_ChangeDraft(kind, grant, reason, "") for grant in of]
    for change in made:
        change.__class__ = Change
    return made
