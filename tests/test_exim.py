"""A real Exim relays through relaywatch's relay-ctrl directory (contrib/exim-relay-ctrl.conf).

``relaywatch run --relay-ctrl-dir`` follows a log the test writes Dovecot 2.3 lines into;
a private Exim 4.96 daemon (tests/eximlab.py) checks each RCPT with the dsearch ACL from
contrib. Probes come from 127.0.0.5 (logs in), ::1 (logs in) and 127.0.0.6 (never does),
to 127.0.0.1, [::1], and an IPv6 socket bound to [::ffff:127.0.0.1] (IPv4-mapped clients):
refused before the login, relayed after it (also within a connection that was refused
before), refused after relaywatch withdraws the grant, and, for a file left behind by a
stopped relaywatch, relayed until its mtime is older than RELAYWATCH_EXPIRE.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import eximlab
from tests.daemonlab import Run, wait_for

START = "{stamp} master: Info: Dovecot v2.3.19.1 (9f57dc1bb0) starting up for imap, pop3"
LOGIN = ("{stamp} imap-login: Info: Login: user=<bob>, method=PLAIN, rip={ip}, lip={lip}, "
         "mpid=42, session=<abcdefgh>")
#: The lab's RELAYWATCH_EXPIRE, far above relaywatch's --expire: a refusal after expiry is
#: then relaywatch's withdrawal, not the mtime check.
LAB_EXPIRE = 60


def stamp() -> str:
    """Now, as Dovecot's own log file writes it (log_timestamp = "%b %d %H:%M:%S ")."""
    return time.strftime("%b %d %H:%M:%S")


@pytest.fixture
def exim() -> Iterator[eximlab.EximLab]:
    problems = eximlab.missing()
    if problems:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the Exim lab: {'; '.join(problems)}")
        pytest.skip("; ".join(problems))
    lab = eximlab.start(expire=LAB_EXPIRE)
    try:
        yield lab
    finally:
        lab.stop()


def test_exim_relays_after_a_login_and_refuses_after_expiry(exim: eximlab.EximLab) -> None:
    # relaywatch's files, log and state live in the lab's root: Exim's Debian-exim must
    # search the relay-ctrl directory.
    relaywatch = Run(exim.root, "--never", "none", "--expire", "3s")
    assert relaywatch.rc == exim.relay_ctrl
    # Every listener a source is probed on: (listener, source).
    granted = [("v4", "127.0.0.5"), ("mapped", "127.0.0.5"), ("v6", "::1")]
    stranger = [("v4", "127.0.0.6"), ("mapped", "127.0.0.6")]
    seen: list[tuple[str, str, int, str]] = []

    def expect(code: int, probes: list[tuple[str, str]], when: str) -> None:
        for listener, source in probes:
            got, text = exim.probe(listener, source)
            seen.append((when, f"{source}->{listener}", got, text))
            assert got == code, (when, listener, source, got, text, exim.log())
            if code == 550:
                assert eximlab.REFUSAL in text, (when, listener, source, text)

    relaywatch.start()
    try:
        relaywatch.write(START.format(stamp=stamp()))
        expect(550, granted + stranger, "before the login")
        # A session refused before the login relays after it (cache=no_rd).
        with exim.connect("v4", "127.0.0.5") as session:
            code, reply = session.rcpt(eximlab.REMOTE_RCPT)
            seen.append(("same session, before the login", "127.0.0.5->v4", code, reply.decode()))
            assert code == 550, (code, reply)
            relaywatch.write(LOGIN.format(stamp=stamp(), ip="127.0.0.5", lip="127.0.0.1"))
            relaywatch.write(LOGIN.format(stamp=stamp(), ip="::1", lip="::1"))
            wait_for(lambda: relaywatch.granted() == {"127.0.0.5", "::1"}, "the relay-ctrl files")
            granted_at = time.monotonic()
            code, reply = session.rcpt(eximlab.REMOTE_RCPT)
            seen.append(("same session, after the login", "127.0.0.5->v4", code, reply.decode()))
            assert code == 250, (code, reply, exim.log())
        expect(250, granted, "after the login")
        relayed_for = time.monotonic() - granted_at
        expect(550, stranger, "after the login")
        # --expire 3s: relaywatch removes the files; the lab's mtime check (60 s) would
        # still allow them, so the refusal is the withdrawal's.
        wait_for(lambda: not relaywatch.granted(), "relaywatch to withdraw the grants", deadline=20)
        expect(550, granted + stranger, "after expiry")

        # A file left behind by a stopped relaywatch relays until its mtime is older than
        # RELAYWATCH_EXPIRE, then the mtime check refuses it.
        relaywatch.write(LOGIN.format(stamp=stamp(), ip="127.0.0.5", lip="127.0.0.1"))
        wait_for(lambda: relaywatch.granted() == {"127.0.0.5"}, "the renewed file")
        assert relaywatch.stop() == 0, relaywatch.errors()
        assert relaywatch.granted() == {"127.0.0.5"}
        expect(250, granted[:2], "relaywatch stopped, file fresh")
        old = time.time() - LAB_EXPIRE - 5
        os.utime(exim.relay_ctrl / "127.0.0.5", (old, old))
        expect(550, granted[:2], "relaywatch stopped, file too old")
    finally:
        if relaywatch.proc is not None:
            relaywatch.stop()
        for when, probe, code, text in seen:
            print(f"{when:32} {probe:22} {code} {text}")
    assert relayed_for < 2.5, f"the 'after the login' probes took {relayed_for:.2f} s of a 3 s grant"
    errors = relaywatch.errors()
    assert "authorised 127.0.0.5 " in errors and "authorised ::1 " in errors, errors
