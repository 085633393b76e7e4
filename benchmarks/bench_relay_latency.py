"""Benchmark: from a real IMAP/POP3 login's OK to relay permission, through relaywatch run.

    python3 benchmarks/bench_relay_latency.py [--logins 60] [--log file|syslog]

Needs root, Debian's dovecot-imapd, dovecot-pop3d and postfix (what .ci/run installs).
Starts a private Dovecot and a private Postfix (the test labs), and ``relaywatch run``
following Dovecot's log with a ``hash:`` map and a relay-ctrl directory. For each login,
from its own source address 127.0.0.N, two probers start before the login is sent:

- relay-ctrl: polls for the file ``DIR/127.0.0.N`` every millisecond;
- postfix: sends ``RCPT TO`` a remote address from 127.0.0.N, again and again, until
  smtpd answers 250 (each probe is a fresh SMTP session).

Latency is measured from the moment the server answered the login OK (``Attempt.answered``)
to the first time each prober saw permission. Prints p50, p99 and max for both.
Goals (issue 5): p99 under 250 ms with a hash map, under 50 ms until the relay-ctrl file exists.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import postfixlab  # noqa: E402
from tests.dovecotlab import DovecotLab  # noqa: E402


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logins", type=int, default=60)
    parser.add_argument("--log", choices=("file", "syslog"), default="file")
    a = parser.parse_args()
    if a.logins > 250:
        parser.error("--logins: at most 250 (one source address 127.0.0.N each)")

    work = Path(tempfile.mkdtemp(prefix="relaywatch-latency-"))
    relay_ctrl = work / "relay-ctrl"
    relay_ctrl.mkdir()
    postfix = postfixlab.start(["hash"])
    spec = postfix.map_spec("hash")
    file_ms: list[float] = []
    relay_ms: list[float] = []
    try:
        with DovecotLab(work, log=a.log) as dovecot:
            err = (work / "relaywatch.err").open("wb")
            daemon = subprocess.Popen(
                [sys.executable, "-m", "logwatch", "run", "--log", str(dovecot.log_path), "--postfix-map", spec,
                 "--postfix-config", str(postfix.config_dir), "--relay-ctrl-dir", str(relay_ctrl),
                 "--state", str(work / "state.json"), "--never", "127.0.0.1/32", "--expire", "10m"],
                stderr=err, stdin=subprocess.DEVNULL)
            try:
                end = time.monotonic() + 60
                while "first start" not in (work / "relaywatch.err").read_text() and time.monotonic() < end:
                    time.sleep(0.05)
                for n in range(a.logins):
                    source = f"127.0.{1 + (n + 2) // 250}.{(n + 2) % 250 + 1}" if n > 246 else f"127.0.0.{n + 3}"
                    seen: dict[str, float] = {}

                    def watch_file(source: str = source, seen: dict[str, float] = seen) -> None:
                        path = relay_ctrl / source
                        stop = time.monotonic() + 30
                        while not path.exists() and time.monotonic() < stop:
                            time.sleep(0.001)
                        seen["file"] = time.monotonic()

                    def watch_relay(source: str = source, seen: dict[str, float] = seen) -> None:
                        stop = time.monotonic() + 30
                        while time.monotonic() < stop:
                            if postfix.probe("hash", source)[0] == 250:
                                break
                        seen["relay"] = time.monotonic()

                    threads = [threading.Thread(target=watch_file), threading.Thread(target=watch_relay)]
                    for t in threads:
                        t.start()
                    attempt = dovecot.login("imap" if n % 2 else "pop3", "alice", source=source)
                    for t in threads:
                        t.join()
                    file_ms.append((seen["file"] - attempt.answered) * 1000)
                    relay_ms.append((seen["relay"] - attempt.answered) * 1000)
            finally:
                daemon.terminate()
                daemon.wait(timeout=60)
                err.close()
    finally:
        postfix.stop()

    def line(name: str, values: list[float], goal: float) -> str:
        p99 = percentile(values, 99)
        return (f"{name:<26} p50 {statistics.median(values):7.1f} ms   p99 {p99:7.1f} ms   max {max(values):7.1f} ms"
                f"   (goal p99 < {goal:g} ms: {'met' if p99 < goal else 'NOT met'})")

    print(f"{a.logins} logins, Dovecot log: {a.log}, relaywatch with relay-ctrl + hash map")
    print(line("login OK -> relay-ctrl file", file_ms, 50))
    print(line("login OK -> RCPT 250 (hash)", relay_ms, 250))


if __name__ == "__main__":
    main()
