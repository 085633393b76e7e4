"""``relaywatch demo``: a real daemon on the bundled log, without Dovecot, root or network."""

from __future__ import annotations

import re
import subprocess
import sys

AUTHORISED = {"192.0.2.10", "2001:db8:0:5::b0b", "192.0.2.21", "198.51.100.40", "203.0.113.45",
              "198.51.100.50", "192.0.2.60", "2001:db8::1:60", "198.51.100.80"}


def test_demo_authorises_refuses_withdraws_and_shows_the_sinks() -> None:
    done = subprocess.run([sys.executable, "-m", "logwatch", "demo", "--fast"], capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert set(re.findall(r"authorised (\S+)", out)) == AUTHORISED
    assert set(re.findall(r"withdrawn\s+(\S+)", out)) == AUTHORISED
    assert re.search(r"refused\s+127\.0\.0\.1 .*never-list", out)
    assert "198.51.100.66" not in " ".join(re.findall(r"(?:authorised|withdrawn)\s+(\S+)", out))
    assert "At its fullest the relay-ctrl directory" in out and "and the Postfix map" in out
    assert "the directory now holds 0 file(s)" in out


def test_demo_without_postfix_shows_the_text_it_would_index(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A fresh machine has no Postfix: the demo still runs and says what it shows instead.
    (Postfix is installed here, so its absence is the one thing this test stands in for.)"""
    import io

    from rich.console import Console

    from logwatch.faces import demo

    monkeypatch.setattr(demo, "_postfix_hash", lambda: False)
    console = Console(file=io.StringIO(), width=200, soft_wrap=True)
    assert demo.run(console, gap=0.02, expire=1) == 0
    out = console.file.getvalue()
    assert "Postfix is not installed here, so no postmap" in out
    rows = out.split("Postfix is not installed here, so no postmap):\n", 1)[1].split("After", 1)[0].split()
    assert "192.0.2.10" in rows and "OK" in rows and "198.51.100.66" not in rows
