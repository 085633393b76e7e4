"""``relaywatch status --check`` and ``--metrics``: what a monitor is told, pure and for real.

Pure: each verdict from a snapshot (a sink retrying, failing for over a minute, the brake,
a forged line, a stale status). For real: a running daemon is OK, a stopped one (SIGSTOP,
so its process still exists) goes CRITICAL once its status is 10 s old, a SIGKILLed one is
CRITICAL at once; the metrics file counts logins and refusals by reason.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from logwatch.faces import check
from logwatch.faces.views import Snapshot
from logwatch.statusrecord import DaemonStatus, SinkStatus
from tests.daemonlab import LOGIN, Run, stamp, wait_for

NOW = 1_780_000_000.0


def snap(*sinks: SinkStatus, updated: float = NOW - 2, running: bool = True,
         events: tuple[dict[str, object], ...] = ()) -> Snapshot:
    status = DaemonStatus(pid=42, started=NOW - 3600, updated=updated, running=running, sinks=sinks, grants=3)
    return Snapshot(NOW, (), 600.0, status, running, events, "/var/lib/relaywatch/state.json")


HASH_OK = SinkStatus("hash:/var/lib/relaywatch/relay", ok=True, last_ok=NOW - 5)


@pytest.mark.parametrize("snapshot, code, line", [
    (snap(HASH_OK), 0, "RELAYWATCH OK - running (pid 42), 3 client(s) authorised, 1 sink(s) ok | grants=3 sinks=1"),
    (snap(SinkStatus("hash:/m", ok=False, last_ok=NOW - 30, error="postmap: fatal: disk full", backlog=2)), 1,
     "RELAYWATCH WARNING - hash:/m: postmap: fatal: disk full, 2 change(s) owed (retrying) | grants=3 sinks=1"),
    (snap(SinkStatus("hash:/m", ok=False, last_ok=NOW - 90, error="postmap: fatal: disk full")), 2,
     "RELAYWATCH CRITICAL - hash:/m: postmap: fatal: disk full (failing for 90s) | grants=3 sinks=1"),
    (snap(HASH_OK, updated=NOW - 11), 2,
     "RELAYWATCH CRITICAL - status written 11s ago (more than 10s): relaywatch (pid 42) is hung | grants=3 sinks=1"),
    (snap(HASH_OK, running=False, updated=NOW - 120), 2,
     "RELAYWATCH CRITICAL - relaywatch is not running (pid 42, status written 2m ago) | grants=3 sinks=1"),
    (snap(HASH_OK, events=({"t": NOW - 30, "kind": "refused", "user": "bot", "reason": "brake: user holds 10"},)), 1,
     "RELAYWATCH WARNING - the brake held back 1 user(s): bot | grants=3 sinks=1"),
    (snap(HASH_OK, events=({"t": NOW - 3000, "kind": "refused", "user": "bot", "reason": "brake: old"},)), 0,
     "RELAYWATCH OK - running (pid 42), 3 client(s) authorised, 1 sink(s) ok | grants=3 sinks=1"),
    (snap(HASH_OK, events=({"t": NOW - 5, "kind": "refused", "user": "x", "reason": "untrusted journal entry (_COMM=sh)"},)),
     1, "RELAYWATCH WARNING - 1 forged login line(s) seen, from untrusted journal entry (_COMM=sh) | grants=3 sinks=1"),
], ids=["ok", "retrying", "failing-over-a-minute", "stale", "stopped", "brake", "brake-long-ago", "forged"])
def test_verdicts(snapshot: Snapshot, code: int, line: str) -> None:
    assert check.verdict(snapshot) == (code, line)


def status_check(r: Run) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-m", "logwatch", "status", "--check", "--state", str(r.state)],
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.count("\n") == 1 and done.stderr == "", (done.stdout, done.stderr)
    return done.returncode, done.stdout.strip()


def test_a_real_daemon_ok_hung_and_killed(run: Callable[..., Run]) -> None:
    r = run("--expire", "10m")
    assert status_check(r)[0] == 2  # never ran: no status
    r.start()
    wait_for(lambda: status_check(r)[0] == 0, "OK")
    assert r.proc is not None
    r.proc.send_signal(signal.SIGSTOP)  # hung: the process exists, the status ages
    try:
        time.sleep(check.STALE + 1.5)
        code, line = status_check(r)
        assert code == 2 and "is hung" in line, line
    finally:
        r.proc.send_signal(signal.SIGCONT)
    wait_for(lambda: status_check(r)[0] == 0, "OK again once it runs")
    assert r.stop(signal.SIGKILL) == -signal.SIGKILL
    code, line = status_check(r)
    assert code == 2 and "relaywatch is not running" in line, line


def test_metrics_count_logins_and_refusals_by_reason(run: Callable[..., Run], tmp_path: Path) -> None:
    prom = tmp_path / "relaywatch.prom"
    r = run("--expire", "10m", "--max-addresses-per-user", "1", "--metrics", str(prom), "--never", "192.0.2.0/24")
    r.start()
    r.write(LOGIN.format(stamp=stamp(), user="bot", ip="198.51.100.1"))
    r.write(LOGIN.format(stamp=stamp(), user="bot", ip="198.51.100.2"))
    r.write(LOGIN.format(stamp=stamp(), user="bob", ip="192.0.2.1"))
    wait_for(lambda: prom.exists() and "relaywatch_logins_total 3" in prom.read_text(), "the metrics", deadline=30)
    text = prom.read_text()
    for sample in ('relaywatch_refusals_total{reason="brake"} 1', 'relaywatch_refusals_total{reason="never"} 1',
                   "relaywatch_grants 1", 'relaywatch_events_total{kind="authorised"} 1',
                   f'relaywatch_sink_ok{{sink="relayctrl:{r.rc}"}} 1', "# TYPE relaywatch_logins_total counter"):
        assert sample in text, text
    lag = [line for line in text.splitlines() if line.startswith("relaywatch_log_lag_seconds ")]
    assert lag and 0 <= float(lag[0].split()[1]) < 30, text  # a login line's own time, to the second
    assert r.stop() == 0


def test_metrics_give_each_sinks_last_update_time_and_the_log_lag() -> None:
    from logwatch import metrics
    from logwatch.statusrecord import DaemonStatus, SinkStatus

    record = DaemonStatus(sinks=(SinkStatus("hash:/var/lib/relaywatch/relay_clients", update_seconds=0.042),
                                 SinkStatus("relayctrl:/var/spool/relay-ctrl/allow")), log_lag=0.25)
    text = metrics.render(record, {})
    assert 'relaywatch_sink_update_seconds{sink="hash:/var/lib/relaywatch/relay_clients"} 0.042' in text
    assert "relayctrl" not in "".join(line for line in text.splitlines() if "update_seconds{" in line)
    assert "relaywatch_log_lag_seconds 0.25" in text
