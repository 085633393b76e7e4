"""How long a first start takes to look back over ``--expire`` in a big log (issue 15).

Writes syslog logs of 10 MB, 100 MB and 1 GB (by default) in a temporary directory, each
spread evenly over the ``--hours`` before now (Dovecot logins and failures among Postfix
noise), then times where a first start begins reading with ``--expire 30m``:

- ``find_start``: ``lookback.find_start`` over ``os.pread`` on the file, hot (the file just
  written, in the page cache) and cold (its pages dropped with ``posix_fadvise(DONTNEED)``
  first; best effort: the kernel may keep some);
- ``Tail()``: the whole first start of ``Tail(..., first_start=...)``: the watch, the open,
  the search (best of the runs).

Also prints the bytes the search read and how far back it landed. The goal: under 1 s,
whatever the file's size. Run: ``python benchmarks/bench_lookback.py [--sizes 10,100,1000]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from logwatch.sources import lookback  # noqa: E402
from logwatch.sources.tail import FirstStart, Tail  # noqa: E402

EXPIRE = 1800.0
TEMPLATES = (
    "mx dovecot: imap-login: Login: user=<user{n}@example.com>, method=PLAIN, rip=198.51.100.{a}, "
    "lip=192.0.2.1, mpid={n}, TLS, session=<AbCdEf{n}>",
    "mx postfix/smtpd[{n}]: connect from unknown[203.0.113.{a}]",
    "mx dovecot: pop3-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<x{n}>, method=PLAIN, "
    "rip=203.0.113.{a}, lip=192.0.2.1, TLS, session=<Zz{n}>",
    "mx postfix/smtpd[{n}]: disconnect from unknown[203.0.113.{a}] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5",
    "mx dovecot: imap(user{n}@example.com)<{n}><AbCdEf{n}>: Disconnected: Logged out in=120 out=5127",
)


def generate(path: Path, size: int, hours: float, now: float) -> int:
    """Write about ``size`` bytes of log spread over ``hours`` before ``now``; return its lines."""
    seconds = int(hours * 3600)
    body = [t.format(n=n, a=n % 250 + 1) for n in range(1000) for t in TEMPLATES]
    per_line = sum(len(b) for b in body) / len(body) + 17
    per_second = max(1, round(size / seconds / per_line))
    lines = 0
    with path.open("w", buffering=1 << 20) as f:
        for s in range(seconds, 0, -1):
            stamp = time.strftime("%b %e %H:%M:%S ", time.localtime(now - s))
            first = (lines % len(body))
            chunk = [body[(first + i) % len(body)] for i in range(per_second)]
            f.write(stamp + ("\n" + stamp).join(chunk) + "\n")
            lines += per_second
    return lines


def drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def search(path: Path, now: float) -> tuple[float, lookback.Start]:
    fd = os.open(path, os.O_RDONLY)
    try:
        end = os.fstat(fd).st_size
        time_of = lookback.line_timer(datetime.fromtimestamp(now).astimezone())
        began = time.perf_counter()
        found = lookback.find_start(lambda o, n: os.pread(fd, n, o), end, now - EXPIRE - lookback.SLACK, time_of)
        return time.perf_counter() - began, found
    finally:
        os.close(fd)


def whole_first_start(path: Path, now: float) -> float:
    began = time.perf_counter()
    tail = Tail([str(path)], backend="inotify", first_start=FirstStart(EXPIRE, now))
    took = time.perf_counter() - began
    tail.close()
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10,100,1000", help="sizes in MB (10^6 bytes), comma-separated")
    ap.add_argument("--hours", type=float, default=6.0, help="hours the log spans (default 6)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--dir", default=None, help="where to write the logs (default: a temporary directory)")
    args = ap.parse_args()
    print(f"--expire 30m over logs spanning {args.hours:g} h; best of {args.runs}; times in ms")
    print(f"{'size':>8} {'lines':>10} {'read back':>12} {'searched':>10} {'hot':>7} {'cold':>7} {'Tail()':>7}")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for mb in (int(x) for x in args.sizes.split(",")):
            path = Path(tmp) / f"mail-{mb}.log"
            now = float(int(time.time()))
            lines = generate(path, mb * 1_000_000, args.hours, now)
            hot = cold = whole = float("inf")
            for _ in range(args.runs):
                took, found = search(path, now)
                hot = min(hot, took)
                drop_cache(path)
                took, cold_found = search(path, now)
                assert cold_found == found
                cold = min(cold, took)
                whole = min(whole, whole_first_start(path, now))
            size = path.stat().st_size
            back = f"{(found.end - found.offset) / 1e6:.1f} MB"
            print(f"{size / 1e6:>6.0f}MB {lines:>10,} {back:>12} {found.bytes_read / 1024:>8.0f}KB "
                  f"{hot * 1e3:>7.2f} {cold * 1e3:>7.2f} {whole * 1e3:>7.2f}", flush=True)
            path.unlink()


if __name__ == "__main__":
    main()
