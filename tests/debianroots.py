"""Clean Debian roots for tests/test_debian_package.py: made once, used many times, never changed.

``base(suite)`` returns ``/var/cache/relaywatch-roots/deb-SUITE``, a ``debootstrap
--variant=minbase`` root with apt's lists filled, made under an exclusive lock on
``deb-SUITE.lock``. It is built in ``deb-SUITE.partial`` and renamed into place only when
complete (a marker file, ``.relaywatch-root-complete``, inside it says so), so a root whose
build was killed half-way is removed and made again, never used. Other projects' roots in
the same directory (``bookworm``, ``trixie``) are not touched.

``Scratch(base)`` gives a throw-away root on top of it: an overlay mount whose upper
layer lives in a temporary directory (or, where overlayfs cannot be mounted, a ``cp -a
--reflink=auto`` copy), with /proc, /sys and /dev bound in, so every test run starts from
the same clean root and the cached one stays as debootstrap left it. Downloaded .debs are
kept in ``deb-SUITE.archives`` between runs (bound onto the root's apt archive
directory): packages are still installed from scratch each time, only not fetched again.

Run ``python3 tests/debianroots.py bookworm trixie`` to make (or check) the roots ahead.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOTS = Path(os.environ.get("RELAYWATCH_ROOTS", "/var/cache/relaywatch-roots"))
MARKER = ".relaywatch-root-complete"
HOST_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def mirror() -> str:
    """The Debian mirror this machine's apt uses (its first ``URIs:`` for .../debian)."""
    if HOST_SOURCES.exists():
        for line in HOST_SOURCES.read_text().splitlines():
            if line.startswith("URIs:"):
                uri = line.split(":", 1)[1].strip()
                if not uri.rstrip("/").endswith("-security"):
                    return uri
    return "http://deb.debian.org/debian"


def _sources(suite: str, uri: str) -> str:
    security = uri.rstrip("/") + "-security"
    return (f"Types: deb\nURIs: {uri}\nSuites: {suite} {suite}-updates\nComponents: main\n"
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
            f"Types: deb\nURIs: {security}\nSuites: {suite}-security\nComponents: main\n"
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")


def base(suite: str, log: Path | None = None) -> Path:
    """The cached clean root for ``suite``, made first if there is none (about 40 s)."""
    ROOTS.mkdir(parents=True, exist_ok=True)
    final = ROOTS / f"deb-{suite}"
    with open(ROOTS / f"deb-{suite}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / MARKER).exists():
            return final
        partial = ROOTS / f"deb-{suite}.partial"
        for stale in (partial, final):  # a build that died, or a root without its marker
            if stale.exists():
                _umount_under(stale)
                shutil.rmtree(stale)
        log = log or ROOTS / f"deb-{suite}.log"
        started = time.monotonic()
        with open(log, "w") as out:
            subprocess.run(["debootstrap", "--variant=minbase", suite, str(partial), mirror()],
                           stdout=out, stderr=subprocess.STDOUT, check=True)
            (partial / "etc/apt/sources.list.d/debian.sources").write_text(_sources(suite, mirror()))
            with contextlib.suppress(FileNotFoundError):
                (partial / "etc/apt/sources.list").unlink()
            _copy_ca(partial)
            (partial / "etc/apt/apt.conf.d/99relaywatch-test").write_text(
                'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n'
                'Acquire::Retries "3";\nDpkg::Use-Pty "false";\n')
            with mounted(partial):
                run_in(partial, ["apt-get", "update", "-q"], stdout=out, stderr=subprocess.STDOUT)
                run_in(partial, ["apt-get", "clean"], stdout=out, stderr=subprocess.STDOUT)
        (partial / MARKER).write_text(f"debootstrap --variant=minbase {suite} {mirror()}\n"
                                      f"made in {time.monotonic() - started:.0f} s\n")
        partial.rename(final)
        return final


def _copy_ca(root: Path) -> None:
    """The host's CA bundle, for an HTTPS mirror behind this machine's re-signing proxy."""
    if HOST_CA.exists():
        target = root / "etc/ssl/certs"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(HOST_CA, target / "ca-certificates.crt")


def _umount_under(path: Path) -> None:
    """Unmount whatever an interrupted run left mounted under ``path`` (deepest first)."""
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    prefix = str(path.resolve()).rstrip("/") + "/"
    for point in sorted((m for m in mounts if (m + "/").startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False)


ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
       "DEBIAN_FRONTEND": "noninteractive", "LANG": "C.UTF-8", "HOME": "/root", "TERM": "dumb"}


def run_in(root: Path, argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` chrooted into ``root`` with a plain environment; fail on a non-zero status."""
    kw.setdefault("check", True)
    kw.setdefault("text", True)
    kw.setdefault("env", ENV)
    return subprocess.run(["chroot", str(root), *argv], **kw)  # type: ignore[call-overload,no-any-return]


@contextlib.contextmanager
def mounted(root: Path, archives: Path | None = None) -> Iterator[Path]:
    """/proc, /sys, /dev (and the shared .deb cache) bound into ``root`` while inside."""
    points: list[Path] = []
    try:
        for fs, where, opts in (("proc", "proc", []), ("sysfs", "sys", []), (None, "dev", ["--rbind"])):
            target = root / where
            target.mkdir(exist_ok=True)
            cmd = ["mount", *opts, "/dev", str(target)] if fs is None else ["mount", "-t", fs, fs, str(target)]
            subprocess.run(cmd, check=True)
            points.append(target)
        if archives is not None:
            archives.mkdir(parents=True, exist_ok=True)
            target = root / "var/cache/apt/archives"
            target.mkdir(parents=True, exist_ok=True)
            subprocess.run(["mount", "--bind", str(archives), str(target)], check=True)
            points.append(target)
        yield root
    finally:
        for point in reversed(points):
            subprocess.run(["umount", "-R", "-l", str(point)], check=False)


class Scratch:
    """A throw-away root over ``base``: ``with Scratch(base) as root: ...``; gone afterwards."""

    def __init__(self, base_root: Path) -> None:
        self.base = base_root
        self.archives = base_root.with_name(base_root.name + ".archives")
        self.tmp = Path(tempfile.mkdtemp(prefix=f"relaywatch-{base_root.name}-", dir="/var/tmp"))
        self.root = self.tmp / "root"
        self.overlay = False
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Path:
        self.root.mkdir()
        upper, work = self.tmp / "upper", self.tmp / "work"
        upper.mkdir()
        work.mkdir()
        opts = f"lowerdir={self.base},upperdir={upper},workdir={work}"
        self.overlay = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(self.root)],
                                      capture_output=True).returncode == 0
        if not self.overlay:
            self.root.rmdir()
            subprocess.run(["cp", "-a", "--reflink=auto", str(self.base), str(self.root)], check=True)
        self._stack.enter_context(mounted(self.root, self.archives))
        return self.root

    def unmount_api(self) -> None:
        """Take /proc, /sys, /dev and the .deb cache out again, before booting the root."""
        self._stack.close()
        self._stack = contextlib.ExitStack()

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
        if self.overlay:
            subprocess.run(["umount", "-l", str(self.root)], check=False)
        _umount_under(self.tmp)
        shutil.rmtree(self.tmp, ignore_errors=True)


class Booted:
    """systemd as PID 1 of a container over ``root``: ``with Booted(root, log) as box: box.run([...])``.

    ``systemd-nspawn --register=no --keep-unit -b`` needs neither systemd nor D-Bus on the
    host; commands reach the container through ``nsenter`` into its init's namespaces, and
    ``systemctl`` talks to its systemd over the private socket (no D-Bus in the root).
    Leaving powers the container off at once (``systemctl poweroff -ff``), then asks nspawn
    (SIGTERM), then kills nspawn and the container's init by their PIDs if still there.
    """

    def __init__(self, root: Path, log: Path) -> None:
        self.root, self.log = root, log
        self.nspawn: subprocess.Popen[bytes] | None = None
        self.init = 0

    def __enter__(self) -> Booted:
        with open(self.log, "wb") as out:
            self.nspawn = subprocess.Popen(
                ["systemd-nspawn", "--register=no", "--keep-unit", "--quiet", "-D", str(self.root), "--boot"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env={**ENV, "SYSTEMD_COLORS": "0"})
        try:
            deadline = time.monotonic() + 30
            while not self.init:
                if self.nspawn.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"systemd-nspawn did not start: {self.log.read_text(errors='replace')[-2000:]}")
                children = Path(f"/proc/{self.nspawn.pid}/task/{self.nspawn.pid}/children")
                with contextlib.suppress(OSError, ValueError, IndexError):
                    self.init = int(children.read_text().split()[0])
                time.sleep(0.05)
            state = ""
            while state not in ("running", "degraded"):
                if self.nspawn.poll() is not None or time.monotonic() > deadline + 60:
                    raise RuntimeError(f"the container did not boot ({state!r}): "
                                       f"{self.log.read_text(errors='replace')[-2000:]}")
                state = self.run(["systemctl", "is-system-running"], check=False, timeout=30).stdout.strip()
                time.sleep(0.2)
        except BaseException:
            self.__exit__()
            raise
        return self

    def run(self, argv: list[str], check: bool = True, timeout: float = 60,
            **kw: object) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the container (all of its init's namespaces)."""
        return subprocess.run(["nsenter", "--target", str(self.init), "--all", *argv], env=ENV,  # type: ignore[call-overload,no-any-return]
                              capture_output=True, text=True, check=check, timeout=timeout, **kw)

    def __exit__(self, *exc: object) -> None:
        if self.nspawn is None:
            return
        if self.nspawn.poll() is not None:
            return
        # A throw-away container: power off at once (-ff: no units stopped, nothing to keep).
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.run(["systemctl", "poweroff", "--force", "--force"], check=False, timeout=10)
        try:
            self.nspawn.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            self.nspawn.terminate()
        try:
            self.nspawn.wait(timeout=30)
            return
        except subprocess.TimeoutExpired:
            pass
        # nspawn did not shut the container down: kill it, then the container's init (which
        # a killed nspawn leaves behind), checking first that the PID is still that init.
        self.nspawn.kill()
        self.nspawn.wait()
        with contextlib.suppress(OSError):
            if self.init and Path(f"/proc/{self.init}/comm").read_text().strip() == "systemd":
                os.kill(self.init, 9)


if __name__ == "__main__":
    for name in sys.argv[1:] or ["bookworm", "trixie"]:
        t0 = time.monotonic()
        print(name, base(name), f"{time.monotonic() - t0:.0f} s", flush=True)
