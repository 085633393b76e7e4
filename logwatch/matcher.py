"""Decide, for one log line, whether Dovecot logged a successful login and from where.

Pure: a line of text in, a ``Verdict`` out; no I/O (the clock is read only to bound an
admin's set, below).

How a line is read:

1. A line without ``-login`` cannot be a login process's line (the prefix grammar needs a
   ``<name>-login`` service), so it is ``nomatch`` at the cost of one substring search.
   ``NEEDLE`` lets a reader apply that test to raw bytes before decoding anything.
2. The strict prefix (``prefix.SOURCE``) must match at the start of the line, and the
   message after it must begin with the fixed text of some pattern (``literal``). Both are
   one call of the standard library's ``re``: the prefix as an atomic group (parsed
   exactly as on its own, never re-read to suit a pattern), then every pattern's fixed
   text as its own group, in claim order. The group that matched names the first pattern
   that can match at all.
3. From that pattern on, in set order, the first pattern that matches all of the rest of
   the line (``fullmatch``, its own compiled ``regex``) claims it. A pattern that is fixed
   text then ``.*`` (every failure line we ship) claims it without the regex engine: its
   text fitting is the whole answer. Later patterns are tried only if their fixed text fits.
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
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import regex

from logwatch import literal, prefix, versions
from logwatch.addresses import NormaliseCache
from logwatch.patternset import PatternSet

#: Every login process's line contains this; see step 1 above.
NEEDLE = b"-login"
#: Every line the matcher reads contains one of these: a login process's, or the start-up
#: line of Dovecot's master, which says the version (``versions.startup``).
NEEDLES = (NEEDLE, versions.STARTUP_NEEDLE.encode())
DEFAULT_SERVICES = ("imap-login", "pop3-login")
#: Seconds one admin set may spend on one line.
DEFAULT_TIMEOUT = 0.05
#: The most bytes of message (the text after the prefix) a login line may have. Dovecot
#: cuts the user name to 80 bytes in these lines, so its real ones stay far below; every
#: piece of a split line but the last is longer (1,024 bytes in 1.x, about 4,060 in 2.x:
#: README, "Hostile user names"), and so is any line cut at ``LineSplitter``'s cap.
MAX_LOGIN_BYTES = 1000
#: The ``pattern`` of the verdict for a Dovecot start-up line.
STARTUP = "dovecot-startup"
#: The ``pattern`` of the verdict for the line Dovecot's master writes when it is stopped
#: (``master: Warning: Killed with signal 15 (by pid=1 uid=0 code=kill)``): with
#: ``--sessions``, every session of that Dovecot is gone, as at its start-up.
SHUTDOWN = "dovecot-shutdown"
#: Every mail process's ``Disconnected:`` line contains this (``imap(bob)<4101><...>:
#: Disconnected: ...``; Dovecot's own file: ``...>: Info: Disconnected: ...``); with
#: ``--sessions`` a reader must not skip lines that do.
LOGOUT_NEEDLE = ": Disconnected"
#: What a reader must not skip with ``--sessions``: ``NEEDLES`` and these.
SESSION_NEEDLES = NEEDLES + (LOGOUT_NEEDLE.encode(), b"Killed with signal")
_STARTUP_NEEDLE = versions.STARTUP_NEEDLE
_TOO_LONG = f"longer than any login line Dovecot writes ({MAX_LOGIN_BYTES} bytes): a piece of a split or cut line"


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
        session: the session id: of a login (the ``session=<...>`` of its server-written
            tail, if its pattern takes it), or of a ``logout`` (from the mail process's log
            prefix); None if the line has none.
    """

    result: str
    ip: str | None = None
    user: str | None = None
    service: str | None = None
    pattern_set: str | None = None
    pattern: str | None = None
    stamp: str | None = None
    why: str | None = None
    session: str | None = None


NOMATCH = Verdict("nomatch")


_PREFIX = re.compile(prefix.SOURCE)
#: What stands before a mail process's own prefix (``imap(bob)<4101><...>: ``), which the
#: logout patterns match: syslog's ``TS [HOST ]dovecot[PID]: `` or, in Dovecot's own file,
#: the timestamp alone. The process must be Dovecot's, exactly as for a login (``prefix``).
MAIL_PREFIX = (f"(?P<mts>{prefix.TIMESTAMP}) "
               f"(?:(?:{prefix.HOST} )?dovecot(?:{prefix.PID})?: )?")
#: The master's stop line (see ``SHUTDOWN``), after the same strict prefixes as its start-up line.
_SHUTDOWN = re.compile(
    f"(?P<ts>{prefix.TIMESTAMP}) (?:(?:{prefix.HOST} )?dovecot(?:{prefix.PID})?: master: |master: )"
    r"Warning: Killed with signal (?:15|2) \(by pid=\d+ uid=\d+ code=[a-z_]+\)")
_STAMP = re.compile(f"(?:dovecot: )?({prefix.TIMESTAMP})")
_PREFIX_FIELDS = tuple(_PREFIX.groupindex[name] for name in prefix.TS_GROUPS + prefix.SERVICE_GROUPS)
_SERVICE_FIELDS = tuple(_PREFIX.groupindex[name] for name in prefix.SERVICE_GROUPS)
_UNCLAIMED = ("nomatch", None, None)


@dataclass(frozen=True, slots=True)
class _Branch:
    pattern_set: str
    pattern: str
    result: str
    why: str


class _Candidate:
    """One pattern of a table: its own compiled regex, its fixed head, and who it is.

    Groups are read by index: ``regex`` takes a while to look a name up.
    """

    __slots__ = ("head", "then_anything", "fullmatch", "user", "ip", "session", "branch", "login", "logout",
                 "counted", "refused")

    def __init__(self, source: str, branch: _Branch) -> None:
        fixed = literal.head(source)
        compiled = regex.compile(source)
        self.head = fixed.text
        self.then_anything = fixed.then_anything
        self.fullmatch = compiled.fullmatch
        self.user = compiled.groupindex.get("user", 0)
        self.ip = compiled.groupindex.get("ip", 0)
        self.session = compiled.groupindex.get("session", 0)
        self.branch = branch
        self.login = branch.result == "login"
        self.logout = branch.result == "logout"
        #: What ``classify`` says of a line this pattern claims, and of a login of a
        #: service that is not enabled.
        self.counted = (branch.result, branch.pattern_set, branch.pattern)
        self.refused = ("ignored", branch.pattern_set, branch.pattern)


class _Table:
    """The patterns of some sets in claim order, behind one ``entry`` regex.

    ``entry`` is the strict prefix (an atomic group: it is parsed exactly as on its own)
    followed by an alternation of every pattern's fixed head, each its own group, in claim
    order. One call of the standard library's ``re`` thus checks the prefix and finds the
    first pattern whose fixed text fits; ``lastindex`` names it. No pattern before it can
    match. Why: per-line work in Python is what a catch-up pays for, and this makes the
    usual decision (an ignored line: fixed text then ``.*``) one C call and a tuple index.

    ``chains[g]`` is the candidate of head group ``g`` and every later candidate, to try in
    order when its regex has to decide.
    """

    __slots__ = ("entry", "chains", "timeout", "mail_entry", "mail_chains")

    def __init__(self, sets: Sequence[PatternSet], timeout: float | None, sessions: bool = False) -> None:
        candidates = []
        logouts = []
        for pattern_set in sets:
            for pattern in pattern_set.patterns:
                why = pattern.why or f"{pattern.name} is not a login"
                branch = _Branch(pattern_set.name, pattern.name, pattern.result, why)
                if pattern.result == "logout":
                    if sessions:
                        logouts.append(_Candidate(pattern.regex, branch))
                else:
                    candidates.append(_Candidate(pattern.regex, branch))
        self.entry, self.chains = _entry(prefix.SOURCE, candidates)
        # The prefix's groups keep their numbers (``match`` reads them by _PREFIX's).
        self.timeout = timeout
        #: The logout patterns (``--sessions`` only) behind the mail processes' prefix.
        self.mail_entry, self.mail_chains = _entry(MAIL_PREFIX, logouts)


_Entry = Callable[[str], "re.Match[str] | None"]


def _entry(source: str, candidates: Sequence[_Candidate]) -> tuple[_Entry, tuple[tuple[_Candidate, ...], ...]]:
    """One ``re`` for ``source`` (an atomic group) then every candidate's head as its own
    group, and the chain of candidates each head group starts (see ``_Table``)."""
    if not candidates:
        return _never, ()
    heads = "|".join(f"({re.escape(c.head)})" for c in candidates)
    compiled = re.compile(f"(?>{source})(?:{heads})")
    first = compiled.groups - len(candidates) + 1
    chains: list[tuple[_Candidate, ...]] = [()] * first
    chains += [tuple(candidates[n:]) for n in range(len(candidates))]
    return compiled.match, tuple(chains)


def _never(line: str) -> re.Match[str] | None:
    return None


class Matcher:
    """The compiled pattern sets plus the services that may authorise.

    Which sets claim lines depends on the Dovecot version in use (``by_version``, the
    default): an admin's own sets always; a shipped set only while the version is one it
    is for (``PatternSet.claims_for``). The version is ``version`` if given (pinned);
    otherwise the one the last start-up line of Dovecot's master announced
    (``versions.startup``), which ``match`` and ``classify`` follow as they read, so an
    upgrade in the middle of a log is followed; until one is seen it is unknown, and only
    the sets whose success line carries a success-only field claim (``needs_version``).

    Args:
        sets: the sets to use, in the order they claim lines.
        services: login services whose logins count; others are ``ignored``.
        timeout: per-line time limit for untrusted (admin) sets, in seconds.
        version: the Dovecot version in use, if the admin said so (``--dovecot-version``);
            start-up lines then do not change the sets.
        by_version: False when the admin chose the sets by name (``--pattern-set``): all
            of ``sets`` claim, whatever the version.
        sessions: also read the logout patterns (``--sessions``), and the master's stop
            line; without it a mail process's line is ``nomatch``, as before sessions.

    Attributes:
        timeouts: how many times an admin set ran out of time (the line went on to the
            next stage); the daemon reports it, rate-limited.
        version: the Dovecot version the sets were chosen for (None: unknown).
    """

    def __init__(self, sets: Iterable[PatternSet], services: Iterable[str] = DEFAULT_SERVICES,
                 timeout: float = DEFAULT_TIMEOUT, version: str | None = None,
                 by_version: bool = True, sessions: bool = False) -> None:
        sets = list(sets)
        if not sets:
            raise ValueError("no pattern sets to match with")
        if version is not None:
            versions.check(version)
        self.all_sets = tuple(sets)
        self.services = frozenset(services)
        self.timeouts = 0
        self.by_version = by_version
        self.pinned = version
        self.version = version
        self.sessions = sessions
        self._timeout = timeout
        self._cache: dict[tuple[str, ...], tuple[tuple[_Table, ...], tuple[PatternSet, ...]]] = {}
        self._tables, self.sets = self._choose(version)
        self._normalise = NormaliseCache()

    def _choose(self, version: str | None) -> tuple[tuple[_Table, ...], tuple[PatternSet, ...]]:
        """The tables and sets that claim lines while ``version`` runs (cached)."""
        chosen = tuple(s for s in self.all_sets
                       if not self.by_version or not s.trusted or s.claims_for(version))
        names = tuple(s.name for s in chosen)
        cached = self._cache.get(names)
        if cached is None:
            trusted = [s for s in chosen if s.trusted]
            tables = [_Table([s], self._timeout, self.sessions) for s in chosen if not s.trusted]
            if trusted:
                tables.append(_Table(trusted, None, self.sessions))
            cached = self._cache[names] = (tuple(tables), chosen)
        return cached

    def read_sessions(self, on: bool) -> None:
        """Read the logout patterns and the master's stop line from now on (``--sessions``),
        or not; the daemon calls it on the matcher ``startup`` built."""
        if on != self.sessions:
            self.sessions = on
            self._cache.clear()
            self._tables, self.sets = self._choose(self.version)

    def unfollowable(self) -> list[str]:
        """The sets that cannot follow a session to its end: they have no logout pattern
        that takes a session id (Dovecot 0.99 to 2.2, whose default ``mail_log_prefix`` has
        none). A login they claim is kept until ``--expire`` after it, as without
        ``--sessions``."""
        return [s.name for s in self.all_sets
                if not any(p.result == "logout" and "(?P<session>" in p.regex for p in s.patterns)]

    def describe(self) -> str:
        """One line for the daemon's log: which sets claim lines now, and why those."""
        names = ", ".join(s.name for s in self.sets) or "none"
        if not self.by_version:
            return f"{names} (chosen by name, whatever Dovecot's version)"
        if self.pinned is not None:
            return f"{names} (for --dovecot-version {self.pinned})"
        waiting = [s.name for s in self.all_sets if s.trusted and s.needs_version]
        later = f"; {', '.join(waiting)} only once the version is known" if waiting else ""
        return (f"{names} (Dovecot's version not known yet: its start-up line in the log, "
                f"or --dovecot-version, says which{later})")

    def _startup(self, line: str) -> Verdict:
        """A line that may be Dovecot's master starting: follow the version it announces."""
        version = versions.startup(line)
        if version is None:
            return NOMATCH
        stamp_match = _STAMP.match(line)
        stamp = stamp_match[1] if stamp_match else None
        if self.pinned is not None:
            why = f"Dovecot v{version} started; the sets stay those for --dovecot-version {self.pinned}"
        elif not self.by_version:
            why = f"Dovecot v{version} started; the sets stay those chosen by name"
        else:
            self.follow(version)
            named = ", ".join(s.name for s in self.sets) or "none"
            why = f"Dovecot v{version} started; the sets that claim lines now: {named}"
        return Verdict("ignored", None, None, None, None, STARTUP, stamp, why)

    def follow(self, version: str) -> None:
        """Let the sets for Dovecot ``version`` claim lines from now on (a start-up line said
        so, or a matcher built anew on reload carries on from the old one). Nothing changes
        while the version is pinned or the sets were chosen by name."""
        if self.pinned is None and self.by_version:
            self.version = versions.check(version)
            self._tables, self.sets = self._choose(version)

    def match(self, line: str) -> Verdict:
        """Return the verdict for one line (without its newline)."""
        if "-login" not in line:
            if self.sessions:
                if LOGOUT_NEEDLE in line:
                    return self._logout(line)
                # The stop line ends with "code=kill)": one character spares most lines a scan.
                if line[-1:] == ")" and "Killed with signal" in line:
                    return self._shutdown(line)
            return self._startup(line) if _STARTUP_NEEDLE in line else NOMATCH
        claim = self._claim(line)
        if claim is None:
            # A mail process's line whose user name holds "-login" is still its line.
            return self._logout(line) if self.sessions and LOGOUT_NEEDLE in line else NOMATCH
        p, m, candidate = claim
        branch = candidate.branch
        ts1, ts2, ts3, s1, s2, s3, s4 = p.group(*_PREFIX_FIELDS)
        stamp = ts1 or ts2 or ts3
        service = s1 or s2 or s3 or s4
        user = m.group(candidate.user) if m is not None and candidate.user else None
        if branch.result != "login":
            return Verdict("ignored", None, user, service, branch.pattern_set, branch.pattern,
                           stamp, branch.why)
        if _too_long(line, p.start(p.lastindex or 0)):
            return Verdict("ignored", None, user, service, branch.pattern_set, branch.pattern,
                           stamp, _TOO_LONG)
        if service not in self.services:
            return Verdict("ignored", None, user, service, branch.pattern_set, branch.pattern,
                           stamp, f"service {service} is not enabled")
        ip = self._normalise[m.group(candidate.ip)] if m is not None and candidate.ip else None
        if ip is None:
            return NOMATCH
        session = m.group(candidate.session) if candidate.session else None
        return Verdict("login", ip, user or "", service, branch.pattern_set, branch.pattern, stamp, None, session)

    def _logout(self, line: str) -> Verdict:
        """A line that may be a mail process's ``Disconnected:`` (``--sessions`` only)."""
        for table in self._tables:
            p = table.mail_entry(line)
            if p is None:
                continue
            group = p.lastindex
            if group is None:
                continue
            try:
                decided = _decide(table.mail_chains[group], line, p.start(group), table.timeout)
            except TimeoutError:
                self.timeouts += 1
                continue
            if decided is None:
                continue
            m, candidate = decided
            branch = candidate.branch
            user = m.group(candidate.user) if m is not None and candidate.user else None
            session = m.group(candidate.session) if m is not None and candidate.session else None
            service = line[p.start(group):line.index("(", p.start(group))]
            return Verdict("logout", None, user, service, branch.pattern_set, branch.pattern, p["mts"],
                           branch.why, session)
        return NOMATCH

    def _shutdown(self, line: str) -> Verdict:
        """A line that may be Dovecot's master being stopped (``--sessions`` only)."""
        m = _SHUTDOWN.fullmatch(line)
        if m is None:
            return NOMATCH
        return Verdict("ignored", None, None, None, None, SHUTDOWN, m["ts"],
                       "Dovecot's master was stopped: every session it served has ended")

    def classify(self, line: str) -> tuple[str, str | None, str | None]:
        """Return ``(result, pattern_set, pattern)`` for one line: ``match`` without the
        fields, for counting (the ``--summary`` loop).

        Same decisions as ``match``: the steps of ``_claim`` (the same entry regexes,
        chains and ``_decide``), then the same service and address checks. They are written
        out here because a catch-up calls this for every Dovecot line, and the call and
        tuple that ``_claim`` adds were a twentieth of the whole run. The tests hold
        ``classify`` and ``match`` equal on every sample, the corpus and generated logs.
        """
        if "-login" not in line:
            if _STARTUP_NEEDLE in line or (self.sessions and (LOGOUT_NEEDLE in line or line[-1:] == ")")):
                verdict = self.match(line)
                return verdict.result, verdict.pattern_set, verdict.pattern
            return _UNCLAIMED
        for table in self._tables:
            p = table.entry(line)
            if p is None:
                continue
            group = p.lastindex
            if group is None:
                continue
            chain = table.chains[group]
            candidate = chain[0]
            m = None
            if not candidate.then_anything or "\n" in line:
                try:
                    decided = _decide(chain, line, p.start(group), table.timeout)
                except TimeoutError:
                    self.timeouts += 1
                    continue
                if decided is None:
                    continue
                m, candidate = decided
            if candidate.login:
                if _too_long(line, p.start(group)):
                    return candidate.refused
                s1, s2, s3, s4 = p.group(*_SERVICE_FIELDS)
                if (s1 or s2 or s3 or s4) not in self.services:
                    return candidate.refused
                if m is None or not candidate.ip or self._normalise[m.group(candidate.ip)] is None:
                    return _UNCLAIMED
            return candidate.counted
        if self.sessions and LOGOUT_NEEDLE in line:
            verdict = self._logout(line)
            return verdict.result, verdict.pattern_set, verdict.pattern
        return _UNCLAIMED

    def _claim(self, line: str) -> tuple[re.Match[str], Any, _Candidate] | None:
        """Find the pattern that claims ``line``: the prefix match, the pattern's match (None
        when fixed text decided) and the pattern; None if nothing does."""
        for table in self._tables:
            p = table.entry(line)
            if p is None:
                continue  # a bad prefix, or no pattern of this table can match
            group = p.lastindex  # a head group: it always closes last
            if group is None:
                continue
            chain = table.chains[group]
            if chain[0].then_anything and "\n" not in line:
                return p, None, chain[0]  # fixed text then anything: it matches
            try:
                decided = _decide(chain, line, p.start(group), table.timeout)
            except TimeoutError:
                self.timeouts += 1
                continue
            if decided is not None:
                return p, decided[0], decided[1]
        return None


def _too_long(line: str, start: int) -> bool:
    """True if the message from ``start`` has more than ``MAX_LOGIN_BYTES`` bytes (UTF-8:
    a piece of a split line is counted in bytes, and a character may take four)."""
    size = len(line) - start
    if size > MAX_LOGIN_BYTES:
        return True
    if size * 4 <= MAX_LOGIN_BYTES or line.isascii():
        return False
    return len(line[start:].encode("utf-8", "replace")) > MAX_LOGIN_BYTES


def _decide(chain: Sequence[_Candidate], line: str, pos: int,
            timeout: float | None) -> tuple[Any, _Candidate] | None:
    """Try the patterns of ``chain`` in order on ``line[pos:]``; return the first match.

    With a ``timeout``, all of them together may take that long (``TimeoutError``).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    newline = "\n" in line
    for candidate in chain:
        if not line.startswith(candidate.head, pos):
            continue
        if candidate.then_anything and not newline:
            return None, candidate
        if deadline is None:
            m = candidate.fullmatch(line, pos)
        else:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            m = candidate.fullmatch(line, pos, timeout=left)
        if m is not None:
            return m, candidate
    return None
