"""Parse the command line, pick a face, and turn every user error into one line and status 2.

No logic lives here: each face is a module of its own (``faces/``) and each option's
meaning belongs to the module that uses it.

    relaywatch run [--config FILE] [options]       follow the log, publish the relay set
    relaywatch check-config [--config FILE] [options]
    relaywatch status --state FILE [--json]          who may relay now
    relaywatch tui --state FILE                      the same, live
    relaywatch postfix-sql-map --sql URL [--sql-table NAME]   Postfix's table file for --sql
    relaywatch --test-pattern [LINE ... | - | --file PATH] [options]
    relaywatch allow|revoke|block-user|unblock-user|blocked ... (--state FILE | --config FILE)
    relaywatch demo
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

from logwatch import __version__, catalog
from logwatch.addresses import NeverList
from logwatch.durations import parse_duration
from logwatch.faces import testpattern
from logwatch.ledger import Ledger
from logwatch.matcher import DEFAULT_SERVICES, Matcher
from logwatch.patternset import PatternSetError

if TYPE_CHECKING:
    from logwatch.config import Settings

PROG = "relaywatch"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the option, and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {PROG} --help)\n")


def _add_matching(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("pattern sets and policy")
    group.add_argument("--pattern-set", metavar="NAME", action="append", default=[],
                       help="use this set, whatever Dovecot's version (repeatable); default: the sets for the version in use")
    group.add_argument("--dovecot-version", metavar="VERSION", default=None,
                       help="the Dovecot version that wrote the lines; default: from its start-up lines")
    group.add_argument("--pattern-dir", metavar="DIR", action="append", default=[],
                       help="also load the admin's own sets, DIR/*.toml (repeatable)")
    group.add_argument("--service", metavar="NAME", action="append", default=[],
                       help=f"login services that authorise (repeatable); default: {', '.join(DEFAULT_SERVICES)}")
    group.add_argument("--never", metavar="NET[,NET...]", default=None,
                       help="addresses never authorised; default: loopback, link-local, unspecified; 'none' for none")
    group.add_argument("--expire", metavar="DURATION", default=None,
                       help="also refuse logins older than this, as run would, judged at the time the input "
                            "was written (a file's mtime, else now); default: no login is too old")


def _test_pattern_parser() -> _Parser:
    parser = _Parser(
        prog=f"{PROG} --test-pattern",
        description="Run the pattern sets over sample log lines and say what each would do.",
    )
    parser.add_argument("--test-pattern", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("lines", nargs="*", metavar="LINE", help="sample lines; '-' reads standard input")
    parser.add_argument("--file", metavar="PATH", help="read the lines of this file")
    parser.add_argument("--json", action="store_true", help="one JSON object per line (or one summary object)")
    parser.add_argument("--summary", action="store_true", help="counts only")
    parser.add_argument("--print-all", action="store_true",
                        help=f"list every line that matched nothing (default: the first {testpattern.MISSED_SHOWN})")
    _add_matching(parser)
    return parser


def _main_parser() -> _Parser:
    from logwatch import config  # not on --test-pattern's path: it pulls in the daemon's modules

    parser = _Parser(
        prog=PROG,
        description="POP/IMAP-before-SMTP beside any Dovecot version: follow Dovecot's log and "
                    "publish the clients allowed to relay.",
        epilog=f"Try pattern sets on log lines with: {PROG} --test-pattern --help",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, text in (("run", "follow Dovecot's log and publish the clients allowed to relay"),
                       ("check-config", "validate the settings and print the effective ones"),
                       ("withdraw-expired", "while no daemon runs: withdraw from the relay-ctrl directory and "
                                            "Postfix maps every grant past its end (run by a timer)")):
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("--config", metavar="FILE", help="a TOML settings file; options given here override it")
        config.add_arguments(sub)
    from logwatch.faces import status as status_face, tui as tui_face

    for name, face, text in (("status", status_face, "show who may relay now (from the daemon's --state)"),
                             ("tui", tui_face, "a live full-screen view of who may relay")):
        sub = commands.add_parser(name, help=text, description=text)
        face.add_arguments(sub)
    text = "print the Postfix pgsql_table(5) or mysql_table(5) file that reads relaywatch's --sql table"
    sql_map = commands.add_parser("postfix-sql-map", help=text, description=text)
    sql_map.add_argument("--sql", metavar="URL", required=True,
                         help="postgresql://USER@HOST[:PORT]/DB or mysql://USER@HOST[:PORT]/DB, as given to run")
    sql_map.add_argument("--sql-table", metavar="NAME", default="relay_clients", help="the table (default relay_clients)")
    from logwatch.faces import admin as admin_face

    admin_face.add_commands(commands)
    demo = commands.add_parser("demo", help="watch relaywatch work on the bundled sample log (no Dovecot, root or network)")
    demo.add_argument("--fast", action="store_true", help="replay quickly, with a 2 s expiry")
    return parser


def matcher_from(args: argparse.Namespace) -> tuple[Matcher, Ledger]:
    """Build the matcher and the ledger (its refusal rules) that the matching options describe.

    Without ``--expire`` the ledger judges no login too old: sample lines are history.

    Raises:
        PatternSetError, ValueError: one-line messages naming the file or option.
    """
    matcher = catalog.matcher(args.pattern_set, args.pattern_dir, args.service, args.dovecot_version)
    never = NeverList.default() if args.never is None else NeverList.parse(args.never)
    expire = float("inf") if args.expire is None else parse_duration(args.expire, "--expire")
    return matcher, Ledger(expire, never)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``relaywatch`` with ``argv`` (default: the process's arguments); return the status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        if "--test-pattern" in args_list or args_list[:1] == ["test-pattern"]:
            if args_list[:1] == ["test-pattern"]:
                args_list = args_list[1:]
            args = _test_pattern_parser().parse_args(args_list)
            return _test_pattern(args)
        args = _main_parser().parse_args(args_list)
        if args.command == "demo":
            from logwatch.faces import demo

            return demo.run(gap=0.05, expire=2) if args.fast else demo.run()
        if args.command in ("status", "tui"):
            from logwatch.faces import status as status_face, tui as tui_face

            code: int = (status_face if args.command == "status" else tui_face).run(args)
            return code
        if args.command == "postfix-sql-map":
            return _postfix_sql_map(args)
        from logwatch.faces import admin as admin_face

        if args.command in admin_face.COMMANDS:
            return admin_face.run(args)
        if args.command in ("run", "check-config"):
            return _run(args, check_only=args.command == "check-config")
        if args.command == "withdraw-expired":
            return _withdraw_expired(args)
        _main_parser().print_help()
        return 2
    except BrokenPipeError:
        # A reader such as `head` went away: not an error of ours. Stop writing quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _settings(args: argparse.Namespace) -> Settings:
    from logwatch import config

    if args.config:
        values, text = config.read_file(args.config)
        return config.settings(values, args, args.config, text)
    return config.settings(None, args)


def _withdraw_expired(args: argparse.Namespace) -> int:
    import time

    from logwatch import config, withdraw
    from logwatch.sinks import SinkError

    try:
        print(withdraw.withdraw_expired(_settings(args), time.time()))
    except (config.ConfigError, ValueError, SinkError, OSError) as exc:  # StateError is a ValueError
        print(f"{PROG}: withdraw-expired: {exc}", file=sys.stderr)
        return 2
    return 0


def _run(args: argparse.Namespace, check_only: bool) -> int:
    from logwatch import config, daemon, logsetup, startup  # the daemon's imports (watchdog, sinks) only when needed

    try:
        settings = _settings(args)
        if check_only:  # what run would refuse, with nothing started, created or changed
            for warning in startup.check(settings):
                print(f"{PROG}: warning: {warning}", file=sys.stderr)
            width = max(len(o.name) for o in config.OPTIONS)
            for key, value in settings.describe():
                print(f"{key:<{width}}  {value}")
            return 0
        logsetup.configure_logging(settings.log_level)
        runner = daemon.Daemon(settings, reload_settings=lambda: _settings(args), control=True)
        runner.install_signals()
        runner.start()
    except (config.ConfigError, PatternSetError, startup.StartError, ValueError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    return runner.run()


def _postfix_sql_map(args: argparse.Namespace) -> int:
    from logwatch.sinks import sqlurl  # pure: no database driver is needed to print the file

    try:
        text = sqlurl.postfix_map(sqlurl.parse(args.sql), sqlurl.check_table(args.sql_table))
    except ValueError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


def _test_pattern(args: argparse.Namespace) -> int:
    try:
        matcher, ledger = matcher_from(args)
        return testpattern.run(matcher, ledger, args.lines, args.file, as_json=args.json,
                               summary_only=args.summary, print_all=args.print_all, out=sys.stdout)
    except (PatternSetError, ValueError, testpattern.UsageError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
