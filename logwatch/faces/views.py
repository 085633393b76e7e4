"""Render what the daemon published (a ``Snapshot``) as rich renderables: header, grants, events.

Pure: a snapshot, ``now`` and a time zone in, rich output out; no files, no clock, no DNS
(names arrive as a mapping of labels). ``relaywatch status`` prints ``Header`` and
``GrantTable``; ``relaywatch tui`` prints ``Screen``, which fits all three and a key line
into the terminal's height. Each class follows rich's protocol (``__rich_console__``).

Everything a client or a DNS zone controls (user names, PTR names, reasons quoting log
text) goes through ``display.printable`` and into ``Text`` objects, never into markup: a
user named ``[blink]`` or ``\\x1b[2J`` is shown as written, and acts on nothing.

Sized for 80x24: one line per grant and per event (long fields end in an ellipsis), the
service shown without ``-login``, times as ``HH:MM:SS`` (with the date when not today).
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Group
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from logwatch.display import printable
from logwatch.durations import format_duration
from logwatch.model import Grant
from logwatch.statusrecord import DaemonStatus

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult

#: Sort orders of the grants table, in the order the ``s`` key cycles through them.
SORTS = ("left", "last", "ip", "user")
SORT_LABELS = {"left": "time left", "last": "last login", "ip": "address", "user": "user"}
#: Event kinds counted as logins (``authorised`` with reason ``restored`` is a restart, not a login).
LOGIN_KINDS = ("authorised", "refreshed", "refused")
BAR_WIDTH = 10


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a viewer knows at one moment, read from the files beside ``--state``.

    Attributes:
        now: seconds since the epoch at which the snapshot was taken.
        grants: the grants, with ``until`` = last login + ``expire`` (or ``last`` if unknown).
        expire: the daemon's ``--expire`` in seconds, from its status; None if unknown.
        status: the daemon's ``status.json``, as a record, or None if it never wrote one.
        running: the daemon says it runs and its process exists.
        events: recent events, oldest first (``status.read_events``).
        state: the ``--state`` path, for messages.
        sessions: open sessions per address (``--sessions``), read from the state's
            ``sessions`` table: an address with any is authorised while connected, whatever
            its countdown says.
    """

    now: float
    grants: tuple[Grant, ...]
    expire: float | None
    status: DaemonStatus | None
    running: bool
    events: tuple[Mapping[str, Any], ...] = ()
    state: str = ""
    sessions: Mapping[str, int] = field(default_factory=dict)

    def logins_per_minute(self) -> int:
        """Logins of the last minute: the running daemon's own count (renewals are no events),
        else what the recent events show."""
        if self.running and self.status is not None and self.status.logins_last_minute is not None:
            return self.status.logins_last_minute
        return logins_per_minute(self.events, self.now)


def connected_text(sessions: int) -> str:
    """The table's ``left`` for an address with open sessions: ``connected, 2 sessions``."""
    return f"connected, {sessions} session{'' if sessions == 1 else 's'}"


def session_counts(rows: Iterable[tuple[str, str, float]]) -> dict[str, int]:
    """Open sessions per address, from the state's ``(session id, ip, start)`` rows."""
    counts: dict[str, int] = {}
    for _sid, ip, _start in rows:
        counts[ip] = counts.get(ip, 0) + 1
    return counts


def left_text(seconds: float) -> str:
    """Time left as the table shows it: ``59s``, ``27m05s``, ``2h03m``, ``1d04h``, ``expired``."""
    whole = math.ceil(seconds)
    if whole <= 0:
        return "expired"
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def clock_text(t: float, now: float, tz: tzinfo | None) -> str:
    """``HH:MM:SS`` for a time on ``now``'s day, else ``Mon DD HH:MM``."""
    moment = datetime.fromtimestamp(t, tz)
    if moment.date() == datetime.fromtimestamp(now, tz).date():
        return moment.strftime("%H:%M:%S")
    return moment.strftime("%b %d %H:%M")


def service_text(service: str) -> str:
    """``imap-login`` -> ``imap``: the suffix says nothing in a column of login services."""
    return printable(service.removesuffix("-login"))


def bar(fraction: float, ascii_only: bool = False, width: int = BAR_WIDTH) -> Text:
    """A countdown bar: full when the grant is fresh, empty when it is about to expire."""
    fraction = min(max(fraction, 0.0), 1.0)
    filled = math.ceil(fraction * width) if fraction > 0 else 0
    full, empty = ("#", "-") if ascii_only else ("█", "░")
    style = "green" if fraction > 0.5 else "yellow" if fraction > 0.15 else "red"
    return Text.assemble((full * filled, style), (empty * (width - filled), "dim"))


def logins_per_minute(events: Iterable[Mapping[str, Any]], now: float) -> int:
    """Logins (authorised, refreshed, refused) among the events of the last 60 seconds."""
    return sum(1 for e in events if e.get("kind") in LOGIN_KINDS and e.get("reason") != "restored"
               and isinstance(e.get("t"), (int, float)) and now - 60 < e["t"] <= now)


def _ip_key(ip: str) -> tuple[int, int, str]:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return (9, 0, ip)
    return (address.version, int(address), ip)


def sort_grants(grants: Iterable[Grant], order: str, sessions: Mapping[str, int] | None = None) -> list[Grant]:
    """``grants`` in one of the ``SORTS`` orders (``last``: newest login first; ``left``:
    connected addresses, whose time left is not counted down, last)."""
    connected = sessions or {}
    keys: dict[str, Callable[[Grant], Any]] = {
        "left": lambda g: (g.ip in connected, g.until, _ip_key(g.ip)),
        "last": lambda g: (-g.last, _ip_key(g.ip)),
        "ip": lambda g: _ip_key(g.ip),
        "user": lambda g: (g.user.casefold(), _ip_key(g.ip)),
    }
    return sorted(grants, key=keys[order])


def filter_grants(grants: Iterable[Grant], text: str, names: Mapping[str, str] | None = None) -> list[Grant]:
    """The grants whose address, name, user or service contains ``text`` (any case)."""
    needle = text.casefold()
    if not needle:
        return list(grants)
    names = names or {}
    return [g for g in grants
            if any(needle in value.casefold() for value in (g.ip, names.get(g.ip, ""), g.user, g.service))]


@dataclass
class GrantTable:
    """The authorised addresses: IP, name, user, service, first and last login, time left, bar.

    Args:
        grants: the grants to show (already filtered and sorted).
        now: the moment the times left are counted from.
        expire: ``--expire`` in seconds (the bar's full length); None: no bar, left unknown.
        names: address -> PTR label; None leaves the name column out (``--no-dns``).
        tz: time zone of the clock times (None: the host's).
        limit: show at most this many rows; the last says how many more there are.
        sessions: open sessions per address (``Snapshot.sessions``): such an address shows
            ``connected, N sessions`` instead of a countdown, and a full bar.
    """

    grants: Sequence[Grant]
    now: float
    expire: float | None
    names: Mapping[str, str] | None = None
    tz: tzinfo | None = None
    limit: int | None = None
    sessions: Mapping[str, int] | None = None

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if not self.grants:
            yield Text("no address is authorised to relay", style="dim")
            return
        shown = list(self.grants)
        more = 0
        if self.limit is not None and len(shown) > self.limit:
            keep = max(self.limit - 1, 0)
            more = len(shown) - keep
            shown = shown[:keep]
        rows = [self._row(g) for g in shown]
        headers = self._headers()
        measured = headers[:-1] if self.expire else headers  # the bar is sized below
        widths = [max([len(h)] + [r[n].cell_len for r in rows]) for n, h in enumerate(measured)]
        if self.expire:
            widths.append(BAR_WIDTH)
        flexible = [1, 2] if self.names is not None else [1]  # name and user give way, in that order
        fixed = sum(w for n, w in enumerate(widths) if n not in flexible) + len(widths) - 1
        short = sum(widths[n] for n in flexible) - (options.max_width - fixed)
        if short > 0 and self.expire:  # the bar gives way first, down to half
            cut = min(short, BAR_WIDTH // 2)
            widths[-1] -= cut
            fixed, short = fixed - cut, short - cut
        room = options.max_width - fixed
        need = [widths[n] for n in flexible]
        if short > 0 and room > 0:
            if len(flexible) == 2:
                user = min(need[1], max(4, room // 3))
                widths[1], widths[2] = max(4, room - user), user
            else:
                widths[1] = max(4, room)
        if self.expire:
            connected = self.sessions or {}
            for g, row in zip(shown, rows):
                fraction = 1.0 if connected.get(g.ip) else (g.until - self.now) / self.expire
                row.append(bar(fraction, options.ascii_only, widths[-1]))
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 0),
                      header_style="bold", safe_box=True)
        for n, header in enumerate(headers):
            table.add_column(header, width=widths[n], no_wrap=n > 0, overflow="fold" if n == 0 else "ellipsis",
                             justify="right" if header == "left" else "left")
        for row in rows:
            table.add_row(*row)
        if more:
            table.add_row(Text(f"{'...' if options.ascii_only else '…'} {more} more", style="dim"))
        yield table

    def _headers(self) -> list[str]:
        names = ["name"] if self.names is not None else []
        return ["address", *names, "user", "svc", "first", "last", "left", *([""] if self.expire else [])]

    def _row(self, g: Grant) -> list[Text]:
        """A row's cells, but for the bar (its width is known only once the others are measured)."""
        row = [Text(printable(g.ip))]
        if self.names is not None:
            row.append(Text(printable(self.names.get(g.ip, "")), style="cyan"))
        row += [Text(printable(g.user)), Text(service_text(g.service)),
                Text(clock_text(g.first, self.now, self.tz)), Text(clock_text(g.last, self.now, self.tz)),
                self._left(g)]
        return row

    def _left(self, g: Grant) -> Text:
        open_sessions = (self.sessions or {}).get(g.ip, 0)
        if open_sessions:
            return Text(connected_text(open_sessions), style="green")
        return Text(left_text(g.until - self.now) if self.expire else "?")


@dataclass
class Header:
    """Four lines on the daemon: running or stopped; entries, oldest, logins; sinks; what matched.

    Each line is cut to the width, never wrapped; failing sinks come first, so a cut line
    still shows them.

    Args:
        snapshot: what the viewer read.
        tz: time zone of the clock times (None: the host's).
    """

    snapshot: Snapshot
    tz: tzinfo | None = None

    def lines(self) -> list[Text]:
        """The header's lines, unwrapped (each is cut to the width when rendered)."""
        s, now = self.snapshot, self.snapshot.now
        status = s.status
        first = Text("relaywatch ", style="bold")
        if status is None:
            first.append("no status", style="bold red")
            first.append(printable(f": nothing beside {s.state}; is the daemon run with this --state?"))
        elif s.running:
            first.append("running", style="bold green")
            since = f" since {clock_text(status.started, now, self.tz)}" if status.started is not None else ""
            first.append(printable(f" (pid {status.pid}){since}"))
        else:
            first.append("stopped", style="bold red")
            when = clock_text(status.updated, now, self.tz) if status.updated is not None else "?"
            first.append(f" at {when}: it withdraws nothing until it runs again")
        second = Text(f"{len(s.grants)} {'entry' if len(s.grants) == 1 else 'entries'}")
        if s.grants:
            second.append(f" · oldest {clock_text(min(g.first for g in s.grants), now, self.tz)}")
        if s.expire:
            second.append(f" · expire {format_duration(s.expire)}")
        second.append(f" · logins {s.logins_per_minute()}/min")
        if s.sessions:
            count = sum(s.sessions.values())
            second.append(f" · {count} session{'' if count == 1 else 's'} open")
        for kind in ("refused", "ignored"):
            if status is not None and status.count(kind):
                second.append(f" · {kind} {status.count(kind)}")
        sinks = Text("sinks: ", style="bold")
        listed = status.sinks if status is not None else ()
        for n, sink in enumerate(sorted(listed, key=lambda x: x.ok)):  # trouble first
            if n:
                sinks.append(" · ")
            sinks.append(printable(sink.spec))
            when = clock_text(sink.last_ok, now, self.tz) if sink.last_ok else "never"
            if sink.ok:
                sinks.append(" ok", style="green")
                sinks.append(f" {when}")
            else:
                sinks.append(" failing", style="bold red")
                sinks.append(f" (last ok {when}")
                if sink.backlog:
                    sinks.append(f", {sink.backlog} owed")
                sinks.append(")")
        if not listed:
            sinks.append("unknown", style="dim")
        matched = Text("matched: ", style="bold")
        matched.append(printable(", ".join(f"{name} ({n})" for name, n in matched_sets(status)) or "nothing yet"))
        return [first, second, sinks, matched]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for line in self.lines():
            line.no_wrap = True
            line.overflow = "ellipsis"
            yield line


def matched_sets(status: DaemonStatus | None) -> list[tuple[str, int]]:
    """Pattern sets with hits, most first: the status's ``"set/pattern": n`` summed per set."""
    totals: dict[str, int] = {}
    for key, n in status.hits if status is not None else ():
        if n > 0:
            name = key.split("/", 1)[0]
            totals[name] = totals.get(name, 0) + n
    return sorted(totals.items(), key=lambda item: (-item[1], item[0]))


_KIND_STYLE = {"authorised": "green", "refreshed": "blue", "withdrawn": "yellow", "refused": "bold red",
               "ignored": "dim"}


@dataclass
class EventFeed:
    """The newest events, newest last: time, kind, address, user and service, why.

    Args:
        events: events oldest first (``status.read_events``).
        now: for the date of the clock times.
        limit: how many of the newest to show.
        tz: time zone of the clock times.
    """

    events: Sequence[Mapping[str, Any]]
    now: float
    limit: int = 8
    tz: tzinfo | None = None

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        shown = list(self.events)[-self.limit:] if self.limit > 0 else []
        if not shown:
            yield Text("no events yet", style="dim")
            return
        stamps = [clock_text(e["t"], self.now, self.tz) if isinstance(e.get("t"), (int, float)) else "?"
                  for e in shown]
        table = Table.grid(padding=(0, 1), expand=True)
        table.add_column(no_wrap=True, width=max(len(t) for t in stamps))
        table.add_column(no_wrap=True, width=10)
        table.add_column(no_wrap=True, overflow="ellipsis", ratio=1)
        for stamp, event in zip(stamps, shown):
            kind = str(event.get("kind", "?"))
            detail = Text()
            if event.get("ip"):
                detail.append(printable(str(event["ip"])), style="bold")
                detail.append(" ")
            if event.get("user"):
                detail.append(f"user={printable(str(event['user']))} ")
            if event.get("service"):
                detail.append(service_text(str(event["service"])))
            if event.get("reason"):
                detail.append(": " + printable(str(event["reason"])), style="dim" if kind == "ignored" else "")
            detail.no_wrap, detail.overflow = True, "ellipsis"
            table.add_row(stamp, Text(kind, style=_KIND_STYLE.get(kind, "")), detail)
        yield table


@dataclass
class View:
    """What the TUI lets the user change: the sort, the filter, and the filter being typed."""

    sort: str = "left"
    filter: str = ""
    typing: str | None = None  # the filter text while ``/`` is open, else None

    def next_sort(self) -> View:
        return replace(self, sort=SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)])


@dataclass
class Screen:
    """The TUI's whole screen: header, grants (as many as fit), events, and the keys line.

    Args:
        snapshot: what the viewer read.
        view: sort and filter.
        names: address -> PTR label; None with ``--no-dns``.
        tz: time zone of the clock times.
    """

    snapshot: Snapshot
    view: View = field(default_factory=View)
    names: Mapping[str, str] | None = None
    tz: tzinfo | None = None

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        height = max(options.height or console.height, 12)
        opts = options.reset_height()
        s = self.snapshot
        grants = sort_grants(filter_grants(s.grants, self.view.filter, self.names), self.view.sort, s.sessions)
        title = Text(f"authorised: {len(grants)}", style="bold")
        if self.view.filter:
            title.append(" matching ")
            title.append(printable(self.view.filter), style="reverse")
        title.append(f" · sorted by {SORT_LABELS[self.view.sort]}", style="dim")
        title.no_wrap, title.overflow = True, "ellipsis"
        top = console.render_lines(Group(Header(s, self.tz), title), opts, pad=True)
        feed_rows = max(2, min(8, (height - 12) // 2))
        rule = Text("recent events", style="bold")
        feed = console.render_lines(EventFeed(s.events, s.now, feed_rows, self.tz), opts, pad=True)
        blank = [Segment(" " * opts.max_width)]
        feed = feed[-feed_rows:] + [blank] * (feed_rows - len(feed))
        bottom = console.render_lines(rule, opts, pad=True) + feed + console.render_lines(self.keys(), opts, pad=True)
        space = height - len(top) - len(bottom)
        table = console.render_lines(GrantTable(grants, s.now, s.expire, self.names, self.tz, limit=max(space - 2, 1),
                                                sessions=s.sessions), opts, pad=True)[:space]
        table += [blank] * (space - len(table))
        for n, line in enumerate(top + table + bottom):
            yield from line
            if n < height - 1:
                yield Segment.line()

    def keys(self) -> Text:
        """The bottom line: the keys, or the filter being typed."""
        if self.view.typing is not None:
            line = Text("filter: ", style="bold")
            line.append(printable(self.view.typing))
            line.append("▏  Enter applies · Esc clears", style="dim")
        else:
            line = Text("q", style="bold")
            line.append(" quit · ")
            line.append("s", style="bold")
            line.append(f" sort ({SORT_LABELS[self.view.sort]}) · ")
            line.append("/", style="bold")
            line.append(" filter")
        line.no_wrap, line.overflow = True, "ellipsis"
        return line


if __name__ == "__main__":  # pragma: no cover
    import time

    from rich.console import Console as _Console

    t = time.time()
    demo = Snapshot(t, (Grant("192.0.2.7", "bob", "imap-login", t - 900, t - 60, 4, t + 1740),
                        Grant("2001:db8::25", "alice", "pop3-login", t - 300, t - 300, 1, t + 1500)),
                    1800, DaemonStatus.from_json({"pid": 1, "running": True, "sinks": [
                        {"spec": "relayctrl:/var/qmail/relay-ctrl", "ok": True, "last_ok": t}]}), True)
    _Console(width=80, height=24).print(Screen(demo, names={"192.0.2.7": "mail.example.test"}))
