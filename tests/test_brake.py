"""The credential-stuffing brake: 20 addresses for one user, in the loop on a fake clock."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logwatch.brake import Brake, UserAddresses
from logwatch.model import DROP, PUT, Change, Grant
from logwatch.sinks.memory import MemorySink
from tests.looplab import T0, Lab, login


def events(lab: Lab) -> list[tuple[str, str, str, str]]:
    lines = (lab.state.parent / "events.jsonl").read_text().splitlines()
    return [(e["kind"], e["ip"], e["user"], e["reason"]) for e in map(json.loads, lines)]


def burst(user: str, at: float, first: int = 1, n: int = 20) -> list[str]:
    return [login(f"198.51.100.{i}", at, user) for i in range(first, first + n)]


def test_twenty_addresses_for_one_user(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sink = MemorySink("a")
    lab = Lab(tmp_path, [sink])  # --max-addresses-per-user 10, the default; --expire 10m
    lab.daemon.start()
    with caplog.at_level(logging.INFO, logger="relaywatch"):
        lab.step(*burst("bot", T0), login("192.0.2.9", T0, "alice"))
    assert sorted(sink.published) == sorted([f"198.51.100.{i}" for i in range(1, 11)] + ["192.0.2.9"])
    said = [r.getMessage() for r in caplog.records if "brake:" in r.getMessage()]
    assert said == ["refused 198.51.100.11 (imap-login, user=<bot>): brake: user holds 10 address(es) already "
                    "(--max-addresses-per-user 10); none more until one expires"]
    # Held addresses still renew; a new one is still refused, said again after a minute only.
    lab.at(T0 + 30).step(login("198.51.100.1", T0 + 30, "bot"), login("198.51.100.30", T0 + 30, "bot"))
    assert sink.published["198.51.100.1"].last == T0 + 30 and "198.51.100.30" not in sink.published
    lab.at(T0 + 61).step(login("198.51.100.31", T0 + 61, "BOT"))
    lab.at(T0 + 62).step()
    refused = [e for e in events(lab) if e[0] == "refused"]
    assert [(e[1], e[2]) for e in refused] == [("198.51.100.11", "bot"), ("198.51.100.31", "BOT")]
    status = json.loads((lab.state.parent / "status.json").read_text())
    assert status["counts"]["refused"] == 12  # every refusal counted, two shown
    # Once nine of the ten expire (the renewed one stays), nine new ones fit.
    lab.at(T0 + 600).step(*burst("bot", T0 + 600, first=40))
    assert len([ip for ip in sink.published if ip.startswith("198.51.100.")]) == 10
    assert "198.51.100.1" in sink.published and "198.51.100.48" in sink.published
    assert "198.51.100.49" not in sink.published


def test_off_with_zero(tmp_path: Path) -> None:
    sink = MemorySink("a")
    lab = Lab(tmp_path, [sink], ("max-addresses-per-user", 0))
    lab.daemon.start()
    lab.step(*burst("bot", T0))
    assert len(sink.published) == 20


def test_a_revoked_or_expired_address_no_longer_counts() -> None:
    users = UserAddresses()
    brake = Brake(2)

    def put(ip: str, user: str, until: float) -> Change:
        return Change(PUT, Grant(ip, user, "imap-login", until - 600, until - 600, 1, until), "login")

    users.observe([put("192.0.2.1", "bob", 600), put("192.0.2.2", "Bob", 700)])
    assert users.addresses("BOB", 0) == ["192.0.2.1", "192.0.2.2"]
    assert brake.refusal(users, "bob", "192.0.2.3", 0) is not None
    assert brake.refusal(users, "bob", "192.0.2.2", 0) is None  # held: renews
    users.observe([Change(DROP, put("192.0.2.2", "carol", 700).grant, "revoked")])
    assert brake.refusal(users, "bob", "192.0.2.3", 0) is None
    assert users.addresses("bob", 600) == []  # 192.0.2.1 ran out at 600
    with pytest.raises(ValueError):
        Brake(-1)


class Model:
    """What UserAddresses must answer, written the plain way: (user, ip) -> until."""

    def __init__(self) -> None:
        self.held: dict[tuple[str, str], float] = {}

    def observe(self, change: Change) -> None:
        g = change.grant
        if change.kind == PUT and g.service != "manual" and change.reason in ("login", "renew", "restored"):
            self.held[g.user.casefold(), g.ip] = g.until
        elif change.kind == DROP:
            self.held = {k: u for k, u in self.held.items() if k[1] != g.ip}

    def addresses(self, user: str, now: float) -> list[str]:
        key = user.casefold()
        self.held = {k: u for k, u in self.held.items() if k[0] != key or u > now}
        return [ip for (_, ip), _ in sorted(((k, u) for k, u in self.held.items() if k[0] == key),
                                            key=lambda item: item[1])]


USERS = ("alice", "Alice", "bob")
IPS = ("192.0.2.1", "2001:db8::4")


@given(st.lists(st.tuples(st.sampled_from(("login", "renew", "restored", "drop", "manual", "ask", "holds")),
                          st.sampled_from(USERS), st.sampled_from(IPS), st.integers(0, 100)), max_size=40))
@settings(max_examples=3000 if os.environ.get("CI") == "true" else 1000, deadline=None)
def test_the_compact_index_answers_as_the_plain_one(steps: list[tuple[str, str, str, int]]) -> None:
    """UserAddresses keeps one address as a tuple and one user as a string, growing into a
    dict and a set: whatever the order of logins, drops and questions, its answers are the
    plain model's (restore and observe alike)."""
    index, model = UserAddresses(), Model()
    for n, (what, user, ip, t) in enumerate(steps):
        now = float(n)
        if what in ("ask", "holds"):
            expected = model.addresses(user, now)
            if what == "holds":
                assert index.holds(user, ip, now) == (ip in expected)
            else:
                got = index.addresses(user, now)
                assert sorted(got) == sorted(expected) and len(got) == len(expected)
            continue
        grant = Grant(ip, user, "manual" if what == "manual" else "imap-login", now, now, 1, now + t)
        change = Change(DROP if what == "drop" else PUT, grant, "login" if what == "manual" else what)
        model.observe(change)
        if what == "restored":
            index.restore([grant])
        else:
            index.observe([change])
