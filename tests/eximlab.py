"""Start a private Exim for the tests: own config, spool and log in a temp dir, loopback only.

Why a real Exim: whether the relay-ctrl directory relays is decided by Exim's dsearch lookup
and by what Exim calls the client (``$sender_host_address``), not by what we think they are.
The ACL under test is read from ``contrib/exim-relay-ctrl.conf`` (its macros and its accept
statement), so the documented snippet is the one proven. The instance never delivers: the
RCPT ACL either accepts by that statement or denies, DATA is refused before any message is
read, there are no routers, and the daemon runs without a queue runner (``-bd``, no ``-q``).

Listeners: ``v4`` (127.0.0.1) and ``v6`` ([::1]) on one port; ``mapped`` on another, an IPv6
socket bound to [::ffff:127.0.0.1], which IPv4 clients reach as ``::ffff:127.0.0.N`` (what
a dual-stack wildcard socket sees, without listening beyond loopback).

Where Exim comes from: ``$RELAYWATCH_EXIM``, else an installed ``exim4``, else the binary
.ci/run unpacks from Debian's exim4-daemon-light into /opt/relaywatch-exim (it cannot be
installed beside postfix: both provide mail-transport-agent). The binary is compiled to run
as ``Debian-exim``, so that user must exist.

Why it needs root, and why no TRUSTED_CONFIG_LIST: Exim keeps root privilege (needed to
switch to Debian-exim for each connection) with ``-C FILE`` only if the caller is root, or
if FILE is listed in TRUSTED_CONFIG_LIST (/etc/exim4/trusted_configs in Debian's build);
otherwise it runs as the caller. Run by root, it also requires the file to be owned by root
(``Configure owner: 0:0``) and writable by no one else; the lab writes it so, and changes
nothing under /etc.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import smtplib
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import postfixlab

SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
#: Where .ci/run unpacks exim4-daemon-light (``dpkg-deb -x``).
UNPACKED = Path("/opt/relaywatch-exim/usr/sbin/exim4")
EXIM_USER = "Debian-exim"
SNIPPET = Path(__file__).resolve().parent.parent / "contrib" / "exim-relay-ctrl.conf"

#: A recipient domain the lab is not the destination for, so relaying is what is tested.
REMOTE_RCPT = "someone@example.net"
REFUSAL = "relay not permitted"

_MACRO = re.compile(r"^([A-Z][A-Z0-9_]*)\s*=\s*(.*)$")


def binary() -> str | None:
    """The Exim binary to run, or None."""
    env = os.environ.get("RELAYWATCH_EXIM")
    if env:
        return env
    found = shutil.which("exim4", path=SBIN_PATH)
    if found:
        return found
    return str(UNPACKED) if UNPACKED.exists() else None


def missing() -> list[str]:
    """What stops a lab from running here (empty if nothing)."""
    exim = binary()
    if exim is None:
        return [f"no exim4 (install exim4-daemon-light, or unpack it into {UNPACKED.parents[2]} "
                "as .ci/run does)"]
    problems = []
    if os.geteuid() != 0:
        problems.append("not root (Exim keeps root for a -C config only when root runs it)")
    try:
        pwd.getpwnam(EXIM_USER)
    except KeyError:
        problems.append(f"no {EXIM_USER} user (Debian's Exim is compiled to run as it)")
    else:
        done = subprocess.run([exim, "-bV"], capture_output=True, text=True, timeout=30,
                              check=False)
        if "Exim version" not in done.stdout:  # e.g. a library that does not resolve
            problems.append(f"{exim} -bV: {(done.stderr or done.stdout).strip()[:300]}")
    return problems


def snippet(path: Path = SNIPPET) -> tuple[dict[str, str], list[str]]:
    """The macros and the ACL statement lines of contrib/exim-relay-ctrl.conf."""
    macros: dict[str, str] = {}
    acl: list[str] = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _MACRO.match(line)
        if match:
            macros[match[1]] = match[2]
        else:
            acl.append(line)
    return macros, acl


@dataclass
class EximLab:
    """A running private Exim daemon.

    Attributes:
        root: the temp directory (config, spool/, log/, relay-ctrl/).
        relay_ctrl: the directory the ACL looks clients up in.
        ports: listener name (``v4``, ``v6``, ``mapped``) -> port.
    """

    root: Path
    relay_ctrl: Path
    ports: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def connect(self, listener: str, source: str) -> smtplib.SMTP:
        """An SMTP session from ``source`` to ``listener``, after EHLO and MAIL FROM."""
        host = "::1" if listener == "v6" else "127.0.0.1"
        client = smtplib.SMTP(timeout=20)
        client.source_address = (source, 0)
        client.connect(host, self.ports[listener])
        client.ehlo("probe.invalid")
        client.mail("probe@example.org")
        return client

    def probe(self, listener: str, source: str) -> tuple[int, str]:
        """Connect from ``source`` and return the reply to ``RCPT TO:<someone@example.net>``."""
        with self.connect(listener, source) as client:
            code, text = client.rcpt(REMOTE_RCPT)
        return code, text.decode("ascii", "replace")

    def log(self) -> str:
        """Exim's main and panic logs and its stderr so far (for failure messages)."""
        parts = []
        for name in ("log/mainlog", "log/paniclog", "stderr"):
            try:
                parts.append(f"--- {name}\n" + (self.root / name).read_text(errors="replace"))
            except FileNotFoundError:
                pass
        return "\n".join(parts)

    def stop(self) -> None:
        """Stop the daemon (SIGTERM, then SIGKILL) and remove the directory."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def write_config(lab: EximLab, exim: str, expire: int) -> Path:
    """The lab's configuration: the contrib snippet's ACL, with its macros pointed here."""
    macros, acl = snippet()
    macros.update(RELAYWATCH_DIR=str(lab.relay_ctrl), RELAYWATCH_EXPIRE=str(expire))
    root, v4v6, mapped = lab.root, lab.ports["v4"], lab.ports["mapped"]
    text = "\n".join(f"{name} = {value}" for name, value in macros.items()) + f"""

# A private Exim for relaywatch's tests: loopback only, never delivers.
exim_path = {exim}
primary_hostname = lab.invalid
qualify_domain = lab.invalid
domainlist local_domains = lab.invalid
local_interfaces = <; [127.0.0.1]:{v4v6} ; [::1]:{v4v6} ; [::ffff:127.0.0.1]:{mapped}
spool_directory = {root}/spool
log_file_path = {root}/log/%slog
host_lookup =
rfc1413_hosts =
tls_advertise_hosts =
keep_environment =
acl_smtp_rcpt = acl_check_rcpt
acl_smtp_predata = acl_never

begin acl

acl_check_rcpt:
""" + "\n".join(acl) + f"""
  deny    message = {REFUSAL}

acl_never:
  deny    message = the lab never delivers

begin routers
"""
    path = root / "exim.conf"
    path.write_text(text)
    os.chown(path, 0, 0)
    os.chmod(path, 0o644)
    return path


def start(expire: int = 60) -> EximLab:
    """Create and start a private Exim; ``expire`` is the snippet's RELAYWATCH_EXPIRE.

    The lab lives under the system temp dir, not pytest's 0700 ``tmp_path``: Exim's SMTP
    processes run as Debian-exim and must search the relay-ctrl directory. The root is made
    0711 (traversable, not listable).

    Returns:
        The running lab; call ``stop()`` when done (it also removes the directory).
    """
    exim = binary()
    if exim is None:
        raise RuntimeError("; ".join(missing()))
    root = Path(tempfile.mkdtemp(prefix="relaywatch-eximlab-"))
    os.chmod(root, 0o711)
    lab = EximLab(root=root, relay_ctrl=root / "relay-ctrl")
    lab.relay_ctrl.mkdir()
    os.chmod(lab.relay_ctrl, 0o755)
    user = pwd.getpwnam(EXIM_USER)
    for name in ("spool", "log"):
        (root / name).mkdir()
        os.chown(root / name, user.pw_uid, user.pw_gid)
    lab.ports = {"v4": postfixlab.free_port(), "mapped": postfixlab.free_port()}
    lab.ports["v6"] = lab.ports["v4"]
    config = write_config(lab, exim, expire)
    # -bdf: the daemon stays in the foreground as our child, so no pid file is needed
    # (Exim 4.96 re-execs exim_path -oPX to remove one at SIGTERM).
    with (root / "stderr").open("wb") as stderr:
        lab.process = subprocess.Popen([exim, "-C", str(config), "-bdf"], stdin=subprocess.DEVNULL,
                                       stdout=stderr, stderr=stderr)
    deadline = time.monotonic() + 20
    for host, port in (("127.0.0.1", lab.ports["v4"]), ("::1", lab.ports["v6"]),
                       ("127.0.0.1", lab.ports["mapped"])):
        while True:
            try:
                socket.create_connection((host, port), timeout=1).close()
                break
            except OSError:
                if lab.process.poll() is not None or time.monotonic() > deadline:
                    log = lab.log()
                    lab.stop()
                    raise RuntimeError(f"exim never listened on [{host}]:{port}\n{log}") from None
                time.sleep(0.05)
    return lab
