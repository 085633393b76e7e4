"""A non-editable install finds its pattern sets without the checkout."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import ROOT

LOGIN = "Jun 10 12:00:00 mx dovecot: imap-login: Logged in: user=<bob>, method=PLAIN, rip=192.0.2.7, lip=192.0.2.1, mpid=42, session=<kcwIVMRgFZp/AAAD>"


def test_wheel_ships_patterns_and_runs_from_anywhere(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
                   check=True, capture_output=True, timeout=600)
    (wheel,) = wheels.glob("relaywatch-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(p.name for p in (ROOT / "patterns").glob("*.toml"))
    assert sorted(n.split("/")[-1] for n in names if n.startswith("logwatch/patterns/")) == shipped
    assert "logwatch/demo/sample.log" in names

    venv = tmp_path / "venv"
    # System site packages supply regex and rich; relaywatch itself comes from the wheel only.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)],
                   check=True, capture_output=True, timeout=600)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([str(python), "-c", "import logwatch, os; print(os.path.realpath(logwatch.__file__))"],
                           cwd=elsewhere, check=True, capture_output=True, text=True).stdout.strip()
    assert where.startswith(str(venv.resolve())), where
    done = subprocess.run([str(venv / "bin" / "relaywatch"), "--test-pattern", "--json", LOGIN],
                          cwd=elsewhere, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["pattern_set"] == "dovecot-2.4"
