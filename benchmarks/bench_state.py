"""Measure what the state costs the daemon's loop: a tick's transaction, and a start-up's restore.

    python3 benchmarks/bench_state.py [--live 400000] [--per-tick 3300] [--ticks 60]
                                      [--startup 1000000] [--dir DIR]

A tick is what ``Durability.record`` does once per loop step: one SQLite transaction that
upserts each changed address's latest grant (and deletes withdrawn ones), committed with
``synchronous=FULL`` (its pages appended to ``FILE-wal`` and fsync'd). With ``--live``
grants in the database, this times ``--ticks`` ticks of ``--per-tick`` upserts (random
addresses of the live set: renewals, the bulk of an ISP's logins), one every 0.25 s while the
checkpoint thread copies ``FILE-wal`` back, and prints p50/p99/max. Then, with ``--startup``
grants, the start-up: opening and reading the database (every row checked), and filling
the ledger (``Ledger.restore``), timed apart. Files go on the file system of ``--dir``
(default: the temporary directory). Addresses come from 198.18.0.0/15 (RFC 2544) and
2001:db8::/32. A script that prints figures, not a test.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from logwatch import state  # noqa: E402
from logwatch.ledger import Ledger  # noqa: E402
from logwatch.model import Grant  # noqa: E402

T0 = 1_780_000_000.0


def addresses(n: int) -> list[str]:
    v4 = ipaddress.ip_network("198.18.0.0/15")
    found = [str(a) for _, a in zip(range(n), v4.hosts())]
    base = int(ipaddress.IPv6Address("2001:db8::"))
    found += [str(ipaddress.IPv6Address(base + i)) for i in range(1, n - len(found) + 1)]
    return found


def grants(ips: list[str], at: float) -> Iterator[Grant]:
    for i, ip in enumerate(ips):
        yield Grant(ip, f"user{i % 100000}@example.org", "imap-login", at, at, 1, at + 1800)


def fill(path: Path, ips: list[str]) -> None:
    store, _ = state.open_store(path, T0)
    for start in range(0, len(ips), 100_000):
        store.write(grants(ips[start:start + 100_000], T0), [])
    store.close()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--live", type=int, default=400_000)
    parser.add_argument("--per-tick", type=int, default=3_300)
    parser.add_argument("--ticks", type=int, default=60)
    parser.add_argument("--startup", type=int, default=1_000_000)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    a = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="relaywatch-bench-state-", dir=a.dir))
    print(f"python {sys.version.split()[0]}, SQLite {state.sqlite3.sqlite_version}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}, on {a.dir}")
    try:
        path = work / "tick.db"
        ips = addresses(a.live)
        fill(path, ips)
        store, loaded = state.open_store(path, T0)
        assert len(loaded.grants) == a.live
        rng = random.Random(12)
        times = []
        for tick in range(a.ticks):
            at = T0 + 60 + tick
            changed = rng.sample(ips, a.per_tick)
            rows = [Grant(ip, "renewed@example.org", "imap-login", T0, at, 2, at + 1800) for ip in changed]
            start = time.perf_counter()
            store.write(rows, [])
            times.append(time.perf_counter() - start)
            time.sleep(0.25)
        wal = Path(f"{path}-wal").stat().st_size
        store.close()
        size = path.stat().st_size
        print(f"tick of {a.per_tick:,} upserts at {a.live:,} rows ({size / 1e6:.0f} MB), {a.ticks} ticks: "
              f"p50 {percentile(times, 0.5) * 1e3:.1f} ms, p99 {percentile(times, 0.99) * 1e3:.1f} ms, "
              f"max {max(times) * 1e3:.1f} ms (FILE-wal {wal / 1e6:.0f} MB at the end)")
        path.unlink()

        path = work / "startup.db"
        fill(path, addresses(a.startup))
        size = path.stat().st_size
        start = time.perf_counter()
        store, loaded = state.open_store(path, T0 + 10)
        opened = time.perf_counter() - start
        ledger = Ledger(expire_after=3600, max_entries=max(a.startup, 1))
        begin = time.perf_counter()
        restored = ledger.restore(loaded.grants, T0 + 10)
        filled = time.perf_counter() - begin
        store.close()
        print(f"start-up with {a.startup:,} grants ({size / 1e6:.0f} MB): database opened and read, every row "
              f"checked, {opened:.2f} s; Ledger.restore {filled:.2f} s; ready in {opened + filled:.2f} s "
              f"({len(restored):,} restored)")
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
