"""Turn what the matcher said of a line into the login it reports: one pure function.

Why its own module: the daemon and ``relaywatch --test-pattern`` must time and shape a login
the same way, or the test face would promise what the daemon does not do.
"""

from __future__ import annotations

from datetime import datetime

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
    moment = timestamps.parse(verdict.stamp, datetime.fromtimestamp(now).astimezone()) if verdict.stamp else None
    when = now if moment is None else min(moment.timestamp(), now)
    return LoginEvent(verdict.ip, verdict.user or "", verdict.service, when,
                      verdict.pattern_set or "", verdict.pattern or "", verdict.session or "")
