"""The Dovecot 2.4 lab's cached Debian 13 root: made once, under a lock, never used half-built.

The rules are tested with a fake debootstrap in a temporary cache (fast, no root, no
network); the last test checks the real cached root the lab uses.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests import dovecotlab
from tests.dovecotlab import ROOT_MARKER, LabError, need_lab

#: A stand-in for debootstrap: $1 is the target, $2 the mirror. It counts its runs, and
#: fails half-way (after making part of the tree) when the file "fail" exists.
FAKE = r"""
set -eu
echo run >> "$COUNT"
mkdir -p "$1/usr/sbin" "$1/usr/bin" "$1/mnt" "$1/dev" "$1/proc" "$1/tmp" "$1/etc"
sleep 0.3
[ ! -e "$FAIL" ] || exit 7
touch "$1/usr/sbin/dovecot" "$1/usr/bin/doveconf" "$1/etc/passwd"
"""


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache in tmp_path and a fake debootstrap whose root says it has Dovecot 2.4."""
    monkeypatch.setattr(dovecotlab, "ROOTS", tmp_path / "roots")
    monkeypatch.setattr(dovecotlab, "_verified", set())
    monkeypatch.setenv("COUNT", str(tmp_path / "count"))
    monkeypatch.setenv("FAIL", str(tmp_path / "fail"))
    monkeypatch.setattr(dovecotlab, "debootstrap_command",
                        lambda target: ["sh", "-c", FAKE, "fake-debootstrap", str(target)])
    monkeypatch.setattr(dovecotlab, "dovecot_version_in",
                        lambda root: (root / "version").read_text() if (root / "version").exists()
                        else "2.4.1-4 (fake)")
    return tmp_path


def runs(tmp: Path) -> int:
    count = tmp / "count"
    return len(count.read_text().split()) if count.exists() else 0


def test_made_once_then_reused(fake: Path) -> None:
    root = dovecotlab.dovecot24_root()
    assert root.parent == fake / "roots" / "trixie-dovecot"
    assert (root / ROOT_MARKER).is_file() and runs(fake) == 1
    dovecotlab._verified.clear()  # as another test process would: it checks, then reuses
    assert dovecotlab.dovecot24_root() == root and runs(fake) == 1
    assert not root.with_name(root.name + ".partial").exists()


def test_a_failed_build_leaves_nothing_to_reuse(fake: Path) -> None:
    (fake / "fail").touch()
    with pytest.raises(LabError, match="exited with status 7"):
        dovecotlab.dovecot24_root()
    final = dovecotlab.dovecot24_root_path()
    assert not final.exists() and not final.with_name(final.name + ".partial").exists()
    (fake / "fail").unlink()
    assert (dovecotlab.dovecot24_root() / ROOT_MARKER).is_file() and runs(fake) == 2


def test_a_killed_build_s_partial_root_is_removed_and_made_again(fake: Path) -> None:
    final = dovecotlab.dovecot24_root_path()
    partial = final.with_name(final.name + ".partial")
    (partial / "usr/sbin").mkdir(parents=True)
    (partial / "usr/sbin/dovecot").touch()  # looks complete, but has no marker
    (partial / "left-over").touch()
    root = dovecotlab.dovecot24_root()
    assert runs(fake) == 1 and not (root / "left-over").exists() and not partial.exists()


@pytest.mark.parametrize("damage", ["marker", "dovecot", "version"])
def test_a_broken_root_is_made_again(fake: Path, damage: str) -> None:
    root = dovecotlab.dovecot24_root()
    if damage == "marker":
        (root / ROOT_MARKER).unlink()
    elif damage == "dovecot":
        (root / "usr/sbin/dovecot").unlink()
    else:
        (root / "version").write_text("2.3.19.1 (9b53102964)")
    assert dovecotlab._root_broken(root) is not None
    dovecotlab._verified.clear()
    assert dovecotlab.dovecot24_root() == root and runs(fake) == 2
    assert dovecotlab._root_broken(root) is None


def test_parallel_callers_wait_for_one_build(fake: Path) -> None:
    """Threads stand in for test processes: each opens the lock file itself, and flock
    locks belong to the open file, so they exclude each other as processes would."""
    got: list[Path] = []
    threads = [threading.Thread(target=lambda: got.append(dovecotlab.dovecot24_root()))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(got)) == 1 and len(got) == 4 and runs(fake) == 1


def test_other_roots_in_the_cache_are_not_touched(fake: Path) -> None:
    other = fake / "roots" / "trixie"
    (other / "etc").mkdir(parents=True)
    (other / "etc" / "marker").write_text("someone else's")
    root = dovecotlab.dovecot24_root()
    assert root != other and not root.is_relative_to(other)
    assert (other / "etc" / "marker").read_text() == "someone else's"
    assert sorted(p.name for p in other.iterdir()) == ["etc"]


def test_the_mirror_is_this_machine_s_debian_archive() -> None:
    mirror = dovecotlab.debian_mirror()
    assert mirror.startswith(("http://", "https://", "file:")) and mirror.rstrip("/").endswith(
        "/debian")


def test_the_real_root_has_dovecot_2_4() -> None:
    need_lab("file", "2.4")
    root = dovecotlab.dovecot24_root()
    assert dovecotlab._root_broken(root) is None
    assert dovecotlab.dovecot_version_in(root).startswith("2.4.")
    assert root.parent.name == "trixie-dovecot"
    marker = (root / ROOT_MARKER).read_text()
    assert "--variant=minbase --include=dovecot-imapd,dovecot-pop3d trixie" in marker
