"""The renderables, printed into an 80-column console and compared with exact strings."""

from __future__ import annotations

import io
from datetime import datetime, timezone

import pytest
from rich.console import Console

from logwatch.faces.views import (EventFeed, GrantTable, Header, Screen, Snapshot, View, bar, clock_text,
                                  filter_grants, left_text, logins_per_minute, matched_sets, sort_grants)
from logwatch.model import Grant
from logwatch.statusrecord import DaemonStatus

UTC = timezone.utc
NOW = datetime(2026, 11, 21, 9, 0, 0, tzinfo=UTC).timestamp()
EXPIRE = 1800.0


def grant(ip: str, user: str, service: str, first: float, last: float, count: int = 1) -> Grant:
    return Grant(ip, user, service, NOW + first, NOW + last, count, NOW + last + EXPIRE)


GRANTS = (
    grant("192.0.2.7", "bob", "imap-login", -1500, -60, 4),
    grant("198.51.100.2", "eve", "pop3-login", -1700, -1700),
    grant("2001:db8::25", "alice", "imap-login", -90000, -900, 9),
)
NAMES = {"192.0.2.7": "mail.example.test", "198.51.100.2": "…", "2001:db8::25": "-"}
STATUS = {
    "pid": 4242, "running": True, "started": NOW - 7200, "updated": NOW - 0.5,
    "sinks": [{"spec": "relayctrl:/var/qmail/relay-ctrl", "ok": True, "last_ok": NOW - 60, "error": "", "backlog": 0},
              {"spec": "hash:/etc/postfix/relay_clients", "ok": False, "last_ok": NOW - 300,
               "error": "postmap failed", "backlog": 2}],
    "hits": {"dovecot-2.0-2.3/login": 12, "dovecot-2.0-2.3/disconnected-reason": 3, "dovecot-2.4/login": 2,
             "dovecot-0.99/login": 0},
    "counts": {"authorised": 3, "refreshed": 9, "withdrawn": 1, "refused": 1, "ignored": 3},
}
RECORD = DaemonStatus.from_json(STATUS)
EVENTS = (
    {"t": NOW - 120, "kind": "withdrawn", "ip": "203.0.113.5", "user": "carol", "service": "pop3-login",
     "reason": "expired"},
    {"t": NOW - 59, "kind": "authorised", "ip": "192.0.2.7", "user": "bob", "service": "imap-login", "reason": "login"},
    {"t": NOW - 30, "kind": "refused", "ip": "198.51.100.9", "user": "mallory", "service": "imap-login",
     "reason": "listed in dnsbl.example.test (127.0.0.2)"},
    {"t": NOW - 10, "kind": "ignored", "ip": "", "user": "x\x1b[2J", "service": "imap-login",
     "reason": "dovecot-2.0-2.3/disconnected-reason: auth failed"},
    {"t": NOW - 5, "kind": "refreshed", "ip": "192.0.2.7", "user": "bob", "service": "imap-login", "reason": "renew"},
)


def render(renderable: object, width: int = 80, height: int = 25) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, height=height, color_system=None, legacy_windows=False, _environ={})
    console.print(renderable)
    return buffer.getvalue()


@pytest.mark.parametrize("seconds, text", [
    (-1, "expired"), (0, "expired"), (0.2, "1s"), (59, "59s"), (60, "1m00s"), (1799.5, "30m00s"),
    (3600, "1h00m"), (7380, "2h03m"), (86400 + 4 * 3600, "1d04h"),
])
def test_left_text(seconds: float, text: str) -> None:
    assert left_text(seconds) == text


def test_clock_text_gives_the_date_only_for_another_day() -> None:
    assert clock_text(NOW - 60, NOW, UTC) == "08:59:00"
    assert clock_text(NOW - 90000, NOW, UTC) == "Nov 20 08:00"


@pytest.mark.parametrize("fraction, text", [(1.0, "██████████"), (0.55, "██████░░░░"), (0.01, "█░░░░░░░░░"),
                                            (0.0, "░░░░░░░░░░"), (-3, "░░░░░░░░░░"), (7, "██████████")])
def test_bar(fraction: float, text: str) -> None:
    assert bar(fraction).plain == text


def test_bar_in_ascii() -> None:
    assert bar(0.5, ascii_only=True).plain == "#####-----"


def test_sorts_and_filter() -> None:
    assert [g.ip for g in sort_grants(GRANTS, "left")] == ["198.51.100.2", "2001:db8::25", "192.0.2.7"]
    assert [g.ip for g in sort_grants(GRANTS, "last")] == ["192.0.2.7", "2001:db8::25", "198.51.100.2"]
    assert [g.ip for g in sort_grants(GRANTS, "ip")] == ["192.0.2.7", "198.51.100.2", "2001:db8::25"]
    assert [g.ip for g in sort_grants(GRANTS, "user")] == ["2001:db8::25", "192.0.2.7", "198.51.100.2"]
    assert [g.ip for g in filter_grants(GRANTS, "MAIL.example", NAMES)] == ["192.0.2.7"]
    assert [g.ip for g in filter_grants(GRANTS, "pop3")] == ["198.51.100.2"]
    assert [g.ip for g in filter_grants(GRANTS, "2001:")] == ["2001:db8::25"]


def test_logins_per_minute_counts_logins_of_the_last_minute_only() -> None:
    restored = {"t": NOW - 1, "kind": "authorised", "ip": "192.0.2.1", "reason": "restored"}
    assert logins_per_minute((*EVENTS, restored), NOW) == 3  # authorised, refused, refreshed


def test_matched_sets_sums_per_set_most_first() -> None:
    assert matched_sets(RECORD) == [("dovecot-2.0-2.3", 15), ("dovecot-2.4", 2)]
    assert matched_sets(None) == []


def test_grant_table() -> None:
    table = GrantTable(sort_grants(GRANTS, "left"), NOW, EXPIRE, NAMES, UTC)
    assert render(table) == (  # 81 columns wanted: the bar gives way, by one
        "address      name              user  svc  first        last       left          \n"
        "────────────────────────────────────────────────────────────────────────────────\n"
        "198.51.100.2 …                 eve   pop3 08:31:40     08:31:40  1m40s █░░░░░░░░\n"
        "2001:db8::25 -                 alice imap Nov 20 08:00 08:45:00 15m00s █████░░░░\n"
        "192.0.2.7    mail.example.test bob   imap 08:35:00     08:59:00 29m00s █████████\n"
    )


def test_grant_table_without_dns_and_with_a_limit() -> None:
    table = GrantTable(sort_grants(GRANTS, "ip"), NOW, EXPIRE, None, UTC, limit=2)
    assert render(table) == (
        "address   user svc  first    last       left           \n"
        "───────────────────────────────────────────────────────\n"
        "192.0.2.7 bob  imap 08:35:00 08:59:00 29m00s ██████████\n"
        "… 2 more                                               \n"
    )


def test_grant_table_gives_way_in_name_and_user_never_in_the_address() -> None:
    long = Grant("2001:db8:4006:812::200e", "a-very-long-user-name@example.test", "imap-login", NOW - 60, NOW - 60, 1,
                 NOW - 60 + EXPIRE)
    names = {long.ip: "host-2001-db8-4006-812--200e.customers.example.test"}
    assert render(GrantTable([long], NOW, EXPIRE, names, UTC)) == (  # the bar down to half, then name and user
        "address                 name          user   svc  first    last       left      \n"
        "────────────────────────────────────────────────────────────────────────────────\n"
        "2001:db8:4006:812::200e host-2001-db… a-ver… imap 08:59:00 08:59:00 29m00s █████\n"
    )
    wide = render(GrantTable([long], NOW, EXPIRE, names, UTC), width=160).splitlines()
    assert wide[2].split() == ["2001:db8:4006:812::200e", names[long.ip], long.user, "imap", "08:59:00", "08:59:00",
                               "29m00s", "██████████"]


def test_grant_table_shows_hostile_text_as_written() -> None:
    hostile = Grant("192.0.2.66", "[bold]x\x1b[2J\u2028", "imap-login", NOW - 60, NOW - 60, 1, NOW - 60 + EXPIRE)
    out = render(GrantTable([hostile], NOW, EXPIRE, {"192.0.2.66": "evil\x07.example.test"}, UTC), width=120)
    assert "[bold]x\\x1b[2J\\u2028" in out
    assert "evil\\x07.example.test" in out
    assert "\x1b" not in out and "\x07" not in out


def test_grant_table_empty() -> None:
    assert render(GrantTable([], NOW, EXPIRE, NAMES, UTC)) == "no address is authorised to relay\n"


def test_header_running() -> None:
    snap = Snapshot(NOW, GRANTS, EXPIRE, RECORD, True, EVENTS, "/var/lib/relaywatch/state.json")
    assert render(Header(snap, UTC)) == (
        "relaywatch running (pid 4242) since 07:00:00\n"
        "3 entries · oldest Nov 20 08:00 · expire 30m · logins 3/min · refused 1 · ignor…\n"
        "sinks: hash:/etc/postfix/relay_clients failing (last ok 08:55:00, 2 owed) · rel…\n"
        "matched: dovecot-2.0-2.3 (15), dovecot-2.4 (2)\n"
    )


def test_header_stopped_and_without_status() -> None:
    stopped = Snapshot(NOW, GRANTS[:1], EXPIRE, DaemonStatus.from_json({**STATUS, "running": False, "sinks": []}), False, (), "s.json")
    assert render(Header(stopped, UTC)) == (
        "relaywatch stopped at 08:59:59: it withdraws nothing until it runs again\n"
        "1 entry · oldest 08:35:00 · expire 30m · logins 0/min · refused 1 · ignored 3\n"
        "sinks: unknown\n"
        "matched: dovecot-2.0-2.3 (15), dovecot-2.4 (2)\n"
    )
    missing = Snapshot(NOW, (), None, None, False, (), "/srv/state.json")
    assert render(Header(missing, UTC), width=100) == (
        "relaywatch no status: nothing beside /srv/state.json; is the daemon run with this --state?\n"
        "0 entries · logins 0/min\n"
        "sinks: unknown\n"
        "matched: nothing yet\n"
    )


def test_event_feed() -> None:
    assert render(EventFeed(EVENTS, NOW, limit=4, tz=UTC)) == (
        "08:59:01 authorised 192.0.2.7 user=bob imap: login                              \n"
        "08:59:30 refused    198.51.100.9 user=mallory imap: listed in dnsbl.example.tes…\n"
        "08:59:50 ignored    user=x\\x1b[2J imap: dovecot-2.0-2.3/disconnected-reason: au…\n"
        "08:59:55 refreshed  192.0.2.7 user=bob imap: renew                              \n"
    )
    assert render(EventFeed((), NOW, tz=UTC)) == "no events yet\n"


def test_screen_at_80x24() -> None:
    snap = Snapshot(NOW, GRANTS, EXPIRE, RECORD, True, EVENTS, "/var/lib/relaywatch/state.json")
    blank = " " * 80 + "\n"
    assert render(Screen(snap, View(), NAMES, UTC), height=24) == (
        "relaywatch running (pid 4242) since 07:00:00                                    \n"
        "3 entries · oldest Nov 20 08:00 · expire 30m · logins 3/min · refused 1 · ignor…\n"
        "sinks: hash:/etc/postfix/relay_clients failing (last ok 08:55:00, 2 owed) · rel…\n"
        "matched: dovecot-2.0-2.3 (15), dovecot-2.4 (2)                                  \n"
        "authorised: 3 · sorted by time left                                             \n"
        "address      name              user  svc  first        last       left          \n"
        "────────────────────────────────────────────────────────────────────────────────\n"
        "198.51.100.2 …                 eve   pop3 08:31:40     08:31:40  1m40s █░░░░░░░░\n"
        "2001:db8::25 -                 alice imap Nov 20 08:00 08:45:00 15m00s █████░░░░\n"
        "192.0.2.7    mail.example.test bob   imap 08:35:00     08:59:00 29m00s █████████\n"
        + blank * 6 +
        "recent events                                                                   \n"
        "08:58:00 withdrawn  203.0.113.5 user=carol pop3: expired                        \n"
        "08:59:01 authorised 192.0.2.7 user=bob imap: login                              \n"
        "08:59:30 refused    198.51.100.9 user=mallory imap: listed in dnsbl.example.tes…\n"
        "08:59:50 ignored    user=x\\x1b[2J imap: dovecot-2.0-2.3/disconnected-reason: au…\n"
        "08:59:55 refreshed  192.0.2.7 user=bob imap: renew                              \n"
        + blank +
        "q quit · s sort (time left) · / filter                                          "
    )


def test_screen_filtering_and_typing() -> None:
    snap = Snapshot(NOW, GRANTS, EXPIRE, RECORD, True, EVENTS, "state.json")
    out = render(Screen(snap, View(sort="ip", filter="bob", typing="bo"), NAMES, UTC), height=24).splitlines()
    assert len(out) == 24
    assert out[4].rstrip() == "authorised: 1 matching bob · sorted by address"
    assert out[7].startswith("192.0.2.7 ")
    assert out[8].strip() == ""
    assert out[-1].rstrip() == "filter: bo▏  Enter applies · Esc clears"


def test_screen_cuts_the_table_to_the_height() -> None:
    many = tuple(grant(f"192.0.2.{n}", f"u{n}", "imap-login", -60, -60) for n in range(1, 41))
    out = render(Screen(Snapshot(NOW, many, EXPIRE, RECORD, True, EVENTS), View(), None, UTC), height=24).splitlines()
    assert len(out) == 24
    assert out[-1].startswith("q quit")
    more = [line for line in out if line.startswith("… ")]
    assert more == [f"… {40 - 8} more".ljust(80)]  # 11 lines: the table head, 8 rows and this


def test_the_status_record_reads_back_what_it_writes_and_names_a_wrong_key() -> None:
    assert DaemonStatus.from_json(RECORD.to_json()) == RECORD
    assert RECORD.count("refused") == 1 and RECORD.sinks[1].backlog == 2
    with pytest.raises(ValueError, match="^backlog: expected int, not str$"):
        DaemonStatus.from_json({**STATUS, "sinks": [{"spec": "x", "ok": False, "backlog": "2"}]})
    with pytest.raises(ValueError, match="^started: expected a number"):
        DaemonStatus.from_json({**STATUS, "started": "yesterday"})


SESSIONS = {"192.0.2.7": 2, "2001:db8::25": 1}


def test_grant_table_shows_connected_addresses_instead_of_a_countdown() -> None:
    table = GrantTable(sort_grants(GRANTS, "left", SESSIONS), NOW, EXPIRE, NAMES, UTC, sessions=SESSIONS)
    assert render(table) == (  # connected last in time-left order, with a full bar
        "address      name    user svc  first        last                      left      \n"
        "────────────────────────────────────────────────────────────────────────────────\n"
        "198.51.100.2 …       eve  pop3 08:31:40     08:31:40                 1m40s █░░░░\n"
        "2001:db8::25 -       ali… imap Nov 20 08:00 08:45:00  connected, 1 session █████\n"
        "192.0.2.7    mail.e… bob  imap 08:35:00     08:59:00 connected, 2 sessions █████\n"
    )
    one = GrantTable(sort_grants(GRANTS, "left", {"192.0.2.7": 1}), NOW, EXPIRE, None, UTC, sessions={"192.0.2.7": 1})
    assert render(one) == (
        "address      user  svc  first        last                     left           \n"
        "─────────────────────────────────────────────────────────────────────────────\n"
        "198.51.100.2 eve   pop3 08:31:40     08:31:40                1m40s █░░░░░░░░░\n"
        "2001:db8::25 alice imap Nov 20 08:00 08:45:00               15m00s █████░░░░░\n"
        "192.0.2.7    bob   imap 08:35:00     08:59:00 connected, 1 session ██████████\n"
    )


def test_header_counts_open_sessions() -> None:
    snap = Snapshot(NOW, GRANTS, EXPIRE, RECORD, True, (), "/var/lib/relaywatch/state.json", SESSIONS)
    assert render(Header(snap, UTC)).splitlines()[1] == (
        "3 entries · oldest Nov 20 08:00 · expire 30m · logins 0/min · 3 sessions open ·…")
    one = Snapshot(NOW, GRANTS[:1], EXPIRE, None, False, (), "s", {"192.0.2.7": 1})
    assert render(Header(one, UTC)).splitlines()[1] == (
        "1 entry · oldest 08:35:00 · expire 30m · logins 0/min · 1 session open")


def test_screen_with_sessions_at_80x24() -> None:
    events = (*EVENTS, {"t": NOW - 2, "kind": "authorised", "ip": "2001:db8::25", "user": "alice",
                        "service": "imap-login", "reason": "login, connected (1 session)"},
              {"t": NOW - 1, "kind": "authorised", "ip": "198.51.100.2", "user": "eve", "service": "imap-login",
               "reason": "last session ended (logout): kept 30m after it"})
    snap = Snapshot(NOW, GRANTS, EXPIRE, RECORD, True, events, "/var/lib/relaywatch/state.json", SESSIONS)
    lines = render(Screen(snap, View(), None, UTC), height=24).splitlines()
    assert lines[5:10] == [
        "address      user  svc  first        last                      left             ",
        "──────────────────────────────────────────────────────────────────────────────  ",
        "198.51.100.2 eve   pop3 08:31:40     08:31:40                 1m40s █░░░░░░░░░  ",
        "2001:db8::25 alice imap Nov 20 08:00 08:45:00  connected, 1 session ██████████  ",
        "192.0.2.7    bob   imap 08:35:00     08:59:00 connected, 2 sessions ██████████  ",
    ]
    assert lines[-3:-1] == [
        "08:59:58 authorised 2001:db8::25 user=alice imap: login, connected (1 session)  ",
        "08:59:59 authorised 198.51.100.2 user=eve imap: last session ended (logout): ke…",
    ]
