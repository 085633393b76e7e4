"""A stopped relaywatch leaves no client relaying past its end: ``relaywatch withdraw-expired``.

Issue 16: however relaywatch ends (here ``kill -9``), no client may relay through the Postfix
map (or the relay-ctrl directory) long past its grant's end, and a restart must not be
interrupted. A private Postfix (tests/postfixlab.py) checks relaywatch's hash map; the timer
of the shipped units is stood in for by running the command when the timer would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


import postfixlab
from tests.daemonlab import LOGIN, Run, stamp, wait_for


def withdraw_expired(r: Run, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "logwatch", "withdraw-expired", "--log", str(r.log),
                           "--relay-ctrl-dir", str(r.rc), "--state", str(r.state), *r.extra, *options],
                          capture_output=True, text=True, timeout=120)


def test_a_killed_relaywatch_leaves_no_client_relaying_past_its_end(
        tmp_path: Path, postfix: postfixlab.PostfixLab) -> None:
    r = Run(tmp_path, "--postfix-map", postfix.map_spec("hash"), "--postfix-config", str(postfix.config_dir),
            "--never", "127.0.0.1/32", "--expire", "6s")
    r.start()
    r.write(LOGIN.format(stamp=stamp(), user="alice", ip="127.0.0.2"))
    wait_for(lambda: postfix.probe("hash", "127.0.0.2")[0] == 250 and "127.0.0.2" in r.granted(), "127.0.0.2 to relay")
    granted_at = time.time()

    running = withdraw_expired(r)
    assert running.returncode == 0 and "withdraws on time itself: nothing done" in running.stdout, running

    r.stop(signal.SIGKILL)  # nothing expires it now
    early = withdraw_expired(r)  # the timer fires before the grant's end: a restart must find it
    assert early.returncode == 0 and "1 client(s) still live" in early.stdout, early
    assert postfix.probe("hash", "127.0.0.2")[0] == 250 and "127.0.0.2" in r.granted()

    time.sleep(max(0.0, granted_at + 6.5 - time.time()))
    assert postfix.probe("hash", "127.0.0.2")[0] == 250, "the problem: a stopped relaywatch expires nothing"
    done = withdraw_expired(r)
    assert done.returncode == 0, done.stderr
    assert "0 client(s) still live" in done.stdout and "1 file(s) past their end removed" in done.stdout, done.stdout
    wait_for(lambda: postfix.probe("hash", "127.0.0.2")[0] == 554, "Postfix to refuse 127.0.0.2", deadline=5)
    assert r.granted() == set()

    r.start()  # and relaywatch comes back as usual
    r.write(LOGIN.format(stamp=stamp(), user="alice", ip="127.0.0.3"))
    wait_for(lambda: postfix.probe("hash", "127.0.0.3")[0] == 250, "127.0.0.3 to relay after the restart")
    r.stop()


def test_without_a_state_it_says_so_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "rc").mkdir()
    (tmp_path / "mail.log").touch()
    done = subprocess.run([sys.executable, "-m", "logwatch", "withdraw-expired", "--log", str(tmp_path / "mail.log"),
                           "--relay-ctrl-dir", str(tmp_path / "rc")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr == ("relaywatch: withdraw-expired: --state: withdraw-expired reads the grants' ends "
                           "from the state; give --state FILE\n")


def test_foreign_files_and_live_grants_stay(tmp_path: Path) -> None:
    """Only files of ours past their end go: a live grant's file, a file someone else made,
    and a file of another shape under a client's name stay."""
    r = Run(tmp_path, "--never", "127.0.0.1/32", "--expire", "1h")
    r.start()
    r.write(LOGIN.format(stamp=stamp(), user="alice", ip="127.0.0.2"))
    wait_for(lambda: "127.0.0.2" in r.granted(), "127.0.0.2's file")
    r.stop(signal.SIGKILL)
    stale = r.rc / "198.51.100.9"  # shaped like ours, and in no state
    stale.touch(mode=0o644)
    os.chmod(stale, 0o644)
    foreign = r.rc / "198.51.100.10"
    foreign.write_text("RELAYCLIENT=\n")
    done = withdraw_expired(r)
    assert done.returncode == 0 and "1 file(s) past their end removed" in done.stdout, done
    assert r.granted() == {"127.0.0.2", "198.51.100.10"}
