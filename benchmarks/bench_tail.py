"""Measure the follower: catch-up speed from a checkpoint, and append-to-delivery latency.

Usage:
    python benchmarks/bench_tail.py                  # both, a 1 GB syslog log made once and kept
    python benchmarks/bench_tail.py --catchup-only --lines 1000000
    python benchmarks/bench_tail.py --latency-only --seconds 30 --rate 1000

Catch-up: each contender runs as a whole process (interpreter start-up included), one
after the other, on the same file, warm in the page cache (a first untimed read warms it):
    - relaywatch: checkpoint at offset 0 saved to a state directory, then ``open_source``
      and ``poll`` until the last line is handed on (decoded, in batches);
    - baseline: ``for line in f`` over the same file, text mode (it decodes too), and
      binary mode (it does not).
Latency: a writer process appends one line per millisecond (an absolute schedule) with
``CLOCK_MONOTONIC`` at the write in the line; the follower, in this process, stamps each
line when ``poll`` hands it on. Both clocks are the same system-wide clock.

Figures are printed, never asserted: they depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GEN = ROOT.parent / "shared" / "tools" / "gen-dovecot-log.py"  # the shared/ beside the checkout
sys.path.insert(0, str(ROOT))

CATCHUP_RELAYWATCH = r"""
import os, sys, time
sys.path.insert(0, {root!r})
from logwatch import checkpoint
from logwatch.checkpoint import FilePosition, LogCheckpoint
from logwatch.sources.tail import _first_line, fingerprint, open_source
log, state = sys.argv[1], sys.argv[2]
fd = os.open(log, os.O_RDONLY); st = os.fstat(fd)
checkpoint.save(state, LogCheckpoint(os.path.abspath(log), (FilePosition(st.st_dev, st.st_ino, 0, fingerprint(_first_line(fd))),)))
os.close(fd)
src = open_source([log], state)
n = 0
while True:
    for b in src.poll(1.0):
        n += len(b.lines)
        last = b.position.offset
    if n and last >= st.st_size:
        break
src.close()
print(n)
"""

CATCHUP_TEXT = r"""
import sys
n = 0
with open(sys.argv[1], encoding="utf-8", errors="replace") as f:
    for line in f:
        n += 1
print(n)
"""

CATCHUP_BINARY = r"""
import sys
n = 0
with open(sys.argv[1], "rb") as f:
    for line in f:
        n += 1
print(n)
"""

WRITER = r"""
import os, sys, time
path, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
fd = os.open(path, os.O_WRONLY | os.O_APPEND)
step = 1e9 / rate
start = time.monotonic_ns() + 200_000_000
for i in range(int(rate * seconds)):
    due = start + int(i * step)
    while True:
        left = due - time.monotonic_ns()
        if left <= 0:
            break
        time.sleep(left / 1e9 if left > 2_000_000 else 0)
    os.write(fd, b"Mar 10 00:00:01 mail dovecot: imap-login: Login: user=<bob@example.org>, method=PLAIN, rip=192.0.2.%d, lip=192.0.2.1, mpid=%d, TLS t=%d\n" % (2 + i % 250, i, time.monotonic_ns()))
os.close(fd)
"""


def make_log(lines: int, directory: Path) -> Path:
    """Generate (once, then reuse) a syslog-format Dovecot log of ``lines`` lines."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"syslog-{lines}.log"
    if not path.exists():
        print(f"generating {path} ({lines} lines) ...", flush=True)
        tmp = path.with_suffix(".part")
        subprocess.run([sys.executable, str(GEN), "--lines", str(lines), "--format", "syslog", "--seed", "1", "--out", str(tmp)], check=True)
        tmp.rename(path)
    return path


def timed(args: list[str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - t0, int(out.split()[-1])


def catchup(log: Path, runs: int) -> None:
    size = log.stat().st_size
    with log.open("rb") as f:  # warm the page cache: every contender then reads from memory
        while f.read(1 << 24):
            pass
    contenders: dict[str, Callable[[str], list[str]]] = {
        "relaywatch (checkpoint at 0)": lambda state: [sys.executable, "-c", CATCHUP_RELAYWATCH.format(root=str(ROOT)), str(log), state],
        "for line in f (text)": lambda state: [sys.executable, "-c", CATCHUP_TEXT, str(log)],
        "for line in f (binary)": lambda state: [sys.executable, "-c", CATCHUP_BINARY, str(log)],
    }
    print(f"\ncatch-up: {log} ({size / 1e9:.2f} GB), best of {runs} whole-process runs, page cache warm")
    best: dict[str, tuple[float, int]] = {}
    for _ in range(runs):
        for name, argv in contenders.items():
            with tempfile.TemporaryDirectory() as state:
                dt, n = timed(argv(state))
            if name not in best or dt < best[name][0]:
                best[name] = (dt, n)
    base = best["for line in f (text)"][0]
    for name, (dt, n) in best.items():
        print(f"  {name:30s} {n:>10,d} lines  {dt:7.2f} s  {n / dt:>12,.0f} lines/s  {size / dt / 1e6:7.1f} MB/s  x{base / dt:.2f} of text loop")


def latency(rate: float, seconds: float, backend: str) -> None:
    from logwatch.sources.tail import Tail

    with tempfile.TemporaryDirectory() as d:
        log = Path(d) / "mail.log"
        log.touch()
        src = Tail([str(log)], backend=backend)  # type: ignore[arg-type]
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(log), str(rate), str(seconds)])
        samples: list[int] = []
        stamps: list[int] = []  # when each line was written: the rate the writer achieved
        want = int(rate * seconds)
        deadline = time.monotonic() + seconds + 30
        try:
            while len(samples) < want and time.monotonic() < deadline:
                for b in src.poll(0.5):
                    now = time.monotonic_ns()
                    written = [int(line.rsplit(" t=", 1)[1]) for line in b.lines]
                    stamps += written[:1] + written[-1:]
                    samples += [now - t for t in written]
        finally:
            writer.wait()
            src.close()
    ms = sorted(s / 1e6 for s in samples)
    q = statistics.quantiles(ms, n=100, method="inclusive")
    achieved = (len(ms) - 1) / ((max(stamps) - min(stamps)) / 1e9)
    print(
        f"  {backend:8s} {len(ms):>6d} lines at {achieved:,.0f}/s: p50 {q[49]:6.2f} ms  p90 {q[89]:6.2f} ms  "
        f"p99 {q[98]:6.2f} ms  max {ms[-1]:7.2f} ms"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=7_750_000, help="log size in lines (7.75M is about 1 GB)")
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "relaywatch-bench")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rate", type=float, default=1000)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--fast-rate", type=float, default=50_000, help="the busy-server writer rate")
    ap.add_argument("--catchup-only", action="store_true")
    ap.add_argument("--latency-only", action="store_true")
    args = ap.parse_args()
    print(f"python {platform.python_version()} on {platform.platform()}, {os.cpu_count()} CPUs")
    if not args.latency_only:
        catchup(make_log(args.lines, args.dir), args.runs)
    if not args.catchup_only:
        print(f"\nlatency, append to delivery, writer at {args.rate:.0f} lines/s for {args.seconds:.0f} s (goal p99 < 20 ms):")
        latency(args.rate, args.seconds, "inotify")
        latency(args.rate, min(args.seconds, 10), "polling")
        print(f"\nlatency under a log growing at {args.fast_rate:.0f} lines/s for 5 s:")
        latency(args.fast_rate, 5, "inotify")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
