"""``--metrics FILE``: the daemon's counters in Prometheus' text format, for node_exporter's textfile collector.

``render`` is pure (a ``DaemonStatus`` and the refusals by reason in, text out); ``write``
replaces the file atomically (``atomic``), so the collector never reads half a file. The
daemon writes it with its status, every few seconds.

Why refusals by reason: a rise in ``brake`` or ``blocked`` is an account being abused, a
rise in ``never`` or ``too_old`` is a configuration matter; one counter would hide which.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from logwatch import atomic
from logwatch.statusrecord import DaemonStatus

#: Reasons a login is refused, by the start of its text (the first that matches).
_REASONS = (("brake:", "brake"), ("user is blocked", "blocked"), ("untrusted", "untrusted"),
            ("dnsbl", "dnsbl"), ("listed", "dnsbl"))


def reason_of(why: str) -> str:
    """The ``reason`` label of one refusal's text."""
    low = why.lower()
    for start, label in _REASONS:
        if low.startswith(start) or (label == "dnsbl" and start in low):
            return label
    if "never-list" in low:
        return "never"
    if "older than --expire" in low:
        return "too_old"
    return "other"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(record: DaemonStatus, refusals: Mapping[str, int]) -> str:
    """The file's text (``# HELP``/``# TYPE`` and one sample a line)."""
    out: list[str] = []

    def metric(name: str, kind: str, text: str, samples: list[tuple[str, float]]) -> None:
        out.append(f"# HELP relaywatch_{name} {text}")
        out.append(f"# TYPE relaywatch_{name} {kind}")
        out.extend(f"relaywatch_{name}{labels} {value:g}" for labels, value in samples)

    counts = dict(record.counts)
    logins = counts.get("authorised", 0) + counts.get("refreshed", 0) + counts.get("refused", 0)
    metric("logins_total", "counter", "Logins read from the log (new, renewals and refused).", [("", logins)])
    metric("events_total", "counter", "Events by kind since the daemon started.",
           [(f'{{kind="{_escape(k)}"}}', n) for k, n in sorted(counts.items())])
    metric("refusals_total", "counter", "Logins that authorised nothing, by reason.",
           [(f'{{reason="{_escape(k)}"}}', n) for k, n in sorted(refusals.items())])
    metric("grants", "gauge", "Clients authorised now.", [("", record.grants)])
    metric("logins_last_minute", "gauge", "Logins read in the last 60 seconds.",
           [("", record.logins_last_minute or 0)])
    metric("sink_ok", "gauge", "1 while the sink has published everything, else 0.",
           [(f'{{sink="{_escape(s.spec)}"}}', 1 if s.ok else 0) for s in record.sinks])
    metric("sink_backlog", "gauge", "Changes owed to the sink.",
           [(f'{{sink="{_escape(s.spec)}"}}', s.backlog) for s in record.sinks])
    metric("sink_last_ok_timestamp_seconds", "gauge", "When the sink last had everything published.",
           [(f'{{sink="{_escape(s.spec)}"}}', s.last_ok) for s in record.sinks if s.last_ok is not None])
    metric("sink_update_seconds", "gauge", "How long the sink's last map update or rebuild took.",
           [(f'{{sink="{_escape(s.spec)}"}}', s.update_seconds) for s in record.sinks
            if s.update_seconds is not None])
    if record.log_lag is not None:
        metric("log_lag_seconds", "gauge", "The most a login acted on lately lagged behind its own line's time.",
               [("", record.log_lag)])
    if record.loop is not None:
        metric("loop_step_seconds_max", "gauge", "The longest busy turn of the loop since the last status "
               "(lines handled, expiries, commits, save).", [("", record.loop.step)])
        metric("loop_pause_seconds_max", "gauge", "The longest time after a turn's lines in which no line "
               "was read (commits, save) since the last status.", [("", record.loop.pause)])
        metric("gc_seconds_max", "gauge", "The longest pass of the cyclic garbage collector since the last status.",
               [("", record.loop.gc)])
        metric("loop_long_pauses_total", "counter", "Turns of the loop that paused longer than 50 ms.",
               [("", record.loop.long_pauses)])
    if record.updated is not None:
        metric("status_timestamp_seconds", "gauge", "When the daemon wrote this.", [("", record.updated)])
    if record.started is not None:
        metric("start_timestamp_seconds", "gauge", "When the daemon started.", [("", record.started)])
    return "\n".join(out) + "\n"


def write(path: str | os.PathLike[str], text: str) -> None:
    """Replace ``path`` atomically (mode 0644: the collector runs as another user). Raises OSError."""
    atomic.write(path, text.encode("utf-8"), mode=0o644)
