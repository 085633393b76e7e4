"""``relaywatch status --check``: one line and an exit status for Nagios, Icinga or monit.

Pure: a ``Snapshot`` in, ``(status, line)`` out. The status follows the monitoring plugins'
convention:

- 0 OK;
- 1 WARNING: a sink retrying (its changes not all published), the brake holding a user's
  logins back, or a journal entry imitating Dovecot, within the last ``RECENT`` seconds;
- 2 CRITICAL: no daemon running (no status, stopped, or its process gone), its status older
  than ``STALE`` seconds (a daemon hung or killed without a word: it rewrites the status
  every few seconds), or a sink failing for more than ``FAILING`` seconds.
"""

from __future__ import annotations

from logwatch.durations import format_duration
from logwatch.faces.views import Snapshot

OK, WARNING, CRITICAL = 0, 1, 2
NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL"}
#: A status older than this means the daemon no longer runs its loop.
STALE = 10.0
#: A sink failing longer than this is critical.
FAILING = 60.0
#: Events this recent count for a warning.
RECENT = 600.0


def age(snap: Snapshot) -> float | None:
    """Seconds since the daemon last wrote its status (None: never)."""
    status = snap.status
    return None if status is None or status.updated is None else max(0.0, snap.now - status.updated)


def written_line(snap: Snapshot) -> str:
    """``status written 3s ago`` for the header, with a warning when it is stale."""
    seconds = age(snap)
    if seconds is None:
        return "status never written"
    said = f"status written {format_duration(round(seconds))} ago"
    if snap.running and seconds > STALE:
        said += f": the daemon should rewrite it every few seconds; is it hung?"
    return said


def verdict(snap: Snapshot) -> tuple[int, str]:
    """The exit status and the one line (``RELAYWATCH CRITICAL - ...``)."""
    code, why = _judge(snap)
    status = snap.status
    tail = ""
    if status is not None:
        tail = f" | grants={status.grants} sinks={len(status.sinks)}"
    return code, f"RELAYWATCH {NAMES[code]} - {why}{tail}"


def _judge(snap: Snapshot) -> tuple[int, str]:
    status = snap.status
    if status is None:
        return CRITICAL, f"no status beside {snap.state}: relaywatch has not run with this --state"
    if not snap.running:
        return CRITICAL, f"relaywatch is not running (pid {status.pid}, status written {_ago(snap)} ago)"
    seconds = age(snap)
    if seconds is None or seconds > STALE:
        return CRITICAL, f"status written {_ago(snap)} ago (more than {STALE:g}s): relaywatch (pid {status.pid}) is hung"
    critical, warnings = [], []
    for sink in status.sinks:
        if sink.ok:
            continue
        since = sink.last_ok if sink.last_ok is not None else status.started
        failing = None if since is None else snap.now - since
        what = f"{sink.spec}: {sink.error or 'not ok'}" + (f", {sink.backlog} change(s) owed" if sink.backlog else "")
        if failing is None or failing > FAILING:
            critical.append(f"{what} (failing for {format_duration(round(failing or 0))})")
        else:
            warnings.append(f"{what} (retrying)")
    if critical:
        return CRITICAL, "; ".join(critical + warnings)
    recent = [e for e in snap.events if isinstance(e.get("t"), (int, float)) and snap.now - e["t"] <= RECENT]
    braked = {str(e.get("user")) for e in recent if e.get("kind") == "refused" and str(e.get("reason", "")).startswith("brake:")}
    if braked:
        warnings.append(f"the brake held back {len(braked)} user(s): {', '.join(sorted(braked)[:5])}")
    imitations = [e for e in recent if e.get("kind") == "refused" and str(e.get("reason", "")).startswith("untrusted")]
    if imitations:
        warnings.append(f"{len(imitations)} forged login line(s) seen, from {imitations[-1].get('reason')}")
    if warnings:
        return WARNING, "; ".join(warnings)
    return OK, f"running (pid {status.pid}), {status.grants} client(s) authorised, {len(status.sinks)} sink(s) ok"


def _ago(snap: Snapshot) -> str:
    seconds = age(snap)
    return "?" if seconds is None else format_duration(round(seconds))
