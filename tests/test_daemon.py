"""``relaywatch run`` as a process: grant, expire, survive SIGKILL, stop and reload cleanly."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from logwatch import checkpoint, state
from tests.daemonlab import FAILED, LOGIN, Run, stamp, wait_for

def test_login_grants_failure_does_not_and_expiry_withdraws(run: Callable[..., Run]) -> None:
    r = run("--expire", "3s")
    r.start()
    r.write(FAILED.format(stamp=stamp(), ip="203.0.113.9"))
    r.write(LOGIN.format(stamp=stamp(), user="bob", ip="192.0.2.7"))
    wait_for(lambda: r.granted() == {"192.0.2.7"}, "the grant")
    assert "203.0.113.9" not in r.granted()
    wait_for(lambda: r.granted() == set(), "the expiry, with an idle log")
    assert r.stop() == 0
    assert "authorised 192.0.2.7 (imap-login, user=<bob>)" in r.errors()
    assert "withdrawn 192.0.2.7 (imap-login, user=<bob>): expired" in r.errors()


def test_sigkill_loses_no_grant_and_reads_what_came_meanwhile(run: Callable[..., Run]) -> None:
    r = run("--expire", "10m")
    r.start()
    r.write(LOGIN.format(stamp=stamp(), user="alice", ip="192.0.2.10"))
    wait_for(lambda: r.granted() == {"192.0.2.10"}, "the first grant")
    wait_for(lambda: "192.0.2.10" in in_state(r), "the state database")
    assert r.stop(signal.SIGKILL) == -signal.SIGKILL
    for n in range(20):  # written while relaywatch is down
        r.write(LOGIN.format(stamp=stamp(), user=f"u{n}", ip=f"198.51.100.{n + 1}"))
    r.start()
    expected = {"192.0.2.10"} | {f"198.51.100.{n + 1}" for n in range(20)}
    wait_for(lambda: r.granted() == expected, "every login written while down")
    assert r.stop() == 0
    assert in_state(r) == expected
    assert r.errors().count("authorised 198.51.100.1 ") == 1  # acted on exactly once


def _read_up_to_the_end(r: Run) -> bool:
    """The daemon saved a log position at the end of the log (so its state was saved too)."""
    saved = checkpoint.load(r.state.parent, str(r.log))
    return saved is not None and saved.files[-1].offset == r.log.stat().st_size


def in_state(r: Run) -> set[str]:
    """The addresses in the state database, as a viewer reads it (nothing, before it exists)."""
    try:
        return {g.ip for g in state.read(r.state)}
    except FileNotFoundError:
        return set()


def test_each_tick_is_in_the_database_before_its_log_position(run: Callable[..., Run]) -> None:
    """Every grant is committed (one transaction a tick) before any log position past it is
    saved: what a viewer or a restart reads is the whole ledger. A stop checkpoints and
    leaves the database alone, readable without its -wal and -shm."""
    r = run()
    r.start()
    for n, ip in enumerate(("192.0.2.10", "192.0.2.11", "192.0.2.12")):
        r.write(LOGIN.format(stamp=stamp(), user=f"u{n}", ip=ip))
    wait_for(lambda: r.granted() == {"192.0.2.10", "192.0.2.11", "192.0.2.12"}, "the grants")
    wait_for(lambda: _read_up_to_the_end(r), "the log position after them")
    assert in_state(r) == {"192.0.2.10", "192.0.2.11", "192.0.2.12"}
    assert r.state.read_bytes().startswith(b"SQLite format 3\x00")
    assert r.stop() == 0
    assert in_state(r) == {"192.0.2.10", "192.0.2.11", "192.0.2.12"}
    assert sorted(p.name for p in r.state.parent.iterdir() if p.name.startswith("state.json")) == ["state.json"]


def test_a_json_state_is_migrated_at_start_and_its_grants_published(run: Callable[..., Run]) -> None:
    """Upgraded in place: the JSON state file and its write-ahead log, as relaywatch wrote
    them, become the database at the first start, and their grants are published."""
    r = run("--expire", "1h")
    now = time.time()
    rows = [["192.0.2.20", "alice", "imap-login", now - 60, now - 60, 1]]
    r.state.write_text(json.dumps({"format": "relaywatch-state", "version": 1, "saved": now - 30,
                                   "fields": ["ip", "user", "service", "first", "last", "count"],
                                   "grants": rows}, separators=(",", ":")) + "\n")
    Path(f"{r.state}.wal").write_text(json.dumps(["198.51.100.20", "bob", "pop3-login", now - 20, now - 20, 1],
                                                 separators=(",", ":")) + "\n")
    r.start()
    wait_for(lambda: r.granted() == {"192.0.2.20", "198.51.100.20"}, "the migrated grants")
    assert f"--state {r.state}: migrated 2 grant(s) from the JSON state file to SQLite" in r.errors()
    assert in_state(r) == {"192.0.2.20", "198.51.100.20"}
    assert r.stop() == 0


def test_catch_up_skips_logins_older_than_expire(run: Callable[..., Run]) -> None:
    r = run("--expire", "1m")
    r.start()
    assert r.stop() == 0  # a first start: positions are saved at the end of the log
    r.write(LOGIN.format(stamp=stamp(time.time() - 3600), user="old", ip="192.0.2.50"))
    r.write(LOGIN.format(stamp=stamp(), user="new", ip="192.0.2.51"))
    r.start()
    wait_for(lambda: "192.0.2.51" in r.granted(), "the recent login")
    assert "192.0.2.50" not in r.granted()
    assert r.stop() == 0
    assert "refused 192.0.2.50 (imap-login, user=<old>): login at" in r.errors()


def test_sighup_with_a_broken_pattern_set_keeps_running(run: Callable[..., Run], tmp_path: Path) -> None:
    own = tmp_path / "sets"
    own.mkdir()
    r = run("--pattern-dir", str(own))
    r.start()
    (own / "bad.toml").write_text('name = "bad"\n')
    assert r.proc is not None
    r.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload refused, still running on the old settings" in r.errors(), "the refusal")
    assert f"{own / 'bad.toml'}: covers:" in r.errors()
    r.write(LOGIN.format(stamp=stamp(), user="bob", ip="192.0.2.8"))
    wait_for(lambda: "192.0.2.8" in r.granted(), "a grant after the refused reload")
    assert r.stop(signal.SIGINT) == 0


@pytest.mark.parametrize("args, message", [
    (["--relay-ctrl-dir", "/nonexistent/relay-ctrl"], "relaywatch: relayctrl:/nonexistent/relay-ctrl: "),
    (["--relay-ctrl-dir", "{tmp}", "--log", "/nonexistent/dir/mail.log"], "relaywatch: --log /nonexistent/dir/mail.log: its directory"),
    (["--relay-ctrl-dir", "{tmp}", "--expire", "soon"], "relaywatch: --expire: 'soon' is not a duration"),
    (["--relay-ctrl-dir", "{tmp}", "--never", "10.0.0.0/33"], "relaywatch: --never: '10.0.0.0/33' is not a network"),
    (["--relay-ctrl-dir", "{tmp}", "--postfix-map", "dbm:/x"], "relaywatch: --postfix-map: 'dbm:/x' is not TYPE:PATH"),
    ([], "relaywatch: no sink: give --relay-ctrl-dir DIR and/or --postfix-map TYPE:PATH"),
])
def test_start_up_refusals_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    log = tmp_path / "mail.log"
    log.touch()
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--log" not in argv:
        argv = ["--log", str(log)] + argv
    done = subprocess.run([sys.executable, "-m", "logwatch", "run", *argv], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith(message), done.stderr
    assert done.stderr.count("\n") == 1


def test_config_file_and_override(tmp_path: Path) -> None:
    conf = tmp_path / "relaywatch.toml"
    conf.write_text(f'log = "{tmp_path / "mail.log"}"\nrelay-ctrl-dir = "{tmp_path}"\nexpire = "15m"\nmax-entries = 10\n')
    done = subprocess.run([sys.executable, "-m", "logwatch", "check-config", "--config", str(conf), "--expire", "1h"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(None, 1) for line in done.stdout.splitlines())
    assert (lines["expire"], lines["max-entries"], lines["relay-ctrl-dir"]) == ("1h", "10", str(tmp_path))
    conf.write_text(conf.read_text() + "expiry = \"1h\"\n")
    done = subprocess.run([sys.executable, "-m", "logwatch", "check-config", "--config", str(conf)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith(f"relaywatch: {conf}:5: expiry: unknown key; the keys are log, ")


def test_systemd_notify_ready_and_stopping(run: Callable[..., Run], tmp_path: Path) -> None:
    """Type=notify: READY=1 once the sinks are synced, STOPPING=1 at SIGTERM."""
    import socket

    address = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(60)
    os.environ["NOTIFY_SOCKET"] = address
    try:
        r = run()
        r.start()
        ready = sock.recv(4096).decode()
        assert ready.splitlines()[0] == "READY=1"
        assert r.stop() == 0
        assert sock.recv(4096).decode() == "STOPPING=1"
    finally:
        del os.environ["NOTIFY_SOCKET"]
        sock.close()


def test_warns_when_others_can_write_the_log(run: Callable[..., Run]) -> None:
    r = run()
    os.chmod(r.log, 0o666)
    r.start()
    assert r.stop() == 0
    assert f"--log {r.log} is writable by users other than its owner" in r.errors()


def test_sigkill_mid_stream_every_login_acted_on_exactly_once(run: Callable[..., Run]) -> None:
    """A writer keeps logging while relaywatch is killed and restarted: no login is lost,
    none is granted twice (a line read again after the restart is a renewal)."""
    import threading

    r = run("--expire", "1h")
    r.start()
    ips = [f"{net}.{host}" for net in ("192.0.2", "198.51.100", "203.0.113") for host in range(1, 251)]
    written = threading.Event()

    def writer() -> None:
        for n, ip in enumerate(ips):
            r.write(LOGIN.format(stamp=stamp(), user=f"u{n}", ip=ip))
            time.sleep(0.003)
        written.set()

    thread = threading.Thread(target=writer)
    thread.start()
    wait_for(lambda: len(r.granted()) >= 60, "the first grants")
    assert r.stop(signal.SIGKILL) == -signal.SIGKILL
    assert not written.is_set(), "the writer must still be writing when relaywatch is killed"
    r.start()
    thread.join()
    wait_for(lambda: r.granted() == set(ips), "every login, after the restart")
    assert r.stop() == 0
    log = r.errors()
    restored = int(m.group(1)) if (m := re.search(r"restored (\d+) grant\(s\)", log)) else 0
    for ip in ips:
        # Never twice. A kill inside the commit (its fsync, with synchronous=FULL) leaves the
        # grant durable but not yet logged: the restart restores and publishes it (counted in
        # "restored N grant(s)"), and the line read again is a renewal, never a second grant.
        assert log.count(f"authorised {ip} ") <= 1, ip
    never_said = [ip for ip in ips if f"authorised {ip} " not in log]
    assert len(never_said) <= restored, (never_said, restored)  # each of those was restored


def test_standard_input_as_the_journald_pipe(tmp_path: Path) -> None:
    """journalctl -f -o short-iso -u dovecot | relaywatch run --log - ...: grants from the pipe,
    and at its end a clean stop that keeps what was granted."""
    rc = tmp_path / "relay-ctrl"
    rc.mkdir()
    now = time.time()
    iso = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(now))
    lines = [f"{iso} mx dovecot[812]: imap-login: Login: user=<bob>, method=PLAIN, rip=192.0.2.77, lip=192.0.2.1, mpid=5",
             FAILED.format(stamp=stamp(now), ip="203.0.113.77")]
    done = subprocess.run([sys.executable, "-m", "logwatch", "run", "--log", "-", "--relay-ctrl-dir", str(rc),
                           "--state", str(tmp_path / "state.json")],
                          input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert {p.name for p in rc.iterdir()} == {"192.0.2.77"}
    assert "standard input ended" in done.stderr


def test_reload_withdraws_what_the_new_policy_refuses(tmp_path: Path) -> None:
    """SIGHUP with a wider --never: a client now on the list leaves the sinks at once."""
    log, rc, conf = tmp_path / "mail.log", tmp_path / "rc", tmp_path / "relaywatch.toml"
    log.touch()
    rc.mkdir()
    conf.write_text(f'log = "{log}"\nrelay-ctrl-dir = "{rc}"\nnever = "127.0.0.0/8"\n')
    err = (tmp_path / "err").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "logwatch", "run", "--config", str(conf)], stderr=err)
    try:
        errors = lambda: (tmp_path / "err").read_text()  # noqa: E731
        wait_for(lambda: "first start" in errors(), "relaywatch to start")
        with log.open("a") as f:
            f.write(LOGIN.format(stamp=stamp(), user="bob", ip="192.0.2.7") + "\n")
            f.write(LOGIN.format(stamp=stamp(), user="eve", ip="198.51.100.9") + "\n")
        wait_for(lambda: {p.name for p in rc.iterdir()} == {"192.0.2.7", "198.51.100.9"}, "both grants")
        conf.write_text(f'log = "{log}"\nrelay-ctrl-dir = "{rc}"\nnever = "127.0.0.0/8,192.0.2.0/24"\n')
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: {p.name for p in rc.iterdir()} == {"198.51.100.9"}, "192.0.2.7 to be withdrawn")
        assert "withdrawn 192.0.2.7 (imap-login, user=<bob>): reload" in errors()
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0
        err.close()
