"""Benchmark: what --sessions costs: memory per open session, and the matcher's speed.

    python3 benchmarks/bench_sessions.py [--sessions 100000] [--lines 1000000] [--repeat 5]

- memory: a ledger with N grants, each with one open session, against the same N grants
  without sessions (tracemalloc, after a gc); the difference per session;
- matcher: every line of ``gen-dovecot-log.py --lines L --format mixed --seed 1`` through
  ``Matcher.match`` (the daemon's per-line call) and ``Matcher.classify`` (--test-pattern's),
  with the logout patterns read (``sessions=True``) and without; best of ``--repeat``,
  alternating.
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from logwatch.addresses import NeverList  # noqa: E402
from logwatch.ledger import Ledger  # noqa: E402
from logwatch.matcher import Matcher  # noqa: E402
from logwatch.model import LoginEvent  # noqa: E402
from logwatch.patternset import builtin  # noqa: E402

GENERATOR = ROOT.parent / "shared" / "tools" / "gen-dovecot-log.py"


def ledger_bytes(n: int, sessions: bool) -> int:
    gc.collect()
    tracemalloc.start()
    led = Ledger(1800, NeverList.parse("none"), max_entries=n + 1, session_max=43200 if sessions else None)
    now = 1_000_000.0
    for i in range(n):
        ip = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        sid = f"{i:012x}AAAD" if sessions else ""
        led.grant(LoginEvent(ip, "bob", "imap-login", now, "s", "login", sid), now)
        if i % 1000 == 999:
            led.session_changes()  # as the daemon's every step does: written to the state, forgotten
    led.session_changes()
    gc.collect()
    used = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(led) == n and led.session_count() == (n if sessions else 0)
    return used


def best(fn: object, lines: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for line in lines:
            fn(line)  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    a = parser.parse_args()

    plain, with_sessions = ledger_bytes(a.sessions, False), ledger_bytes(a.sessions, True)
    print(f"memory: {a.sessions} grants {plain / 1e6:.1f} MB; with one open session each "
          f"{with_sessions / 1e6:.1f} MB: {(with_sessions - plain) / a.sessions:.0f} bytes a session (goal < 300)")

    log = Path(tempfile.mkdtemp(prefix="relaywatch-bench-")) / "mixed.log"
    subprocess.run([sys.executable, str(GENERATOR), "--lines", str(a.lines), "--format", "mixed", "--seed", "1",
                    "--out", str(log)], check=True)
    lines = log.read_text(errors="replace").splitlines()
    logouts = sum(1 for line in lines if ": Disconnected" in line and "-login" not in line)
    off, on = Matcher(builtin()), Matcher(builtin(), sessions=True)
    results = {}
    for name in ("match", "classify"):
        t_off = t_on = float("inf")
        for _ in range(a.repeat):  # alternate, so a noisy moment hurts both alike
            t_off = min(t_off, best(getattr(off, name), lines, 1))
            t_on = min(t_on, best(getattr(on, name), lines, 1))
        results[name] = (t_off, t_on)
        print(f"{name:8}: {len(lines)} lines ({logouts} mail-process Disconnected lines): without sessions "
              f"{t_off:.3f} s, with {t_on:.3f} s: {t_on / t_off - 1:+.1%} (goal at most +10%)")


if __name__ == "__main__":
    main()
