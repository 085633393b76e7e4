"""Read a stream to its end: replay a file (``--file``), or follow standard input (``--log -``).

Thin I/O over ``LineSplitter``: read big binary chunks, hand on batches of complete lines.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
from collections.abc import Iterator
from typing import BinaryIO

from logwatch.checkpoint import LogCheckpoint
from logwatch.sources import Batch
from logwatch.sources.lines import DEFAULT_CAP, LineSplitter, decode

log = logging.getLogger("relaywatch.stream")

CHUNK = 1 << 20


def batches(stream: BinaryIO, cap: int = DEFAULT_CAP, splitter: LineSplitter | None = None) -> Iterator[list[bytes]]:
    """Yield the lines of ``stream`` in batches, the last line even without a newline.

    Args:
        stream: a binary file object, read to its end.
        cap: the most bytes kept of one line (see ``LineSplitter``).
        splitter: pass one in to read ``cut`` afterwards.
    """
    splitter = splitter or LineSplitter(cap)
    read = getattr(stream, "read1", stream.read)
    while True:
        data = read(CHUNK)
        if not data:
            break
        lines = splitter.feed(data)
        if lines:
            yield lines
    last = splitter.finish()
    if last is not None:
        yield [last]


def matching(stream: BinaryIO, needle: bytes, splitter: LineSplitter) -> Iterator[tuple[int, list[bytes]]]:
    """Yield, per chunk of ``stream``, how many lines it completed and those containing
    ``needle`` (see ``LineSplitter.feed_matching``); the last line even without a newline.
    """
    read = getattr(stream, "read1", stream.read)
    while True:
        data = read(CHUNK)
        if not data:
            break
        yield splitter.feed_matching(data, needle)
    last = splitter.finish()
    if last is not None:
        yield 1, [last] if last.find(needle) >= 0 else []


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
