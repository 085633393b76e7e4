"""Start a private Postfix for the tests: own config, queue and log in a temp dir, smtpd on lo.

Why a real Postfix: whether a map relays is decided by smtpd reading it, not by what we
think we wrote. The instance never delivers anything: every transport is the ``error``
daemon under another name (so smtpd still answers 250 to an authorised RCPT), DATA is
refused, and no queue manager runs. It listens only on 127.0.0.1, on free ports, one smtpd
per map under test, each with

    smtpd_relay_restrictions = permit_mynetworks, check_client_access TYPE:PATH,
        reject_unauth_destination

and ``mynetworks = 127.0.0.1/32``, so probes from 127.0.0.2 and up are relayed only if the
map says so. It needs root (Postfix's master does) and Debian's postfix packages; the
``postfix -c DIR`` wrapper accepts an arbitrary config directory from root, so nothing in
/etc/postfix is read or changed beyond the shared binaries and the map plug-ins.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import smtplib
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

#: Programs the lab needs.
NEEDED = ("postfix", "postmap", "postconf")
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])

#: A recipient domain the lab is not the destination for, so relaying is what is tested.
REMOTE_RCPT = "someone@example.net"

#: The ``postfix`` command reads the default main.cf even when given ``-c DIR`` (measured:
#: with it missing, ``postfix -c DIR status`` stops with "open /etc/postfix/main.cf"). A
#: fresh Debian install answered "No configuration" has none, so the lab writes a stub there
#: for its lifetime and removes it afterwards.
DEFAULT_MAIN_CF = Path("/etc/postfix/main.cf")
STUB = "# Written by relaywatch's test lab while it runs (no main.cf existed); removed after.\n"


def missing() -> list[str]:
    """What stops a lab from running here (empty if nothing)."""
    problems = [f"{name} not installed" for name in NEEDED
                if shutil.which(name, path=SBIN_PATH) is None]
    if os.geteuid() != 0:
        problems.append("not root (Postfix's master must start as root)")
    try:
        pwd.getpwnam("postfix")
        grp.getgrnam("postdrop")
    except KeyError:
        problems.append("no postfix user or postdrop group")
    return problems


def unavailable(problems: list[str]) -> None:
    """Skip for a developer without Postfix (or a map type); fail in CI, where it must be installed."""
    if problems:
        if os.environ.get("CI"):
            pytest.fail("CI is set but: " + "; ".join(problems))
        pytest.skip("; ".join(problems))


def config_dir(tmp: Path) -> Path:
    """A minimal private Postfix configuration directory in ``tmp``, so that postmap never
    depends on /etc/postfix/main.cf."""
    etc = tmp / "etc"
    etc.mkdir()
    write_config(etc / "main.cf", "compatibility_level = 3.6\n")
    return etc


def write_config(path: Path, text: str) -> None:
    """Write a Postfix config file with an mtime 10 s in the past.

    Why: Postfix re-reads a main.cf (or texthash table) whose mtime is within the last
    second, sleeping a second each time, in case it is still being written; a freshly
    written test config would make every postconf and postmap call take about 2 s.
    """
    path.write_text(text)
    past = time.time() - 10
    os.utime(path, (past, past))


def map_types() -> frozenset[str]:
    """The map types ``postconf -m`` lists, asked with a private config dir.

    Why private: the default /etc/postfix/main.cf may not exist on a CI machine.
    """
    with tempfile.TemporaryDirectory() as name:
        write_config(Path(name) / "main.cf", "compatibility_level = 3.6\n")
        done = subprocess.run([_which("postconf"), "-c", name, "-m"], capture_output=True,
                              text=True, check=True, timeout=60)
    return frozenset(done.stdout.split())


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostfixLab:
    """A running private Postfix.

    Attributes:
        root: the temp directory holding etc/, queue/, data/, maps/ and maillog.
        config_dir: the directory to pass as ``-c`` (and as ``--postfix-config``).
        ports: map type -> port of the smtpd that checks that type's map.
    """

    root: Path
    config_dir: Path
    ports: dict[str, int] = field(default_factory=dict)
    wrote_default_main_cf: bool = False

    def map_spec(self, map_type: str) -> str:
        """``TYPE:PATH`` of the access map the smtpd for ``map_type`` checks."""
        return f"{map_type}:{self.root}/maps/relay_{map_type}"

    def probe(self, listener: str, source: str, rcpt: str = REMOTE_RCPT) -> tuple[int, str]:
        """Connect from ``source`` (127.0.0.N, or ::1 with ``start(ipv6=True)``) and return
        the RCPT TO reply."""
        with smtplib.SMTP(timeout=20) as client:
            client.source_address = (source, 0)
            client.connect("::1" if ":" in source else "127.0.0.1", self.ports[listener])
            client.ehlo("probe.invalid")
            client.mail("probe@example.org")
            code, text = client.rcpt(rcpt)
            client.rset()
        return code, text.decode("ascii", "replace")

    def session(self, listener: str, source: str, count: int,
                rcpt: str = REMOTE_RCPT) -> list[int]:
        """Connect from ``source`` and send ``count`` RCPT TOs in one session: the codes.

        Why: smtpd notices a changed map only between connections, so a reader that stays
        connected while the map changes is the one that could see it half-written.
        """
        codes = []
        with smtplib.SMTP(timeout=20) as client:
            client.source_address = (source, 0)
            client.connect("::1" if ":" in source else "127.0.0.1", self.ports[listener])
            client.ehlo("probe.invalid")
            client.mail("probe@example.org")
            for _ in range(count):
                codes.append(client.rcpt(rcpt)[0])
            client.rset()
        return codes

    def log(self) -> str:
        """The instance's maillog so far (for failure messages)."""
        try:
            return (self.root / "maillog").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def postfix(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``postfix -c CONFIG ARGS...`` against this instance."""
        return subprocess.run(
            [_which("postfix"), "-c", str(self.config_dir), *args],
            capture_output=True, text=True, timeout=120, check=False,
        )

    def stop(self) -> None:
        """Stop the instance, wait for its master to exit (kill it if it will not), clean up."""
        self.postfix("stop")
        pid = self._master_pid()
        deadline = time.monotonic() + 15
        while pid is not None and _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid is not None and _alive(pid):
            os.kill(pid, 9)
        shutil.rmtree(self.root, ignore_errors=True)
        if self.wrote_default_main_cf and DEFAULT_MAIN_CF.read_text() == STUB:
            DEFAULT_MAIN_CF.unlink()

    def _master_pid(self) -> int | None:
        try:
            return int((self.root / "queue" / "pid" / "master.pid").read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None


def start(types: Sequence[str], ipv6: bool = False) -> PostfixLab:
    """Create and start a private Postfix with one smtpd per map type.

    With ``ipv6``, each smtpd also listens on [::1] (same port), which is not in mynetworks.

    Returns:
        The running lab; call ``stop()`` when done (it also removes the directory).
    """

    def create_maps(lab: PostfixLab) -> None:
        # Every map must exist before the first smtpd starts: a process that found its table
        # missing keeps answering 451 "Server configuration error" until it is recycled, even
        # after the file appears (it only watches tables it managed to open).
        for name in types:
            path = Path(lab.map_spec(name).partition(":")[2])
            path.write_text("")
            if name != "texthash":
                subprocess.run([_which("postmap"), "-c", str(lab.config_dir), lab.map_spec(name)],
                               check=True, capture_output=True, timeout=60)

    return launch(lambda lab: {name: lab.map_spec(name) for name in types}, ipv6=ipv6,
                  before_start=create_maps)


def launch(tables: Callable[[PostfixLab], Mapping[str, str]], *, ipv6: bool = False,
           main_cf: Callable[[Mapping[str, str]], str] | None = None,
           before_start: Callable[[PostfixLab], None] | None = None) -> PostfixLab:
    """Create and start a private Postfix with one smtpd per ``name -> TYPE:TABLE`` of
    ``tables(lab)`` (called once the lab's directories exist), each relaying for the
    clients its ``check_client_access`` table allows; ``main_cf(tables)`` adds lines to main.cf;
    ``before_start(lab)`` runs once the configuration is written.

    The instance lives in a fresh directory under the system temp dir, not under pytest's
    ``tmp_path``: Postfix's master opens its lock file as the ``postfix`` user, which cannot
    traverse pytest's 0700 directories. The root is made 0711 (traversable, not listable).
    """
    root = Path(tempfile.mkdtemp(prefix="relaywatch-postfixlab-"))
    os.chmod(root, 0o711)
    etc, queue, data, maps = root / "etc", root / "queue", root / "data", root / "maps"
    for directory in (etc, queue, data, maps):
        directory.mkdir()
        os.chmod(directory, 0o755)
    os.chown(data, pwd.getpwnam("postfix").pw_uid, -1)
    lab = PostfixLab(root=root, config_dir=etc)
    if not DEFAULT_MAIN_CF.exists():
        DEFAULT_MAIN_CF.write_text(STUB)
        lab.wrote_default_main_cf = True
    specs = dict(tables(lab))
    extra = main_cf(specs) if main_cf is not None else ""
    lab.ports = {name: free_port() for name in specs}

    restrictions = "\n".join(
        f"relay_{name} = permit_mynetworks, check_client_access {spec}, "
        "reject_unauth_destination"
        for name, spec in specs.items()
    )
    write_config(etc / "main.cf", f"""\
# A private Postfix for relaywatch's tests: loopback only, never delivers.
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = {"127.0.0.1, [::1]" if ipv6 else "127.0.0.1"}
inet_protocols = {"all" if ipv6 else "ipv4"}
myhostname = lab.invalid
mydomain = lab.invalid
myorigin = lab.invalid
mydestination = lab.invalid
relay_domains =
mynetworks = 127.0.0.1/32
smtpd_peername_lookup = no
# No queue manager runs, so no flow-control tokens ever come back; without this every
# new smtpd would pause in_flow_delay (1s) before accepting a message (measured).
in_flow_delay = 0s
smtpd_relay_restrictions = reject
smtpd_recipient_restrictions =
smtpd_data_restrictions = reject
default_transport = labnever
relay_transport = labnever
local_transport = error:the lab never delivers
virtual_transport = error:the lab never delivers
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
{extra}
{restrictions}
""")
    hosts = ("127.0.0.1", "[::1]") if ipv6 else ("127.0.0.1",)
    listeners = "\n".join(
        f"{host}:{lab.ports[name]} inet n - n - - smtpd\n"
        f"  -o smtpd_relay_restrictions=$relay_{name}"
        for name in specs for host in hosts
    )
    write_config(etc / "master.cf", f"""\
# service type private unpriv chroot wakeup maxproc command
{listeners}
cleanup   unix n - n - 0 cleanup
rewrite   unix - - n - - trivial-rewrite
proxymap  unix - - n - - proxymap
anvil     unix - - n - 1 anvil
error     unix - - n - - error
labnever  unix - - n - - error
postlog   unix-dgram n - n - 1 postlogd
""")
    if before_start is not None:
        before_start(lab)
    started = lab.postfix("start")
    if started.returncode != 0:
        log = lab.log()
        lab.stop()
        raise RuntimeError(f"postfix start failed: {started.stderr.strip()}\n{log}")
    deadline = time.monotonic() + 20
    for port in lab.ports.values():
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    log = lab.log()
                    lab.stop()
                    raise RuntimeError(f"smtpd never listened on {port}\n{log}") from None
                time.sleep(0.05)
    return lab


def _which(name: str) -> str:
    found = shutil.which(name, path=SBIN_PATH)
    if found is None:
        raise RuntimeError(f"{name} not installed")
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
