"""Follow the journal beside log files (``--journal`` with ``--log PATH``) as one ``LineSource``.

Why a thread: ``tail.Tail`` waits on an event that its file watches set; the journal's
reader has a descriptor that becomes readable when the journal changes. A small thread
waits on that descriptor and wakes the files' wait, so a journal entry is handed on as
soon as a file's line is, with one thread reading both.
"""

from __future__ import annotations

import select
import threading
from typing import TYPE_CHECKING

from logwatch.sources import Batch

if TYPE_CHECKING:
    from logwatch.checkpoint import LogCheckpoint
    from logwatch.sources.journal import JournalSource
    from logwatch.sources.tail import Tail

#: Seconds the waiting thread sleeps between looks at whether it should stop.
_NAP = 0.5


class Both:
    """Files and the journal, read from the caller's thread; the journal's batches first."""

    def __init__(self, files: Tail, journal: JournalSource) -> None:
        self._files = files
        self._journal = journal
        self.backend = f"{files.backend}+journal"
        self._closed = False
        self._taken = threading.Event()  # the reader took in the journal's change
        self._taken.set()
        self._thread = threading.Thread(target=self._watch, name="relaywatch-journal-wake", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        fd = self._journal.fileno()
        while not self._closed:
            if not self._taken.wait(_NAP):
                continue
            readable, _, _ = select.select([fd], [], [], _NAP)
            if readable and not self._closed:
                self._taken.clear()  # readable until the reader processes it: do not spin
                self._files.wake()

    @property
    def finished(self) -> bool:
        return False

    def poll(self, timeout: float) -> list[Batch]:
        out = self._journal.poll(0)
        self._taken.set()
        if out:
            return out + self._files.poll(0)
        out = self._files.poll(timeout)
        out += self._journal.poll(0)
        self._taken.set()
        return out

    def checkpoints(self) -> list[LogCheckpoint]:
        return self._files.checkpoints() + self._journal.checkpoints()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._taken.set()
        self._thread.join(timeout=2 * _NAP + 1)
        self._files.close()
        self._journal.close()
