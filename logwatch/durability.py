"""Keep every grant durable before anything past it is: the write-ahead log, the state file, checkpoints.

The order is the guarantee (the daemon keeps its half of it by calling ``record`` before any
sink sees a change, and ``persist`` after the sinks committed)::

    record(changes)   grants appended to FILE.wal            before any sink sees them
    ... the sinks publish ...
    persist(...)      the state: FILE.wal fsync'd, or FILE rewritten whole (state.rewrite_due),
                      then the log checkpoints

So after a SIGKILL or a power cut a grant a sink has seen is one the state has, and a log
position saved is never past a grant the state lacks: a line is read twice (a harmless
renewal) rather than a grant lost or made twice.

Why the state file is rewritten seldom: it holds every grant (8 MB at 100,000), while the
write-ahead log holds each change in one small append. It is rewritten once a minute while
grants change, when the log has grown past 1 MB, when an append failed (a grant then exists
only in memory), when the policy changed on reload (so viewers no longer read grants the
ledger has dropped), and at stop.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from logwatch import checkpoint, state
from logwatch.checkpoint import LogCheckpoint
from logwatch.ledger import Ledger
from logwatch.model import DROP, Change, Grant
from logwatch.reporter import Reporter

log = logging.getLogger("relaywatch")

#: Saves one log position: ``checkpoint.save`` (tests pass one that crashes).
SaveCheckpoint = Callable[[str, LogCheckpoint], None]


class Durability:
    """The durable side of ``--state FILE``; with no ``--state``, every call does nothing.

    Args:
        path: the ``--state`` file, or None.
        report: rate-limited logging for a write-ahead log that cannot be appended to.
        now: the time at start.
        save_checkpoint: how one log position is saved.
    """

    def __init__(self, path: str | None, report: Reporter, now: float,
                 save_checkpoint: SaveCheckpoint = checkpoint.save) -> None:
        self.path = path
        #: Where the checkpoints (and the viewers' files) live: the state file's directory.
        self.directory = str(Path(path).parent.resolve()) if path else None  # never a link's target's
        self._report = report
        self._save_checkpoint = save_checkpoint
        #: Grants changed since the state file was last written whole.
        self._unwritten = False
        self._rewritten_at = now
        self._wal_bytes = 0
        self._wal_unsynced = False
        self._wal_failed = False
        self._rewrite_now = False

    def restore(self, ledger: Ledger, now: float) -> tuple[Change, ...]:
        """Load the state file and its write-ahead log into ``ledger``; return the PUTs to publish."""
        if self.path is None:
            return ()
        restored, warning = state.restore(self.path, ledger, now)
        if warning:
            log.warning("%s", warning)
        if restored:
            log.info("restored %d grant(s) from %s", len(restored), self.path)
        try:  # a log left by a crash is folded into the state file within a minute
            self._wal_bytes = state.wal_path(self.path).stat().st_size
        except OSError:
            self._wal_bytes = 0
        self._unwritten = self._wal_bytes > 0
        if not os.path.exists(self.path):
            self._rewritten_at = float("-inf")  # a first start writes it with the first grant
        return restored

    def record(self, changes: Sequence[Change], now: float) -> None:
        """Append the grants among ``changes`` to the write-ahead log; call before any sink sees them.

        An append that fails is reported (rate-limited) and makes the next ``persist``
        rewrite the state file before it saves a log position.
        """
        if self.path is None or not changes:
            return
        self._unwritten = True
        try:
            added = state.append(self.path, [c.grant for c in changes if c.kind != DROP])
        except OSError as exc:
            self._wal_failed = True
            self._report.say("wal", logging.WARNING, "cannot append to %s: %s", state.wal_path(self.path),
                             exc.strerror or exc, now=now)
            return
        self._wal_bytes += added
        self._wal_unsynced |= added > 0

    def rewrite_soon(self) -> None:
        """The policy changed (a reload): rewrite the state file at the next ``persist``, so
        viewers, who judge its grants by the new ``--expire``, never see one the ledger dropped."""
        self._unwritten = self._rewrite_now = True

    def owed(self, now: float) -> bool:
        """True when the state file is due for a rewrite even if nothing else happens."""
        return self._unwritten and (self._rewrite_now or now - self._rewritten_at >= state.REWRITE_EVERY)

    def persist(self, now: float, grants: Callable[[], Iterable[Grant]],
                checkpoints: Iterable[LogCheckpoint] | None, stopping: bool = False) -> None:
        """Make the state durable (the write-ahead log synced, or the state file rewritten
        from ``grants()`` when due), then save ``checkpoints`` (None: hold the positions back).

        Raises:
            OSError: the state could not be made durable or a checkpoint not saved; no
                checkpoint is saved past a state that is not durable.
        """
        if self.path is None or self.directory is None:
            return
        if self._unwritten and state.rewrite_due(now, self._rewritten_at, self._wal_bytes,
                                                 self._wal_failed or self._rewrite_now, stopping=stopping):
            state.save(self.path, grants(), now)
            self._unwritten = self._wal_unsynced = self._wal_failed = self._rewrite_now = False
            self._rewritten_at, self._wal_bytes = now, 0
        elif self._wal_unsynced:
            state.sync_wal(self.path)
            self._wal_unsynced = False
        for cp in checkpoints or ():
            self._save_checkpoint(self.directory, cp)
