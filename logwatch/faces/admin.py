"""``relaywatch allow``, ``revoke``, ``block-user``, ``unblock-user``, ``blocked``: ask the running daemon.

Each command finds the daemon by ``--state FILE`` (or the ``state`` of ``--config FILE``),
sends one request over its control socket (``logwatch.control``) and prints the one line
it answers. Exit status 0 when the daemon did it, 2 with one line on standard error
otherwise (no daemon running, no permission, a refusal such as an address on the
never-list). ``--json`` prints the daemon's whole answer instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from logwatch import control
from logwatch.durations import parse_duration

#: The commands, their help, and how each builds its request from the arguments.
COMMANDS = {
    "allow": "authorise an address by hand (subject to --never)",
    "revoke": "withdraw addresses from every sink now, or every address a user authorised",
    "block-user": "refuse every login of a user (it authorises nothing) until unblocked",
    "unblock-user": "let a blocked user's logins authorise again",
    "blocked": "list the blocked users",
}


def add_commands(commands: Any) -> None:
    """Add the commands to ``commands`` (argparse's subparsers)."""
    for name, text in COMMANDS.items():
        sub = commands.add_parser(name, help=text, description=text)
        if name == "allow":
            sub.add_argument("address", metavar="ADDR")
        elif name == "revoke":
            sub.add_argument("addresses", metavar="ADDR", nargs="*")
            sub.add_argument("--user", metavar="NAME", help="every address NAME authorised within --expire")
        elif name in ("block-user", "unblock-user"):
            sub.add_argument("user", metavar="NAME")
        if name in ("allow", "block-user"):
            sub.add_argument("--for", dest="for_", metavar="DURATION",
                             help="how long (default: allow --expire; block until unblocked)")
        if name != "blocked":
            sub.add_argument("--note", metavar="TEXT", default="", help="why, for the log and the event feed")
        add_target(sub)
        sub.add_argument("--json", action="store_true", help="print the daemon's whole answer as JSON")


def add_target(parser: argparse.ArgumentParser) -> None:
    """``--state FILE`` or ``--config FILE``: which daemon."""
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--state", metavar="FILE", help="the running daemon's --state file")
    target.add_argument("--config", metavar="FILE", help="the daemon's settings file (its state is used)")


class UsageError(Exception):
    """One line for standard error, exit status 2."""


def state_of(args: argparse.Namespace) -> str:
    """The ``--state`` file the arguments name, directly or through ``--config``.

    Raises:
        UsageError: the settings file cannot be read or names no state.
    """
    if args.state:
        return str(args.state)
    from logwatch import config

    try:
        values, _ = config.read_file(args.config)
    except config.ConfigError as exc:
        raise UsageError(str(exc)) from None
    state = values.get("state")
    if not isinstance(state, str) or not state:
        raise UsageError(f"--config {args.config}: no 'state' setting, so no control socket; give --state FILE")
    return state


def request_of(args: argparse.Namespace) -> dict[str, Any]:
    """The request the arguments describe.

    Raises:
        UsageError: a malformed duration, or revoke with neither addresses nor --user.
    """
    command: str = args.command
    body: dict[str, Any] = {"command": command}
    try:
        if getattr(args, "for_", None):
            body["for"] = parse_duration(args.for_, "--for")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if getattr(args, "note", ""):
        body["note"] = args.note
    if command == "allow":
        body["ip"] = args.address
    elif command == "revoke":
        if bool(args.addresses) == bool(args.user):
            raise UsageError("revoke: give addresses or --user NAME (not both)")
        if args.user:
            body["user"] = args.user
        else:
            body["ips"] = list(args.addresses)
    elif command in ("block-user", "unblock-user"):
        body["user"] = args.user
    return body


def run(args: argparse.Namespace) -> int:
    """Ask the daemon; print its answer; return 0, or 2 with one line on standard error."""
    prog = f"relaywatch {args.command}"
    try:
        reply = control.ask(state_of(args), request_of(args))
    except (UsageError, control.ControlError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(reply, ensure_ascii=True))
    elif reply.get("ok"):
        print(str(reply.get("message", "done")))
        for entry in reply.get("blocked", []) if args.command == "blocked" else []:
            print(_blocked_line(entry))
    if not reply.get("ok"):
        print(f"{prog}: {reply.get('message', 'refused')}", file=sys.stderr)
        return 2
    return 0


def _blocked_line(entry: Any) -> str:
    if not isinstance(entry, dict):
        return str(entry)
    until = entry.get("until")
    when = "until unblocked" if until is None else "until " + time.strftime(
        "%Y-%m-%d %H:%M:%S", time.localtime(float(until)))
    note = f": {entry['note']}" if entry.get("note") else ""
    return f"{entry.get('user')}  {when}  (by uid {entry.get('by')}){note}"
