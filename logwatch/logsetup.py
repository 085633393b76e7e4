"""Set up relaywatch's logging: standard error, with journald's priority prefixes under systemd.

Why its own module: the daemon's loop has nothing to do with where its lines go, and the
CLI sets this up before any part that logs is built.
"""

from __future__ import annotations

import logging
import os


def configure_logging(level: str) -> None:
    """Log to standard error; under systemd, with the priority prefixes journald reads.

    Why: journald stamps each line itself; elsewhere a timestamp is what an operator needs.
    """
    handler = logging.StreamHandler()
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s relaywatch %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def set_level(level: str) -> None:
    """Change the level (a reload), keeping the handler."""
    logging.getLogger().setLevel(level.upper())


class _JournalFormatter(logging.Formatter):
    _PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}

    def format(self, record: logging.LogRecord) -> str:
        return f"<{self._PRIORITY.get(record.levelno, 6)}>{super().format(record)}"
