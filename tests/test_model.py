"""Tests for model.py: values made in bulk (``grants``, ``changes``) are the frozen values
their ``__init__`` makes, in every way a caller can tell."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from logwatch import model
from logwatch.model import DROP, PUT, Change, Grant

T0 = 1_780_000_000.0
FIELDS = [("192.0.2.7", "bob", "imap-login", T0, T0 + 5, 2, T0 + 605),
          ("2001:db8::7", "ann", "pop3-login", T0 - 1, T0, 1, T0 + 600)]


def test_grants_in_bulk_are_grants() -> None:
    made = model.grants(iter(FIELDS))
    plain = [Grant(*f) for f in FIELDS]
    assert made == plain and [hash(g) for g in made] == [hash(g) for g in plain]
    assert [repr(g) for g in made] == [repr(g) for g in plain]
    assert all(type(g) is Grant for g in made)
    assert dataclasses.replace(made[0], until=T0) == Grant(*FIELDS[0][:6], T0)
    assert pickle.loads(pickle.dumps(made[1])) == plain[1]
    with pytest.raises(dataclasses.FrozenInstanceError):
        made[0].ip = "192.0.2.8"  # type: ignore[misc]
    for grant in (made[0], plain[0]):  # no new attribute either (the error is Python's own, the same for both)
        with pytest.raises((AttributeError, TypeError)):
            grant.extra = 1  # type: ignore[attr-defined]


def test_changes_in_bulk_are_changes() -> None:
    grants = [Grant(*f) for f in FIELDS]
    made = model.changes(PUT, grants, "restored")
    assert made == [Change(PUT, g, "restored") for g in grants]
    assert all(type(c) is Change and c.warning == "" and c.ip == g.ip for c, g in zip(made, grants))
    with pytest.raises(dataclasses.FrozenInstanceError):
        made[0].kind = DROP  # type: ignore[misc]
    assert model.changes(DROP, [], "cap") == []
