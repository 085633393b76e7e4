"""A daemontools log directory: a real ``multilog t s4096 n5`` rotating many times, followed and caught up.

The writer is Dovecot's standard error as ``log_timestamp = ""`` makes it (``imap-login:
Info: Login: ...``); multilog puts a TAI64N label before each line and rotates ``current``
to ``@<tai64n>.s`` (a copy made by its processor step, so a new inode) every 4 KB. relaywatch must authorise every login
exactly once, across rotations while it runs and while it is down.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = str(Path(__file__).resolve().parent.parent)
LINE = ("imap-login: Info: Login: user=<user{n}@example.com>, method=PLAIN, rip=10.{a}.{b}.{c}, "
        "lip=192.0.2.1, mpid={n}, TLS, session=<kcwIVMRgFZp/{n:04d}>\n")


def _need() -> None:
    if shutil.which("multilog") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must run the multilog test: multilog is missing (Debian: daemontools)")
        pytest.skip("multilog is missing (Debian: daemontools)")


def _ip(n: int) -> str:
    return f"10.{n // 65536}.{n // 256 % 256}.{n % 256}"


def _wait(condition: object, what: str, err: Path, deadline: float = 60.0) -> None:
    assert callable(condition)
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}: {err.read_text()[-3000:]}"
        time.sleep(0.05)


def test_multilog_rotations_while_running_and_while_down(tmp_path: Path) -> None:
    _need()
    logdir = tmp_path / "log"
    rc = tmp_path / "relay-ctrl"
    rc.mkdir()
    state = tmp_path / "state" / "state.json"
    state.parent.mkdir()
    err = tmp_path / "relaywatch.err"
    multilog = subprocess.Popen(["multilog", "t", "s4096", "n5", str(logdir)], stdin=subprocess.PIPE)
    assert multilog.stdin is not None
    n = 0

    def write(count: int) -> None:
        nonlocal n
        for _ in range(count):
            n += 1
            a, b, c = _ip(n).split(".")[1:]
            multilog.stdin.write(LINE.format(n=n, a=a, b=b, c=c).encode())  # type: ignore[union-attr]
            multilog.stdin.flush()  # type: ignore[union-attr]
            time.sleep(0.002)

    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        with err.open("ab") as e:
            p = subprocess.Popen([sys.executable, "-m", "logwatch", "run", "--log", str(logdir / "current"),
                                  "--relay-ctrl-dir", str(rc), "--state", str(state), "--never", "none",
                                  "--expire", "1h"], stdin=subprocess.DEVNULL, stderr=e, cwd=ROOT,
                                 env={**os.environ, "PYTHONPATH": ROOT})
        started.append(p)
        return p

    def granted() -> set[str]:
        return {p.name for p in rc.iterdir() if not p.name.startswith(".")}

    try:
        write(5)
        _wait(lambda: (logdir / "current").exists(), "multilog's current", err)
        relaywatch = start()
        _wait(lambda: "first start" in err.read_text(), "relaywatch to start", err)
        write(60)  # three rotations while running
        _wait(lambda: {_ip(i) for i in range(6, n + 1)} <= granted(), "the logins while running", err)
        time.sleep(1.2)
        relaywatch.send_signal(signal.SIGKILL)
        relaywatch.wait(30)
        # About 13 logins fill a 4 KB file with its labels; n5 keeps four rotated files, so
        # 40 logins (three rotations) while down are all still there at the restart.
        write(40)
        rotated = [p for p in logdir.iterdir() if re.fullmatch(r"@[0-9a-f]{24}\.s", p.name)]
        assert len(rotated) >= 3, sorted(p.name for p in logdir.iterdir())
        relaywatch = start()
        write(10)
        _wait(lambda: {_ip(i) for i in range(6, n + 1)} <= granted(), "every login", err)
        relaywatch.send_signal(signal.SIGTERM)
        relaywatch.wait(30)
    finally:
        for p in started:
            if p.poll() is None:
                p.kill()
                p.wait(30)
        multilog.stdin.close()
        multilog.wait(30)
    authorised = re.findall(r" authorised (\S+) ", err.read_text())
    assert len(authorised) == len(set(authorised)), "a login authorised twice"
    assert set(authorised) == {_ip(i) for i in range(1, n + 1)}  # the first 5: read back at the first start
