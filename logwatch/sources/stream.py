"""Read a stream to its end: replay a file (``--file``); ``stdin`` reads standard input with it.

Thin I/O over ``LineSplitter``: read big binary chunks, hand on batches of complete lines.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from logwatch.sources.lines import DEFAULT_CAP, LineSplitter

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


def matching(stream: BinaryIO, needles: bytes | tuple[bytes, ...],
             splitter: LineSplitter) -> Iterator[tuple[int, list[bytes]]]:
    """Yield, per chunk of ``stream``, how many lines it completed and those containing one
    of ``needles`` (see ``LineSplitter.feed_matching``); the last line even without a newline.
    """
    if isinstance(needles, bytes):
        needles = (needles,)
    read = getattr(stream, "read1", stream.read)
    while True:
        data = read(CHUNK)
        if not data:
            break
        yield splitter.feed_matching(data, needles)
    last = splitter.finish()
    if last is not None:
        yield 1, [last] if any(last.find(n) >= 0 for n in needles) else []
