"""The control channel, for real: ``relaywatch run`` as a process, the commands as processes.

allow, revoke (addresses and --user), block-user / unblock-user / blocked, what survives a
restart, the never-list, one-line refusals with status 2; and who may use the socket,
checked as an unprivileged user (nobody: refused; nobody in the socket's group: accepted).
Revocation against a real Postfix is in tests/test_control_postfix.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from logwatch import control
from tests.daemonlab import LOGIN, Run, stamp, wait_for


def relaywatch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "logwatch", *args], capture_output=True, text=True, timeout=60)


def answering(r: Run) -> bool:
    """True once the daemon answers on its socket (a restart's start-up line is already in
    the lab's stderr file from the first run, so ``Run.start`` returns early)."""
    try:
        return bool(control.ask(r.state, {"command": "ping"}, timeout=5).get("ok"))
    except control.ControlError:
        return False


def restart(r: Run) -> None:
    r.start()
    wait_for(lambda: answering(r), "the restarted daemon's socket")


def events(r: Run) -> list[dict[str, object]]:
    path = r.state.parent / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_allow_revoke_and_the_event_feed(run: Callable[..., Run]) -> None:
    r = run("--expire", "10m")
    r.start()
    state = str(r.state)
    sock = r.state.parent / control.SOCKET
    st = sock.stat()
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
    assert st.st_gid == r.state.parent.stat().st_gid
    done = relaywatch("allow", "192.0.2.50", "--for", "1h", "--note", "office during the migration", "--state", state)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "192.0.2.50 may relay for 1h"
    assert "192.0.2.50" in r.granted()  # published before the answer came back
    r.write(LOGIN.format(stamp=stamp(), user="mallory", ip="198.51.100.7"))
    r.write(LOGIN.format(stamp=stamp(), user="mallory", ip="198.51.100.8"))
    r.write(LOGIN.format(stamp=stamp(), user="bob", ip="198.51.100.9"))
    wait_for(lambda: r.granted() == {"192.0.2.50", "198.51.100.7", "198.51.100.8", "198.51.100.9"}, "the logins")
    done = relaywatch("revoke", "--user", "mallory", "--state", state)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "user mallory: withdrew 2 address(es): 198.51.100.7, 198.51.100.8"
    assert r.granted() == {"192.0.2.50", "198.51.100.9"}
    done = relaywatch("revoke", "192.0.2.50", "::ffff:198.51.100.9", "--state", state)
    assert done.returncode == 0 and r.granted() == set(), done.stderr
    wait_for(lambda: len([e for e in events(r) if e["kind"] == "withdrawn"]) == 4, "the events")
    uid = os.getuid()
    reasons = [(e["kind"], e["ip"], e["reason"]) for e in events(r) if e["ip"] in ("192.0.2.50", "198.51.100.7")]
    assert ("authorised", "192.0.2.50", f"allowed by hand (uid {uid}) for 1h: office during the migration") in reasons
    assert ("withdrawn", "198.51.100.7", f"revoked by hand (uid {uid}) user mallory") in reasons
    assert f"control: uid {uid} " in r.errors()
    # Revoked is revoked across a restart, though the state's write-ahead log still has them.
    assert r.stop() == 0
    restart(r)
    assert r.granted() == set()
    assert r.stop() == 0


def test_block_user_persists_and_unblock(run: Callable[..., Run]) -> None:
    r = run("--expire", "10m")
    r.start()
    state = str(r.state)
    done = relaywatch("block-user", "Eve", "--note", "password sold", "--state", state)
    assert done.returncode == 0 and done.stdout.startswith("user Eve blocked until unblocked"), done.stderr
    r.write(LOGIN.format(stamp=stamp(), user="eve", ip="198.51.100.20"))  # names are compared case-folded
    r.write(LOGIN.format(stamp=stamp(), user="bob", ip="198.51.100.21"))
    wait_for(lambda: r.granted() == {"198.51.100.21"}, "bob's grant")
    assert "198.51.100.20" not in r.granted()
    wait_for(lambda: any(e["kind"] == "refused" and e["ip"] == "198.51.100.20" for e in events(r)), "the refusal")
    assert r.stop() == 0
    restart(r)  # the block is kept across a restart
    listed = relaywatch("blocked", "--state", state)
    assert listed.returncode == 0 and listed.stdout.splitlines()[0] == "1 user(s) blocked", listed.stderr
    assert listed.stdout.splitlines()[1].startswith("eve  until unblocked  (by uid ")
    r.write(LOGIN.format(stamp=stamp(), user="eve", ip="198.51.100.22"))
    r.write(LOGIN.format(stamp=stamp(), user="bob", ip="198.51.100.23"))
    wait_for(lambda: "198.51.100.23" in r.granted(), "bob's second grant")
    assert "198.51.100.22" not in r.granted()
    assert relaywatch("unblock-user", "EVE", "--state", state).returncode == 0
    r.write(LOGIN.format(stamp=stamp(), user="eve", ip="198.51.100.24"))
    wait_for(lambda: "198.51.100.24" in r.granted(), "eve's grant once unblocked")
    again = relaywatch("unblock-user", "eve", "--state", state)
    assert (again.returncode, again.stderr.strip()) == (2, "relaywatch unblock-user: user eve is not blocked")
    assert r.stop() == 0


def test_refusals_are_one_line_and_status_2(run: Callable[..., Run], tmp_path: Path) -> None:
    r = run("--expire", "10m")
    state = str(r.state)
    missing = relaywatch("revoke", "192.0.2.1", "--state", state)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert missing.stderr.startswith("relaywatch revoke: no relaywatch is running on ")
    r.start()
    never = relaywatch("allow", "127.0.0.1", "--state", state)
    assert never.returncode == 2 and "127.0.0.1 is on the never-list" in never.stderr and never.stderr.count("\n") == 1
    bad = relaywatch("allow", "not-an-address", "--state", state)
    assert (bad.returncode, bad.stderr.strip()) == (2, "relaywatch allow: 'not-an-address' is not an IP address")
    both = relaywatch("revoke", "--state", state)
    assert both.returncode == 2 and "give addresses or --user NAME" in both.stderr
    settings = tmp_path / "relaywatch.toml"
    settings.write_text(f'state = "{state}"\n')
    via_config = relaywatch("allow", "192.0.2.9", "--for", "30s", "--config", str(settings))
    assert via_config.returncode == 0 and "192.0.2.9" in r.granted(), via_config.stderr
    second = subprocess.run([sys.executable, "-m", "logwatch", "run", "--log", str(r.log), "--relay-ctrl-dir",
                             str(r.rc), "--state", state], capture_output=True, text=True, timeout=60)
    assert second.returncode == 2 and "another relaywatch is running on" in second.stderr
    assert r.stop() == 0


# ----------------------------------------------------------------------- who may ask

CLIENT = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print(json.dumps({"connect": e.strerror})); sys.exit(0)
try:
    s.sendall(b'{"command": "ping"}\\n')
except BrokenPipeError:  # refused before it read: the answer is still there to read
    pass
print(s.makefile().readline().strip())
"""


@pytest.fixture
def shared_state() -> Iterator[Path]:
    """A state directory outside pytest's 0700 tree, group ``staff``, that nobody can traverse."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None or not Path("/usr/bin/python3").exists():
        if os.environ.get("CI") == "true":
            pytest.fail("CI runs as root with setpriv and /usr/bin/python3")
        pytest.skip("needs root, setpriv and /usr/bin/python3")
    root = Path(tempfile.mkdtemp(prefix="relaywatch-control-"))
    os.chmod(root, 0o711)
    directory = root / "state"
    directory.mkdir()
    os.chown(directory, 0, 50)  # staff
    os.chmod(directory, 0o751)
    try:
        yield directory
    finally:
        shutil.rmtree(root, ignore_errors=True)


def as_nobody(sock: Path, *groups: int) -> dict[str, object]:
    who = ["setpriv", "--reuid=65534", "--regid=65534",
           f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups"]
    done = subprocess.run([*who, "/usr/bin/python3", "-c", CLIENT, str(sock)], capture_output=True, text=True,
                          timeout=60, cwd="/")
    assert done.returncode == 0, done.stderr
    answer: dict[str, object] = json.loads(done.stdout)
    return answer


def test_only_root_the_daemon_and_its_group_may_ask(shared_state: Path, tmp_path: Path) -> None:
    r = Run(tmp_path)
    r.state = shared_state / "state.json"
    try:
        r.start()
        sock = shared_state / control.SOCKET
        assert (sock.stat().st_gid, stat.S_IMODE(sock.stat().st_mode)) == (50, 0o660)
        # nobody: the file mode keeps it out before the daemon is asked.
        assert as_nobody(sock) == {"connect": "Permission denied"}
        # nobody with the socket's group, as a supplementary group: accepted.
        member = as_nobody(sock, 50)
        assert member["ok"] is True and str(member["message"]).startswith("relaywatch runs (pid "), member
        # The mode loosened by mistake: the daemon's own check (SO_PEERCRED) still refuses.
        os.chmod(sock, 0o666)
        refused = as_nobody(sock)
        assert refused == {"ok": False, "message": "uid 65534 may not use relaywatch's control socket "
                                                   "(root, uid 0 or group 50 may)"}
        assert "control: refused uid 65534" in r.errors()
        assert r.stop(signal.SIGTERM) == 0
        assert not sock.exists()
    finally:
        if r.proc is not None:
            r.proc.kill()
            r.proc.wait()
