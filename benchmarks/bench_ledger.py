"""Measure the ledger: bytes per grant at 1,000,000 entries, and what an expiry sweep costs.

A script that prints figures, not a test: run ``python benchmarks/bench_ledger.py`` from the
checkout. Addresses come from the benchmarking range 198.18.0.0/15 (RFC 2544, 131,072
IPv4 addresses) and then 2001:db8::/32; 10,000 distinct users, as a busy server might have.
Memory is the growth of the process's resident set (VmRSS) while the ledger fills, so
allocator slack counts against us; ``--tracemalloc`` also prints what Python itself
allocated (much slower).
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from logwatch.addresses import NeverList  # noqa: E402
from logwatch.ledger import Ledger  # noqa: E402
from logwatch.model import LoginEvent  # noqa: E402

T0 = 1_780_000_000.0
BENCH_V4 = ipaddress.ip_network("198.18.0.0/15")
DOC_V6 = ipaddress.ip_network("2001:db8::/32")


def addresses(count: int, family: str) -> Iterator[str]:
    """``count`` distinct normalised addresses: IPv4 first (if asked), then IPv6."""
    made = 0
    if family in ("v4", "mixed"):
        for address in BENCH_V4:
            if made == count:
                return
            yield str(address)
            made += 1
        if family == "v4" and made < count:
            raise SystemExit(f"only {BENCH_V4.num_addresses} IPv4 addresses in {BENCH_V4}")
    base = int(DOC_V6.network_address)
    while made < count:
        yield ipaddress.IPv6Address(base + made * 7919 + 1).compressed
        made += 1


def filled(count: int, family: str, expire: float, users: int = 10_000) -> Ledger:
    ledger = Ledger(expire_after=expire, never=NeverList.parse("none"), max_entries=count)
    for n, ip in enumerate(addresses(count, family)):
        when = T0 + n * 0.001
        ledger.grant(LoginEvent(ip, f"user{n % users}", "imap-login", when), now=when)
    return ledger


def rss() -> int:
    """This process's resident set size in bytes (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise SystemExit("no VmRSS in /proc/self/status")


def memory_per_entry(count: int, family: str, traced: bool) -> float:
    """Bytes per grant: RSS growth, or (``traced``) Python's own allocations."""
    gc.collect()
    if traced:
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
    else:
        before = rss()
    ledger = filled(count, family, expire=10 * 86400)
    gc.collect()
    if traced:
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    else:
        after = rss()
    assert len(ledger) == count
    per = (after - before) / count
    del ledger
    gc.collect()
    return per


def sweep_costs(count: int, repeat: int) -> dict[str, float]:
    """Seconds for: an idle sweep (nothing due), 1% due, and everything due at once."""
    results: dict[str, list[float]] = {"idle": [], "1%": [], "all": [], "grant": []}
    expire = 3600.0
    for _ in range(repeat):
        started = time.perf_counter()
        ledger = filled(count, "mixed", expire)
        results["grant"].append((time.perf_counter() - started) / count)
        first = T0 + expire
        started = time.perf_counter()
        assert ledger.expire(first - 1) == ()
        results["idle"].append(time.perf_counter() - started)
        started = time.perf_counter()
        dropped = ledger.expire(first + count * 0.001 * 0.01)
        results["1%"].append(time.perf_counter() - started)
        assert abs(len(dropped) - count // 100) <= 1
        started = time.perf_counter()
        ledger.expire(first + count)
        results["all"].append(time.perf_counter() - started)
        assert len(ledger) == 0
    return {name: statistics.median(values) for name, values in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--sweep-entries", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tracemalloc", action="store_true",
                        help="count Python allocations instead of RSS growth (slow)")
    parser.add_argument("--one", nargs=2, metavar=("FAMILY", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # one memory figure, in a fresh process so no freed arena is reused
        print(memory_per_entry(int(args.one[1]), args.one[0], args.tracemalloc))
        return
    how = "traced allocations" if args.tracemalloc else "RSS growth"

    print(f"python {sys.version.split()[0]}")
    for family, count, label in (
        ("mixed", args.entries, "131,072 IPv4 + rest IPv6"),
        ("v6", args.entries, "all IPv6"),
        ("v4", BENCH_V4.num_addresses, "all IPv4"),
    ):
        command = [sys.executable, __file__, "--one", family, str(count)]
        if args.tracemalloc:
            command.append("--tracemalloc")
        per = float(subprocess.run(command, capture_output=True, text=True,
                                   check=True).stdout)
        print(f"memory ({how}): {per:.0f} bytes per grant at {count:,} grants ({label})")

    costs = sweep_costs(args.sweep_entries, args.repeat)
    print(f"grant: {costs['grant'] * 1e6:.2f} us per new client "
          f"(median of {args.repeat}, {args.sweep_entries:,} clients)")
    n = args.sweep_entries
    print(f"expire at {n:,} grants: nothing due {costs['idle'] * 1e6:.1f} us; "
          f"1% due {costs['1%'] * 1e3:.2f} ms; all due {costs['all'] * 1e3:.1f} ms "
          f"(median of {args.repeat})")


if __name__ == "__main__":
    main()
