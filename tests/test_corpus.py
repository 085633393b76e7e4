"""Real Dovecot lines (tests/data/corpus) and the generator's truth (tests/data/generated) agree with relaywatch."""

from __future__ import annotations

import gzip
import json

import pytest

from logwatch import patternset
from logwatch.matcher import Matcher
from tests.conftest import DATA

MATCHER = Matcher(patternset.builtin())
#: Every set chosen by name: the mixed logs hold Dovecot 1.x lines beside 2.x ones, and
#: no start-up line says which Dovecot wrote which.
EVERY_SET = Matcher(patternset.builtin(), by_version=False)


def test_recorded_dovecot_lines_give_the_expected_addresses() -> None:
    corpus = DATA / "corpus"
    records = [json.loads(line) for line in (corpus / "expected.jsonl").read_text().splitlines()]
    assert len(records) > 50
    files: dict[str, list[str]] = {}
    for record in records:
        lines = files.setdefault(record["file"], (corpus / record["file"]).read_text(encoding="utf-8").split("\n"))
        verdict = MATCHER.match(lines[record["line"] - 1])
        got = verdict.ip if verdict.result == "login" else None
        assert got == record["ip"], f"{record['file']}:{record['line']} ({record['action']})"


def test_fail2ban_sample_log_authorises_nothing() -> None:
    text = (DATA / "corpus" / "fail2ban-dovecot.log").read_bytes().decode("utf-8", "replace")
    lines = text.split("\n")
    assert len(lines) > 100
    logins = [line for line in lines if MATCHER.match(line).result == "login"]
    assert logins == []


@pytest.mark.parametrize("fmt, seed", [("mixed", 1), ("mixed", 7), ("syslog", 2), ("logpath", 3), ("rfc3339", 4), ("iso", 5)])
def test_generator_truth(fmt: str, seed: int) -> None:
    """Every login the generator wrote is found with its address, user and service; no other.
    The counting path (``classify``) decides every line as ``match`` does. The logs were made
    once by gen-dovecot-log.py (tests/data/generated/README.md says how)."""
    generated = DATA / "generated"
    with gzip.open(generated / f"{fmt}-{seed}.log.gz", "rt", encoding="utf-8", newline="") as log_file:
        log = log_file.read().split("\n")
    truth = [json.loads(line) for line in (generated / f"{fmt}-{seed}.truth.jsonl").read_text().splitlines()]
    assert len(log) == 10001 and log[-1] == ""
    assert len(truth) > 400
    expected = {t["line"]: (t["ip"], t["user"], t["proto"] + "-login") for t in truth}
    found = {}
    matcher = EVERY_SET if fmt == "mixed" else MATCHER
    for number, line in enumerate(log[:10000], 1):
        verdict = matcher.match(line)
        if verdict.result == "login":
            found[number] = (verdict.ip, verdict.user, verdict.service)
        assert matcher.classify(line) == (verdict.result, verdict.pattern_set, verdict.pattern), line
    assert found == expected
