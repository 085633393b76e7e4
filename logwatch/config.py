"""Turn a settings file and the command line into one frozen ``Settings``.

Pure except ``read_file`` (which only reads the file). One table, ``OPTIONS``, names every
setting once: the command-line option, the key in the TOML file (the same words), its kind,
its default and its help. argparse, the file's validation, ``relaywatch check-config`` and
the README's table are all made from it, so they cannot disagree.

Errors are one line: ``relaywatch.toml:7: expire: '30 minutes' is not a duration; expected
seconds or a number with s, m, h or d, such as 90s, 15m, 1h``.
"""

from __future__ import annotations

import argparse
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from logwatch import versions
from logwatch.addresses import DEFAULT_NEVER, NeverList
from logwatch.brake import DEFAULT_MAX_ADDRESSES
from logwatch.durations import format_duration, parse_duration
from logwatch.ledger import DEFAULT_EXPIRE, DEFAULT_MAX_ENTRIES, DEFAULT_SESSION_MAX
from logwatch.matcher import DEFAULT_SERVICES
from logwatch.postfix import MYNETWORKS
from logwatch.sinks import sqlurl
from logwatch.sinks.postfixmap import SUFFIXES
from logwatch.sinks.sqlurl import DEFAULT_TABLE

LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(ValueError):
    """A setting is wrong; ``str()`` is the one-line message."""


@dataclass(frozen=True, slots=True)
class Option:
    """One setting.

    Attributes:
        name: the option without ``--`` and the key in the file (``relay-ctrl-dir``).
        kind: ``list`` (repeatable), ``str``, ``path``, ``bool``, ``int`` (at least 1),
            ``count`` (at least 0) or ``duration``.
        default: the value when neither the file nor the command line sets it.
        help: one line for ``--help``, ``check-config`` and the README.
        metavar: what the value looks like.
    """

    name: str
    kind: str
    default: Any
    help: str
    metavar: str = ""

    @property
    def attr(self) -> str:
        return self.name.replace("-", "_")


OPTIONS: tuple[Option, ...] = (
    Option("log", "list", (), "a log file to follow (repeatable); '-' reads standard input", "PATH"),
    Option("journal", "bool", False, "read Dovecot's entries from the systemd journal (resumable; only entries "
           "whose trusted fields say Dovecot count)"),
    Option("journal-match", "list", (), "with --journal: trust entries with this trusted field (repeatable; "
           "replaces the default _SYSTEMD_UNIT=dovecot.service, or Dovecot's _EXE with _UID=0)", "FIELD=VALUE"),
    Option("pattern-set", "list", (), "use this pattern set whatever Dovecot's version (repeatable); "
           "default: the sets for the version in use", "NAME"),
    Option("pattern-dir", "list", (), "also load your own pattern sets from DIR/*.toml (repeatable)", "DIR"),
    Option("dovecot-version", "str", None, "the Dovecot version in use; default: from its start-up line in the log",
           "VERSION"),
    Option("service", "list", DEFAULT_SERVICES, "login services whose logins authorise (repeatable)", "NAME"),
    Option("expire", "duration", DEFAULT_EXPIRE, "how long a client may relay after its last login", "DURATION"),
    Option("never", "str", ",".join(DEFAULT_NEVER),
           f"addresses never authorised: CIDRs, '{MYNETWORKS}', or 'none'", "NET[,NET...]"),
    Option("sessions", "bool", False, "keep a client authorised while its IMAP/POP3 session is open, and "
           "--expire after it ends (Dovecot 2.3 and later)"),
    Option("session-max", "duration", DEFAULT_SESSION_MAX, "with --sessions: the longest one session keeps its "
           "client, whatever the log says", "DURATION"),
    Option("max-entries", "int", DEFAULT_MAX_ENTRIES, "most clients authorised at once; the oldest go first", "N"),
    Option("max-addresses-per-user", "count", DEFAULT_MAX_ADDRESSES, "most addresses one user may have authorised "
           "at once (a brake on stolen passwords); 0: no limit", "N"),
    Option("state", "path", None, "keep grants here across restarts; log positions go beside it", "FILE"),
    Option("relay-ctrl-dir", "path", None, "publish one file per client here (qmail relay-ctrl)", "DIR"),
    Option("relay-ctrl-mapped", "bool", False, "also write ::ffff:a.b.c.d for each IPv4 client"),
    Option("relay-ctrl-expiry", "duration", None, "RELAY_CTRL_EXPIRY as relay-ctrl-check has it (at least "
           "--expire): a renewal restamps a client's file only when its stamp is older than this minus "
           "--expire; default: --expire (every renewal restamps)", "DURATION"),
    Option("postfix-map", "list", (), "publish a Postfix access map (hash, btree, lmdb, cdb, texthash)", "TYPE:PATH"),
    Option("postfix-value", "str", "OK", "the access(5) action written for each client", "ACTION"),
    Option("postfix-config", "path", None, "Postfix configuration directory (postmap -c DIR)", "DIR"),
    Option("sql", "list", (), "publish into a table shared by several servers (repeatable): "
           "postgresql://USER@HOST[:PORT]/DB or mysql://USER@HOST[:PORT]/DB", "URL"),
    Option("sql-table", "str", DEFAULT_TABLE, "the shared SQL table (created if missing)", "NAME"),
    Option("sql-password-file", "path", None, "the SQL password, in a file only its owner can read; default: "
           "the engine's own (libpq's passfile, a MariaDB option file)", "FILE"),
    Option("dnsbl", "list", (), "refuse clients listed in this DNSBL zone (repeatable); off by default", "ZONE"),
    Option("dnsbl-fail", "str", "open", "when a DNSBL lookup times out: open (authorise) or closed (refuse)",
           "open|closed"),
    Option("resolver", "str", None, "the DNS server for DNSBL lookups; default: the system's", "ADDR[:PORT]"),
    Option("log-level", "str", "info", f"how much to log: {', '.join(LOG_LEVELS)}", "LEVEL"),
    Option("metrics", "path", None, "write counters here in Prometheus text format every few seconds "
           "(node_exporter's textfile collector)", "FILE"),
)
BY_NAME = {option.name: option for option in OPTIONS}


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything ``relaywatch run`` needs to know, validated. See ``OPTIONS``."""

    log: tuple[str, ...]
    journal: bool
    journal_match: tuple[str, ...]
    pattern_set: tuple[str, ...]
    pattern_dir: tuple[str, ...]
    dovecot_version: str | None
    service: tuple[str, ...]
    expire: int
    never: str
    max_entries: int
    max_addresses_per_user: int
    state: str | None
    relay_ctrl_dir: str | None
    relay_ctrl_mapped: bool
    postfix_map: tuple[str, ...]
    postfix_value: str
    postfix_config: str | None
    sql: tuple[str, ...]
    sql_table: str
    sql_password_file: str | None
    dnsbl: tuple[str, ...]
    dnsbl_fail: str
    resolver: str | None
    log_level: str
    metrics: str | None
    config: str | None = None
    sessions: bool = False
    session_max: int = DEFAULT_SESSION_MAX
    relay_ctrl_expiry: int | None = None

    def describe(self) -> list[tuple[str, str]]:
        """``(key, value)`` pairs as a settings file would spell them, for ``check-config``."""
        out = []
        for option in OPTIONS:
            value = getattr(self, option.attr)
            if value is None:
                text = "(not set)"
            elif option.kind == "duration":
                text = format_duration(value)
            elif option.kind == "list":
                text = ", ".join(value) if value else "(none)"
            else:
                text = str(value).lower() if isinstance(value, bool) else str(value)
            out.append((option.name, text))
        return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every option to ``parser``, with no defaults: unset means "not on the command line"."""
    for option in OPTIONS:
        flag = f"--{option.name}"
        if option.kind == "bool":
            parser.add_argument(flag, action="store_true", default=None, help=option.help)
        elif option.kind == "list":
            parser.add_argument(flag, action="append", metavar=option.metavar, help=option.help)
        else:
            parser.add_argument(flag, metavar=option.metavar, help=option.help)


def read_file(path: str) -> tuple[dict[str, Any], str]:
    """Return the TOML file's table and its text (for line numbers in messages).

    Raises:
        ConfigError: unreadable, or not TOML.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read: {exc.strerror}") from None
    text = data.decode("utf-8", "replace")
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def settings(file_values: Mapping[str, Any] | None = None, cli: argparse.Namespace | None = None,
             path: str | None = None, text: str = "") -> Settings:
    """Merge the file's values and the command line (which wins) into validated ``Settings``.

    Args:
        file_values: the file's table (``read_file``), or None.
        cli: parsed arguments from ``add_arguments``, or None.
        path, text: the file's name and text, to name ``file:line`` in messages.

    Raises:
        ConfigError: an unknown key, or a value of the wrong form; one line.
    """
    values: dict[str, Any] = {}
    for key, value in (file_values or {}).items():
        where = f"{path}:{_line_of(text, key)}: {key}" if path else key
        option = BY_NAME.get(key)
        if option is None:
            close = [o.name for o in OPTIONS if o.attr == key.replace("-", "_")]
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{where}: unknown key{hint}; the keys are {', '.join(BY_NAME)}")
        values[option.name] = _convert(option, value, where, from_file=True)
    for option in OPTIONS:
        given = getattr(cli, option.attr, None) if cli is not None else None
        if given is not None:
            values[option.name] = _convert(option, given, f"--{option.name}", from_file=False)
    merged = {o.attr: values.get(o.name, o.default) for o in OPTIONS}
    result = Settings(**merged, config=path)
    _check(result)
    return result


def _convert(option: Option, value: Any, where: str, *, from_file: bool) -> Any:
    kind = option.kind
    if kind == "list":
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
            raise ConfigError(f"{where}: expected a string or a list of strings")
        return tuple(items)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false")
        return value
    if kind in ("int", "count"):  # count: 0 allowed (it turns the thing off)
        if isinstance(value, str) and not from_file and value.strip().isdigit():
            value = int(value)
        least = 0 if kind == "count" else 1
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ConfigError(f"{where}: expected a whole number of at least {least}")
        return value
    if kind == "duration":
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a duration such as \"90s\", \"15m\", \"1h\" or seconds")
        try:
            return parse_duration(value, where)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: expected a non-empty string")
    return value


def _check(s: Settings) -> None:
    if not s.log and not s.journal:
        raise ConfigError("--log: no log to follow; give --log PATH (or --log - for standard input) or --journal")
    if "-" in s.log and (len(s.log) > 1 or s.journal):
        raise ConfigError("--log: '-' (standard input) cannot be combined with files or --journal")
    if s.journal_match:
        if not s.journal:
            raise ConfigError("--journal-match: only with --journal")
        from logwatch.sources.journal import parse_matches

        try:
            parse_matches(s.journal_match)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    if s.relay_ctrl_expiry is not None and s.relay_ctrl_expiry < s.expire:
        raise ConfigError(f"--relay-ctrl-expiry: {format_duration(s.relay_ctrl_expiry)} is shorter than --expire "
                          f"{format_duration(s.expire)}; expected at least that, or relay-ctrl-check refuses "
                          "clients relaywatch still allows")
    if not s.relay_ctrl_dir and not s.postfix_map and not s.sql:
        raise ConfigError("no sink: give --relay-ctrl-dir DIR and/or --postfix-map TYPE:PATH (or --sql URL)")
    try:
        for url in s.sql:
            sqlurl.parse(url)
        sqlurl.check_table(s.sql_table)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    for spec in s.postfix_map:
        kind, colon, name = spec.partition(":")
        if not colon or not name or kind not in SUFFIXES:
            raise ConfigError(f"--postfix-map: {spec!r} is not TYPE:PATH with TYPE {', '.join(SUFFIXES)}")
    if s.dnsbl_fail not in ("open", "closed"):
        raise ConfigError(f"--dnsbl-fail: {s.dnsbl_fail!r}; expected open or closed")
    if s.dnsbl or s.resolver:
        from logwatch.dnsbl import parse_zone  # dnspython only when DNS is asked for
        from logwatch.ptr import parse_server

        try:
            for zone in s.dnsbl:
                parse_zone(zone)
            if s.resolver:
                parse_server(s.resolver)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    if s.dovecot_version is not None:
        try:
            versions.check(s.dovecot_version)
        except ValueError as exc:
            raise ConfigError(f"--dovecot-version: {exc}") from None
    if s.log_level not in LOG_LEVELS:
        raise ConfigError(f"--log-level: {s.log_level!r}; expected one of {', '.join(LOG_LEVELS)}")
    if MYNETWORKS not in s.never.split(","):
        try:
            NeverList.parse(s.never)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


def _line_of(text: str, key: str) -> int | str:
    """The line on which ``key`` is set in the file's text, for messages ("?" if unsure)."""
    m = re.search(rf"^\s*(?:{re.escape(key)}|\"{re.escape(key)}\")\s*=", text, re.MULTILINE)
    return text.count("\n", 0, m.start()) + 1 if m else "?"


def field_names() -> tuple[str, ...]:
    """The ``Settings`` attributes, for tests that check the table covers them all."""
    return tuple(f.name for f in fields(Settings))
