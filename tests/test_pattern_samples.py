"""Every shipped pattern set gets exactly the verdicts written beside its samples.

One test per set file (fail2ban's runner does the same), so a broken set fails under its
own name; and the whole catalogue must agree with each set on every positive sample.
"""

from __future__ import annotations

import dataclasses

import pytest

from logwatch import patternset, samples
from logwatch.matcher import Matcher

SETS = patternset.builtin()


@pytest.mark.parametrize("pattern_set", SETS, ids=[s.name for s in SETS])
def test_set_agrees_with_its_samples(pattern_set: patternset.PatternSet) -> None:
    assert samples.check(pattern_set) == []


@pytest.mark.parametrize("pattern_set", SETS, ids=[s.name for s in SETS])
def test_set_carries_hostile_samples(pattern_set: patternset.PatternSet) -> None:
    """Each set proves it refuses what attackers write: failures and forged fields."""
    negatives = [s for s in pattern_set.samples if s.result != "login"]
    assert any(s.result == "ignored" for s in negatives), "no failed-login sample"
    assert any("198.51.100.66" in s.line for s in pattern_set.samples), "no forged-address sample"
    assert all(s.why for s in negatives)


def _claims(matcher: Matcher, pattern_set: patternset.PatternSet) -> None:
    for sample in pattern_set.samples:
        if sample.result == "nomatch":
            continue
        verdict = matcher.match(sample.line)
        assert (verdict.result, verdict.ip) == (sample.result, sample.ip), sample.where


@pytest.mark.parametrize("pattern_set", SETS, ids=[s.name for s in SETS])
def test_every_set_keeps_its_verdicts_when_its_version_runs(pattern_set: patternset.PatternSet) -> None:
    """With every set loaded and Dovecot's version known, that version's set decides."""
    assert pattern_set.since is not None
    _claims(Matcher(SETS, version=pattern_set.since, sessions=True), pattern_set)


def test_all_sets_named_together_keep_every_positive_and_failure() -> None:
    """Chosen by name (``--pattern-set`` for each), no set's login or failure changes its
    verdict: the sets' tails cannot be read as each other's (brackets, mpid=, session=)."""
    matcher = Matcher(SETS, by_version=False, sessions=True)
    for pattern_set in SETS:
        _claims(matcher, pattern_set)


def test_unknown_version_claims_only_with_a_success_only_field() -> None:
    """Until the version is known, 0.99 and 1.x logins authorise nothing (issue 10)."""
    matcher = Matcher(SETS, sessions=True)
    assert {s.name for s in matcher.sets} == {"dovecot-2.4", "dovecot-2.0-2.3"}
    for pattern_set in SETS:
        for sample in pattern_set.samples:
            verdict = matcher.match(sample.line)
            if pattern_set.needs_version:
                if sample.result == "login":
                    assert verdict.result != "login", sample.where
            elif sample.result != "nomatch":
                assert (verdict.result, verdict.ip) == (sample.result, sample.ip), sample.where


@pytest.mark.parametrize("by_version", [True, False])
def test_forged_address_never_authorised_by_any_set(by_version: bool) -> None:
    for version in [None] + [s.since for s in SETS]:
        matcher = Matcher(SETS, version=version, by_version=by_version, sessions=True)
        for pattern_set in SETS:
            for sample in pattern_set.samples:
                assert matcher.match(sample.line).ip != "198.51.100.66", sample.where


def test_checker_reports_a_wrong_sample() -> None:
    """The runner itself can fail: a sample with the wrong address is reported by name."""
    base = SETS[0]
    first_login = next(s for s in base.samples if s.result == "login")
    wrong = dataclasses.replace(first_login, ip="203.0.113.254")
    broken = dataclasses.replace(base, samples=(wrong,) + base.samples[1:])
    failures = samples.check(broken)
    assert len(failures) == 1
    assert failures[0].startswith(f"{first_login.where}: expected login")
    assert "(ip)" in failures[0]


def test_checker_reports_a_line_claimed_by_two_patterns() -> None:
    text = '''
name = "twice"
covers = ["test"]
[pattern.a]
result = "ignored"
regex = 'Disconnected.*'
[pattern.b]
result = "ignored"
regex = 'Disconnected: x'
[[sample]]
line = 'Jun 10 12:00:00 mx dovecot: imap-login: Disconnected: x'
result = "ignored"
pattern = "a"
why = "both patterns match it"
[[sample]]
line = 'Jun 10 12:00:00 mx dovecot: imap-login: Disconnected: y'
result = "ignored"
pattern = "b"
why = "wrongly annotated"
'''
    failures = samples.check(patternset.parse(text, "twice.toml"))
    assert failures[0].startswith("twice.toml: sample[1]: claimed by several patterns (a, b)")
    assert failures[1].startswith("twice.toml: sample[2]: expected ignored, got ignored")
