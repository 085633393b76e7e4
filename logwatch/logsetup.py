"""Set up relaywatch's logging: standard error, with journald's priority prefixes under systemd.

Why its own module: the daemon's loop has nothing to do with where its lines go, and the
CLI sets this up before any part that logs is built.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping


def configure_logging(level: str) -> None:
    """Log to standard error; under systemd, with the priority prefixes journald reads.

    Why: journald stamps each line itself; elsewhere a timestamp is what an operator needs.
    """
    handler = logging.StreamHandler()
    if stderr_is_journal():
        handler.setFormatter(_JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s relaywatch %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def stderr_is_journal(environ: Mapping[str, str] = os.environ, fd: int = 2) -> bool:
    """True only when ``fd`` (standard error) is the stream systemd connected to journald.

    Why not the variable alone: ``JOURNAL_STREAM`` is inherited, so a relaywatch started by
    hand from a shell or script that systemd started has it while its standard error is a
    terminal or a file, where ``<6>`` prefixes are noise. systemd sets it to the device and
    inode of the stream it connected (systemd.exec(5)); compare them with ``fstat(fd)``.
    """
    device, colon, inode = environ.get("JOURNAL_STREAM", "").partition(":")
    if not colon or not device.isdigit() or not inode.isdigit():
        return False
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


def set_level(level: str) -> None:
    """Change the level (a reload), keeping the handler."""
    logging.getLogger().setLevel(level.upper())


class _JournalFormatter(logging.Formatter):
    _PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}

    def format(self, record: logging.LogRecord) -> str:
        return f"<{self._PRIORITY.get(record.levelno, 6)}>{super().format(record)}"
