"""Tests for ledger.py: grant, renew, expire, cap, never-list and restore, ``now`` passed in."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logwatch.addresses import NeverList, normalise
from logwatch.ledger import Ledger
from logwatch.model import DROP, PUT, Change, Grant, LoginEvent, SavedGrant
from logwatch.sinks import apply, open_sink
from logwatch.sinks.memory import MemorySink

T0 = 1_780_000_000.0


def login(ip: str, when: float, user: str = "bob", service: str = "imap-login") -> LoginEvent:
    return LoginEvent(ip=ip, user=user, service=service, when=when)


def test_first_login_puts_a_grant_until_last_plus_expire() -> None:
    ledger = Ledger(expire_after=600)
    (change,) = ledger.grant(login("192.0.2.7", T0), now=T0 + 1)
    assert change.kind == PUT and change.reason == "login" and change.warning == ""
    assert change.grant == Grant("192.0.2.7", "bob", "imap-login", T0, T0, 1, T0 + 600)
    assert ledger.next_expiry() == T0 + 600


def test_renewal_moves_until_and_keeps_first() -> None:
    ledger = Ledger(expire_after=600)
    ledger.grant(login("192.0.2.7", T0), now=T0)
    (change,) = ledger.grant(login("192.0.2.7", T0 + 100, user="ann", service="pop3-login"),
                             now=T0 + 100)
    assert change.reason == "renew"
    assert change.grant == Grant("192.0.2.7", "ann", "pop3-login", T0, T0 + 100, 2, T0 + 700)


def test_older_line_for_a_granted_client_counts_but_extends_nothing() -> None:
    ledger = Ledger(expire_after=600)
    ledger.grant(login("192.0.2.7", T0 + 50), now=T0 + 50)
    assert ledger.grant(login("192.0.2.7", T0 + 10), now=T0 + 60) == ()
    grant = ledger.get("192.0.2.7")
    assert grant is not None and grant.count == 2 and grant.until == T0 + 650


@pytest.mark.parametrize(
    ("age", "granted"),
    [(0, True), (599, True), (600, False), (601, False), (86400, False)],
)
def test_login_older_than_the_window_does_not_authorise(age: float, granted: bool) -> None:
    """Catch-up after a restart replays old lines; they are history, not permission."""
    ledger = Ledger(expire_after=600)
    changes = ledger.grant(login("192.0.2.7", T0 - age), now=T0)
    assert bool(changes) is granted
    assert ("192.0.2.7" in ledger) is granted


def test_login_stamped_in_the_future_counts_as_now() -> None:
    ledger = Ledger(expire_after=600)
    (change,) = ledger.grant(login("192.0.2.7", T0 + 3600), now=T0)
    assert change.grant.last == T0 and change.grant.until == T0 + 600


def test_the_matchers_address_is_taken_as_it_is_never_parsed_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 11: the address was normalised three times on its way (matcher, ledger, Postfix
    sink). The matcher does it once (tests/test_logins.py follows a line to the ledger)."""
    import logwatch.ledger

    def parsed_again(text: str) -> str | None:
        raise AssertionError(f"{text} normalised again by the ledger")

    monkeypatch.setattr(logwatch.ledger, "normalise", parsed_again)
    ledger = Ledger()
    (change,) = ledger.grant(login("2001:db8::7", T0), now=T0)
    assert change.ip == "2001:db8::7"
    assert ledger.refusal(login("127.0.0.1", T0), now=T0) is not None
    (renew,) = ledger.grant(login("2001:db8::7", T0 + 1), now=T0 + 1)
    assert renew.reason == "renew" and len(ledger) == 1


@pytest.mark.parametrize(
    "ip", ["127.0.0.1", "::1", "169.254.1.1", "fe80::1", "0.0.0.0", "::"]
)
def test_default_never_list_refuses(ip: str) -> None:
    ledger = Ledger()
    assert ledger.grant(login(ip, T0), now=T0) == ()
    assert ledger.refusal(login(ip, T0), now=T0) is not None
    assert len(ledger) == 0


def test_never_none_allows_loopback_and_custom_list_refuses() -> None:
    assert Ledger(never=NeverList.parse("none")).grant(login("127.0.0.5", T0), now=T0)
    ledger = Ledger(never=NeverList.parse("198.51.100.0/24,2001:db8:1::/48"))
    assert ledger.grant(login("198.51.100.9", T0), now=T0) == ()
    assert ledger.grant(login("2001:db8:1::5", T0), now=T0) == ()
    assert ledger.grant(login("203.0.113.5", T0), now=T0)


def test_expire_drops_at_until_not_before() -> None:
    ledger = Ledger(expire_after=600)
    ledger.grant(login("192.0.2.1", T0), now=T0)
    ledger.grant(login("192.0.2.2", T0 + 10), now=T0 + 10)
    assert ledger.expire(T0 + 599.999) == ()
    (gone,) = ledger.expire(T0 + 600)
    assert gone.kind == DROP and gone.reason == "expired" and gone.ip == "192.0.2.1"
    assert ledger.next_expiry() == T0 + 610
    assert [c.ip for c in ledger.expire(T0 + 10_000)] == ["192.0.2.2"]
    assert ledger.next_expiry() is None and len(ledger) == 0


def test_renewed_client_is_not_expired_at_its_old_time() -> None:
    ledger = Ledger(expire_after=600)
    ledger.grant(login("192.0.2.1", T0), now=T0)
    ledger.grant(login("192.0.2.2", T0 + 5), now=T0 + 5)
    ledger.grant(login("192.0.2.1", T0 + 300), now=T0 + 300)
    assert [c.ip for c in ledger.expire(T0 + 605)] == ["192.0.2.2"]
    assert ledger.next_expiry() == T0 + 900


def test_out_of_order_login_expires_on_its_own_time() -> None:
    """A line logged late must not ride on a newer neighbour's expiry."""
    ledger = Ledger(expire_after=600)
    ledger.grant(login("192.0.2.1", T0 + 100), now=T0 + 100)
    ledger.grant(login("192.0.2.2", T0 + 20), now=T0 + 101)
    assert ledger.next_expiry() == T0 + 620
    assert [c.ip for c in ledger.expire(T0 + 620)] == ["192.0.2.2"]
    assert [c.ip for c in ledger.expire(T0 + 700)] == ["192.0.2.1"]


def test_expiry_matches_a_brute_force_model() -> None:
    """Random logins, renewals and out-of-order lines against a plain dict."""
    rng = random.Random(4)
    ledger = Ledger(expire_after=300, never=NeverList.parse("none"))
    model: dict[str, float] = {}
    now = T0
    for _ in range(5000):
        now += rng.choice([0, 0, 1, 2, 7, 30])
        ip = f"198.51.100.{rng.randrange(60)}"
        when = now - rng.choice([0, 0, 0, 3, 40, 299, 400])
        ledger.grant(login(ip, when), now=now)
        if when + 300 > now:
            model[ip] = max(model.get(ip, 0.0), when + 300)
        gone = {c.ip for c in ledger.expire(now)}
        due = {ip for ip, until in model.items() if until <= now}
        assert gone == due
        for ip in due:
            del model[ip]
        assert {g.ip: g.until for g in ledger.grants()} == model
        assert ledger.next_expiry() == (min(model.values()) if model else None)


def test_cap_withdraws_the_oldest_first_with_a_warning() -> None:
    ledger = Ledger(expire_after=600, max_entries=2)
    ledger.grant(login("192.0.2.1", T0), now=T0)
    ledger.grant(login("192.0.2.2", T0 + 1), now=T0 + 1)
    ledger.grant(login("192.0.2.1", T0 + 2), now=T0 + 2)  # renewal: .2 is now the oldest
    dropped, added = ledger.grant(login("192.0.2.3", T0 + 3), now=T0 + 3)
    assert (dropped.kind, dropped.reason, dropped.ip) == (DROP, "cap", "192.0.2.2")
    assert dropped.warning.startswith("--max-entries 2 reached: withdrew 192.0.2.2")
    assert (added.kind, added.ip) == (PUT, "192.0.2.3")
    assert sorted(g.ip for g in ledger.grants()) == ["192.0.2.1", "192.0.2.3"]


def test_restore_applies_todays_policy() -> None:
    saved = [
        Grant("192.0.2.1", "a", "imap-login", T0 - 900, T0 - 500, 3, T0 + 9999),  # expired now
        Grant("192.0.2.2", "b", "pop3-login", T0 - 100, T0 - 100, 1, T0 + 9999),
        Grant("127.0.0.1", "c", "imap-login", T0, T0, 1, T0 + 9999),  # never-listed
        Grant("::ffff:203.0.113.9", "d", "imap-login", T0, T0, 1, T0 + 9999),
        Grant("bogus", "e", "imap-login", T0, T0, 1, T0 + 9999),
    ]
    ledger = Ledger(expire_after=300)
    changes = ledger.restore(saved, now=T0)
    assert [(c.kind, c.reason, c.ip) for c in changes] == [
        (PUT, "restored", "192.0.2.2"),
        (PUT, "restored", "203.0.113.9"),
    ]
    assert ledger.get("192.0.2.2") == Grant("192.0.2.2", "b", "pop3-login", T0 - 100, T0 - 100,
                                            1, T0 + 200)


def test_refusal_explains_a_stale_login() -> None:
    ledger = Ledger(expire_after=60)
    why = ledger.refusal(login("192.0.2.7", T0 - 61), now=T0)
    assert why is not None and "older than --expire" in why
    assert ledger.refusal(login("192.0.2.7", T0), now=T0) is None


@pytest.mark.parametrize(("expire", "cap"), [(0, 10), (-1, 10), (10, 0)])
def test_bad_settings_name_the_option(expire: float, cap: int) -> None:
    with pytest.raises(ValueError, match="^--(expire|max-entries): "):
        Ledger(expire_after=expire, max_entries=cap)


def test_changes_drive_a_memory_sink() -> None:
    """The daemon's loop in miniature: grant, apply, commit; expire, apply, commit."""
    sink = open_sink("memory:test")
    assert isinstance(sink, MemorySink)
    ledger = Ledger(expire_after=600)
    apply(sink, ledger.grant(login("192.0.2.1", T0), now=T0))
    apply(sink, ledger.grant(login("2001:db8::1", T0 + 1), now=T0 + 1))
    assert sink.published == {}
    sink.commit()
    assert sorted(sink.published) == ["192.0.2.1", "2001:db8::1"]
    apply(sink, ledger.expire(T0 + 600))
    sink.commit()
    assert list(sink.published) == ["2001:db8::1"] and sink.commits == 2
    sink.close()
    with pytest.raises(RuntimeError, match="^memory:test: used after close"):
        sink.commit()


# --- restore_saved: the bulk restore of a start-up, against the one-at-a-time rules -------------


def restored_as_before(ledger: Ledger, grants: list[Grant], now: float) -> tuple[Change, ...]:
    """The rules of ``Ledger.restore`` before the bulk path (4cc87f9), written plainly: the reference."""
    changes: list[Change] = []
    for saved in sorted(grants, key=lambda g: g.last):
        last = min(saved.last, now)
        if last + ledger.expire_after <= now:
            continue
        ip = normalise(saved.ip)
        if ip is None or ip in ledger.never:
            continue
        old = ledger._grants.get(ip)
        if old is not None:
            if old.last >= last:
                continue
            del ledger._grants[ip]
        elif len(ledger._grants) >= ledger.max_entries:
            changes.extend(ledger._make_room(1))
        grant = Grant(ip, saved.user, saved.service, min(saved.first, last), last, max(1, int(saved.count)),
                      last + ledger.expire_after)
        ledger._insert(grant)
        changes.append(Change(PUT, grant, "restored"))
    return tuple(changes)


def inside(ledger: Ledger) -> tuple[object, ...]:
    """Everything that decides what a ledger does next: its grants in order, its heap, its tail."""
    return list(ledger._grants.items()), sorted(ledger._late), ledger._tail


#: Canonical addresses, a few (so that some come twice), some never-listed by default.
RESTORED_IPS = st.sampled_from(["192.0.2.1", "192.0.2.2", "198.51.100.7", "127.0.0.1", "169.254.3.3", "0.0.0.0",
                                "2001:db8::1", "2001:db8::2", "::1", "fe80::9", "::", "10.1.2.3"])
#: Rows as ``state`` hands them on: finite times, first no later than last, a count.
CHECKED_ROWS = st.lists(st.builds(
    lambda ip, user, first_back, last_off, count: (ip, user, "imap-login", T0 + last_off - first_back, T0 + last_off,
                                                   count),
    RESTORED_IPS, st.sampled_from(["ann", "bob"]), st.sampled_from([0.0, 0.5, 100.0, 5000.0]),
    st.sampled_from([-700.0, -600.0, -599.5, -300.0, -1.0, 0.0, 0.25, 50.0, 700.0]), st.integers(1, 3)),
    max_size=30)


@settings(max_examples=400, deadline=None, database=None)
@given(rows=CHECKED_ROWS, never=st.sampled_from(["default", "none", "10.0.0.0/8,2001:db8::2"]),
       cap=st.sampled_from([1, 3, 100]), expire=st.sampled_from([600.0, 1e-9]))
def test_restore_saved_makes_the_ledger_the_rules_made(rows: list[SavedGrant], never: str, cap: int,
                                                      expire: float) -> None:
    """The bulk path (an empty ledger, checked rows) and the one-at-a-time path (the
    rest) leave the ledger, and return the changes, that the restore before them did:
    expired at ``T0`` (an ``--expire`` too short to count included), never-listed, an
    address twice, over the cap, a last login ahead of the clock."""
    policy = NeverList.default() if never == "default" else NeverList.parse(never)
    reference = Ledger(expire_after=expire, never=policy, max_entries=cap)
    expected = restored_as_before(reference, [Grant(*row, row[4]) for row in rows], T0)
    for checked in (True, False):
        ledger = Ledger(expire_after=expire, never=policy, max_entries=cap)
        assert ledger.restore_saved(rows, T0, checked=checked) == expected
        assert inside(ledger) == inside(reference)
        assert ledger.next_expiry() == reference.next_expiry()
        assert ledger.expire(T0 + 300) == copy_of(reference).expire(T0 + 300)


def copy_of(ledger: Ledger) -> Ledger:
    twin = Ledger(expire_after=ledger.expire_after, never=ledger.never, max_entries=ledger.max_entries)
    twin._grants, twin._late, twin._tail = dict(ledger._grants), list(ledger._late), ledger._tail
    return twin


def test_restore_saved_takes_the_bulk_path_only_where_it_may() -> None:
    """A ledger already holding grants, or rows not checked, go one at a time: the result
    is the rules' either way (the property above), this says which way was taken."""
    rows: list[SavedGrant] = [("192.0.2.1", "a", "imap-login", T0, T0, 1), ("192.0.2.2", "b", "imap-login", T0, T0, 1)]
    bulk = Ledger(expire_after=600)
    bulk.restore_saved(rows, T0, checked=True)
    assert bulk._grants["192.0.2.1"].user == "a" and not bulk._late
    held = Ledger(expire_after=600)
    held.grant(login("192.0.2.9", T0 + 5), now=T0 + 5)
    held.restore_saved(rows, T0 + 5, checked=True)  # behind the held grant: on the late heap
    assert [g.ip for g in held.grants()] == ["192.0.2.1", "192.0.2.2", "192.0.2.9"] and len(held._late) == 2


def test_restore_of_grants_normalises_what_restore_saved_is_not_told_is_checked() -> None:
    ledger = Ledger(expire_after=600)
    changes = ledger.restore([Grant("::FFFF:192.0.2.7", "a", "imap-login", T0, T0, 1, 0.0),
                              Grant("2001:DB8::1", "b", "imap-login", T0, T0, 1, 0.0)], T0)
    assert [c.ip for c in changes] == ["192.0.2.7", "2001:db8::1"]
