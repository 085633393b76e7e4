"""What every match of a pattern must begin with: fixed text a matcher can test first.

Pure: regular-expression source in, its ``Head`` out. ``matcher`` uses it twice:

- to find, in the same C call that parses the prefix, the first pattern that can match:
  a pattern can only match a message that begins with its fixed text, so when no
  pattern's fixed text fits, none can match, and a line meets one or two patterns, not
  all of them;
- to skip the regex engine where the answer is already known: a pattern that is fixed text
  followed by ``.*`` (the shape of every "ignored" pattern we ship) fullmatches a line
  without newlines exactly when the line continues with that text.

Every answer here errs towards "not certain" (an empty head), which only costs speed: the
regex then decides, as it would without this module. The tests compare both ways.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_META = frozenset(".^$*+?{}[]\\|()")
_QUANTIFIERS = frozenset("*+?{")
_INLINE_FLAGS = re.compile(r"\(\?[a-zA-Z]*[aiLmsuxfbeprwV0-9][a-zA-Z0-9]*[:)]")


@dataclass(frozen=True, slots=True)
class Head:
    """The fixed start of a pattern.

    Attributes:
        text: text that every match begins with ("" when nothing is certain).
        rest: the pattern's source after that text.
    """

    text: str
    rest: str

    @property
    def then_anything(self) -> bool:
        """True if the pattern is ``text`` followed by ``.*``: any line that continues
        with ``text`` (and has no newline) matches it all."""
        return self.rest == ".*"


def head(source: str) -> Head:
    """Return the fixed text that every match of ``source`` (``regex`` syntax) begins with.

    Plain characters and escaped punctuation (``\\(``, ``\\+``) count; the scan stops at the
    first metacharacter, escaped letter or digit (``\\d``, ``\\b``), or character made
    optional or repeated by a quantifier. A pattern with inline flags (``(?i)`` changes
    case) or an ``|`` outside any group has no certain head.
    """
    if _INLINE_FLAGS.search(source) or _has_top_level_bar(source):
        return Head("", source)
    text: list[str] = []
    i = 0
    while i < len(source):
        c = source[i]
        if c == "\\":
            escaped = source[i + 1:i + 2]
            if not escaped or escaped.isalnum() or escaped in "\n\t":
                break
            char, step = escaped, 2
        elif c in _META:
            break
        else:
            char, step = c, 1
        if source[i + step:i + step + 1] in _QUANTIFIERS and source[i + step:i + step + 1]:
            break  # this character may be absent or repeated
        text.append(char)
        i += step
    return Head("".join(text), source[i:])


def _has_top_level_bar(source: str) -> bool:
    depth, i, in_class = 0, 0, False
    while i < len(source):
        c = source[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            if source[i + 1:i + 2] == "^":
                i += 1
            if source[i + 1:i + 2] == "]":
                i += 1  # "[]...]" or "[^]...]": that ] is a member
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "|" and depth == 0:
            return True
        i += 1
    return False
