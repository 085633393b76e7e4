"""Run ``bench_load.py`` over a grid of cells, one after the other, and print README's table.

    python3 benchmarks/bench_load_grid.py [--out results.jsonl] [--only SINK] [CELL ...]

A cell is ``SINK:RATE:LIVE[:NEW[:MARGIN]]`` (``relayctrl:3300:400000``; NEW defaults to 100
new addresses a second, MARGIN to none: ``--relay-ctrl-margin``). Without cells, the grid
issue 12 asks for, trimmed to what says something: every sink at its ISP cell and below,
10,000/s with 1,000,000 live for relay-ctrl and lmdb (the goal's sinks). Each result (the
last JSON line ``bench_load.py`` prints) is appended to ``--out`` as it comes, so a run cut
short keeps what it measured; the table is printed from the whole file at the end. The
machine should be otherwise idle: one cell at 1,000,000 live takes about four minutes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

DEFAULT = (
    "relayctrl:300:10000", "relayctrl:1000:100000", "relayctrl:3300:400000",
    "relayctrl:10000:1000000:300", "relayctrl:10000:1000000:300:600",
    "hash:300:10000", "hash:1000:100000", "hash:3300:400000",
    "lmdb:300:10000", "lmdb:1000:100000", "lmdb:3300:400000", "lmdb:10000:1000000:300",
    "cdb:300:10000", "cdb:1000:100000",
    "pgsql:1000:100000", "pgsql:3300:400000", "mysql:3300:400000",
)


def run(cell: str) -> dict[str, object] | None:
    sink, rate, live, *rest = cell.split(":")
    new = rest[0] if rest else "100"
    args = [sys.executable, str(HERE / "bench_load.py"), "--sink", sink, "--rate", rate, "--live", live, "--new", new, "--restart"]
    if len(rest) > 1:
        args += ["--relay-ctrl-margin", rest[1]]
    print(f"== {cell}", flush=True)
    done = subprocess.run(args, capture_output=True, text=True)
    print(done.stdout.strip()[-1500:], flush=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        print(f"   failed ({done.returncode}): {done.stderr.strip()[-500:]}", flush=True)
        return None
    result: dict[str, object] = json.loads(lines[-1])
    return result


def table(results: list[dict[str, object]]) -> str:
    head = ("| sink | logins/s | live | new/s | login → published p50 / p99 | log lag (max) | daemon CPU "
            "| peak RSS | loop: longest pause, pauses over 50 ms | restart: ready |\n"
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
    rows = []
    for r in results:
        rows.append(f"| {r['sink']} | {r['rate']:,} | {r['live']:,} | {r['new_per_s']} | {r['p50_ms']} / "
                    f"{r['p99_ms']} ms | {r['lag_s_max']} s | {float(str(r['cpu_core'])):.0%} | {r['peak_rss_mb']} MB "
                    f"| {r.get('loop_pause_max_ms')} ms, {r.get('loop_pauses_over_50ms')} | {r.get('restart_ready_s')} s |")
    return head + "\n".join(rows) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("cells", nargs="*", default=list(DEFAULT))
    parser.add_argument("--out", default="bench_load_grid.jsonl")
    parser.add_argument("--only", help="only the cells of this sink")
    a = parser.parse_args()
    out = Path(a.out)
    for cell in a.cells:
        if a.only and not cell.startswith(a.only + ":"):
            continue
        result = run(cell)
        if result is not None:
            with out.open("a") as f:
                f.write(json.dumps(result) + "\n")
    results = [json.loads(line) for line in out.read_text().splitlines() if line.strip()] if out.exists() else []
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
