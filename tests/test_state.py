"""Tests for state.py against real files: round trip, SIGKILL mid-transaction, migration from the
JSON format, and what a planted or damaged file beside --state must not do (issue 10)."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logwatch import jsonstate, safefile, state
from logwatch.model import Grant, SavedGrant

T0 = 1_780_000_000.0
CHECKOUT = Path(__file__).resolve().parent.parent


def grants(n: int, start: float = T0) -> list[Grant]:
    return [
        Grant(f"198.51.100.{i % 250}" if i < 250 else f"2001:db8::{i:x}", f"user{i}",
              "imap-login", start + i, start + i, i + 1, start + i + 1800)
        for i in range(n)
    ]


def saved(path: Path, rows: list[Grant]) -> None:
    """A database at ``path`` holding ``rows``, closed as the daemon leaves it at stop."""
    store, _ = state.open_store(path, T0)
    store.write(rows, [])
    store.close()


def fields(rows: Iterable[Grant | SavedGrant]) -> list[tuple[object, ...]]:
    """The saved fields of ``Grant``s (a viewer's) or of ``SavedGrant``s (the daemon's), sorted."""
    return sorted(row if isinstance(row, tuple) else (row.ip, row.user, row.service, row.first, row.last, row.count)
                  for row in rows)


def only_aside(directory: Path, name: str) -> Path:
    (aside,) = [p for p in directory.iterdir() if p.name.startswith(f"{name}.corrupt-")]
    return aside


def test_round_trip_and_mode(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store, loaded = state.open_store(path, T0)
    assert loaded == state.Loaded(())
    rows = grants(300)
    assert store.write(rows, []) == 300
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):  # the viewers' group reads all three
        assert stat.S_IMODE(name.stat().st_mode) == state.MODE == 0o640, name
    assert fields(state.read(path)) == fields(rows)  # a viewer, while the daemon has it open
    store.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.db"]  # checkpointed, DELETE mode
    assert fields(state.load(path, T0).grants) == fields(rows)
    assert fields(state.read(path)) == fields(rows)


def test_missing_file_is_a_quiet_first_start(tmp_path: Path) -> None:
    assert state.load(tmp_path / "absent", now=T0) == state.Loaded(())


def test_user_names_are_bound_not_trusted(tmp_path: Path) -> None:
    path = tmp_path / "s"
    hostile = Grant("192.0.2.7", "x'); DROP TABLE grants; --\"\n}{\u2028é\x00", "imap-login", T0, T0, 1, T0 + 1)
    saved(path, [hostile])
    assert state.load(path, now=T0).grants[0][1] == hostile.user


def test_a_nan_cannot_be_written(tmp_path: Path) -> None:
    """SQLite stores a NaN as NULL: the NOT NULL constraint refuses it, and the CHECK an infinity."""
    store, _ = state.open_store(tmp_path / "s", T0)
    for bad in (Grant("192.0.2.1", "u", "imap-login", T0, float("nan"), 1, T0),
                Grant("192.0.2.1", "u", "imap-login", T0, float("inf"), 1, T0),
                Grant("192.0.2.1", "u", "imap-login", -1.0, T0, 1, T0)):
        with pytest.raises(sqlite3.IntegrityError):
            store.write([bad], [])
    store.close()
    assert state.load(tmp_path / "s", T0).grants == ()


@pytest.mark.parametrize("content", [
    b"SQLite format 3\x00" + b"\x10\x00garbage" * 200,  # a damaged database
    b"SQLite format 3\x00",
])
def test_corrupt_database_is_reported_in_one_line_and_set_aside(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "relaywatch.state"
    path.write_bytes(content)
    os.chmod(path, 0o640)
    loaded = state.load(path, now=T0)
    assert loaded.grants == ()
    assert loaded.warning.startswith(f"--state {path}: unreadable (")
    assert "\n" not in loaded.warning
    aside = only_aside(tmp_path, "relaywatch.state")
    assert aside.read_bytes() == content and str(aside) in loaded.warning
    assert state.load(path, now=T0) == state.Loaded(())  # and a new, empty database works


def test_another_programs_database_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as other:
        other.execute("CREATE TABLE grants (ip TEXT, user TEXT)")
        other.execute("INSERT INTO grants VALUES ('203.0.113.66', 'mallory')")
    other.close()
    loaded = state.load(path, now=T0)
    assert loaded.grants == () and "not a relaywatch database (application_id 0)" in loaded.warning
    assert only_aside(tmp_path, "state.db").exists()


def test_a_trigger_added_to_our_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    saved(path, grants(1))
    with sqlite3.connect(path) as planted:
        planted.execute("CREATE TRIGGER t AFTER INSERT ON grants BEGIN DELETE FROM grants; END")
    planted.close()
    loaded = state.load(path, now=T0)
    assert loaded.grants == () and "not the schema relaywatch writes" in loaded.warning


def test_second_corrupt_file_does_not_overwrite_the_first(tmp_path: Path) -> None:
    path = tmp_path / "s"
    for content in (b"SQLite format 3\x00one", b"SQLite format 3\x00two"):
        path.write_bytes(content)
        state.load(path, now=T0)
    assert sorted(p.read_bytes() for p in tmp_path.iterdir() if ".corrupt-" in p.name) == [
        b"SQLite format 3\x00one", b"SQLite format 3\x00two"]


def test_unreadable_path_is_set_aside_too(tmp_path: Path) -> None:
    path = tmp_path / "s"
    path.mkdir()
    loaded = state.load(path, now=T0)
    assert loaded.grants == () and "unreadable" in loaded.warning and path.is_file()


WRITER = """
import sys
from logwatch import state
from logwatch.model import Grant, SavedGrant
store, _ = state.open_store(sys.argv[1], 1.0)
n = 0
while True:
    n += 1
    rows = [Grant(f"198.51.100.{i % 250}", "u", "imap-login", 1.0, float(n), n, 0.0) for i in range(250)]
    store.write(rows, [])
    print(n, flush=True)
"""


def test_state_survives_sigkill_mid_transaction(tmp_path: Path) -> None:
    """Kill a writer at arbitrary moments; every time, the database loads whole, and every
    row is from the same (the last committed) transaction."""
    path = tmp_path / "s"
    for delay in (0.05, 0.11, 0.2, 0.33, 0.41):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=CHECKOUT,
                                  stdout=subprocess.PIPE, text=True)
        assert writer.stdout is not None
        writer.stdout.readline()  # at least one transaction committed
        time.sleep(delay)
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        writer.stdout.close()
        loaded = state.load(path, now=T0)
        assert loaded.warning == ""
        assert len(loaded.grants) == 250 and len({row[4] for row in loaded.grants}) == 1
        assert {row[5] for row in loaded.grants} == {int(loaded.grants[0][4])}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


# --- Migration from the JSON format (state.json + state.json.wal) ---

#: Exactly what the JSON format's ``state.save`` and ``state.append`` wrote (commit c95206e),
#: for two grants and then a renewal and a new grant appended to the write-ahead log.
OLD_STATE = (b'{"format":"relaywatch-state","version":1,"saved":1780000200.0,"fields":["ip","user","service",'
             b'"first","last","count"],"grants":[["192.0.2.1","alice","imap-login",1780000000.0,1780000100.5,3],'
             b'["2001:db8::7","x\\"\\n}{\\u00e9","pop3-login",1780000000,1780000000,1]]}\n')
OLD_WAL = (b'["192.0.2.1","alice","imap-login",1780000000.0,1780000300.0,4]\n'
           b'["198.51.100.9","bob","imap-login",1780000250.0,1780000250.0,1]\n')
MIGRATED = [("192.0.2.1", "alice", "imap-login", 1780000000.0, 1780000300.0, 4),
            ("198.51.100.9", "bob", "imap-login", 1780000250.0, 1780000250.0, 1),
            ("2001:db8::7", 'x"\n}{é', "pop3-login", 1780000000.0, 1780000000.0, 1)]


def test_a_json_state_and_its_wal_are_migrated_once_and_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(OLD_STATE)
    jsonstate.wal_path(path).write_bytes(OLD_WAL)
    os.chmod(path, 0o640)
    assert fields(state.read(path)) == MIGRATED  # a viewer before the daemon's restart reads the JSON
    loaded = state.load(path, now=T0)
    assert fields(loaded.grants) == MIGRATED
    assert loaded.warning.startswith(f"--state {path}: migrated 3 grant(s) from the JSON state file to SQLite; "
                                     f"the old file(s) set aside as {path}.json-")
    assert "\n" not in loaded.warning
    assert path.read_bytes().startswith(b"SQLite format 3\x00")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    names = sorted(p.name for p in tmp_path.iterdir())
    assert [n.split("-")[0] for n in names] == ["state.json", "state.json.json", "state.json.wal.json"]
    assert (tmp_path / names[1]).read_bytes() == OLD_STATE and (tmp_path / names[2]).read_bytes() == OLD_WAL
    again = state.load(path, now=T0 + 60)  # the second start reads the database, quietly
    assert again.warning == "" and fields(again.grants) == MIGRATED


def test_a_json_wal_without_its_state_file_is_migrated(tmp_path: Path) -> None:
    """Killed before its first state file was written: the log had every grant."""
    path = tmp_path / "state.json"
    jsonstate.wal_path(path).write_bytes(OLD_WAL)
    loaded = state.load(path, now=T0)
    assert sorted(row[0] for row in loaded.grants) == ["192.0.2.1", "198.51.100.9"]
    assert "migrated 2 grant(s)" in loaded.warning and not jsonstate.wal_path(path).exists()


def test_a_json_state_with_a_nan_is_set_aside_not_migrated(tmp_path: Path) -> None:
    """Issue 10, item 4, through the migration: the hardened reader still refuses it."""
    path = tmp_path / "state.json"
    content = OLD_STATE.replace(b"1780000100.5", b"NaN")
    path.write_bytes(content)
    loaded = state.load(path, now=T0)
    assert loaded.grants == ()
    assert loaded.warning.startswith(f"--state {path}: unreadable (not a finite number: NaN); moved to ")
    assert "migrated 0 grant(s)" in loaded.warning and "\n" not in loaded.warning
    assert only_aside(tmp_path, "state.json").read_bytes() == content


def test_a_migration_killed_before_its_rename_is_done_again(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(OLD_STATE)
    (tmp_path / ".state.json.0123456789ab.tmp").write_bytes(b"SQLite format 3\x00half")  # left by the kill
    loaded = state.load(path, now=T0)
    assert sorted(row[0] for row in loaded.grants) == ["192.0.2.1", "2001:db8::7"] and "migrated 2 grant(s)" in loaded.warning
    assert path.read_bytes().startswith(b"SQLite format 3\x00")


# --- Issue 10, item 5: a planted file beside --state ---

LOAD_ISOLATED = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # /dev/zero or 3 GiB: MemoryError, not the machine
from logwatch import state
loaded = state.load(sys.argv[1], now=float(sys.argv[2]))
print(json.dumps({"ips": sorted(row[0] for row in loaded.grants), "warning": loaded.warning}))
"""


def load_isolated(path: Path) -> tuple[list[str], str]:
    """``state.load`` in a child with 1 GiB of address space and 20 s: a hang or a memory
    blow-up fails the test instead of the test run."""
    done = subprocess.run([sys.executable, "-c", LOAD_ISOLATED, str(path), str(T0)], cwd=CHECKOUT,
                          capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    return result["ips"], result["warning"]


def open_wal(path: Path) -> state.Store:
    """A store left open with one grant committed to ``FILE-wal`` only (as after a SIGKILL)."""
    store, _ = state.open_store(path, T0)
    store.write(grants(1), [])
    return store


def test_a_symlinked_database_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    path = tmp_path / "state.db"
    path.symlink_to(victim)
    loaded = state.load(path, now=T0)
    assert loaded.warning.startswith(f"--state {path}: refused (a symbolic link, not followed)")
    assert victim.read_bytes() == b"precious\n" and only_aside(tmp_path, "state.db").readlink() == victim
    assert path.is_file() and not path.is_symlink()


@pytest.mark.parametrize("suffix", ["-wal", "-shm", "-journal"])
def test_a_symlinked_sidecar_is_never_written_through(tmp_path: Path, suffix: str) -> None:
    """FILE-wal -> victim: SQLite would have written its pages into the victim."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    path = tmp_path / "state.db"
    saved(path, grants(2))
    Path(f"{path}{suffix}").symlink_to(victim)
    store, loaded = state.open_store(path, T0)
    assert loaded.warning.startswith(f"{path}{suffix}: refused (a symbolic link, not followed); moved to ")
    assert len(loaded.grants) == 2  # the database itself is kept
    store.write(grants(3), [])
    store.close()
    assert victim.read_bytes() == b"precious\n"
    assert only_aside(tmp_path, f"state.db{suffix}").readlink() == victim


def test_a_dangling_wal_symlink_creates_nothing(tmp_path: Path) -> None:
    target = tmp_path / "created-by-root"
    path = tmp_path / "state.db"
    Path(f"{path}-wal").symlink_to(target)
    store, _ = state.open_store(path, T0)
    store.write(grants(1), [])
    store.close()
    assert not target.exists()


def test_a_wal_without_its_database_is_not_replayed_into_a_new_one(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    store = open_wal(other / "state.db")
    path = tmp_path / "state.db"
    shutil.copy(other / "state.db-wal", f"{path}-wal")
    store.close()
    loaded = state.load(path, now=T0)
    assert loaded.grants == () and f"{path}-wal: without its database; moved to" in loaded.warning


@pytest.mark.parametrize("uid, mode", [
    (65534, 0o666),  # another user's world-writable log
    (65534, 0o640),  # another user's, however private
    (0, 0o666),      # ours, but anyone may write it
    (0, 0o660),      # ours, but the group (the viewers) may write it
])
def test_a_wal_anyone_else_could_write_is_not_trusted(tmp_path: Path, uid: int, mode: int) -> None:
    """The grants in it are not restored: it is set aside, the database is kept."""
    path = tmp_path / "state.db"
    saved(path, grants(1))
    live = tmp_path / "live"
    live.mkdir()
    store = open_wal(live / "state.db")  # a WAL holding a grant, from another database's copy
    wal = Path(f"{path}-wal")
    shutil.copy(live / "state.db-wal", wal)
    store.close()
    os.chown(wal, uid, 0)
    os.chmod(wal, mode)
    loaded = state.load(path, now=T0)
    assert loaded.warning.startswith(f"{wal}: refused (") and "\n" not in loaded.warning
    assert [row[0] for row in loaded.grants] == ["198.51.100.0"]
    assert only_aside(tmp_path, "state.db-wal").stat().st_uid == uid


@pytest.mark.parametrize("uid, mode", [(65534, 0o640), (0, 0o666), (0, 0o620)])
def test_a_database_anyone_else_could_write_is_not_trusted(tmp_path: Path, uid: int, mode: int) -> None:
    path = tmp_path / "state.db"
    saved(path, grants(3))
    os.chown(path, uid, 0)
    os.chmod(path, mode)
    loaded = state.load(path, now=T0)
    assert loaded.grants == ()
    assert loaded.warning.startswith(f"--state {path}: refused (") and "\n" not in loaded.warning
    assert only_aside(tmp_path, "state.db").stat().st_uid == uid


def test_a_second_hard_link_is_not_trusted(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    saved(path, grants(1))
    os.link(path, tmp_path / "elsewhere")
    assert "refused (it has 2 hard links)" in state.load(path, now=T0).warning


def test_the_viewer_trusts_what_only_its_owner_can_write(tmp_path: Path) -> None:
    """``relaywatch status`` may run as another user in the daemon's group: for it the
    files need not be its own, only not writable by anyone but their owner."""
    path = tmp_path / "state.db"
    saved(path, grants(2))
    os.chown(path, 65534, 0)
    assert len(state.read(path)) == 2  # another user's 0640 file: fine for a reader ...
    os.chmod(path, 0o660)
    with pytest.raises(OSError, match="writable by others"):
        state.read(path)
    assert path.exists()  # ... and a viewer moves nothing


@pytest.mark.parametrize("where", ["state.db", "state.db-wal", "state.db-shm"])
def test_a_fifo_does_not_block_the_start(tmp_path: Path, where: str) -> None:
    path = tmp_path / "state.db"
    if where != "state.db":
        saved(path, grants(1))
    os.mkfifo(tmp_path / where)
    ips, warning = load_isolated(path)
    assert "refused (a FIFO, not a regular file)" in warning
    assert stat.S_ISFIFO(only_aside(tmp_path, where).lstat().st_mode)
    assert ips == ([] if where == "state.db" else ["198.51.100.0"])


def test_a_database_linked_to_dev_zero_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.symlink_to("/dev/zero")
    ips, warning = load_isolated(path)
    assert ips == [] and warning.startswith(f"--state {path}: refused (a symbolic link")


@pytest.mark.parametrize("where", ["state.db", "state.db-wal"])
def test_a_huge_file_is_refused_by_its_size_unread(tmp_path: Path, where: str) -> None:
    path = tmp_path / "state.db"
    if where != "state.db":
        saved(path, grants(1))
    with (tmp_path / where).open("wb") as f:
        f.truncate(3 << 30)  # sparse: 3 GiB that take no disk
    ips, warning = load_isolated(path)
    assert f"refused ({3 << 30} bytes, over the limit of {state.MAX_BYTES} (512 MiB)" in warning
    assert only_aside(tmp_path, where).stat().st_size == 3 << 30
    assert ips == ([] if where == "state.db" else ["198.51.100.0"])


def test_the_size_limit_fits_a_million_grants(tmp_path: Path) -> None:
    """README promises that 1,000,000 grants fit: measure 10,000 with long names and IPv6."""
    path = tmp_path / "state.db"
    rows = [Grant(f"2001:db8:ffff:ffff:ffff:ffff:{i >> 16:x}:{i & 0xffff:x}",
                  f"firstname.lastname{i}@subdomain.example.org", "submission-login", T0 + i, T0 + i, 100000, T0)
            for i in range(10_000)]
    saved(path, rows)
    assert path.stat().st_size * 100 < state.MAX_BYTES


PLANTED = [
    ("192.0.2.1", "u", "imap-login", T0, float("inf"), 1),
    ("192.0.2.1", "u", "imap-login", float("-inf"), T0, 1),
    ("192.0.2.1", "u", "imap-login", -5.0, T0, 1),              # a negative time
    ("192.0.2.1", "u", "imap-login", T0, T0 - 1, 1),            # last before first
    ("192.0.2.1", "u", "imap-login", T0, 32503680000.0, 1),     # the year 3000
    ("192.0.2.1", "u", "imap-login", T0, T0, 0),                # counted no login
    ("192.0.2.1", "u", "imap-login", T0, T0, 1.5),              # not a count
    ("192.0.2.1", "u", "imap-login", "T0", T0, 1),              # not a number
    ("0.0.0.0/0", "u", "imap-login", T0, T0, 1),                # not an address
    ("::ffff:192.0.2.1", "u", "imap-login", T0, T0, 1),         # not as we write it
    ("2001:DB8::1", "u", "imap-login", T0, T0, 1),
    ("192.0.2.1", b"u", "imap-login", T0, T0, 1),               # a blob for a name
    (3221225985, "u", "imap-login", T0, T0, 1),                 # an address as a number
    ("1" * 46, "u", "imap-login", T0, T0, 1),                   # longer than any address
    ("192.0.2.1", "u", "imap-login", T0, T0, "many"),           # text for a count
]


@pytest.mark.parametrize("row", PLANTED)
def test_non_finite_and_out_of_range_values_set_the_database_aside(tmp_path: Path, row: tuple[object, ...]) -> None:
    """A row planted past the CHECK constraint (which only runs on write) is refused on read."""
    path = tmp_path / "state.db"
    saved(path, grants(2))
    with sqlite3.connect(path) as planter:
        planter.execute("PRAGMA ignore_check_constraints = ON")
        planter.execute(f"INSERT INTO grants ({state.COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)", row)
    planter.close()
    with pytest.raises(state.StateError):
        state.read(path)
    loaded = state.load(path, now=T0)
    assert loaded.grants == ()
    assert loaded.warning.startswith(f"--state {path}: unreadable (grant ") and "\n" not in loaded.warning
    assert only_aside(tmp_path, "state.db").exists()


#: What a planted row's columns may hold: every type SQLite stores, at and around each bound.
_ANYTHING = st.one_of(st.none(), st.integers(-(1 << 63), (1 << 63) - 1), st.sampled_from([0, 1, -1]),
                      st.floats(allow_nan=True), st.sampled_from([0.0, -0.0, T0, safefile.LATEST,
                                                                  math.nextafter(safefile.LATEST, 0), 5e-324]),
                      st.text(max_size=50), st.sampled_from(["", "1", "12", "x" * 45, "x" * 46, "1.5", "T0"]),
                      st.binary(max_size=8))


#: A row as we write it, with up to three of its columns replaced by anything.
_ROWS = st.dictionaries(st.integers(0, 5), _ANYTHING, max_size=3).map(
    lambda changed: tuple(changed.get(n, value) for n, value in enumerate(("192.0.2.1", "u", "imap-login", T0, T0, 1))))


@settings(max_examples=1500, deadline=None, database=None)
@given(row=_ROWS)
def test_the_check_of_a_row_read_is_the_check_constraint(row: tuple[object, ...]) -> None:
    """``state._valid`` (each row read, in Python) says of any row what ``VALID`` (the CHECK
    constraint, in SQL) says, through the columns' own types (a REAL column keeps 1 as
    1.0, an INTEGER column "1" as 1; a NaN is stored as NULL). One difference: SQLite's
    ``length`` stops at a NUL, ``len`` does not; no address holds one, and the test of
    the address (``_is_canonical``), which comes next, refuses it either way."""
    connection = sqlite3.connect(":memory:")
    connection.execute("CREATE TABLE grants (ip TEXT, user TEXT, service TEXT, first REAL, last REAL, "
                       "count INTEGER)")
    connection.execute(f"INSERT INTO grants ({state.COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)", row)
    (*stored, valid), = connection.execute(f"SELECT {state.COLUMNS}, ({state.VALID}) IS 1 FROM grants")
    connection.close()
    if isinstance(stored[0], str) and "\0" in stored[0]:
        assert not state._is_canonical(stored[0])
    else:
        assert state._valid(tuple(stored)) is bool(valid)


def test_the_daemon_reads_the_rows_by_last_login_or_unsorted_where_sqlite_cannot_sort(tmp_path: Path) -> None:
    """The start-up asks SQLite for the rows by last login (the order every later pass
    visits them in); a sort SQLite cannot make (no temporary file: an unwritable /var/tmp)
    reads them as they are, rather than set a good database aside."""
    path = tmp_path / "state.db"
    rows = grants(300)[::-1]  # the addresses' order is not the last logins'
    saved(path, rows)
    store, loaded = state.open_store(path, T0)
    store.close()
    assert [row[4] for row in loaded.grants] == sorted(g.last for g in rows)

    class NoSort:
        """A connection whose sorts fail as SQLite's do without a temporary file."""

        def __init__(self, connection: sqlite3.Connection) -> None:
            self.connection = connection

        def execute(self, sql: str) -> sqlite3.Cursor:
            if "ORDER BY" in sql:
                raise sqlite3.OperationalError("unable to open database file")
            return self.connection.execute(sql)

    connection = sqlite3.connect(path)
    assert fields(state._rows(NoSort(connection), by_last=True)) == fields(rows)  # type: ignore[arg-type]
    for by_last in (True, False):  # a read that fails otherwise still fails: the file is set aside
        with pytest.raises(sqlite3.OperationalError):
            state._rows(Broken(), by_last=by_last)  # type: ignore[arg-type]
    connection.close()


class Broken:
    """A connection to a file that cannot be read."""

    def execute(self, sql: str) -> sqlite3.Cursor:
        raise sqlite3.OperationalError("disk I/O error")


def test_a_tick_commits_its_own_pages_not_the_whole_table(tmp_path: Path) -> None:
    """The write-ahead log grows by about the pages a tick touches, not by the table."""
    path = tmp_path / "state.db"
    store, _ = state.open_store(path, T0)
    store.write([Grant(f"2001:db8::{i:x}", "u", "imap-login", T0, T0, 1, T0) for i in range(1, 20_001)], [])
    store.close()
    store, _ = state.open_store(path, T0)
    assert Path(f"{path}-wal").stat().st_size == 0
    store.write([Grant("2001:db8::7", "u", "imap-login", T0, T0 + 1, 2, T0)], [])
    assert Path(f"{path}-wal").stat().st_size < 10 * state.PAGE_SIZE < path.stat().st_size // 10
    store.close()


# --- Viewers as an unprivileged user of the daemon's group ---

@pytest.fixture
def group_dir() -> Iterator[Path]:
    """A state directory as the package makes it (0750, group of the viewers, here nogroup),
    setgid so that the daemon's files take that group, under a path nobody can traverse."""
    top = Path(tempfile.mkdtemp(prefix="relaywatch-viewer-"))
    os.chmod(top, 0o711)
    directory = top / "state"
    directory.mkdir()
    os.chown(directory, 0, 65534)
    os.chmod(directory, 0o2750)
    try:
        yield directory
    finally:
        shutil.rmtree(top)


VIEWER = "import sys; from logwatch import state; print(sorted(g.ip for g in state.read(sys.argv[1])))"


def view_as_nobody(path: Path) -> str:
    runuser = shutil.which("runuser")
    python = shutil.which("python3", path="/usr/bin:/bin")  # one nobody may run (the venv's may sit under /root)
    if os.geteuid() != 0 or runuser is None or python is None:
        pytest.skip("needs root, runuser and a system python3 to act as another user")
    done = subprocess.run([runuser, "-u", "nobody", "-g", "nogroup", "--", python, "-c", VIEWER, str(path)],
                          cwd=CHECKOUT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(CHECKOUT)})
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_a_viewer_in_the_group_reads_while_the_daemon_writes_and_after_it_stopped(group_dir: Path) -> None:
    path = group_dir / "state.db"
    store, _ = state.open_store(path, T0)
    store.write(grants(2), [])
    assert Path(f"{path}-wal").stat().st_gid == 65534
    assert view_as_nobody(path) == "['198.51.100.0', '198.51.100.1']"  # -wal and -shm read-only
    store.write(grants(3), [])
    assert view_as_nobody(path) == "['198.51.100.0', '198.51.100.1', '198.51.100.2']"
    store.close()  # -wal and -shm are gone; the database alone reads
    assert view_as_nobody(path) == "['198.51.100.0', '198.51.100.1', '198.51.100.2']"


def test_a_viewer_in_the_group_reads_after_a_sigkill(group_dir: Path) -> None:
    path = group_dir / "state.db"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=CHECKOUT, stdout=subprocess.PIPE,
                              text=True)
    assert writer.stdout is not None
    writer.stdout.readline()
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    writer.stdout.close()
    assert Path(f"{path}-wal").exists()
    assert view_as_nobody(path).count("198.51.100.") == 250


# --- Open sessions (--sessions): a table of their own, written in the grants' transaction ---

SESSIONS = [("kcwIVMRgFZp/AAAD", "192.0.2.7", T0), ("t5fK9YZhs+F/AAAC", "2001:db8::7", T0 + 1.5)]


def test_sessions_round_trip_in_the_grants_transaction(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store, loaded = state.open_store(path, T0)
    assert loaded.sessions == ()
    assert store.write(grants(2), [], SESSIONS, []) == 4
    assert state.read_all(path) == (state.read(path), tuple(SESSIONS))  # a viewer, while it runs
    assert store.write([], [], [], ["kcwIVMRgFZp/AAAD"]) == 1
    store.close()
    loaded = state.load(path, T0)
    assert loaded.sessions == (SESSIONS[1],) and len(loaded.grants) == 2


@pytest.mark.parametrize("row", [
    ("short", "192.0.2.7", T0),  # fewer than 8 characters: no session id Dovecot writes
    ("kcwIVMRgFZp/AAA'", "192.0.2.7", T0),  # not base64
    ("kcwIVMRgFZp/AAAD", "192.0.2.7", float("nan")),
    ("kcwIVMRgFZp/AAAD", "192.0.2.7", -1.0),
    ("kcwIVMRgFZp/AAAD", "192.0.2.7", float("inf")),
])
def test_a_session_row_relaywatch_never_writes_is_refused_by_the_check(tmp_path: Path,
                                                                       row: tuple[str, str, float]) -> None:
    store, _ = state.open_store(tmp_path / "s", T0)
    with pytest.raises(sqlite3.IntegrityError):
        store.write(grants(1), [], [row], [])
    store.close()
    assert state.load(tmp_path / "s", T0) == state.Loaded(())  # the grant of that transaction is not there either


@pytest.mark.parametrize(("planted", "said"), [
    ("INSERT INTO sessions VALUES ('AAAAAAAAAAAAAAAA', '192.000.002.007', 1780000000.0)",
     "the address is not one relaywatch writes"),
    ("INSERT INTO sessions VALUES ('AAAAAAAAAAAAAAAA', 'x', 1780000000.0)", "a value relaywatch never writes"),
    ("INSERT INTO sessions VALUES ('AAAA)<1><AAAA', '192.0.2.7', 1780000000.0)", "a value relaywatch never writes"),
])
def test_a_planted_session_row_sets_the_database_aside(tmp_path: Path, planted: str, said: str) -> None:
    path = tmp_path / "state.db"
    saved(path, grants(1))
    with sqlite3.connect(path) as other:
        other.execute("PRAGMA ignore_check_constraints = ON")
        other.execute(planted)
    other.close()
    with pytest.raises(state.StateError):
        state.read_all(path)
    loaded = state.load(path, T0)
    assert loaded.grants == () and loaded.sessions == () and said in loaded.warning
    assert only_aside(tmp_path, "state.db").exists()


def v1_database(path: Path, rows: list[Grant]) -> None:
    """A database exactly as relaywatch wrote it before --sessions: schema version 1, grants only."""
    with sqlite3.connect(path) as old:
        old.execute(state.SCHEMA)
        old.execute(f"PRAGMA application_id = {state.APPLICATION_ID}")
        old.execute("PRAGMA user_version = 1")
        old.executemany(f"INSERT INTO grants ({state.COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                        [(g.ip, g.user, g.service, g.first, g.last, g.count) for g in rows])
    old.close()
    os.chmod(path, 0o640)


def test_a_version_1_database_is_read_by_viewers_and_upgraded_by_the_daemon(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    rows = grants(3)
    v1_database(path, rows)
    read_grants, read_sessions = state.read_all(path)  # a viewer before the daemon's restart
    assert fields(read_grants) == fields(rows) and read_sessions == ()
    store, loaded = state.open_store(path, T0)
    assert loaded.warning == "" and fields(loaded.grants) == fields(rows)  # kept, not set aside
    store.write([], [], SESSIONS[:1], [])
    store.close()
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA user_version").fetchone() == (state.SCHEMA_VERSION,) == (2,)
    check.close()
    assert state.load(path, T0).sessions == (SESSIONS[0],)


def test_a_version_1_schema_with_a_sessions_table_of_another_kind_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    v1_database(path, grants(1))
    with sqlite3.connect(path) as planted:
        planted.execute("CREATE TABLE sessions (id TEXT, ip TEXT, start REAL)")
    planted.close()
    loaded = state.load(path, T0)
    assert loaded.grants == () and "not the schema relaywatch writes" in loaded.warning
