"""Dovecot version numbers: compare them, and read the one Dovecot logs when it starts.

Pure: text in, values out. Why relaywatch wants the version: the pattern sets overlap
(each version's success line can be imitated inside another version's line, see README's
"Hostile user names"), so the sets that claim lines are the ones for the Dovecot in use.
Dovecot's master process says which it is at every start::

    Nov 30 21:48:22 master: Info: Dovecot v2.3.19.1 (9f57dc1bb0) starting up for imap, pop3
    Nov 30 21:48:22 mx dovecot[812]: master: Dovecot v2.4.1 (7f0a2ba4ac) starting up for imap
    Jun 10 12:00:00 mx dovecot: Dovecot v1.2.17 starting up (core dumps disabled)

A login process (``imap-login``), whose lines carry client text, can never write such a
line: the strict prefix names the master (or, in 1.x, the bare ``dovecot`` tag, which a
login process's lines never have, since they always name their service).

Versions compare as Dovecot numbers them: ``0.99.11 < 1.0.test80 < 1.0.alpha1 < 1.0.beta2
< 1.0.rc1 < 1.0.0 < 2.0.beta6 < 2.0.0 < 2.3.19.1 < 2.4.1``; missing parts count as 0
(``2.4`` equals ``2.4.0``). A distribution's package revision (Debian 13's ``v2.4.1-4``) is
not part of the version: ``startup`` and ``check`` drop it.
"""

from __future__ import annotations

import re

from logwatch import prefix

_STAGES = {"test": 0, "alpha": 1, "beta": 2, "rc": 3}
_PART = re.compile(r"(?:(\d{1,6})|(test|alpha|beta|rc)(\d{0,6}))\Z")
_VERSION = r"[0-9][0-9A-Za-z.]{0,31}"
#: A distribution's package revision after the upstream version: Debian 13 builds Dovecot
#: to say ``v2.4.1-4`` (``-1+deb13u1`` after a security update). It is not Dovecot's version.
_REVISION = r"-[0-9A-Za-z.+~]{1,32}"

#: A release part: (1, number, 0); a pre-release part: (0, stage, number).
Key = tuple[tuple[int, int, int], ...]

#: The master's start-up line, after the same strict prefixes as a login process's.
STARTUP = re.compile(
    "(?:"
    # syslog, 2.x: TS [HOST ]dovecot[PID]: master: MSG
    f"{prefix.TIMESTAMP} (?:{prefix.HOST} )?dovecot(?:{prefix.PID})?: master: "
    # Dovecot 2.x's own file: TS master: Info: MSG
    f"|{prefix.TIMESTAMP} master: Info: "
    # syslog, 1.x: TS [HOST ]dovecot[PID]: MSG (the master logged under the bare tag)
    f"|{prefix.TIMESTAMP} (?:{prefix.HOST} )?dovecot(?:{prefix.PID})?: (?=Dovecot v)"
    # Dovecot 1.x's own file
    f"|dovecot: {prefix.TIMESTAMP} Info: "
    ")"
    f"Dovecot v(?P<version>{_VERSION})(?:{_REVISION})?(?: \\([0-9a-f]{{1,40}}\\))? starting up(?: [^\n]*)?"
)
#: Every start-up line contains this; lines without it are not looked at.
STARTUP_NEEDLE = " starting up"


def key(version: str) -> Key:
    """Return a sort key for ``version`` (see the module docstring for the order).

    Raises:
        ValueError: ``version`` is not a Dovecot version number.
    """
    parts = version.split(".")
    if not version or len(parts) > 6:
        raise ValueError(version)
    out = []
    for part in parts:
        m = _PART.match(part)
        if m is None:
            raise ValueError(version)
        if m[1] is not None:
            out.append((1, int(m[1]), 0))
        else:
            out.append((0, _STAGES[m[2]], int(m[3] or 0)))
    if out[0][0] == 0:
        raise ValueError(version)  # a version starts with a release number
    out += [(1, 0, 0)] * (6 - len(out))  # 2.4 == 2.4.0, and 2.0 > 2.0.beta6
    return tuple(out)


def check(version: str) -> str:
    """Return ``version`` if it is a Dovecot version number, without a distribution's package
    revision (``2.4.1-4`` is ``2.4.1``, as ``dovecot --version`` on Debian 13 prints it).

    Raises:
        ValueError: one line for the option's message, saying what was expected.
    """
    upstream, dash, revision = version.partition("-")
    if dash and re.fullmatch(_REVISION, dash + revision):
        version = upstream
    try:
        key(version)
    except ValueError:
        raise ValueError(f"{version!r} is not a Dovecot version; expected e.g. 2.3.19.1, 2.4 or 1.2.17") from None
    return version


def within(version: str, since: str | None, before: str | None) -> bool:
    """True if ``since <= version < before`` (an absent bound does not limit)."""
    k = key(version)
    return (since is None or key(since) <= k) and (before is None or k < key(before))


def startup(line: str) -> str | None:
    """Return the version a Dovecot start-up line announces, else None."""
    if STARTUP_NEEDLE not in line:
        return None
    m = STARTUP.fullmatch(line)
    if m is None:
        return None
    try:
        return check(m["version"])
    except ValueError:
        return None
