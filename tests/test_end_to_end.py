"""The whole chain, for real: Dovecot logins -> relaywatch run -> Postfix relays or refuses.

A private Dovecot, 2.3 (the host's) and 2.4 (Debian 13's, chrooted; see tests/dovecotlab.py),
each with its own log file or syslog through a private rsyslogd, a private
Postfix whose smtpd checks relaywatch's hash map, and ``relaywatch run`` as a process.
Real IMAP/POP3 clients log in from 127.0.0.N and ::1, fail, abort, and use accounts whose
names forge ``rip=6.6.6.6``; then real SMTP RCPT probes from the same sources: every
successful login relays, no other source does, and 6.6.6.6 reaches no sink. On 2.4 this
proves that relaywatch recognises what a real 2.4 writes for a success (``Logged in:``,
with ``mpid=``), and nothing in its failure and abort lines (``Login aborted:``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import postfixlab
from tests.daemonlab import wait_for
from tests.dovecotlab import (FORGED_IP, HOSTILE_BRACKET, HOSTILE_COMMA, LOGIN_MESSAGE,
                              VERSIONS, DovecotLab, Version, need_lab)



def need_postfix() -> None:
    problems = postfixlab.missing()
    if problems:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the Postfix lab: {'; '.join(problems)}")
        pytest.skip("; ".join(problems))


@pytest.fixture
def postfix() -> Iterator[postfixlab.PostfixLab]:
    need_postfix()
    lab = postfixlab.start(["hash"], ipv6=True)
    try:
        yield lab
    finally:
        lab.stop()


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("mode", ["file", "syslog"])
def test_logins_relay_and_nothing_else_does(mode: str, version: Version, tmp_path: Path,
                                            postfix: postfixlab.PostfixLab) -> None:
    need_lab(mode, version)  # type: ignore[arg-type]
    relay_ctrl = tmp_path / "relay-ctrl"
    relay_ctrl.mkdir()
    err = tmp_path / "relaywatch.err"
    spec = postfix.map_spec("hash")
    with DovecotLab(tmp_path, log=mode, version=version) as dovecot:  # type: ignore[arg-type]
        args = [sys.executable, "-m", "logwatch", "run", "--log", str(dovecot.log_path),
                "--postfix-map", spec, "--postfix-config", str(postfix.config_dir),
                "--relay-ctrl-dir", str(relay_ctrl), "--state", str(tmp_path / "state.json"),
                "--never", "127.0.0.1/32", "--expire", "10m"]
        with err.open("wb") as stderr:
            daemon = subprocess.Popen(args, stderr=stderr, stdin=subprocess.DEVNULL)
        try:
            wait_for(lambda: "first start" in err.read_text() or daemon.poll() is not None, "relaywatch to start")
            assert daemon.poll() is None, err.read_text()
            # relaywatch read back --expire (the first start), Dovecot's start-up line with
            # it; a restart writes another, as after an upgrade, and it chooses its sets again.
            dovecot.restart()
            logins = [dovecot.login("imap", "alice", source="127.0.0.2"),
                      dovecot.login("pop3", "bob", source="127.0.0.3"),
                      dovecot.login("imap", "alice", source="::1"),
                      dovecot.login("imap", HOSTILE_BRACKET, source="127.0.0.6"),
                      dovecot.login("pop3", HOSTILE_COMMA, source="127.0.0.7")]
            # The version's own success message, with mpid=: the test is of that format.
            for attempt in logins:
                assert f"-login: {'Info: ' if mode == 'file' else ''}{LOGIN_MESSAGE[version]} user=<" in attempt.line, attempt.line
                assert ", mpid=" in attempt.line, attempt.line
            dovecot.fail_login("imap", "alice", source="127.0.0.4")
            dovecot.fail_login("pop3", HOSTILE_COMMA, source="127.0.0.8")
            dovecot.abort("pop3", source="127.0.0.5")
            relayed = ["127.0.0.2", "127.0.0.3", "::1", "127.0.0.6", "127.0.0.7"]
            refused = ["127.0.0.4", "127.0.0.5", "127.0.0.8", "127.0.0.9"]
            wait_for(lambda: {p.name for p in relay_ctrl.iterdir()} == set(relayed), "the relay-ctrl files")
            for source in relayed:
                wait_for(lambda: postfix.probe("hash", source)[0] == 250, f"{source} to relay")
            for source in refused:
                code, text = postfix.probe("hash", source)
                assert (code, "Relay access denied" in text) == (554, True), (source, code, text)
            text_map = Path(spec.partition(":")[2]).read_text()
            assert FORGED_IP not in text_map and FORGED_IP not in {p.name for p in relay_ctrl.iterdir()}
            rows = [line.split()[0] for line in text_map.splitlines() if line.strip() and not line.startswith("#")]
            assert sorted(rows) == sorted(relayed)
        finally:
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=60) == 0, err.read_text()
    log = err.read_text()
    assert f"authorised {FORGED_IP}" not in log
    assert f"authorised 127.0.0.7 (pop3-login, user=<{HOSTILE_COMMA}>)" in log
    for source in relayed:
        assert f"authorised {source} " in log
    # Which sets relaywatch chose from the start-up line it read: that version's alone (2.4:
    # Debian 13 writes "Dovecot v2.4.1-4 (7d8c0e5759) starting up", its package revision
    # dropped). The map's own work is judged above by what it holds and what smtpd answers.
    chosen = re.findall(r"Dovecot v(\S+) started; the sets that claim lines now: (.*)", log)
    if version == "2.3":
        assert chosen == [("2.3.19.1", "dovecot-2.0-2.3")] * 2, chosen
    else:
        assert chosen == [("2.4.1", "dovecot-2.4")] * 2, chosen
