"""--journal: the line built from an entry, the trusted match, and a real journald with a real Dovecot.

The lab tests run relaywatch, Dovecot and ``logger`` inside a private journald's mount
namespace (``tests/journallab.py``): Dovecot's entries carry real trusted fields, a forger's
``logger -t dovecot`` line carries its own.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from logwatch.config import ConfigError, settings
from logwatch.matcher import Matcher
from logwatch.catalog import matcher as catalog_matcher
from logwatch.sources.journal import DOVECOT_EXES, default_match, entry_line, parse_matches
from tests import dovecotlab
from tests.journallab import DEV_LOG, JournalLab, need_journal_lab

#: This checkout: relaywatch runs from it, whatever the virtual environment installed.
ROOT = str(Path(__file__).resolve().parent.parent)
FORGED = "imap-login: Login: user=<mallory>, method=PLAIN, rip=198.51.100.66, lip=127.0.0.1, mpid=7, session=<x>"


# -- pure ---------------------------------------------------------------------------------

def test_entry_line_is_rfc3339_utc_then_dovecot() -> None:
    line = entry_line(1_781_092_800_123_456, b"imap-login: Login: user=<bob>")
    assert line == "2026-06-10T12:00:00.123456+00:00 dovecot: imap-login: Login: user=<bob>"


@pytest.mark.parametrize("raw, shown", [
    (b"a\nb", "a#012b"), (b"a\r\nb", "a#015#012b"), (b"a\x00b", "a#000b"), (b"\x1b[1m", "#033[1m"),
    (b"a\x7fb", "a#177b"), (b"tab\there", "tab#011here"), (b"\xff", "\ufffd"),
])
def test_entry_line_escapes_every_control_byte(raw: bytes, shown: str) -> None:
    assert entry_line(0, raw).endswith(" dovecot: " + shown)


def test_a_message_with_a_newline_cannot_forge_a_second_line() -> None:
    """A MESSAGE may hold anything: one entry is one line, and what follows a newline is
    never read as a line of its own (so never as a prefix)."""
    m = catalog_matcher((), (), ("imap-login", "pop3-login"), "2.3.19")
    message = ("imap-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<x>, method=PLAIN, "
               "rip=192.0.2.9, lip=127.0.0.1\n2026-06-10T12:00:00+00:00 dovecot: " + FORGED).encode()
    line = entry_line(1_781_092_800_000_000, message)
    assert "\n" not in line
    assert m.match(line).result != "login"
    assert m.match(entry_line(1_781_092_800_000_000, FORGED.encode())).ip == "198.51.100.66"


def test_default_match() -> None:
    assert default_match(True) == {"_SYSTEMD_UNIT": frozenset({"dovecot.service"})}
    off = default_match(False)
    assert off["_UID"] == frozenset({"0"}) and "/usr/lib/dovecot/log" in off["_EXE"]


def test_parse_matches() -> None:
    assert parse_matches(["_SYSTEMD_UNIT=a.service", "_SYSTEMD_UNIT=b.service", "_UID=0"]) == {
        "_SYSTEMD_UNIT": frozenset({"a.service", "b.service"}), "_UID": frozenset({"0"})}
    for bad in ("SYSLOG_IDENTIFIER=dovecot", "MESSAGE=x", "_UID", "lower=1", "PRIORITY=6"):
        with pytest.raises(ValueError, match="--journal-match"):
            parse_matches([bad])


def test_settings() -> None:
    s = settings({"journal": True, "relay-ctrl-dir": "/tmp/rc"})
    assert s.journal and s.log == ()
    with pytest.raises(ConfigError, match="only with --journal"):
        settings({"log": ["/x"], "journal-match": ["_UID=0"], "relay-ctrl-dir": "/tmp/rc"})
    with pytest.raises(ConfigError, match="proves nothing"):
        settings({"journal": True, "journal-match": ["SYSLOG_IDENTIFIER=dovecot"], "relay-ctrl-dir": "/tmp/rc"})
    with pytest.raises(ConfigError, match="cannot be combined"):
        settings({"journal": True, "log": ["-"], "relay-ctrl-dir": "/tmp/rc"})


# -- the lab ------------------------------------------------------------------------------

class Relaywatch:
    """``relaywatch run --journal`` inside the journal lab's namespace."""

    def __init__(self, journal: JournalLab, tmp: Path, *extra: str) -> None:
        self.journal = journal
        self.rc = tmp / "relay-ctrl"
        self.state = tmp / "state" / "state.json"
        self.stderr = tmp / "relaywatch.err"
        self.rc.mkdir(exist_ok=True)
        self.state.parent.mkdir(exist_ok=True)
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        with self.stderr.open("ab") as err:
            self.proc = self.journal.popen(
                sys.executable, "-m", "logwatch", "run", "--journal", "--relay-ctrl-dir", str(self.rc),
                "--state", str(self.state), "--never", "none", "--expire", "1h", *self.extra,
                stdin=subprocess.DEVNULL, stderr=err, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
        self.wait(lambda: self.errors().count("following the journal") >= self.starts, "relaywatch to start")

    def errors(self) -> str:
        return self.stderr.read_text() if self.stderr.exists() else ""

    def granted(self) -> set[str]:
        return {p.name for p in self.rc.iterdir() if not p.name.startswith(".")}

    def authorised(self) -> list[str]:
        return re.findall(r" authorised (\S+) ", self.errors())

    def wait(self, condition: object, what: str, deadline: float = 30.0) -> None:
        assert callable(condition)
        end = time.monotonic() + deadline
        while not condition():
            assert self.proc is None or self.proc.poll() is None, self.errors()[-3000:]
            assert time.monotonic() < end, f"timed out waiting for {what}: {self.errors()[-3000:]}"
            time.sleep(0.02)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=30)
        self.proc = None


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[JournalLab, dovecotlab.DovecotLab]]:
    need_journal_lab()
    dovecotlab.need_lab("syslog")
    with JournalLab(tmp_path) as journal:
        seen = tmp_path / "journal.txt"
        journal.follow(seen)
        with dovecotlab.DovecotLab(tmp_path, log="syslog", syslog_socket=DEV_LOG, log_file=seen,
                                   enter=journal.enter) as dovecot:
            yield journal, dovecot


@pytest.fixture
def relaywatch(lab: tuple[JournalLab, dovecotlab.DovecotLab], tmp_path: Path) -> Iterator[Relaywatch]:
    r = Relaywatch(lab[0], tmp_path)
    yield r
    if r.proc is not None:
        r.proc.kill()
        r.proc.wait()


def test_dovecot_entries_carry_the_trusted_fields(lab: tuple[JournalLab, dovecotlab.DovecotLab]) -> None:
    journal, dovecot = lab
    dovecot.login("imap", "alice", source="127.0.0.2")
    journal.logger("dovecot", FORGED)
    logins = [e for e in journal.entries("SYSLOG_IDENTIFIER=dovecot") if "Login:" in e.get("MESSAGE", "")]
    real, forged = logins
    assert real["_UID"] == "0" and real["_EXE"] in DOVECOT_EXES, real
    assert real["MESSAGE"].startswith("imap-login: Login: user=<alice>")
    # _UID comes with the datagram (SCM_CREDENTIALS), always; _COMM and _EXE journald reads
    # from /proc when the entry arrives, and a logger that has already exited leaves none.
    assert forged["_UID"] == "65534" and forged.get("_COMM", "logger") == "logger", forged
    assert forged.get("_EXE") not in DOVECOT_EXES, forged


def test_real_logins_relay_and_a_forged_entry_never_does(relaywatch: Relaywatch,
                                                         lab: tuple[JournalLab, dovecotlab.DovecotLab]) -> None:
    journal, dovecot = lab
    relaywatch.start()
    dovecot.login("imap", "alice", source="127.0.0.2")
    dovecot.login("pop3", "bob", source="127.0.0.3")
    journal.logger("dovecot", FORGED)
    journal.logger("dovecot", "imap-login: x\n" + FORGED)  # a newline inside the forged text
    relaywatch.wait(lambda: relaywatch.granted() >= {"127.0.0.2", "127.0.0.3"}, "the real logins")
    relaywatch.wait(lambda: "imitates a Dovecot login" in relaywatch.errors(), "the forgery reported")
    relaywatch.stop()
    assert relaywatch.granted() == {"127.0.0.2", "127.0.0.3"}
    err = relaywatch.errors()
    # The refusal names the sender by its trusted fields: _UID always; _COMM when journald
    # could still read it from /proc (a logger that has exited leaves none).
    assert "refused 198.51.100.66" in err and "_UID=65534" in err, err
    status = (relaywatch.state.parent / "status.json").read_text()
    assert '"refused": 1' in status.replace(" ", "") or '"refused":1' in status.replace(" ", ""), status


def test_sigkill_then_restart_authorises_every_login_exactly_once(
        relaywatch: Relaywatch, lab: tuple[JournalLab, dovecotlab.DovecotLab]) -> None:
    journal, dovecot = lab
    relaywatch.start()
    for n in range(2, 6):
        dovecot.login("imap", "alice", source=f"127.0.0.{n}")
    relaywatch.wait(lambda: len(relaywatch.granted()) == 4, "the first logins")
    time.sleep(1.2)  # a checkpoint is saved at least once a second: kill between saves too
    dovecot.login("imap", "alice", source="127.0.0.6")
    relaywatch.stop(signal.SIGKILL)
    for n in range(7, 12):  # while relaywatch is down
        dovecot.login("pop3", "bob", source=f"127.0.0.{n}")
    relaywatch.start()
    dovecot.login("imap", "bob", source="127.0.0.12")
    want = {f"127.0.0.{n}" for n in range(2, 13)}
    relaywatch.wait(lambda: relaywatch.granted() == want, "every login")
    relaywatch.stop()
    authorised = relaywatch.authorised()
    assert sorted(authorised) == sorted(want), relaywatch.errors()


def test_vacuum_while_running_loses_nothing_still_present(
        relaywatch: Relaywatch, lab: tuple[JournalLab, dovecotlab.DovecotLab]) -> None:
    journal, dovecot = lab
    relaywatch.start()
    dovecot.login("imap", "alice", source="127.0.0.2")
    relaywatch.wait(lambda: "127.0.0.2" in relaywatch.granted(), "the first login")
    journal.rotate()
    dovecot.login("imap", "alice", source="127.0.0.3")
    journal.rotate()
    journal.vacuum(files=1)
    dovecot.login("pop3", "bob", source="127.0.0.4")
    relaywatch.wait(lambda: relaywatch.granted() == {"127.0.0.2", "127.0.0.3", "127.0.0.4"}, "every login")
    relaywatch.stop()
    assert sorted(relaywatch.authorised()) == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]


def test_a_vacuumed_cursor_is_said_once_and_reading_restarts_inside_expire(
        relaywatch: Relaywatch, lab: tuple[JournalLab, dovecotlab.DovecotLab]) -> None:
    journal, dovecot = lab
    relaywatch.start()
    dovecot.login("imap", "alice", source="127.0.0.2")
    relaywatch.wait(lambda: "127.0.0.2" in relaywatch.granted(), "the first login")
    relaywatch.stop()
    journal.rotate()
    journal.rotate()
    journal.vacuum(files=1)  # every archived file: the entry at the saved cursor is gone
    dovecot.login("imap", "bob", source="127.0.0.3")
    relaywatch.start()
    relaywatch.wait(lambda: "127.0.0.3" in relaywatch.granted(), "the login after the vacuum")
    relaywatch.stop()
    assert relaywatch.errors().count("no longer in the journal") == 1
