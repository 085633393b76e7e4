"""The fixed start of a pattern: certain when it says so, empty when in doubt."""

from __future__ import annotations

import pytest
import regex

from logwatch.literal import head


@pytest.mark.parametrize("source, text, then_anything", [
    ("Login: user=<(?P<user>.*)>", "Login: user=<", False),
    ("Logged in: x", "Logged in: x", False),
    ("proxy\\(.*", "proxy(", True),
    ("Disconnected \\(.*", "Disconnected (", True),
    ("Maximum number from user\\+IP.*", "Maximum number from user+IP", True),
    ("Login", "Login", False),             # the whole message is this text
    ("Login.*", "Login", True),            # "Loginx..." matches too
    ("Logins?: x", "Login", False),        # the s is optional
    ("Login\\w*: x", "Login", False),
    ("Login\\d: x", "Login", False),
    ("Login\\b.*", "Login", False),
    ("(?i)login: x", "", False),           # case-insensitive: nothing is certain
    ("Login(?i): x", "", False),
    ("Login: a|Logout: b", "", False),     # top-level alternation
    ("Login: (a|b)", "Login: ", False),
    ("Login[a-z]: x", "Login", False),
    ("Login[|]x|y", "", False),            # the | in the class is not the one that counts
    ("Login[|]x", "Login", False),
    (".*", "", True),
    ("a{2}b", "", False),
    ("ab{2}", "a", False),
    ("Login\\ x.*", "Login x", True),
])
def test_head(source: str, text: str, then_anything: bool) -> None:
    h = head(source)
    assert (h.text, h.then_anything) == (text, then_anything)


@pytest.mark.parametrize("source", ["Login: user=<(?P<user>.*)>, x", "Disconnected \\(.*", "Login.*", "Logins?: x",
                                    "proxy\\(.*", "Login: (a|b)", "ab{2}c", "Login\\ x.*"])
@pytest.mark.parametrize("message", ["Login: user=<bob>, x", "Disconnected (auth failed)", "Logins: x", "Login: x",
                                     "proxy(bob): started", "Login: a", "abbc", "Login x", "Loginx", ""])
def test_head_never_contradicts_the_engine(source: str, message: str) -> None:
    """Whatever the engine matches begins with the head; a 'then anything' head decides alone."""
    h = head(source)
    matched = regex.fullmatch(source, message) is not None
    if matched:
        assert message.startswith(h.text)
    if h.then_anything:
        assert matched == message.startswith(h.text)
