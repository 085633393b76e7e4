"""Several servers, one table, for real: two ``relaywatch run`` -> PostgreSQL or MariaDB -> Postfix.

Each relaywatch follows a log of its own that the test writes Dovecot 2.3 login lines into
(as two IMAP/POP3 hosts would), and both publish into one table of the session's private
server (tests/sqllab.py). A private Postfix asks that table through ``proxy:pgsql:`` or
``proxy:mysql:``, with the very file ``relaywatch postfix-sql-map`` prints: it relays for
the clients of both instances, answers 554 (never 451: the query must not fail on the
host name or the shortened addresses Postfix also asks for) to a client nobody authorised,
and 554 again once the grants expired. Then the database is killed while logins arrive.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

import sqllab
from sqllab import my_lab, pg_lab  # noqa: F401  (session fixtures)
from tests.daemonlab import wait_for

START = "{stamp} master: Info: Dovecot v2.3.19.1 (9f57dc1bb0) starting up for imap, pop3\n"
LOGIN = ("{stamp} {service}-login: Info: Login: user=<{user}>, method=PLAIN, rip={ip}, lip=127.0.0.1, "
         "mpid=42, session=<abcdefgh>\n")
#: Quotes, backslashes and SQL: stored verbatim, never run.
HOSTILE = "o'; DROP TABLE relay_clients; -- \\x \"y\""


def stamp() -> str:
    return time.strftime("%b %d %H:%M:%S")


class Instance:
    """One ``relaywatch run`` following its own log file, publishing into ``url``'s table."""

    def __init__(self, tmp: Path, name: str, url: str, table: str, expire: str, *extra: str) -> None:
        self.dir = tmp / name
        self.dir.mkdir()
        self.log = self.dir / "dovecot.log"
        self.log.write_text(START.format(stamp=stamp()))
        self.err = self.dir / "relaywatch.err"
        args = [sys.executable, "-m", "logwatch", "run", "--log", str(self.log), "--sql", url, "--sql-table",
                table, "--sql-password-file", str(sqllab.password_file(self.dir)), "--never", "none",
                "--expire", expire, "--state", str(self.dir / "state.json"), *extra]
        with self.err.open("wb") as stderr:
            self.process = subprocess.Popen(args, stderr=stderr, stdin=subprocess.DEVNULL)
        wait_for(lambda: "sinks:" in self.err.read_text() or self.process.poll() is not None, f"{name} to start")
        assert self.process.poll() is None, self.err.read_text()

    def login(self, ip: str, user: str = "bob", service: str = "imap") -> None:
        with self.log.open("a") as f:
            f.write(LOGIN.format(stamp=stamp(), service=service, user=user, ip=ip))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            assert self.process.wait(timeout=60) == 0, self.err.read_text()


@pytest.fixture
def instances() -> Iterator[list[Instance]]:
    started: list[Instance] = []
    yield started
    for instance in started:
        instance.stop()


@pytest.fixture(params=["pgsql", "mysql"])
def lab(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue("pg_lab" if request.param == "pgsql" else "my_lab")


def table_rows(lab: Any, table: str) -> dict[str, tuple[Any, ...]]:
    try:
        return {r[0]: r[1:] for r in lab.query(f"SELECT ip, expires, last_user FROM {table}")}
    except Exception:  # not made yet
        return {}


def epoch(value: Any) -> float:
    return float((value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp())


def test_two_instances_one_table_and_postfix_relays_for_both(lab: Any, tmp_path: Path,
                                                              instances: list[Instance]) -> None:
    kind = "pgsql" if isinstance(lab, sqllab.PgLab) else "mysql"
    table = f"e2e_{uuid.uuid4().hex[:10]}"
    url = lab.url()
    printed = subprocess.run([sys.executable, "-m", "logwatch", "postfix-sql-map", "--sql", url, "--sql-table", table],
                             capture_output=True, text=True, check=True).stdout
    assert "\npassword =\n" in printed and "expires > " in printed
    postfix = sqllab.start_postfix({"sql": (kind, printed.replace("\npassword =\n",
                                                                   f"\npassword = {sqllab.PASSWORD}\n"))})
    try:
        a = Instance(tmp_path, "a", url, table, "12s")
        instances.append(a)
        b = Instance(tmp_path, "b", url, table, "12s")
        instances.append(b)
        a.login("127.0.0.5")
        b.login("127.0.0.6", HOSTILE, "pop3")
        wait_for(lambda: set(table_rows(lab, table)) == {"127.0.0.5", "127.0.0.6"}, "both rows", 30)
        assert table_rows(lab, table)["127.0.0.6"][1] == HOSTILE
        for source in ("127.0.0.5", "127.0.0.6"):
            code, text = postfix.probe("sql", source)
            assert code == 250, (source, code, text, postfix.log()[-2000:])
        # 127.0.0.7 is asked as "unknown", 127.0.0.7, then 127.0.0, 127.0 and 127: prefixes
        # of both rows' keys. Each must find nothing, without an error (which would be 451).
        for source in ("127.0.0.7", "127.0.0.50"):
            code, text = postfix.probe("sql", source)
            assert (code, "Relay access denied" in text) == (554, True), (source, code, text, postfix.log()[-2000:])
        wait_for(lambda: not table_rows(lab, table), "the expired rows to be deleted", 40)
        for source in ("127.0.0.5", "127.0.0.6"):
            code, text = postfix.probe("sql", source)
            assert code == 554, (source, code, text)
        assert " 451 " not in postfix.log() and "lookup error" not in postfix.log(), postfix.log()[-3000:]
    finally:
        for instance in instances:
            instance.stop()
        postfix.stop()


def test_the_database_killed_while_logins_arrive_loses_no_grant(pg_lab: sqllab.PgLab, tmp_path: Path,  # noqa: F811
                                                                 instances: list[Instance]) -> None:
    table = f"kill_{uuid.uuid4().hex[:10]}"
    a = Instance(tmp_path, "a", pg_lab.url(), table, "1h")
    instances.append(a)
    b = Instance(tmp_path, "b", pg_lab.url(), table, "10m")
    instances.append(b)
    a.login("127.0.0.9")
    wait_for(lambda: "127.0.0.9" in table_rows(pg_lab, table), "A's row")
    longest = epoch(table_rows(pg_lab, table)["127.0.0.9"][0])
    time.sleep(1.1)
    b.login("127.0.0.9", "carol")  # B's later login, shorter --expire
    wait_for(lambda: table_rows(pg_lab, table)["127.0.0.9"][1] == "carol", "B's renewal")
    assert epoch(table_rows(pg_lab, table)["127.0.0.9"][0]) == longest  # not shortened

    wanted = [f"127.0.1.{n}" for n in range(1, 41)]

    def arrive() -> None:
        for n, ip in enumerate(wanted):  # a user each: relaywatch caps the addresses per user
            a.login(ip, f"user{n}")
            b.login(ip, f"user{n}")
            time.sleep(0.1)

    writer = threading.Thread(target=arrive)
    writer.start()
    time.sleep(0.5)
    pg_lab.kill()
    time.sleep(1.5)
    pg_lab.start()
    writer.join()
    wait_for(lambda: set(wanted) <= set(table_rows(pg_lab, table)), "every grant after the restart", 60)
    rows = table_rows(pg_lab, table)
    assert epoch(rows["127.0.0.9"][0]) == longest
    for ip in wanted:  # A's hour, whoever wrote last
        assert epoch(rows[ip][0]) > time.time() + 1800, ip
    err = a.err.read_text()
    assert "cannot" in err and "working again" in err, err[-3000:]


def test_a_database_that_hangs_never_holds_the_loop(lab: Any, tmp_path: Path, instances: list[Instance]) -> None:
    """Issue 13 left this: commits ran on the loop, so a database that stopped answering (a
    frozen host: connections open, nothing said) held relaywatch for the driver's timeouts,
    the relay-ctrl directory too. Now the SQL sink has a thread of its own: while the server
    is frozen, relay-ctrl gets each login at once and the status says the SQL sink is
    behind; thawed, every row arrives."""
    table = f"hang_{uuid.uuid4().hex[:8]}"
    allow = tmp_path / "allow"
    allow.mkdir()
    one = Instance(tmp_path, "one", lab.url(), table, "10m", "--relay-ctrl-dir", str(allow))
    instances.append(one)
    one.login("192.0.2.40")
    wait_for(lambda: "192.0.2.40" in table_rows(lab, table), "the first row")
    lab.hang(True)
    try:
        for n in range(1, 6):
            one.login(f"198.51.100.{n}")
            wait_for(lambda: (allow / f"198.51.100.{n}").exists(), f"198.51.100.{n} in relay-ctrl while the "
                     "database hangs", deadline=3)
        status = one.dir / "status.json"

        def sql_stuck() -> bool:
            import json

            sinks = json.loads(status.read_text())["sinks"]
            sql = [s for s in sinks if not s["spec"].startswith("relayctrl:")]
            return bool(sql) and not sql[0]["ok"] and sql[0]["backlog"] >= 5
        wait_for(sql_stuck, "the status to say the SQL sink is behind", deadline=30)
    finally:
        lab.hang(False)
    wait_for(lambda: {f"198.51.100.{n}" for n in range(1, 6)} <= set(table_rows(lab, table)),
             "every row once the database answers again", deadline=60)
    one.stop()
