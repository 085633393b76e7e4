"""Measure what a busy second costs the state: a whole rewrite against an append and a sync.

    python3 benchmarks/bench_state.py [--grants 100000] [--per-second 50] [--dir DIR]

While grants change, ``relaywatch run`` saves the state once a second before it saves a log
position. It used to rewrite the whole state file each time; now it appends each second's
grants to ``FILE.wal`` and fsyncs that, and rewrites the file once a minute (see
``state.rewrite_due``). This prints, for a ledger of ``--grants`` grants with
``--per-second`` logins in the second, the best of five of each, on the file system of
``--dir`` (default: the temporary directory). Addresses come from 198.18.0.0/15 (RFC 2544).
A script that prints figures, not a test.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from logwatch import state  # noqa: E402
from logwatch.model import Grant  # noqa: E402

T0 = 1_780_000_000.0


def best(action: Callable[[], None], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grants", type=int, default=100_000)
    parser.add_argument("--per-second", type=int, default=50)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    a = parser.parse_args()
    hosts = ipaddress.ip_network("198.18.0.0/15").hosts()
    grants = [Grant(str(next(hosts)), f"user{i % 10000}@example.org", "imap-login", T0 + i, T0 + i, 1, T0 + i + 1800)
              for i in range(a.grants)]
    second = grants[: a.per_second]
    work = Path(tempfile.mkdtemp(prefix="relaywatch-bench-state-", dir=a.dir))
    path = work / "state.json"
    state.save(path, grants, T0)
    size = path.stat().st_size

    def rewrite() -> None:
        state.save(path, grants, T0)

    def append_and_sync() -> None:
        state.append(path, second)
        state.sync_wal(path)

    whole, log = best(rewrite), best(append_and_sync)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, on {a.dir}")
    print(f"state file: {a.grants:,} grants, {size / 1e6:.1f} MB")
    print(f"rewrite the state file (json, write, fsync, rename, fsync dir): {whole * 1e3:8.1f} ms")
    print(f"append {a.per_second} grants to FILE.wal and fsync it:             {log * 1e3:8.1f} ms")
    print(f"a busy second costs {whole / log:.0f} times less")
    for p in work.iterdir():
        p.unlink()
    work.rmdir()


if __name__ == "__main__":
    main()
