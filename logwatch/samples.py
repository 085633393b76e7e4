"""Check a pattern set against the sample lines it carries.

Pure: the set and its samples in, a list of one-line failures out (empty: all agree).
Run by the test suite for every shipped set, at load time for an admin's own sets, and by
``relaywatch --test-pattern --check``, so an admin's set gets the same verdict as ours.

Checked both ways, as fail2ban's sample runner does: each sample gets exactly the verdict
written beside it (result, address, user, service, pattern); no sample is claimed by more
than one pattern of its set; every pattern has a sample (``patternset`` enforces that one
at parse time).
"""

from __future__ import annotations

import regex

from logwatch import prefix
from logwatch.matcher import Matcher, Verdict
from logwatch.patternset import PatternSet


def check(pattern_set: PatternSet) -> list[str]:
    """Return one message per sample of ``pattern_set`` that does not get its verdict."""
    # the set alone, as if named, and reading its logout lines (--sessions)
    matcher = Matcher([pattern_set], timeout=1.0, by_version=False, sessions=True)
    singles = {p.name: regex.compile(prefix.SOURCE + "(?:" + p.regex + ")") for p in pattern_set.patterns}
    failures = []
    for sample in pattern_set.samples:
        verdict = matcher.match(sample.line)
        wrong = _differences(sample.result, sample.ip, sample.user, sample.service, sample.pattern, verdict)
        if sample.session is not None and (verdict.session or "") != sample.session:
            wrong = ", ".join(filter(None, (wrong, "session")))
        if wrong:
            failures.append(f"{sample.where}: expected {sample.result}, got {_describe(verdict)} ({wrong}): {sample.line}")
            continue
        claimants = [name for name, compiled in singles.items() if compiled.fullmatch(sample.line, timeout=1.0)]
        if len(claimants) > 1:
            failures.append(f"{sample.where}: claimed by several patterns ({', '.join(claimants)}): {sample.line}")
    return failures


def _differences(result: str, ip: str | None, user: str | None, service: str | None,
                 pattern: str | None, verdict: Verdict) -> str:
    wrong = []
    if verdict.result != result:
        wrong.append("result")
    if result in ("login", "logout"):
        if user is not None and verdict.user != user:
            wrong.append("user")
    if result == "login":
        if verdict.ip != ip:
            wrong.append("ip")
        if verdict.service != service:
            wrong.append("service")
    if result != "nomatch" and verdict.pattern != pattern:
        wrong.append("pattern")
    return ", ".join(wrong)


def _describe(verdict: Verdict) -> str:
    parts = [verdict.result]
    for key in ("ip", "user", "service", "pattern", "session"):
        value = getattr(verdict, key)
        if value is not None:
            parts.append(f"{key}={value!r}")
    return " ".join(parts)
