"""Values that cross the seams between relaywatch's parts.

Every value here is a frozen dataclass: once the matcher has produced an event, nothing
downstream can change what the log said.
"""

from __future__ import annotations

from dataclasses import dataclass


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
    """

    ip: str
    user: str
    service: str
    when: float
    pattern_set: str = ""
    pattern: str = ""
