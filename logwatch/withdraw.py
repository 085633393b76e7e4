"""While no relaywatch runs, withdraw from the sinks what it left there past its end.

A stopped daemon expires nothing: a relay-ctrl file or a Postfix map entry would stay until
it runs again. ``relaywatch withdraw-expired``, run by a systemd timer every 30 s
(``contrib/relaywatch-expire.timer``, which ``relaywatch.service`` wants), makes each
file-based sink hold exactly the grants still live by the state. So however the daemon
ended (stopped, crashed, ``kill -9``, a ``Restart=`` loop that gave up), no client relays
more than the timer's period past its grant's end, and a daemon that comes back finds
nothing interrupted: what was withdrawn had run out anyway.

- It does nothing while a daemon runs on the same ``--state`` (the daemon holds
  ``control.lock``), and holds that lock while it works, so a daemon that starts
  meanwhile waits for it (``control.LOCK_WAIT``).
- Which grants are live comes from the state, read-only, under today's ``--expire`` and
  ``--never``, as a restart would restore them. The state is never behind the sinks: every
  grant is in it before a sink sees it (``durability``). No state at all means no client
  is owed anything.
- SQL sinks are left alone: their query checks the expiry itself (``sinks/sql.py``).
"""

from __future__ import annotations

from collections.abc import Callable

from logwatch import control, state, startup
from logwatch.config import Settings
from logwatch.model import Grant
from logwatch.sinks import Sink, SinkError, SinkOptions, open_sink
from logwatch.sinks.postfixmap import SUFFIXES
from logwatch.sinks.relayctrl import RelayCtrlSink

#: Opens one sink (tests may pass their own).
OpenSink = Callable[[str, SinkOptions], Sink]


def withdraw_expired(settings: Settings, now: float, open_one: OpenSink = open_sink) -> str:
    """Make every relay-ctrl directory and Postfix map hold just the grants live at ``now``.

    Returns:
        One line for the operator: what was done, or why nothing was.

    Raises:
        ValueError: no ``--state`` (one line naming it).
        SinkError: a sink that cannot be opened or published (its one line).
        OSError, state.StateError: the state cannot be read.
    """
    if settings.state is None:
        raise ValueError("--state: withdraw-expired reads the grants' ends from the state; give --state FILE")
    with control.holding(settings.state) as got:
        if not got:
            return f"relaywatch runs on {settings.state} and withdraws on time itself: nothing done"
        try:
            saved = state.read(settings.state)
        except FileNotFoundError:
            saved = ()
        ledger = startup.ledger(settings)
        ledger.restore(saved, now)
        live = ledger.grants()
        done = []
        for spec in startup.sink_specs(settings):
            if spec.partition(":")[0] not in ("relayctrl", *SUFFIXES):
                continue  # a SQL table's query checks the expiry itself
            done.append(_publish_exactly(open_one(spec, startup.sink_options(settings)), live))
        return f"{len(live)} client(s) still live by {settings.state}; " + ("; ".join(done) or "no sink to mend")


def _publish_exactly(sink: Sink, live: list[Grant]) -> str:
    """Make ``sink`` hold ``live`` and nothing else; say how it went."""
    try:
        if isinstance(sink, RelayCtrlSink):
            for grant in live:
                sink.put(grant)  # a file with the right stamp is left alone
            gone = sink.keep_only(grant.ip for grant in live)
            return f"{sink.spec}: {gone} file(s) past their end removed"
        for grant in live:  # the first commit after open carries the whole set: only the difference is written
            sink.put(grant)
        sink.commit()
    finally:
        sink.close()
    health = sink.health()
    if not health.ok:
        raise SinkError(sink.spec, health.error or "the update failed", retryable=True)
    return f"{sink.spec}: holds the live set"
