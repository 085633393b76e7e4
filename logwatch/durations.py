"""Parse the durations an admin types on the command line (``90s``, ``15m``, ``1h``, ``1800``).

Pure: no I/O. Every error is one line naming the option, because a mistyped ``--expire``
must stop the daemon at start rather than grant relay for a surprising length of time.
"""

from __future__ import annotations

import re

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d{1,9})([smhd]?)", re.ASCII)


def parse_duration(text: str, option: str = "--expire") -> int:
    """Return ``text`` as a whole number of seconds.

    Accepts plain seconds (``1800``) or a number with one unit: ``s``, ``m``, ``h`` or ``d``
    (``90s``, ``15m``, ``1h``, ``2d``). Zero is refused: a grant that expires as it is made
    is a misconfiguration, not a policy.

    Args:
        text: what the admin wrote.
        option: the option's name, used in the error.

    Returns:
        The duration in seconds, at least 1.

    Raises:
        ValueError: one line naming ``option``, the text, and what was expected.
    """
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"{option}: {text!r} is not a duration; expected seconds or a number with "
            f"s, m, h or d, such as 90s, 15m, 1h"
        )
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"{option}: {text!r} is zero; expected a duration of at least 1s")
    return seconds


def format_duration(seconds: float) -> str:
    """Return ``seconds`` the way ``parse_duration`` reads it back, in the largest exact unit.

    Why: messages and the TUI show ``30m`` for the default, not ``1800``.
    """
    whole = int(seconds)
    if whole != seconds or whole <= 0:
        return f"{seconds:g}s"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"
