"""Shared test fixtures: where things are, and a deterministic environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: Fixtures: ``run`` starts ``relaywatch run`` processes (tests/daemonlab.py), ``dovecot_lab``
#: a private Dovecot (tests/dovecotlab.py).
pytest_plugins = ("tests.daemonlab", "tests.dovecotlab")

ROOT = Path(__file__).resolve().parent.parent
#: ``../shared`` beside the checkout: the real-log corpus and the log generator.
SHARED = ROOT.parent / "shared"


def need_shared() -> Path:
    """Return ``../shared``; skip without it, except under CI, where it must be there."""
    if not SHARED.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{SHARED} is missing; CI clones the project with shared/ beside it")
        pytest.skip(f"{SHARED} is not here")
    return SHARED


@pytest.fixture(autouse=True)
def _plain_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """Colour and terminal width must not depend on who runs the tests."""
    for name in ("FORCE_COLOR", "NO_COLOR", "COLUMNS", "TERM"):
        monkeypatch.delenv(name, raising=False)
