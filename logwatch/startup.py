"""Build the daemon's parts from ``Settings``, and refuse at start what cannot work.

``relaywatch run`` builds with these functions; ``relaywatch check-config`` runs ``check``,
which makes the same checks and starts, creates and changes nothing. So check-config fails
on exactly what run would refuse: a log that cannot be read, a state directory or a sink
directory that does not exist, a map type this Postfix lacks, a pattern set that does not
load, a never-list or a resolver that is wrong.

The matcher is built in one place, ``matcher``: the daemon's start and its reload both call it.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from logwatch import catalog, postfix
from logwatch.config import Settings
from logwatch.ledger import Ledger
from logwatch.matcher import Matcher
from logwatch.sinks import Sink, SinkError, SinkOptions, check_sink, open_sink

if TYPE_CHECKING:
    from logwatch.dnsbl import Gate

log = logging.getLogger("relaywatch")


class StartError(Exception):
    """relaywatch cannot start as configured; ``str()`` is the one line for the operator."""


def matcher(s: Settings) -> Matcher:
    """The matcher the settings describe (pattern sets, services, Dovecot's version).

    Raises:
        StartError: a pattern set does not load, or a name is unknown.
    """
    try:
        return catalog.matcher(s.pattern_set, s.pattern_dir, s.service, s.dovecot_version)
    except ValueError as exc:
        raise StartError(str(exc)) from None


def ledger(s: Settings) -> Ledger:
    """An empty ledger under the settings' policy (``postfix:mynetworks`` runs postconf).

    Raises:
        StartError: the never-list cannot be read or parsed.
    """
    try:
        never = postfix.never_list(s.never, s.postfix_config)
        return Ledger(s.expire, never, s.max_entries)
    except (ValueError, postfix.PostfixError) as exc:
        raise StartError(f"--never: {exc}" if "--never" not in str(exc) else str(exc)) from None


def check_logs(logs: Sequence[str]) -> list[str]:
    """Refuse a log that cannot be read; return the warnings to log (missing yet, writable by others).

    Raises:
        StartError: a log's directory does not exist, or the log cannot be read.
    """
    warnings = []
    for path in logs:
        if path == "-":
            continue
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise StartError(f"--log {path}: its directory {parent} does not exist")
        try:
            st = os.stat(path)
        except FileNotFoundError:
            warnings.append(f"--log {path} does not exist yet; relaywatch will read it from its start when it appears")
            continue
        except OSError as exc:
            raise StartError(f"--log {path}: cannot read: {exc.strerror}") from None
        if not os.access(path, os.R_OK):
            raise StartError(f"--log {path}: cannot read: permission denied; let relaywatch's user read it (group adm "
                             "and a logrotate 'create 0640 root adm' rule, or an ACL): see README, \"Letting "
                             "relaywatch read Dovecot's log\"")
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            warnings.append(f"--log {path} is writable by users other than its owner: they could write lines "
                            "that look like Dovecot's and open the relay (see README, trust of the log)")
    return warnings


def check_state(path: str | None) -> None:
    """Refuse a ``--state`` whose directory does not exist.

    Why at start: the state, the log positions and the viewers' files all go there; without
    it relaywatch would run but save nothing, and say so only in an error a second.

    Raises:
        StartError: one line naming the directory.
    """
    if path is None:
        return
    directory = Path(path).parent.resolve()
    if not directory.is_dir():
        raise StartError(f"--state {path}: its directory {directory} does not exist")


def sink_specs(s: Settings) -> list[str]:
    """Every sink the settings name, as ``type:name``."""
    return ([f"relayctrl:{s.relay_ctrl_dir}"] if s.relay_ctrl_dir else []) + list(s.postfix_map) + list(s.sql)


def sink_options(s: Settings) -> SinkOptions:
    return SinkOptions(postfix_value=s.postfix_value, postfix_config=s.postfix_config,
                       relay_ctrl_mapped=s.relay_ctrl_mapped, relay_ctrl_expiry=s.relay_ctrl_expiry,
                       sql_table=s.sql_table,
                       sql_password_file=s.sql_password_file)


def open_sinks(s: Settings) -> list[Sink]:
    """Open every sink; if one refuses, close those opened and raise.

    Raises:
        StartError: the sink's one line (a directory missing, a map type postmap lacks, ...).
    """
    sinks: list[Sink] = []
    for spec in sink_specs(s):
        try:
            sinks.append(open_sink(spec, sink_options(s)))
        except SinkError as exc:
            for sink in sinks:
                try:
                    sink.close()
                except SinkError:
                    pass
            raise StartError(str(exc)) from None
    return sinks


def gate(s: Settings) -> Gate | None:
    """The DNSBL gate, or None when ``--dnsbl`` is not given (dnspython is imported only then).

    Raises:
        StartError: the resolver cannot be set up.
    """
    if not s.dnsbl:
        return None
    from logwatch.dnsbl import Gate  # dnspython only when the gate is on

    try:
        return Gate(s.dnsbl, s.resolver, timeout=1.0, fail_closed=s.dnsbl_fail == "closed")
    except ValueError as exc:
        raise StartError(str(exc)) from None


def check(s: Settings) -> list[str]:
    """Everything ``relaywatch run`` checks at start, with nothing started or created.

    Returns:
        The warnings run would log.

    Raises:
        StartError: the first thing run would refuse, in the same one line.
    """
    matcher(s)
    ledger(s)
    warnings = check_logs(s.log)
    check_state(s.state)
    for spec in sink_specs(s):
        try:
            check_sink(spec, sink_options(s))
        except SinkError as exc:
            raise StartError(str(exc)) from None
    if s.dnsbl:
        from logwatch.ptr import resolver_for

        try:
            resolver_for(s.resolver, 1.0)
        except ValueError as exc:
            raise StartError(str(exc)) from None
    return warnings
