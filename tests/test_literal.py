"""The fixed start of a pattern: certain when it says so, empty when in doubt."""

from __future__ import annotations

import pytest
import regex

from logwatch.literal import head


@pytest.mark.parametrize("source, text, then_anything, word", [
    ("Login: user=<(?P<user>.*)>", "Login: user=<", False, "Login"),
    ("Logged in: x", "Logged in: x", False, "Logged"),
    ("proxy\\(.*", "proxy(", True, "proxy"),
    ("Disconnected \\(.*", "Disconnected (", True, "Disconnected"),
    ("Maximum number from user\\+IP.*", "Maximum number from user+IP", True, "Maximum"),
    ("Login", "Login", False, "Login"),          # the whole message is this word
    ("Login.*", "Login", True, None),            # "Loginx..." would match too: no word
    ("Logins?: x", "Login", False, None),        # the s is optional
    ("Login\\w*: x", "Login", False, None),
    ("Login\\d: x", "Login", False, None),
    ("Login\\b.*", "Login", False, None),
    ("(?i)login: x", "", False, None),           # case-insensitive: nothing is certain
    ("Login(?i): x", "", False, None),
    ("Login: a|Logout: b", "", False, None),     # top-level alternation
    ("Login: (a|b)", "Login: ", False, "Login"),
    ("Login[a-z]: x", "Login", False, None),
    ("Login[|]x|y", "", False, None),            # the | in the class is not the one that counts
    ("Login[|]x", "Login", False, None),
    (".*", "", True, None),
    ("a{2}b", "", False, None),
    ("ab{2}", "a", False, None),
    ("Login\\ x.*", "Login x", True, "Login"),
])
def test_head(source: str, text: str, then_anything: bool, word: str | None) -> None:
    h = head(source)
    assert (h.text, h.then_anything, h.word) == (text, then_anything, word)


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
