"""Tests for sinks/lmdbfile.py against real postmap, real liblmdb and a real smtpd.

Every map is checked by Postfix itself (``postmap -q``, ``postmap -s``, smtpd's verdict),
and byte for byte against a map ``postmap`` built. Skipped only when CI is unset and
Postfix, postfix-lmdb or liblmdb is missing; with CI set a missing piece fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import postfixlab
import pytest

from logwatch import postfix
from logwatch.sinks import lmdbfile
from logwatch.sinks.lmdbfile import Library, postfix_key, postfix_value, write_batch

PROBED = "127.0.0.10"
BYSTANDER = "127.0.0.11"


@pytest.fixture(scope="module")
def lib() -> Library:
    problems = [f"{name} not installed" for name in ("postmap", "postconf")
                if shutil.which(name, path=postfixlab.SBIN_PATH) is None]
    postfixlab.unavailable(problems)
    if "lmdb" not in postfixlab.map_types():
        postfixlab.unavailable([f"map type lmdb not supported ({postfix.missing_type_hint('lmdb')})"])
    try:
        return Library()
    except lmdbfile.Unavailable as error:
        postfixlab.unavailable([str(error)])
        raise


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return postfixlab.config_dir(tmp_path)


def postmap(config: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([postfix.find("postmap"), "-c", str(config), *args], input=input,
                          capture_output=True, text=True, check=False, timeout=120)


def build(config: Path, path: Path, lines: Iterable[str]) -> Path:
    """``postmap lmdb:PATH`` of a text with these lines; the .lmdb file's path."""
    path.write_text("".join(f"{line}\n" for line in lines))
    done = postmap(config, f"lmdb:{path}")
    assert done.returncode == 0, done.stderr
    return Path(f"{path}.lmdb")


def query(config: Path, path: Path, key: str) -> str | None:
    done = postmap(config, "-q", key, f"lmdb:{path}")
    if done.returncode == 1:
        return None
    assert done.returncode == 0, done.stderr
    return done.stdout.rstrip("\n")


def listing(config: Path, path: Path) -> list[str]:
    """``postmap -s``, sorted: every entry as Postfix lists it."""
    done = postmap(config, "-s", f"lmdb:{path}")
    assert done.returncode == 0, done.stderr
    return sorted(done.stdout.splitlines())


def stored(lib: Library, live: Path, key: str) -> tuple[bytes | None, bytes | None]:
    """The bytes stored under ``key`` with its trailing NUL and without one."""
    raw = key.encode("ascii")
    return lmdbfile.lookup(lib, live, raw + b"\0"), lmdbfile.lookup(lib, live, raw)


def filler(count: int, start: int = 0) -> list[str]:
    return [f"2001:db8::{n // 65536:x}:{n % 65536:x}" for n in range(start, start + count)]


def batch(lib: Library, live: Path, puts: Iterable[str] = (), drops: Iterable[str] = (),
          value: str = "OK", **options: int) -> lmdbfile.Written:
    encoded = postfix_value(value)
    return write_batch(lib, live, [(postfix_key(ip), encoded) for ip in puts],
                       [postfix_key(ip) for ip in drops], **options)


# --------------------------------------------------------------------------- as postmap writes


def test_a_batch_is_stored_exactly_as_postmap_stores_it(lib: Library, tmp_path: Path,
                                                       config: Path) -> None:
    """Keys folded to lower case, key and value with one trailing NUL, the value's
    surrounding blanks trimmed: the same bytes as a map postmap built from the same text,
    and Postfix's own lookups and listing agree."""
    entries = {"192.0.2.7": "OK", "2001:DB8::A": "  PERMIT  with text  ",
               "198.51.100.1": "REJECT", **{ip: "OK" for ip in filler(500)}}
    by_postmap = build(config, tmp_path / "by_postmap", (f"{k} {v}" for k, v in entries.items()))
    ours = build(config, tmp_path / "ours", [])
    written = write_batch(lib, ours, [(postfix_key(k), postfix_value(v))
                                      for k, v in entries.items()], [])
    assert (written.added, written.withdrawn, written.missing) == (len(entries), 0, 0)

    assert listing(config, tmp_path / "ours") == listing(config, tmp_path / "by_postmap")
    assert len(listing(config, tmp_path / "ours")) == len(entries)  # nothing stored twice
    assert stored(lib, ours, "2001:db8::a") == (b"PERMIT  with text\0", None)
    assert stored(lib, ours, "192.0.2.7") == (b"OK\0", None)
    for key in [k.lower() for k in entries]:
        assert stored(lib, ours, key) == stored(lib, by_postmap, key), key
    for key in ("192.0.2.7", "2001:db8::a", "2001:DB8::A", "198.51.100.1", "192.0.2.8"):
        assert query(config, tmp_path / "ours", key) == query(config, tmp_path / "by_postmap", key)
    assert query(config, tmp_path / "ours", "2001:DB8::A") == "PERMIT  with text"


def test_withdrawals_and_replacements(lib: Library, tmp_path: Path, config: Path) -> None:
    """Withdrawn keys are gone for postmap -q; a put of a present key replaces its value,
    as ``postmap -r -i`` does (compared with a map it updated); a withdrawal of a key that is
    not there is counted, not an error."""
    ips = filler(50)
    ours = build(config, tmp_path / "ours", (f"{ip} OK" for ip in ips))
    theirs = build(config, tmp_path / "theirs", (f"{ip} OK" for ip in ips))
    written = batch(lib, ours, puts=ips[:5], drops=ips[40:] + ["192.0.2.99"], value="REJECT")
    assert (written.added, written.withdrawn, written.missing) == (5, 10, 1)
    assert postmap(config, "-r", "-i", f"lmdb:{tmp_path / 'theirs'}",
                   input="".join(f"{ip} REJECT\n" for ip in ips[:5])).returncode == 0
    assert postmap(config, "-d", "-", f"lmdb:{tmp_path / 'theirs'}",
                   input="".join(f"{ip}\n" for ip in ips[40:])).returncode == 0
    assert listing(config, tmp_path / "ours") == listing(config, tmp_path / "theirs")
    assert query(config, tmp_path / "ours", ips[0]) == "REJECT"
    assert query(config, tmp_path / "ours", ips[10]) == "OK"
    assert query(config, tmp_path / "ours", ips[45]) is None
    assert stored(lib, ours, ips[45]) == (None, None)
    assert stored(lib, ours, ips[0]) == stored(lib, theirs, ips[0]) == (b"REJECT\0", None)


def test_one_batch_is_one_commit(lib: Library, tmp_path: Path, config: Path) -> None:
    """The point of the module: 200 changes cost one transaction, where postmap -i makes
    one per key. Counted by strace: fdatasync calls of one batch, against postmap's."""
    strace = shutil.which("strace")
    if strace is None:  # a developer's tool, not one relaywatch needs; .ci/run installs it
        if os.environ.get("CI") == "true":
            pytest.fail("strace is not installed; .ci/run installs it")
        pytest.skip("strace not installed (it counts the syncs)")
    ips = filler(300)
    ours = build(config, tmp_path / "ours", (f"{ip} OK" for ip in ips[:200]))
    build(config, tmp_path / "theirs", (f"{ip} OK" for ip in ips[:200]))
    script = (
        "import sys; from pathlib import Path; from logwatch.sinks import lmdbfile as L\n"
        "ips = sys.argv[2:]\n"
        "L.write_batch(L.Library(), Path(sys.argv[1]), [(L.postfix_key(i), L.postfix_value('OK'))"
        " for i in ips[:100]], [L.postfix_key(i) for i in ips[100:]])\n")
    args = [str(ours), *ips[200:], *ips[:100]]
    subprocess.run([strace, "-f", "-c", "-e", "trace=fdatasync,fsync", "-o",
                    str(tmp_path / "ours.strace"), sys.executable, "-c", script, *args],
                   capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent)
    ours_syncs = _syncs(tmp_path / "ours.strace")
    for args_, stdin in ((["-r", "-i"], "".join(f"{ip} OK\n" for ip in ips[200:])),
                         (["-d", "-"], "".join(f"{ip}\n" for ip in ips[:100]))):
        subprocess.run([strace, "-f", "-c", "-e", "trace=fdatasync,fsync", "-o",
                        str(tmp_path / "theirs.strace"), postfix.find("postmap"), "-c",
                        str(config), *args_, f"lmdb:{tmp_path / 'theirs'}"],
                       input=stdin, capture_output=True, text=True, check=True)
        assert _syncs(tmp_path / "theirs.strace") >= 100
    assert ours_syncs == 1, (tmp_path / "ours.strace").read_text()
    assert listing(config, tmp_path / "ours") == listing(config, tmp_path / "theirs")


def _syncs(summary: Path) -> int:
    """Calls of fdatasync and fsync in an ``strace -c`` summary."""
    total = 0
    for line in summary.read_text().splitlines():
        fields = line.split()
        if fields and fields[-1] in ("fdatasync", "fsync"):
            total += int(fields[3])
    return total


# --------------------------------------------------------------------------- growth


def test_a_batch_larger_than_the_map_grows_it(lib: Library, tmp_path: Path, config: Path) -> None:
    """MDB_MAP_FULL: the transaction is aborted and the whole batch retried with the map
    doubled; nothing is lost, and postmap (which opens with its own 16 MiB) reads it all."""
    ours = build(config, tmp_path / "ours", [])
    ips = filler(60_000)
    written = batch(lib, ours, puts=ips, map_size=1024 * 1024)
    assert written.growths >= 1 and written.map_size >= 2 * 1024 * 1024, written
    assert written.added == 60_000
    assert len(listing(config, tmp_path / "ours")) == 60_000
    for ip in (ips[0], ips[30_000], ips[-1]):
        assert query(config, tmp_path / "ours", ip) == "OK"


@pytest.fixture(scope="module")
def lab(lib: Library) -> Iterator[postfixlab.PostfixLab]:
    postfixlab.unavailable(postfixlab.missing())
    running = postfixlab.start(["lmdb"])
    try:
        yield running
    finally:
        running.stop()


def smtpd_pids(log: str) -> set[str]:
    """The smtpd processes that accepted a connection in this part of the maillog."""
    return set(re.findall(r"smtpd\[(\d+)\]: connect from", log))


def test_growth_past_postfixs_map_size_under_a_running_smtpd(lab: postfixlab.PostfixLab,
                                                             lib: Library) -> None:
    """An smtpd that opened the map while it was small (16 MiB mapped, lmdb_map_size) keeps
    answering right after the map grew past that in batches: Postfix's slmdb gets
    MDB_MAP_RESIZED and adopts the size this writer recorded. Which process answered is
    read from the maillog: one that had answered before the growth must answer after it
    (the master may start others meanwhile, which open the map large and prove nothing)."""
    live = Path(f"{lab.map_spec('lmdb').partition(':')[2]}.lmdb")
    batch(lib, live, puts=[PROBED])
    for _ in range(3):
        assert lab.probe("lmdb", PROBED)[0] == 250
        assert lab.probe("lmdb", BYSTANDER)[0] == 554
    before = smtpd_pids(lab.log())
    small = live.stat().st_size
    assert before and small < 1024 * 1024
    count = 0
    while live.stat().st_size <= 20 * 1024 * 1024:
        written = batch(lib, live, puts=filler(50_000, count))
        count += 50_000
        assert count <= 1_000_000, live.stat().st_size
    assert written.map_size > 16 * 1024 * 1024
    grown = len(lab.log())
    batch(lib, live, puts=[BYSTANDER], drops=filler(1000))
    for _ in range(20):
        assert lab.probe("lmdb", PROBED)[0] == 250
        assert lab.probe("lmdb", BYSTANDER)[0] == 250
        if before & smtpd_pids(lab.log()[grown:]):
            break
    old = before & smtpd_pids(lab.log()[grown:])
    assert old, (before, smtpd_pids(lab.log()[grown:]), lab.log()[-2000:])
    batch(lib, live, drops=[PROBED])
    code, text = lab.probe("lmdb", PROBED)
    assert (code, text.endswith("Relay access denied")) == (554, True), lab.log()[-2000:]
    assert "fatal" not in lab.log() and "error" not in lab.log(), lab.log()[-2000:]
    print(f"lmdb map grown to {live.stat().st_size / 2**20:.0f} MiB ({count + 2:,} keys), "
          f"then answered by smtpd[{min(old)}], which had opened it at {small / 1024:.0f} KiB")


# --------------------------------------------------------------------------- concurrency


def test_readers_hammering_during_many_batches(lib: Library, tmp_path: Path,
                                               config: Path) -> None:
    """Two readers hammering postmap -q (each lookup under Postfix's shared fcntl lock) on
    keys that are not being changed, while hundreds of batches of 200 changes go in, never
    get an error or a wrong answer; at the end the map holds exactly what was written."""
    stable = {f"192.0.2.{n}": f"STABLE{n}" for n in range(1, 51)}
    path = tmp_path / "map"
    live = build(config, path, [*(f"{k} {v}" for k, v in stable.items()),
                                *(f"{ip} OK" for ip in filler(15_000))])
    stop = threading.Event()
    wrong: list[str] = []
    runs = [0, 0]
    expected = sorted(f"{k}\t{v}" for k, v in stable.items())
    keys = "".join(f"{k}\n" for k in stable)

    def reader(slot: int) -> None:
        while not stop.is_set():
            done = postmap(config, "-q", "-", f"lmdb:{path}", input=keys)
            runs[slot] += 1
            if done.returncode != 0 or done.stderr or sorted(done.stdout.splitlines()) != expected:
                wrong.append(f"exit {done.returncode}: {done.stderr or done.stdout[:200]}")

    readers = [threading.Thread(target=reader, args=(n,)) for n in range(2)]
    for thread in readers:
        thread.start()
    batches = 0
    started = time.monotonic()
    try:
        while batches < 300 or time.monotonic() - started < 5:
            batch(lib, live, puts=filler(100, 15_000 + 100 * batches),
                  drops=filler(100, 100 * batches))
            batches += 1
    finally:
        stop.set()
        for thread in readers:
            thread.join(60)
    assert wrong == [], wrong[:3]
    assert min(runs) >= 20, runs  # each reader ran throughout, 50 lookups a run
    churn = filler(15_000, 100 * batches)
    assert listing(config, path) == sorted([*expected, *(f"{ip}\tOK" for ip in churn)])
    print(f"{batches} batches of 200 changes in {time.monotonic() - started:.1f} s, "
          f"{sum(runs) * len(stable):,} lookups by postmap -q alongside: no error")


def test_postmap_and_this_writer_take_turns(lib: Library, tmp_path: Path, config: Path) -> None:
    """postmap -r -i and -d between batches (an admin's edit, or the sink's fallback): each
    writer continues from what the other committed, including after the map grew.

    Not at the same time: Postfix's postmap takes no lock at all for lmdb (mkmap_open opens
    it without DICT_FLAG_LOCK, "LMDB uses MVCC"), so no other writer can keep out of its way."""
    path = tmp_path / "map"
    live = build(config, path, (f"{ip} OK" for ip in filler(1000)))
    expected = {ip: "OK" for ip in filler(1000)}
    for n in range(6):
        ours, theirs = filler(60_000, 10_000 + 100_000 * n), filler(300, 80_000 + 100_000 * n)
        batch(lib, live, puts=ours, drops=filler(100, 100 * n))
        done = postmap(config, "-r", "-i", f"lmdb:{path}",
                       input="".join(f"{ip} THEIRS\n" for ip in theirs))
        assert done.returncode == 0, done.stderr
        done = postmap(config, "-d", "-", f"lmdb:{path}",
                       input="".join(f"{ip}\n" for ip in ours[:100]))
        assert done.returncode == 0, done.stderr
        expected.update(dict.fromkeys(ours[100:], "OK"))
        expected.update(dict.fromkeys(theirs, "THEIRS"))
        for ip in filler(100, 100 * n):
            del expected[ip]
    assert live.stat().st_size > 16 * 1024 * 1024
    assert listing(config, path) == sorted(f"{k}\t{v}" for k, v in expected.items())


# --------------------------------------------------------------------------- refused files


def test_a_symlink_in_place_of_the_map_is_refused(lib: Library, tmp_path: Path,
                                                  config: Path) -> None:
    target = build(config, tmp_path / "elsewhere", ["192.0.2.7 OK"])
    before = (target.read_bytes(), target.stat().st_mtime_ns)
    live = tmp_path / "relay.lmdb"
    live.symlink_to(target)
    with pytest.raises(lmdbfile.Refused) as info:
        batch(lib, live, puts=["192.0.2.8"], drops=["192.0.2.7"])
    assert str(info.value) == (f"{live}: a symlink; expected the map's LMDB file itself "
                               "(relaywatch follows no symlink it did not make)")
    assert (target.read_bytes(), target.stat().st_mtime_ns) == before
    assert query(config, tmp_path / "elsewhere", "192.0.2.7") == "OK"


@pytest.mark.parametrize("what", ["missing", "empty", "text", "directory", "fifo"])
def test_what_is_not_a_map_file_is_refused_untouched(lib: Library, tmp_path: Path,
                                                     what: str) -> None:
    live = tmp_path / "relay.lmdb"
    if what == "empty":
        live.write_bytes(b"")
    elif what == "text":
        live.write_bytes(b"192.0.2.7 OK\n" * 1000)
    elif what == "directory":
        live.mkdir()
    elif what == "fifo":
        os.mkfifo(live)
    kind = lmdbfile.Refused if what in ("directory", "fifo") else lmdbfile.NotAMap
    with pytest.raises(kind) as info:
        batch(lib, live, puts=["192.0.2.8"])
    message = str(info.value)
    assert message.startswith(f"{live}: ") and "expected" in message and "\n" not in message
    if what == "missing":
        assert not live.exists()
    elif what == "empty":
        assert live.read_bytes() == b""
    elif what == "text":
        assert live.read_bytes() == b"192.0.2.7 OK\n" * 1000
        assert "not an LMDB file" in message


def test_a_library_that_cannot_be_loaded_says_which(tmp_path: Path) -> None:
    with pytest.raises(lmdbfile.Unavailable) as info:
        Library("liblmdb-not-here.so.0")
    assert str(info.value).startswith("cannot load liblmdb-not-here.so.0 (")
    assert "\n" not in str(info.value)


def test_keys_and_values_postmap_would_split_are_refused() -> None:
    for bad in ("", "192.0.2.7 x", "a\tb", "é"):
        with pytest.raises(ValueError):
            postfix_key(bad)
    with pytest.raises(ValueError):
        postfix_value("OK\nREJECT")
    assert postfix_key("2001:DB8::1") == b"2001:db8::1\0"
    assert postfix_value("  DUNNO x ") == b"DUNNO x\0"


def test_the_open_costs_little(lib: Library, tmp_path: Path, config: Path) -> None:
    """The environment is opened per batch; an empty batch (open, lock, commit nothing,
    close) at 100,000 entries costs milliseconds at most, not the map's size."""
    live = build(config, tmp_path / "big", (f"{ip} OK" for ip in filler(100_000)))
    took = []
    for _ in range(20):
        started = time.perf_counter()
        written = write_batch(lib, live, [], [])
        took.append(time.perf_counter() - started)
    assert written.added == 0
    took.sort()
    print(f"empty batch at 100,000 entries: median {took[10] * 1e3:.2f} ms")
    assert took[10] < 0.05, took
