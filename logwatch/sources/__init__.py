"""Sources of log lines: what a batch is, and the protocol every source follows.

Three sources exist: ``tail.Tail`` follows files across rotation; ``stdin.StdinSource``
reads standard input (``--log -``); ``journal.JournalSource`` reads the systemd journal
(``--journal``), and ``both.Both`` follows the journal beside files. ``stream.batches`` also replays a file once, for
``--test-pattern``. ``tail.open_source`` picks one for the ``--log`` arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:  # only named in annotations; a replay (--test-pattern) never loads them
    from logwatch.checkpoint import FilePosition, LogCheckpoint


@dataclass(frozen=True, slots=True)
class Batch:
    """Complete lines read from one file in one go.

    Attributes:
        log: the followed path as configured (absolute), or ``-`` for standard input.
        lines: decoded lines without their newlines, in file order.
        position: the file the lines came from, and the offset just past the last one
            (None for standard input).
        resume: what to save for ``log`` once these lines have been acted on (None for
            standard input, which cannot be resumed).
        untrusted: lines of journal entries that imitate Dovecot but fail the trusted
            match, each with why (who sent it): reported, never acted on.
    """

    log: str
    lines: tuple[str, ...]
    position: FilePosition | None
    resume: LogCheckpoint | None
    untrusted: tuple[tuple[str, str], ...] = ()


@runtime_checkable
class LineSource(Protocol):
    """Where log lines come from. The daemon drives it from one thread::

        source = open_source(logs, state_dir)     # start positions are fixed here
        while running and not source.finished:    # finished: standard input ended
            for batch in source.poll(timeout):    # waits at most timeout for lines
                act_on(batch.lines)               # match, grant, sinks commit
            if a second has passed:               # and only after the sinks committed
                for cp in source.checkpoints():
                    checkpoint.save(state_dir, cp)
        source.close()
        for cp in source.checkpoints(): checkpoint.save(state_dir, cp)

    Acting before saving means a crash re-reads at most what came since the last save
    (a renewal, harmless) and never skips a line. ``Batch.resume`` is the same state
    as of one batch, for a caller that commits batch by batch.
    """

    #: How the source learns of new lines: "inotify", "polling", "stdin" or "journal".
    backend: str

    @property
    def finished(self) -> bool:
        """True once no batch will ever come again."""
        ...

    def poll(self, timeout: float) -> list[Batch]:
        """Return the batches ready now, waiting up to ``timeout`` seconds for the first."""
        ...

    def checkpoints(self) -> list[LogCheckpoint]:
        """Return the resume state after every batch returned so far, one per log.

        Still answers after ``close()``, so a shutdown may close first and save last.
        """
        ...

    def close(self) -> None:
        """Release files, watches and threads. Idempotent."""
        ...
