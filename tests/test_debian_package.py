"""The Debian package, for real: built with Debian's tools, installed with apt in clean roots.

``bash contrib/build-deb.sh`` builds ``relaywatch_VERSION_all.deb`` once per session; lintian
must find no error in it. For Debian 12 (bookworm) and 13 (trixie), throw-away roots over a
cached ``debootstrap --variant=minbase`` root (tests/debianroots.py) get ``apt install
./relaywatch_*.deb`` from the Debian mirror alone (no pip anywhere). In one (chroot): the
command's faces, the package's files, ``systemd-analyze verify`` of the installed units, and
the suite's pure tests against Debian's python3-regex, -rich, -watchdog and -dnspython with
Debian's pytest. The other boots with systemd as its PID 1 (``systemd-nspawn``): the units
are neither enabled nor started; the file unit refuses Dovecot's 0600 log with the README's
fix in its message, starts once the log is 0640 root:adm on a host without qmail's
directory (and fails with 226/NAMESPACE there without ReadWritePaths='s "-"), grants and
reloads; the journald unit's reload reaches relaywatch and its pipe survives.

Needs root, debootstrap, debhelper, dh-python, lintian and systemd-container (.ci/run
installs them) and the Debian mirror. Skipped without them on a developer's machine; under
CI=true a missing need fails. Time (measured here): making the two roots, once, 50 to 65 s
each; then a run costs 1.5 to 3 minutes: the build (6 to 16 s), per suite the installs from
the cached .debs (15 to 60 s, more on a busy machine), the boot (1 s) and the tests (20 s).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import debianroots
from tests.conftest import ROOT

SUITES = ("bookworm", "trixie")
PURE_TESTS = ("test_matcher.py", "test_pattern_samples.py", "test_corpus.py", "test_versions.py",
              "test_ledger.py", "test_config.py")
UNIT_DIR = "/lib/systemd/system"  # bookworm's debhelper puts units there; /lib is /usr/lib on trixie
# A throw-away root needs no fsync per unpacked file (a third of the install's time here).
UNSAFE_IO = ("-o", "Dpkg::Options::=--force-unsafe-io")
VERSION = re.search(r'^version\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)[1]  # type: ignore[index]


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (debootstrap, chroot, mount)"
    for tool in ("debootstrap", "dpkg-buildpackage", "dh", "pybuild", "lintian", "chroot", "mount",
                 "systemd-nspawn", "nsenter"):
        if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            return f"needs {tool} (.ci/run installs it)"
    return None


_why = _missing()
if _why is not None:
    if os.environ.get("CI") == "true":
        raise RuntimeError(f"test_debian_package: {_why}")
    pytest.skip(_why, allow_module_level=True)


def line(login: str = "alice", ip: str = "198.51.100.7") -> str:
    """A Dovecot 2.3 login as ``journalctl -o short-iso`` prints it, stamped now."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime())
    return (f"{stamp} mail dovecot[812]: imap-login: Login: user=<{login}>, method=PLAIN, rip={ip}, "
            f"lip=192.0.2.1, mpid=4242, TLS, session=<abcDEF12>")


def run(root: Path, *argv: str, check: bool = True, timeout: float = 300, **kw: object) -> subprocess.CompletedProcess[str]:
    return debianroots.run_in(root, list(argv), capture_output=True, check=check, timeout=timeout, **kw)


@pytest.fixture(scope="session")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deb")
    started = time.monotonic()
    built = subprocess.run(["bash", str(ROOT / "contrib" / "build-deb.sh"), str(out)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    path = Path(built.stdout.strip().splitlines()[-1])
    assert path.name == f"relaywatch_{VERSION}_all.deb" and path.exists()
    print(f"built {path.name} in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return path


def test_lintian_finds_no_errors(deb: Path) -> None:
    lintian = subprocess.run(["lintian", "--allow-root", "--fail-on", "error", str(deb)],
                             capture_output=True, text=True, timeout=600)
    print(f"lintian: {lintian.stdout.strip() or '(nothing)'}", file=sys.stderr)
    assert lintian.returncode == 0, lintian.stdout + lintian.stderr
    assert not re.search(r"^E: ", lintian.stdout, re.MULTILINE)


class Installed:
    def __init__(self, suite: str, root: Path, apt_log: str, scratch: debianroots.Scratch) -> None:
        self.suite, self.root, self.apt_log, self.scratch = suite, root, apt_log, scratch
        self._demo: subprocess.CompletedProcess[str] | None = None

    def demo(self) -> subprocess.CompletedProcess[str]:
        """``relaywatch demo --fast``, run once per root."""
        if self._demo is None:
            started = time.monotonic()
            self._demo = run(self.root, "relaywatch", "demo", "--fast", check=False, timeout=120)
            print(f"{self.suite}: demo --fast {time.monotonic() - started:.1f} s", file=sys.stderr)
        return self._demo


@pytest.fixture(scope="module", params=SUITES)
def installed(request: pytest.FixtureRequest, deb: Path) -> Iterator[Installed]:
    suite = request.param
    started = time.monotonic()
    base = debianroots.base(suite)
    made = time.monotonic()
    scratch = debianroots.Scratch(base)
    with scratch as root:
        shutil.copy(deb, root / "tmp" / deb.name)
        # The .deb alone first: its Depends must come from Debian's archive.
        apt = run(root, "apt-get", "install", "-y", "-q", *UNSAFE_IO, f"/tmp/{deb.name}", timeout=900)
        installed_at = time.monotonic()
        # Then what the tests use: systemd-analyze (systemd is not PID 1 here), man (which
        # systemd-analyze verify runs for Documentation=man:relaywatch(8)) and pytest.
        run(root, "apt-get", "install", "-y", "-q", *UNSAFE_IO, "systemd", "man-db", "python3-pytest", "python3-hypothesis",
            timeout=900)
        print(f"{suite}: root {made - started:.1f} s, apt install ./{deb.name} {installed_at - made:.1f} s, "
              f"systemd and pytest {time.monotonic() - installed_at:.1f} s", file=sys.stderr)
        yield Installed(suite, root, apt.stdout, scratch)


def test_dependencies_come_from_debian(installed: Installed) -> None:
    root = installed.root
    status = run(root, "dpkg-query", "-W", "-f=${Status} ${Version}", "relaywatch").stdout
    assert status == f"install ok installed {VERSION}"
    for package in ("python3-regex", "python3-rich", "python3-watchdog", "python3-dnspython"):
        assert run(root, "dpkg-query", "-W", "-f=${Status}", package).stdout == "install ok installed"
    modules = run(root, "python3", "-c", "import dns.version, regex, watchdog, logwatch; from importlib.metadata import version; "
                  "print(logwatch.__file__); print(regex.__file__, dns.version.version, version('rich'), version('watchdog'))").stdout
    assert modules.startswith("/usr/lib/python3/dist-packages/logwatch/"), modules
    assert "/usr/local/" not in modules and "site-packages" not in modules
    print(f"{installed.suite}: {modules}", file=sys.stderr)
    assert not list((root / "usr/local/lib").glob("python3*/dist-packages/*")), "nothing is installed by pip"


def test_version(installed: Installed) -> None:
    assert run(installed.root, "relaywatch", "--version").stdout.strip() == f"relaywatch {VERSION}"


def test_test_pattern_on_a_sample_line(installed: Installed) -> None:
    out = run(installed.root, "relaywatch", "--test-pattern", line()).stdout
    assert re.search(r"login\s+198\.51\.100\.7\s+imap-login\s+dovecot-2\.0-2\.3/login\s+authorise\s+user=<alice>", out), out
    assert "1 login" in out


def test_demo_fast(installed: Installed) -> None:
    demo = installed.demo()
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert "198.51.100.50" in demo.stdout, demo.stdout[-2000:]


def test_demo_follows_without_tracebacks(installed: Installed) -> None:
    """Debian 12's python3-watchdog 2.2.1 gives only moves a dest_path: the follower's waker
    raised in the observer's thread on every other event (fixed in tail.py, 1b09eed)."""
    demo = installed.demo()
    assert "Traceback" not in demo.stderr + demo.stdout, demo.stderr[-3000:]


def test_package_files(installed: Installed) -> None:
    root = installed.root
    groups = run(root, "id", "-nG", "relaywatch").stdout.split()
    assert "relaywatch" in groups and "adm" in groups
    state = run(root, "stat", "-c", "%U:%G %a", "/var/lib/relaywatch").stdout.strip()
    assert state == "relaywatch:relaywatch 750"
    conffiles = run(root, "dpkg-query", "-W", "-f=${Conffiles}", "relaywatch").stdout
    assert "/etc/relaywatch/relaywatch.toml" in conffiles
    text = (root / "etc/relaywatch/relaywatch.toml").read_text()
    assert all(not ln.strip() or ln.lstrip().startswith("#") for ln in text.splitlines()), "every setting commented out"
    parsed = run(root, "python3", "-c", "import tomllib; print(tomllib.load(open('/etc/relaywatch/relaywatch.toml', 'rb')))")
    assert parsed.stdout.strip() == "{}"
    refused = run(root, "relaywatch", "check-config", "--config", "/etc/relaywatch/relaywatch.toml", check=False)
    assert refused.returncode == 2 and "no log to follow" in refused.stderr
    assert (root / "usr/share/doc/relaywatch/logrotate.md").exists()
    man = run(root, "sh", "-c", "zcat /usr/share/man/man8/relaywatch.8.gz").stdout
    rendered = run(root, "man", "--warnings", "-P", "cat", "8", "relaywatch", env={**debianroots.ENV, "MANWIDTH": "80"})
    assert rendered.stderr == "" and "relaywatch run" in rendered.stdout, rendered.stderr
    from logwatch import config

    for option in config.OPTIONS:
        assert "\\fB\\-\\-" + option.name.replace("-", "\\-") + "\\fR" in man, f"relaywatch(8) lacks --{option.name}"
    for command in ("run", "check\\-config", "status", "tui", "demo", "\\-\\-test\\-pattern"):
        assert f"\\fB{command}\\fR" in man


def test_units_installed_not_enabled_and_verify(installed: Installed) -> None:
    root = installed.root
    units = [f"{UNIT_DIR}/relaywatch.service", f"{UNIT_DIR}/relaywatch-journald.service",
             f"{UNIT_DIR}/relaywatch-expire.service", f"{UNIT_DIR}/relaywatch-expire.timer"]
    for unit in units:
        text = (root / unit.lstrip("/")).read_text()
        assert "/usr/local/bin" not in text and ("/usr/bin/relaywatch" in text or unit.endswith(".timer"))
        state = run(root, "systemctl", "is-enabled", Path(unit).name, check=False).stdout.strip()
        started_by_its_timer = unit.endswith("-expire.service")  # no [Install]: "static"
        assert state == ("static" if started_by_its_timer else "disabled"), f"{unit}: {state}"
    assert not list((root / "etc/systemd/system").glob("*.wants/relaywatch*"))
    verify = run(root, "systemd-analyze", "verify", *units, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "relaywatch" not in verify.stdout + verify.stderr, verify.stdout + verify.stderr


def test_pure_suite_against_debians_packages(installed: Installed) -> None:
    """The suite's pure tests, run by Debian's pytest, import the installed logwatch."""
    root = installed.root
    suite = root / "tmp/suite"
    shutil.copytree(ROOT / "tests", suite / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    (suite / "contrib").mkdir()
    shutil.copy(ROOT / "contrib" / "relaywatch.toml", suite / "contrib")
    shutil.copy(ROOT / "README.md", suite)
    assert not (suite / "logwatch").exists() and not (suite / "pyproject.toml").exists()
    env = {**debianroots.ENV, "PYTHONPATH": "/tmp/suite"}
    where = run(root, "python3", "-c", "import logwatch; print(logwatch.__file__)", env=env).stdout
    assert where.startswith("/usr/lib/python3/dist-packages/logwatch/")
    tests = [f"tests/{name}" for name in PURE_TESTS]
    result = run(root, "sh", "-c", "cd /tmp/suite && exec python3 -m pytest -q -p no:cacheprovider " + " ".join(tests),
                 env=env, check=False, timeout=600)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr
    print(f"{installed.suite}: {summary}", file=sys.stderr)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert re.search(r"\d+ passed", summary) and "failed" not in summary


# A stand-in for dovecot.service: what is written to /var/tmp/dovecot-lines reaches the
# journal as dovecot.service's own output, which is what `journalctl --unit=dovecot` reads.
DOVECOT_STAND_IN = """[Unit]
Description=stand-in for Dovecot: its journal lines come from /var/tmp/dovecot-lines
[Service]
ExecStart=/usr/bin/tail -n 0 -F /var/tmp/dovecot-lines
SyslogIdentifier=dovecot
"""
SETTINGS = """log = ["/var/log/dovecot.log"]
state = "/var/lib/relaywatch/state.json"
relay-ctrl-dir = "/var/lib/relaywatch/allow"
"""


@pytest.fixture(scope="module")
def booted(installed: Installed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[debianroots.Booted]:
    """The same root, once the chroot tests are done, booted with systemd as its PID 1."""
    root = installed.root
    (root / "etc/systemd/system/dovecot.service").write_text(DOVECOT_STAND_IN)
    (root / "var/tmp/dovecot-lines").write_text("")
    # As Dovecot's log process creates log_path: root's, mode 0600.
    (root / "var/log/dovecot.log").write_text("")
    (root / "var/log/dovecot.log").chmod(0o600)
    (root / "etc/relaywatch/relaywatch.toml").write_text(SETTINGS)
    run(root, "install", "-d", "-o", "relaywatch", "-g", "relaywatch", "/var/lib/relaywatch/allow")
    assert not (root / "var/spool/relay-ctrl").exists()  # a Postfix-only host's layout
    installed.scratch.unmount_api()  # /proc, /sys and /dev go: systemd-nspawn mounts its own
    started = time.monotonic()
    with debianroots.Booted(root, tmp_path_factory.mktemp(f"boot-{installed.suite}") / "console.log") as box:
        print(f"{installed.suite}: booted in {time.monotonic() - started:.1f} s", file=sys.stderr)
        yield box


def journal(box: debianroots.Booted, unit: str) -> str:
    return box.run(["journalctl", "--unit", unit, "--no-pager", "--output=cat"]).stdout


def wait_for(what: str, ok: Callable[[], bool], box: debianroots.Booted, unit: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, f"no {what}; {unit}'s journal:\n{journal(box, unit)[-3000:]}"
        time.sleep(0.1)


def main_pid(box: debianroots.Booted, unit: str) -> int:
    return int(box.run(["systemctl", "show", "--property=MainPID", "--value", unit]).stdout.strip())


def granted(box: debianroots.Booted, ip: str) -> bool:
    return box.run(["test", "-e", f"/var/lib/relaywatch/allow/{ip}"], check=False).returncode == 0


def dovecot_log_line(ip: str, user: str) -> str:
    """A login as Dovecot writes it to its own log_path, stamped now."""
    return (f"{time.strftime('%b %d %H:%M:%S')} imap-login: Info: Login: user=<{user}>, method=PLAIN, rip={ip}, "
            f"lip=192.0.2.1, mpid=4243, TLS, session=<abcDEF13>\n")


def test_units_are_not_enabled_or_started_at_boot(booted: debianroots.Booted) -> None:
    for unit in ("relaywatch.service", "relaywatch-journald.service", "relaywatch-expire.timer"):
        assert booted.run(["systemctl", "is-enabled", unit], check=False).stdout.strip() == "disabled"
        assert booted.run(["systemctl", "is-active", unit], check=False).stdout.strip() == "inactive"


def test_file_unit_starts_reads_the_log_once_allowed_and_reloads(booted: debianroots.Booted) -> None:
    box, unit = booted, "relaywatch.service"
    # Dovecot's log as Dovecot creates it (0600 root): the start fails and says what to do.
    assert box.run(["systemctl", "start", unit], check=False).returncode != 0
    box.run(["systemctl", "stop", unit])
    box.run(["systemctl", "reset-failed", unit], check=False)
    said = journal(box, unit)
    assert "/var/log/dovecot.log: cannot read: permission denied" in said, said
    assert "Letting relaywatch read Dovecot's log" in said and "create 0640 root adm" in said

    # The README's fix: group adm, mode 0640. No /var/spool/relay-ctrl/allow on this host,
    # and ReadWritePaths=- lets the unit start all the same.
    box.run(["chgrp", "adm", "/var/log/dovecot.log"])
    box.run(["chmod", "0640", "/var/log/dovecot.log"])
    box.run(["systemctl", "start", unit])
    assert box.run(["systemctl", "is-active", unit], check=False).stdout.strip() == "active"
    pid = main_pid(box, unit)
    assert box.run(["stat", "-c", "%U:%G %a", "/var/lib/relaywatch"]).stdout.strip() == "relaywatch:relaywatch 750"
    time.sleep(1)  # the first start reads from the end of the log
    box.run(["sh", "-c", f"printf '%s' '{dovecot_log_line('203.0.113.9', 'bob')}' >>/var/log/dovecot.log"])
    wait_for("grant", lambda: granted(box, "203.0.113.9"), box, unit)

    box.run(["systemctl", "reload", unit])
    wait_for("reload", lambda: "reloaded: pattern sets" in journal(box, unit), box, unit)
    assert main_pid(box, unit) == pid
    box.run(["systemctl", "stop", unit])
    assert "stopped; 1 client(s) authorised" in journal(box, unit)


def test_without_the_dash_a_missing_read_write_path_fails_with_226(booted: debianroots.Booted) -> None:
    """Why ReadWritePaths= has its "-": without it this host's start fails (226/NAMESPACE)."""
    box, unit = booted, "relaywatch.service"
    dropin = box.root / "etc/systemd/system/relaywatch.service.d/strict-path.conf"
    dropin.parent.mkdir(parents=True)
    # The empty assignment drops the unit's own "-" entry (the list is additive).
    dropin.write_text("[Service]\nReadWritePaths=\nReadWritePaths=/var/spool/relay-ctrl/allow\n")
    try:
        box.run(["systemctl", "daemon-reload"])
        assert box.run(["systemctl", "start", unit], check=False).returncode != 0
        status = box.run(["systemctl", "show", "--property=ExecMainStatus", "--value", unit]).stdout.strip()
        assert status == "226", journal(box, unit)[-2000:]
    finally:
        shutil.rmtree(dropin.parent)
        box.run(["systemctl", "daemon-reload"])
        box.run(["systemctl", "stop", unit], check=False)
        box.run(["systemctl", "reset-failed", unit], check=False)


def test_journald_unit_reload_reaches_relaywatch(booted: debianroots.Booted) -> None:
    """relaywatch is the journald unit's main process: systemctl reload reaches it and the
    pipe from journalctl survives (the old `sh -c 'journalctl | relaywatch'` died here)."""
    box, unit = booted, "relaywatch-journald.service"
    box.run(["systemctl", "start", "dovecot.service", unit])
    pid = main_pid(box, unit)
    cmdline = box.run(["cat", f"/proc/{pid}/cmdline"]).stdout
    assert "/usr/bin/relaywatch\0run\0--log\0-\0" in cmdline, cmdline
    wait_for("start-up", lambda: "sinks: relayctrl:/var/lib/relaywatch/allow" in journal(box, unit), box, unit)
    time.sleep(1)  # journalctl --lines=0 starts from now

    def login(ip: str, user: str) -> None:
        text = f"imap-login: Login: user=<{user}>, method=PLAIN, rip={ip}, lip=192.0.2.1, mpid=4242, TLS, session=<abcDEF12>"
        box.run(["sh", "-c", f"echo '{text}' >>/var/tmp/dovecot-lines"])

    login("198.51.100.7", "alice")
    wait_for("grant before the reload", lambda: granted(box, "198.51.100.7"), box, unit)
    box.run(["systemctl", "reload", unit])
    wait_for("reload", lambda: "reloaded: pattern sets" in journal(box, unit), box, unit)
    assert box.run(["systemctl", "is-active", unit], check=False).stdout.strip() == "active"
    assert main_pid(box, unit) == pid
    login("198.51.100.8", "carol")
    wait_for("grant after the reload", lambda: granted(box, "198.51.100.8"), box, unit)
    assert "standard input ended" not in journal(box, unit)  # (at stop it may: journalctl goes too)
    box.run(["systemctl", "stop", unit])


def test_the_manual_page_is_made_from_every_option() -> None:
    """contrib/manpage.py makes relaywatch(8) for the Debian package from OPTIONS; an option
    whose default is None (--relay-ctrl-expiry) broke it, seen only when the .deb was built."""
    from logwatch import config

    root = ROOT
    done = subprocess.run([sys.executable, str(root / "contrib" / "manpage.py"), "--date", "2026-12-01"],
                          capture_output=True, text=True, cwd=root, env={"PYTHONPATH": str(root)}, timeout=60)
    assert done.returncode == 0, done.stderr
    for option in config.OPTIONS:
        assert "\\-\\-" + option.name.replace("-", "\\-") in done.stdout, option.name
