"""Benchmark: ``relaywatch --test-pattern --summary`` against a bare Python loop, whole processes.

    python3 benchmarks/bench_testpattern.py [--lines 1000000] [--repeat 5] [--log PATH]

Makes (or reuses) the log of ``../shared/tools/gen-dovecot-log.py --lines N --format mixed
--seed 1``, then times, in the same run and alternately, each as a whole process started
with this interpreter:

- bare: ``for line in f``, a substring check for ``Login: `` or ``Logged in: ``, then one
  anchored ``re`` covering the generator's formats (the issue's yardstick);
- relaywatch: ``python -m logwatch --test-pattern --summary --json --file LOG``.

Prints the best of ``--repeat`` wall-clock times for each, lines per second, the ratio, and
whether relaywatch's login count equals the generator's ``--truth`` (the bare loop's count
is printed too: it has no notion of services or failed logins, so it may differ).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = ROOT.parent / "shared" / "tools" / "gen-dovecot-log.py"

BARE = r'''
import re, sys
rx = re.compile(r"(?:[A-Z][a-z]{2} [ 0-3]\d [\d:]{8}|[\d-]{10}[T ][\d:.]+(?:[+-][\d:]+)?) (?:\S+ )?"
                r"(?:dovecot(?:\[\d+\])?: )?(?:imap|pop3)-login: (?:Info: )?(?:Login|Logged in): "
                r"user=<.*>, method=\S+, rip=([0-9a-fA-F:.]+), lip=[^,]*(?:, [^,]*)*$")
n = 0
with open(sys.argv[1], encoding="utf-8", errors="replace") as f:
    for line in f:
        if "Login: " in line or "Logged in: " in line:
            if rx.match(line):
                n += 1
print(n)
'''


def timed(args: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(args, check=True, capture_output=True, text=True)
    return time.perf_counter() - start, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--log", help="reuse this log (made with the same --lines, --format mixed --seed 1)")
    a = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="relaywatch-bench-"))
    log = Path(a.log) if a.log else work / "mixed.log"
    gen = [sys.executable, str(GENERATOR), "--lines", str(a.lines), "--format", "mixed", "--seed", "1"]
    if not log.exists():
        subprocess.run(gen + ["--out", str(log)], check=True)
    truth = subprocess.run(gen + ["--truth"], check=True, capture_output=True, text=True).stdout.count("\n")

    bare_cmd = [sys.executable, "-c", BARE, str(log)]
    ours_cmd = [sys.executable, "-m", "logwatch", "--test-pattern", "--summary", "--json", "--file", str(log)]
    env_note = f"python {sys.version.split()[0]}, {os.cpu_count()} cores"
    bare_times, ours_times = [], []
    bare_count = ours_summary = None
    for _ in range(a.repeat):  # alternate, so a noisy moment hurts both alike
        t, out = timed(bare_cmd)
        bare_times.append(t)
        bare_count = int(out)
        t, out = timed(ours_cmd)
        ours_times.append(t)
        ours_summary = json.loads(out)
    assert ours_summary is not None
    bare, ours = min(bare_times), min(ours_times)
    print(f"log: {log} ({a.lines} lines, {log.stat().st_size / 1e6:.0f} MB), {env_note}")
    print(f"bare loop   : {bare:6.2f} s  {a.lines / bare / 1e6:5.2f} M lines/s  logins {bare_count}")
    print(f"relaywatch  : {ours:6.2f} s  {a.lines / ours / 1e6:5.2f} M lines/s  logins {ours_summary['login']}"
          f"  ignored {ours_summary['ignored']}  nomatch {ours_summary['nomatch']}")
    print(f"ratio       : {bare / ours:.0%} of the bare loop's speed (goal: at least 50%)")
    print(f"truth       : {truth} logins; relaywatch {'agrees' if ours_summary['login'] == truth else 'DISAGREES'}")


if __name__ == "__main__":
    main()
