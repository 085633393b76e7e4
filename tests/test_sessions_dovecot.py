"""``--sessions`` end to end on a real Dovecot 2.3 and 2.4: connected clients relay, logouts end it.

A private Dovecot (tests/dovecotlab.py, its own log file), ``relaywatch run --sessions
--expire 5s --session-max 16s`` as a process, and its relay-ctrl directory as the proof of
relay (the file of an address exists exactly while it may relay; the Postfix map is the
same ledger, tested end to end in test_end_to_end.py). All on one timeline, from the first
login (t = 0):

- an IMAP client (127.0.0.2) logs in and stays connected, sending a NOOP every 2 s: it
  relays all along, at 12 s too (more than twice --expire after its only login); it logs out
  at 15 s and relays about 5 s more, then no more;
- a POP3 client (127.0.0.3) logs in and out at once: it stops 5 s after its logout, as
  without --sessions;
- an IMAP client (127.0.0.5) whose imap process is killed (``kill -9``: no logout line is
  ever written) relays until --session-max after its login, plus --expire, and no longer;
- then an IMAP client (127.0.0.6) stays connected while Dovecot is restarted: the
  restart ends its session, and it stops relaying 5 s later.

Both versions take about 30 s each. Under CI=true the lab never skips (``need_lab``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.daemonlab import wait_for
from tests.dovecotlab import VERSIONS, DovecotLab, Version, need_lab

EXPIRE = 5.0
SESSION_MAX = 16.0
#: A withdrawal is due at a whole second of the log's stamps (they have no fraction), and
#: relaywatch's loop looks at least once a second: allow this much past the due time.
LATE = 2.5


def gone_at(rc: Path, ip: str, deadline: float = 40.0) -> float:
    """Wait until ``ip``'s relay-ctrl file is gone; return ``time.time()`` then."""
    wait_for(lambda: not (rc / ip).exists(), f"{ip} to stop relaying", deadline)
    return time.time()


@pytest.mark.parametrize("version", VERSIONS)
def test_sessions_on_real_dovecot(version: Version, tmp_path: Path) -> None:
    need_lab("file", version)
    rc = tmp_path / "relay-ctrl"
    rc.mkdir()
    err = tmp_path / "relaywatch.err"
    with DovecotLab(tmp_path, log="file", version=version) as dovecot:
        args = [sys.executable, "-m", "logwatch", "run", "--log", str(dovecot.log_path), "--relay-ctrl-dir", str(rc),
                "--state", str(tmp_path / "state.json"), "--sessions", "--expire", "5s",
                "--session-max", "16s", "--never", "127.0.0.1/32"]
        with err.open("wb") as stderr:
            daemon = subprocess.Popen(args, stderr=stderr, stdin=subprocess.DEVNULL)
        try:
            wait_for(lambda: "sessions: a client stays" in err.read_text() or daemon.poll() is not None,
                     "relaywatch to start")
            assert daemon.poll() is None, err.read_text()
            dovecot.restart()  # a start-up line relaywatch reads: it chooses the version's sets
            wait_for(lambda: "started; the sets that claim lines now" in err.read_text(), "the version read")

            connected = dovecot.connect("imap", "alice", source="127.0.0.2")
            t0 = time.time()
            killed = dovecot.connect("imap", "bob", source="127.0.0.5")
            killed_at = time.time()
            assert connected.session and killed.session, (connected.line, killed.line)
            os.kill(killed.mpid, signal.SIGKILL)
            pop3 = dovecot.login("pop3", "bob", source="127.0.0.3")
            pop3_out = time.time()
            wait_for(lambda: {p.name for p in rc.iterdir()} >= {"127.0.0.2", "127.0.0.3", "127.0.0.5"},
                     "the three grants")

            # 0 to 15 s: the connected client (and the killed one) relay throughout.
            pop3_gone = None
            noop = 0.0
            while time.time() < t0 + 15:
                assert (rc / "127.0.0.2").exists(), f"the connected client stopped at {time.time() - t0:.1f}s"
                assert (rc / "127.0.0.5").exists(), f"the killed session ended at {time.time() - killed_at:.1f}s"
                if pop3_gone is None and not (rc / "127.0.0.3").exists():
                    pop3_gone = time.time()
                if time.time() >= noop:
                    connected.noop()
                    noop = time.time() + 2
                time.sleep(0.05)
            assert (rc / "127.0.0.2").exists() and time.time() - t0 >= 12
            assert pop3_gone is not None, "a POP3 login still relayed 15 s after its logout"
            assert EXPIRE - 1 - 0.5 <= pop3_gone - pop3_out <= EXPIRE + LATE, pop3_gone - pop3_out

            # 15 s: the connected client logs out; it relays about --expire more.
            logout_line = connected.logout()
            out = time.time()
            assert f"<{connected.mpid}><{connected.session}>: " in logout_line
            gone = gone_at(rc, "127.0.0.2")
            assert EXPIRE - 1 - 0.5 <= gone - out <= EXPIRE + LATE, gone - out

            # The killed session: no logout ever; --session-max after its login, then --expire.
            ended = gone_at(rc, "127.0.0.5")
            bound = SESSION_MAX + EXPIRE
            assert bound - 1 - 0.5 <= ended - killed_at <= bound + LATE, ended - killed_at

            # Dovecot restarted while a session is open ends it.
            held = dovecot.connect("imap", "alice", source="127.0.0.6")
            wait_for(lambda: (rc / "127.0.0.6").exists(), "the grant of 127.0.0.6")
            stopped: list[float] = []  # watched while the restart runs (Dovecot 2.3 takes 10 s)
            watcher = threading.Thread(target=lambda: stopped.append(gone_at(rc, "127.0.0.6")), daemon=True)
            stopping = time.time()
            watcher.start()
            dovecot.restart()
            held.close()
            watcher.join(60)
            assert stopped and stopped[0] - stopping <= EXPIRE + LATE, (stopped, stopping)
        finally:
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=60) == 0, err.read_text()
    log = err.read_text()
    assert "sessions cannot be followed" not in log, log
    assert "withdrawn 127.0.0.2 (imap-login, user=<alice>): expired" in log
    # (Its logout extends nothing: the grant was renewed, connected, within the second before.)
    assert "sessions ended (session-max), authorised 127.0.0.5 " in log
    assert "withdrawn 127.0.0.3 (pop3-login, user=<bob>): expired" in log
    assert "Dovecot stopped: every open session ended" in log or "Dovecot started: every open session ended" in log
