"""``relaywatch demo``: the daemon at work on the bundled sample log, in a temp directory.

No Dovecot, root or network needed. The sample log (several Dovecot versions, IPv4 and
IPv6, failed and hostile lines) is replayed line by line into a log that a real
``Daemon`` follows, each line re-dated to now (``replay.redate``), with a short expiry,
so addresses are authorised, refused and withdrawn while you watch. It ends by printing
what the sinks held: the relay-ctrl directory and the Postfix map (built with the local
``postmap`` when Postfix is installed; otherwise the text relaywatch would index).
"""

from __future__ import annotations

import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from logwatch import config, postfix, replay, status
from logwatch.daemon import Daemon
from logwatch.display import printable
from logwatch.faces.views import EventFeed, GrantTable, Header, Snapshot, session_counts


def sample_log() -> Path:
    """The bundled sample log."""
    return Path(__file__).resolve().parent.parent / "demo" / "sample.log"


def _postfix_hash() -> bool:
    try:
        postfix.find("postmap")
        return "hash" in postfix.map_types()
    except postfix.PostfixError:
        return False


def run(console: Console | None = None, gap: float = 0.4, expire: int = 6) -> int:
    """Replay the sample log through a daemon; return 0.

    Args:
        console: where to show it (default: the terminal).
        gap: seconds between two replayed lines.
        expire: the demo's ``--expire`` in seconds.
    """
    console = console or Console(soft_wrap=True)
    work = Path(tempfile.mkdtemp(prefix="relaywatch-demo-"))
    log, relay_ctrl, state_file = work / "dovecot.log", work / "relay-ctrl", work / "state" / "state.json"
    relay_ctrl.mkdir()
    state_file.parent.mkdir()
    log.touch()
    with_postfix = _postfix_hash()
    map_spec = f"hash:{work / 'relay_clients'}"
    settings = config.settings({
        "log": [str(log)], "relay-ctrl-dir": str(relay_ctrl), "state": str(state_file),
        "expire": str(expire), "log-level": "error", "postfix-map": [map_spec] if with_postfix else [],
    })
    console.print(Text.assemble(("relaywatch demo", "bold"), f": replaying {sample_log().name} into {log}",
                                f" (expire {expire}s; {'Postfix map and ' if with_postfix else ''}relay-ctrl directory)"))
    daemon = Daemon(settings)
    daemon.start()
    lines = sample_log().read_text(encoding="utf-8").splitlines()
    done = threading.Event()

    def write() -> None:
        with log.open("a", encoding="utf-8") as f:
            for line in lines:
                f.write(replay.redate(line, datetime.now().astimezone()) + "\n")
                f.flush()
                time.sleep(gap)
        done.set()

    writer = threading.Thread(target=write, name="relaywatch-demo-writer", daemon=True)
    writer.start()
    peak: tuple[list[str], list[str]] = ([], [])
    shown = 0
    live = Live(console=console, refresh_per_second=8, transient=False) if console.is_terminal else None
    try:
        if live:
            live.start()
        while not (done.is_set() and len(daemon.ledger) == 0):
            daemon.step(0.1)
            daemon.save(time.time())
            now = time.time()
            if len(daemon.ledger) > len(peak[0]):
                for outlet in daemon.outlets:  # the Postfix map is rebuilt in a thread of its own
                    flush = getattr(outlet.sink, "flush", None)
                    if flush is not None:
                        flush(5.0)
                peak = (sorted(p.name for p in relay_ctrl.iterdir()), _map_rows(daemon, map_spec, with_postfix))
            events = status.read_events(status.directory_of(state_file))
            if live:
                snap = Snapshot(now, tuple(daemon.ledger.grants()), daemon.ledger.expire_after,
                                daemon.status(now, True), True, tuple(events), str(state_file),
                                session_counts(daemon.ledger.sessions()))
                live.update(Group(Header(snap), GrantTable(snap.grants, now, snap.expire, None, None, limit=12,
                                                           sessions=snap.sessions),
                                  EventFeed(snap.events, now, 8, None)))
            else:
                for event in events[shown:]:
                    console.print(_event_line(event), highlight=False, soft_wrap=True)
                shown = len(events)
    finally:
        if live:
            live.stop()
        daemon.shutdown()
    console.print()
    console.print(Text(f"At its fullest the relay-ctrl directory {relay_ctrl} held:", style="bold"))
    for name in peak[0]:
        console.print(f"  {name}", highlight=False)
    where = map_spec if with_postfix else "the access(5) text (Postfix is not installed here, so no postmap)"
    console.print(Text(f"and the Postfix map {where}:", style="bold"))
    for row in peak[1]:
        console.print(f"  {row}", highlight=False)
    console.print(Text(f"After {expire}s without a login every address was withdrawn: the directory now holds "
                       f"{len(list(relay_ctrl.iterdir()))} file(s). Everything is in {work}.", style="dim"))
    return 0


def _map_rows(daemon: Daemon, spec: str, built: bool) -> list[str]:
    """The map's rows: as ``postmap -s`` reads them back, or the text it would index."""
    if built:
        done = postfix.run("postmap", ["-s", spec])
        return sorted(row for row in done.stdout.split("\n") if row)
    value = daemon.settings.postfix_value
    return sorted(f"{g.ip}\t{value}" for g in daemon.ledger.grants())


def _event_line(event: dict[str, object]) -> str:
    stamp = datetime.fromtimestamp(float(event.get("t", 0))).strftime("%H:%M:%S")  # type: ignore[arg-type]
    who = f" user=<{printable(str(event.get('user', '')))}>" if event.get("user") else ""
    return f"{stamp}  {event.get('kind', ''):<10} {event.get('ip') or '-':<18} {event.get('service', '')}{who}  {event.get('reason', '')}"


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(run())

