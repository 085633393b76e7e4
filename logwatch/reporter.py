"""Say a recurring thing at most once a minute, with a count of what was held back.

Why: a log that stays unreadable, a sink that keeps failing, or a writer that truncates
every second must not fill the operator's log with the same line.
"""

from __future__ import annotations

import logging

#: Seconds between two reports of the same recurring condition.
REPEAT_EVERY = 60.0


class Reporter:
    """Rate-limited logging by key.

    Args:
        logger: where the reports go.
        every: seconds between two reports with the same key.
    """

    def __init__(self, logger: logging.Logger, every: float = REPEAT_EVERY) -> None:
        self._logger = logger
        self._every = every
        self._last: dict[str, tuple[float, int]] = {}

    def say(self, key: str, level: int, msg: str, *args: object, now: float) -> None:
        """Log ``msg % args`` unless ``key`` was reported less than ``every`` seconds ago."""
        last = self._last.get(key)
        if last is not None and now - last[0] < self._every:
            self._last[key] = (last[0], last[1] + 1)
            return
        if last is not None and last[1]:
            msg += " (%d more like this since the last report)"
            args += (last[1],)
        self._last[key] = (now, 0)
        self._logger.log(level, msg, *args)
