"""Run the hostile-line properties (tests/test_hostile.py) with many more examples than CI.

    python3 benchmarks/hostile_soak.py [--examples 200000] [--seed N]

CI runs each property with 20,000 generated lines (about a minute each on this project's
2-core machine); this runs them with ``--examples`` each, a fresh random seed unless
``--seed`` is given, and prints the examples per second. A failure prints the line that
broke the property (hypothesis shrinks it), which then becomes a sample in the pattern set.
A script that searches and prints, not a test.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=200_000, help="examples per property")
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: random)")
    args = parser.parse_args()
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_hostile.py"]
    if args.seed is not None:
        command.append(f"--hypothesis-seed={args.seed}")
    started = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, env=dict(os.environ, HOSTILE_EXAMPLES=str(args.examples)))
    took = time.monotonic() - started
    properties = 4
    print(f"{properties} properties x {args.examples:,} examples in {took:.0f} s "
          f"({properties * args.examples / took:,.0f} examples/s); exit status {done.returncode}")
    return done.returncode


if __name__ == "__main__":
    raise SystemExit(main())
