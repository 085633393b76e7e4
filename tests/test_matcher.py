"""The matcher: strict prefixes, hostile lines, dispatch, and the admin-set time limit."""

from __future__ import annotations

import regex
import pytest

from logwatch import patternset, prefix
from logwatch.matcher import Matcher, Verdict
from tests.conftest import DATA

SETS = patternset.builtin()
MATCHER = Matcher(SETS)
TAIL = "imap-login: Login: user=<bob>, method=PLAIN, rip=192.0.2.7, lip=192.0.2.1, mpid=9, TLS"


@pytest.mark.parametrize("line", [
    f"Jun 10 12:00:00 mx dovecot: {TAIL}",
    f"Jun  1 12:00:00 mx dovecot: {TAIL}",
    f"Jun 01 12:00:00 mx dovecot: {TAIL}",
    f"Jun 10 12:00:00 mx dovecot[812]: {TAIL}",
    f"Jun 10 12:00:00 dovecot: {TAIL}",
    f"Jun 10 12:00:00.123456 mx.example.org dovecot[1]: {TAIL}",
    f"2024-06-10T12:00:00.123456+02:00 mx dovecot: {TAIL}",
    f"2024-06-10T12:00:00+0200 mx dovecot[812]: {TAIL}",
    f"2024-06-10T12:00:00Z mx dovecot: {TAIL}",
    f"2024-06-10 12:00:00 {TAIL.replace(': Login', ': Info: Login')}",
    f"Jun 10 12:00:00 {TAIL.replace(': Login', ': Info: Login')}",
    f"dovecot: Jun 10 12:00:00 Info: {TAIL}",
])
def test_every_prefix_layout(line: str) -> None:
    assert MATCHER.match(line)[:4] == ("login", "192.0.2.7", "bob", "imap-login")


@pytest.mark.parametrize("line, why", [
    (f"Jun 10 12:00:00 mx postfix/smtpd[1]: warning: x dovecot: {TAIL}", "another program's line"),
    (f"Jun 10 12:00:00 mx dovecot-evil: {TAIL}", "another syslog tag"),
    (f"Jun 10 12:00:00 mx sudo: dovecot: {TAIL}", "Dovecot's tag not in the tag's position"),
    (f"xJun 10 12:00:00 mx dovecot: {TAIL}", "junk before the timestamp"),
    (f"Jun 10 12:00:00 mx dovecot: {TAIL.replace('imap-login', 'imap')}", "the imap process, not the login process"),
    (f"Jun 10 12:00:00 mx dovecot: {TAIL.replace('Login:', 'Error: Login:')}", "an error, not an Info line"),
    (f"Jun 10 12:00:00 mx dovecot: {TAIL.replace('rip=192.0.2.7', 'rip=192.0.2.7%eth0')}", "a zone index"),
    (f"Jun 10 12:00:00 mx dovecot: {TAIL.replace('rip=192.0.2.7', 'rip=1.2.3')}", "a truncated address"),
    (f"Jun 10 12:00:00 mx dovecot: {TAIL.replace('rip=192.0.2.7', 'rip=')}", "an empty address"),
    (f"Jun 10 12:00:00 mx dovecot: {TAIL.replace(', mpid=9', ', rip=198.51.100.66, mpid=9')}", "a second rip= field"),
    (f"Jun 10 12:00:00 mx dovecot: {TAIL.replace('192.0.2.7', '192.0.2.17')}".split("2.17")[0] + "2.1",
     "a line cut inside rip=: 192.0.2.17 must not become 192.0.2.1"),
    (f"Jun 10 12:00:00 mx dovecot: {TAIL.replace('Login:', 'Logged in:')}".split(", lip=")[0], "2.4 cut after rip="),
    ("", "blank"),
])
def test_never_a_login(line: str, why: str) -> None:
    assert MATCHER.match(line).result != "login", why


def test_first_rip_of_a_hostile_account_is_never_taken() -> None:
    user = "x>, method=PLAIN, rip=198.51.100.66, lip=192.0.2.1, mpid=1, TLS, session=<a>, y=<"
    line = (f"Jun 10 12:00:00 mx dovecot: imap-login: Login: user=<{user}>, method=PLAIN, "
            f"rip=203.0.113.9, lip=192.0.2.1, mpid=2, TLS, session=<b>")
    verdict = MATCHER.match(line)
    assert (verdict.result, verdict.ip, verdict.user) == ("login", "203.0.113.9", user)


def test_failed_login_with_80_attacker_characters_imitating_success() -> None:
    forged = "x>, method=PLAIN, rip=198.51.100.66, lip=192.0.2.1, mpid=1, TLS, session=<a"[:80]
    for head in ("Disconnected (auth failed, 1 attempts in 2 secs)",
                 "Login aborted: Connection closed (auth failed, 1 attempts in 2 secs) (auth_failed)"):
        line = f"Jun 10 12:00:00 mx dovecot: imap-login: {head}: user=<{forged}>, method=PLAIN, rip=203.0.113.9, lip=192.0.2.1"
        assert MATCHER.match(line).result == "ignored"


def test_services_are_policy() -> None:
    line = f"Jun 10 12:00:00 mx dovecot: {TAIL.replace('imap-login', 'submission-login')}"
    assert MATCHER.match(line)[:2] == ("ignored", None)
    assert MATCHER.match(line).why == "service submission-login is not enabled"
    with_submission = Matcher(SETS, services=["submission-login"])
    assert with_submission.match(line)[:2] == ("login", "192.0.2.7")
    assert with_submission.match(f"Jun 10 12:00:00 mx dovecot: {TAIL}").result == "ignored"


def test_verdict_fields() -> None:
    verdict = MATCHER.match(f"2024-06-10T12:00:00+02:00 mx dovecot: {TAIL}")
    assert verdict == Verdict("login", "192.0.2.7", "bob", "imap-login", "dovecot-2.0-2.3", "login",
                              "2024-06-10T12:00:00+02:00")


def _brute(line: str) -> Verdict:
    """The same decision without dispatch: every pattern of every set, in order."""
    for pattern_set in SETS:
        for pattern in pattern_set.patterns:
            one = Matcher([pattern_set.__class__(pattern_set.name, "x", ("x",), (pattern,), (), True)], by_version=False)
            verdict = one.match(line)
            if verdict.result != "nomatch" or regex.fullmatch(prefix.SOURCE.replace("(?P<ts1>", "(?:").replace("(?P<ts2>", "(?:")
                                                              .replace("(?P<ts3>", "(?:")
                                                              .replace("(?P<service", "(?P<s") + "(?:" + pattern.regex + ")",
                                                              line) is not None:
                return verdict
    return Verdict("nomatch")


def test_dispatch_equals_trying_every_pattern() -> None:
    """Dispatch on the first word is only an optimisation: same verdicts as brute force."""
    every_set = Matcher(SETS, by_version=False)
    lines = [s.line for ps in SETS for s in ps.samples]
    corpus = DATA / "corpus"
    for name in ("dovecot-2.3-default.log", "dovecot-2.3-syslog-hp.log", "fail2ban-dovecot.log"):
        lines += (corpus / name).read_bytes().decode("utf-8", "replace").split("\n")
    for line in lines:
        assert every_set.match(line) == _brute(line), line


INFO_FIRST = '''
name = "info-first"
covers = ["a test: a pattern that begins where the prefix may end"]
[pattern.info]
result = "ignored"
regex = 'Info: .*'
[[sample]]
line = 'Jun 10 12:00:00 mx dovecot: imap-login: Info: Info: x'
result = "ignored"
pattern = "info"
why = "the message begins with Info:"
'''


def test_the_prefix_is_parsed_as_on_its_own_whatever_the_patterns() -> None:
    """The prefix and the patterns' fixed text are one ``re`` call; the prefix is atomic in
    it, so no pattern can make the engine re-read the prefix (here: leave ``Info: `` to the
    message) to find a parse that suits it."""
    info_first = Matcher([patternset.parse(INFO_FIRST, "info-first.toml")])
    assert info_first.match("Jun 10 12:00:00 mx dovecot: imap-login: Info: Info: x").result == "ignored"
    assert info_first.match("Jun 10 12:00:00 mx dovecot: imap-login: Info: Login: x").result == "nomatch"


def test_fixed_text_then_anything_never_spans_a_newline() -> None:
    line = "Jun 10 12:00:00 mx dovecot: imap-login: Disconnected: Inactivity"
    assert MATCHER.match(line).result == "ignored"
    assert MATCHER.match(line + "\nx").result == "nomatch"  # ``.*`` stops at a newline
    assert MATCHER.classify(line + "\nx")[0] == "nomatch"


CATASTROPHIC = '''
name = "slow"
covers = ["a test of the time limit"]
[pattern.login]
result = "login"
regex = 'Login: (?:x|xx)+y (?P<ip><ADDR>)'
[[sample]]
line = 'Jun 10 12:00:00 mx dovecot: imap-login: Login: xxy 192.0.2.9'
result = "login"
ip = "192.0.2.9"
service = "imap-login"
pattern = "login"
'''


def test_catastrophic_admin_pattern_is_cut_off_and_ours_still_match() -> None:
    slow = patternset.parse(CATASTROPHIC, "slow.toml")
    matcher = Matcher([slow] + SETS, timeout=0.05)
    hostile = "Jun 10 12:00:00 mx dovecot: imap-login: Login: " + "x" * 40
    assert matcher.match(hostile).result == "nomatch"
    assert matcher.timeouts == 1
    good = f"Jun 10 12:00:00 mx dovecot: {TAIL}"
    assert matcher.match(good)[:3] == ("login", "192.0.2.7", "bob")


def test_classify_agrees_with_match() -> None:
    """The counting path decides exactly as the full verdict does."""
    lines = [s.line for ps in SETS for s in ps.samples]
    corpus = DATA / "corpus"
    for name in ("dovecot-2.3-default.log", "dovecot-2.3-syslog-hp.log", "fail2ban-dovecot.log"):
        lines += (corpus / name).read_bytes().decode("utf-8", "replace").split("\n")
    lines += ["Jun 10 12:00:00 mx dovecot: imap-login: Login: user=<b\u00e9b>, "
              "method=PLAIN, rip=192.0.2.7, lip=192.0.2.1, mpid=1",
              f"Jun 10 12:00:00 mx dovecot: {TAIL.replace('imap-login', 'submission-login')}",
              f"Jun 10 12:00:00 mx dovecot: {TAIL.replace('192.0.2.7', '192.0.2.300')}"]
    for matcher in (MATCHER, Matcher(SETS, services=["submission-login"])):
        for line in lines:
            verdict = matcher.match(line)
            assert matcher.classify(line) == (verdict.result, verdict.pattern_set, verdict.pattern), line


# --- issue 10: which sets claim (the Dovecot version), and lines too long to be a login ------

LOGIN_1X = "Jun 10 12:00:00 mx dovecot: imap-login: Login: user=<bob>, method=PLAIN, rip=192.0.2.7, lip=192.0.2.1, TLS"
LOGIN_23 = f"Jun 10 12:00:00 mx dovecot: {TAIL}"
START_12 = "Jun 10 12:00:00 mx dovecot: Dovecot v1.2.17 starting up (core dumps disabled)"
START_23 = "Jun 10 12:00:00 mx dovecot[1]: master: Dovecot v2.3.19.1 (9f57dc1bb0) starting up for imap, pop3"


def test_sets_follow_the_version_dovecot_announces() -> None:
    matcher = Matcher(SETS)
    assert matcher.version is None and matcher.match(LOGIN_1X).result == "nomatch"
    assert "only once the version is known" in matcher.describe()
    started = matcher.match(START_12)
    assert (started.result, started.pattern, matcher.version) == ("ignored", "dovecot-startup", "1.2.17")
    assert started.why == "Dovecot v1.2.17 started; the sets that claim lines now: dovecot-1.0-1.2"
    assert matcher.match(LOGIN_1X)[:2] == ("login", "192.0.2.7")
    assert matcher.match(LOGIN_23).result == "nomatch"
    assert matcher.classify(START_23) == ("ignored", None, "dovecot-startup")  # the counting path follows too
    assert matcher.match(LOGIN_23)[:2] == ("login", "192.0.2.7")
    assert matcher.match(LOGIN_1X).result == "nomatch"


def test_a_pinned_version_stays() -> None:
    matcher = Matcher(SETS, version="1.2.17")
    assert matcher.match(START_23).why == ("Dovecot v2.3.19.1 started; the sets stay those for "
                                           "--dovecot-version 1.2.17")
    assert matcher.version == "1.2.17" and matcher.match(LOGIN_1X).result == "login"
    assert matcher.describe() == "dovecot-1.0-1.2 (for --dovecot-version 1.2.17)"


def test_sets_chosen_by_name_claim_whatever_the_version() -> None:
    matcher = Matcher([s for s in SETS if s.name == "dovecot-1.0-1.2"], by_version=False)
    assert matcher.match(LOGIN_1X).result == "login"
    matcher.match(START_23)
    assert matcher.match(LOGIN_1X).result == "login"


def test_a_version_no_shipped_set_is_for_leaves_only_the_admins() -> None:
    matcher = Matcher(SETS, version="0.5")
    assert matcher.sets == () and matcher.match(LOGIN_23).result == "nomatch"


@pytest.mark.parametrize("user, why", [
    ("u" * 1000, "ASCII: 1,000 characters of user name"),
    ("\u20ac" * 320, "320 three-byte characters: under 400 characters of message, over 1,000 bytes"),
], ids=["ascii", "utf-8"])
def test_a_login_longer_than_dovecot_writes_is_never_one(user: str, why: str) -> None:
    line = f"Jun 10 12:00:00 mx dovecot: imap-login: Login: user=<{user}>, method=PLAIN, rip=192.0.2.7, lip=192.0.2.1, mpid=9"
    verdict = MATCHER.match(line)
    assert verdict.result == "ignored" and verdict.why is not None and "1000 bytes" in verdict.why, why
    assert MATCHER.classify(line) == ("ignored", "dovecot-2.0-2.3", "login")
    short = line.replace(user, user[:80])
    assert MATCHER.match(short).result == "login", "Dovecot's own 80-byte user names stay logins"


def test_a_line_cut_at_the_cap_on_a_forged_tail_authorises_nothing() -> None:
    """Issue 10 finding 3: the first 16,384 bytes of a longer line end exactly on a forged
    tail; what the splitter keeps must not be a login."""
    from logwatch.sources.lines import DEFAULT_CAP, LineSplitter, decode

    head = b"Jun 10 12:00:00 mx dovecot: imap-login: Login: user=<"
    tail = b">, method=PLAIN, rip=198.51.100.66, lip=192.0.2.1, mpid=1"
    padding = b"p" * (DEFAULT_CAP - len(head) - len(tail))
    splitter = LineSplitter()
    [kept] = splitter.feed(head + padding + tail + b", and the real rest of the line\n")
    assert kept.endswith(tail) and splitter.cut == 1
    assert MATCHER.match(decode(kept)).result != "login"
