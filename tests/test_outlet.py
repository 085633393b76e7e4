"""Tests for sinks/outlet.py: backlog, backoff, SinkError.retryable, and health, ``now`` passed in."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from logwatch.model import DROP, PUT, Change, Grant
from logwatch.reporter import Reporter
from logwatch.sinks import Health, SinkError
from logwatch.sinks import background
from logwatch.sinks.outlet import Outlet
from tests.looplab import FlakySink

T0 = 1_780_000_000.0


def put(ip: str) -> Change:
    return Change(PUT, Grant(ip, "bob", "imap-login", T0, T0, 1, T0 + 600), "login")


def outlet(sink: FlakySink) -> Outlet:
    return Outlet(sink, Reporter(logging.getLogger("test")))


def test_backoff_doubles_up_to_the_maximum_and_resets_after_success() -> None:
    sink = FlakySink("s")
    sink.fail_commits = [SinkError("memory:s", "busy", retryable=True)] * 8
    o = outlet(sink)
    o.send([put("192.0.2.7")], T0)
    waits = []
    now = T0
    while (due := o.due()) is not None:
        waits.append(due - now)
        now = due
        o.send([], now)
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60]  # the 9th try succeeds
    assert set(sink.published) == {"192.0.2.7"} and o.due() is None and o.delay == 1


def test_a_non_retryable_commit_drops_the_batch_and_says_failing_until_one_succeeds() -> None:
    sink = FlakySink("s")
    sink.fail_commits = [SinkError("memory:s", "closed", retryable=False)]
    o = outlet(sink)
    o.send([put("192.0.2.7")], T0)
    assert o.due() is None  # nothing to retry: retrying cannot help
    assert o.health().ok is False and o.health().error == "memory:s: closed"
    o.send([Change(DROP, put("192.0.2.7").grant, "expired")], T0 + 5)
    assert o.health().ok and o.health().last_ok == T0 + 5


def test_health_joins_the_sinks_own_word() -> None:
    sink = FlakySink("s")
    o = outlet(sink)
    o.send([put("192.0.2.7")], T0)
    assert (o.health().ok, o.health().last_ok) == (True, T0)
    sink.own = Health(ok=False, error="memory:s: rebuild failed", last_ok=T0 - 9)
    assert (o.health().ok, o.health().error, o.health().last_ok) == (False, "memory:s: rebuild failed", T0 - 9)
    sink.own = Health(ok=False, error="memory:s: rebuild failed")
    assert o.health().last_ok is None  # never finished its work


class Hanging(FlakySink):
    """A sink whose commit waits until ``answer`` is set, as a frozen database does."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.answer = threading.Event()

    def commit(self) -> None:
        self.answer.wait(30)
        super().commit()


def test_a_background_outlet_hands_over_at_once_and_says_when_its_sink_hangs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(background, "STUCK", 0.2)
    sink = Hanging("db")
    o = background.BackgroundOutlet(outlet(sink), lambda: T0)
    began = time.perf_counter()
    o.send([put("192.0.2.7")], T0)
    o.send([put("192.0.2.8")], T0)
    assert time.perf_counter() - began < 0.05  # the loop does not wait for the database
    time.sleep(0.4)
    health = o.health()
    assert not health.ok and health.backlog >= 1 and "no commit for" in health.error, health
    sink.answer.set()
    deadline = time.monotonic() + 10
    while len(sink.published) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert set(sink.published) == {"192.0.2.7", "192.0.2.8"}
    assert o.health().ok and o.health().backlog == 0
    o.flush(T0)
    o.close()


def test_a_background_outlet_stops_without_waiting_for_ever(monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(background, "STOP_WAIT", 0.3)
    sink = Hanging("db")
    o = background.BackgroundOutlet(outlet(sink), lambda: T0)
    o.send([put("192.0.2.7")], T0)
    began = time.monotonic()
    o.flush(T0)
    assert time.monotonic() - began < 5
    assert "did not answer within" in caplog.text and "the next start sends them" in caplog.text
    sink.answer.set()
