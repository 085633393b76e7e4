"""Run a private systemd-journald in a mount namespace of its own, for the journal tests.

Why a lab: the trust relaywatch puts in a journal entry rests on fields journald itself
writes (``_UID``, ``_EXE``, ``_COMM``, ``_SYSTEMD_UNIT``) from the sender's socket
credentials; only a real journald shows what a real Dovecot and a real ``logger`` get.

How: ``unshare --mount --propagation private`` runs a short script that mounts a tmpfs on
``/run/systemd``, ``/run/log``, ``/var/log/journal`` and ``/dev`` (the usual devices, and
``/dev/log`` a link to journald's ``dev-log`` socket), writes a drop-in to
``/run/systemd/journald.conf.d`` (volatile storage, no rate limit, small files, no kernel
log) and execs ``/lib/systemd/systemd-journald``. Without socket activation journald binds
its sockets itself (``/run/systemd/journal/socket``, ``stdout``, ``dev-log``; see
systemd-journald(8)); it needs no systemd as PID 1. Everything mounted is seen only inside
the namespace and vanishes with it. Whatever must log to or read this journal (Dovecot,
``logger``, ``journalctl``, relaywatch) runs inside it through ``enter``
(``nsenter --target PID --mount --``).

Usage::

    need_journal_lab()
    with JournalLab(tmp_path) as journal:
        journal.logger("dovecot", "imap-login: Login: ...", user="nobody")
        entries = journal.entries("SYSLOG_IDENTIFIER=dovecot")
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

JOURNALD = Path("/lib/systemd/systemd-journald")
#: journald's syslog socket inside the namespace (``/dev/log`` links to it there).
DEV_LOG = Path("/run/systemd/journal/dev-log")
DEADLINE = 30.0


class JournalLabError(RuntimeError):
    """The private journald could not be started or driven."""


def problem() -> str | None:
    """Why the lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "the journal lab needs root (mount namespaces, journald)"
    if not JOURNALD.exists():
        return f"{JOURNALD} is missing (Debian: systemd)"
    for tool, package in (("unshare", "util-linux"), ("nsenter", "util-linux"), ("journalctl", "systemd"),
                          ("logger", "bsdutils"), ("runuser", "util-linux")):
        if shutil.which(tool) is None:
            return f"the journal lab needs {tool} (Debian: {package})"
    return None


def need_journal_lab() -> None:
    """Skip when the lab cannot run; under CI=true fail (CI installs what it needs)."""
    why = problem()
    if why is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the journal lab: {why}")
    pytest.skip(why)


class JournalLab:
    """A private systemd-journald.

    Args:
        keep: where the lab's script and journald's output are copied on stop (evidence).
        max_file: journald's ``RuntimeMaxFileSize``: small files make rotation and vacuum
            cheap to provoke.

    Attributes (after start):
        pid: journald's pid; its mount namespace is the lab's.
        enter: the command prefix that runs a program inside the namespace.
    """

    def __init__(self, keep: Path, max_file: str = "8M") -> None:
        self.keep = Path(keep)
        self.max_file = max_file
        self.pid = 0
        self.enter: list[str] = []
        self._root = Path()
        self._journald: subprocess.Popen[bytes] | None = None
        self._followers: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> JournalLab:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        self._root = Path(tempfile.mkdtemp(prefix="journallab-"))
        script = self._root / "in-namespace.sh"
        script.write_text(f"""\
# journallab: runs inside a private mount namespace (unshare -m); nothing is seen outside.
set -eu
mount -t tmpfs -o mode=0755,size=64m journallab-run-systemd /run/systemd
mount -t tmpfs -o mode=0755,size=256m journallab-run-log /run/log
mkdir -p /var/log/journal
mount -t tmpfs -o mode=2755,size=16m journallab-var-journal /var/log/journal
mkdir /run/systemd/journald.conf.d
cat > /run/systemd/journald.conf.d/journallab.conf <<EOF
[Journal]
Storage=volatile
RateLimitIntervalSec=0
RuntimeMaxFileSize={self.max_file}
RuntimeMaxUse=200M
ReadKMsg=no
ForwardToSyslog=no
ForwardToWall=no
ForwardToConsole=no
EOF
dev=$(mktemp -d)
mount -t tmpfs -o mode=0755,size=64k journallab-dev "$dev"
for node in null zero full random urandom; do
    [ -e /dev/$node ] || continue
    : > "$dev/$node"
    mount --bind /dev/$node "$dev/$node"
done
ln -s /proc/self/fd "$dev/fd"
ln -s {DEV_LOG} "$dev/log"
mount --move "$dev" /dev
exec {JOURNALD}
""")
        out = open(self._root / "journald.out", "wb")
        try:
            self._journald = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "sh", str(script)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
        finally:
            out.close()
        self.pid = self._journald.pid
        self.enter = ["nsenter", "--target", str(self.pid), "--mount", "--"]
        seen = Path(f"/proc/{self.pid}/root") / str(DEV_LOG).lstrip("/")
        end = time.monotonic() + DEADLINE
        while not seen.exists():
            if self._journald.poll() is not None or time.monotonic() > end:
                text = (self._root / "journald.out").read_text(errors="replace")
                self.stop()
                raise JournalLabError(f"journald did not start: {text[-500:]}")
            time.sleep(0.02)

    def stop(self) -> None:
        for p in self._followers:
            _end(p)
        self._followers.clear()
        if self._journald is not None:
            _end(self._journald)
            self._journald = None
        if self._root != Path() and self._root.is_dir():
            kept = self.keep / "journallab"
            kept.mkdir(parents=True, exist_ok=True)
            for name in ("in-namespace.sh", "journald.out"):
                if (self._root / name).is_file():
                    shutil.copy2(self._root / name, kept / name)
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = Path()

    # -- driving it -------------------------------------------------------------------

    def run(self, *command: str, user: str | None = None, check: bool = True,
            timeout: float = DEADLINE) -> subprocess.CompletedProcess[str]:
        """Run ``command`` inside the namespace (as ``user`` through runuser, if given)."""
        argv = [*self.enter, *(["runuser", "-u", user, "--"] if user else []), *command]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise JournalLabError(f"{' '.join(command)}: status {done.returncode}: {done.stderr.strip()}")
        return done

    def popen(self, *command: str, **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start ``command`` inside the namespace (the caller ends it)."""
        return subprocess.Popen([*self.enter, *command], **kwargs)

    def logger(self, tag: str, message: str, user: str | None = "nobody") -> None:
        """Send one syslog message through ``/dev/log`` as ``user`` (a forger's way in)."""
        self.run("logger", "-t", tag, "--", message, user=user)

    def entries(self, *matches: str) -> list[dict[str, Any]]:
        """Every entry (optionally matching ``matches``), as journalctl's JSON objects."""
        out = self.run("journalctl", "--output=json", "--no-pager", "--all", *matches).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def follow(self, path: Path) -> None:
        """Write every entry, from the first, to ``path`` as ``journalctl -o short-iso``
        lines (for the Dovecot lab's waits), until the lab stops."""
        with open(path, "ab") as out:
            p = self.popen("journalctl", "--follow", "--lines=all", "--output=short-iso", "--no-pager",
                           stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.DEVNULL,
                           start_new_session=True)
        self._followers.append(p)

    def rotate(self) -> None:
        """Archive the active journal files (journald starts new ones)."""
        self.run("journalctl", "--rotate")

    def vacuum(self, files: int = 1) -> None:
        """Delete archived journal files, oldest first, until ``files`` remain."""
        self.run("journalctl", f"--vacuum-files={files}")

    def journal_files(self) -> list[str]:
        out = self.run("find", "/run/log/journal", "-name", "*.journal*", "-type", "f").stdout
        return sorted(out.split())


def _end(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(DEADLINE)
