"""Real Dovecot lines (../shared/corpus) and the generator's truth agree with relaywatch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from logwatch import patternset
from logwatch.matcher import Matcher
from tests.conftest import need_shared

MATCHER = Matcher(patternset.builtin())


def test_recorded_dovecot_lines_give_the_expected_addresses() -> None:
    corpus = need_shared() / "corpus"
    records = [json.loads(line) for line in (corpus / "expected.jsonl").read_text().splitlines()]
    assert len(records) > 50
    files: dict[str, list[str]] = {}
    for record in records:
        lines = files.setdefault(record["file"], (corpus / record["file"]).read_text(encoding="utf-8").split("\n"))
        verdict = MATCHER.match(lines[record["line"] - 1])
        got = verdict.ip if verdict.result == "login" else None
        assert got == record["ip"], f"{record['file']}:{record['line']} ({record['action']})"


def test_fail2ban_sample_log_authorises_nothing() -> None:
    text = (need_shared() / "corpus" / "fail2ban-dovecot.log").read_bytes().decode("utf-8", "replace")
    lines = text.split("\n")
    assert len(lines) > 100
    logins = [line for line in lines if MATCHER.match(line).result == "login"]
    assert logins == []


@pytest.mark.parametrize("fmt, seed", [("mixed", 1), ("mixed", 7), ("syslog", 2), ("logpath", 3), ("rfc3339", 4), ("iso", 5)])
def test_generator_truth(fmt: str, seed: int) -> None:
    """Every login the generator wrote is found with its address, user and service; no other.
    The counting path (``classify``) decides every line as ``match`` does."""
    tool = need_shared() / "tools" / "gen-dovecot-log.py"
    args = [sys.executable, str(tool), "--lines", "20000", "--format", fmt, "--seed", str(seed)]
    log = subprocess.run(args, check=True, capture_output=True, text=True).stdout.split("\n")
    truth = [json.loads(line) for line in subprocess.run(args + ["--truth"], check=True, capture_output=True,
                                                         text=True).stdout.splitlines()]
    assert len(truth) > 500
    expected = {t["line"]: (t["ip"], t["user"], t["proto"] + "-login") for t in truth}
    found = {}
    for number, line in enumerate(log[:20000], 1):
        verdict = MATCHER.match(line)
        if verdict.result == "login":
            found[number] = (verdict.ip, verdict.user, verdict.service)
        assert MATCHER.classify(line) == (verdict.result, verdict.pattern_set, verdict.pattern), line
    assert found == expected
