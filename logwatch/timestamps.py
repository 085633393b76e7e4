"""Turn the timestamp at the start of a log line into an aware datetime.

Pure: the caller passes ``now`` and the zone of zone-less stamps; nothing here reads the
clock or the environment, so New Year and leap days can be tested exhaustively.

Why it matters: relaywatch grants relay for a window after the login *as logged*. After a
restart it reads the lines written while it was down, and a login from yesterday must not
open the relay today. Classic syslog stamps carry no year and Dovecot's own file uses
local time, so both are inferred here, never guessed later.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone, tzinfo

_MONTHS = {m: i for i, m in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)}
_CLASSIC = re.compile(r"([A-Z][a-z]{2}) +(\d{1,2}) (\d\d):(\d\d):(\d\d)(?:[.,](\d{1,9}))?\Z")
_ISO = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)([T _])(\d\d):(\d\d):(\d\d)(?:[.,](\d{1,9}))?(Z|([+-])(\d\d):?(\d\d))?\Z"
)

_TAI64N = re.compile(r"@([0-9a-f]{16})([0-9a-f]{8})\Z")
#: Seconds TAI runs ahead of UTC in a TAI64N label as multilog and svlogd write it (their
#: fixed 10: TAI-UTC in 1972). s6-log uses the real offset since 2017, 37 s (``S6_TAI_OFFSET``).
TAI_OFFSET = 10
S6_TAI_OFFSET = 37
#: A syslog stamp up to this far ahead of ``now`` is clock skew between hosts, not last year.
FUTURE_SLACK = timedelta(days=1)


def parse(stamp: str, now: datetime, tz: tzinfo | None = None, tai_offset: float = TAI_OFFSET) -> datetime | None:
    """Return the moment ``stamp`` names, or None if it is not a timestamp relaywatch knows.

    Args:
        stamp: the timestamp text as ``prefix`` captured it.
        now: an aware datetime; a year-less stamp is placed in the latest year that does not
            put it more than ``FUTURE_SLACK`` after ``now`` (so a December line read in
            January belongs to last year).
        tz: the zone of stamps without one (syslog, Dovecot's own file); None means the
            host's local zone, which is what wrote them. svlogd's ``-tt``/``-ttt`` stamps
            (``_`` between date and time, or exactly five fraction digits) are UTC.
        tai_offset: seconds a TAI64N label runs ahead of UTC (``TAI_OFFSET``, multilog's
            and svlogd's; ``S6_TAI_OFFSET`` for s6-log).

    Returns:
        An aware datetime, or None for an impossible date (``Feb 30``, hour 25).
    """
    m = _CLASSIC.match(stamp)
    if m:
        month = _MONTHS.get(m[1])
        if month is None:
            return None
        fields = (month, int(m[2]), int(m[3]), int(m[4]), min(int(m[5]), 59), _micro(m[6]))
        limit = now + FUTURE_SLACK
        # Four years back always reaches a year that has the date (Feb 29 included).
        for year in range(limit.year, limit.year - 5, -1):
            moment = _build(year, *fields, tz=tz)
            if moment is not None and moment <= limit:
                return moment
        return None
    m = _ISO.match(stamp)
    if m:
        zone: tzinfo | None = tz
        if m[9] == "Z":
            zone = timezone.utc
        elif m[9]:
            offset = timedelta(hours=int(m[11]), minutes=int(m[12]))
            zone = timezone(-offset if m[10] == "-" else offset)
        elif m[4] == "_" or (m[8] is not None and len(m[8]) == 5):
            zone = timezone.utc  # svlogd -tt / -ttt
        fields = (int(m[2]), int(m[3]), int(m[5]), int(m[6]), min(int(m[7]), 59), _micro(m[8]))
        return _build(int(m[1]), *fields, tz=zone)
    m = _TAI64N.match(stamp)
    if m:
        seconds = int(m[1], 16) - (1 << 62) - tai_offset
        try:
            return datetime.fromtimestamp(seconds, timezone.utc) + timedelta(microseconds=int(m[2], 16) // 1000)
        except (OverflowError, OSError, ValueError):
            return None
    return None


def _micro(fraction: str | None) -> int:
    return int((fraction or "0")[:6].ljust(6, "0"))


def _build(year: int, month: int, day: int, hour: int, minute: int, second: int, micro: int,
           tz: tzinfo | None) -> datetime | None:
    try:
        naive = datetime(year, month, day, hour, minute, second, micro)
    except ValueError:
        return None
    if tz is None:
        return naive.astimezone()  # the host's local zone, DST included
    return naive.replace(tzinfo=tz)
