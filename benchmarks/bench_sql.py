"""Benchmark: the --sql sink at an ISP's load, against a private PostgreSQL or MariaDB on loopback.

    python3 benchmarks/bench_sql.py [--engine pgsql|mysql] [--seconds 10] [--rate 3300]
                                    [--live 400000] [--new 100]

Needs root and Debian's postgresql / mariadb-server, psycopg and PyMySQL (what .ci/run
installs). Starts the tests' private server (tests/sqllab.py), then:

1. fills the table with ``--live`` grants through the sink, as a full re-publish does
   (after a reconnect, or a first start with --state), and times it;
2. runs the daemon's publishing path in-process for ``--seconds``: ``--rate`` logins a
   second, of which ``--new`` from addresses not seen before and the rest renewals of
   the live ones, each through the real ``Ledger.grant`` and the real ``Outlet`` and
   ``SqlSink``, turned as ``relaywatch run`` turns them: every login publishes at once,
   and the outlet commits to the SQL sink at most every ``batch_interval`` (20 ms), what
   arrived in between going into the next commit. "login -> row visible" runs from a
   login's arrival to the end of the commit that carried it (committed: every other
   session, Postfix's too, sees it);
3. runs Postfix's lookup (the query ``postfix-sql-map`` prints, with the key quoted as
   Postfix quotes it, one statement each as dict_pgsql/dict_mysql sends it) for live
   addresses, unknown ones and Postfix's shortened forms, on a connection of its own.

Prints p50/p99 of both, statements per login, and the CPU relaywatch's side used
(matching the log lines is not included: see bench_tail.py and bench_ledger.py).
Goals (issue 13): p99 login -> visible under 100 ms, lookup p99 under 2 ms, far fewer
statements than logins.
"""

from __future__ import annotations

import argparse
import logging
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import sqllab  # noqa: E402
from logwatch.addresses import NeverList  # noqa: E402
from logwatch.ledger import Ledger  # noqa: E402
from logwatch.model import PUT, Change, Grant, LoginEvent  # noqa: E402
from logwatch.reporter import Reporter  # noqa: E402
from logwatch.sinks import SinkOptions, open_sink  # noqa: E402
from logwatch.sinks.outlet import Outlet  # noqa: E402
from logwatch.sinks.sql import SqlSink  # noqa: E402
from logwatch.sinks.sqlurl import lookup_query  # noqa: E402


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def address(n: int) -> str:
    return f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=("pgsql", "mysql"), default="pgsql")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=3300)
    parser.add_argument("--live", type=int, default=400_000)
    parser.add_argument("--new", type=int, default=100)
    parser.add_argument("--lookups", type=int, default=5000)
    a = parser.parse_args()

    lab: Any = sqllab.start_pg() if a.engine == "pgsql" else sqllab.start_my()
    work = Path(tempfile.mkdtemp(prefix="relaywatch-benchsql-"))
    try:
        pw = sqllab.password_file(work)
        table = "relay_clients"
        sink = open_sink(lab.url(), SinkOptions(sql_table=table, sql_password_file=str(pw)))
        assert isinstance(sink, SqlSink)
        ledger = Ledger(3600, NeverList.parse("none"))
        outlet = Outlet(sink, Reporter(logging.getLogger("bench")), snapshot=ledger.grants)

        # 1. the live set, as a full re-publish sends it
        now = time.time()
        fill = []
        for n in range(a.live):
            fill.extend(ledger.grant(LoginEvent(address(n), f"user{n}", "imap-login", now - random.uniform(0, 1800)),
                                     now))
        t0 = time.perf_counter()
        outlet.send(fill, now)
        fill_s = time.perf_counter() - t0
        assert outlet.health().ok, outlet.health()
        count = lab.query(f"SELECT count(*) FROM {table}")[0][0]
        print(f"{a.engine}: {count:,} live rows published in {fill_s:.1f} s "
              f"({a.live / fill_s:,.0f} rows/s, {sink.statements} statements)")

        # 2. the load
        statements0, transactions0 = sink.statements, sink.transactions
        rnd = random.Random(13)
        next_new = a.live
        latencies: list[float] = []
        waiting: list[float] = []  # arrival times of logins not committed yet
        logins = 0
        start = time.perf_counter()
        cpu0 = time.process_time()
        due = start
        gap = 1.0 / a.rate
        new_every = max(1, a.rate // max(1, a.new))
        end = start + a.seconds
        while True:
            t = time.perf_counter()
            if t >= end:
                break
            changes: list[Change] = []
            while due <= t:  # every login that has arrived by now
                if logins % new_every == 0:
                    ip = address(next_new)
                    next_new += 1
                else:
                    ip = address(rnd.randrange(a.live))
                wall = time.time()
                changes.extend(ledger.grant(LoginEvent(ip, "bob", "imap-login", wall), wall))
                waiting.append(due)
                logins += 1
                due += gap
            owed = outlet.due()
            if not changes and (owed is None or owed > time.time()):
                time.sleep(min(0.001, max(0.0, due - t)))
                continue
            outlet.send(changes, time.time())  # the daemon's publish(); the outlet batches
            if not outlet.backlog:
                done = time.perf_counter()
                latencies.extend(done - arrived for arrived in waiting)
                waiting.clear()
        outlet.flush(time.time())
        latencies.extend(time.perf_counter() - arrived for arrived in waiting)
        wall_s = time.perf_counter() - start
        cpu_s = time.process_time() - cpu0
        statements = sink.statements - statements0
        transactions = sink.transactions - transactions0
        assert outlet.health().ok, outlet.health()
        print(f"load: {logins:,} logins in {wall_s:.1f} s ({logins / wall_s:,.0f}/s, {a.new}/s new), "
              f"{transactions:,} transactions, {statements:,} statements: "
              f"{statements / logins:.4f} statements per login ({logins / max(1, statements):,.0f} logins per statement)")
        print(f"login -> row visible: p50 {percentile(latencies, 50) * 1000:.1f} ms, "
              f"p99 {percentile(latencies, 99) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms")
        print(f"relaywatch side (ledger + outlet + sink, this process): {cpu_s / wall_s * 100:.0f}% of one core")

        # 3. Postfix's lookups
        query = lookup_query(a.engine, table)
        conn = lab.admin()
        keys = []
        for n in range(a.lookups):
            kind = n % 4
            ip = address(rnd.randrange(a.live))
            keys.append(ip if kind < 2 else "unknown" if kind == 2 else ip.rsplit(".", 1)[0])
        times = []
        cur = conn.cursor()
        for key in keys:
            text = query.replace("'%s'", _quoted(key))
            t0 = time.perf_counter()
            cur.execute(text)
            cur.fetchall()
            times.append(time.perf_counter() - t0)
        conn.close()
        print(f"Postfix's lookup at {count:,}+ rows: p50 {percentile(times, 50) * 1000:.3f} ms, "
              f"p99 {percentile(times, 99) * 1000:.3f} ms (half live addresses, half 'unknown' and shortened forms)")
        outlet.close()
    finally:
        lab.stop()
        shutil.rmtree(lab.root, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def _quoted(key: str) -> str:
    """The key as Postfix puts it in the query: in quotes, escaped (these keys need none)."""
    assert "'" not in key and "\\" not in key
    return f"'{key}'"


if __name__ == "__main__":
    main()
