"""Shared test fixtures: where things are, and a deterministic environment."""

from __future__ import annotations

from pathlib import Path

import pytest

#: Fixtures: ``run`` starts ``relaywatch run`` processes (tests/daemonlab.py), ``dovecot_lab``
#: a private Dovecot (tests/dovecotlab.py).
pytest_plugins = ("tests.daemonlab", "tests.dovecotlab")

ROOT = Path(__file__).resolve().parent.parent
#: The tests' own data: recorded Dovecot lines (corpus/) and generated logs (generated/);
#: each directory's README.md says where its files come from.
DATA = ROOT / "tests" / "data"


@pytest.fixture(autouse=True)
def _plain_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """Colour and terminal width must not depend on who runs the tests."""
    for name in ("FORCE_COLOR", "NO_COLOR", "COLUMNS", "TERM"):
        monkeypatch.delenv(name, raising=False)
