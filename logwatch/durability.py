"""Keep every grant durable before anything past it is: the state database, then checkpoints.

The order is the guarantee (the daemon keeps its half of it by calling ``record`` before any
sink sees a change, and ``persist`` after the sinks committed)::

    record(changes)   one transaction in the --state database (state.Store.write), committed
                      with synchronous=FULL: durable across SIGKILL and power loss when it
                      returns, before any sink sees the changes
    ... the sinks publish ...
    persist(...)      the state is durable already (or, after a failed write, written now:
                      no checkpoint otherwise), then the log checkpoints

So after a SIGKILL or a power cut a grant a sink has seen is one the state has, and a log
position saved is never past a grant the state lacks: a line is read twice (a harmless
renewal) rather than a grant lost or made twice.

Why a transaction per tick, and what it holds: for each address the tick changed, its
latest grant (a renewal of the same address twice in a tick is one row), and for each one
withdrawn, a delete; with ``--sessions``, a row for each session opened and a delete for
each one ended (``Ledger.session_changes``), so the sessions saved are always those of the
grants saved, and a logout read after a restart finds its session. The cost is the tick's changes, never the live set; nothing is ever
rewritten whole (see ``state``).
"""

from __future__ import annotations

import errno
import gc
import logging
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from logwatch import checkpoint, state
from logwatch.checkpoint import LogCheckpoint
from logwatch.ledger import Ledger
from logwatch.model import DROP, Change, Grant
from logwatch.reporter import Reporter
from logwatch.startup import StartError

log = logging.getLogger("relaywatch")

#: Saves one log position: ``checkpoint.save`` (tests pass one that crashes).
SaveCheckpoint = Callable[[str, LogCheckpoint], None]


class Durability:
    """The durable side of ``--state FILE``; with no ``--state``, every call does nothing.

    Args:
        path: the ``--state`` file, or None.
        report: rate-limited logging for a database that cannot be written.
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
        self._store: state.Store | None = None
        #: Changes not in the database yet (a write failed): address -> its latest grant,
        #: or None for a withdrawal. While any is owed, no checkpoint is saved.
        self._pending: dict[str, Grant | None] = {}
        #: The same for sessions: id -> (ip, start), or None for one ended.
        self._pending_sessions: dict[str, tuple[str, float] | None] = {}

    @property
    def store(self) -> state.Store | None:
        """The open database (None before ``restore``, without ``--state``, after ``close``)."""
        return self._store

    def restore(self, ledger: Ledger, now: float) -> tuple[Change, ...]:
        """Open the database (migrating an old JSON state), load it into ``ledger`` (the
        grants, then the open sessions: ``Ledger.restore_sessions``); return the PUTs to
        publish. Rows the ledger does not take (expired while relaywatch was down, now on
        the never-list, over the cap; a session past ``--session-max``, or every session
        when ``--sessions`` is off) are deleted from the database.

        Raises:
            StartError: not even an empty database can be made at ``--state``.
        """
        if self.path is None:
            return ()
        warning = state.directory_warning(self.path)
        if warning:
            log.warning("%s", warning)
        # A million grants and their changes are millions of objects at once: the cyclic
        # collector would walk them again and again while they are made (a third of the
        # start-up), and in every later full collection. None of them is in a cycle. (A
        # caller that keeps the collector off for longer, over the rest of its start, has
        # it left off.)
        collecting = gc.isenabled()
        gc.disable()
        try:
            try:
                self._store, loaded = state.open_store(self.path, now)
            except (OSError, sqlite3.Error) as exc:
                raise StartError(f"--state {self.path}: cannot open the database: "
                                 f"{getattr(exc, 'strerror', None) or exc}") from None
            if loaded.warning:
                log.warning("%s", loaded.warning)
            before = len(ledger)
            restored = ledger.restore_saved(loaded.grants, now, checked=True)  # state refuses a row it never wrote
        finally:
            if collecting:
                gc.enable()
            gc.freeze()  # what start-up made is never scanned again (Python's advice for servers)
        if restored:
            log.info("restored %d grant(s) from %s", len(restored), self.path)
        if before or len(ledger) < len(loaded.grants):  # else an empty ledger took every row
            for row in loaded.grants:
                if row[0] not in ledger:
                    self._pending[row[0]] = None
        saved = {row[0]: row for row in loaded.grants} if loaded.sessions else None
        reopened = ledger.restore_sessions(loaded.sessions, now, saved)
        ledger.session_changes()  # the sessions it took are the rows already there
        kept = {sid for sid, _ip, _start in ledger.sessions()}
        for sid, _ip, _start in loaded.sessions:
            if sid not in kept:
                self._pending_sessions[sid] = None
        for change in reopened:  # a connected client whose grant ran out while relaywatch was down
            self._pending[change.grant.ip] = change.grant
        if kept:
            log.info("restored %d open session(s) from %s", len(kept), self.path)
        self._flush(now)
        return restored + reopened

    def record(self, changes: Sequence[Change], now: float,
               sessions: tuple[Iterable[tuple[str, str, float]], Iterable[str]] = ((), ())) -> None:
        """Write ``changes`` and the sessions opened and ended (``Ledger.session_changes``)
        to the database in one transaction; call before any sink sees them.

        For each address only its latest change is written. A write that fails is
        reported (rate-limited) and kept; it is tried again at the next ``record`` and
        ``persist``, and no checkpoint is saved until it succeeds.
        """
        opened, closed = sessions
        if self._store is None:
            return
        pending = self._pending
        for change in changes:
            pending[change.grant.ip] = None if change.kind == DROP else change.grant
        waiting = self._pending_sessions
        for sid, ip, start in opened:
            waiting[sid] = (ip, start)
        for sid in closed:
            waiting[sid] = None
        if pending or waiting:
            self._flush(now)

    def _flush(self, now: float) -> bool:
        """Write what is owed; True when nothing is owed any more."""
        owed = len(self._pending) + len(self._pending_sessions)
        if not owed or self._store is None:
            return not owed
        puts = [g for g in self._pending.values() if g is not None]
        drops = [ip for ip, g in self._pending.items() if g is None]
        sessions = self._pending_sessions
        opened = [(sid, row[0], row[1]) for sid, row in sessions.items() if row is not None]
        closed = [sid for sid, row in sessions.items() if row is None]
        try:
            self._store.write(puts, drops, opened, closed)
        except (OSError, sqlite3.Error) as exc:
            self._report.say("state", logging.WARNING, "cannot write %s: %s; %d change(s) kept to retry",
                             self.path, exc, owed, now=now)
            return False
        self._pending.clear()
        sessions.clear()
        return True

    def rewrite_soon(self) -> None:
        """The policy changed (a reload). Nothing is owed for it: the withdrawals the reload
        published went through ``record`` and deleted their rows at once, so viewers, who
        judge the grants by the new ``--expire``, never see one the ledger dropped."""

    def owed(self, now: float) -> bool:
        """True while changes wait for a write that failed (``persist`` retries it)."""
        return bool(self._pending or self._pending_sessions)

    def persist(self, now: float, grants: Callable[[], Iterable[Grant]],
                checkpoints: Iterable[LogCheckpoint] | None, stopping: bool = False) -> None:
        """Make sure the state is durable (it is, unless a write failed: then it is retried
        here), then save ``checkpoints`` (None: hold the positions back). At stop, close the
        database (see ``state.Store.close``).

        ``grants`` is not read: every change is in the database already, so nothing here
        costs anything in proportion to the live set. (It stays for the daemon's call.)

        Raises:
            OSError: the state could not be made durable or a checkpoint not saved; no
                checkpoint is saved past a state that is not durable.
        """
        if self.path is None or self.directory is None:
            return
        if not self._flush(now):
            raise OSError(errno.EIO, f"{len(self._pending) + len(self._pending_sessions)} change(s) "
                          "not in the database yet")
        if self._store is not None and self._store.checkpoint_error:
            self._report.say("checkpoint", logging.WARNING, "%s: %s", self.path, self._store.checkpoint_error,
                             now=now)
        for cp in checkpoints or ():
            self._save_checkpoint(self.directory, cp)
        if stopping:
            self.close()

    def close(self) -> None:
        """Close the database (a no-op if it is not open)."""
        if self._store is not None:
            self._store.close()
            self._store = None
