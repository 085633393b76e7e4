"""Tests for logins.py: a verdict becomes a login event, timed by its line; the address is
normalised once, by the matcher, and carried so to the ledger."""

from __future__ import annotations

from datetime import datetime

import pytest

from logwatch import catalog
from logwatch.ledger import Ledger
from logwatch.logins import login_event
from logwatch.matcher import Verdict
from logwatch.model import LoginEvent

NOW = datetime(2026, 6, 10, 12, 0, 30).astimezone().timestamp()
LINE = "Jun 10 12:00:00 mx dovecot: imap-login: Login: user=<bob>, method=PLAIN, rip={ip}, lip=192.0.2.1, mpid=9, TLS"


def test_a_login_verdict_becomes_an_event_at_its_own_time() -> None:
    verdict = Verdict("login", "192.0.2.7", "bob", "imap-login", "dovecot-2.0-2.3", "login", "Jun 10 12:00:00")
    assert login_event(verdict, NOW) == LoginEvent("192.0.2.7", "bob", "imap-login", NOW - 30,
                                                   "dovecot-2.0-2.3", "login")


@pytest.mark.parametrize("stamp, when", [(None, NOW), ("Jun 10 12:05:00", NOW)])
def test_no_stamp_or_a_future_one_counts_as_now(stamp: str | None, when: float) -> None:
    event = login_event(Verdict("login", "192.0.2.7", "", "pop3-login", stamp=stamp), NOW)
    assert event is not None and event.when == when and event.user == ""


@pytest.mark.parametrize("verdict", [Verdict("nomatch"), Verdict("ignored", None, "x", "imap-login", "s", "p")])
def test_anything_but_a_login_is_no_event(verdict: Verdict) -> None:
    assert login_event(verdict, NOW) is None


@pytest.mark.parametrize("logged, stored", [("::ffff:192.0.2.7", "192.0.2.7"), ("2001:DB8:0:0::7", "2001:db8::7"),
                                            ("192.0.2.7", "192.0.2.7")])
def test_the_address_reaches_the_ledger_normalised(logged: str, stored: str) -> None:
    matcher = catalog.matcher(["dovecot-2.0-2.3"])
    event = login_event(matcher.match(LINE.format(ip=logged)), NOW)
    assert event is not None and event.ip == stored
    ledger = Ledger()
    (change,) = ledger.grant(event, NOW)
    assert change.ip == stored


@pytest.mark.parametrize("ip", ["not-an-ip", "192.0.2.7%eth0", "192.0.2.256", "fe80::1%2"])
def test_garbage_never_becomes_a_login(ip: str) -> None:
    matcher = catalog.matcher(["dovecot-2.0-2.3"])
    assert login_event(matcher.match(LINE.format(ip=ip)), NOW) is None


def test_the_same_stamp_read_at_another_now_is_timed_anew() -> None:
    """login_event memoises a stamp's time by (stamp, now): a year-less stamp means another
    year once the reader's clock moved past New Year, and the memo must not remember the
    old answer."""
    verdict = Verdict("login", "192.0.2.7", "bob", "imap-login", stamp="Jan  1 00:00:05")
    before = datetime(2026, 12, 31, 12, 0, 0).astimezone().timestamp()  # tomorrow's stamp: skew, read as now
    after = datetime(2027, 1, 1, 0, 0, 10).astimezone().timestamp()
    first, second, again = (login_event(verdict, t) for t in (before, after, before))
    assert first is not None and second is not None and again is not None
    assert first.when == before and again.when == before
    assert second.when == datetime(2027, 1, 1, 0, 0, 5).astimezone().timestamp()
    older = login_event(Verdict("login", "192.0.2.7", "bob", "imap-login", stamp="Dec 31 23:59:59"), after)
    assert older is not None and older.when == datetime(2026, 12, 31, 23, 59, 59).astimezone().timestamp()
