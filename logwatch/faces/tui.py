"""``relaywatch tui``: a full-screen view of who may relay, redrawn twice a second from the daemon's files.

Reads what the daemon publishes beside ``--state`` (see ``logwatch.status``), exactly as
``relaywatch status`` does, and draws ``views.Screen``: the header, the grants sorted by
time left with a countdown bar each, and the newest events. PTR names arrive from a
background cache (``logwatch.ptr``) and never hold up a redraw.

Keys: ``q`` quits; ``s`` cycles the sort (time left, last login, address, user); ``/``
opens the filter (type, Enter applies, Esc clears); Esc clears the filter.

The terminal is put in cbreak mode (keys arrive one by one, unechoed; Ctrl-C still
interrupts) and restored on every way out: ``q``, Ctrl-C, SIGTERM, SIGHUP, or an error;
Ctrl-Z gives it back too, and ``fg`` takes it again.
Without a terminal on standard input and output it refuses in one line (status 2): a
script wants ``relaywatch status --json``.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import sys
import termios
import time
import tty
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from types import FrameType

from rich.console import Console
from rich.live import Live

from logwatch import ptr
from logwatch.faces import status
from logwatch.faces.views import Screen, View

#: Seconds between redraws (the issue asks for at least one a second).
REFRESH = 0.5
#: Longest filter text.
FILTER_MAX = 64
QUIT = "quit"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``tui``: ``--state FILE``, ``--no-dns``, ``--resolver ADDR[:PORT]``."""
    status.add_source_arguments(parser)


def keys_of(data: str) -> list[str]:
    """Split what the terminal sent into keys; an escape sequence (an arrow, F1) is one key.

    A lone ESC is the Esc key. Arrow keys and the like arrive as ``ESC [ ...``; they are kept
    whole, so an arrow pressed while filtering is not read as Esc followed by text.
    """
    keys: list[str] = []
    i = 0
    while i < len(data):
        if data[i] == "\x1b" and i + 1 < len(data) and data[i + 1] in "[O":
            j = i + 2
            while j < len(data) and not ("@" <= data[j] <= "~"):
                j += 1
            keys.append(data[i:j + 1])
            i = j + 1
        else:
            keys.append(data[i])
            i += 1
    return keys


def press(view: View, key: str) -> View | str:
    """What ``key`` does to ``view``: the new view, or ``QUIT``. Pure, so tests drive it."""
    if view.typing is not None:
        if key in ("\r", "\n"):
            return replace(view, filter=view.typing, typing=None)
        if key == "\x1b":
            return replace(view, filter="", typing=None)
        if key in ("\x7f", "\b"):
            return replace(view, typing=view.typing[:-1])
        if len(key) == 1 and key.isprintable() and len(view.typing) < FILTER_MAX:
            return replace(view, typing=view.typing + key)
        return view
    if key in ("q", "Q"):
        return QUIT
    if key in ("s", "S"):
        return view.next_sort()
    if key == "/":
        return replace(view, typing=view.filter)
    if key == "\x1b":
        return replace(view, filter="")
    return view


@contextmanager
def cbreak(fd: int) -> Iterator[None]:
    """Keys one at a time and unechoed; the saved terminal settings come back on any exit."""
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd, termios.TCSANOW)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@contextmanager
def exit_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP leave through ``SystemExit``, so every ``finally`` runs."""

    def leave(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    saved = {sig: signal.signal(sig, leave) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def read_keys(fd: int, timeout: float) -> list[str]:
    """The keys typed within ``timeout`` seconds (none if nothing was typed)."""
    ready, _, _ = select.select([fd], [], [], max(timeout, 0.0))
    if not ready:
        return []
    data = os.read(fd, 1024)
    if not data:
        return ["q"]  # the terminal went away
    return keys_of(data.decode("utf-8", errors="replace"))


def run(args: argparse.Namespace) -> int:
    """Show the screen until ``q``; return 0, or 2 with one line on stderr."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        print("relaywatch tui: needs a terminal on standard input and output; "
              "for scripts use relaywatch status --json", file=sys.stderr)
        return 2
    cache = None
    try:
        cache = status.names_for(args)
        reader = status.Reader(args.state)
        return _loop(reader, cache)
    except status.UsageError as exc:
        print(f"relaywatch tui: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    finally:
        if cache is not None:
            cache.close()


class _Suspend(Exception):
    """Ctrl-Z was pressed: give the terminal back before stopping."""


def _suspend(signum: int, frame: FrameType | None) -> None:
    raise _Suspend


def _loop(reader: status.Reader, cache: ptr.PtrCache | None) -> int:
    """Draw and read keys until ``q``; on Ctrl-Z restore the terminal, stop, and resume on ``fg``.

    Why the suspend dance: a stopped full-screen program that keeps the alternate screen and
    cbreak mode leaves the shell unusable, and after ``fg`` the shell's settings would be in
    force (keys echoed, and held until Enter).
    """
    fd = sys.stdin.fileno()
    view = View()
    console = Console(highlight=False)
    saved = signal.signal(signal.SIGTSTP, _suspend)
    try:
        with exit_on_signals():
            while True:
                try:
                    with cbreak(fd), Live(console=console, screen=True, auto_refresh=False,
                                          redirect_stdout=False, redirect_stderr=False) as live:
                        while True:
                            now = time.time()
                            snap = reader.snapshot(now)
                            names = None if cache is None else {g.ip: ptr.label(cache.get(g.ip)) for g in snap.grants}
                            live.update(Screen(snap, view, names), refresh=True)
                            for key in read_keys(fd, now + REFRESH - time.time()):
                                pressed = press(view, key)
                                if pressed == QUIT:
                                    return 0
                                assert isinstance(pressed, View)
                                view = pressed
                except _Suspend:
                    signal.signal(signal.SIGTSTP, signal.SIG_DFL)
                    os.kill(os.getpid(), signal.SIGTSTP)  # stops here until the shell's fg
                    signal.signal(signal.SIGTSTP, _suspend)
    finally:
        signal.signal(signal.SIGTSTP, saved)


if __name__ == "__main__":  # pragma: no cover
    _parser = argparse.ArgumentParser(prog="relaywatch tui")
    add_arguments(_parser)
    sys.exit(run(_parser.parse_args()))
