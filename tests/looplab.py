"""The daemon's loop in-process: a fake clock, a scripted log source and sinks that fail on cue.

Time is an argument here, never a patched global: the ``Clock`` is what the daemon's
``clock`` returns, and a test moves it on. The source hands on exactly the lines a test
feeds it, one batch per ``step``, with a checkpoint per line read, so a test can see which
position was saved.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from logwatch import config
from logwatch.checkpoint import FilePosition, LogCheckpoint
from logwatch.config import Settings
from logwatch.daemon import Daemon
from logwatch.model import Grant
from logwatch.sinks import Health, Sink, SinkError
from logwatch.sinks.memory import MemorySink
from logwatch.sources import Batch

LOGIN = "{stamp} mx dovecot: imap-login: Login: user=<{user}>, method=PLAIN, rip={ip}, lip=192.0.2.1, mpid=1, TLS"
#: A moment of the fake clock (2026-06-10 12:00:00 local time).
T0 = time.mktime((2026, 6, 10, 12, 0, 0, 0, 0, -1))


def login(ip: str, at: float, user: str = "bob") -> str:
    return LOGIN.format(stamp=time.strftime("%b %e %H:%M:%S", time.localtime(at)), user=user, ip=ip)


class Clock:
    """The daemon's clock: ``clock()`` is now; ``clock.now = ...`` moves it."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class ScriptedSource:
    """A ``LineSource`` over lines a test feeds; each line read moves the checkpoint by one."""

    backend = "scripted"

    def __init__(self, path: str) -> None:
        self.path = path
        self.queued: list[str] = []
        self.read = 0
        self.closed = False
        self.finished = False

    def feed(self, *lines: str) -> None:
        self.queued.extend(lines)

    def poll(self, timeout: float) -> list[Batch]:
        if not self.queued:
            return []
        lines, self.queued = tuple(self.queued), []
        self.read += len(lines)
        return [Batch(self.path, lines, None, None)]

    def checkpoints(self) -> list[LogCheckpoint]:
        return [LogCheckpoint(self.path, (FilePosition(1, 1, self.read, ""),))]

    def close(self) -> None:
        self.closed = True


class FlakySink(MemorySink):
    """A memory sink that raises the errors a test queues, one per call of ``put``/``drop``
    (``fail_puts``) or of ``commit`` (``fail_commits``); ``health`` says what a test sets."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.fail_puts: dict[str, BaseException] = {}
        self.fail_commits: list[BaseException] = []
        self.calls: list[str] = []
        self.own = Health()

    def put(self, grant: Grant) -> None:
        self.calls.append(f"put {grant.ip}")
        error = self.fail_puts.get(grant.ip)
        if error is not None:
            if not isinstance(error, SinkError) or error.retryable:
                del self.fail_puts[grant.ip]  # once; a non-retryable one stays
            raise error
        super().put(grant)

    def commit(self) -> None:
        self.calls.append("commit")
        if self.fail_commits:
            raise self.fail_commits.pop(0)
        super().commit()

    def health(self) -> Health:
        return self.own


def settings(tmp: Path, *extra: tuple[str, object]) -> Settings:
    """Settings for an in-process daemon: a log and a state file in ``tmp`` (the sinks are
    passed to the daemon, so the relay-ctrl directory named here is never opened)."""
    (tmp / "state").mkdir(exist_ok=True)
    (tmp / "mail.log").touch()
    values: dict[str, object] = {"log": [str(tmp / "mail.log")], "relay-ctrl-dir": str(tmp),
                                 "state": str(tmp / "state" / "state.json"), "expire": "10m"}
    values.update(dict(extra))
    return config.settings(values)


class Lab:
    """A daemon in-process over a scripted source, a fake clock and the given sinks."""

    def __init__(self, tmp: Path, sinks: Sequence[Sink], *extra: tuple[str, object],
                 clock: Clock | None = None) -> None:
        self.tmp = tmp
        self.clock = clock or Clock()
        self.settings = settings(tmp, *extra)
        self.reloaded: Settings | None = None
        self.source = ScriptedSource(str(tmp / "mail.log"))
        self.daemon = Daemon(self.settings, reload_settings=self._reload, clock=self.clock, sinks=sinks,
                             open_source=lambda logs, state_dir: self.source)

    def _reload(self) -> Settings:
        return self.reloaded or self.settings

    @property
    def state(self) -> Path:
        return self.tmp / "state" / "state.json"

    def at(self, now: float) -> Lab:
        self.clock.now = now
        return self

    def step(self, *lines: str) -> None:
        """Feed ``lines`` (may be none) and run one turn of the loop at the clock's time."""
        self.source.feed(*lines)
        self.daemon.step(0)
