"""Follow standard input (``--log -``): ``journalctl -f -o short-iso ... | relaywatch run``.

Thin I/O: a thread reads the pipe with ``stream.batches`` and hands batches over a queue.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
from typing import TYPE_CHECKING, BinaryIO

from logwatch.sources import Batch
from logwatch.sources.lines import DEFAULT_CAP, LineSplitter, decode
from logwatch.sources.stream import batches

if TYPE_CHECKING:
    from logwatch.checkpoint import LogCheckpoint

log = logging.getLogger("relaywatch.stdin")


class StdinSource:
    """Standard input (``--log -``) as a ``LineSource``: ``journalctl -f ... | relaywatch``.

    A thread runs ``stream.batches`` (blocking reads of a pipe) and hands its batches
    over a queue, so ``poll`` can wait with a timeout. A pipe cannot be resumed: after a
    restart, ``journalctl --since`` or a cursor file is what replays the gap.
    """

    backend = "stdin"

    def __init__(self, stream_in: BinaryIO | None = None, cap: int = DEFAULT_CAP) -> None:
        self._in = stream_in if stream_in is not None else sys.stdin.buffer
        self._queue: queue.Queue[list[bytes] | BaseException | None] = queue.Queue(maxsize=64)
        self._ended = False
        self._splitter = LineSplitter(cap)
        self._cut_said = False
        self._thread = threading.Thread(target=self._pump, name="relaywatch-stdin", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        try:
            for lines in batches(self._in, splitter=self._splitter):
                self._queue.put(lines)
        except BaseException as exc:  # handed to the reading thread, which reports it
            self._queue.put(exc)
        self._queue.put(None)

    @property
    def finished(self) -> bool:
        return self._ended

    def poll(self, timeout: float) -> list[Batch]:
        if self._ended:
            return []
        out: list[Batch] = []
        try:
            item = self._queue.get(timeout=max(0.0, timeout))
            while True:
                if item is None:
                    self._ended = True
                    log.info("standard input ended")
                    break
                if isinstance(item, BaseException):
                    log.error("reading standard input failed: %s", item)
                    self._ended = True
                    break
                out.append(Batch("-", tuple(map(decode, item)), None, None))
                item = self._queue.get_nowait()
        except queue.Empty:
            pass
        if self._splitter.cut and not self._cut_said:
            log.warning(
                "standard input: a line longer than %d bytes was cut to that length (reported once)", self._splitter.cap
            )
            self._cut_said = True
        return out

    def checkpoints(self) -> list[LogCheckpoint]:
        return []

    def close(self) -> None:
        self._ended = True  # the thread is a daemon: a blocked read ends with the process
