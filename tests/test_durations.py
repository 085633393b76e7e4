"""Tests for durations.py: what ``--expire`` accepts, and the one-line errors it gives."""

from __future__ import annotations

import pytest

from logwatch.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("1h", 3600), ("1800", 1800), ("2d", 172800), (" 30m ", 1800),
     ("1s", 1)],
)
def test_accepted(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "15 m", "1.5h", "-5", "15M", "1h30m", "30min", "0x10",
                                  "١٢"])
def test_refused_in_one_line_naming_the_option(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(text, option="--expire")
    message = str(info.value)
    assert message.startswith("--expire: ") and "\n" not in message
    assert "90s, 15m, 1h" in message


@pytest.mark.parametrize("text", ["0", "0s", "0h"])
def test_zero_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"^--expire: .* is zero"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"), [(1800, "30m"), (90, "90s"), (3600, "1h"), (86400, "1d"), (1.5, "1.5s")]
)
def test_format_round_trips(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    if float(seconds).is_integer():
        assert parse_duration(text) == seconds
