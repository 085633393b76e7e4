"""Re-dated lines keep their format and still match as before."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from logwatch import patternset
from logwatch.matcher import Matcher
from logwatch.replay import redate
from tests.conftest import ROOT

AT = datetime(2026, 11, 5, 9, 7, 3, 123456, tzinfo=timezone(timedelta(hours=1)))


@pytest.mark.parametrize("line, expected", [
    ("Jun 10 12:00:00 mx dovecot: imap-login: x", "Nov  5 09:07:03 mx dovecot: imap-login: x"),
    ("Jun 01 12:00:00 imap-login: Info: x", "Nov 05 09:07:03 imap-login: Info: x"),
    ("2024-06-10T12:00:00.5+02:00 mx dovecot: x", "2026-11-05T09:07:03.123456+01:00 mx dovecot: x"),
    ("2024-06-10T12:00:00+0200 mx dovecot: x", "2026-11-05T09:07:03+0100 mx dovecot: x"),
    ("2024-06-10 12:00:00 pop3-login: Info: x", "2026-11-05 09:07:03 pop3-login: Info: x"),
    ("dovecot: Jun 10 12:00:14 Info: imap-login: x", "dovecot: Nov  5 09:07:03 Info: imap-login: x"),
    ("imap-login: Jun 10 12:00:17 Info: Login: ivan [2001:db8::1:60]", "imap-login: Nov  5 09:07:03 Info: Login: ivan [2001:db8::1:60]"),
    ("no timestamp here", "no timestamp here"),
])
def test_redate(line: str, expected: str) -> None:
    assert redate(line, AT) == expected


def test_demo_log_matches_the_same_after_redating() -> None:
    matcher = Matcher(patternset.builtin())
    for line in (ROOT / "logwatch" / "demo" / "sample.log").read_text().splitlines():
        before, after = matcher.match(line), matcher.match(redate(line, AT))
        assert before[:6] == after[:6], line
