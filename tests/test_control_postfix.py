"""Revocation as Postfix sees it: 250 before ``relaywatch revoke``, 554 within a second after.

A private Postfix (tests/postfixlab.py) checks relaywatch's hash map; ``relaywatch run``
follows a log the test writes; the revocation is timed from the moment the command returns
to the first RCPT that smtpd refuses.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


import postfixlab
from tests.daemonlab import LOGIN, Run, stamp, wait_for


def seconds_to_554(postfix: postfixlab.PostfixLab, source: str, limit: float = 5.0) -> float:
    """Probe from ``source`` until smtpd refuses; how long that took."""
    started = time.monotonic()
    while True:
        code, text = postfix.probe("hash", source)
        elapsed = time.monotonic() - started
        if code == 554:
            assert "Relay access denied" in text, text
            return elapsed
        assert code == 250 and elapsed < limit, (code, text, elapsed)


def test_revoke_reaches_postfix_within_a_second(tmp_path: Path, postfix: postfixlab.PostfixLab) -> None:
    r = Run(tmp_path, "--postfix-map", postfix.map_spec("hash"), "--postfix-config", str(postfix.config_dir),
            "--never", "127.0.0.1/32", "--expire", "10m")
    try:
        r.start()
        for ip, user in (("127.0.0.2", "alice"), ("127.0.0.3", "mallory"), ("127.0.0.4", "mallory")):
            r.write(LOGIN.format(stamp=stamp(), user=user, ip=ip))
        for source in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
            wait_for(lambda: postfix.probe("hash", source)[0] == 250, f"{source} to relay")
        measured = []
        for args, sources in ((["127.0.0.2"], ["127.0.0.2"]), (["--user", "mallory"], ["127.0.0.3", "127.0.0.4"])):
            done = subprocess.run([sys.executable, "-m", "logwatch", "revoke", *args, "--state", str(r.state)],
                                  capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
            for source in sources:
                measured.append(seconds_to_554(postfix, source))
        print(f"revoke -> 554: {', '.join(f'{m * 1000:.0f} ms' for m in measured)}")
        assert max(measured) < 1.0, measured
        # A revoked user logs in again: a new grant (revoke is not a block).
        r.write(LOGIN.format(stamp=stamp(), user="mallory", ip="127.0.0.3"))
        wait_for(lambda: postfix.probe("hash", "127.0.0.3")[0] == 250, "mallory's new login to relay")
        assert r.stop() == 0
    finally:
        if r.proc is not None:
            r.proc.kill()
            r.proc.wait()
