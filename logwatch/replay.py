"""Re-date a recorded log line to a new moment, keeping its format: for demos and drills.

Pure. A recorded line carries the moment it was written; replayed into a followed log, a
login from last year would (rightly) authorise nothing. ``redate`` puts ``moment`` in the
place of every timestamp the prefix grammar knows, in the same style: classic syslog
(space- or zero-padded day), RFC 3339 with its offset, ISO with a space.
"""

from __future__ import annotations

import re
from datetime import datetime

from logwatch import prefix

_STAMP = re.compile(prefix.TIMESTAMP)
#: Where a timestamp may stand: at the start, or after "dovecot: " / "SERVICE: " (own files).
_PLACES = re.compile(rf"^(?:dovecot: |{prefix.SERVICE}: )?")


def redate(line: str, moment: datetime) -> str:
    """Return ``line`` with its timestamp replaced by ``moment`` (aware) in the same style.

    A line without a timestamp relaywatch knows is returned unchanged.
    """
    start = _PLACES.match(line)
    pos = start.end() if start else 0
    found = _STAMP.match(line, pos)
    if found is None and pos:
        found = _STAMP.match(line, 0)
    if found is None:
        return line
    return line[:found.start()] + _format(found.group(), moment) + line[found.end():]


def _format(stamp: str, moment: datetime) -> str:
    if stamp[:1].isalpha():  # classic: Jun  1 12:00:00 or Jun 01 12:00:00
        day = f"{moment.day:02d}" if stamp[4] == "0" else f"{moment.day:2d}"
        text = f"{moment:%b} {day} {moment:%H:%M:%S}"
        if "." in stamp[15:] or "," in stamp[15:]:
            text += f".{moment.microsecond:06d}"
        return text
    separator = "T" if "T" in stamp else " "
    text = moment.strftime(f"%Y-%m-%d{separator}%H:%M:%S")
    if re.search(r"[.,]\d", stamp[19:]):
        text += f".{moment.microsecond:06d}"
    zone = stamp[19:].lstrip(".,0123456789")
    if zone == "Z":
        text += "Z" if moment.utcoffset() is not None and not moment.utcoffset() else moment.strftime("%z")
    elif zone:
        offset = moment.strftime("%z")
        text += offset if ":" not in zone else f"{offset[:3]}:{offset[3:]}"
    return text
