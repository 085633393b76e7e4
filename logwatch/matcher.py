"""Decide, for one log line, whether Dovecot logged a successful login and from where.

Pure: a line of text in, a ``Verdict`` out; no clock, no I/O.

How a line is read:

1. A line without ``-login`` cannot be a login process's line (the prefix grammar needs a
   ``<name>-login`` service), so it is ``nomatch`` at the cost of one substring search.
   ``NEEDLE`` lets a reader apply that test to raw bytes before decoding anything.
2. The strict prefix (``prefix.SOURCE``) must match at the start of the line.
3. The patterns of the sets are tried on the rest, anchored there and at the end of the
   line (``fullmatch``); the first pattern in set order that matches all of it claims the
   line. Only patterns that can match are tried (``literal``): a pattern that begins with
   a word (``Login:``, ``Disconnected (``) can only match a message whose first word is
   that word, so the patterns are compiled into one alternation per first word (plus the
   patterns that begin otherwise, which join every alternation, in their place). Within
   it, the first pattern whose fixed text fits decides: if it is fixed text then ``.*``
   (a failure line), it claims the line without running the regex engine; if none fits,
   nothing can match.
4. A ``login`` claim is then checked: the service must be enabled (``imap-login`` and
   ``pop3-login`` by default) and the ``ip`` field must be an address ``ipaddress``
   accepts; it is normalised (``addresses.normalise``).

Pattern sets run on the ``regex`` module. Sets shipped with relaywatch run without a time
limit: they are ours, linted and tested against hostile lines. Each admin's set is its own
table run with ``timeout``, so a catastrophic pattern costs at most that long per line and
cannot stop the shipped sets from seeing the line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import regex

from logwatch import literal, prefix
from logwatch.addresses import NormaliseCache
from logwatch.patternset import PatternSet

#: Every line the matcher can claim contains this; see step 1 above.
NEEDLE = b"-login"
DEFAULT_SERVICES = ("imap-login", "pop3-login")
#: Seconds one admin set may spend on one line.
DEFAULT_TIMEOUT = 0.05


class Verdict(NamedTuple):
    """What the matcher made of one line (a NamedTuple: immutable, and cheap to make on
    the hot path, where a frozen dataclass's ``__init__`` cost a microsecond a line).

    Attributes:
        result: ``login``, ``ignored`` (a Dovecot line recognised as not a login, or a
            login of a service that is not enabled) or ``nomatch``.
        ip: the normalised client address of a login, else None.
        user: the user name as logged (logins and ignored lines whose pattern has one).
        service: the login service from the prefix (``imap-login``), if the line had one.
        pattern_set, pattern: who claimed the line.
        stamp: the line's timestamp text, for ``timestamps.parse``.
        why: for ``ignored``, why it does not authorise.
    """

    result: str
    ip: str | None = None
    user: str | None = None
    service: str | None = None
    pattern_set: str | None = None
    pattern: str | None = None
    stamp: str | None = None
    why: str | None = None


NOMATCH = Verdict("nomatch")


@dataclass(frozen=True, slots=True)
class _Branch:
    pattern_set: str
    pattern: str
    result: str
    why: str


_PREFIX = re.compile(prefix.SOURCE)
_PREFIX_FIELDS = tuple(_PREFIX.groupindex[name] for name in prefix.TS_GROUPS + prefix.SERVICE_GROUPS)
_SERVICE_FIELDS = tuple(_PREFIX.groupindex[name] for name in prefix.SERVICE_GROUPS)
_WORD = _PREFIX.groupindex["word"]
_UNCLAIMED = ("nomatch", None, None)
class _Alternation:
    """Some patterns compiled as one ``regex`` alternation, and how to read a match.

    Groups are read by index: with one name in several branches, ``regex`` takes over a
    microsecond to look a name up, more than the rest of the match costs.
    """

    __slots__ = ("fullmatch", "branches", "user", "ip", "heads")

    def __init__(self, entries: Sequence[tuple[str, _Branch]]) -> None:
        alternatives = []
        markers = []
        heads = []
        for n, (source, branch) in enumerate(entries):
            fixed = literal.head(source)
            heads.append((fixed.text, fixed.then_anything, branch))
            # An empty group that takes part in the match only if its branch did. (The
            # ``regex`` module's ``lastgroup`` is not the last group closed, as in ``re``,
            # so the markers are looked at in order instead.)
            alternatives.append(f"(?:{source})(?P<_{n}>)")
            markers.append((f"_{n}", branch))
        compiled = regex.compile("|".join(alternatives))
        index = compiled.groupindex
        self.branches = tuple((index[marker], branch) for marker, branch in markers)
        self.user = index.get("user", 0)
        self.ip = index.get("ip", 0)
        self.fullmatch = compiled.fullmatch
        #: (fixed text, fixed text then anything, branch), in claim order.
        self.heads = tuple(heads)



class _Table:
    """The patterns of some sets, as one ``_Alternation`` per leading word."""

    __slots__ = ("by_word", "other", "timeout")

    def __init__(self, sets: Sequence[PatternSet], timeout: float | None) -> None:
        entries = []
        for pattern_set in sets:
            for pattern in pattern_set.patterns:
                why = pattern.why or f"{pattern.name} is not a login"
                branch = _Branch(pattern_set.name, pattern.name, pattern.result, why)
                entries.append((literal.head(pattern.regex).word, pattern.regex, branch))
        words = {word for word, _, _ in entries if word is not None}
        self.by_word = {
            word: _Alternation([(src, br) for w, src, br in entries if w in (word, None)])
            for word in words
        }
        rest = [(src, br) for w, src, br in entries if w is None]
        self.other = _Alternation(rest) if rest else None
        self.timeout = timeout


class Matcher:
    """The compiled pattern sets plus the services that may authorise.

    Args:
        sets: the sets to use, in the order they claim lines.
        services: login services whose logins count; others are ``ignored``.
        timeout: per-line time limit for untrusted (admin) sets, in seconds.

    Attributes:
        timeouts: how many times an admin set ran out of time (the line went on to the
            next stage); the daemon reports it, rate-limited.
    """

    def __init__(self, sets: Iterable[PatternSet], services: Iterable[str] = DEFAULT_SERVICES,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        sets = list(sets)
        if not sets:
            raise ValueError("no pattern sets to match with")
        self.sets = tuple(sets)
        self.services = frozenset(services)
        self.timeouts = 0
        trusted = [s for s in sets if s.trusted]
        tables = [_Table([s], timeout) for s in sets if not s.trusted]
        if trusted:
            tables.append(_Table(trusted, None))
        self._tables = tuple(tables)
        self._normalise = NormaliseCache()

    def match(self, line: str) -> Verdict:
        """Return the verdict for one line (without its newline)."""
        claim = self._claim(line)
        if claim is None:
            return NOMATCH
        p, m, alternation, branch = claim
        ts1, ts2, ts3, s1, s2, s3, s4 = p.group(*_PREFIX_FIELDS)
        stamp = ts1 or ts2 or ts3
        service = s1 or s2 or s3 or s4
        user = m.group(alternation.user) if m is not None and alternation.user else None
        if branch.result != "login":
            return Verdict("ignored", None, user, service, branch.pattern_set, branch.pattern,
                           stamp, branch.why)
        if service not in self.services:
            return Verdict("ignored", None, user, service, branch.pattern_set, branch.pattern,
                           stamp, f"service {service} is not enabled")
        ip = self._normalise(m.group(alternation.ip)) if m is not None else None
        if ip is None:
            return NOMATCH
        return Verdict("login", ip, user or "", service, branch.pattern_set, branch.pattern, stamp)

    def classify(self, line: str) -> tuple[str, str | None, str | None]:
        """Return ``(result, pattern_set, pattern)`` for one line: ``match`` without the
        fields, for counting (the ``--summary`` loop). Same decisions, by construction: both
        go through ``_claim`` and the same service and address checks."""
        claim = self._claim(line)
        if claim is None:
            return _UNCLAIMED
        p, m, alternation, branch = claim
        if branch.result == "login":
            s1, s2, s3, s4 = p.group(*_SERVICE_FIELDS)
            if (s1 or s2 or s3 or s4) not in self.services:
                return "ignored", branch.pattern_set, branch.pattern
            if m is None or self._normalise(m.group(alternation.ip)) is None:
                return _UNCLAIMED
        return branch.result, branch.pattern_set, branch.pattern

    def _claim(self, line: str) -> tuple[re.Match[str], Any, _Alternation, _Branch] | None:
        """Find the pattern that claims ``line``: the prefix match, the pattern's match (None
        when fixed text decided), its alternation and its branch; None if nothing does."""
        if "-login" not in line:
            return None
        p = _PREFIX.match(line)
        if p is None:
            return None
        word, pos = p.group(_WORD), p.end()
        for table in self._tables:
            alternation = table.by_word.get(word, table.other)
            if alternation is None:
                continue
            for text, then_anything, branch in alternation.heads:
                if line.startswith(text, pos):
                    break
            else:
                continue  # no pattern of this table can match
            if then_anything and "\n" not in line:
                return p, None, alternation, branch  # fixed text then anything: it matches
            if table.timeout is None:
                m = alternation.fullmatch(line, pos)
            else:
                try:
                    m = alternation.fullmatch(line, pos, timeout=table.timeout)
                except TimeoutError:
                    self.timeouts += 1
                    continue
            if m is not None:
                branches = alternation.branches
                if len(branches) == 1:
                    return p, m, alternation, branches[0][1]
                start = m.start
                for index, branch in branches:
                    if start(index) >= 0:
                        return p, m, alternation, branch
        return None
