"""Python's cyclic garbage collector, kept off the loop's path at a million grants.

Why: every grant, its Change and the brake's index entries are objects the collector
tracks, and a full pass walks them all. Python starts one whenever the long-lived objects
grew by a quarter since the last, which an ISP's renewals (each a new ``Grant`` replacing
the old) do every minute or so: at 1,000,000 grants a full pass took 190 ms in isolation,
and ``bench_load.py`` at 10,000 logins a second saw the loop paused 486 ms. Nothing
relaywatch keeps is in a reference cycle (each object is freed by its reference count the
moment it is replaced), so walking them finds nothing.

So every ``FREEZE_EVERY`` second the objects that exist are frozen (``gc.freeze``: moved
where no pass looks; freed by their counts as before), and a pass walks only what was made
since. Cyclic garbage frozen meanwhile (an exception's traceback, rarely) would stay; once
a day everything is unfrozen, collected in one full pass (its duration logged), and frozen
again. ``longest`` says the longest pass since it was last reset, for the status.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("relaywatch")

#: Seconds between two freezes of what exists: a pass then walks at most what a second
#: made (with 10 s, passes of 63 ms were measured at 10,000 logins a second). A freeze
#: itself splices lists: it costs nothing measurable.
FREEZE_EVERY = 1.0
#: Seconds between two full passes over everything (unfrozen first).
FULL_EVERY = 24 * 3600.0


class Collector:
    """The daemon's side of the collector (see the module docstring).

    Args:
        clock: monotonic seconds.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        now = clock()
        self._frozen_at = now
        self._full_at = now
        self._began = 0.0
        #: The longest pass since the daemon last set this to 0, in seconds.
        self.longest = 0.0
        gc.callbacks.append(self._timed)

    def tend(self) -> None:
        """Freeze, or pass over everything, when due; call once a turn."""
        now = self._clock()
        if now - self._full_at >= FULL_EVERY:
            self._full_at = self._frozen_at = now
            gc.unfreeze()
            began = time.perf_counter()
            found = gc.collect()
            log.info("daily full garbage collection: %d object(s) freed in %.0f ms", found,
                     (time.perf_counter() - began) * 1000)
            gc.freeze()
        elif now - self._frozen_at >= FREEZE_EVERY:
            self._frozen_at = now
            gc.freeze()

    def close(self) -> None:
        if self._timed in gc.callbacks:
            gc.callbacks.remove(self._timed)

    def _timed(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.longest = max(self.longest, time.perf_counter() - self._began)
