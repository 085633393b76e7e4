"""Turn what the matcher said of a line into the login it reports: one pure function.

Why its own module: the daemon and ``relaywatch --test-pattern`` must time and shape a login
the same way, or the test face would promise what the daemon does not do.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache

from logwatch import timestamps
from logwatch.matcher import Verdict
from logwatch.model import LoginEvent


def login_event(verdict: Verdict, now: float) -> LoginEvent | None:
    """The login ``verdict`` reports, or None if it reports none.

    Args:
        verdict: the matcher's answer for one line; its ``ip`` is already normalised.
        now: seconds since the epoch: the reference for a year-less stamp, and the time of a
            login whose line has no stamp or one in the future (a log clock ahead of ours must
            not stretch a grant past policy).

    Returns:
        A ``LoginEvent`` whose ``when`` is the line's own time, at most ``now``.
    """
    if verdict.result != "login" or verdict.ip is None or verdict.service is None:
        return None
    moment = line_time(verdict.stamp, now) if verdict.stamp else None
    when = now if moment is None else min(moment, now)
    return LoginEvent(verdict.ip, verdict.user or "", verdict.service, when,
                      verdict.pattern_set or "", verdict.pattern or "", verdict.session or "")


@lru_cache(maxsize=4096)
def line_time(stamp: str, now: float) -> float | None:
    """Seconds since the epoch ``stamp`` names, read with ``now`` as ``timestamps.parse``
    reads it; None if it names no moment.

    A memo of a pure function, so exact: the daemon reads a turn's lines with one ``now``,
    and at thousands of logins a second they share a handful of stamps (parsing each was
    6 % of the loop at 10,000 logins a second).
    """
    moment = timestamps.parse(stamp, datetime.fromtimestamp(now).astimezone())
    return None if moment is None else moment.timestamp()
