"""A set file with a mistake is refused with one line naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from logwatch import catalog, patternset
from logwatch.patternset import PatternSetError

GOOD = '''
name = "site"
covers = ["Dovecot 2.3 with a custom format"]
[pattern.login]
result = "login"
regex = 'Login: (?P<user>\\S+) from (?P<ip><ADDR>)'
[[sample]]
line = 'Jun 10 12:00:00 mx dovecot: imap-login: Login: bob from 192.0.2.7'
result = "login"
ip = "192.0.2.7"
user = "bob"
service = "imap-login"
pattern = "login"
'''


def test_good_file_parses() -> None:
    parsed = patternset.parse(GOOD, "site.toml")
    assert parsed.name == "site"
    assert parsed.patterns[0].regex == r"Login: (?P<user>\S+) from (?P<ip>[0-9A-Fa-f:.]{2,45})"
    assert not parsed.trusted


@pytest.mark.parametrize("old, new, message", [
    ('name = "site"', 'name = "Site Set"', "site.toml: name: 'Site Set' is not a set name"),
    ('name = "site"', 'nmae = "site"', "site.toml: nmae: unknown key"),
    ('covers = ["Dovecot 2.3 with a custom format"]', 'covers = []', "site.toml: covers: expected a non-empty list"),
    ('result = "login"\nregex', 'result = "yes"\nregex', "site.toml: pattern.login.result: expected login or ignored"),
    ("regex = 'Login: (?P<user>\\S+) from (?P<ip><ADDR>)'", "regex = 'Login: (?P<user>\\S+ from'",
     "site.toml: pattern.login.regex: does not compile: missing )"),
    ("(?P<ip><ADDR>)'", "<ADDR>'", "site.toml: pattern.login.regex: a login pattern needs exactly one (?P<ip>...) group"),
    ("regex = 'Login: (?P<user>\\S+) from", "regex = '.*Login: (?P<user>\\S+) from",
     "site.toml: pattern.login.regex: a login pattern must start with literal text"),
    ("(?P<user>\\S+) from", "(?P<user>.*?) from",
     "site.toml: pattern.login.regex: a login pattern must not use a lazy quantifier"),
    ("(?P<user>\\S+) from", "(?P<who>\\S+) from", "site.toml: pattern.login.regex: group (?P<who>...) is not allowed"),
    ("<ADDR>", "<HOST>", "site.toml: pattern.login.regex: <HOST> is not defined"),
    ('pattern = "login"', 'pattern = "logon"', "site.toml: sample[1].pattern: 'logon' is not a pattern of this set"),
    ('ip = "192.0.2.7"\n', "", "site.toml: sample[1].ip: a login sample must say the ip it gives"),
    ('result = "login"\nip', 'result = "nomatch"\nip', "site.toml: sample[1].pattern: a nomatch sample has no pattern"),
    ('name = "site"', 'name = "site', "site.toml: not valid TOML: "),
])
def test_mistakes_name_file_and_key(old: str, new: str, message: str) -> None:
    assert old in GOOD
    with pytest.raises(PatternSetError) as caught:
        patternset.parse(GOOD.replace(old, new, 1), "site.toml")
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_pattern_without_sample_is_refused() -> None:
    text = GOOD + "[pattern.failed]\nresult = \"ignored\"\nregex = 'Login failed.*'\n"
    with pytest.raises(PatternSetError, match=r"^site.toml: pattern.failed: has no sample"):
        patternset.parse(text, "site.toml")


def test_ignored_pattern_may_not_take_an_address() -> None:
    text = GOOD + ("[pattern.failed]\nresult = \"ignored\"\nregex = 'Login failed (?P<ip><ADDR>)'\n"
                   "[[sample]]\nline = 'x'\nresult = \"nomatch\"\nwhy = \"x\"\n")
    with pytest.raises(PatternSetError, match=r"pattern.failed.regex: only a login pattern may have"):
        patternset.parse(text, "site.toml")


def test_admin_directory_is_loaded_before_ours_and_checked(tmp_path: Path) -> None:
    (tmp_path / "site.toml").write_text(GOOD)
    sets = catalog.select(directories=[tmp_path])
    assert [s.name for s in sets][:2] == ["site", "dovecot-2.4"]
    assert not sets[0].trusted and sets[1].trusted


def test_admin_set_with_a_failing_sample_is_refused(tmp_path: Path) -> None:
    (tmp_path / "site.toml").write_text(GOOD.replace('ip = "192.0.2.7"', 'ip = "192.0.2.8"'))
    with pytest.raises(PatternSetError) as caught:
        catalog.select(directories=[tmp_path])
    assert str(caught.value).startswith(f"{tmp_path / 'site.toml'}: sample[1]: expected login, got login ip='192.0.2.7'")


def test_unknown_set_name_lists_the_sets() -> None:
    with pytest.raises(PatternSetError, match=r"^--pattern-set: no set is named 'dovecot-3'; the sets are dovecot-2.4, "):
        catalog.select(["dovecot-3"])


def test_duplicate_set_name_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(GOOD.replace('name = "site"', 'name = "dovecot-2.4"'))
    with pytest.raises(PatternSetError, match=r"a.toml: name: 'dovecot-2.4' is already the name of"):
        catalog.select(directories=[tmp_path])


def test_unreadable_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(PatternSetError, match=r"missing.toml: cannot read pattern set: No such file"):
        patternset.load(tmp_path / "missing.toml")
