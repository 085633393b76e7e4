"""Measure one batch of 100 additions + 100 withdrawals into a large Postfix map: in place
against a whole rebuild, per type.

A script that prints figures, not a test: run ``python benchmarks/bench_postmap_batch.py``
from the checkout (Postfix, postfix-lmdb and postfix-cdb installed). For each size and type
it fills a ``PostfixMapSink`` with that many clients, then times from ``commit`` to the map
being live (``flush``), with no wait between publications (``gap=0``: the publication's
own cost, not the 50 ms the sink lets commits gather for):

- in place: what the sink does for the batch (hash, btree, lmdb): text appended and
  blanked, then for hash and btree ``postmap -r -i`` and ``postmap -d -`` in a copy of the
  live file that is fsync'd and renamed, for lmdb one LMDB transaction in the live file
  through liblmdb (``sinks/lmdbfile.py``), and for ``lmdb/postmap`` (the fallback when
  liblmdb cannot be loaded) ``postmap -r -i`` and ``postmap -d -`` in the live file;
- whole: the same batch with a whole rebuild forced (text, postmap under a temporary name,
  fsync, rename), which is all cdb and texthash can do (no reload is timed for texthash:
  Postfix is not running here).

Addresses come from 198.18.0.0/15 (RFC 2544's benchmarking range) and 2001:db8::/32, in a
private config dir. For lmdb it also prints what opening the environment costs (an empty
batch: open, check, lock, commit nothing, close; the sink opens it once per batch).
"""

from __future__ import annotations

import argparse
import ipaddress
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from logwatch import postfix  # noqa: E402
from logwatch.model import Grant  # noqa: E402
from logwatch.sinks import lmdbfile  # noqa: E402
from logwatch.sinks.postfixmap import PostfixMapSink  # noqa: E402

TYPES = ("hash", "btree", "lmdb", "lmdb/postmap", "cdb", "texthash")
#: A library name that cannot be loaded: the sink's lmdb batches then go through postmap.
NO_LIBRARY = "liblmdb-bench-none.so.0"


def addresses(count: int) -> list[str]:
    v4 = [str(a) for _, a in zip(range(count), ipaddress.ip_network("198.18.0.0/15"))]
    base = int(ipaddress.ip_address("2001:db8::"))
    v6 = [ipaddress.IPv6Address(base + n * 7919 + 1).compressed for n in range(count - len(v4))]
    return v4 + v6


def grant(ip: str) -> Grant:
    return Grant(ip, "u", "imap-login", 0.0, 0.0, 1, 0.0)


def one_batch(sink: PostfixMapSink, puts: list[str], drops: list[str]) -> float:
    """Seconds from commit to live for one batch."""
    for ip in puts:
        sink.put(grant(ip))
    for ip in drops:
        sink.drop(ip)
    sink.commit()
    started = time.perf_counter()
    sink.flush()
    return time.perf_counter() - started


def measure(name: str, work: Path, config: Path, entries: int, repeat: int,
            batch: int) -> tuple[float | None, float, float | None]:
    """Median seconds for a batch in place (None: not an in-place type) and whole, and
    for lmdb through liblmdb the median of an empty batch (the environment's open)."""
    map_type, _, how = name.partition("/")
    ips = addresses(entries + batch * 2 * repeat)
    library = NO_LIBRARY if how == "postmap" else lmdbfile.LIBRARY
    sink = PostfixMapSink(map_type, str(work / f"relay_{map_type}_{how}_{entries}"), "OK",
                          str(config), batch_limit=10 ** 9, rebuild_after=10 ** 9,
                          rebuild_every=10 ** 9, lmdb_library=library, gap=0.0)
    live = ips[:entries]
    for ip in live:
        sink.put(grant(ip))
    sink.commit()
    sink.flush()
    spare = ips[entries:]
    in_place: list[float] = []
    whole: list[float] = []
    for n in range(repeat * 2):
        force = n % 2 == 1  # alternate, so both see the same cache and disk
        sink.rebuild_every = -1.0 if force else 10.0 ** 9
        builds = sink.builds
        puts, spare = spare[:batch], spare[batch:]
        drops, live = live[:batch], live[batch:] + puts
        took = one_batch(sink, puts, drops)
        assert not sink.last_error, sink.last_error
        rebuilt = sink.builds > builds
        (whole if rebuilt else in_place).append(took)
    sink.close()
    if name == "lmdb":
        assert sink.direct_updates >= repeat, "liblmdb was not used"
    opening = None
    if name == "lmdb":
        lib = lmdbfile.Library()
        times = []
        for _ in range(21):
            started = time.perf_counter()
            lmdbfile.write_batch(lib, sink.live, [], [])
            times.append(time.perf_counter() - started)
        opening = statistics.median(times)
    return (statistics.median(in_place) if in_place else None), statistics.median(whole), opening


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", default="100000,400000",
                        help="live set sizes, comma-separated (default %(default)s)")
    parser.add_argument("--batch", type=int, default=100,
                        help="additions and withdrawals each per batch (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--types", default=",".join(TYPES))
    parser.add_argument("--dir", help="where to build (default: a temp dir); use the "
                        "filesystem your maps live on, since fsync cost depends on it")
    args = parser.parse_args()

    supported = postfix.map_types()
    with tempfile.TemporaryDirectory(dir=args.dir) as name:
        work = Path(name)
        config = work / "etc"
        config.mkdir()
        (config / "main.cf").write_text("compatibility_level = 3.6\n")
        time.sleep(2)  # Postfix waits for a main.cf written within the last second
        print(f"one batch of {args.batch} additions + {args.batch} withdrawals, "
              f"median of {args.repeat}, in {work}")
        print(f"{'entries':>9} {'type':12} {'in place':>10} {'whole':>10} {'ratio':>7}")
        for entries in (int(n) for n in args.entries.split(",")):
            for name in args.types.split(","):
                map_type = name.partition("/")[0]
                if map_type not in supported:
                    print(f"{entries:9,} {name:12} not supported here "
                          f"({postfix.missing_type_hint(map_type)})")
                    continue
                in_place, whole, opening = measure(name, work, config, entries, args.repeat,
                                                   args.batch)
                if in_place is None:
                    print(f"{entries:9,} {name:12} {'-':>10} {whole * 1e3:7.0f} ms {'-':>7}")
                else:
                    print(f"{entries:9,} {name:12} {in_place * 1e3:7.1f} ms "
                          f"{whole * 1e3:7.0f} ms {whole / in_place:6.1f}x"
                          + (f"   (open+lock+close {opening * 1e3:.2f} ms)"
                             if opening is not None else ""))


if __name__ == "__main__":
    main()
