"""Run a private Dovecot on loopback and log in to it for real, for the end-to-end tests.

Why a lab rather than sample lines: the pattern sets are proven on lines someone typed or
collected; only the real server says what Dovecot 2.3 writes for a login, a failure and an
aborted connection, byte for byte, in its own ``log_path`` file and through syslog.

What it touches: one directory it makes with ``tempfile.mkdtemp`` (config, passwd-file,
mail, ``base_dir``, ``state_dir``, logs) and two free ports on 127.0.0.1 and ::1. Nothing in
/etc/dovecot, /run/dovecot, /var/lib/dovecot or /dev/log: the config is written from
scratch (no ``!include``), and in syslog mode Dovecot runs in a private mount namespace
whose /dev/log leads to a private rsyslogd. On stop the logs and config are copied into the
``keep`` directory the test gives (pytest's ``tmp_path``), so a failure leaves evidence,
and the lab's own directory is removed.

Why not in ``tmp_path`` itself: Dovecot's unprivileged users (dovenull for the login
processes, dovecot for auth, the mail user) must traverse every parent of ``base_dir`` and
the mail homes, while pytest keeps /tmp/pytest-of-root at 0700 (and resets it at the start
of every session, so another engineer's pytest run would cut off a running lab). Unix
socket paths are also limited to 107 bytes, which pytest's long names can exceed.

Usage (or import the ``dovecot_lab`` fixture, which runs a test once per mode)::

    need_lab("syslog")                       # skip here, fail under CI=true
    with DovecotLab(tmp_path, log="syslog") as lab:
        ok = lab.login("imap", "alice", source="127.0.0.2")
        bad = lab.fail_login("pop3", HOSTILE_BRACKET, source="::1")
        gone = lab.abort("imap", source="127.0.0.3")
        print(ok.line)                       # the Login: line Dovecot wrote
    lines = lab.lines()                      # the whole log, read from the kept copy

Every client helper returns only when Dovecot has written the log line that ends the
action (polled against a deadline, never a fixed sleep), so log order is action order.

**Dovecot 2.4** (``version="2.4"``; the fixture runs every version and mode): Debian 12 has
only 2.3, so the lab runs Debian 13's Dovecot 2.4.1 from a minimal trixie root that
``debootstrap --variant=minbase --include=dovecot-imapd,dovecot-pop3d trixie`` makes once
(about a minute) and that is cached in ``/var/cache/relaywatch-roots/trixie-dovecot/HASH``
(``HASH``: of the debootstrap command, include list and suite; ``$RELAYWATCH_ROOTS`` moves
the cache). ``dovecot24_root`` builds it under an exclusive lock in ``HASH.partial`` and
renames it into place only once debootstrap succeeded and a marker is written, so a
half-built root is never used (it is removed and made again). Dovecot then runs in a
private mount namespace (``unshare -m``): the cached root is bind-mounted read-only onto
itself (no lab can change it), the lab's directory is bound onto its ``/mnt``, a small
tmpfs each on its ``/dev`` (the usual devices, and ``/dev/log`` in syslog mode) and
``/tmp``, a proc on ``/proc``, and Dovecot is started with ``chroot``. It writes its log
into ``/mnt/log`` inside the root, i.e. the lab's directory, where the tests and
relaywatch (outside) read it at ``lab.log_path``. Loopback only: the same network
namespace, the same two ports on 127.0.0.1 and ::1. The config is 2.4's syntax
(``dovecot_config_version``, ``passdb passwd-file { passwd_file_path }``, ``mail_driver``,
``auth_allow_cleartext``); everything else, the clients, the waits and the evidence kept,
is the same for both versions.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import imaplib
import ipaddress
import os
import poplib
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import Callable, Literal

import pytest

#: An account whose name forges the rest of a login line: a matcher that takes the first
#: ``rip=`` (or stops the user name at the first ``>``) would authorise 6.6.6.6.
HOSTILE_BRACKET = ">, method=plain, rip=6.6.6.6, lip=127.0.0.1, x=<"
#: An account whose name forges a ``rip=`` field without breaking out of ``user=<...>``.
HOSTILE_COMMA = "evil, rip=6.6.6.6"
#: The address the hostile names forge; no line of the lab may ever yield it.
FORGED_IP = "6.6.6.6"
#: A name no account has, which an unauthenticated client can send over SASL PLAIN
#: (which carries any byte but NUL), each part followed by a forged Login line: after
#: U+2028 (a line break to Python's ``str.splitlines``, which Dovecot 2.3.19 writes raw)
#: in Dovecot's file format, after CR LF in rsyslog's. Dovecot writes CR and LF as "?"
#: and cuts the name at about 80 characters, so only the first forgery reaches the log.
INJECTED = ("x\u2028Jan  1 00:00:00 imap-login: Info: Login: user=<y>, method=PLAIN, "
            "rip=6.6.6.6, lip=127.0.0.1\r\n2001-01-01T00:00:00.000000+00:00 forged "
            "dovecot: imap-login: Login: user=<y>, method=PLAIN, rip=6.6.6.6, lip=127.0.0.1")

#: name -> plaintext password. Test-only credentials on loopback.
USERS: dict[str, str] = {
    "alice": "alice-secret",
    "bob": "bob-secret",
    HOSTILE_BRACKET: "bracket-secret",
    HOSTILE_COMMA: "comma-secret",
}

LogMode = Literal["file", "syslog"]
Version = Literal["2.3", "2.4"]
#: The Dovecot versions the lab runs: the host's 2.3 (Debian 12), and 2.4 from a trixie root.
VERSIONS: tuple[Version, ...] = ("2.3", "2.4")
#: What a successful login's line says before ``user=<...>``: 2.4 renamed the message.
LOGIN_MESSAGE: dict[Version, str] = {"2.3": "Login:", "2.4": "Logged in:"}
Protocol = Literal["imap", "pop3"]
Action = Literal["login", "fail", "abort"]

#: Seconds any one wait may take (start, one log line, stop). Generous: a loaded 2-core
#: CI machine can be slow, and a deadline that is never reached costs nothing.
DEADLINE = 60.0
_POLL = 0.02


class LabError(RuntimeError):
    """The lab could not start, a line never came, or something outlived stop."""


@dataclass(frozen=True)
class Attempt:
    """One client action and the log line that ended it.

    Attributes:
        protocol: ``imap`` or ``pop3``.
        action: ``login`` (succeeded), ``fail`` (wrong password) or ``abort`` (closed
            without completing authentication).
        user: the name sent, or None when none was.
        source: the client's source address, as Dovecot logs it in ``rip=``.
        line: the login process's line for this action (``Login:``, ``auth failed``,
            ``no auth attempts``), as written, without the newline.
        answered: ``time.monotonic()`` when the server answered the authentication (or,
            for ``abort``, when the client closed): where a login-to-relay latency starts.
    """

    protocol: Protocol
    action: Action
    user: str | None
    source: str
    line: str
    answered: float


def problem(log: LogMode = "file", version: Version = "2.3") -> str | None:
    """Say why the lab cannot run here in this log mode and version, or None when it can.

    Why a string rather than a bool: ``need_lab`` turns it into a skip or, under CI, a
    failure, and either must say what is missing. For 2.4 this does not build the root
    (``need_lab`` does); it only says whether the tools to build and enter one are here.
    """
    if version not in VERSIONS:
        return f"the lab runs Dovecot {' or '.join(VERSIONS)}, not {version!r}"
    if os.geteuid() != 0:
        return "the Dovecot lab needs root (Dovecot drops to dovenull, dovecot and nobody)"
    if version == "2.3":
        dovecot = _which("dovecot")
        if dovecot is None:
            return "dovecot is not installed (Debian: dovecot-imapd dovecot-pop3d)"
        found = subprocess.run([dovecot, "--version"], capture_output=True, text=True).stdout
        if not found.startswith("2.3."):
            return f"the lab writes a Dovecot 2.3 config; this is {found.strip() or '?'}"
        for user in ("dovecot", "dovenull", "nobody"):
            try:
                pwd.getpwnam(user)
            except KeyError:
                return f"system user {user!r} is missing (Debian's dovecot-core creates it)"
    else:
        for tool, package in (("chroot", "coreutils"), ("unshare", "util-linux"),
                              ("mount", "mount")):
            if _which(tool) is None:
                return f"the Dovecot 2.4 lab needs {tool} (Debian: {package})"
        if _root_broken(dovecot24_root_path()) is not None and _which("debootstrap") is None:
            return ("the Dovecot 2.4 lab builds a Debian 13 root with debootstrap, which is "
                    "not installed (Debian: debootstrap)")
    if log == "syslog":
        for tool, package in (("rsyslogd", "rsyslog"), ("unshare", "util-linux"),
                              ("mount", "mount")):
            if _which(tool) is None:
                return f"syslog mode needs {tool} (Debian: {package})"
    return None


def need_lab(log: LogMode = "file", version: Version = "2.3") -> None:
    """Skip the calling test when the lab cannot run; under CI=true fail instead.

    For 2.4 this also makes the cached Debian 13 root if there is none (about a minute,
    once), so a root that cannot be made (no network, no mirror) is a skip here too.

    Why fail under CI: CI installs Dovecot, rsyslog and debootstrap precisely to run these
    tests, so a skip there would hide a broken install step behind a green run.
    """
    why = problem(log, version)
    if why is None and version == "2.4":
        try:
            dovecot24_root()
        except (LabError, OSError, subprocess.SubprocessError) as e:
            why = f"the Debian 13 root for Dovecot 2.4 could not be made: {e}"
    if why is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the Dovecot {version} lab ({log}): {why}")
    pytest.skip(why)


@pytest.fixture(params=[(v, m) for v in VERSIONS for m in ("file", "syslog")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def dovecot_lab(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DovecotLab]:
    """A running lab, once per Dovecot version and log mode (import it into a test module
    to use it; ``lab.version`` says which).

    Skips or, under CI, fails as ``need_lab`` does; stops the lab whatever the test did.
    """
    version: Version
    mode: LogMode
    version, mode = request.param
    need_lab(mode, version)
    with DovecotLab(tmp_path, log=mode, version=version) as lab:
        yield lab


# -- the Debian 13 root for Dovecot 2.4 ---------------------------------------------------

#: Where Debian roots for tests are cached. Other roots there (``trixie``, ``bookworm``,
#: ``deb-*``) belong to other tests and are never touched.
ROOTS = Path(os.environ.get("RELAYWATCH_ROOTS", "/var/cache/relaywatch-roots"))
TRIXIE = "trixie"
#: What the root is made with: Dovecot's imap and pop3 servers and what they depend on.
TRIXIE_INCLUDE = ("dovecot-imapd", "dovecot-pop3d")
#: Written into the root last, once debootstrap succeeded; a root without it is half-built.
ROOT_MARKER = ".relaywatch-dovecotlab-complete"
#: Where the lab's own directory appears inside the root: an empty directory of minbase.
INSIDE = Path("/mnt")
#: Seconds a root build may take before it counts as failed (measured: 40-60 s).
BUILD_DEADLINE = 900.0
#: Roots verified by this process (verifying runs the root's ``dovecot --version``).
_verified: set[Path] = set()


def debian_mirror() -> str:
    """The Debian archive this machine's apt uses, for debootstrap.

    ``$RELAYWATCH_DEBIAN_MIRROR`` if set; else the first ``URIs:`` (deb822 ``*.sources``)
    or ``deb`` line (``*.list``, ``/etc/apt/sources.list``) whose URI ends in ``/debian``
    (so not ``debian-security`` nor a third party's); else deb.debian.org.
    """
    if os.environ.get("RELAYWATCH_DEBIAN_MIRROR"):
        return os.environ["RELAYWATCH_DEBIAN_MIRROR"]
    apt = Path("/etc/apt")
    uris: list[str] = []
    for path in sorted((apt / "sources.list.d").glob("*.sources")):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("URIs:"):
                uris += line.split(":", 1)[1].split()
    for path in [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]:
        if path.is_file():
            for line in path.read_text(errors="replace").splitlines():
                words = re.sub(r"\[[^]]*\]", "", line).split()
                if len(words) >= 2 and words[0] == "deb":
                    uris.append(words[1])
    for uri in uris:
        if uri.rstrip("/").endswith("/debian"):
            return uri
    return "http://deb.debian.org/debian"


def debootstrap_command(target: Path) -> list[str]:
    """The command that makes the root (the mirror is added by the caller)."""
    return ["debootstrap", "--variant=minbase", "--include=" + ",".join(TRIXIE_INCLUDE),
            TRIXIE, str(target)]


def dovecot24_root_path() -> Path:
    """Where the root for the current include list is (made or not): a new include list
    is a new root, never a changed one."""
    key = hashlib.sha256(" ".join(debootstrap_command(Path("ROOT"))).encode()).hexdigest()
    return ROOTS / f"{TRIXIE}-dovecot" / key[:16]


def dovecot24_root() -> Path:
    """The cached Debian 13 root with Dovecot 2.4, made first if it is missing or broken.

    Under an exclusive ``flock`` on ``HASH.lock``, so parallel test processes wait for one
    build instead of racing; the check is made under the lock too, so a root is never
    seen half-way through a rebuild. Raises ``LabError`` if debootstrap fails.
    """
    final = dovecot24_root_path()
    if final in _verified:
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.with_name(final.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        why = _root_broken(final)
        if why is not None:
            _build_root(final, why)
            why = _root_broken(final)
            if why is not None:
                raise LabError(f"the root made in {final} does not work: {why}")
    _verified.add(final)
    return final


def _root_broken(root: Path) -> str | None:
    """Why ``root`` cannot serve the 2.4 lab, or None when it can."""
    if not (root / ROOT_MARKER).is_file():
        return f"{root} is missing" if not root.exists() else f"{root} has no {ROOT_MARKER}"
    for need in ("usr/sbin/dovecot", "usr/bin/doveconf", INSIDE.relative_to("/"),
                 "dev", "proc", "tmp", "etc/passwd"):
        if not (root / need).exists():
            return f"{root} has no /{need}"
    try:
        found = dovecot_version_in(root)
    except (OSError, subprocess.SubprocessError) as e:
        return f"its dovecot --version failed: {e}"
    if not found.startswith("2.4."):
        return f"its dovecot --version says {found.strip()!r}, not 2.4.x"
    return None


def dovecot_version_in(root: Path) -> str:
    """What ``dovecot --version`` says inside ``root`` (e.g. ``2.4.1-4 (7d8c0e5759)``)."""
    return subprocess.run(["chroot", str(root), "/usr/sbin/dovecot", "--version"],
                          capture_output=True, text=True, timeout=60, check=True,
                          stdin=subprocess.DEVNULL).stdout.strip()


def _build_root(final: Path, why: str) -> None:
    """Make the root in ``HASH.partial`` and rename it into place (the caller holds the
    lock). What a killed build left, and a broken root, are removed first (after
    unmounting anything an interrupted debootstrap left mounted in it: never rmtree a
    mounted /proc)."""
    partial = final.with_name(final.name + ".partial")
    for stale in (partial, final):
        if stale.exists() or stale.is_symlink():
            _umount_under(stale)
            shutil.rmtree(stale)
    log = final.with_name(final.name + ".log")
    mirror = debian_mirror()
    command = [*debootstrap_command(partial), mirror]
    started = time.monotonic()
    with open(log, "w") as out:
        out.write(f"# rebuilding: {why}\n+ {shlex.join(command)}\n")
        out.flush()
        try:
            result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, timeout=BUILD_DEADLINE)
        except subprocess.TimeoutExpired:
            result = None
    if result is None or result.returncode != 0:
        _umount_under(partial)
        shutil.rmtree(partial, ignore_errors=True)
        status = "timed out" if result is None else f"exited with status {result.returncode}"
        raise LabError(f"{shlex.join(command)} {status} (log: {log}): {_tail(log)}")
    _umount_under(partial)
    (partial / ROOT_MARKER).write_text(
        f"{shlex.join(command)}\nmade in {time.monotonic() - started:.0f} s, "
        f"at {time.strftime('%Y-%m-%d %H:%M:%S %z')}\n")
    partial.rename(final)


def _umount_under(path: Path) -> None:
    """Unmount whatever an interrupted build left mounted under ``path``, deepest first."""
    prefix = str(path.resolve()).rstrip("/") + "/"
    with open("/proc/self/mounts") as f:
        points = [row.split()[1] for row in f]
    for point in sorted((m for m in points if (m + "/").startswith(prefix)), key=len,
                        reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


class DovecotLab:
    """A private Dovecot 2.3 or 2.4 with imap and pop3 on 127.0.0.1 and ::1, and its log.

    Args:
        keep: a directory (pytest's ``tmp_path``) that receives the config and logs when
            the lab stops.
        log: ``file`` for Dovecot's own ``log_path`` file (``Nov 21 08:51:20 imap-login:
            Info: Login: ...``), ``syslog`` for ``log_path = syslog`` through a private
            rsyslogd writing Debian 12's default RFC 3339 format
            (``2026-11-21T08:51:36.043595+00:00 host dovecot: imap-login: Login: ...``).
            Dovecot 2.4 writes ``Logged in:`` where 2.3 writes ``Login:``.
        version: ``2.3``, the host's Dovecot (Debian 12), or ``2.4``, Debian 13's, run
            chrooted in the cached trixie root (see the module docstring).
        deadline: seconds any one wait may take.
        syslog_socket: in syslog mode, an existing syslog socket to log to instead of a
            private rsyslogd's (a private journald's ``dev-log``: ``tests/journallab.py``),
            as seen by Dovecot, i.e. inside ``enter``'s namespace.
        log_file: with ``syslog_socket``, the file in which what Dovecot logged appears
            (written by whoever reads that socket's daemon); the lab's waits read it.
        enter: a command prefix Dovecot is started under (``nsenter ... --``: the
            namespace where ``syslog_socket`` exists).
        settings: extra top-level dovecot.conf settings, name -> value (e.g.
            ``{"imap_id_log": "*"}``), written after the lab's own, so one of the same
            name overrides it (Dovecot takes the last). Names and values go in verbatim,
            so they must be the version's own syntax.

    Attributes (after start):
        root: the lab's own directory (seen as ``/mnt`` by a 2.4 Dovecot).
        debian_root: for 2.4, the cached root Dovecot runs in (read-only to it).
        log_path: the log file; while running the live one, after stop its copy in ``keep``.
        imap_port, pop3_port: the ports, the same on 127.0.0.1 and ::1.
        users: name -> password, every one able to log in over both protocols.
        conf_path: the Dovecot config (after stop, its copy in ``keep``).
    """

    def __init__(self, keep: Path, log: LogMode = "file", deadline: float = DEADLINE,
                 settings: Mapping[str, str] | None = None, version: Version = "2.3",
                 syslog_socket: Path | None = None, log_file: Path | None = None,
                 enter: Sequence[str] = ()) -> None:
        if (syslog_socket is None) != (log_file is None) or (syslog_socket is not None and log != "syslog"):
            raise ValueError("syslog_socket and log_file go together, in syslog mode")
        self._given_socket = syslog_socket
        self._given_log = log_file
        self._enter = list(enter)
        if log not in ("file", "syslog"):
            raise ValueError(f"log must be 'file' or 'syslog', not {log!r}")
        if version not in VERSIONS:
            raise ValueError(f"version must be one of {VERSIONS}, not {version!r}")
        self.version: Version = version
        self.debian_root: Path | None = None
        self.settings: dict[str, str] = dict(settings or {})
        for name, value in self.settings.items():
            if not re.fullmatch(r"[a-z0-9_]+", name) or "\n" in value:
                raise ValueError(f"not a plain dovecot.conf setting: {name!r} = {value!r}")
        self.keep = Path(keep)
        self.mode: LogMode = log
        self.deadline = deadline
        self.users: dict[str, str] = dict(USERS)
        self.imap_port = 0
        self.pop3_port = 0
        self.root = Path()
        self.log_path = Path()
        self.conf_path = Path()
        self._dovecot: subprocess.Popen[bytes] | None = None
        self._rsyslogd: subprocess.Popen[bytes] | None = None
        #: name -> pid of what the lab started (kept after stop, for checks).
        self.pids: dict[str, int] = {}
        self._socket = Path()
        self._offset = 0

    # -- life cycle -------------------------------------------------------------------

    def __enter__(self) -> DovecotLab:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        """Write the config, start rsyslogd (syslog mode) and Dovecot, and wait until the
        master has logged its start and listens on all four sockets.

        Why retry: the ports are found free by binding port 0 and handed over after the
        probe is closed, so another process can take one in between; Dovecot then exits
        with "Address already in use" and the lab tries fresh ports, three times at most.
        """
        if self.version == "2.4":
            self.debian_root = dovecot24_root()  # made once (about a minute), then cached
        self.root = Path(tempfile.mkdtemp(prefix="dovecotlab-"))
        try:
            self._prepare()
            if self._given_socket is not None:
                self._socket = self._given_socket
            elif self.mode == "syslog":
                self._start_rsyslogd()
            for attempt in range(3):
                self.imap_port, self.pop3_port = _free_ports(2)
                self._write_config()
                why = self._start_dovecot()
                if why is None:
                    return
                if "Address already in use" not in why or attempt == 2:
                    raise LabError(f"Dovecot did not start (config and logs are kept in "
                                   f"{self.keep / 'dovecotlab'}): {why}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop Dovecot, then rsyslogd, keep the evidence and remove the lab's directory.

        Safe to call twice and after a failed start. Dovecot's master gets SIGTERM (as
        ``doveadm stop`` would send) and stops its children; anything left in its process
        group after the deadline gets SIGKILL, and the lab then says so, since a Dovecot
        that outlives its test would hold ports and files of the next one.
        """
        survivors: list[str] = []
        if self._dovecot is not None:
            survivors += _end(self._dovecot, "dovecot", self.deadline)
            self._dovecot = None
        if self._rsyslogd is not None:
            survivors += _end(self._rsyslogd, "rsyslogd", self.deadline)
            self._rsyslogd = None
        if self.root != Path() and self.root.is_dir():
            kept = self.keep / "dovecotlab"
            kept.mkdir(parents=True, exist_ok=True)
            for path in (self.conf_path, self.log_path, self.root / "dovecot.stderr",
                         self.root / "rsyslog.conf", self.root / "rsyslogd.stderr"):
                if path.is_file():
                    shutil.copy2(path, kept / path.name)
            if self.log_path != Path():
                self.log_path = kept / self.log_path.name
            if self.conf_path != Path():
                self.conf_path = kept / self.conf_path.name
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = Path()
        if survivors:
            raise LabError("still running after SIGKILL: " + ", ".join(survivors))

    def restart(self) -> None:
        """Stop Dovecot (SIGTERM, as ``doveadm stop`` sends) and start it again with the
        same config, ports and log, as an admin's restart or upgrade would.

        Returns when the new master has logged its start-up line (the log then holds one
        more, which is how relaywatch learns Dovecot's version) and listens again.
        """
        self._check("127.0.0.1")
        assert self._dovecot is not None
        survivors = _end(self._dovecot, "dovecot", self.deadline)
        self._dovecot = None
        if survivors:
            raise LabError("still running after SIGKILL: " + ", ".join(survivors))
        why = self._start_dovecot()
        if why is not None:
            raise LabError(f"Dovecot did not start again: {why}")

    # -- clients ----------------------------------------------------------------------

    def login(self, protocol: Protocol, user: str, source: str = "127.0.0.1") -> Attempt:
        """Log in with the right password from ``source`` and log out.

        Returns when the login process's ``Login:`` line (2.4: ``Logged in:``) and the mail process's
        ``Logged out`` line for that session are both in the log, so the whole session
        is there for the test to read (the mail process's prefix carries the user name,
        hostile ones included).
        """
        self._check(source)
        with _Client(protocol, source, self._port(protocol), self.deadline) as client:
            client.login(user, self.users[user])
            answered = time.monotonic()
        needle = f"{protocol}-login: "
        tail = f"{LOGIN_MESSAGE[self.version]} user=<{user}>, method=PLAIN, rip={source}, lip="
        begin = self._offset
        line = self._wait(lambda s: needle in s and tail in s,
                          f"{protocol} Login of {user!r} from {source}")
        mpid = _last_field(line, "mpid=", ",")
        session = _last_field(line, "session=<", ">")
        mark = f"<{mpid}><{session}>: "

        bare = f" {protocol}: Info: Disconnected: Logged out"

        def logout(s: str) -> bool:
            return "Disconnected: Logged out" in s and (mark in s or bare in s)

        # Dovecot's log process may write the mail process's logout before the login
        # process's Login line (measured: same second, reversed order), so look back too;
        # and under load it may write it without the (user)<mpid><session> prefix (seen:
        # "imap: Info: Disconnected: Logged out ..."), which, actions being one at a time,
        # is this session's.
        with open(self.log_path, "rb") as f:
            f.seek(begin)
            passed = f.read(self._offset - begin).decode("utf-8", "replace").split("\n")
        if not any(map(logout, passed)):
            self._wait(logout, f"{protocol} logout of {user!r} (mpid {mpid}, session {session})")
        return Attempt(protocol, "login", user, source, line, answered)

    def connect(self, protocol: Protocol, user: str, source: str = "127.0.0.1") -> Held:
        """Log in with the right password from ``source`` and stay connected (``--sessions``).

        Returns when the login process's line is in the log; the session's mail process
        (``Held.mpid``) then serves the connection until ``Held.logout``, a kill, or
        Dovecot's stop. The caller closes it (``Held.logout`` or ``Held.close``).
        """
        self._check(source)
        client = _Client(protocol, source, self._port(protocol), self.deadline)
        try:
            client.login(user, self.users[user])
        except BaseException:
            client.drop()
            raise
        tail = f"{LOGIN_MESSAGE[self.version]} user=<{user}>, method=PLAIN, rip={source}, lip="
        line = self._wait(lambda s: f"{protocol}-login: " in s and tail in s,
                          f"{protocol} Login of {user!r} from {source}")
        return Held(self, client, protocol, user, source, line, int(_last_field(line, "mpid=", ",")),
                    _last_field(line, "session=<", ">"))

    def fail_login(self, protocol: Protocol, user: str, source: str = "127.0.0.1") -> Attempt:
        """Try a wrong password (or any name at all) from ``source``, then log out.

        Returns when the login process has logged the disconnection with ``auth failed``.
        Dovecot delays each failure by ``auth_failure_delay`` (2 s, its default, kept so
        the lines read "in 2 secs" as on a real server). The wait looks for the source,
        not the name: Dovecot lowercases, sanitises and cuts what an unknown client sent.
        """
        self._check(source)
        with _Client(protocol, source, self._port(protocol), self.deadline) as client:
            if client.login(user, self.users.get(user, "") + "-wrong", expect_ok=False):
                raise LabError(f"{protocol}: a wrong password was accepted for {user!r}")
            answered = time.monotonic()
        tail = "(auth failed, 1 attempts in "
        who = f", method=PLAIN, rip={source}, lip="
        line = self._wait(lambda s: f"{protocol}-login: " in s and tail in s and who in s,
                          f"{protocol} auth failure of {user!r} from {source}")
        return Attempt(protocol, "fail", user, source, line, answered)

    def abort(self, protocol: Protocol, source: str = "127.0.0.1",
              user: str | None = None) -> Attempt:
        """Connect from ``source``, read the greeting and close without authenticating.

        Args:
            user: pop3 only: send ``USER user`` first, as a client that gives up before
                ``PASS`` does. (Dovecot 2.3 still logs ``user=<>`` then: pop3-login
                records the name only with the password.)

        Returns when the login process has logged ``no auth attempts``.
        """
        self._check(source)
        if user is not None and protocol != "pop3":
            raise ValueError("only pop3 can name a user without authenticating")
        with _Client(protocol, source, self._port(protocol), self.deadline) as client:
            if user is not None:
                client.user(user)
            client.drop()
            answered = time.monotonic()
        who = f"rip={source}, lip="
        line = self._wait(
            lambda s: f"{protocol}-login: " in s and "(no auth attempts in " in s
            and who in s, f"{protocol} aborted connection from {source}")
        return Attempt(protocol, "abort", user, source, line, answered)

    def lines(self) -> list[str]:
        """Every complete line of the log so far (after stop: of the kept copy).

        Split at newline bytes only, as a log reader does: ``str.splitlines`` would also
        break at CR, U+0085 and U+2028, which a client can put inside a user name.
        """
        data = self.log_path.read_bytes()
        return [raw.decode("utf-8", "replace")
                for raw in data[:data.rfind(b"\n") + 1].split(b"\n")[:-1]]

    # -- inside -----------------------------------------------------------------------

    def _prepare(self) -> None:
        """Make the lab's tree: traversable by Dovecot's users, mail homes owned by the
        mail user, and the passwd-file with every account."""
        self.root.chmod(0o755)
        for parent in self.root.parents:
            if not parent.stat().st_mode & 0o001:
                raise LabError(f"{parent} is not traversable by others; Dovecot's "
                               f"unprivileged users could not reach {self.root} (set TMPDIR)")
        nobody = self._account("nobody")
        (self.root / "log").mkdir(mode=0o755)
        (self.root / "home").mkdir(mode=0o755)
        rows = []
        for index, (name, password) in enumerate(self.users.items()):
            home = self.root / "home" / f"user{index}"
            home.mkdir(mode=0o700)
            os.chown(home, nobody.pw_uid, nobody.pw_gid)
            # passwd-file: name:password:uid:gid:gecos:home:shell:extra. Only ':' splits,
            # so the hostile names (commas, <, >, =, spaces) are taken whole.
            rows.append(f"{name}:{{PLAIN}}{password}:{nobody.pw_uid}:{nobody.pw_gid}::"
                        f"{self._seen(home)}::\n")
        passwd = self.root / "passwd"
        passwd.write_text("".join(rows))
        passwd.chmod(0o644)
        self.conf_path = self.root / "dovecot.conf"
        self.log_path = self.root / "log" / ("dovecot.log" if self.mode == "file" else "syslog")
        if self._given_log is not None:
            self.log_path = self._given_log

    def _seen(self, path: Path) -> Path:
        """``path`` (in the lab's directory) as Dovecot sees it: the same for 2.3, under
        ``/mnt`` for 2.4, whose root has the lab's directory bound there."""
        if self.version == "2.3":
            return path
        return INSIDE / path.relative_to(self.root)

    def _account(self, name: str) -> pwd.struct_passwd:
        """A system account as Dovecot resolves it: the host's for 2.3, the Debian 13
        root's for 2.4 (its own /etc/passwd; ``nobody`` is 65534 in both)."""
        if self.debian_root is None:
            return pwd.getpwnam(name)
        for row in (self.debian_root / "etc/passwd").read_text().splitlines():
            fields = row.split(":")
            if fields[0] == name and len(fields) == 7:
                return pwd.struct_passwd((fields[0], fields[1], int(fields[2]),
                                          int(fields[3]), *fields[4:]))
        raise LabError(f"{self.debian_root}/etc/passwd has no {name!r}")

    def _write_config(self) -> None:
        r = self._seen(self.root)
        log_path = "syslog" if self.mode == "syslog" else str(self._seen(self.log_path))
        # The two versions' configs say the same things; 2.4 renamed most of them.
        if self.version == "2.3":
            head = ""
            cleartext = "disable_plaintext_auth = no"
            username_format = "%u"
            mail = "mail_location = maildir:~/Maildir"
            databases = f"""\
passdb {{
  driver = passwd-file
  args = {r}/passwd
}}
userdb {{
  driver = passwd-file
  args = {r}/passwd
}}"""
        else:
            head = """\
# Must come first in 2.4: the syntax and defaults this file is written for.
dovecot_config_version = 2.4.0
dovecot_storage_version = 2.4.0
"""
            cleartext = "auth_allow_cleartext = yes"
            username_format = "%{user}"
            mail = "mail_driver = maildir\nmail_path = ~/Maildir"
            databases = f"""\
passdb passwd-file {{
  passwd_file_path = {r}/passwd
}}
userdb passwd-file {{
  passwd_file_path = {r}/passwd
}}"""
        self.conf_path.write_text(f"""\
{head}# dovecotlab: a private Dovecot {self.version} for relaywatch's tests; nothing is read from /etc/dovecot.
protocols = imap pop3
listen = 127.0.0.1, ::1
base_dir = {r}/run
state_dir = {r}/state
# The default instance name, so syslog lines carry the tag "dovecot" as on a real server.
instance_name = dovecot
log_path = {log_path}
ssl = no
{cleartext}
# Empty: any character may reach the passdb, so the hostile names can log in and an
# unauthenticated client's name reaches the failure lines unfiltered.
auth_username_chars =
# The client's case as sent (the default lowercases), so forged text reaches the
# log exactly as an attacker wrote it.
auth_username_format = {username_format}
# The auth process's own lines ("passwd-file(user,rip,<session>): Password mismatch")
# are common on real servers and must never count as logins.
auth_verbose = yes
{mail}
{databases}
service imap-login {{
  inet_listener imap {{
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {self.pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
""" + "".join(f"{name} = {value}\n" for name, value in self.settings.items()))

    def _start_rsyslogd(self) -> None:
        """Start rsyslogd with only a private imuxsock socket and one file action.

        Why ``RSYSLOG_FileFormat``: it is what Debian 12's rsyslog writes by default (the
        ``$ActionFileDefaultTemplate RSYSLOG_TraditionalFileFormat`` line of older Debian
        releases is gone), i.e. RFC 3339 stamps with microseconds. ``SysSock.Use="off"``
        keeps it off /dev/log; rate limiting is off so a burst of test logins is never
        thinned into "messages lost due to rate-limiting".
        """
        rsyslogd = _which("rsyslogd")
        assert rsyslogd is not None
        spool = self.root / "rsyslog"
        spool.mkdir(mode=0o755)
        self._socket = spool / "log.sock"
        conf = self.root / "rsyslog.conf"
        conf.write_text(f"""\
# dovecotlab: a private rsyslogd; it reads only {self._socket}.
global(workDirectory="{spool}")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{self._socket}" RateLimit.Interval="0")
*.* action(type="omfile" file="{self.log_path}" template="RSYSLOG_FileFormat")
""")
        with open(self.root / "rsyslogd.stderr", "wb") as err:
            self._rsyslogd = subprocess.Popen(
                [rsyslogd, "-n", "-f", str(conf), "-i", str(spool / "rsyslogd.pid")],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True)
        self.pids["rsyslogd"] = self._rsyslogd.pid
        self._until(lambda: self._socket.exists(), "rsyslogd's socket",
                    self._rsyslogd, self.root / "rsyslogd.stderr")

    def _start_dovecot(self) -> str | None:
        """Start Dovecot in the foreground; return None once it serves, else why not.

        In syslog mode it runs under ``unshare -m`` with a script that mounts a private
        tmpfs on /dev holding bind mounts of the few devices a daemon uses and a /dev/log
        symlink to rsyslogd's socket. Why this way: glibc's syslog() always writes to
        /dev/log and Dovecot 2.3 has no setting for another socket; the mount namespace
        gives Dovecot its own /dev/log without creating or replacing the host's.

        Dovecot 2.4 always runs that way, with ``_chroot_script``: in the cached Debian 13
        root, read-only, with the lab's directory on its ``/mnt``. ``unshare``, ``sh`` and
        ``chroot`` each exec the next, so the process started is Dovecot's master.
        """
        start = re.compile(r"master: (Info: )?Dovecot v\S+ .*starting up")
        started = sum(1 for s in self._peek() if start.search(s))  # a restart: one more
        unshare = [_which("unshare") or "unshare", "--mount", "--propagation", "private"]
        if self.version == "2.4":
            command = [*unshare, "sh", str(self._chroot_script()), "/usr/sbin/dovecot", "-F",
                       "-c", str(self._seen(self.conf_path))]
        else:
            dovecot = _which("dovecot")
            assert dovecot is not None
            command = [dovecot, "-F", "-c", str(self.conf_path)]
            if self.mode == "syslog":
                command = [*unshare, "sh", str(self._namespace_script()), *command]
        command = [*self._enter, *command]
        stderr = self.root / "dovecot.stderr"
        with open(stderr, "ab") as err:  # appended: a restart keeps the first start's words
            self._dovecot = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=err,
                                             stderr=err, start_new_session=True)
        self.pids["dovecot"] = self._dovecot.pid
        try:
            self._until(lambda: sum(1 for s in self._peek() if start.search(s)) > started
                        and _listening({self.imap_port, self.pop3_port}),
                        "Dovecot's start", self._dovecot, stderr)
        except LabError as e:
            _end(self._dovecot, "dovecot", self.deadline)
            self._dovecot = None
            return str(e)
        return None

    def _namespace_script(self) -> Path:
        dev = self.root / "dev"
        dev.mkdir(mode=0o755, exist_ok=True)
        script = self.root / "in-namespace.sh"
        script.write_text(f"""\
# Runs inside Dovecot's private mount namespace (unshare -m): nothing here is seen
# outside it, and it all vanishes with the namespace.
set -eu
mount -t tmpfs -o mode=0755,size=64k dovecotlab-dev {dev}
for node in null zero full random urandom; do
    [ -e /dev/$node ] || continue
    : > {dev}/$node
    mount --bind /dev/$node {dev}/$node
done
ln -s /proc/self/fd {dev}/fd
ln -s {self._socket} {dev}/log
mount --move {dev} /dev
exec "$@"
""")
        return script

    def _chroot_script(self) -> Path:
        """The script that enters the Debian 13 root for Dovecot 2.4 (see ``_start_dovecot``).

        Why each mount: the root read-only so no lab changes the cached root; ``/mnt`` the
        lab's directory (config, passwd-file, homes, run, state, log); ``/dev`` a tmpfs
        with the usual devices (and ``/dev/log`` to rsyslogd's socket in syslog mode);
        ``/tmp`` writable, where doveconf writes its binary config before Dovecot starts
        (measured: "safe_mkstemp(/tmp/doveconf.) failed: Read-only file system"); ``/proc``
        for the processes' own entries.
        """
        assert self.debian_root is not None
        q = shlex.quote
        root, lab = q(str(self.debian_root)), q(str(self.root))
        log = ""
        if self.mode == "syslog":
            log = f"ln -s {q(str(self._seen(self._socket)))} \"$root/dev/log\"\n"
        script = self.root / "in-namespace.sh"
        script.write_text(f"""\
# Runs inside Dovecot's private mount namespace (unshare -m): nothing here is seen
# outside it, and it all vanishes with the namespace.
set -eu
root={root}
mount --bind "$root" "$root"
mount -o remount,bind,ro "$root"
mount --bind {lab} "$root{INSIDE}"
mount -t tmpfs -o mode=0755,size=64k dovecotlab-dev "$root/dev"
for node in null zero full random urandom; do
    : > "$root/dev/$node"
    mount --bind /dev/$node "$root/dev/$node"
done
ln -s /proc/self/fd "$root/dev/fd"
{log}mount -t tmpfs -o mode=1777,size=16m dovecotlab-tmp "$root/tmp"
mount -t proc dovecotlab-proc "$root/proc"
exec chroot "$root" "$@"
""")
        return script

    def _until(self, ready: Callable[[], bool], what: str,
               process: subprocess.Popen[bytes], stderr: Path) -> None:
        end = time.monotonic() + self.deadline
        while not ready():
            if process.poll() is not None:
                raise LabError(f"{what}: exited with status {process.returncode}: "
                               f"{_tail(stderr)} {' | '.join(self._peek()[-3:])}")
            if time.monotonic() > end:
                raise LabError(f"{what}: not ready within {self.deadline:g}s: {_tail(stderr)}")
            time.sleep(_POLL)

    def _peek(self) -> list[str]:
        try:
            return self.lines()
        except FileNotFoundError:
            return []

    def _wait(self, wanted: Callable[[str], bool], what: str) -> str:
        """Read the log on from where the last wait stopped until a line is ``wanted``.

        Lines passed over stay in the file for ``lines()``; a later wait never sees
        them again, which is why actions are strictly one after another. A line still
        without its newline is left for the next poll.
        """
        end = time.monotonic() + self.deadline
        while True:
            with open(self.log_path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
            start = 0
            while (stop := data.find(b"\n", start)) >= 0:
                line = data[start:stop].decode("utf-8", "replace")
                self._offset += stop + 1 - start
                start = stop + 1
                if wanted(line):
                    return line
            if time.monotonic() > end:
                raise LabError(f"{what}: no such line in {self.log_path} within "
                               f"{self.deadline:g}s; last: {self._peek()[-3:]}")
            time.sleep(_POLL)

    def _port(self, protocol: Protocol) -> int:
        return self.imap_port if protocol == "imap" else self.pop3_port

    def _check(self, source: str) -> None:
        if self._dovecot is None:
            raise LabError("the lab is not running")
        if not ipaddress.ip_address(source).is_loopback:
            raise ValueError(f"source {source} is not a loopback address")


class Held:
    """A session kept open (``DovecotLab.connect``): NOOPs keep it busy, ``logout`` ends it.

    Attributes:
        line: the login process's line; ``mpid`` the mail process serving the session;
        ``session`` the session id Dovecot gave it (the mail process's log prefix carries it).
    """

    def __init__(self, lab: DovecotLab, client: _Client, protocol: Protocol, user: str, source: str,
                 line: str, mpid: int, session: str) -> None:
        self.lab, self.client, self.protocol, self.user, self.source = lab, client, protocol, user, source
        self.line, self.mpid, self.session = line, mpid, session

    def noop(self) -> None:
        """One NOOP, as an idle client's keep-alive (raises if the server is gone)."""
        self.client.conn.noop()

    def logout(self) -> str:
        """Log out; return the mail process's ``Disconnected: Logged out`` line (its prefix
        carries this session's id) once it is in the log."""
        self.client.__exit__(None, None, None)
        self.client.dropped = True
        mark = f"<{self.mpid}><{self.session}>: "
        return self.lab._wait(lambda s: mark in s and "Disconnected: Logged out" in s,
                              f"{self.protocol} logout of session {self.session}")

    def close(self) -> None:
        """Drop the connection without a word (after a kill or a restart: nothing to wait for)."""
        if not self.client.dropped:
            try:
                self.client.drop()
            except OSError:
                pass


class _Client:
    """Just enough of an IMAP or POP3 client, bound to a chosen source address."""

    def __init__(self, protocol: Protocol, source: str, port: int, timeout: float) -> None:
        server = "::1" if ":" in source else "127.0.0.1"
        self.dropped = False
        self.conn: imaplib.IMAP4 | poplib.POP3
        if protocol == "imap":
            self.conn = _BoundIMAP(server, port, source, timeout)
        else:
            self.conn = _BoundPOP3(server, port, source, timeout)

    def login(self, user: str, password: str, expect_ok: bool = True) -> bool:
        """Authenticate with plaintext; return whether the server accepted.

        A name of printable ASCII goes as an admin's client sends it: IMAP ``LOGIN
        "user" "password"`` (imaplib quotes only the password, and the hostile names hold
        spaces), POP3 ``USER``/``PASS``. Any other name goes as an attacker would send
        it, over SASL PLAIN (``AUTHENTICATE PLAIN`` / ``AUTH PLAIN``), whose base64
        carries newlines that neither command line could.
        """
        printable = all(" " <= c <= "~" for c in user)
        token = b"\0" + user.encode() + b"\0" + password.encode()
        try:
            if isinstance(self.conn, imaplib.IMAP4):
                if printable:
                    self.conn.login(_imap_quote(user), password)
                else:
                    self.conn.authenticate("PLAIN", lambda _challenge: token)
            elif printable:
                self.conn.user(user)
                self.conn.pass_(password)
            else:
                # poplib's own command path: it has no public call for AUTH (RFC 5034),
                # and raises error_proto on -ERR like user() and pass_() do.
                command = "AUTH PLAIN " + base64.b64encode(token).decode()
                self.conn._shortcmd(command)  # type: ignore[attr-defined]
        except (imaplib.IMAP4.error, poplib.error_proto):
            if expect_ok:
                raise
            return False
        return True

    def user(self, user: str) -> None:
        assert isinstance(self.conn, poplib.POP3)
        self.conn.user(user)

    def drop(self) -> None:
        """Close the connection without a word, as a client that gave up would."""
        if isinstance(self.conn, imaplib.IMAP4):
            self.conn.shutdown()
        else:
            self.conn.close()
        self.dropped = True

    def __enter__(self) -> _Client:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.dropped:
            return
        try:
            if isinstance(self.conn, imaplib.IMAP4):
                self.conn.logout()
            else:
                self.conn.quit()
        except (OSError, imaplib.IMAP4.error, poplib.error_proto):
            pass


class _BoundIMAP(imaplib.IMAP4):
    """imaplib's client, but connecting from ``source`` (imaplib has no such argument)."""

    def __init__(self, host: str, port: int, source: str, timeout: float) -> None:
        self._source = source
        super().__init__(host, port, timeout=timeout)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self._source, 0))


class _BoundPOP3(poplib.POP3):
    """poplib's client, but connecting from ``source`` (poplib has no such argument)."""

    def __init__(self, host: str, port: int, source: str, timeout: float) -> None:
        self._source = source
        super().__init__(host, port, timeout=timeout)

    def _create_socket(self, timeout: float) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self._source, 0))


def _imap_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _last_field(line: str, start: str, stop: str) -> str:
    """The value of the last ``start...stop`` field: the server-written one, since a
    hostile user name can only come before it."""
    value = line.rsplit(start, 1)[1]
    return value.split(stop, 1)[0]


def _which(tool: str) -> str | None:
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")


def _free_ports(count: int) -> list[int]:
    """Ports that are free on both 127.0.0.1 and ::1 at this moment."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket(socket.AF_INET) as v4, socket.socket(socket.AF_INET6) as v6:
            v4.bind(("127.0.0.1", 0))
            port = v4.getsockname()[1]
            try:
                v6.bind(("::1", port))
            except OSError:
                continue
            if port not in ports:
                ports.append(port)
    return ports


def _listening(ports: set[int]) -> bool:
    """Whether every port is in LISTEN on both 127.0.0.1 and ::1 (from /proc/net, so
    the check itself opens no connection that Dovecot would log)."""
    found: set[tuple[str, int]] = set()
    for table, family in (("/proc/net/tcp", "4"), ("/proc/net/tcp6", "6")):
        with open(table) as f:
            next(f)
            for row in f:
                fields = row.split()
                port = fields[1].rpartition(":")[2]
                if fields[3] == "0A" and int(port, 16) in ports:
                    found.add((family, int(port, 16)))
    return all((family, port) in found for family in "46" for port in ports)


def _tail(path: Path) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-3:])
    except FileNotFoundError:
        return ""


def _end(process: subprocess.Popen[bytes], name: str, deadline: float) -> list[str]:
    """SIGTERM a process we started, wait, and make sure its process group is empty.

    The group is the session ``start_new_session`` made, so it holds only this process
    and its children (Dovecot's log, auth, login and mail processes), which leave when
    the master does. Returns what survived even SIGKILL (normally nothing).
    """
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(deadline)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(deadline)
    end = time.monotonic() + deadline
    while members := processes_in_group(process.pid):
        if time.monotonic() > end:
            os.killpg(process.pid, signal.SIGKILL)
            return [f"{name} group {process.pid}: {', '.join(members)}"]
        time.sleep(_POLL)
    return []


def processes_in_group(pgid: int) -> list[str]:
    """The live (not zombie) processes of a process group, as ``pid name``.

    Why the group: the lab starts Dovecot and rsyslogd each in a session of its own, so
    its group is exactly what that start left behind, children included.
    """
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        state, _ppid, group = stat[stat.rindex(")") + 2:].split()[:3]
        if int(group) == pgid and state != "Z":
            members.append(f"{entry.name} {name}")
    return members
