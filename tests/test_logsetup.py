"""The journal's priority prefixes only when standard error really is the journal stream."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from logwatch.logsetup import stderr_is_journal


def test_the_stream_systemd_named_is_the_journal() -> None:
    a, b = socket.socketpair()  # systemd hands a unit a stream socket to journald
    try:
        st = os.fstat(a.fileno())
        assert stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, a.fileno())
    finally:
        a.close()
        b.close()


def test_the_variable_alone_is_not_enough(tmp_path: Path) -> None:
    """Inherited by a relaywatch started by hand: its standard error is a file or terminal."""
    other = tmp_path / "other"
    other.touch()
    st = os.stat(other)
    with open(tmp_path / "stderr", "w") as f:
        assert not stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, f.fileno())
        mine = os.fstat(f.fileno())
        assert stderr_is_journal({"JOURNAL_STREAM": f"{mine.st_dev}:{mine.st_ino}"}, f.fileno())


def test_absent_or_malformed() -> None:
    for value in ("", "1", "x:y", "1:2:3", ":"):
        assert not stderr_is_journal({"JOURNAL_STREAM": value} if value else {}, 2)
    assert not stderr_is_journal({"JOURNAL_STREAM": "1:2"}, 9999)  # a closed descriptor
