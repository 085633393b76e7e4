"""Timestamps: year inference for syslog, zones for RFC 3339, impossible dates refused."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from logwatch.timestamps import parse

UTC = timezone.utc
PLUS2 = timezone(timedelta(hours=2))


def at(*fields: int, tz: timezone = UTC) -> datetime:
    return datetime(*fields, tzinfo=tz)


@pytest.mark.parametrize("stamp, now, expected", [
    ("Jun 10 12:00:00", at(2026, 11, 21), at(2026, 6, 10, 12)),
    ("Jun  1 08:15:02", at(2026, 11, 21), at(2026, 6, 1, 8, 15, 2)),
    ("Jun 01 08:15:02", at(2026, 11, 21), at(2026, 6, 1, 8, 15, 2)),
    # New Year: a December line read in January is last year's
    ("Dec 31 23:59:59", at(2027, 1, 1, 0, 0, 5), at(2026, 12, 31, 23, 59, 59)),
    ("Jan  1 00:00:01", at(2027, 1, 1, 0, 0, 5), at(2027, 1, 1, 0, 0, 1)),
    # a few hours ahead is clock skew between hosts, not last year
    ("Nov 21 18:00:00", at(2026, 11, 21, 12), at(2026, 11, 21, 18)),
    # more than a day ahead is last year
    ("Nov 25 12:00:00", at(2026, 11, 21, 12), at(2025, 11, 25, 12)),
    # Feb 29 goes back to the last leap year
    ("Feb 29 12:00:00", at(2027, 3, 1), at(2024, 2, 29, 12)),
    ("Jun 10 12:00:00.123456", at(2026, 11, 21), at(2026, 6, 10, 12, 0, 0, 123456)),
    ("Jun 10 12:00:00,5", at(2026, 11, 21), at(2026, 6, 10, 12, 0, 0, 500000)),
    ("2024-06-10T12:00:00.123456+02:00", at(2026, 1, 1), at(2024, 6, 10, 12, 0, 0, 123456, tz=PLUS2)),
    ("2024-06-10T12:00:00+0200", at(2026, 1, 1), at(2024, 6, 10, 12, tz=PLUS2)),
    ("2024-06-10T10:00:00Z", at(2026, 1, 1), at(2024, 6, 10, 10)),
    ("2024-06-10 12:00:00", at(2026, 1, 1), at(2024, 6, 10, 12)),
    ("2024-06-10 12:00:60", at(2026, 1, 1), at(2024, 6, 10, 12, 0, 59)),  # leap second
])
def test_parse(stamp: str, now: datetime, expected: datetime) -> None:
    moment = parse(stamp, now, UTC)
    assert moment == expected
    assert moment is not None and moment.utcoffset() == expected.utcoffset()


@pytest.mark.parametrize("stamp", ["Feb 30 12:00:00", "Jun 10 25:00:00", "2024-13-01 00:00:00", "Foo 10 12:00:00", "yesterday"])
def test_impossible_dates_are_none(stamp: str) -> None:
    assert parse(stamp, at(2026, 1, 1), UTC) is None


def test_zoneless_stamps_use_the_given_zone() -> None:
    assert parse("2024-06-10 12:00:00", at(2026, 1, 1), PLUS2) == at(2024, 6, 10, 10)
