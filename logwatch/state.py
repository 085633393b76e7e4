"""Keep the ledger across restarts in ``--state FILE``, an SQLite database written one transaction per tick.

Why SQLite (standard library, WAL journal, ``synchronous=FULL``): a tick's cost is its own
rows, never the live set. Each tick writes, for each address it changed, one row (its
latest grant: a renewal twice in a tick is one upsert) and deletes the rows of the grants
it withdrew, in one transaction; the commit appends the changed pages to ``FILE-wal`` and
fsyncs it, so the tick is durable across a SIGKILL and a power cut when ``write`` returns.
Nothing is ever rewritten whole: at 400,000 grants a tick of 3,300 upserts costs tens of
milliseconds (``benchmarks/bench_state.py``), where rewriting the old JSON file cost 1.4 s.

Checkpoints (copying ``FILE-wal`` back into ``FILE``) are SQLite's own, but never on the
loop thread: the loop's connection has ``wal_autocheckpoint=0``, and a thread of this
module with a connection of its own runs ``PRAGMA wal_checkpoint(PASSIVE)`` after each
commit (one run for the commits made while it ran). PASSIVE never waits for the writer or a reader,
and the writer never waits for it, so the loop pays nothing for it; ``journal_size_limit``
trims ``FILE-wal`` after SQLite restarts it.

The files and their protections (issue 10, kept from the JSON format): before sqlite3 opens
anything, ``FILE`` and each of ``FILE-wal``, ``FILE-shm`` and ``FILE-journal`` that exists
is ``lstat``'d and checked by ``safefile.check``: a symbolic link, a FIFO or device, a file
owned by another user, writable by group or others, or with a second hard link is refused,
as is one over its size limit (``MAX_BYTES``; ``SHM_MAX_BYTES`` for ``-shm``). A database
that is refused, is not SQLite, is not ours (``application_id``, ``user_version`` and the
exact schema are compared) or holds a row we would never write is renamed aside with its
``-wal`` and ``-shm`` (``FILE.corrupt-<time>``) in one line, and relaywatch starts empty;
a refused ``-wal`` alone is set aside (the grants committed since the last checkpoint are
lost, said in the line) and the database kept. Rows are checked twice: by the table's
CHECK constraint when written (a ``NaN`` becomes NULL in SQLite and fails NOT NULL; an
infinity or a time before 1970 or from 2200 on fails the range), and by the same
test, in Python on the rows read (``_valid``), and the address's canonical form, when
read, since a planted file need not have been written through our constraint.

The remaining race: between the ``lstat`` checks and sqlite3's own ``open`` (which does not
use ``O_NOFOLLOW``), a name could be swapped for a symbolic link. Only someone who can create
entries in the state directory can do that, and that directory is relaywatch's own, 0750
(``StateDirectoryMode=0750`` in the unit, ``/var/lib/relaywatch`` in the package): whoever
can write there can already write ``FILE`` itself. So the checks guard against what was
planted before (a mistake, an old file, another service's leftovers), and the directory's
permissions against the swap; ``directory_warning`` says so at start when they are looser.

Viewers (``relaywatch status``, ``tui``) open the database read-only (``mode=ro``) and never
block the daemon: WAL readers and the writer do not wait for each other. A read-only
reader needs ``FILE-wal`` and ``FILE-shm`` to exist, and to read them: ``FILE`` is created
0640 (SQLite gives ``-wal`` and ``-shm`` the database's own mode and owner), so the
daemon's group can read all three; and at a clean stop the daemon checkpoints and turns the
journal back to DELETE mode, so that the database alone, without ``-wal`` and ``-shm``
(SQLite removes them when its last connection closes), still reads as the grants it left.

Migration: a ``FILE`` in the old JSON format (with or without ``FILE.wal``) is read by
``jsonstate`` (the hardened reader), written into a database under a temporary name in the
same directory, renamed over ``FILE``, and the old files set aside as ``FILE.json-<time>``
and ``FILE.wal.json-<time>``, in one log line.

Reading applies no policy: ``Ledger.restore_saved`` drops what has expired under today's
``--expire`` and never-list. The daemon's read hands on plain tuples (``model.SavedGrant``),
by last login (see ``_rows``): a start-up reads a million of them.
"""

from __future__ import annotations

import errno
import operator
import os
import socket
import sqlite3
import stat
import threading
import time
import urllib.parse
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from logwatch import atomic, jsonstate, safefile
from logwatch.addresses import normalise
from logwatch.jsonstate import Loaded, StateError
from logwatch.model import Grant, SavedGrant

__all__ = ["Loaded", "StateError", "Store", "open_store", "load", "read", "read_all", "watched", "directory_warning",
           "MODE", "MAX_BYTES", "SHM_MAX_BYTES"]

#: Readable by the daemon's group: ``relaywatch status`` and ``tui`` need only read access.
MODE = 0o640
#: ``PRAGMA application_id``: "rwst", so that another program's SQLite file is not taken for ours.
APPLICATION_ID = int.from_bytes(b"rwst", "big")
#: ``PRAGMA user_version``: the schema below (1: the grants alone, before ``--sessions``; a
#: version 1 database is upgraded in place by the daemon, and read as it is by viewers).
SCHEMA_VERSION = 2
#: ``FILE``, ``FILE-wal`` and ``FILE-journal`` are refused unopened beyond this size (512 MiB),
#: and the daemon's database cannot grow past it (``max_page_count``): 1,000,000 grants with
#: long IPv6 addresses and user names take about 150 MB, 100,000 typical ones 8 MB, while
#: a file the size of the disk is never opened.
MAX_BYTES = 512 << 20
#: ``FILE-shm`` is an index of ``FILE-wal`` (32 KiB per 4,096 pages); more is not ours.
SHM_MAX_BYTES = 16 << 20
#: The files beside ``FILE`` that SQLite reads and writes, each checked before it opens them.
SIDECARS = ("-wal", "-shm", "-journal")
#: ``PRAGMA journal_size_limit``: ``FILE-wal`` is truncated to this after SQLite restarts it.
JOURNAL_SIZE_LIMIT = 64 << 20
#: ``PRAGMA cache_size`` in KiB: a tick's random upserts find their pages in memory.
CACHE_KIB = 32 << 10
PAGE_SIZE = 4096

#: Every row satisfies this (the CHECK constraint; tested again when read). ``typeof`` first,
#: so a NULL makes it false rather than NULL; times are seconds from 1970 to 2200.
VALID = ("typeof(ip) = 'text' AND length(ip) BETWEEN 2 AND 45 AND typeof(user) = 'text' "
         "AND typeof(service) = 'text' AND typeof(first) = 'real' AND typeof(last) = 'real' "
         f"AND first >= 0 AND last >= first AND last < {safefile.LATEST!r} "
         "AND typeof(count) = 'integer' AND count > 0")
SCHEMA = ("CREATE TABLE grants (ip TEXT NOT NULL PRIMARY KEY, user TEXT NOT NULL, service TEXT NOT NULL, "
          f"first REAL NOT NULL, last REAL NOT NULL, count INTEGER NOT NULL, CHECK ({VALID})) WITHOUT ROWID")
COLUMNS = "ip, user, service, first, last, count"
UPSERT = (f"INSERT INTO grants ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (ip) DO UPDATE SET "
          "user = excluded.user, service = excluded.service, first = excluded.first, last = excluded.last, "
          "count = excluded.count")
#: An open session (``--sessions``): its id as the login line gave it (the ``SID`` of the
#: pattern sets: 8 to 64 base64 characters), the address it logged in from, and its start.
#: Checked like a grant's row, when written and when read.
SESSION_VALID = ("typeof(id) = 'text' AND length(id) BETWEEN 8 AND 64 AND id NOT GLOB '*[^A-Za-z0-9+/]*' "
                 "AND typeof(ip) = 'text' AND length(ip) BETWEEN 2 AND 45 AND typeof(start) = 'real' "
                 f"AND start >= 0 AND start < {safefile.LATEST!r}")
SESSIONS_SCHEMA = ("CREATE TABLE sessions (id TEXT NOT NULL PRIMARY KEY, ip TEXT NOT NULL, start REAL NOT NULL, "
                   f"CHECK ({SESSION_VALID})) WITHOUT ROWID")
SESSION_UPSERT = ("INSERT INTO sessions (id, ip, start) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                  "ip = excluded.ip, start = excluded.start")
#: ``sqlite_master`` of each schema version we wrote, ordered by name.
SCHEMAS = {1: [("table", "grants", SCHEMA)],
           2: [("table", "grants", SCHEMA), ("table", "sessions", SESSIONS_SCHEMA)]}
#: One saved session: ``(session id, ip, start)``.
SessionRow = tuple[str, str, float]
SQLITE_HEADER = b"SQLite format 3\x00"


def watched(path: str | os.PathLike[str]) -> list[Path]:
    """The files whose change means the grants may have changed (for a viewer's cache)."""
    return [Path(path), Path(f"{path}-wal"), jsonstate.wal_path(path)]


def _limit(name: str) -> int:
    return SHM_MAX_BYTES if name.endswith("-shm") else MAX_BYTES


def check_files(path: str | os.PathLike[str], *, writer: bool) -> None:
    """``safefile.check`` on ``FILE`` and each sidecar that exists, from ``lstat``: before sqlite3 opens them.

    Raises:
        safefile.Refused: one is not to be trusted (its ``filename`` says which).
        IsADirectoryError: one is a directory.
        OSError: one cannot be examined.
    """
    for name in [os.fspath(path)] + [f"{path}{suffix}" for suffix in SIDECARS]:
        try:
            st = os.lstat(name)
        except FileNotFoundError:
            continue
        safefile.check(st, name, writer=writer, limit=_limit(name))


def _connect(path: str | os.PathLike[str], mode: str) -> sqlite3.Connection:
    """A connection to ``path`` (``mode``: ``rw`` never creates, ``ro`` never writes), in
    autocommit: every transaction here is explicit."""
    uri = f"file:{urllib.parse.quote(os.fspath(path))}?mode={mode}"
    connection = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=1.0)
    try:
        connection.execute("PRAGMA trusted_schema = OFF")  # a planted schema runs no function of ours
    except BaseException:
        connection.close()
        raise
    return connection


def _head(path: Path, *, writer: bool) -> bytes:
    """The first 16 bytes of ``path``, opened through ``safefile`` (nothing else is read).

    Raises:
        FileNotFoundError, safefile.Refused, OSError.
    """
    fd, _ = safefile.open_checked(path, os.O_RDONLY, writer=writer, limit=MAX_BYTES)
    try:
        return os.read(fd, len(SQLITE_HEADER))
    finally:
        os.close(fd)


def _verify(connection: sqlite3.Connection) -> int:
    """Refuse a database that is not relaywatch's: its identity and its exact schema; return
    its schema version (1 or ``SCHEMA_VERSION``).

    Raises:
        StateError: it is another program's, or a schema we never wrote (an extra
            trigger, view or index included).
        sqlite3.DatabaseError: it is not a database.
    """
    (application_id,) = connection.execute("PRAGMA application_id").fetchone()
    (version,) = connection.execute("PRAGMA user_version").fetchone()
    if application_id != APPLICATION_ID:
        raise StateError(f"not a relaywatch database (application_id {application_id})")
    if version not in SCHEMAS:
        raise StateError(f"schema version {version}; expected {SCHEMA_VERSION}")
    schema = connection.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
    if schema != SCHEMAS[version]:
        raise StateError("not the schema relaywatch writes")
    return int(version)


def _initialise(connection: sqlite3.Connection) -> None:
    """Give an empty database our schema and identity, or check those of an existing one
    (a version 1 database, checked whole, gets the sessions table, in the same transaction)."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        (tables,) = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        if tables == 0 and connection.execute("PRAGMA application_id").fetchone() == (0,):
            connection.execute(SCHEMA)
            connection.execute(SESSIONS_SCHEMA)
            connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        elif _verify(connection) == 1:
            connection.execute(SESSIONS_SCHEMA)
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise


def _configure_writer(connection: sqlite3.Connection) -> None:
    """WAL, durable at each commit, no checkpoint on this connection, bounded growth."""
    (mode,) = connection.execute("PRAGMA journal_mode = WAL").fetchone()
    if mode != "wal":
        raise sqlite3.OperationalError(f"cannot use the WAL journal (journal mode {mode})")
    for pragma in ("synchronous = FULL", "wal_autocheckpoint = 0", f"journal_size_limit = {JOURNAL_SIZE_LIMIT}",
                   f"cache_size = -{CACHE_KIB}", f"max_page_count = {MAX_BYTES // PAGE_SIZE}"):
        connection.execute(f"PRAGMA {pragma}")


def _is_canonical(ip: object) -> bool:
    """Whether ``ip`` is an address as relaywatch writes it (``addresses.normalise``'s form).

    The fast path (inet_pton then inet_ntop, about 0.4 µs against 7 µs) accepts only text
    that glibc prints back unchanged and without a dot, where glibc's form is Python's
    compressed one; anything else is asked of ``normalise`` itself.
    """
    if not isinstance(ip, str):
        return False
    try:
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        if socket.inet_ntop(family, socket.inet_pton(family, ip)) == ip and (family == socket.AF_INET or "." not in ip):
            return True
    except (OSError, ValueError):
        return False
    return normalise(ip) == ip


def _valid(row: tuple[Any, ...]) -> bool:
    """``VALID`` (the CHECK constraint) of a row as sqlite3 gives it (``COLUMNS``): TEXT is
    ``str``, REAL ``float``, INTEGER ``int``, and a NaN, which SQLite stores as NULL, ``None``."""
    ip, user, service, first, last, count = row
    return (type(ip) is str and 2 <= len(ip) <= 45 and type(user) is str and type(service) is str
            and type(first) is float and type(last) is float and 0 <= first <= last < safefile.LATEST
            and type(count) is int and count > 0)


def _rows(connection: sqlite3.Connection, by_last: bool = False) -> tuple[SavedGrant, ...]:
    """Every row, as a tuple, refusing the whole table if one is not what we write.

    One query; then each row's values (``_valid``, which is ``VALID`` in Python) and its
    address (``_is_canonical``) are tested on the tuples it gave, 0.17 and 0.46 s at a
    million rows. Why not ``VALID`` in SQL, as before: a scan of its own, 0.46 s at a
    million, to test what has to be read anyway.

    ``by_last``: in the order of the last logins (the daemon's start-up). Why ask SQLite,
    when the ledger sorts them anyway: Python makes each row's objects in the order they
    come, and every pass after (the ledger's, the brake's, the sinks') goes in the order
    of the last logins, so rows read in the table's order (by address) are then visited
    at random, a cache miss each. At a million rows SQLite's sort costs 0.6 s and saves
    1.3 s in the ledger and a quarter of a second in each later pass. It sorts in
    temporary files (SQLite's own, in ``/var/tmp`` or ``/tmp``); where it cannot make one,
    the rows are read unsorted. Sorting more in memory costs more: with the writer's
    page cache (``CACHE_KIB``, which is also how much SQLite sorts in memory before it
    writes a run out) the sort took 0.4 s longer than with the default 2 MB, and with
    ``temp_store = MEMORY`` 0.6 s longer; so ``open_store`` reads the rows first.

    Raises:
        StateError: a row we never write; sqlite3.DatabaseError: the file is damaged.
    """
    query = f"SELECT {COLUMNS} FROM grants"
    try:
        if by_last:  # SQLite may sort its runs on a second thread: 1.63 -> 1.35 s (0.2 s more CPU)
            connection.execute("PRAGMA threads = 1")
        rows: list[SavedGrant] = connection.execute(f"{query} ORDER BY last" if by_last else query).fetchall()
    except sqlite3.OperationalError:
        if not by_last:
            raise
        rows = connection.execute(query).fetchall()  # no temporary file for the sort: e.g. /var/tmp read-only
    if not all(map(_valid, rows)):
        bad = next(row for row in rows if not _valid(row))
        raise StateError(f"grant {ascii(bad[0])[:60]}: a value relaywatch never writes "
                         f"(not finite, not a time from 1970 to 2200, last before first, or no login)")
    if not all(map(_is_canonical, map(operator.itemgetter(0), rows))):
        bad = next(row for row in rows if not _is_canonical(row[0]))
        raise StateError(f"grant {ascii(bad[0])[:60]}: the address is not one relaywatch writes")
    return tuple(rows)


def _session_rows(connection: sqlite3.Connection) -> tuple[SessionRow, ...]:
    """Every saved session, refusing the whole table if one row is not what we write (the
    CHECK again, and the address's canonical form), as ``_rows`` does for grants.

    Raises:
        StateError: a row we never write; sqlite3.DatabaseError: the file is damaged.
    """
    bad = connection.execute(f"SELECT id FROM sessions WHERE ({SESSION_VALID}) IS NOT 1 LIMIT 1").fetchone()
    if bad is not None:
        raise StateError(f"session {ascii(bad[0])[:70]}: a value relaywatch never writes "
                         f"(not a session id, not an address, or not a time from 1970 to 2200)")
    rows = tuple((str(sid), str(ip), float(start))
                 for sid, ip, start in connection.execute("SELECT id, ip, start FROM sessions"))
    for _sid, ip, _start in rows:
        if not _is_canonical(ip):
            raise StateError(f"session from {ascii(ip)[:60]}: the address is not one relaywatch writes")
    return rows


class _Checkpointer(threading.Thread):
    """Runs ``PRAGMA wal_checkpoint(PASSIVE)`` off the loop thread, after commits.

    Its connection is its own (opened here, in the thread). ``error`` holds the last
    failure, for the daemon to report, or ``""``.
    """

    def __init__(self, path: str) -> None:
        super().__init__(name="relaywatch-checkpoint", daemon=True)
        self._path = path
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self.error = ""
        self.runs = 0

    def nudge(self) -> None:
        """A commit happened: checkpoint soon."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self.is_alive():
            self.join()

    def run(self) -> None:
        try:
            connection = _connect(self._path, "rw")
        except sqlite3.Error as exc:
            self.error = f"cannot open for checkpoints: {exc}"
            return
        try:
            connection.execute("PRAGMA synchronous = FULL")
            while not self._stopping.is_set():
                self._wake.wait()
                self._wake.clear()
                if self._stopping.is_set():
                    break
                try:
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.error = ""
                except sqlite3.Error as exc:
                    self.error = f"checkpoint failed: {exc}"
                self.runs += 1
        finally:
            connection.close()


class Store:
    """The daemon's open database: one connection for the loop thread, and the checkpoint thread.

    Made by ``open_store``. Attributes:
        path: ``FILE``.
        rows_written: rows upserted or deleted since it was opened (a test compares ticks by it).
    """

    def __init__(self, path: str, connection: sqlite3.Connection) -> None:
        self.path = path
        self._connection = connection
        self.rows_written = 0
        self._checkpointer = _Checkpointer(path)
        self._checkpointer.start()

    def write(self, puts: Iterable[Grant], drops: Iterable[str], opened: Iterable[SessionRow] = (),
              closed: Iterable[str] = ()) -> int:
        """Upsert ``puts`` (one row per address: pass each address once) and delete the rows
        of ``drops``; with ``--sessions``, upsert the sessions ``opened`` (``(id, ip,
        start)``) and delete those ``closed`` (ids): all in one transaction, durable when it
        returns; return the rows written.

        Raises:
            sqlite3.Error: nothing of it was written (rolled back); e.g. the disk is full,
                or the database reached ``MAX_BYTES``.
        """
        upserts = [(g.ip, g.user, g.service, float(g.first), float(g.last), int(g.count)) for g in puts]
        deletes = [(ip,) for ip in drops]
        starts = [(sid, ip, float(start)) for sid, ip, start in opened]
        ends = [(sid,) for sid in closed]
        if not upserts and not deletes and not starts and not ends:
            return 0
        connection = self._connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            if upserts:
                connection.executemany(UPSERT, upserts)
            if deletes:
                connection.executemany("DELETE FROM grants WHERE ip = ?", deletes)
            if starts:
                connection.executemany(SESSION_UPSERT, starts)
            if ends:
                connection.executemany("DELETE FROM sessions WHERE id = ?", ends)
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        written = len(upserts) + len(deletes) + len(starts) + len(ends)
        self.rows_written += written
        self._checkpointer.nudge()
        return written

    @property
    def checkpoint_error(self) -> str:
        """The checkpoint thread's last failure, or ``""``."""
        return self._checkpointer.error

    def close(self) -> None:
        """Stop the checkpoint thread, fold ``FILE-wal`` into ``FILE`` and leave the database
        in DELETE mode (readable by a read-only viewer without ``-wal`` and ``-shm``); a
        failure here loses nothing (the WAL stays, and is read at the next start)."""
        self._checkpointer.stop()
        try:
            self._connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            self._connection.execute("PRAGMA journal_mode = DELETE").fetchall()
        except sqlite3.Error:
            pass
        self._connection.close()


def _aside_all(source: Path, now: float, error: Exception, consequence: str) -> str:
    """Set ``FILE`` and its sidecars aside (they belong together); return the one line."""
    line = jsonstate.set_aside(source, now, error, f"--state {source}", consequence)
    for suffix in SIDECARS:
        side = Path(f"{source}{suffix}")
        if os.path.lexists(side):
            try:
                atomic.set_aside(side, now)
            except OSError:
                pass
    return line


def _create(path: Path) -> None:
    """Create an empty ``path`` (SQLite takes an empty file for an empty database), mode
    ``MODE`` whatever the umask, never through a link, never over a file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, MODE)
    try:
        os.fchmod(fd, MODE)
        os.fsync(fd)
    finally:
        os.close(fd)
    atomic.fsync_directory(path.parent)


def _aside_name(path: Path, tag: str, now: float) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    aside = path.with_name(f"{path.name}.{tag}-{stamp}")
    number = 1
    while os.path.lexists(aside):
        number += 1
        aside = path.with_name(f"{path.name}.{tag}-{stamp}.{number}")
    return aside


def _migrate(source: Path, now: float) -> str:
    """Turn the JSON state (``FILE`` and/or ``FILE.wal``) into the database at ``FILE``;
    return the line to log.

    Order, for a crash at any point: the database is built whole under a temporary name
    (``.FILE.RANDOM.tmp``, 0640) and synced; the JSON file gets a second name
    (``FILE.json-<time>``); the database is renamed over ``FILE``; then ``FILE.wal`` is
    set aside. Killed before the rename, the next start migrates again from the same
    files; after it, ``FILE`` is the database and a ``FILE.wal`` left is set aside unread
    (its grants are in the database).

    Raises:
        OSError, sqlite3.Error: the database could not be written; ``FILE`` is untouched.
    """
    loaded = jsonstate.load(source, now)  # an unusable file is set aside here, in its line
    temp = source.with_name(f".{source.name}.{os.urandom(6).hex()}.tmp")
    _create(temp)
    try:
        connection = _connect(temp, "rw")
        try:
            connection.execute("PRAGMA synchronous = FULL")
            _initialise(connection)
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany(f"INSERT INTO grants ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)", loaded.grants)
            connection.execute("COMMIT")
            connection.execute("PRAGMA journal_mode = WAL").fetchall()
        finally:
            connection.close()
        fd = os.open(temp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        moved = []
        if os.path.lexists(source):
            kept = _aside_name(source, "json", now)
            os.link(source, kept, follow_symlinks=False)
            moved.append(str(kept))
        os.replace(temp, source)
    except BaseException:
        for leftover in (temp, Path(f"{temp}-journal"), Path(f"{temp}-wal"), Path(f"{temp}-shm")):
            try:
                leftover.unlink()
            except FileNotFoundError:
                pass
        raise
    atomic.fsync_directory(source.parent)
    old_wal = jsonstate.wal_path(source)
    if os.path.lexists(old_wal):
        kept = _aside_name(old_wal, "json", now)
        os.rename(old_wal, kept)
        atomic.fsync_directory(source.parent)
        moved.append(str(kept))
    line = (f"--state {source}: migrated {len(loaded.grants)} grant(s) from the JSON state file to SQLite; "
            f"the old file(s) set aside as {', '.join(moved) or 'nothing (there were none)'}")
    return f"{loaded.warning}; {line}" if loaded.warning else line


def open_store(path: str | os.PathLike[str], now: float) -> tuple[Store, Loaded]:
    """Open (create, migrate, or set aside and recreate) the database at ``path``; return
    it and the grants it holds, unfiltered, with any warning line.

    A missing file is a first start: an empty database, no warning. An old JSON state is
    migrated (one line). A database that cannot be trusted or read is set aside (one line)
    and replaced by an empty one; so is a ``-wal`` alone that cannot be trusted, keeping
    the database.

    Raises:
        OSError, sqlite3.Error: not even an empty database can be made there (the
            directory is not writable, the disk is full).
    """
    source = Path(path)
    warnings: list[str] = []
    try:
        head: bytes | None = _head(source, writer=True)
    except FileNotFoundError:
        head = None
    except OSError as error:  # refused: a link, a FIFO, another user's file, too big, a directory
        warnings.append(_aside_all(source, now, error, "starting with no grants"))
        head = None
    if (head is None and os.path.lexists(jsonstate.wal_path(source))) or (head and jsonstate.is_json(head)):
        warnings.append(_migrate(source, now))
    elif os.path.lexists(jsonstate.wal_path(source)):  # killed after a migration's rename: already folded in
        kept = _aside_name(jsonstate.wal_path(source), "json", now)
        os.rename(jsonstate.wal_path(source), kept)
        warnings.append(f"{jsonstate.wal_path(source)}: left by the JSON format, already migrated; moved to {kept}")
    for attempt in range(1, 2 + len(SIDECARS)):
        connection = None
        try:
            if not os.path.lexists(source):
                for suffix in SIDECARS:  # a -wal without its database would be replayed into the new one
                    orphan = Path(f"{source}{suffix}")
                    if os.path.lexists(orphan):
                        warnings.append(f"{orphan}: without its database; moved to {atomic.set_aside(orphan, now)}")
                _create(source)
            check_files(source, writer=True)
            connection = _connect(source, "rw")
            _initialise(connection)
            grants = _rows(connection, by_last=True)  # before the writer's cache: see _rows
            sessions = _session_rows(connection)
            _configure_writer(connection)
        except (OSError, StateError, sqlite3.DatabaseError) as error:
            if connection is not None:
                connection.close()
            if attempt == 1 + len(SIDECARS):
                raise
            side = getattr(error, "filename", None) if isinstance(error, OSError) else None
            if side and side != os.fspath(source) and side.startswith(os.fspath(source)):
                warnings.append(jsonstate.set_aside(Path(side), now, error, side, "the grants committed since its "
                                                    "last checkpoint are not restored"
                                                    if side.endswith("-wal") else "SQLite makes a new one"))
            else:
                warnings.append(_aside_all(source, now, error, "starting with no grants"))
            continue
        return Store(os.fspath(source), connection), Loaded(grants, "; ".join(warnings), sessions)
    raise AssertionError("unreachable")


def load(path: str | os.PathLike[str], now: float) -> Loaded:
    """``open_store``, then close it: the grants at ``path``, and what was set aside."""
    store, loaded = open_store(path, now)
    store.close()
    return loaded


def read(path: str | os.PathLike[str]) -> tuple[Grant, ...]:
    """The grants in ``path``, for viewers (``read_all`` without the sessions)."""
    return read_all(path)[0]


def _as_grants(rows: Iterable[SavedGrant]) -> tuple[Grant, ...]:
    """Saved grants as ``Grant``s for viewers; ``until`` is ``last``, a placeholder: a
    viewer judges them by the ``--expire`` it reads from the daemon's status."""
    return tuple(Grant(ip, user, service, first, last, count, last) for ip, user, service, first, last, count in rows)


def read_all(path: str | os.PathLike[str]) -> tuple[tuple[Grant, ...], tuple[SessionRow, ...]]:
    """The grants and the open sessions in ``path``, for viewers: read-only, nothing is ever
    moved or created; one read transaction, so the sessions are those of the same grants.
    A version 1 database (a daemon not restarted since the upgrade) and the JSON format
    hold no sessions.

    A viewer may be another user (in the daemon's group): it trusts files that only their
    owner can write, whoever that is (``safefile``, ``writer=False``). A ``FILE`` still in
    the JSON format (a daemon not yet restarted since the upgrade) is read as such.

    Raises:
        FileNotFoundError: there is no state yet.
        OSError, StateError: it cannot be read, must not be trusted (``safefile.Refused``)
            or is not relaywatch's; the caller says so.
    """
    source = Path(path)
    try:
        head = _head(source, writer=False)
    except FileNotFoundError:
        if os.path.lexists(jsonstate.wal_path(source)):
            return jsonstate.read(source), ()
        raise
    if jsonstate.is_json(head):
        return jsonstate.read(source), ()
    check_files(source, writer=False)
    try:
        connection = _connect(source, "ro")
    except sqlite3.Error as exc:
        raise OSError(errno.EACCES, f"cannot open the database: {exc}", os.fspath(source)) from None
    try:
        connection.execute("BEGIN")
        version = _verify(connection)
        return _as_grants(_rows(connection)), (_session_rows(connection) if version >= 2 else ())
    except sqlite3.OperationalError as exc:  # e.g. -wal or -shm not readable by this user
        raise OSError(errno.EACCES, f"cannot read the database: {exc}", os.fspath(source)) from None
    except sqlite3.DatabaseError as exc:
        raise StateError(f"not a database relaywatch can read ({exc})") from None
    finally:
        connection.close()


def directory_warning(path: str | os.PathLike[str]) -> str:
    """A line if ``path``'s directory lets others create names in it (the race in the
    module docstring is then open), else ``""``."""
    directory = Path(path).parent
    try:
        st = os.stat(directory)
    except OSError:
        return ""
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) or st.st_uid != os.geteuid():
        return (f"--state {path}: its directory {directory} is not relaywatch's alone (owner uid {st.st_uid}, "
                f"mode {stat.S_IMODE(st.st_mode):04o}): others could swap its files; make it 0750 and relaywatch's")
    return ""
