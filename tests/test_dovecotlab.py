"""Prove relaywatch's matcher on what a real Dovecot 2.3 and 2.4 write, in both log modes.

Why: the pattern sets' samples are lines someone wrote down. Here a private Dovecot
(``tests/dovecotlab.py``) logs real imap and pop3 sessions from chosen loopback sources,
to its own ``log_path`` file and through a private rsyslogd, and the matcher must find
exactly one login per successful login, with exactly the client's source address, and
nothing in failed or aborted sessions or in the hostile accounts' lines, which forge
``rip=6.6.6.6``. Each test runs on both versions: the host's 2.3 and Debian 13's 2.4 in its
cached root (``version`` in ``tests/dovecotlab.py``).

The ground truth is the client side: which source address each session came from and
whether it authenticated. The lab finds each action's line by that source, never by a
pattern of relaywatch's, so the matcher is not graded by itself. The log is cut into lines
by relaywatch's own reader (``sources.lines``), as the daemon will cut it.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from logwatch import patternset
from logwatch.matcher import Matcher, Verdict
from logwatch.sources.lines import LineSplitter, decode_batch
from tests.dovecotlab import (FORGED_IP, HOSTILE_BRACKET, HOSTILE_COMMA, INJECTED,
                              LOGIN_MESSAGE, VERSIONS, Attempt, DovecotLab, LogMode, Version,
                              need_lab, processes_in_group)

MODES: list[LogMode] = ["file", "syslog"]
#: Every (version, mode) the lab runs, as the module's runs and the stop test take them.
RUNS = [(v, m) for v in VERSIONS for m in MODES]
HOSTILE = (HOSTILE_BRACKET, HOSTILE_COMMA)

#: How a login's line starts in each mode: Dovecot's default ``log_timestamp`` with the
#: ``Info:`` level, and rsyslog's RFC 3339 stamp with microseconds, host and tag; then the
#: version's message (2.3 ``Login:``, 2.4 ``Logged in:``).
PREFIX = {
    "file": r"[A-Z][a-z]{2} [ 0-3]\d \d\d:\d\d:\d\d (imap|pop3)-login: Info: ",
    "syslog": (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]\d\d:\d\d \S+ "
               r"dovecot: (imap|pop3)-login: "),
}


@dataclass(frozen=True)
class Run:
    """What one lab session did (client side) and what Dovecot wrote (the whole log)."""

    mode: LogMode
    version: Version
    attempts: tuple[Attempt, ...]
    lines: tuple[str, ...]


def play(lab: DovecotLab) -> list[Attempt]:
    """Successful, failed and aborted sessions over both protocols, IPv4 and IPv6.

    Successful sessions come from 127.0.0.2-5, 127.0.0.10 and ::1; failed and aborted
    ones from 127.0.0.20-31 and ::1. A failed session's IPv4 address among the logins is
    caught by address; ::1, the only IPv6 loopback address, by the exact login count.
    """
    done: list[Attempt] = []
    for index, user in enumerate(lab.users):
        done.append(lab.login("imap", user, source=f"127.0.0.{2 + index}"))
        done.append(lab.login("pop3", user, source="::1"))
    done.append(lab.login("imap", "alice", source="::1"))
    done.append(lab.login("pop3", "bob", source="127.0.0.10"))
    done.append(lab.fail_login("imap", HOSTILE_BRACKET, source="127.0.0.20"))
    done.append(lab.fail_login("pop3", HOSTILE_COMMA, source="::1"))
    done.append(lab.fail_login("imap", "alice", source="127.0.0.21"))
    done.append(lab.fail_login("pop3", INJECTED, source="127.0.0.22"))
    done.append(lab.fail_login("imap", INJECTED, source="::1"))
    done.append(lab.abort("imap", source="127.0.0.30"))
    done.append(lab.abort("pop3", source="::1"))
    done.append(lab.abort("pop3", source="127.0.0.31", user=HOSTILE_BRACKET))
    return done


@pytest.fixture(scope="module", params=RUNS, ids=lambda p: f"{p[0]}-{p[1]}")
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """One lab session per version and log mode, shared by the tests below (a session
    takes about 15 s, nearly all of it Dovecot's delay on each failed login: 2 s, more for
    a repeated failure from the same address)."""
    version: Version
    mode: LogMode
    version, mode = request.param
    need_lab(mode, version)
    with DovecotLab(tmp_path_factory.mktemp(f"{version}-{mode}"), log=mode,
                    version=version) as lab:
        attempts = tuple(play(lab))
    # Read after stop: the kept copy, with everything Dovecot and rsyslogd flushed.
    lines = decode_batch(LineSplitter().feed(lab.log_path.read_bytes()))
    assert list(lines) == lab.lines()
    return Run(mode, version, attempts, lines)


@pytest.fixture
def matcher() -> Matcher:
    """A fresh matcher for each test, as the daemon has for a log it reads from the start.

    Why not one per module: the matcher follows the version of the last start-up line it
    read, so one shared by the 2.3 runs and then the 2.4 runs would judge 2.4's lines with
    the sets 2.3's start-up line chose (what an in-place upgrade does to a running daemon:
    see tests/test_dovecot24_lines.py).
    """
    return Matcher(patternset.builtin())


def verdicts(run: Run, matcher: Matcher) -> Iterator[tuple[str, Verdict]]:
    for line in run.lines:
        yield line, matcher.match(line)


def test_each_successful_login_is_recognised_exactly_once_with_its_source(
        run: Run, matcher: Matcher) -> None:
    """In log order, the logins the matcher found are exactly the sessions that logged
    in: same count, same source, same user, same service; none more, none fewer."""
    found = [(v.ip, v.user, v.service) for _, v in verdicts(run, matcher)
             if v.result == "login"]
    expected = [(a.source, a.user, f"{a.protocol}-login") for a in run.attempts
                if a.action == "login"]
    assert found == expected


def test_each_action_s_own_line_gets_its_verdict(run: Run, matcher: Matcher) -> None:
    """The line that ended each action: a login gives its source; a failed or aborted
    session's line is recognised as not a login (``ignored``), with no address."""
    for attempt in run.attempts:
        verdict = matcher.match(attempt.line)
        if attempt.action == "login":
            assert (verdict.result, verdict.ip) == ("login", attempt.source), attempt.line
        else:
            assert (verdict.result, verdict.ip) == ("ignored", None), attempt.line


def test_no_line_yields_an_address_that_did_not_log_in(run: Run, matcher: Matcher) -> None:
    """Not the forged 6.6.6.6, not a failed or aborted session's source, not ``lip=``:
    only the sources of successful sessions, over every line of the log (the auth
    process's and mail processes' lines, which carry the hostile names, included)."""
    allowed = {a.source for a in run.attempts if a.action == "login"}
    for line, verdict in verdicts(run, matcher):
        assert verdict.ip != FORGED_IP, line
        assert verdict.ip is None or verdict.ip in allowed, line
    refused = {"127.0.0.20", "127.0.0.21", "127.0.0.22", "127.0.0.30", "127.0.0.31"}
    assert not refused & allowed


def test_the_hostile_text_reached_the_log(run: Run) -> None:
    """The attacks are live, or the tests above prove nothing: the hostile accounts'
    Login lines really carry ``rip=6.6.6.6`` before the real field, and the log holds
    the mail processes' lines for them."""
    hostile = [a for a in run.attempts if a.action == "login" and a.user in HOSTILE]
    assert len(hostile) == 4
    for attempt in hostile:
        assert attempt.line.index(f"rip={FORGED_IP}") < attempt.line.index(
            f"rip={attempt.source}, ")
    assert any(f"imap({HOSTILE_BRACKET})<" in line for line in run.lines)


def test_a_name_with_line_breaks_does_not_start_a_line(run: Run) -> None:
    """An unknown client's name with CR LF and U+2028, each before a forged Login line:
    Dovecot writes CR and LF as "?", so no line of relaywatch's reader starts with a
    forged stamp. U+2028 does reach the log raw in 2.3 and 2.4 alike (asserted, so the attack is known to be
    live): only a reader that broke lines at it, as ``str.splitlines`` does, would
    see the forged line, with the failed client's real address in its tail."""
    injected = [a for a in run.attempts if a.user == INJECTED]
    assert len(injected) == 2
    for line in run.lines:
        assert not line.startswith(("2001-01-01T", "Jan  1 00:00:00")), line
        assert "\r" not in line, line
    for attempt in injected:
        assert "\u2028Jan  1 00:00:00 imap-login: Info: Login: user=<y>" in attempt.line


def test_login_lines_have_the_mode_s_format(run: Run) -> None:
    """The file mode writes Dovecot's own format and the syslog mode rsyslog's Debian 12
    default, with the version's own message, so each run tests the prefix and the version
    it claims to test: a 2.4 run whose lines read like 2.3's would prove nothing new."""
    logins = [a.line for a in run.attempts if a.action == "login"]
    assert logins
    prefix = re.compile(PREFIX[run.mode] + re.escape(LOGIN_MESSAGE[run.version]) + " user=<")
    for line in logins:
        assert prefix.match(line), line
    started = [line for line in run.lines if " starting up " in line]
    assert len(started) == 1 and f"Dovecot v{run.version}." in started[0], started


@pytest.mark.parametrize(("version", "mode"), RUNS, ids=[f"{v}-{m}" for v, m in RUNS])
def test_the_lab_stops_everything_when_the_test_fails(
        version: Version, mode: LogMode, tmp_path: Path) -> None:
    """A failing test must not leave a Dovecot or rsyslogd behind holding its ports, nor
    (2.4) anything mounted in or written to the cached Debian root."""
    need_lab(mode, version)
    with pytest.raises(RuntimeError, match="the test failed"):
        with DovecotLab(tmp_path, log=mode, version=version) as lab:
            lab.login("imap", "alice", source="127.0.0.40")
            port, root = lab.imap_port, lab.root
            raise RuntimeError("the test failed")
    assert set(lab.pids) == ({"dovecot", "rsyslogd"} if mode == "syslog" else {"dovecot"})
    for name, pid in lab.pids.items():
        assert processes_in_group(pid) == [], name
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=10).close()
    assert not root.exists()
    assert "rip=127.0.0.40, " in lab.log_path.read_text()
    if version == "2.4":
        assert lab.debian_root is not None
        with open("/proc/self/mounts") as f:  # the lab's mounts were its namespace's alone
            assert not [row for row in f if str(lab.debian_root) in row]
        assert not any((lab.debian_root / "mnt").iterdir())
        assert not any((lab.debian_root / "tmp").iterdir())


def test_the_fixture_gives_a_running_lab(dovecot_lab: DovecotLab) -> None:  # noqa: F811
    """The importable fixture: a lab that is up, whose live log can be read mid-test, of
    the version it says; and a restart writes a second start-up line and serves again."""
    attempt = dovecot_lab.login("imap", "bob", source="127.0.0.50")
    assert attempt.line in dovecot_lab.lines()
    assert dovecot_lab.log_path.is_relative_to(dovecot_lab.root)
    assert f" {LOGIN_MESSAGE[dovecot_lab.version]} user=<bob>" in attempt.line
    dovecot_lab.restart()
    again = dovecot_lab.login("pop3", "alice", source="127.0.0.51")
    started = [line for line in dovecot_lab.lines() if " starting up " in line]
    assert len(started) == 2 and all(f"Dovecot v{dovecot_lab.version}." in s for s in started)
    assert dovecot_lab.lines().index(started[1]) < dovecot_lab.lines().index(again.line)
