"""Run ``relaywatch run`` as a process over a log and a relay-ctrl directory, for tests."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

LOGIN = "{stamp} mx dovecot: imap-login: Login: user=<{user}>, method=PLAIN, rip={ip}, lip=192.0.2.1, mpid=1, TLS"
FAILED = ("{stamp} mx dovecot: imap-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<x>, "
          "method=PLAIN, rip={ip}, lip=192.0.2.1")


def stamp(at: float | None = None) -> str:
    return time.strftime("%b %e %H:%M:%S", time.localtime(at))


def wait_for(condition: Callable[[], bool], what: str, deadline: float = 60.0) -> None:
    """Poll ``condition`` until true; fail after ``deadline`` seconds (generous: a loaded 2-core CI)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Run:
    """A ``relaywatch run`` subprocess over a log and a relay-ctrl directory in ``tmp``."""

    def __init__(self, tmp: Path, *extra: str) -> None:
        self.log = tmp / "mail.log"
        self.rc = tmp / "relay-ctrl"
        self.state = tmp / "state" / "state.json"
        self.stderr = tmp / "relaywatch.err"
        self.extra = extra
        self.rc.mkdir(exist_ok=True)
        self.state.parent.mkdir(exist_ok=True)
        self.log.touch()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [sys.executable, "-m", "logwatch", "run", "--log", str(self.log), "--relay-ctrl-dir", str(self.rc),
                "--state", str(self.state), *self.extra]
        with self.stderr.open("ab") as err:
            self.proc = subprocess.Popen(args, stderr=err, stdin=subprocess.DEVNULL)
        wait_for(lambda: "first start" in self.errors() or "resuming" in self.errors() or "resum" in self.errors()
                 or self.proc is None or self.proc.poll() is not None, "relaywatch to start")
        assert self.proc.poll() is None, self.errors()

    def errors(self) -> str:
        return self.stderr.read_text() if self.stderr.exists() else ""

    def write(self, line: str) -> None:
        with self.log.open("a") as f:
            f.write(line + "\n")

    def granted(self) -> set[str]:
        return {p.name for p in self.rc.iterdir() if not p.name.startswith(".")}

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=60)
        self.proc = None
        return code


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Callable[..., Run]]:
    made: list[Run] = []

    def make(*extra: str) -> Run:
        r = Run(tmp_path, *extra)
        made.append(r)
        return r

    yield make
    for r in made:
        if r.proc is not None:
            r.proc.kill()
            r.proc.wait()
