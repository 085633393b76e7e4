"""``feed_matching`` is ``feed`` followed by a filter, whatever the chunking."""

from __future__ import annotations

import random

import pytest

from logwatch.sources.lines import LineSplitter

NEEDLE = b"-login"


def _pieces(rng: random.Random) -> bytes:
    parts = []
    for _ in range(rng.randint(0, 14)):
        k = rng.random()
        if k < 0.3:
            parts.append(b"x" * rng.randint(0, 40))
        elif k < 0.5:
            parts.append(NEEDLE)
        elif k < 0.7:
            parts.append(b"\n")
        elif k < 0.8:
            parts.append(b"\0" * rng.randint(1, 30))  # a copytruncate hole
        else:
            parts.append(b"ab-lo")  # half a needle, completed or not by the next piece
    return b"".join(parts)


@pytest.mark.parametrize("seed", range(20))
def test_same_lines_count_and_offsets_as_feed(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(1000):
        data = _pieces(rng)
        cuts = sorted(rng.sample(range(len(data) + 1), min(len(data) + 1, rng.randint(0, 5))))
        chunks = [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]
        cap = rng.randint(1, 30)
        plain, matching = LineSplitter(cap), LineSplitter(cap)
        expected: list[bytes] = []
        got: list[bytes] = []
        lines = counted = 0
        for chunk in chunks:
            complete = plain.feed(chunk)
            lines += len(complete)
            expected += [line for line in complete if NEEDLE in line]
            n, found = matching.feed_matching(chunk, NEEDLE)
            counted += n
            got += found
        assert (counted, got, matching.consumed, matching.pending) == (lines, expected, plain.consumed, plain.pending), chunks
        assert matching.finish() == plain.finish()
