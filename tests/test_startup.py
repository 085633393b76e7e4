"""``relaywatch check-config`` refuses what ``relaywatch run`` refuses, in the same line, and
starts, creates and changes nothing (startup.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def relaywatch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "logwatch", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args, message", [
    (["--relay-ctrl-dir", "{tmp}/missing"], "relaywatch: relayctrl:{tmp}/missing: cannot open the directory"),
    (["--relay-ctrl-dir", "{tmp}", "--state", "{tmp}/missing/state.json"],
     "relaywatch: --state {tmp}/missing/state.json: its directory {tmp}/missing does not exist"),
    (["--relay-ctrl-dir", "{tmp}", "--log", "{tmp}/missing/mail.log"],
     "relaywatch: --log {tmp}/missing/mail.log: its directory {tmp}/missing does not exist"),
])
def test_check_config_refuses_what_run_refuses(tmp_path: Path, args: list[str], message: str) -> None:
    """Issue 11: check-config accepted missing sink and state directories that run refused."""
    (tmp_path / "mail.log").touch()
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--log" not in argv:
        argv += ["--log", str(tmp_path / "mail.log")]
    expected = message.replace("{tmp}", str(tmp_path))
    for command in ("check-config", "run"):
        done = relaywatch(command, *argv)
        assert done.returncode == 2, (command, done.stderr)
        assert done.stderr.startswith(expected) and done.stderr.count("\n") == 1, (command, done.stderr)


def test_check_config_starts_and_creates_nothing(tmp_path: Path) -> None:
    if shutil.which("postmap") is None:
        pytest.skip("postmap is not installed")
    rc = tmp_path / "rc"
    rc.mkdir()
    (rc / ".relaywatch.192.0.2.7.0123456789ab").touch()  # run would remove this leftover
    done = relaywatch("check-config", "--log", str(tmp_path / "mail.log"), "--relay-ctrl-dir", str(rc),
                      "--postfix-map", f"hash:{tmp_path}/relay_clients", "--state", str(tmp_path / "state.json"))
    assert done.returncode == 0, done.stderr
    assert done.stderr == f"relaywatch: warning: --log {tmp_path}/mail.log does not exist yet; relaywatch will " \
                          "read it from its start when it appears\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rc"]  # no map built, no state written
    assert [p.name for p in rc.iterdir()] == [".relaywatch.192.0.2.7.0123456789ab"]


def test_the_sample_settings_file_fails_where_run_would_fail() -> None:
    """contrib/relaywatch.toml names /var/lib/relaywatch, which exists only where relaywatch
    was set up: check-config says so in run's own words, as an admin checking a copy of it
    before the first start needs to hear."""
    if Path("/var/lib/relaywatch").exists():
        pytest.skip("/var/lib/relaywatch exists here")
    sample = str(ROOT / "contrib" / "relaywatch.toml")
    checked, ran = relaywatch("check-config", "--config", sample), relaywatch("run", "--config", sample)
    assert checked.returncode == ran.returncode == 2
    assert checked.stderr.splitlines()[-1] == ran.stderr.splitlines()[-1]
    assert "/var/lib/relaywatch" in checked.stderr.splitlines()[-1]
