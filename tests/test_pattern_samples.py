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


def test_all_sets_together_keep_every_positive_and_failure() -> None:
    """With every set loaded (the default), no set's login or failure changes its verdict."""
    matcher = Matcher(SETS)
    for pattern_set in SETS:
        for sample in pattern_set.samples:
            if sample.result == "nomatch":
                continue
            verdict = matcher.match(sample.line)
            assert (verdict.result, verdict.ip) == (sample.result, sample.ip), sample.where


def test_forged_address_never_authorised_by_any_set() -> None:
    matcher = Matcher(SETS)
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
