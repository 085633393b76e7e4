"""Tests for checkpoint: a round trip, atomic replacement, and every kind of corrupt file."""

from __future__ import annotations

import errno
import logging
import os
import resource
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from logwatch import checkpoint
from logwatch.checkpoint import FilePosition, LogCheckpoint

LOG = "/var/log/mail.log"
CP = LogCheckpoint(
    LOG,
    (FilePosition(2049, 131074, 52_000_123, "0f" * 16), FilePosition(2049, 131075, 800, "a1" * 16)),
)


def test_round_trip(tmp_path: Path) -> None:
    checkpoint.save(tmp_path, CP)
    assert checkpoint.load(tmp_path, LOG) == CP
    assert os.listdir(tmp_path) == [checkpoint.checkpoint_file(tmp_path, LOG).name]  # no temp left


def test_first_start_has_none(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert checkpoint.load(tmp_path, LOG) is None
    assert caplog.records == []  # a first start is normal: nothing to say


def test_save_replaces_and_is_private(tmp_path: Path) -> None:
    checkpoint.save(tmp_path, CP)
    newer = LogCheckpoint(LOG, (FilePosition(2049, 131075, 900, "a1" * 16),))
    checkpoint.save(tmp_path, newer)
    assert checkpoint.load(tmp_path, LOG) == newer
    assert checkpoint.checkpoint_file(tmp_path, LOG).stat().st_mode & 0o077 == 0


def test_two_logs_with_one_base_name_do_not_collide(tmp_path: Path) -> None:
    a = LogCheckpoint("/var/log/a/mail.log", (FilePosition(1, 2, 3, ""),))
    b = LogCheckpoint("/var/log/b/mail.log", (FilePosition(1, 5, 6, ""),))
    checkpoint.save(tmp_path, a)
    checkpoint.save(tmp_path, b)
    assert checkpoint.load(tmp_path, a.path) == a
    assert checkpoint.load(tmp_path, b.path) == b
    assert checkpoint.checkpoint_file(tmp_path, a.path).name.startswith("tail-mail.log-")


def test_failed_save_keeps_the_old_checkpoint(tmp_path: Path) -> None:
    """A write that fails half-way (a full disk) must leave the old checkpoint whole.

    Why RLIMIT_FSIZE: it makes the kernel refuse the write with EFBIG, as a full disk
    refuses it with ENOSPC, and it binds root too (CI runs as root).
    """
    checkpoint.save(tmp_path, CP)
    target = checkpoint.checkpoint_file(tmp_path, LOG)
    before = target.read_bytes()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (16, hard))
    try:
        with pytest.raises(OSError) as err:
            checkpoint.save(tmp_path, LogCheckpoint(LOG, (FilePosition(1, 1, 1, "ab" * 16),)))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert err.value.errno == errno.EFBIG
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == [target.name]  # the temporary file was removed


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "Expecting value"),
        (b"\x00\x00\x00\x00", "Expecting value"),  # a torn write on a file system without rename atomicity
        (b'{"version": 1, "path": ', "Expecting value"),
        (b"[]", "version 1"),
        (b'{"version": 2, "path": "/var/log/mail.log", "files": []}', "version 1"),
        (b'{"version": 1, "path": "/var/log/other.log", "files": [{"device": 1, "inode": 2, "offset": 3, "fingerprint": ""}]}', "expected '/var/log/mail.log'"),
        (b'{"version": 1, "path": "/var/log/mail.log", "files": []}', "no files"),
        (b'{"version": 1, "path": "/var/log/mail.log", "files": [{"device": 1, "inode": 2, "offset": -3, "fingerprint": ""}]}', "non-negative"),
        (b'{"version": 1, "path": "/var/log/mail.log", "files": [{"device": 1, "inode": 2, "offset": "3", "fingerprint": ""}]}', "non-negative"),
        (b'{"version": 1, "path": "/var/log/mail.log", "files": [{"device": 1, "inode": 2, "offset": 3}]}', "fingerprint"),
        (b'{"version": 1, "path": "/var/log/mail.log", "files": [{"device": 1, "inode": 2, "offset": 3, "fingerprint": 7}]}', "fingerprint must be"),
        (b'{"version": 1, "path": "/var/log/mail.log", "files": 5}', "not iterable"),
        (b'{"version": 1, "path": "/var/log/mail.log", "files": [{"device": 1, "inode": 2, "offset": 9223372036854775808, "fingerprint": ""}]}', "non-negative"),  # past off_t
        (b'{"version": 1, "path": "/var/log/mail.log", "files": [{"device": 18446744073709551616, "inode": 2, "offset": 3, "fingerprint": ""}]}', "non-negative"),
    ],
)
def test_corrupt_checkpoint_is_said_in_one_line(tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes, why: str) -> None:
    target = checkpoint.checkpoint_file(tmp_path, LOG)
    target.write_bytes(content)
    with caplog.at_level(logging.WARNING, "relaywatch.checkpoint"):
        assert checkpoint.load(tmp_path, LOG, now=1710025200.0) is None
    [record] = caplog.records
    msg = record.getMessage()
    assert "\n" not in msg and why in msg and "starting /var/log/mail.log at its end" in msg
    assert str(target) in msg
    aside = target.with_name(target.name + ".corrupt-20240309T230000Z")
    assert f"moved to {aside.name}" in msg
    assert aside.read_bytes() == content  # kept as evidence, out of the way of the next save
    assert not target.exists()


# --- Issue 10, item 5: a checkpoint someone else planted chooses nothing ---

STAMP = 1710025200.0
ASIDE = ".corrupt-20240309T230000Z"


def refused(tmp_path: Path, caplog: pytest.LogCaptureFixture, why: str) -> str:
    """Load, expect None, one line naming the file and ``why``, and the file set aside."""
    target = checkpoint.checkpoint_file(tmp_path, LOG)
    with caplog.at_level(logging.WARNING, "relaywatch.checkpoint"):
        assert checkpoint.load(tmp_path, LOG, now=STAMP) is None
    [record] = caplog.records
    msg = record.getMessage()
    assert msg.startswith(f"checkpoint {target}: refused ({why}") and "\n" not in msg
    assert msg.endswith(f"moved to {target.name}{ASIDE}; starting {LOG} at its end")
    assert not os.path.lexists(target) and os.path.lexists(target.with_name(target.name + ASIDE))
    return msg


def test_a_symlinked_checkpoint_is_not_followed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    checkpoint.save(elsewhere, CP)
    checkpoint.checkpoint_file(tmp_path, LOG).symlink_to(checkpoint.checkpoint_file(elsewhere, LOG))
    refused(tmp_path, caplog, "a symbolic link")
    assert checkpoint.load(elsewhere, LOG) == CP  # the target is untouched


@pytest.mark.parametrize("uid, mode, why", [
    (65534, 0o600, "owned by uid 65534"),
    (0, 0o666, "writable by others than its owner (mode 0666)"),
    (0, 0o620, "writable by others than its owner (mode 0620)"),
])
def test_a_checkpoint_anyone_else_could_write_is_not_trusted(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                             uid: int, mode: int, why: str) -> None:
    checkpoint.save(tmp_path, CP)
    target = checkpoint.checkpoint_file(tmp_path, LOG)
    os.chown(target, uid, 0)
    os.chmod(target, mode)
    refused(tmp_path, caplog, why)


def test_a_huge_checkpoint_is_refused_unread(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    checkpoint.save(tmp_path, CP)
    target = checkpoint.checkpoint_file(tmp_path, LOG)
    with target.open("ab") as f:
        f.write(b" " * checkpoint.MAX_BYTES)  # still valid JSON
    refused(tmp_path, caplog, f"{target.stat().st_size} bytes, over the limit of {checkpoint.MAX_BYTES} (1 MiB)")


def test_a_fifo_checkpoint_does_not_block_the_start(tmp_path: Path) -> None:
    target = checkpoint.checkpoint_file(tmp_path, LOG)
    os.mkfifo(target)
    code = ("import sys; from logwatch import checkpoint; "
            "print(checkpoint.load(sys.argv[1], sys.argv[2], now=1710025200.0))")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path), LOG], cwd=Path(__file__).resolve().parent.parent,
                          capture_output=True, text=True, timeout=20)  # it used to wait for a writer for ever
    assert done.stdout == "None\n"
    assert "refused (a FIFO, not a regular file)" in done.stderr
    assert stat.S_ISFIFO(target.with_name(target.name + ASIDE).lstat().st_mode)
