"""Shared test fixtures: where things are, and a deterministic environment."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

#: Fixtures: ``run`` starts ``relaywatch run`` processes (tests/daemonlab.py), ``dovecot_lab``
#: a private Dovecot (tests/dovecotlab.py).
pytest_plugins = ("tests.daemonlab", "tests.dovecotlab")

ROOT = Path(__file__).resolve().parent.parent
#: The tests' own data: recorded Dovecot lines (corpus/) and generated logs (generated/);
#: each directory's README.md says where its files come from.
DATA = ROOT / "tests" / "data"


@pytest.fixture
def postfix() -> Iterator[object]:
    """A private Postfix checking one ``hash:`` map (tests/postfixlab.py); a module may
    define its own ``postfix`` with other map types."""
    import postfixlab

    problems = postfixlab.missing()
    if problems:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the Postfix lab: {'; '.join(problems)}")
        pytest.skip("; ".join(problems))
    lab = postfixlab.start(["hash"])
    try:
        yield lab
    finally:
        lab.stop()


@pytest.fixture(autouse=True)
def _plain_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """Colour and terminal width must not depend on who runs the tests."""
    for name in ("FORCE_COLOR", "NO_COLOR", "COLUMNS", "TERM"):
        monkeypatch.delenv(name, raising=False)
