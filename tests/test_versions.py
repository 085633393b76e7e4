"""Dovecot version numbers and the master's start-up line."""

from __future__ import annotations

import pytest

from logwatch import versions

ORDER = ["0.99.11", "1.0.test80", "1.0.alpha1", "1.0.beta2", "1.0.rc1", "1.0.0", "1.2.17",
         "2.0.beta5", "2.0.beta6", "2.0.0", "2.2.36.4", "2.3.19.1", "2.4.0", "2.4.1", "2.10"]


def test_versions_sort_as_dovecot_numbers_them() -> None:
    keys = [versions.key(v) for v in ORDER]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)


@pytest.mark.parametrize("a, b", [("2.4", "2.4.0"), ("2.0", "2.0.0.0")])
def test_missing_parts_count_as_zero(a: str, b: str) -> None:
    assert versions.key(a) == versions.key(b)


def test_a_release_is_after_its_pre_releases() -> None:
    assert versions.key("2.0") > versions.key("2.0.beta6") > versions.key("2.0.alpha3")


@pytest.mark.parametrize("text", ["", "v2.3", "2.x", "beta1", "2..3", "2.3-", "2.3-1 2", "1.2.3.4.5.6.7", "2.3 "])
def test_not_a_version(text: str) -> None:
    with pytest.raises(ValueError, match="is not a Dovecot version; expected e.g. 2.3.19.1"):
        versions.check(text)


@pytest.mark.parametrize("version, since, before, inside", [
    ("2.3.19.1", "2.0.beta6", "2.4", True),
    ("2.4.1", "2.0.beta6", "2.4", False),
    ("2.0.beta5", "2.0.beta6", "2.4", False),
    ("2.4.1", "2.4", None, True),
    ("1.2.17", None, "2.0.beta6", True),
])
def test_within(version: str, since: str | None, before: str | None, inside: bool) -> None:
    assert versions.within(version, since, before) is inside


@pytest.mark.parametrize("line, version", [
    ("Nov 30 21:48:22 master: Info: Dovecot v2.3.19.1 (9f57dc1bb0) starting up for imap, pop3 (core dumps disabled)", "2.3.19.1"),
    ("2026-11-30T21:48:22.123456+00:00 mx dovecot[812]: master: Dovecot v2.4.1 (7f0a2ba4ac) starting up for imap", "2.4.1"),
    ("Nov 30 21:48:22 dovecot: master: Dovecot v2.2.36.4 (baf9232c1) starting up without any protocols", "2.2.36.4"),
    ("Jun 10 12:00:00 mx dovecot: Dovecot v1.2.17 starting up (core dumps disabled)", "1.2.17"),
    ("dovecot: Jun 10 12:00:00 Info: Dovecot v1.0.rc15 starting up", "1.0.rc15"),
    ("2025-03-01 09:30:00 master: Info: Dovecot v2.4.1 (7f0a2ba4ac) starting up for imap, pop3", "2.4.1"),
    ("Nov 30 23:42:17 master: Info: Dovecot v2.4.1-4 (7d8c0e5759) starting up for imap, pop3 (core dumps disabled)",
     "2.4.1"),  # Debian 13's build names its package revision (the 2.4 lab)
    ("2026-11-30T23:42:21.285245+00:00 vm dovecot: master: Dovecot v2.4.1-1+deb13u1 (7d8c0e5759) starting up", "2.4.1"),
])
def test_startup_lines(line: str, version: str) -> None:
    assert versions.startup(line) == version


@pytest.mark.parametrize("line, why", [
    ("Nov 30 21:48:22 imap-login: Info: Dovecot v1.2.17 starting up", "a login process's line: client text can start it"),
    ("Nov 30 21:48:22 mx dovecot: imap-login: Dovecot v1.2.17 starting up", "the same through syslog"),
    ("Nov 30 21:48:22 mx postfix/smtpd[1]: dovecot: master: Dovecot v1.2.17 starting up", "another program's line"),
    ("Nov 30 21:48:22 master: Warning: Dovecot v2.3.19.1 (9f57dc1bb0) starting up", "not an Info line"),
    ("Nov 30 21:48:22 master: Info: Dovecot v2.x starting up", "not a version"),
    ("Nov 30 21:48:22 master: Info: Dovecot v2.3.19.1 (9f57dc1bb0) starting up\nx", "two lines"),
])
def test_not_startup_lines(line: str, why: str) -> None:
    assert versions.startup(line) is None, why



@pytest.mark.parametrize("given, version", [("2.4.1-4", "2.4.1"), ("2.3.19.1", "2.3.19.1"),
                                            ("2.3.19.1-1+deb12u1", "2.3.19.1")])
def test_a_package_revision_is_not_the_version(given: str, version: str) -> None:
    assert versions.check(given) == version
