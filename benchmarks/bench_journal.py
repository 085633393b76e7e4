"""--journal: catch-up speed from a cursor and append-to-decision latency, against journalctl -o json.

Runs a private journald (``tests/journallab.py``; root) and, inside its namespace:

1. fills it with N Dovecot login entries (``logger -f``);
2. catch-up: ``JournalSource`` (python-systemd) from the first entry to the last, each
   entry turned into the line the matcher reads; then ``journalctl -o json`` with the
   same match, each line parsed by ``json.loads`` (the child-process design); then
   ``journalctl -o json | wc -l`` (journalctl alone);
3. latency: 1,000 entries/s sent to /dev/log for 5 s, each carrying its send time;
   the source's ``poll`` hands them on; p50/p99 of receive minus send.

    sudo .venv/bin/python benchmarks/bench_journal.py [N]      (default 200000)
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def inside(n: int) -> None:
    from logwatch.sources.journal import JournalSource

    match = {"SYSLOG_IDENTIFIER": frozenset({"dovecot"})}  # the benchmark's own entries
    lines = "".join(f"imap-login: Login: user=<u{i}>, method=PLAIN, rip=192.0.2.{i % 250 + 1}, lip=192.0.2.1, "
                    f"mpid={i}, session=<s{i}>\n" for i in range(n))
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as f:
        f.write(lines)
        f.flush()
        subprocess.run(["logger", "-t", "dovecot", "-f", f.name], check=True)
    time.sleep(1)
    t = time.perf_counter()
    src = JournalSource(match, None, 10 * 86400)
    got = 0
    while batches := src.poll(0):
        got += sum(len(b.lines) + len(b.untrusted) for b in batches)
    reader = time.perf_counter() - t
    t = time.perf_counter()
    p = subprocess.Popen(["journalctl", "-o", "json", "--output-fields=MESSAGE,_UID,_EXE,_SYSTEMD_UNIT",
                          "SYSLOG_IDENTIFIER=dovecot"], stdout=subprocess.PIPE, bufsize=1 << 20)
    assert p.stdout is not None
    parsed = sum(1 for line in p.stdout if json.loads(line))
    p.wait()
    child = time.perf_counter() - t
    t = time.perf_counter()
    counted = int(subprocess.run("journalctl -o json SYSLOG_IDENTIFIER=dovecot | wc -l", shell=True,
                                 capture_output=True, text=True).stdout)
    wc = time.perf_counter() - t
    print(f"catch-up over {got} entries: JournalSource (python-systemd) {reader:.2f} s = {got / reader:,.0f}/s; "
          f"journalctl -o json + json.loads {child:.2f} s = {parsed / child:,.0f}/s; "
          f"journalctl -o json | wc -l {wc:.2f} s = {counted / wc:,.0f}/s")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.connect("/run/systemd/journal/dev-log")
    delays: list[float] = []
    start = time.monotonic()
    sent = 0
    while sent < 5000:
        due = start + sent / 1000
        while time.monotonic() < due:
            for b in src.poll(max(0.0, due - time.monotonic())):
                now = time.time()
                delays += [now - float(line.rsplit("t=", 1)[1]) for line in b.lines]
        sock.send(f"<30>dovecot: imap-login: bench t={time.time():.6f}".encode())
        sent += 1
    end = time.monotonic() + 2
    while len(delays) < sent and time.monotonic() < end:
        for b in src.poll(0.05):
            now = time.time()
            delays += [now - float(line.rsplit("t=", 1)[1]) for line in b.lines]
    delays.sort()
    print(f"latency at 1,000 entries/s ({len(delays)}/{sent} seen): p50 {delays[len(delays) // 2] * 1000:.2f} ms, "
          f"p99 {delays[int(len(delays) * 0.99)] * 1000:.2f} ms")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200000
    if os.environ.get("BENCH_JOURNAL_INSIDE"):
        inside(n)
        return
    from tests.journallab import JournalLab

    with tempfile.TemporaryDirectory() as keep, JournalLab(Path(keep), max_file="64M") as lab:
        subprocess.run([*lab.enter, sys.executable, __file__, str(n)], check=True, cwd=str(ROOT),
                       env={**os.environ, "BENCH_JOURNAL_INSIDE": "1", "PYTHONPATH": str(ROOT)})


if __name__ == "__main__":
    main()
