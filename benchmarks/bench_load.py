"""Load benchmark: an ISP's login rate and live set through a real ``relaywatch run`` (issue 12).

    python3 benchmarks/bench_load.py --sink relayctrl|hash|btree|lmdb|cdb|pgsql|mysql \\
        [--rate 3300] [--live 400000] [--new 100] [--seconds 30] [--expire 1800]

What it does, end to end, with nothing but files and processes:

1. Writes ``--live`` logins into a Dovecot 2.3 log file (its own ``log_path`` format), each
   from its own address in 100.64.0.0/10 (RFC 6598), stamped evenly over the last
   ``--expire`` (so about live/expire grants expire every second, as at a real provider),
   with three other lines per login (a failed login, an imap logout, an auth line).
2. Starts ``relaywatch run --state ... --never none`` with the sink, on a log that already
   holds a start-up line, and waits until every pre-written login is published (the warm-up
   time is reported: the catch-up rate with this sink, and the loop's longest turn and
   pause while catching up), then waits 6 s.
3. For ``--seconds``, a writer appends ``--rate`` logins a second (``--new`` of them from
   new addresses, the rest renewals of live ones, chosen at random) plus three other lines
   each, in 10 ms batches. A prober looks for a sample of the new addresses (20 a second)
   in the sink: the relay-ctrl file's existence, ``postmap -q`` for a map, a ``SELECT`` of
   the row for the SQL table (``pgsql``/``mysql``: the tests' private server on loopback,
   ``tests/sqllab.py``; needs root and what ``.ci/run`` installs; the server's own CPU is
   not counted).

It reports, for the steady phase: login -> published p50/p99/max of the sampled new
addresses (from the moment the writer wrote the line), the log lag (bytes written but not
yet read, from relaywatch's checkpoint, in seconds of log; the checkpoint is saved once a
second, so this reads up to a second high), the daemon's CPU (share of one core; postmap's
own is not in it), its peak RSS, and for maps the whole rebuilds relaywatch logged (warm-up
included; batches applied in place are logged at debug level only), and the loop's longest
turn and longest pause (time after a turn's lines in which no line was read: commits and
saves) as ``status.json`` says them, read five times a second. With ``--restart`` it then
stops relaywatch and times a start on what it left (the state and the published sink)
until its status says it runs. It prints
one line of JSON at the end for the README table. A script that prints figures, not a test;
the machine it runs on should be otherwise idle.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests")]  # sqllab, for --sink pgsql|mysql
BASE = int(ipaddress.IPv4Address("100.64.0.0"))
LOCAL = "192.0.2.1"
CLK = os.sysconf("SC_CLK_TCK")


def address(n: int) -> str:
    return str(ipaddress.IPv4Address(BASE + n))


def stamp(t: float) -> str:
    return time.strftime("%b %d %H:%M:%S", time.localtime(t))


def lines_for(n: int, t: float, mpid: int) -> str:
    """One login of client ``n`` at ``t`` and three other lines, as Dovecot 2.3 writes them."""
    s, ip = stamp(t), address(n)
    return (f"{s} imap-login: Info: Login: user=<u{n}@example.org>, method=PLAIN, rip={ip}, lip={LOCAL}, "
            f"mpid={mpid}, TLS, session=<s{n:x}>\n"
            f"{s} imap-login: Info: Disconnected (auth failed, 1 attempts in 2 secs): user=<x{n}>, "
            f"method=PLAIN, rip=198.51.100.{n % 250 + 1}, lip={LOCAL}, TLS, session=<f{n:x}>\n"
            f"{s} imap(u{n}@example.org)<{mpid}><s{n:x}>: Info: Disconnected: Logged out in=32 out=788\n"
            f"{s} auth: Info: passwd-file(u{n}@example.org,{ip}): lookup ok\n")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] if ordered else float("nan")


class Daemon:
    """A ``relaywatch run`` process and what /proc says of it."""

    def __init__(self, args: list[str], err: Path, profile: str | None = None) -> None:
        self.err = err
        python = [sys.executable, *(["-m", "cProfile", "-o", profile] if profile else [])]
        self.proc = subprocess.Popen([*python, "-m", "logwatch", "run", *args], cwd=ROOT,
                                     stdout=subprocess.DEVNULL, stderr=err.open("wb"))

    def cpu(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Sink:
    """Where the benchmark looks for an address: a relay-ctrl file or a Postfix map key."""

    def __init__(self, kind: str, work: Path) -> None:
        self.kind = kind
        self.lab: Any = None
        if kind in ("pgsql", "mysql"):
            import sqllab

            self.lab = sqllab.start_pg() if kind == "pgsql" else sqllab.start_my()
            self.option = ["--sql", self.lab.url(), "--sql-table", "relay_clients",
                           "--sql-password-file", str(sqllab.password_file(work))]
            self.conn = self.lab.admin()
            self.mark = "%s"
        elif kind == "relayctrl":
            self.path = work / "relay-ctrl"
            self.path.mkdir()
            self.option = ["--relay-ctrl-dir", str(self.path)]
        else:
            self.path = work / "relay_clients"
            self.option = ["--postfix-map", f"{kind}:{self.path}"]

    def has(self, ip: str) -> bool:
        if self.kind == "relayctrl":
            return os.path.exists(self.path / ip)
        if self.lab is not None:
            return bool(self._rows("SELECT 1 FROM relay_clients WHERE ip = %s", (ip,)))
        done = subprocess.run(["postmap", "-q", ip, f"{self.kind}:{self.path}"], capture_output=True)
        return done.returncode == 0

    def count(self) -> int:
        if self.kind == "relayctrl":
            return sum(1 for _ in os.scandir(self.path))
        if self.lab is not None:
            return int(self._rows("SELECT count(*) FROM relay_clients", ())[0][0])
        try:  # the text source the sink keeps beside the map
            with open(self.path, "rb") as f:
                return sum(1 for line in f if line.strip() and not line.startswith(b"#"))
        except FileNotFoundError:
            return 0


    def _rows(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        try:
            with self.conn.cursor() as cur:
                cur.execute(sql, params)
                return list(cur.fetchall())
        except Exception:  # the table is not there yet
            return []

    def close(self) -> None:
        if self.lab is not None:
            self.conn.close()
            self.lab.stop()
            subprocess.run(["rm", "-rf", str(self.lab.root)])


class LoopWatch(threading.Thread):
    """The most the loop's longest turn and pause reached, read from ``status.json``."""

    def __init__(self, status: Path) -> None:
        super().__init__(daemon=True)
        self.status = status
        self.step = self.pause = self.gc = 0.0
        self.step_lines = 0
        self.long_pauses: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            try:
                loop = json.loads(self.status.read_text()).get("loop") or {}
            except (OSError, ValueError):
                continue
            if loop.get("step", 0) > self.step:
                self.step, self.step_lines = loop["step"], loop.get("step_lines", 0)
            self.pause = max(self.pause, loop.get("pause", 0))
            self.gc = max(self.gc, loop.get("gc", 0))
            self.long_pauses.append(loop.get("long_pauses", 0))  # a counter since the daemon's start

    @property
    def long_pauses_seen(self) -> int:
        """Turns that paused over 50 ms while this watched."""
        return self.long_pauses[-1] - self.long_pauses[0] if self.long_pauses else 0


def restart(args: list[str], work: Path, profile: str | None) -> float:
    """Start relaywatch again on what the first run left; seconds until its status.json
    says it runs (written at the end of its start: state restored, sinks compared, logs
    open), the interpreter's own start-up included."""
    status = work / "state" / "status.json"
    status.unlink(missing_ok=True)
    began = time.monotonic()
    again = Daemon(args, work / "relaywatch-restart.err", profile)
    while True:
        try:
            doc = json.loads(status.read_text())
            if doc.get("running") and doc.get("pid") == again.proc.pid:
                break
        except (OSError, ValueError):
            pass
        if again.proc.poll() is not None or time.monotonic() - began > 600:
            again.stop()
            return float("nan")
        time.sleep(0.02)
    ready = time.monotonic() - began
    again.stop()
    print(f"restart: ready in {ready:.2f} s", flush=True)
    return round(ready, 2)


def log_lag(work: Path, log: Path, rate_bytes: float) -> float | None:
    """Seconds of log written but not yet acted on, from relaywatch's checkpoint."""
    size = log.stat().st_size
    offsets = []
    for cp in work.glob("state/tail-*.json"):
        try:
            doc = json.loads(cp.read_text())
        except (OSError, ValueError):
            continue
        for position in doc.get("files", doc.get("positions", [])) if isinstance(doc, dict) else []:
            if isinstance(position, dict) and isinstance(position.get("offset"), int):
                offsets.append(position["offset"])
    if not offsets or rate_bytes <= 0:
        return None
    return max(0, size - max(offsets)) / rate_bytes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sink", choices=("relayctrl", "hash", "btree", "lmdb", "cdb", "pgsql", "mysql"), default="relayctrl")
    parser.add_argument("--rate", type=int, default=3300, help="logins per second in the steady phase")
    parser.add_argument("--live", type=int, default=400_000, help="clients authorised before it starts")
    parser.add_argument("--new", type=int, default=100, help="new addresses per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the steady phase")
    parser.add_argument("--expire", type=int, default=1800, help="--expire, seconds")
    parser.add_argument("--warmup-limit", type=float, default=900.0, help="give up warming up after this long")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--relay-ctrl-margin", type=int, default=0, metavar="SECONDS",
                        help="relay-ctrl: run with --relay-ctrl-expiry = --expire + this (0: unset)")
    parser.add_argument("--restart", action="store_true", help="then stop it and time a restart on the same "
                        "state and sink until it is ready (its status says running)")
    parser.add_argument("--profile", metavar="FILE", help="run relaywatch under cProfile, its stats to FILE "
                        "(slower: for where the time goes, not for the figures)")
    a = parser.parse_args()
    if a.new > a.rate:
        parser.error("--new: at most --rate")

    work = Path(tempfile.mkdtemp(prefix="relaywatch-load-"))
    (work / "state").mkdir()
    log = work / "dovecot.log"
    sink = Sink(a.sink, work)
    rng = random.Random(1)
    now = time.time()
    with log.open("w") as f:
        f.write(f"{stamp(now - a.expire)} master: Info: Dovecot v2.3.19.1 (9f57dc1bb0) starting up for imap, pop3\n")
    daemon_args = ["--log", str(log), "--state", str(work / "state" / "state.db"), "--never", "none",
                   "--expire", str(a.expire), "--max-entries", str(max(a.live * 2, 1_000_000)), *sink.option,
                   *(["--relay-ctrl-expiry", str(a.expire + a.relay_ctrl_margin)] if a.relay_ctrl_margin else [])]
    daemon = Daemon(daemon_args, work / "relaywatch.err", a.profile)
    time.sleep(1.5)  # it opens the log at its end: what follows is read
    # Warm-up: --live logins stamped evenly over the last --expire, oldest first.
    warm_watch = LoopWatch(work / "state" / "status.json")
    warm_watch.start()
    started = time.monotonic()
    with log.open("a") as f:
        chunk = []
        for n in range(a.live):
            t = now - a.expire + 60 + (a.expire - 120) * n / max(1, a.live)
            chunk.append(lines_for(n, t, 1000 + n % 60000))
            if len(chunk) == 5000:
                f.write("".join(chunk))
                chunk = []
        f.write("".join(chunk))
    last = address(a.live - 1)
    while not sink.has(last):
        if time.monotonic() - started > a.warmup_limit or daemon.proc.poll() is not None:
            print(f"warm-up did not finish in {a.warmup_limit:.0f} s (or relaywatch stopped); see {daemon.err}")
            daemon.stop()
            sink.close()
            return 1
        time.sleep(0.2)
    warmup = time.monotonic() - started
    time.sleep(6)  # the periodic status (every 5 s) ends the warm-up's maxima
    warm_watch.stop.set()
    print(f"warm-up: {a.live:,} logins published in {warmup:.1f} s ({a.live / warmup:,.0f} logins/s); loop: "
          f"longest turn {warm_watch.step * 1000:.0f} ms ({warm_watch.step_lines} lines), longest pause "
          f"{warm_watch.pause * 1000:.0f} ms", flush=True)

    # Steady phase.
    written: dict[str, float] = {}
    samples: list[float] = []
    stop = threading.Event()
    next_new = a.live
    bytes_written = 0

    def prober() -> None:
        while not stop.is_set() or written:
            for ip, t in list(written.items()):
                if sink.has(ip):
                    samples.append((time.time() - t) * 1000)
                    del written[ip]
                elif time.time() - t > 60:
                    samples.append(60_000.0)
                    del written[ip]
            time.sleep(0.001 if sink.kind == "relayctrl" else 0.005)
            if stop.is_set() and time.time() - max(written.values(), default=0) > 60:
                break

    probe = threading.Thread(target=prober, daemon=True)
    probe.start()
    watch = LoopWatch(work / "state" / "status.json")
    watch.start()
    cpu0, t0 = daemon.cpu(), time.monotonic()
    lags: list[float] = []
    batch = 0.01
    with log.open("a") as f:
        begin = time.monotonic()
        sent_new = sent = 0
        while (elapsed := time.monotonic() - begin) < a.seconds:
            due = int(elapsed * a.rate)
            due_new = int(elapsed * a.new)
            chunk = []
            sampled = []
            wall = time.time()
            while sent < due:
                if sent_new < due_new:
                    n = next_new
                    next_new += 1
                    sent_new += 1
                    if sent_new % max(1, a.new // 20) == 0:
                        sampled.append(address(n))
                else:
                    n = rng.randrange(next_new)
                chunk.append(lines_for(n, wall, 1000 + n % 60000))
                sent += 1
            text = "".join(chunk)
            f.write(text)
            f.flush()
            bytes_written += len(text)
            for ip in sampled:
                written[ip] = wall
            if int(elapsed) != int(elapsed - batch) and elapsed > 1:
                lag = log_lag(work, log, bytes_written / elapsed)
                if lag is not None:
                    lags.append(lag)
            time.sleep(max(0.0, batch - (time.monotonic() - begin - elapsed)))
    cpu = (daemon.cpu() - cpu0) / (time.monotonic() - t0)
    watch.stop.set()
    stop.set()
    probe.join(70)
    rss = daemon.peak_rss_mb()
    daemon.stop()
    err = daemon.err.read_text(errors="replace")
    ready = restart(daemon_args, work, a.profile) if a.restart else None
    updates = [float(m) for m in re.findall(r"in (\d+(?:\.\d+)?) ms", err)]
    result = {
        "sink": a.sink + (f" (margin {a.relay_ctrl_margin} s)" if a.relay_ctrl_margin else ""), "rate": a.rate, "live": a.live, "new_per_s": a.new, "seconds": a.seconds,
        "warmup_s": round(warmup, 1), "warmup_loop_step_max_ms": round(warm_watch.step * 1000, 1),
        "warmup_loop_step_lines": warm_watch.step_lines, "warmup_loop_pause_max_ms": round(warm_watch.pause * 1000, 1),
        "p50_ms": round(percentile(samples, 50), 1),
        "p99_ms": round(percentile(samples, 99), 1), "max_ms": round(max(samples, default=float("nan")), 1),
        "samples": len(samples), "lag_s_max": round(max(lags), 2) if lags else None,
        "cpu_core": round(cpu, 2), "peak_rss_mb": round(rss), "map_updates": len(updates),
        "map_update_p50_ms": round(statistics.median(updates), 1) if updates else None,
        "map_update_max_ms": round(max(updates), 1) if updates else None,
        "loop_step_max_ms": round(watch.step * 1000, 1), "loop_step_lines": watch.step_lines,
        "restart_ready_s": ready, "loop_pause_max_ms": round(watch.pause * 1000, 1), "loop_pauses_over_50ms": watch.long_pauses_seen,
        "gc_max_ms": round(watch.gc * 1000, 1),
    }
    print(f"steady {a.seconds:.0f} s at {a.rate:,} logins/s ({a.new}/s new), {a.live:,} live, {a.sink}: "
          f"login -> published p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms (n={len(samples)}); "
          f"log lag max {result['lag_s_max']} s; daemon CPU {cpu:.0%} of a core; peak RSS {rss:.0f} MB; "
          f"loop: longest turn {result['loop_step_max_ms']} ms ({watch.step_lines} lines), "
          f"longest pause {result['loop_pause_max_ms']} ms, {watch.long_pauses_seen} over 50 ms; longest garbage "
          f"collection {result['gc_max_ms']} ms")
    if updates:
        print(f"whole map rebuilds (the INFO lines; batches in place log at debug): {len(updates)}, "
              f"p50 {result['map_update_p50_ms']} ms, max {result['map_update_max_ms']} ms")
    print(json.dumps(result))
    sink.close()
    if not a.keep:
        subprocess.run(["rm", "-rf", str(work)])
    else:
        print(f"kept {work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
