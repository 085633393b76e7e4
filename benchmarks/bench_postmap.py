"""Measure a full rebuild of a 100,000-entry Postfix map by the sink, against bare postmap.

A script that prints figures, not a test: run ``python benchmarks/bench_postmap.py`` from the
checkout (Postfix, postfix-lmdb and postfix-cdb installed). For each type it times

- bare: ``postmap TYPE:FILE`` on a text file already written, the floor any tool pays;
- sink: ``PostfixMapSink`` from commit to live map: sorting and writing the text, fsync,
  postmap under a temporary name, fsync, and the renames.

The goal is sink <= 1.3 x bare. ``texthash`` has no postmap step: its sink time is the
text write alone (Postfix is not running here, so no reload is timed). Addresses come from
198.18.0.0/15 (RFC 2544's benchmarking range) and 2001:db8::/32, in a private config dir.
"""

from __future__ import annotations

import argparse
import ipaddress
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from logwatch import postfix  # noqa: E402
from logwatch.model import Grant  # noqa: E402
from logwatch.sinks.postfixmap import PostfixMapSink  # noqa: E402

TYPES = ("hash", "btree", "lmdb", "cdb", "texthash")


def addresses(count: int) -> list[str]:
    v4 = [str(a) for _, a in zip(range(count), ipaddress.ip_network("198.18.0.0/15"))]
    base = int(ipaddress.ip_address("2001:db8::"))
    v6 = [ipaddress.IPv6Address(base + n * 7919 + 1).compressed for n in range(count - len(v4))]
    return v4 + v6


def bare(map_type: str, work: Path, config: Path, text: str) -> float:
    source = work / f"bare_{map_type}"
    source.write_text(text)
    started = time.perf_counter()
    subprocess.run([postfix.find("postmap"), "-c", str(config), f"{map_type}:{source}"],
                   check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", help="where to build (default: a temp dir); use the "
                        "filesystem your maps live on, since fsync cost depends on it")
    args = parser.parse_args()

    ips = addresses(args.entries)
    supported = postfix.map_types()
    with tempfile.TemporaryDirectory(dir=args.dir) as name:
        work = Path(name)
        config = work / "etc"
        config.mkdir()
        (config / "main.cf").write_text("compatibility_level = 3.6\n")
        time.sleep(2)  # Postfix waits for a main.cf written within the last second
        print(f"{args.entries:,} entries, median of {args.repeat}, in {work}")
        print(f"{'type':9} {'bare postmap':>13} {'sink rebuild':>13} {'ratio':>6}")
        for map_type in TYPES:
            if map_type not in supported:
                print(f"{map_type:9} not supported here ({postfix.missing_type_hint(map_type)})")
                continue
            sink = PostfixMapSink(map_type, str(work / f"relay_{map_type}"), "OK", str(config))
            for ip in ips:
                sink.put(Grant(ip, "u", "imap-login", 0.0, 0.0, 1, 0.0))
            sink.commit()
            sink.flush()
            sink_times, bare_times = [], []
            for n in range(args.repeat):
                # Change one entry so every commit really rebuilds.
                sink.drop(ips[n])
                sink.commit()
                started = time.perf_counter()
                sink.flush()
                sink_times.append(time.perf_counter() - started)
                sink.put(Grant(ips[n], "u", "imap-login", 0.0, 0.0, 1, 0.0))
                if map_type != "texthash":  # the very text the sink just indexed
                    bare_times.append(bare(map_type, work, config, sink.path.read_text()))
            assert not sink.last_error, sink.last_error
            sink.close()
            s = statistics.median(sink_times)
            if bare_times:
                b = statistics.median(bare_times)
                print(f"{map_type:9} {b * 1e3:10.0f} ms {s * 1e3:10.0f} ms {s / b:5.2f}x")
            else:
                print(f"{map_type:9} {'-':>13} {s * 1e3:10.0f} ms {'-':>6}")


if __name__ == "__main__":
    main()
