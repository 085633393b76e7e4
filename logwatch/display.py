"""Show text that a client controls (user names, whole lines) without letting it act.

Pure. Why: a failed login's user name is chosen by an unauthenticated client; printed raw
to a terminal or a log, an escape sequence or a line break in it could rewrite what the
operator sees.
"""

from __future__ import annotations


def printable(text: str) -> str:
    """``text`` with every non-printable character shown as its escape (``\\x1b``, ``\\u2028``)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
