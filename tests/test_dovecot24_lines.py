"""relaywatch's verdicts on what a real Dovecot 2.4 wrote, without the lab.

``tests/data/dovecot-2.4-lab.log`` holds the lines Debian 13's Dovecot 2.4.1 (``2.4.1-4``)
wrote in ``tests/dovecotlab.py``'s 2.4 lab, in its own ``log_path`` file and through syslog,
each after a ``# expect:`` comment (the file's header says the forms). So the 2.4 formats are
tested on every machine, also where the lab cannot run (no root, no debootstrap, no network).

Each section (file, syslog) is read as a log of its own, in order, by a fresh matcher from
relaywatch's built-in sets, as the daemon would read it, and cut at newline bytes only
(``sources.lines``), since two lines hold a raw U+2028 from a client's name.

Two tests hold the bug these lines found: Debian's start-up line reads ``Dovecot v2.4.1-4
(7d8c0e5759) starting up``, and relaywatch read no version from it (the package revision
``-4``), so (1) the dovecot-2.4 set was never chosen by version on Debian 13, and (2) a log
that holds 2.3's start-up line before 2.4's (an in-place upgrade from Debian 12 while
relaywatch runs) kept 2.3's sets, and every 2.4 login was ``nomatch``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from logwatch import patternset
from logwatch.matcher import Matcher
from logwatch.sources.lines import LineSplitter, decode_batch

DATA = Path(__file__).resolve().parent / "data" / "dovecot-2.4-lab.log"
#: A real start-up line of the host's Dovecot 2.3 (the 2.3 lab, Debian 12), for the upgrade.
STARTUP_23 = ("Nov 30 23:42:39 master: Info: Dovecot v2.3.19.1 (9b53102964) starting up for "
              "imap, pop3 (core dumps disabled)")
_EXPECT = re.compile(r"# expect: (login|ignored|nomatch|startup)(?: (\S+))?(?: -- (.+))?")
@dataclass(frozen=True)
class Expected:
    """One captured line and what relaywatch must say about it."""

    kind: str  # login, ignored, nomatch or startup
    value: str | None  # the address (login) or the version (startup)
    why: str | None
    line: str
    number: int  # the line's number in the data file, for messages


def sections() -> dict[str, list[Expected]]:
    """The data file's sections (``# -- NAME: what --`` headers), each its lines in order."""
    lines = decode_batch(LineSplitter().feed(DATA.read_bytes()))
    found: dict[str, list[Expected]] = {}
    current: list[Expected] | None = None
    pending: re.Match[str] | None = None
    for number, line in enumerate(lines, 1):
        if line.startswith("# -- "):
            current = found.setdefault(line[5:].split(":")[0], [])
        elif line.startswith("# expect:"):
            pending = _EXPECT.fullmatch(line)
            assert pending is not None, f"{DATA.name}:{number}: not an expectation: {line}"
        elif line.startswith("#") or not line:
            assert pending is None, f"{DATA.name}:{number}: an expectation without its line"
        else:
            assert current is not None and pending is not None, f"{DATA.name}:{number}: {line}"
            current.append(Expected(pending[1], pending[2], pending[3], line, number))
            pending = None
    return found


SECTIONS = sections()


def test_the_data_has_both_modes_and_every_kind_of_line() -> None:
    """The capture is what it claims: a file section and a syslog section, each with the
    master's start-up line, logins from three sources (one over IPv6, two with hostile
    names), failed and aborted sessions, and the other processes' lines."""
    assert len(SECTIONS) == 2
    for name, expected in SECTIONS.items():
        kinds = [e.kind for e in expected]
        assert kinds.count("startup") == 1, name
        assert sorted(e.value or "" for e in expected if e.kind == "login") == [
            "127.0.0.2", "127.0.0.6", "::1"], name
        assert kinds.count("ignored") == 3 and kinds.count("nomatch") >= 5, name
        assert all(" starting up " in e.line for e in expected if e.kind == "startup")
        assert any("rip=6.6.6.6" in e.line for e in expected if e.kind == "login")
        assert any("\u2028" in e.line for e in expected), name


@pytest.mark.parametrize("name", list(SECTIONS))
def test_each_line_gets_its_verdict_read_in_order(name: str) -> None:
    """Read as the daemon reads the log: the logins are exactly the captured successes,
    each claimed by the dovecot-2.4 set with the client's own address (never the forged
    6.6.6.6); the failed and aborted sessions are claimed as not logins; the rest is no
    set's. The start-up line is judged by the test below, not here."""
    matcher = Matcher(patternset.builtin())
    for e in SECTIONS[name]:
        verdict = matcher.match(e.line)
        where = f"{DATA.name}:{e.number}: {e.line}"
        if e.kind == "login":
            assert (verdict.result, verdict.ip) == ("login", e.value), where
            assert (verdict.pattern_set, verdict.pattern) == ("dovecot-2.4", "login"), where
        elif e.kind == "ignored":
            assert (verdict.result, verdict.ip) == ("ignored", None), where
            assert (verdict.pattern_set, verdict.pattern) == ("dovecot-2.4", "aborted"), where
        elif e.kind == "nomatch":
            assert verdict.result == "nomatch", where
        assert verdict.ip != "6.6.6.6", where


@pytest.mark.parametrize("name", list(SECTIONS))
def test_classify_agrees_with_match(name: str) -> None:
    """The counting path (``classify``) decides every captured line as ``match`` does."""
    by_match, by_classify = Matcher(patternset.builtin()), Matcher(patternset.builtin())
    for e in SECTIONS[name]:
        verdict = by_match.match(e.line)
        assert by_classify.classify(e.line) == (verdict.result, verdict.pattern_set,
                                                verdict.pattern), e.line


@pytest.mark.parametrize("name", list(SECTIONS))
def test_the_start_up_line_chooses_the_2_4_set(name: str) -> None:
    """Debian 13's start-up line says which Dovecot runs: after it, the dovecot-2.4 set
    alone claims lines (as the 2.3 lab's line chooses dovecot-2.0-2.3)."""
    matcher = Matcher(patternset.builtin())
    (e,) = [e for e in SECTIONS[name] if e.kind == "startup"]
    assert e.value is not None
    verdict = matcher.match(e.line)
    assert (verdict.result, verdict.pattern) == ("ignored", "dovecot-startup"), e.line
    assert matcher.version is not None and matcher.version.startswith(e.value), e.line
    assert [s.name for s in matcher.sets] == ["dovecot-2.4"]


def test_the_2_3_start_up_line_chooses_the_2_3_set() -> None:
    """The control for the test above and below: the real 2.3 line is read."""
    matcher = Matcher(patternset.builtin())
    assert matcher.match(STARTUP_23).pattern == "dovecot-startup"
    assert (matcher.version, [s.name for s in matcher.sets]) == ("2.3.19.1", ["dovecot-2.0-2.3"])


@pytest.mark.parametrize("name", list(SECTIONS))
def test_an_upgrade_from_2_3_in_the_same_log_still_authorises(name: str) -> None:
    """Debian 12 to 13 in place, relaywatch running: the log holds 2.3's start-up line,
    then 2.4's and 2.4's logins. Every login must still be recognised."""
    matcher = Matcher(patternset.builtin())
    matcher.match(STARTUP_23)
    found = [(matcher.match(e.line).result, e.line) for e in SECTIONS[name]]
    assert [line for result, line in found if result == "login"] == [
        e.line for e in SECTIONS[name] if e.kind == "login"]
