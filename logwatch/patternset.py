"""Read a pattern-set file: a named group of message patterns with its annotated samples.

``parse(text, origin)`` is pure (TOML text in, ``PatternSet`` out); ``load``, ``load_dir``
and ``builtin`` are the thin file-reading wrappers. Every mistake in a file is reported as
one line naming the file and the key, e.g.::

    /etc/relaywatch/patterns/site.toml: pattern.login.regex: no (?P<ip>...) group

The format, by example (the bundled sets in ``patterns/`` are complete examples)::

    name = "dovecot-2.0-2.3"                    # [a-z0-9][a-z0-9._-]*
    covers = ["Dovecot 2.0.0 to 2.3.x", ...]    # versions and distributions
    since = "2.0.beta6"                         # optional: the Dovecot versions it is for,
    before = "2.4"                              #   since <= version < before
    needs-version = false                       # optional: claim only when the Dovecot in
                                                #   use is known to be one of those versions
    notes = "..."                               # optional

    [define]                                    # optional fragments, used as <NAME>
    FIELDS = '''(?:, [^,]*)*'''

    [pattern.login]                             # one table per pattern, named
    result = "login"                            # or "ignored"
    regex = '''Login: user=<(?P<user>.*)>, method=[^,]*, rip=(?P<ip><ADDR>)<FIELDS>'''

    [[sample]]                                  # every pattern needs one
    line = "Jun 10 12:00:00 mx dovecot: imap-login: Login: user=<bob>, ..."
    result = "login"
    ip = "192.0.2.7"
    user = "bob"
    service = "imap-login"
    pattern = "login"

A pattern matches the message that follows the prefix (see ``prefix``) and must match all
of it: the matcher anchors it at both ends, so it never needs, and must not contain,
``^`` or ``$`` tricks of its own.

Lint (why each rule exists):

- a ``login`` pattern starts with literal text: one that starts with a wildcard would let
  a client's text anywhere in the message pose as the start of a login;
- a ``login`` pattern has exactly one ``(?P<ip>...)`` group and no lazy quantifier: a
  lazy ``.*?`` before the address takes the *first* ``rip=`` of the line, which is the one
  an attacker writes into a user name (the historic wiki regex for 1.0 RC2 went further
  and captured ``lip=``, the server's own address);
- named groups other than those ``GROUPS`` gives each result are refused: ``ip`` only in
  a login pattern, ``session`` only in a login or logout pattern (at most once), ``user``
  in any; a logout pattern takes no lazy quantifier either (the session id must be the
  one of the line's own prefix, not one a user name carries).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import regex

from logwatch import versions

RESULTS = ("login", "ignored", "logout")
SAMPLE_RESULTS = ("login", "ignored", "logout", "nomatch")
#: The named groups each result may have (``ip``: exactly one in a login pattern; the
#: others at most one). Why a table: a group the matcher reads is a field it trusts, so
#: which pattern may supply which field is part of the argument in README's "Hostile user
#: names" (a session id from a login pattern opens a session; one from a logout pattern
#: closes it; an ignored line supplies neither).
GROUPS = {
    "login": ("ip", "user", "session"),
    "logout": ("session", "user"),
    "ignored": ("user",),
}

#: Fragments every set may use. ``ADDR`` admits only the characters of an address; the
#: matcher then requires that ``ipaddress`` accepts the whole field.
BUILTIN_FRAGMENTS = {
    "ADDR": r"[0-9A-Fa-f:.]{2,45}",
}

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}\Z")
_PATTERN_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}\Z")
_FRAGMENT_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,31}\Z")
_FRAGMENT_USE = re.compile(r"<([A-Z][A-Z0-9_]*)>")
_GROUP_NAME = re.compile(r"\(\?P?<([A-Za-z_][A-Za-z0-9_]*)>")
_LAZY = re.compile(r"(?<!\\)(?:[*+?]|\})\?")


class PatternSetError(ValueError):
    """A pattern-set file is wrong; ``str()`` is the one-line message for the user."""


@dataclass(frozen=True, slots=True)
class Pattern:
    """One message pattern of a set.

    Attributes:
        name: unique within the set; reported with every hit.
        result: ``login`` (authorises, subject to policy), ``ignored`` (recognised as a
            Dovecot line that must never authorise: a failure, an abort, a proxy line) or
            ``logout`` (a mail process's ``Disconnected:`` line: ends the session its
            ``(?P<session>...)`` names, with ``--sessions``; without the group, it says this
            Dovecot's ``mail_log_prefix`` does not carry the session).
        regex: the expanded source, matched against the message after the prefix.
        why: optional prose for the report.
    """

    name: str
    result: str
    regex: str
    why: str = ""


@dataclass(frozen=True, slots=True)
class Sample:
    """One annotated sample line and the verdict it must get from its own set.

    ``where`` is ``file: sample[N]`` for messages; the other attributes mirror the file.
    """

    line: str
    result: str
    where: str
    ip: str | None = None
    user: str | None = None
    service: str | None = None
    pattern: str | None = None
    why: str = ""
    #: For a login or logout sample: the session id it must give ("" for none); None: not checked.
    session: str | None = None


@dataclass(frozen=True, slots=True)
class PatternSet:
    """A parsed, linted pattern-set file.

    Attributes:
        name: the set's name (``--pattern-set NAME``).
        origin: the file it came from, for messages.
        covers: Dovecot versions and distributions the set is for.
        patterns: in file order.
        samples: in file order.
        trusted: True for the sets shipped with relaywatch; an admin's own sets are run
            with a time limit (see ``matcher``).
        notes: the set's own explanation.
        since, before: the Dovecot versions the set is for (``since <= v < before``; None:
            no bound). The matcher lets a shipped set claim lines only while the Dovecot
            in use is one of them (see ``matcher``).
        needs_version: claim only when the version in use is known and covered: for sets
            whose success line has no field that only a success can carry (see README's
            "Hostile user names").
    """

    name: str
    origin: str
    covers: tuple[str, ...]
    patterns: tuple[Pattern, ...]
    samples: tuple[Sample, ...]
    trusted: bool = False
    notes: str = ""
    since: str | None = None
    before: str | None = None
    needs_version: bool = False

    def claims_for(self, version: str | None) -> bool:
        """True if this set may claim lines while Dovecot ``version`` (None: unknown) runs."""
        if version is None:
            return not self.needs_version
        return versions.within(version, self.since, self.before)


def parse(text: str, origin: str, trusted: bool = False) -> PatternSet:
    """Parse and lint the TOML text of one pattern-set file.

    Args:
        text: the file's content.
        origin: the file's name, used in every message.
        trusted: whether the set ships with relaywatch.

    Raises:
        PatternSetError: one line, ``origin: key: what was expected``.
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PatternSetError(f"{origin}: not valid TOML: {exc}") from None

    def fail(key: str, message: str) -> PatternSetError:
        return PatternSetError(f"{origin}: {key}: {message}")

    known = {"name", "covers", "notes", "since", "before", "needs-version", "define", "pattern", "sample"}
    for key in doc:
        if key not in known:
            raise fail(key, f"unknown key; expected one of {', '.join(sorted(known))}")

    name = _string(doc, "name", fail)
    if not _NAME.match(name):
        raise fail("name", f"{name!r} is not a set name; expected lowercase letters, digits, '.', '_', '-'")
    covers = doc.get("covers")
    if not isinstance(covers, list) or not covers or not all(isinstance(c, str) and c for c in covers):
        raise fail("covers", "expected a non-empty list of strings (the Dovecot versions covered)")
    notes = doc.get("notes", "")
    if not isinstance(notes, str):
        raise fail("notes", "expected a string")
    bounds: list[str | None] = []
    for key in ("since", "before"):
        bound = doc.get(key)
        if bound is not None:
            if not isinstance(bound, str):
                raise fail(key, "expected a Dovecot version as a string, e.g. '2.0.beta6'")
            try:
                versions.check(bound)
            except ValueError as exc:
                raise fail(key, str(exc)) from None
        bounds.append(bound)
    since, before = bounds
    if since is not None and before is not None and versions.key(since) >= versions.key(before):
        raise fail("before", f"{before!r} is not after since = {since!r}")
    needs_version = doc.get("needs-version", False)
    if not isinstance(needs_version, bool):
        raise fail("needs-version", "expected true or false")
    if needs_version and since is None and before is None:
        raise fail("needs-version", "needs since or before: the versions the set is for")

    fragments = dict(BUILTIN_FRAGMENTS)
    define = doc.get("define", {})
    if not isinstance(define, dict):
        raise fail("define", "expected a table of NAME = 'regex fragment'")
    for key, value in define.items():
        if not _FRAGMENT_NAME.match(key):
            raise fail(f"define.{key}", "expected an UPPERCASE name")
        if not isinstance(value, str):
            raise fail(f"define.{key}", "expected a string (a regex fragment)")
        fragments[key] = value

    table = doc.get("pattern")
    if not isinstance(table, dict) or not table:
        raise fail("pattern", "expected at least one [pattern.NAME] table")
    patterns = tuple(_pattern(key, value, fragments, fail) for key, value in table.items())

    raw_samples = doc.get("sample", [])
    if not isinstance(raw_samples, list) or not raw_samples:
        raise fail("sample", "expected [[sample]] tables: every pattern needs a sample line")
    names = {p.name for p in patterns}
    samples = tuple(_sample(i, value, names, origin, fail) for i, value in enumerate(raw_samples, 1))
    claimed = {s.pattern for s in samples}
    for pattern in patterns:
        if pattern.name not in claimed:
            raise fail(f"pattern.{pattern.name}", "has no sample; add a [[sample]] whose pattern is it")
    return PatternSet(name, origin, tuple(covers), patterns, samples, trusted, notes, since, before, needs_version)


def _string(doc: Mapping[str, Any], key: str, fail: Any, prefix_: str = "") -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value:
        raise fail(prefix_ + key, "expected a non-empty string")
    return value


def _pattern(name: str, value: Any, fragments: dict[str, str], fail: Any) -> Pattern:
    where = f"pattern.{name}"
    if not _PATTERN_NAME.match(name):
        raise fail(where, "expected a lowercase name (letters, digits, '_', '-')")
    if not isinstance(value, dict):
        raise fail(where, "expected a table with result and regex")
    for key in value:
        if key not in ("result", "regex", "why"):
            raise fail(f"{where}.{key}", "unknown key; expected result, regex or why")
    result = value.get("result")
    if result not in RESULTS:
        raise fail(f"{where}.result", f"expected {' or '.join(RESULTS)}")
    source = _string(value, "regex", fail, where + ".")

    def expand(m: re.Match[str]) -> str:
        fragment = fragments.get(m[1])
        if fragment is None:
            raise fail(f"{where}.regex", f"<{m[1]}> is not defined; define it under [define]")
        return fragment

    expanded = _FRAGMENT_USE.sub(expand, source)
    try:
        regex.compile(expanded)
    except regex.error as exc:
        raise fail(f"{where}.regex", f"does not compile: {exc}") from None
    groups = _GROUP_NAME.findall(expanded)
    allowed = GROUPS[result]
    for group in groups:
        if group not in allowed:
            if group == "ip":
                raise fail(f"{where}.regex", "only a login pattern may have an (?P<ip>...) group")
            raise fail(f"{where}.regex", f"group (?P<{group}>...) is not allowed in a {result} pattern; "
                       f"only {', '.join(allowed)}")
        if group != "ip" and groups.count(group) > 1:
            raise fail(f"{where}.regex", f"group (?P<{group}>...) appears more than once")
    if result == "logout" and _LAZY.search(expanded):
        raise fail(f"{where}.regex", "a logout pattern must not use a lazy quantifier (the session id it "
                   "takes must be the one of the line's own prefix)")
    if result == "login":
        if groups.count("ip") != 1:
            raise fail(f"{where}.regex", "a login pattern needs exactly one (?P<ip>...) group")
        if not re.match(r"[A-Za-z]", source):
            raise fail(f"{where}.regex", "a login pattern must start with literal text, not a wildcard")
        if _LAZY.search(expanded):
            raise fail(f"{where}.regex", "a login pattern must not use a lazy quantifier (it would take the first rip=)")
    why = value.get("why", "")
    if not isinstance(why, str):
        raise fail(f"{where}.why", "expected a string")
    return Pattern(name, result, expanded, why)


def _sample(index: int, value: Any, names: set[str], origin: str, fail: Any) -> Sample:
    where = f"sample[{index}]"
    if not isinstance(value, dict):
        raise fail(where, "expected a table with line and result")
    allowed = {"line", "result", "ip", "user", "service", "pattern", "session", "why"}
    for key in value:
        if key not in allowed:
            raise fail(f"{where}.{key}", f"unknown key; expected one of {', '.join(sorted(allowed))}")
    line = value.get("line")
    if not isinstance(line, str) or "\n" in line:
        raise fail(f"{where}.line", "expected one log line as a string")
    result = value.get("result")
    if result not in SAMPLE_RESULTS:
        raise fail(f"{where}.result", f"expected {', '.join(SAMPLE_RESULTS)}")
    for key in ("ip", "user", "service", "pattern", "session", "why"):
        if key in value and not isinstance(value[key], str):
            raise fail(f"{where}.{key}", "expected a string")
    if result == "login":
        for key in ("ip", "service", "pattern"):
            if key not in value:
                raise fail(f"{where}.{key}", f"a login sample must say the {key} it gives")
    elif result in ("ignored", "logout"):
        if "pattern" not in value:
            raise fail(f"{where}.pattern", f"a{'n' if result == 'ignored' else ''} {result} sample must say "
                       "which pattern claims it")
    elif "pattern" in value:
        raise fail(f"{where}.pattern", "a nomatch sample has no pattern")
    if result != "login" and not value.get("why"):
        raise fail(f"{where}.why", "a negative sample must say why it must not authorise")
    pattern = value.get("pattern")
    if pattern is not None and pattern not in names:
        raise fail(f"{where}.pattern", f"{pattern!r} is not a pattern of this set")
    if "session" in value and result not in ("login", "logout"):
        raise fail(f"{where}.session", "only a login or logout sample gives a session")
    return Sample(line, result, f"{origin}: {where}", value.get("ip"), value.get("user"),
                  value.get("service"), pattern, value.get("why", ""), value.get("session"))


def load(path: str | os.PathLike[str], trusted: bool = False) -> PatternSet:
    """Read and parse one set file.

    Raises:
        PatternSetError: unreadable or invalid; the message names the file.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PatternSetError(f"{path}: cannot read pattern set: {reason}") from None
    return parse(text, str(path), trusted)


def load_dir(directory: str | os.PathLike[str]) -> list[PatternSet]:
    """Read every ``*.toml`` in ``directory``, in name order (an admin's own sets)."""
    base = Path(directory)
    if not base.is_dir():
        raise PatternSetError(f"{directory}: not a directory of pattern sets (*.toml)")
    return [load(path) for path in sorted(base.glob("*.toml"))]


def _shipped_folder() -> Any:
    """``patterns/`` as installed (package data of ``logwatch.patterns``), or in a checkout."""
    try:
        return resources.files("logwatch.patterns")
    except ModuleNotFoundError:  # run from a checkout that was never installed
        return Path(__file__).resolve().parent.parent / "patterns"


def builtin() -> list[PatternSet]:
    """The sets shipped with relaywatch, newest Dovecot first.

    Why that order: sets claim lines in order, and most logs today come from the newest
    releases; a failure line that reads alike in two versions is credited to the newer.
    """
    sets = []
    folder = _shipped_folder()
    for entry in sorted(folder.iterdir(), key=lambda e: e.name, reverse=True):
        if entry.name.endswith(".toml"):
            sets.append(parse(entry.read_text(encoding="utf-8"), f"patterns/{entry.name}", trusted=True))
    return sets
