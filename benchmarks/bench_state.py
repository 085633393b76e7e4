"""Measure what the state costs the daemon's loop: a tick's transaction, and a start-up's restore.

    python3 benchmarks/bench_state.py [--live 400000] [--per-tick 3300] [--ticks 60]
                                      [--startup 1000000] [--repeat 3] [--dir DIR]

A tick is what ``Durability.record`` does once per loop step: one SQLite transaction that
upserts each changed address's latest grant (and deletes withdrawn ones), committed with
``synchronous=FULL`` (its pages appended to ``FILE-wal`` and fsync'd). With ``--live``
grants in the database, this times ``--ticks`` ticks of ``--per-tick`` upserts (random
addresses of the live set: renewals, the bulk of an ISP's logins), one every 0.25 s while the
checkpoint thread copies ``FILE-wal`` back, and prints p50/p99/max (``--ticks 0``: none).

Then, with ``--startup`` grants, the start-up as ``relaywatch run`` makes it before it reads
its first log line, each run in a fresh process (``--repeat`` runs; best and median):
``Durability.restore`` (the database opened and read, every row checked, in
``state.open_store``; the ledger filled under the default never-list, in ``Ledger``; what
is left), then ``Administrator.start`` (the brake's index of users, fed every restored
grant) and an in-memory sink given the restored grants. The grants' last logins are spread
over the 30 minutes before the start, in no order of their addresses. Files go on the file system of
``--dir`` (default: the temporary directory). Addresses come from 198.18.0.0/15 (RFC 2544)
and 2001:db8::/32. A script that prints figures, not a test.
"""

from __future__ import annotations

import argparse
import gc
import functools
import ipaddress
import json
import logging
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from logwatch import state  # noqa: E402
from logwatch.admin import Administrator  # noqa: E402
from logwatch.brake import Brake  # noqa: E402
from logwatch.durability import Durability  # noqa: E402
from logwatch.ledger import Ledger  # noqa: E402
from logwatch.model import Grant  # noqa: E402
from logwatch.reporter import Reporter  # noqa: E402
from logwatch.sinks.memory import MemorySink  # noqa: E402
from logwatch.sinks.outlet import Outlet  # noqa: E402

T0 = 1_780_000_000.0
#: What one start-up run prints, in order (seconds each).
PARTS = ("open_store", "ledger", "restore", "admin", "sink", "ready")


def addresses(n: int) -> list[str]:
    v4 = ipaddress.ip_network("198.18.0.0/15")
    found = [str(a) for _, a in zip(range(n), v4.hosts())]
    base = int(ipaddress.IPv6Address("2001:db8::"))
    found += [str(ipaddress.IPv6Address(base + i)) for i in range(1, n - len(found) + 1)]
    return found


def grants(ips: list[str], at: float, spread: float = 0.0, seed: int = 0) -> Iterator[Grant]:
    """A grant for each of ``ips``, last at ``at`` or, with ``spread``, at random in the
    ``spread`` seconds before it (so the order of last logins is not the addresses')."""
    rng = random.Random(seed)
    for i, ip in enumerate(ips):
        last = at - rng.random() * spread
        first = last - (i % 7) * 600 if spread else last
        yield Grant(ip, f"user{i % 100000}@example.org", "imap-login" if i % 4 else "pop3-login", first, last,
                    1 + i % 5 if spread else 1, last + 1800)


def fill(path: Path, ips: list[str], spread: float = 0.0) -> None:
    store, _ = state.open_store(path, T0)
    for start in range(0, len(ips), 100_000):
        store.write(grants(ips[start:start + 100_000], T0, spread, start), [])
    store.close()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def _timed(owner: Any, name: str, into: dict[str, float], key: str) -> None:
    """Wrap ``owner.name`` so that the seconds spent in it are added to ``into[key]``."""
    inner: Callable[..., Any] = getattr(owner, name)

    @functools.wraps(inner)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            into[key] = into.get(key, 0.0) + time.perf_counter() - start

    setattr(owner, name, wrapper)


def startup_once(path: Path, expected: int) -> dict[str, float]:
    """One start-up over ``path``, as ``Daemon.start`` makes it before its first log line
    (a fresh process: the collector's state is the daemon's)."""
    times: dict[str, float] = {}
    _timed(state, "open_store", times, "open_store")
    for name in ("restore", "restore_saved"):  # whichever Durability.restore calls
        if hasattr(Ledger, name):
            _timed(Ledger, name, times, "ledger")
    now = T0 + 10
    ledger = Ledger(expire_after=3600, max_entries=max(expected, 1))  # the default never-list
    report = Reporter(logging.getLogger("bench"))
    durability = Durability(str(path), report, now)
    gc.disable()  # as Daemon.start: the collector off until the sinks have the grants
    began = time.perf_counter()
    restored = durability.restore(ledger, now)
    times["restore"] = time.perf_counter() - began
    began = time.perf_counter()
    restored = Administrator(str(path), Brake()).start(ledger, restored, now)
    times["admin"] = time.perf_counter() - began
    began = time.perf_counter()
    Outlet(MemorySink("bench"), report).send(restored, now)
    times["sink"] = time.perf_counter() - began
    gc.enable()
    gc.freeze()
    times["ready"] = times["restore"] + times["admin"] + times["sink"]
    assert len(ledger) == len(restored) == expected, (len(ledger), len(restored), expected)
    durability.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--live", type=int, default=400_000)
    parser.add_argument("--per-tick", type=int, default=3_300)
    parser.add_argument("--ticks", type=int, default=60)
    parser.add_argument("--startup", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    parser.add_argument("--one-startup", nargs=2, metavar=("FILE", "GRANTS"), help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.one_startup:  # one start-up, in a fresh process, for the parent to collect
        print(json.dumps(startup_once(Path(a.one_startup[0]), int(a.one_startup[1]))))
        return
    work = Path(tempfile.mkdtemp(prefix="relaywatch-bench-state-", dir=a.dir))
    print(f"python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}, on {a.dir}")
    try:
        if a.ticks:
            ticks(work, a.live, a.per_tick, a.ticks)
        if a.startup:
            startup(work, a.startup, a.repeat)
    finally:
        shutil.rmtree(work)


def ticks(work: Path, live: int, per_tick: int, count: int) -> None:
    path = work / "tick.db"
    ips = addresses(live)
    fill(path, ips)
    store, loaded = state.open_store(path, T0)
    assert len(loaded.grants) == live
    rng = random.Random(12)
    times = []
    for tick in range(count):
        at = T0 + 60 + tick
        changed = rng.sample(ips, per_tick)
        rows = [Grant(ip, "renewed@example.org", "imap-login", T0, at, 2, at + 1800) for ip in changed]
        start = time.perf_counter()
        store.write(rows, [])
        times.append(time.perf_counter() - start)
        time.sleep(0.25)
    wal = Path(f"{path}-wal").stat().st_size
    store.close()
    size = path.stat().st_size
    print(f"tick of {per_tick:,} upserts at {live:,} rows ({size / 1e6:.0f} MB), {count} ticks: "
          f"p50 {percentile(times, 0.5) * 1e3:.1f} ms, p99 {percentile(times, 0.99) * 1e3:.1f} ms, "
          f"max {max(times) * 1e3:.1f} ms (FILE-wal {wal / 1e6:.0f} MB at the end)")
    path.unlink()


def startup(work: Path, count: int, repeat: int) -> None:
    path = work / "startup.db"
    fill(path, addresses(count), spread=1800)  # logins over the last 30 minutes, as a live set's are
    size = path.stat().st_size
    runs = []
    for _ in range(repeat):
        done = subprocess.run([sys.executable, __file__, "--one-startup", str(path), str(count)],
                              capture_output=True, text=True, check=True)
        runs.append(json.loads(done.stdout))
        print("  run: " + ", ".join(f"{part} {runs[-1][part]:.2f} s" for part in PARTS), flush=True)

    def figure(part: str) -> str:
        values = [run[part] for run in runs]
        return f"{min(values):.2f}/{statistics.median(values):.2f} s"

    print(f"start-up with {count:,} grants ({size / 1e6:.0f} MB), best/median of {repeat}, load "
          f"{os.getloadavg()[0]:.1f}: Durability.restore {figure('restore')} (of which state.open_store, "
          f"the rows read and checked, {figure('open_store')}; the ledger filled {figure('ledger')}); then "
          f"Administrator.start {figure('admin')}, a memory sink {figure('sink')}: ready in {figure('ready')}")


if __name__ == "__main__":
    main()
