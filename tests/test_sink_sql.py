"""Tests for sinks/sql.py and sinks/sqlurl.py: the statements against a real PostgreSQL and MariaDB.

Each test gets a table of its own in the session's private servers (tests/sqllab.py), so
the tests share two servers and never each other's rows.
"""

from __future__ import annotations

import logging
import random
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import sqllab
from logwatch.model import DROP, PUT, Change, Grant
from logwatch.reporter import Reporter
from logwatch.sinks import SinkError, SinkOptions, check_sink, open_sink
from logwatch.sinks import sqlurl
from logwatch.sinks.outlet import Outlet
from logwatch.sinks.sql import SqlSink
from sqllab import my_lab, pg_lab  # noqa: F401  (session fixtures)

HOSTILE = "o'; DROP TABLE relay_clients; -- \\' \\\" \"x\" `y` %s %(a)s ünï"


@pytest.fixture(params=["pgsql", "mysql"])
def lab(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue("pg_lab" if request.param == "pgsql" else "my_lab")


@pytest.fixture
def table() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


def sink(lab: Any, table: str, tmp_path: Path, host: str = "a", url: str | None = None) -> SqlSink:
    pw = sqllab.password_file(tmp_path)
    opened = open_sink(url or lab.url(), SinkOptions(sql_table=table, sql_password_file=str(pw)))
    assert isinstance(opened, SqlSink)
    opened.host = host
    return opened


def grant(ip: str, user: str, last: float, until: float, service: str = "imap-login") -> Grant:
    return Grant(ip, user, service, last, last, 1, until)


def rows(lab: Any, table: str) -> dict[str, tuple[Any, ...]]:
    return {r[0]: r[1:] for r in lab.query(f"SELECT ip, expires, last_user, service, relaywatch_host FROM {table}")}


def epoch(value: Any) -> float:
    from datetime import UTC

    return float((value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp())


# --------------------------------------------------------------------------- pure: sqlurl

@pytest.mark.parametrize("url, hosts, dbname", [
    ("postgresql://rw@db1:5433,db2/mail?target_session_attrs=read-write", (("db1", 5433), ("db2", None)), "mail"),
    ("postgres://rw@[2001:db8::1]:5432/mail?sslmode=verify-full", (("2001:db8::1", 5432),), "mail"),
    ("postgresql:///mail?host=/run/postgresql&service=relay", (("/run/postgresql", None),), "mail"),
    ("mysql://rw@127.0.0.1/mail?ssl_ca=/etc/ca.pem&read_default_file=/etc/rw.cnf", (("127.0.0.1", None),), "mail"),
])
def test_urls_libpq_and_pymysql_read(url: str, hosts: tuple[Any, ...], dbname: str) -> None:
    target = sqlurl.parse(url)
    assert (target.hosts, target.dbname) == (hosts, dbname)


@pytest.mark.parametrize("url, message", [
    ("postgresql://rw:secret@db/mail", "a password in the URL would show in ps"),
    ("postgresql://rw@db/mail?password=x", "password= would show in ps"),
    ("mysql://rw@db/mail?init_command=DROP", "unknown parameter 'init_command'"),
    ("mysql://rw@a,b/mail", "one host only for mysql://"),
    ("sqlite:///x.db", "expected postgresql://USER@HOST[:PORT]/DB or mysql://"),
    ("postgresql://rw@db:99999/mail", "port '99999' is not a number from 1 to 65535"),
    ("postgresql://rw@db", "no database"),
])
def test_urls_that_cannot_be_meant_are_refused_in_one_line(url: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        sqlurl.parse(url)
    assert message in str(caught.value) and str(caught.value).startswith(f"--sql {url}: ")


@pytest.mark.parametrize("name", ["relay clients", 'x"; DROP TABLE y; --', "t`x", "1abc", "", "a" * 49, "s.t"])
def test_a_table_name_is_a_plain_identifier(name: str) -> None:
    with pytest.raises(ValueError, match="--sql-table"):
        sqlurl.check_table(name)


def test_password_file_must_be_the_owners_alone(tmp_path: Path) -> None:
    pw = sqllab.password_file(tmp_path)
    pw.chmod(0o640)
    with pytest.raises(SinkError) as caught:
        check_sink("postgresql://rw@127.0.0.1/x", SinkOptions(sql_password_file=str(pw)))
    assert not caught.value.retryable and "mode 0640: others can read it; chmod 600 it" in str(caught.value)
    link = tmp_path / "link"
    link.symlink_to(pw)
    pw.chmod(0o600)
    with pytest.raises(SinkError, match="a symbolic link is not followed"):
        check_sink("postgresql://rw@127.0.0.1/x", SinkOptions(sql_password_file=str(link)))


def test_a_missing_driver_is_one_line_naming_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pymysql", None)  # import pymysql now raises ImportError
    with pytest.raises(SinkError) as caught:
        check_sink("mysql://rw@127.0.0.1/x")
    assert "needs PyMySQL: pip install 'relaywatch[mysql]'" in str(caught.value) and "\n" not in str(caught.value)
    assert not caught.value.retryable


# --------------------------------------------------------------------------- the statements, for real

def test_a_renewal_never_shortens_a_row_and_the_latest_login_names_the_user(lab: Any, table: str,
                                                                            tmp_path: Path) -> None:
    a, b = sink(lab, table, tmp_path, "a"), sink(lab, table, tmp_path, "b")
    now = time.time()
    a.put(grant("192.0.2.1", "alice", now, now + 3600))
    a.commit()
    b.put(grant("192.0.2.1", HOSTILE, now + 5, now + 600, "pop3-login"))  # B's shorter --expire
    b.commit()
    expires, user, service, host = rows(lab, table)["192.0.2.1"]
    assert abs(epoch(expires) - (now + 3600)) < 0.002  # A's extension stands
    assert (user, service, host) == (HOSTILE, "pop3-login", "b")  # stored verbatim, the latest login
    a.put(grant("192.0.2.1", "alice", now - 60, now + 7200))  # an older login read late: longer, not newer
    a.commit()
    expires, user, _, host = rows(lab, table)["192.0.2.1"]
    assert abs(epoch(expires) - (now + 7200)) < 0.002 and (user, host) == (HOSTILE, "b")
    assert a.statements == 2 and a.transactions == 2


def test_drop_deletes_only_a_row_that_is_really_expired(lab: Any, table: str, tmp_path: Path) -> None:
    a, b = sink(lab, table, tmp_path, "a"), sink(lab, table, tmp_path, "b")
    now = time.time()
    a.put(grant("192.0.2.1", "alice", now - 700, now - 100))  # expired
    a.put(grant("192.0.2.2", "bob", now - 700, now - 100))
    a.commit()
    b.put(grant("192.0.2.2", "bob", now, now + 600))  # B renewed it
    b.commit()
    a.drop("192.0.2.1")
    a.drop("192.0.2.2")  # A's own grant expired, but B's stands
    a.drop("192.0.2.99")  # never there: nothing
    a.commit()
    assert set(rows(lab, table)) == {"192.0.2.2"}


def test_an_early_withdrawal_deletes_the_row_whatever_its_expiry(lab: Any, table: str, tmp_path: Path) -> None:
    """A revocation (or the cap, or a narrower --never) ends a grant before its time: the
    shared table must not keep it until it expires (a drop of an expired grant would)."""
    a = sink(lab, table, tmp_path, "a")
    now = time.time()
    a.put(grant("192.0.2.1", "alice", now, now + 600))
    a.put(grant("192.0.2.2", "bob", now, now + 600))
    a.commit()
    a.drop("192.0.2.1", early=True)
    a.drop("192.0.2.2")  # an expiry that is not due in the table: the row stays
    a.commit()
    assert set(rows(lab, table)) == {"192.0.2.2"}
    outlet = Outlet(a, Reporter(logging.getLogger("test")))
    outlet.send([Change(DROP, grant("192.0.2.2", "bob", now, now + 600), "revoked")], now)
    assert set(rows(lab, table)) == set()


def test_concurrent_instances_lose_no_extension_and_do_not_fail_on_deadlocks(lab: Any, table: str,
                                                                            tmp_path: Path) -> None:
    pool = [f"198.51.100.{n}" for n in range(60)]
    best: dict[str, float] = {}
    lock = threading.Lock()
    errors: list[BaseException] = []
    base = time.time()

    def writer(name: str, seed: int) -> None:
        rnd = random.Random(seed)
        s = sink(lab, table, tmp_path, name)
        try:
            for _ in range(40):
                batch = rnd.sample(pool, 30)
                for ip in batch:
                    until = base + rnd.uniform(60, 3600)
                    s.put(grant(ip, name, base, until))
                    with lock:
                        best[ip] = max(best.get(ip, 0.0), until)
                s.commit()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            s.close()

    threads = [threading.Thread(target=writer, args=(f"w{n}", n)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    got = {ip: epoch(r[0]) for ip, r in rows(lab, table).items()}
    assert set(got) == set(best)
    assert all(abs(got[ip] - best[ip]) < 0.002 for ip in best)


def test_a_dropped_table_is_retryable_and_made_again(lab: Any, table: str, tmp_path: Path) -> None:
    a = sink(lab, table, tmp_path)
    now = time.time()
    a.put(grant("192.0.2.1", "alice", now, now + 600))
    a.commit()
    lab.query(f"DROP TABLE {table}")
    a.put(grant("192.0.2.2", "bob", now, now + 600))
    with pytest.raises(SinkError) as caught:
        a.commit()
    assert caught.value.retryable and caught.value.resync
    assert not a.health().ok and a.health().error.startswith(a.spec) and "\n" not in a.health().error
    a.put(grant("192.0.2.2", "bob", now, now + 600))
    a.commit()
    assert set(rows(lab, table)) == {"192.0.2.2"} and a.health().ok


def test_the_outlet_republishes_the_whole_ledger_once_the_database_is_back(lab: Any, table: str,
                                                                           tmp_path: Path) -> None:
    a = sink(lab, table, tmp_path)
    now = time.time()
    ledger = {ip: grant(ip, "u", now, now + 600) for ip in ("192.0.2.1", "192.0.2.2", "192.0.2.3")}
    outlet = Outlet(a, Reporter(logging.getLogger("test")), snapshot=lambda: list(ledger.values()))
    outlet.send([Change(PUT, g, "login") for g in ledger.values()], now)
    lab.query(f"DROP TABLE {table}")  # every row lost
    gone = ledger.pop("192.0.2.3")
    outlet.send([Change(DROP, gone, "expired")], now + 1)
    assert outlet.backlog and not outlet.health().ok
    outlet.send([], outlet.retry_at)
    assert set(rows(lab, table)) == {"192.0.2.1", "192.0.2.2"} and outlet.health().ok


def test_the_database_down_at_start_is_not_an_error(lab: Any, table: str, tmp_path: Path) -> None:
    dead = lab.url().replace(f":{lab.port}/", f":{sqllab.postfixlab.free_port()}/")
    a = sink(lab, table, tmp_path, url=dead)
    assert not a.health().ok and "cannot connect" in a.health().error
    a.put(grant("192.0.2.1", "alice", time.time(), time.time() + 600))
    with pytest.raises(SinkError) as caught:
        a.commit()
    assert caught.value.retryable


# --------------------------------------------------------------------------- PostgreSQL only

def test_a_libpq_multi_host_url_finds_the_server_that_answers(pg_lab: sqllab.PgLab, table: str,  # noqa: F811
                                                              tmp_path: Path) -> None:
    dead = sqllab.postfixlab.free_port()
    url = (f"postgresql://{sqllab.USER}@127.0.0.1:{dead},127.0.0.1:{pg_lab.port}/{sqllab.DB}"
           "?target_session_attrs=read-write&connect_timeout=2")
    a = sink(pg_lab, table, tmp_path, url=url)
    a.put(grant("192.0.2.1", "alice", time.time(), time.time() + 600))
    a.commit()
    assert set(rows(pg_lab, table)) == {"192.0.2.1"}


def test_a_read_only_server_and_a_lost_connection_are_retryable(pg_lab: sqllab.PgLab, table: str,  # noqa: F811
                                                               tmp_path: Path) -> None:
    a = sink(pg_lab, table, tmp_path)
    now = time.time()
    a.put(grant("192.0.2.1", "alice", now, now + 600))
    a.commit()
    pg_lab.query(f"ALTER ROLE {sqllab.USER} SET default_transaction_read_only = on")  # as a standby answers
    try:
        pg_lab.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (sqllab.USER,))
        for _ in range(2):  # the connection that was cut, then the read-only one
            a.put(grant("192.0.2.2", "bob", now, now + 600))
            with pytest.raises(SinkError) as caught:
                a.commit()
            assert caught.value.retryable and caught.value.resync
        assert "read-only" in a.health().error
    finally:
        pg_lab.query(f"ALTER ROLE {sqllab.USER} RESET default_transaction_read_only")
    a.put(grant("192.0.2.2", "bob", now, now + 600))
    a.commit()
    assert set(rows(pg_lab, table)) == {"192.0.2.1", "192.0.2.2"}
