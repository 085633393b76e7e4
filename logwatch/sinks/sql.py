"""Publish grants into one SQL table that several relaywatch instances share and Postfix queries.

``--sql postgresql://...`` (psycopg 3) or ``--sql mysql://...`` (PyMySQL); the URL is the
sink's spec. What each rule here is for:

- **One transaction per ``commit``**, of parameterised statements only: the rows of a
  batch go in as parameters (PostgreSQL: arrays through ``unnest``; MariaDB: PyMySQL's
  multi-row ``executemany``), so a user name such as ``'; DROP TABLE`` is data. The only
  SQL text built here is the table name, which ``sqlurl.check_table`` allows only as a
  plain identifier and which is quoted as one.
- **A renewal never shortens a row**: ``expires = GREATEST(existing, new)``, through
  ``INSERT ... ON CONFLICT DO UPDATE`` (PostgreSQL) or ``INSERT ... ON DUPLICATE KEY
  UPDATE`` (MariaDB; never ``REPLACE INTO``, which deletes and re-inserts). The last
  user, service and host follow the latest login, whoever wrote it.
- **Drop deletes only what is really expired** (``expires <= now()`` on the database's
  clock): instance A's expiry never deletes a row instance B just renewed. Once a minute a
  commit also deletes every expired row (what a crashed instance left), by the same rule.
- **Instances never deadlock for long**: keys are sorted within a batch, so transactions
  lock rows in the same order; a deadlock or lock timeout the engine still reports is
  retried at once, a few times, as the whole transaction (nothing is half applied).
- **Outages are retryable**: every database error closes the connection and raises a
  retryable ``SinkError`` with ``resync``, so the outlet keeps the backlog, retries with
  backoff and, once a commit goes through again, publishes the whole ledger (a dropped
  table, a failover that lost the last writes, a restore: all come back). The next
  connection creates the table again if it is missing. ``put`` and ``drop`` only collect,
  so they never fail.
- **The database being down at start is not an error**: only what no retry can fix
  (no driver, a bad URL, a password file others can read) stops the start.
- **A database that hangs never holds the daemon's loop**: the daemon serves this sink
  from a thread of its own (``blocking``, ``sinks.background``).

Passwords: never in the URL (``sqlurl``); from libpq's own files, a MariaDB option file,
or ``--sql-password-file`` (a regular file only its owner can read, opened without
following a link).
"""

from __future__ import annotations

import importlib
import logging
import os
import random
import socket
import stat
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Protocol

from logwatch.model import Grant
from logwatch.sinks import Health, SinkError, SinkOptions
from logwatch.sinks.sqlurl import DEFAULT_PORTS, SqlTarget, check_table, parse, quoted

log = logging.getLogger("relaywatch")

#: Driver module and what to install, per engine.
DRIVERS = {
    "pgsql": ("psycopg", "psycopg 3: pip install 'relaywatch[pgsql]' (Debian: apt install python3-psycopg)"),
    "mysql": ("pymysql", "PyMySQL: pip install 'relaywatch[mysql]' (Debian: apt install python3-pymysql)"),
}
#: Seconds to wait for a connection, and for a statement (a lock held elsewhere).
CONNECT_TIMEOUT = 5
STATEMENT_TIMEOUT = 10
#: How often a deadlock is retried within one commit.
DEADLOCK_TRIES = 5
#: Seconds between deletes of every expired row.
SWEEP_EVERY = 60.0
#: Rows per statement when a batch is large (a full re-publish of 400,000 grants).
CHUNK = 5000
PASSWORD_FILE_MAX = 4096
#: Seconds between commits at most (``Outlet`` reads ``batch_interval``).
BATCH_INTERVAL = 0.02


class Dialect(Protocol):
    """What differs between the engines: connecting, the DDL, the statements, the errors."""

    def connect(self, target: SqlTarget, password: str | None) -> Any: ...
    def ensure_table(self, conn: Any, table: str) -> None: ...
    def delete(self, cur: Any, table: str, ips: Sequence[str], early: bool = False) -> int: ...
    def upsert(self, cur: Any, table: str, rows: Sequence[tuple[Any, ...]]) -> int: ...
    def sweep(self, cur: Any, table: str) -> int: ...
    def when(self, seconds: float) -> datetime: ...
    def deadlock(self, error: BaseException) -> bool: ...


class SqlSink:
    """A shared SQL table as a sink.

    Args:
        target: the parsed ``--sql`` URL.
        table: the table (``--sql-table``), already checked.
        password: from ``--sql-password-file``, or None (the engine's own files).
        dialect: the engine's statements; default: by ``target.engine``.
        host: what the ``relaywatch_host`` column says; default: this host's name.

    Attributes:
        statements, transactions: how many were sent, for the benchmark and the tests.
        batch_interval: the outlet commits at most this often (seconds): at an ISP's
            3,300 logins a second, one statement carries about 66 logins, not 2.
        blocking: a commit can wait on the network for its timeouts, so the daemon serves
            this sink from a thread of its own (``sinks.background``).
    """

    batch_interval = BATCH_INTERVAL
    blocking = True

    def __init__(self, target: SqlTarget, table: str, password: str | None = None,
                 dialect: Dialect | None = None, host: str | None = None,
                 clock: Any = time.monotonic) -> None:
        self.spec = target.url
        self.target = target
        self.table = table
        self.host = host or socket.gethostname()
        self._password = password
        self._dialect = dialect or (_Pg() if target.engine == "pgsql" else _My())
        self._clock = clock
        self._conn: Any = None
        self._puts: dict[str, Grant] = {}
        self._drops: set[str] = set()
        self._early: set[str] = set()
        self._error = ""
        self._swept = clock()
        self.statements = 0
        self.transactions = 0
        try:
            self._connection()
        except SinkError as exc:
            log.warning("%s; relaywatch goes on and retries", exc)

    # ----------------------------------------------------------------- Sink

    def put(self, grant: Grant) -> None:
        """Collect ``grant`` for the next commit (the latest put of an address wins)."""
        self._drops.discard(grant.ip)
        self._early.discard(grant.ip)
        self._puts[grant.ip] = grant

    def drop(self, ip: str, *, early: bool = False) -> None:
        """Collect a delete of ``ip``'s row for the next commit: if expired by then, so that
        a row another instance renewed stays; ``early`` (revoked, capped, a narrower
        policy), whatever its expiry: the administrator's word holds for the shared table."""
        self._puts.pop(ip, None)
        (self._early if early else self._drops).add(ip)

    def commit(self) -> None:
        """Write what was collected in one transaction (retried on a deadlock).

        Raises:
            SinkError: retryable, with ``resync``, on any database error; what was
                collected is forgotten (the outlet sends it again).
        """
        puts, drops, early = self._puts, self._drops, self._early
        self._puts, self._drops, self._early = {}, set(), set()
        if not puts and not drops and not early:
            return
        rows = [self._row(puts[ip]) for ip in sorted(puts)]
        gone = sorted(drops - early)
        now_gone = sorted(early)
        sweep = self._clock() - self._swept >= SWEEP_EVERY
        for attempt in range(DEADLOCK_TRIES):
            try:
                with self._transaction() as cur:
                    if gone:
                        self.statements += self._dialect.delete(cur, self.table, gone)
                    if now_gone:
                        self.statements += self._dialect.delete(cur, self.table, now_gone, early=True)
                    for start in range(0, len(rows), CHUNK):
                        self.statements += self._dialect.upsert(cur, self.table, rows[start:start + CHUNK])
                    if sweep:
                        self.statements += self._dialect.sweep(cur, self.table)
                break
            except _Deadlock as exc:
                if attempt == DEADLOCK_TRIES - 1:
                    raise SinkError(self.spec, f"{exc} ({DEADLOCK_TRIES} tries)", retryable=True) from None
                time.sleep(random.uniform(0.001, 0.02 * (attempt + 1)))
        if sweep:
            self._swept = self._clock()

    def health(self) -> Health:
        """Failing, with the last error's one line, from a failure until a commit succeeds."""
        return Health(ok=not self._error, error=self._error)

    def close(self) -> None:
        """Close the connection; the rows stay (they expire by themselves)."""
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # closing a broken connection must not stop a shutdown
                pass
            self._conn = None

    # ----------------------------------------------------------------- internals

    def _row(self, grant: Grant) -> tuple[Any, ...]:
        when = self._dialect.when
        return (grant.ip, when(grant.until), _text(grant.user), _text(grant.service), when(grant.last), self.host)

    def _connection(self) -> Any:
        if self._conn is None:
            try:
                conn = self._dialect.connect(self.target, self._password)
            except Exception as exc:
                raise self._failed("cannot connect", exc) from None
            try:
                self._dialect.ensure_table(conn, self.table)
            except Exception as exc:
                try:
                    conn.close()
                except Exception:
                    pass
                raise self._failed(f"cannot create or see table {self.table}", exc) from None
            self._conn = conn
        return self._conn

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        conn = self._connection()
        try:
            cur = conn.cursor()
            try:
                yield cur
            finally:
                cur.close()
            conn.commit()
        except Exception as exc:
            deadlock = self._dialect.deadlock(exc)
            try:
                conn.rollback()
            except Exception:
                deadlock = False
            if deadlock:
                raise _Deadlock(_one_line(exc)) from None
            self.close()
            raise self._failed("cannot write", exc) from None
        self.transactions += 1
        self._error = ""

    def _failed(self, what: str, exc: BaseException) -> SinkError:
        error = SinkError(self.spec, f"{what}: {_one_line(exc)}", retryable=True, resync=True)
        self._error = str(error)
        return error


class _Deadlock(Exception):
    """The engine chose this transaction as a deadlock's victim (or a lock wait timed out)."""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


def _text(value: str) -> str:
    """``value`` as a database can store it: NUL (PostgreSQL refuses it in text) and lone
    surrogates (no UTF-8 for them) become U+FFFD; everything else is kept verbatim."""
    if "\x00" in value or any("\ud800" <= c <= "\udfff" for c in value):
        return "".join("\ufffd" if c == "\x00" or "\ud800" <= c <= "\udfff" else c for c in value)
    return value


# --------------------------------------------------------------------------- PostgreSQL

class _Pg:
    """PostgreSQL 13+ through psycopg 3 (libpq): the URL goes to libpq as it is."""

    def __init__(self) -> None:
        self.psycopg: Any = importlib.import_module("psycopg")
        self.sql: Any = importlib.import_module("psycopg.sql")

    def connect(self, target: SqlTarget, password: str | None) -> Any:
        extra: dict[str, Any] = {}
        if target.param("connect_timeout") is None:
            extra["connect_timeout"] = CONNECT_TIMEOUT
        if password is not None:
            extra["password"] = password
        if target.param("application_name") is None:
            extra["application_name"] = "relaywatch"
        conn = self.psycopg.connect(target.url, autocommit=False, **extra)
        with conn.cursor() as cur:
            cur.execute("SELECT set_config('statement_timeout', %s, false)", (f"{STATEMENT_TIMEOUT}s",))
        conn.commit()
        return conn

    def ensure_table(self, conn: Any, table: str) -> None:
        """Create the table and its index if missing, one instance at a time.

        Why the advisory lock: two ``CREATE TABLE IF NOT EXISTS`` at the same moment can
        both pass the check and one fail on the catalog's unique index. Why look first: a
        user granted only DML on a table the admin made may not ``CREATE`` in the schema.
        """
        sql = self.sql
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s)", (quoted("pgsql", table),))
            row = cur.fetchone()
            if row is None or row[0] is None:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                for statement in pg_ddl():
                    cur.execute(sql.SQL(statement).format(table=sql.Identifier(table),
                                                          index=sql.Identifier(f"{table}_expires_idx")))
        conn.commit()

    def delete(self, cur: Any, table: str, ips: Sequence[str], early: bool = False) -> int:
        condition = "" if early else " AND expires <= now()"
        cur.execute(self.sql.SQL("DELETE FROM {} WHERE ip = ANY(%s)" + condition)
                    .format(self.sql.Identifier(table)), (list(ips),))
        return 1

    def upsert(self, cur: Any, table: str, rows: Sequence[tuple[Any, ...]]) -> int:
        columns = list(zip(*rows))
        cur.execute(self.sql.SQL(_PG_UPSERT).format(table=self.sql.Identifier(table)),
                    [list(column) for column in columns])
        return 1

    def sweep(self, cur: Any, table: str) -> int:
        cur.execute(self.sql.SQL("DELETE FROM {} WHERE expires <= now()").format(self.sql.Identifier(table)))
        return 1

    def when(self, seconds: float) -> datetime:
        return datetime.fromtimestamp(seconds, UTC)

    def deadlock(self, error: BaseException) -> bool:
        # deadlock_detected, serialization_failure, lock_not_available
        return getattr(error, "sqlstate", None) in ("40P01", "40001", "55P03")


#: pg_advisory_xact_lock key for creating the table ("relaywatch" in ASCII, folded to 63 bits).
_LOCK_KEY = int.from_bytes(b"rlywatch", "big") & 0x7FFF_FFFF_FFFF_FFFF

_PG_UPSERT = """\
INSERT INTO {table} AS r (ip, expires, last_user, service, last_login, relaywatch_host)
SELECT * FROM unnest(%s::text[], %s::timestamptz[], %s::text[], %s::text[], %s::timestamptz[], %s::text[])
    AS n(ip, expires, last_user, service, last_login, relaywatch_host)
ORDER BY ip
ON CONFLICT (ip) DO UPDATE SET
    last_user = CASE WHEN excluded.last_login >= r.last_login THEN excluded.last_user ELSE r.last_user END,
    service = CASE WHEN excluded.last_login >= r.last_login THEN excluded.service ELSE r.service END,
    relaywatch_host = CASE WHEN excluded.last_login >= r.last_login
                           THEN excluded.relaywatch_host ELSE r.relaywatch_host END,
    last_login = GREATEST(r.last_login, excluded.last_login),
    expires = GREATEST(r.expires, excluded.expires)"""


def pg_ddl() -> tuple[str, ...]:
    """The PostgreSQL DDL (``{table}`` and ``{index}`` left for ``psycopg.sql`` to fill in)."""
    return (
        """CREATE TABLE IF NOT EXISTS {table} (
    ip              text PRIMARY KEY,        -- the address as relaywatch prints it
    expires         timestamptz NOT NULL,    -- the grant ends (latest of all instances)
    last_user       text NOT NULL,
    service         text NOT NULL,           -- imap-login, pop3-login
    last_login      timestamptz NOT NULL,
    relaywatch_host text NOT NULL            -- which relaywatch wrote the latest login
)""",
        "CREATE INDEX IF NOT EXISTS {index} ON {table} (expires)",
    )


# --------------------------------------------------------------------------- MariaDB / MySQL

class _My:
    """MariaDB 10.6+ / MySQL 8 through PyMySQL.

    The times are UTC ``DATETIME(3)`` (a ``TIMESTAMP`` column ends in 2038 and, in
    MariaDB 10.6, updates itself on every change unless told otherwise); every statement
    and Postfix's query compare with ``UTC_TIMESTAMP(3)``, whatever the session's zone.
    READ COMMITTED: no gap locks, so fewer deadlocks between instances.
    """

    def __init__(self) -> None:
        self.pymysql: Any = importlib.import_module("pymysql")

    def connect(self, target: SqlTarget, password: str | None) -> Any:
        args: dict[str, Any] = {
            "user": target.user, "database": target.dbname, "charset": "utf8mb4", "autocommit": False,
            "connect_timeout": CONNECT_TIMEOUT, "read_timeout": STATEMENT_TIMEOUT * 3,
            "write_timeout": STATEMENT_TIMEOUT * 3,
        }
        if target.hosts:
            host, port = target.hosts[0]
            args.update(host=host, port=port or DEFAULT_PORTS["mysql"])
        for key, value in target.params:
            args[key] = int(value) if key == "connect_timeout" else (
                value.lower() in ("1", "true", "yes") if key.startswith("ssl_verify") else value)
        if password is not None:
            args["password"] = password
        conn = self.pymysql.connect(**args)
        with conn.cursor() as cur:
            cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            cur.execute("SET SESSION innodb_lock_wait_timeout = %s", (STATEMENT_TIMEOUT,))
        return conn

    def ensure_table(self, conn: Any, table: str) -> None:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM information_schema.tables WHERE table_schema = DATABASE() "
                        "AND table_name = %s", (table,))
            if cur.fetchone() is None:
                cur.execute(my_ddl(table))  # IF NOT EXISTS: a concurrent start is a warning
        conn.commit()

    def delete(self, cur: Any, table: str, ips: Sequence[str], early: bool = False) -> int:
        condition = "" if early else " AND expires <= UTC_TIMESTAMP(3)"
        cur.execute(f"DELETE FROM {quoted('mysql', table)} WHERE ip IN %s" + condition, (tuple(ips),))
        return 1

    def upsert(self, cur: Any, table: str, rows: Sequence[tuple[Any, ...]]) -> int:
        # PyMySQL sends these rows as multi-row INSERTs of up to ~1 MB each.
        cur.executemany(_MY_UPSERT.format(table=quoted("mysql", table)), rows)
        return max(1, -(-len(rows) * 120 // 1_000_000))

    def sweep(self, cur: Any, table: str) -> int:
        cur.execute(f"DELETE FROM {quoted('mysql', table)} WHERE expires <= UTC_TIMESTAMP(3)")
        return 1

    def when(self, seconds: float) -> datetime:
        return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)

    def deadlock(self, error: BaseException) -> bool:
        args: tuple[Any, ...] = getattr(error, "args", ())
        return bool(args) and args[0] in (1213, 1205)  # ER_LOCK_DEADLOCK, ER_LOCK_WAIT_TIMEOUT


# The assignments run left to right and each sees the ones before it: the columns that
# follow the latest login are set while last_login still holds the old value.
_MY_UPSERT = """\
INSERT INTO {table} (ip, expires, last_user, service, last_login, relaywatch_host)
VALUES (%s, %s, %s, %s, %s, %s)
ON DUPLICATE KEY UPDATE
    last_user = IF(VALUES(last_login) >= last_login, VALUES(last_user), last_user),
    service = IF(VALUES(last_login) >= last_login, VALUES(service), service),
    relaywatch_host = IF(VALUES(last_login) >= last_login, VALUES(relaywatch_host), relaywatch_host),
    last_login = GREATEST(last_login, VALUES(last_login)),
    expires = GREATEST(expires, VALUES(expires))"""


def my_ddl(table: str) -> str:
    """The MariaDB/MySQL DDL for ``table`` (checked, quoted)."""
    name = quoted("mysql", table)
    return f"""CREATE TABLE IF NOT EXISTS {name} (
    ip              VARCHAR(64) NOT NULL PRIMARY KEY,   -- the address as relaywatch prints it
    expires         DATETIME(3) NOT NULL,               -- UTC; the latest of all instances
    last_user       TEXT NOT NULL,
    service         VARCHAR(64) NOT NULL,
    last_login      DATETIME(3) NOT NULL,               -- UTC
    relaywatch_host VARCHAR(255) NOT NULL,
    KEY {quoted('mysql', table + '_expires_idx')} (expires)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"""


# --------------------------------------------------------------------------- opening

def _driver(spec: str, engine: str) -> None:
    module, install = DRIVERS[engine]
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise SinkError(spec, f"needs {install} ({_one_line(exc)})", retryable=False) from None


def read_password_file(path: str) -> str:
    """The first line of ``path``, if only its owner (us) can read it.

    Raises:
        SinkError: not retryable: missing, not a regular file, a link, someone else's, or
            readable by group or others.
    """
    where = f"--sql-password-file {path}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise SinkError(where, f"cannot open ({exc.strerror}); a symbolic link is not followed",
                        retryable=False) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SinkError(where, "not a regular file", retryable=False)
        if st.st_uid != os.geteuid():
            raise SinkError(where, f"owned by uid {st.st_uid}, not by relaywatch's user", retryable=False)
        if st.st_mode & 0o077:
            raise SinkError(where, f"mode {stat.S_IMODE(st.st_mode):04o}: others can read it; "
                            "chmod 600 it", retryable=False)
        data = os.read(fd, PASSWORD_FILE_MAX + 1)
    finally:
        os.close(fd)
    if len(data) > PASSWORD_FILE_MAX:
        raise SinkError(where, f"more than {PASSWORD_FILE_MAX} bytes; expected the password on one line",
                        retryable=False)
    return data.decode("utf-8", "replace").splitlines()[0] if data.strip() else ""


def _settled(kind: str, name: str, options: SinkOptions) -> tuple[SqlTarget, str, str | None]:
    spec = f"{kind}:{name}"
    try:
        target = parse(spec)
        table = check_table(options.sql_table)
    except ValueError as exc:
        raise SinkError(spec, str(exc), retryable=False) from None
    _driver(spec, target.engine)
    password = read_password_file(options.sql_password_file) if options.sql_password_file else None
    return target, table, password


def check(kind: str, name: str, options: SinkOptions) -> None:
    """What opening checks, without connecting: the URL, the table name, the driver, the password file."""
    _settled(kind, name, options)


def open_sql(kind: str, name: str, options: SinkOptions) -> SqlSink:
    """Registry entry for ``postgresql://...`` and ``mysql://...`` (the URL is the spec)."""
    target, table, password = _settled(kind, name, options)
    return SqlSink(target, table, password)
