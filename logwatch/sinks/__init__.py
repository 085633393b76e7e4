"""Sinks: publish the ledger where an MTA looks, behind one small interface and a registry.

A sink is anything with ``spec``, ``put``, ``drop``, ``commit``, ``health`` and ``close``
(``Sink``, a Protocol: there is no base class to extend). The daemon's outlet
(``sinks.outlet``) applies each ledger ``Change`` to every sink and calls ``commit`` once per
batch. ``open_sink("type:name")`` finds the backend in ``_REGISTRY``, one line per backend,
as Postfix's ``dict_open`` does: adding a backend means adding a module and a line.
``check_sink`` runs a backend's own start-up checks without opening anything (its module's
``check``), for ``relaywatch check-config``.

Errors are values with a kind, like Postfix's ``DICT_ERR_RETRY`` versus ``DICT_ERR_CONFIG``:
a ``SinkError`` carries the spec and whether retrying can help. The outlet retries a
retryable error with backoff and drops a change that raised a non-retryable one (for that
sink only, with one log line); a command line stops with the error's one line. Work a sink
does after ``commit`` returned (the Postfix map's rebuild thread) comes back through
``health``, so its failures are seen where every other failure is.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from logwatch.model import DROP, PUT, Change, Grant

__all__ = ["Health", "Sink", "SinkError", "SinkOptions", "open_sink", "check_sink", "apply", "backends"]


@dataclass(frozen=True, slots=True)
class Health:
    """What a sink says of its own work, beyond the calls it answered.

    Attributes:
        ok: False while work it accepted is failing (a Postfix map that cannot be rebuilt).
        error: one line naming the failure, ``""`` when ok.
        last_ok: when the MTA last saw what was committed, for a sink that finishes its
            work after ``commit`` returned; None for a sink whose ``commit`` is the whole
            work (the caller's time of the last commit stands), or for one that is not ok
            and never finished its work (never).
    """

    ok: bool = True
    error: str = ""
    last_ok: float | None = None
    #: How long the sink's last publication took, in seconds, for a sink that does the work
    #: after ``commit`` returned (the Postfix map's batch or rebuild); None otherwise.
    update_seconds: float | None = None


@runtime_checkable
class Sink(Protocol):
    """Where grants are published.

    Attributes:
        spec: ``type:name`` as the admin wrote it; every error names it.
    """

    spec: str

    def put(self, grant: Grant) -> None:
        """Publish or renew ``grant`` (may take effect only at ``commit``)."""

    def drop(self, ip: str, *, early: bool = False) -> None:
        """Withdraw the grant for ``ip`` (may take effect only at ``commit``). ``early``: before
        its end (revoked by hand, over the cap, a narrower policy), which a store shared with
        other relaywatch instances must apply even to a row another one renewed."""

    def commit(self) -> None:
        """End of a batch: make everything put and dropped so far visible to the MTA."""

    def health(self) -> Health:
        """How the sink's own work goes, including work it does after ``commit`` returned."""

    def close(self) -> None:
        """Finish pending work and release resources; the published set stays as it is."""


class SinkError(Exception):
    """A sink could not do what was asked.

    Attributes:
        spec: the sink's ``type:name``.
        retryable: True if the same call may succeed later (disk full, MTA busy); False
            for configuration errors that only the admin can fix.
        resync: the sink may have lost what it published (a database that went away, a
            dropped table): once it works again, the outlet sends it the whole ledger.
    """

    def __init__(self, spec: str, message: str, *, retryable: bool, resync: bool = False) -> None:
        super().__init__(f"{spec}: {message}")
        self.spec = spec
        self.retryable = retryable
        self.resync = resync


@dataclass(frozen=True, slots=True)
class SinkOptions:
    """Settings some backends read; each ignores the rest.

    Attributes:
        postfix_value: the access(5) action written for each client (``--postfix-value``).
        postfix_config: Postfix configuration directory, passed as ``-c DIR`` to postmap,
            postconf and postfix (``--postfix-config``); None for the default instance.
        relay_ctrl_mapped: also write ``::ffff:a.b.c.d`` files (``--relay-ctrl-mapped``).
        relay_ctrl_expiry: ``RELAY_CTRL_EXPIRY`` in seconds (``--relay-ctrl-expiry``), or None.
        sql_table: the shared SQL table (``--sql-table``).
        sql_password_file: the SQL password's file (``--sql-password-file``), or None.
    """

    postfix_value: str = "OK"
    postfix_config: str | None = None
    relay_ctrl_mapped: bool = False
    relay_ctrl_expiry: float | None = None
    sql_table: str = "relay_clients"
    sql_password_file: str | None = None


# type -> "module:function"; the function is called as function(type, name, options).
# Imported on use, so a relay-ctrl-only setup never loads the Postfix code, and backends
# can import this package without a cycle.
_REGISTRY: dict[str, str] = {
    "relayctrl": "logwatch.sinks.relayctrl:open_relayctrl",
    "hash": "logwatch.sinks.postfixmap:open_postfix_map",
    "btree": "logwatch.sinks.postfixmap:open_postfix_map",
    "lmdb": "logwatch.sinks.postfixmap:open_postfix_map",
    "cdb": "logwatch.sinks.postfixmap:open_postfix_map",
    "texthash": "logwatch.sinks.postfixmap:open_postfix_map",
    "memory": "logwatch.sinks.memory:open_memory",
    "postgresql": "logwatch.sinks.sql:open_sql",  # --sql URL: the URL is the spec
    "postgres": "logwatch.sinks.sql:open_sql",
    "mysql": "logwatch.sinks.sql:open_sql",
    "mariadb": "logwatch.sinks.sql:open_sql",
}


def backends() -> tuple[str, ...]:
    """The sink types ``open_sink`` knows, for help text and errors."""
    return tuple(_REGISTRY)


def open_sink(spec: str, options: SinkOptions | None = None) -> Sink:
    """Open the sink named by ``spec`` (``type:name``).

    Raises:
        SinkError: not retryable: unknown type, missing name, or the backend's own checks
            (a Postfix map type this Postfix lacks, a directory that does not exist, ...).
    """
    kind, colon, name = spec.partition(":")
    if not colon or not name:
        raise SinkError(spec, f"expected TYPE:NAME, one of {', '.join(backends())}",
                        retryable=False)
    target = _REGISTRY.get(kind)
    if target is None:
        raise SinkError(spec, f"unknown type {kind!r}; expected one of {', '.join(backends())}",
                        retryable=False)
    module_name, _, function = target.partition(":")
    opener = getattr(importlib.import_module(module_name), function)
    sink: Sink = opener(kind, name, options or SinkOptions())
    return sink


def check_sink(spec: str, options: SinkOptions | None = None) -> None:
    """Run the checks ``open_sink`` would run for ``spec``, creating and changing nothing.

    Why: ``relaywatch check-config`` must refuse what ``relaywatch run`` refuses, without
    creating a map or touching a directory.

    Raises:
        SinkError: not retryable, as ``open_sink`` would raise it.
    """
    kind, colon, name = spec.partition(":")
    target = _REGISTRY.get(kind) if colon and name else None
    if target is None:
        open_sink(spec, options)  # raises the same one-line error as at start
        return
    module = importlib.import_module(target.partition(":")[0])
    check = getattr(module, "check", None)
    if check is None:
        raise SinkError(spec, f"the {kind} backend cannot be checked without opening it", retryable=False)
    check(kind, name, options or SinkOptions())


def apply(sink: Sink, changes: Iterable[Change]) -> None:
    """Apply ledger changes to ``sink`` in order (without committing)."""
    for change in changes:
        if change.kind == PUT:
            sink.put(change.grant)
        elif change.kind == DROP:
            sink.drop(change.grant.ip, early=change.reason != "expired")
        else:
            raise ValueError(f"unknown change kind {change.kind!r}")
