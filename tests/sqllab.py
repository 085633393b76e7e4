"""Private database servers for the SQL sink's tests: a PostgreSQL cluster and a MariaDB, on loopback.

Never the system's: each lives in a temp directory of its own (data, socket, log), listens
on 127.0.0.1 on a free port, and is stopped and removed at the end of the session. Both
check passwords on TCP, as a real deployment does: the tests' relaywatch and Postfix log in
as ``relaywatch`` with ``PASSWORD``; the lab's own administration goes through the private
Unix socket as the superuser (PostgreSQL ``trust`` on the socket, MariaDB ``unix_socket``
for root).

Each lab can be killed (SIGKILL, as a crash) and started again on the same port and data,
for the outage tests. A private Postfix whose smtpd asks an SQL table is here too
(``start_postfix``): ``postfixlab.start`` builds its maps with postmap, which an SQL table
has none of.

Why root: PostgreSQL's ``initdb`` refuses root, so the cluster runs as the ``postgres``
user (``runuser``) in a directory it owns; ``mariadbd`` as root needs ``--user=mysql``; and
Postfix's master must start as root.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import postfixlab

PASSWORD = "s3cret 'pass\" \\word"
DB = "relay"
USER = "relaywatch"


def _need(problems: list[str]) -> None:
    if problems:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the SQL lab: {'; '.join(problems)}")
        pytest.skip("; ".join(problems))


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def _wait(check: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


# --------------------------------------------------------------------------- PostgreSQL

@dataclass
class PgLab:
    """A running private PostgreSQL cluster."""

    root: Path
    bin: Path
    port: int
    user: str

    @property
    def sock(self) -> Path:
        return self.root / "sock"

    def url(self, *, extra: str = "") -> str:
        """The relaywatch user's URL (no password: that comes from a file)."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{DB}{extra}"

    def admin(self) -> Any:
        """A superuser connection through the private socket (autocommit)."""
        import psycopg

        return psycopg.connect(host=str(self.sock), port=self.port, user="postgres", dbname=DB, autocommit=True)

    def query(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        with self.admin() as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def _ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["runuser", "-u", self.user, "--", str(self.bin / "pg_ctl"), "-D",
                               str(self.root / "data"), *args], capture_output=True, text=True, timeout=60)

    def start(self) -> None:
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.sock} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=60")
        done = self._ctl("-o", options, "-l", str(self.root / "server.log"), "-w", "-t", "30", "start")
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl start: {done.stderr}\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL the postmaster and its children, as a crash would."""
        pid_file = self.root / "data" / "postmaster.pid"
        pid = int(pid_file.read_text().split()[0])
        found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        pids = [pid, *map(int, found)]  # the backends too: a new postmaster needs their shared memory gone
        for each in pids:
            try:
                os.kill(each, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _wait(lambda: not any(_alive(each) for each in pids), "the server's processes to die")
        # A postmaster nobody reaps yet stays a zombie, which the next one's stale-lock check
        # takes for a live server: remove its lock files (the data directory's and the
        # socket's), as an admin does after a crash.
        pid_file.unlink(missing_ok=True)
        (self.sock / f".s.PGSQL.{self.port}.lock").unlink(missing_ok=True)

    def stop(self) -> None:
        self._ctl("-m", "immediate", "stop")

    def processes(self) -> list[int]:
        """The postmaster and its children (the backends serving each connection)."""
        pid = int((self.root / "data" / "postmaster.pid").read_text().split()[0])
        found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        return [pid, *map(int, found)]

    def hang(self, on: bool) -> None:
        """Freeze every process of the server (SIGSTOP), as a hung host or a failover in
        progress looks to a client: connections stay open, nothing answers; or thaw it."""
        for pid in self.processes():
            os.kill(pid, signal.SIGSTOP if on else signal.SIGCONT)

    def log(self) -> str:
        try:
            return (self.root / "server.log").read_text(errors="replace")[-3000:]
        except FileNotFoundError:
            return ""


def pg_missing() -> list[str]:
    problems = []
    if _pg_bin() is None:
        problems.append("PostgreSQL not installed (apt install postgresql)")
    if os.geteuid() != 0:
        problems.append("not root (initdb must run as the postgres user)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        problems.append("psycopg not installed (pip install -e '.[dev]')")
    return problems


def start_pg() -> PgLab:
    bin_dir = _pg_bin()
    assert bin_dir is not None
    user = "postgres"
    try:
        pwd.getpwnam(user)
    except KeyError:
        user = "nobody"
    root = Path(tempfile.mkdtemp(prefix="relaywatch-pglab-"))
    info = pwd.getpwnam(user)
    os.chown(root, info.pw_uid, info.pw_gid)
    os.chmod(root, 0o711)
    (root / "sock").mkdir()
    os.chown(root / "sock", info.pw_uid, info.pw_gid)
    pwfile = root / "pw"
    pwfile.write_text("postgres-admin\n")
    os.chown(pwfile, info.pw_uid, info.pw_gid)
    done = subprocess.run(["runuser", "-u", user, "--", str(bin_dir / "initdb"), "-D", str(root / "data"),
                           "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256",
                           f"--pwfile={pwfile}", "--no-sync", "-E", "UTF8", "--locale=C"],
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"initdb: {done.stderr}")
    lab = PgLab(root=root, bin=bin_dir, port=postfixlab.free_port(), user=user)
    lab.start()
    import psycopg

    with psycopg.connect(host=str(lab.sock), port=lab.port, user="postgres", dbname="postgres",
                         autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {USER} LOGIN PASSWORD %s".replace("%s", _pg_literal(PASSWORD)))
        conn.execute(f"CREATE DATABASE {DB} OWNER {USER}")
    return lab


def _pg_literal(text: str) -> str:
    """A PostgreSQL string literal (DDL takes no parameters; only the lab's own constant goes here)."""
    return "'" + text.replace("'", "''") + "'"


# --------------------------------------------------------------------------- MariaDB

@dataclass
class MyLab:
    """A running private MariaDB."""

    root: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def sock(self) -> Path:
        return self.root / "mysqld.sock"

    def url(self, *, extra: str = "") -> str:
        return f"mysql://{USER}@127.0.0.1:{self.port}/{DB}{extra}"

    def admin(self) -> Any:
        import pymysql

        return pymysql.connect(unix_socket=str(self.sock), user="root", database=DB, autocommit=True)

    def query(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        conn = self.admin()
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return list(cur.fetchall())
        finally:
            conn.close()

    def start(self) -> None:
        args = [_which_maria("mariadbd"), "--no-defaults", f"--datadir={self.root / 'data'}",
                f"--socket={self.sock}", f"--port={self.port}", "--bind-address=127.0.0.1", "--user=mysql",
                f"--pid-file={self.root / 'mysqld.pid'}", f"--log-error={self.root / 'error.log'}",
                "--skip-log-bin", "--innodb-buffer-pool-size=128M", "--innodb-flush-log-at-trx-commit=2",
                "--skip-name-resolve", "--max-connections=60"]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)

        def up() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"mariadbd exited: {self.log()}")
            self.admin_root().close()
            return True

        _wait(up, "MariaDB to start", 60)

    def admin_root(self) -> Any:
        import pymysql

        return pymysql.connect(unix_socket=str(self.sock), user="root", autocommit=True)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=30)

    def hang(self, on: bool) -> None:
        """Freeze the server (SIGSTOP), or thaw it (see ``PgLab.hang``)."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP if on else signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        try:
            return (self.root / "error.log").read_text(errors="replace")[-3000:]
        except FileNotFoundError:
            return ""


def _which_maria(name: str) -> str:
    for candidate in (name, name.replace("mariadbd", "mysqld")):
        found = shutil.which(candidate, path=postfixlab.SBIN_PATH)
        if found:
            return found
    raise RuntimeError(f"{name} not installed")


def my_missing() -> list[str]:
    problems = []
    if shutil.which("mariadbd", path=postfixlab.SBIN_PATH) is None or shutil.which("mariadb-install-db") is None:
        problems.append("MariaDB not installed (apt install mariadb-server)")
    if os.geteuid() != 0:
        problems.append("not root (mariadbd runs as the mysql user)")
    try:
        import pymysql  # noqa: F401
    except ImportError:
        problems.append("PyMySQL not installed (pip install -e '.[dev]')")
    return problems


def start_my() -> MyLab:
    root = Path(tempfile.mkdtemp(prefix="relaywatch-mylab-"))
    info = pwd.getpwnam("mysql")
    os.chmod(root, 0o711)
    (root / "data").mkdir()
    for path in (root, root / "data"):
        os.chown(path, info.pw_uid, info.pw_gid)
    done = subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={root / 'data'}", "--user=mysql",
                           "--auth-root-authentication-method=socket", "--skip-test-db"],
                          capture_output=True, text=True, timeout=180)
    if done.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"mariadb-install-db: {done.stdout[-2000:]} {done.stderr[-2000:]}")
    lab = MyLab(root=root, port=postfixlab.free_port())
    lab.start()
    conn = lab.admin_root()
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {DB}")
            cur.execute(f"CREATE USER '{USER}'@'127.0.0.1' IDENTIFIED BY %s", (PASSWORD,))
            cur.execute(f"GRANT ALL ON {DB}.* TO '{USER}'@'127.0.0.1'")
    finally:
        conn.close()
    return lab


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def pg_lab() -> Iterator[PgLab]:
    _need(pg_missing())
    lab = start_pg()
    try:
        yield lab
    finally:
        lab.stop()
        shutil.rmtree(lab.root, ignore_errors=True)


@pytest.fixture(scope="session")
def my_lab() -> Iterator[MyLab]:
    _need(my_missing())
    lab = start_my()
    try:
        yield lab
    finally:
        lab.stop()
        shutil.rmtree(lab.root, ignore_errors=True)


def password_file(directory: Path) -> Path:
    """``PASSWORD`` in a file only its owner can read, as ``--sql-password-file`` wants."""
    path = directory / "sql-password"
    # Written aside and renamed: writer threads of one test each ask for it, and a file
    # truncated under another's read gave "fe_sendauth: no password supplied" now and then.
    temp = directory / f".sql-password.{threading.get_ident()}"
    temp.write_text(PASSWORD + "\n")
    temp.chmod(0o600)
    os.replace(temp, path)
    return path


# --------------------------------------------------------------------------- Postfix

def start_postfix(files: dict[str, tuple[str, str]]) -> postfixlab.PostfixLab:
    """A private Postfix with one smtpd per ``name -> (pgsql|mysql, the table file's text)``.

    Each table file is written as ``etc/NAME.cf`` (mode 0640, group postfix: it holds a
    password) and each smtpd's relay restrictions are ``permit_mynetworks,
    check_client_access proxy:TYPE:etc/NAME.cf, reject_unauth_destination``;
    ``proxy_read_maps`` names the tables, as proxymap requires.
    """
    _need(postfixlab.missing())

    def write_tables(lab: postfixlab.PostfixLab) -> dict[str, str]:
        tables = {}
        for name, (kind, text) in files.items():
            path = lab.config_dir / f"{name}.cf"
            path.write_text(text)
            os.chown(path, 0, pwd.getpwnam("postfix").pw_gid)
            path.chmod(0o640)
            tables[name] = f"proxy:{kind}:{path}"
        return tables

    def proxied(tables: Mapping[str, str]) -> str:  # proxymap serves only the tables named here
        return ("# Replaces the default list, of which smtpd still needs the local recipients' table.\n"
                f"proxy_read_maps = proxy:unix:passwd.byname {' '.join(tables.values())}")

    return postfixlab.launch(write_tables, main_cf=proxied)
def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for a reaper counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return "\nState:\tZ" not in status
