"""Tests for collector.py: what exists is frozen out of the collector's passes when due, a
cycle frozen by mistake is freed by the daily full pass, and the longest pass is timed."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from logwatch import collector
from logwatch.collector import Collector


class Node:
    def __init__(self) -> None:
        self.other: object = None


@pytest.fixture
def clock() -> Iterator[list[float]]:
    now = [1000.0]
    yield now
    gc.unfreeze()  # the rest of the test session collects as usual


def test_what_exists_is_frozen_when_due_and_a_frozen_cycle_freed_once_a_day(clock: list[float]) -> None:
    gc.unfreeze()
    c = Collector(lambda: clock[0])
    try:
        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle: only the collector can free it
        gone = weakref.ref(a)
        del a, b
        c.tend()
        assert gc.get_freeze_count() == 0  # not due yet
        clock[0] += collector.FREEZE_EVERY
        c.tend()
        assert gc.get_freeze_count() > 0
        gc.collect()
        assert gone() is not None  # frozen: no pass looks at it
        clock[0] += collector.FULL_EVERY
        c.tend()
        assert gone() is None and gc.get_freeze_count() > 0  # the daily pass freed it, then froze again
    finally:
        c.close()


def test_the_longest_pass_is_timed_and_the_callback_goes_at_close(clock: list[float]) -> None:
    c = Collector(lambda: clock[0])
    garbage = [[[] for _ in range(100)] for _ in range(2000)]
    del garbage
    gc.collect()
    assert c.longest > 0
    c.close()
    assert c._timed not in gc.callbacks
