"""``relaywatch tui``: its keys (pure), its refusal without a terminal, and one real run in tmux."""

from __future__ import annotations

import fcntl
import os
import re
import select
import shlex
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from logwatch.faces.tui import QUIT, keys_of, press
from logwatch.faces.views import View
from tests.dnslab import PTR, DnsLab
from tests.test_status_face import CLIENTS, LEFT, Daemon, wait_for

ROOT = Path(__file__).resolve().parent.parent
#: What ``relaywatch tui`` will run, until the lead wires it into cli.py.
SHIM = ("import argparse, sys; from logwatch.faces import tui; "
        "p = argparse.ArgumentParser(prog='relaywatch tui'); tui.add_arguments(p); sys.exit(tui.run(p.parse_args()))")


@pytest.mark.parametrize("data, keys", [
    ("q", ["q"]),
    ("s/bob\r", ["s", "/", "b", "o", "b", "\r"]),
    ("\x1b", ["\x1b"]),
    ("\x1b[A\x1b[1;5Cx", ["\x1b[A", "\x1b[1;5C", "x"]),
    ("\x1bOP", ["\x1bOP"]),
])
def test_keys_of(data: str, keys: list[str]) -> None:
    assert keys_of(data) == keys


@pytest.mark.parametrize("view, key, after", [
    (View(), "q", QUIT),
    (View(), "s", View(sort="last")),
    (View(sort="user"), "s", View(sort="left")),
    (View(filter="bob"), "/", View(filter="bob", typing="bob")),
    (View(filter="bob"), "\x1b", View()),
    (View(typing="bo"), "b", View(typing="bob")),
    (View(typing="bob"), "\r", View(filter="bob")),
    (View(filter="x", typing="bob"), "\x1b", View()),
    (View(typing="bob"), "\x7f", View(typing="bo")),
    (View(typing="bob"), "q", View(typing="bobq")),  # q is text while typing
    (View(typing="bob"), "\x1b[A", View(typing="bob")),  # an arrow is not Esc
    (View(typing="a"), "\x07", View(typing="a")),
    (View(), "x", View()),
])
def test_press(view: View, key: str, after: View | str) -> None:
    assert press(view, key) == after


def test_without_a_terminal_it_refuses_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", SHIM, "--state", str(tmp_path / "state.json")], cwd=ROOT,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr == ("relaywatch tui: needs a terminal on standard input and output; "
                           "for scripts use relaywatch status --json\n")
    assert done.stdout == ""


class Tmux:
    """A private tmux server (its own socket, no config) with one 80x24 session."""

    def __init__(self, tmp: Path) -> None:
        self.socket = tmp / "tmux.sock"

    def __call__(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-S", str(self.socket), "-f", "/dev/null", *args],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "tui")

    def wait_screen(self, pattern: str, what: str) -> str:
        seen = [""]

        def shows() -> bool:
            seen[0] = self.screen()
            return re.search(pattern, seen[0], re.MULTILINE) is not None

        try:
            wait_for(shows, what)
        except AssertionError:
            raise AssertionError(f"timed out waiting for {what}; the screen:\n{seen[0]}") from None
        return seen[0]

    def close(self) -> None:
        subprocess.run(["tmux", "-S", str(self.socket), "kill-server"], capture_output=True, timeout=30)


def type_line(tmux: Tmux, line: str) -> None:
    """Type ``line`` into the pane's shell and press Enter."""
    tmux("send-keys", "-t", "tui", "-l", line)
    tmux("send-keys", "-t", "tui", "Enter")


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    t = Tmux(tmp_path)
    try:
        yield t
    finally:
        t.close()


def test_tui_in_a_real_terminal_against_a_running_daemon(tmp_path: Path, tmux: Tmux) -> None:
    daemon = Daemon(tmp_path)
    try:
        for ip, user, service in CLIENTS:
            daemon.login(ip, user, service)
        wait_for(lambda: daemon.published({c[0] for c in CLIENTS}), "the grants in the state file and the status")
        with DnsLab() as lab:
            # An interactive shell, so Ctrl-Z and fg work as an admin would use them. The tui is
            # the job's only process, as `relaywatch tui` is: a wrapper (sh -c) in the same job
            # would stop at once, and the shell would draw its prompt on the tui's screen.
            tmux("new-session", "-d", "-s", "tui", "-x", "80", "-y", "24", "bash --norc --noprofile -i")
            type_line(tmux, f"cd {shlex.quote(str(ROOT))}")
            type_line(tmux, f"LANG=C.UTF-8 {shlex.quote(sys.executable)} -c {shlex.quote(SHIM)} "
                            f"--state {shlex.quote(str(daemon.state))} --resolver {lab.address}")
            # Every authorised address, with its PTR name (from the loopback server) and its time left.
            # (At 80 columns a long name may end in an ellipsis: its first 15 characters always show.)
            rows = "".join(rf"(?=[\s\S]*^{re.escape(ip)} +{re.escape(PTR.get(ip, '-')[:15])}\S* +{user} )"
                           for ip, user, _ in CLIENTS)
            screen = tmux.wait_screen(rows, "every address with its name")
            assert re.search(r"^relaywatch running \(pid \d+\)", screen, re.MULTILINE), screen
            for ip, _, _ in CLIENTS:
                (row,) = [line for line in screen.splitlines() if line.startswith(ip + " ")]
                assert LEFT.search(row), row
            assert screen.splitlines()[-1].startswith("q quit · s sort (time left) · / filter")
            # A new login appears within a refresh or two, with the event in the feed.
            daemon.login("203.0.113.5", "carol", "pop3-login")
            tmux.wait_screen(r"^203\.0\.113\.5 +- +carol +pop3 ", "the new login in the table")
            tmux.wait_screen(r"authorised 203\.0\.113\.5 user=carol pop3: login", "the new login in the feed")
            # Ctrl-Z gives the terminal back to the shell; fg takes it again, keys still one by one.
            tmux("send-keys", "-t", "tui", "C-z")
            tmux.wait_screen(r"Stopped", "the shell to report the stopped job")
            type_line(tmux, "fg")
            tmux.wait_screen(r"^authorised: 5 · sorted by time left", "the screen back after fg")
            tmux("send-keys", "-t", "tui", "s")
            tmux.wait_screen(r"^authorised: 5 · sorted by last login", "the sort to change")
            tmux("send-keys", "-t", "tui", "/", "e", "v", "e")
            tmux.wait_screen(r"^filter: eve", "the filter being typed")
            tmux("send-keys", "-t", "tui", "Enter")
            screen = tmux.wait_screen(r"^authorised: 1 matching eve", "the filter to apply")
            lines = screen.splitlines()
            body = lines[lines.index(next(x for x in lines if x.startswith("───"))) + 1:lines.index("recent events")]
            table = [line.split()[0] for line in body if line.strip()]
            assert table == ["198.51.100.2"], screen
            tmux("send-keys", "-t", "tui", "Escape")
            tmux.wait_screen(r"^authorised: 5 · ", "the filter to clear")
            tmux("send-keys", "-t", "tui", "q")
            tmux.wait_screen(r"\A(?![\s\S]*^recent events)", "the tui to leave its screen")
            rc, stty = tmp_path / "tui.rc", tmp_path / "stty.after"
            type_line(tmux, f"echo $? > {shlex.quote(str(rc))}; stty -a > {shlex.quote(str(stty))}")
            wait_for(lambda: rc.exists() and rc.read_text().strip() != "" and stty.exists()
                     and stty.stat().st_size > 0, "the tui's exit status and the terminal's settings")
            assert rc.read_text().strip() == "0"
            settings = stty.read_text().split()
            assert "icanon" in settings and "echo" in settings, settings  # the terminal is given back
    finally:
        daemon.kill()


def test_sigterm_gives_the_terminal_back(tmp_path: Path) -> None:
    """On a pseudo-terminal of our own: cbreak while it runs, the saved settings after SIGTERM."""
    state = tmp_path / "state.json"
    state.write_text('{"format": "relaywatch-state", "version": 1, "saved": 0, "fields": ["ip", "user", "service", '
                     f'"first", "last", "count"], "grants": [["192.0.2.7", "bob", "imap-login", {time.time()}, '
                     f'{time.time()}, 1]]}}')
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    before = termios.tcgetattr(slave)
    proc = subprocess.Popen([sys.executable, "-c", SHIM, "--state", str(state), "--no-dns"], cwd=ROOT,
                            stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                            env={**os.environ, "LANG": "C.UTF-8", "TERM": "xterm"})
    seen = b""

    def drain(until: float) -> None:
        nonlocal seen
        while time.monotonic() < until:
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    seen += os.read(master, 65536)
                except OSError:
                    return
            elif proc.poll() is not None:
                return
            if b"192.0.2.7" in seen and proc.poll() is None and not termios.tcgetattr(slave)[3] & termios.ICANON:
                return

    try:
        drain(time.monotonic() + 60)
        assert b"192.0.2.7" in seen, seen[-2000:]
        lflag = termios.tcgetattr(slave)[3]
        assert not lflag & (termios.ICANON | termios.ECHO)  # cbreak while it runs
        proc.send_signal(signal.SIGTERM)
        end = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < end:
            drain(time.monotonic() + 0.2)
        assert proc.wait(timeout=5) == 128 + signal.SIGTERM
        assert termios.tcgetattr(slave) == before  # every setting as it was
        assert b"\x1b[?1049l" in seen[-200:]  # and the main screen back
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        os.close(slave)
