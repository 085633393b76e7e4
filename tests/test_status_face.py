"""``relaywatch status`` against a real running daemon (and after it stopped), names from a loopback DNS server."""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from logwatch import state
from logwatch.faces import status
from tests.daemonlab import wait_for
from tests.dnslab import PTR, DnsLab

LOGIN = "{stamp} mx dovecot: {service}: Login: user=<{user}>, method=PLAIN, rip={ip}, lip=192.0.2.1, mpid=1, TLS"
CLIENTS = (("192.0.2.7", "bob", "imap-login"), ("198.51.100.2", "eve", "pop3-login"),
           ("2001:db8::25", "alice", "imap-login"), ("192.0.2.99", "nobody", "imap-login"))
LEFT = re.compile(r"\b(?:\d+m\d\ds|\d+s)\b")


class Daemon:
    """``python -m logwatch run`` over a log, a relay-ctrl directory and a state file in ``tmp``."""

    def __init__(self, tmp: Path, expire: str = "30m", *extra: str) -> None:
        self.log = tmp / "mail.log"
        self.rc = tmp / "relay-ctrl"
        self.state = tmp / "state" / "state.json"
        self.stderr = tmp / "relaywatch.err"
        self.rc.mkdir()
        self.state.parent.mkdir()
        self.log.touch()
        args = [sys.executable, "-m", "logwatch", "run", "--log", str(self.log), "--relay-ctrl-dir", str(self.rc),
                "--state", str(self.state), "--expire", expire, *extra]
        with self.stderr.open("ab") as err:
            self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(args, stderr=err, stdin=subprocess.DEVNULL)
        wait_for(lambda: "following " in self.errors() or self.proc is None or self.proc.poll() is not None,
                 "relaywatch to start")
        assert self.proc.poll() is None, self.errors()

    def errors(self) -> str:
        return self.stderr.read_text() if self.stderr.exists() else ""

    def login(self, ip: str, user: str, service: str = "imap-login") -> None:
        with self.log.open("a") as f:
            f.write(LOGIN.format(stamp=time.strftime("%b %e %H:%M:%S"), service=service, user=user, ip=ip) + "\n")

    def published(self, ips: set[str]) -> bool:
        """The state file and the status both name every one of ``ips``."""
        try:
            saved = {g.ip for g in state.read(self.state)}
            doc = json.loads((self.state.parent / "status.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            return False
        return ips <= saved and doc.get("grants") == len(saved)

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        self.proc = None
        return code

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path)
    try:
        for ip, user, service in CLIENTS:
            d.login(ip, user, service)
        wait_for(lambda: d.published({c[0] for c in CLIENTS}), "the grants in the state file and the status")
        yield d
    finally:
        d.kill()


@pytest.fixture
def lab() -> Iterator[DnsLab]:
    with DnsLab() as server:
        yield server


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="relaywatch status")
    status.add_arguments(parser)
    return parser.parse_args(argv)


def show(*argv: str, width: int = 120) -> tuple[int, str]:
    buffer = io.StringIO()
    code = status.run(parse(*argv), console=Console(file=buffer, width=width, color_system=None, _environ={}))
    return code, buffer.getvalue()


def test_every_authorised_address_with_its_name_and_time_left(daemon: Daemon, lab: DnsLab) -> None:
    code, out = show("--state", str(daemon.state), "--resolver", lab.address)
    assert code == 0
    lines = out.splitlines()
    assert re.match(r"relaywatch running \(pid \d+\) since \d\d:\d\d:\d\d$", lines[0]), lines[0]
    assert lines[1].startswith("4 entries · oldest ")
    assert f"sinks: relayctrl:{daemon.rc} ok " in lines[2]
    assert lines[3] == "matched: dovecot-2.0-2.3 (4)"
    for ip, user, service in CLIENTS:
        (row,) = [line for line in lines if line.startswith(ip + " ")]
        assert row.split()[1:4] == [PTR.get(ip, "-"), user, service.removesuffix("-login")], row
        assert LEFT.search(row), row


def test_json_for_scripts(daemon: Daemon, lab: DnsLab, capsys: pytest.CaptureFixture[str]) -> None:
    assert status.run(parse("--state", str(daemon.state), "--resolver", lab.address, "--json")) == 0
    doc = json.loads(capsys.readouterr().out)
    assert sorted(doc) == sorted(["format", "version", "now", "state", "daemon", "expire", "entries", "oldest",
                                  "sinks", "pattern_sets", "logins_per_minute", "sessions", "grants"])
    assert (doc["format"], doc["version"], doc["expire"], doc["entries"]) == ("relaywatch-status-view", 1, 1800, 4)
    assert doc["daemon"]["running"] is True and doc["daemon"]["pid"] == daemon.proc.pid  # type: ignore[union-attr]
    assert doc["pattern_sets"] == {"dovecot-2.0-2.3": 4}
    assert doc["logins_per_minute"] == 4
    assert [s["spec"] for s in doc["sinks"]] == [f"relayctrl:{daemon.rc}"]
    by_ip = {g["ip"]: g for g in doc["grants"]}
    assert set(by_ip) == {c[0] for c in CLIENTS}
    assert {ip: g["name"] for ip, g in by_ip.items()} == {ip: PTR.get(ip) for ip, _, _ in CLIENTS}
    for g in doc["grants"]:
        assert sorted(g) == ["count", "first", "ip", "last", "left", "name", "service", "sessions", "until", "user",
                             "why"]
        assert (g["sessions"], g["why"]) == (0, "last login")
        assert g["until"] == g["last"] + 1800
        assert 1700 < g["left"] <= 1800


def test_after_the_daemon_stopped_it_says_so(daemon: Daemon, capsys: pytest.CaptureFixture[str]) -> None:
    assert daemon.stop() == 0
    code, out = show("--state", str(daemon.state), "--no-dns")
    assert code == 0
    assert re.match(r"relaywatch stopped at \d\d:\d\d:\d\d: it withdraws nothing until it runs again$",
                    out.splitlines()[0])
    assert out.splitlines()[6].split()[:2] == ["192.0.2.7", "bob"]  # no name column with --no-dns
    assert status.run(parse("--state", str(daemon.state), "--no-dns", "--json")) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["daemon"]["running"] is False
    assert {g["name"] for g in doc["grants"]} == {None}


def test_a_dead_daemon_that_said_running_is_stopped(daemon: Daemon) -> None:
    daemon.kill()  # SIGKILL: status.json still says running
    code, out = show("--state", str(daemon.state), "--no-dns")
    assert code == 0
    assert out.startswith("relaywatch stopped at ")


def test_no_status_yet(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text(json.dumps(
        {"format": "relaywatch-state", "version": 1, "saved": 0, "fields": ["ip", "user", "service", "first", "last",
                                                                             "count"],
         "grants": [["192.0.2.7", "bob", "imap-login", time.time() - 60, time.time() - 60, 1]]}))
    code, out = show("--state", str(tmp_path / "state.json"), "--no-dns")
    assert code == 0
    assert out.startswith(f"relaywatch no status: nothing beside {tmp_path / 'state.json'}; ")
    assert "192.0.2.7 bob  imap" in out and " ?\n" in out  # time left unknown without the daemon's --expire


def usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert status.run(parse(*argv)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_usage_errors_are_one_line_naming_the_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert usage_error(["--state", "/nonexistent/state.json"], capsys) == (
        "relaywatch status: --state /nonexistent/state.json: the directory /nonexistent does not exist\n")
    missing = tmp_path / "state.json"
    assert usage_error(["--state", str(missing)], capsys) == (
        f"relaywatch status: --state {missing}: no such file, and no status.json beside it "
        f"(is the daemon run with --state {missing}?)\n")
    missing.write_text("{}")
    assert usage_error(["--state", str(missing), "--resolver", "ns.example.test"], capsys).startswith(
        "relaywatch status: --resolver: 'ns.example.test' is not ADDR[:PORT]")


def test_a_corrupt_state_file_is_reported_and_never_moved(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "state.json"
    path.write_text("not json")
    err = usage_error(["--state", str(path), "--no-dns"], capsys)
    assert err.startswith(f"relaywatch status: --state {path}: not JSON")
    assert sorted(os.listdir(tmp_path)) == ["state.json"]  # the daemon's file is where it was


def test_an_unreadable_state_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "state.json"
    path.mkdir()  # unreadable as a file, for root too (a chmod 0 file is not, and CI runs as root)
    assert usage_error(["--state", str(path), "--no-dns"], capsys) == (
        f"relaywatch status: --state {path}: cannot read: Is a directory\n")


def test_unreadable_events_are_one_line(daemon: Daemon, capsys: pytest.CaptureFixture[str]) -> None:
    journal = daemon.state.parent / "events.jsonl"
    daemon.kill()
    journal.unlink()
    journal.mkdir()  # unreadable as a file, for root too
    assert usage_error(["--state", str(daemon.state), "--no-dns"], capsys) == (
        f"relaywatch status: {journal}: cannot read the daemon's events: Is a directory\n")


def test_open_sessions_per_address_read_from_the_state(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--sessions: a connected client shows ``connected, N sessions`` instead of a countdown, in
    the table and in --json (``why``), read from the state's sessions table; events say why."""
    d = Daemon(tmp_path, "30m", "--sessions")
    try:
        stamp = time.strftime("%b %e %H:%M:%S")
        with d.log.open("a") as f:
            for n, sid in enumerate(("kcwIVMRgFZp/AAAD", "kcwIVMRgFZp/AAAE")):
                f.write(f"{stamp} mx dovecot: imap-login: Login: user=<bob>, method=PLAIN, rip=192.0.2.7, "
                        f"lip=192.0.2.1, mpid={4101 + n}, TLS, session=<{sid}>\n")
        d.login("198.51.100.2", "eve", "pop3-login")
        wait_for(lambda: d.published({"192.0.2.7", "198.51.100.2"})
                 and len(state.read_all(d.state)[1]) == 2, "the grants and sessions in the state")
        code, out = show("--state", str(d.state), "--no-dns")
        assert code == 0
        lines = out.splitlines()
        assert lines[1].startswith("2 entries · oldest ") and lines[1].endswith(" · 2 sessions open"), lines[1]
        (row,) = [line for line in lines if line.startswith("192.0.2.7 ")]
        assert row.split()[1:3] == ["bob", "imap"] and "connected, 2 sessions" in row and not LEFT.search(row), row
        (other,) = [line for line in lines if line.startswith("198.51.100.2 ")]
        assert LEFT.search(other) and "connected" not in other, other
        assert status.run(parse("--state", str(d.state), "--no-dns", "--json")) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["sessions"] == 2
        assert [(g["ip"], g["sessions"], g["why"]) for g in doc["grants"]] == [
            ("198.51.100.2", 0, "last login"), ("192.0.2.7", 2, "connected")]
        events = [json.loads(line) for line in (d.state.parent / "events.jsonl").read_text().splitlines()]
        said = [(e["ip"], e["reason"]) for e in events if e["kind"] == "authorised"]
        # (1 or 2 sessions: as many as were open when the step that read the login published it)
        assert said in ([("192.0.2.7", "login, connected (1 session)"), ("198.51.100.2", "login")],
                        [("192.0.2.7", "login, connected (2 sessions)"), ("198.51.100.2", "login")]), said
    finally:
        d.kill()
