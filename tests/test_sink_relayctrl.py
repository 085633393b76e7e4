"""Tests for sinks/relayctrl.py in a real directory, judged by relay-ctrl-check's own rule."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from logwatch.addresses import NeverList
from logwatch.ledger import Ledger
from logwatch.model import Grant, LoginEvent
from logwatch.sinks import Sink, SinkError, SinkOptions, apply, open_sink
from logwatch.sinks.relayctrl import RelayCtrlSink

T0 = 1_780_000_000.0
EXPIRE = 1800


def relay_ctrl_allows(directory: Path, remote_ip: str, now: float, expiry: float = EXPIRE) -> bool:
    """relay-ctrl-check's decision: the file named $TCPREMOTEIP exists and mtime + expiry >= now."""
    try:
        st = os.stat(directory / remote_ip)
    except FileNotFoundError:
        return False
    return st.st_mtime + expiry >= now


def grant(ip: str, last: float = T0, user: str = "bob") -> Grant:
    return Grant(ip, user, "imap-login", last - 60, last, 2, last + EXPIRE)


@pytest.fixture
def allow(tmp_path: Path) -> Path:
    directory = tmp_path / "allow"
    directory.mkdir()
    return directory


def test_opened_by_spec_and_is_a_sink(allow: Path) -> None:
    sink = open_sink(f"relayctrl:{allow}")
    assert isinstance(sink, Sink) and sink.spec == f"relayctrl:{allow}"
    sink.close()


def test_put_writes_an_empty_0644_file_stamped_with_the_last_login(allow: Path) -> None:
    sink = RelayCtrlSink(str(allow))
    old_umask = os.umask(0o077)
    try:
        sink.put(grant("192.0.2.7", last=T0, user="USER=evil\nRELAYCLIENT="))
    finally:
        os.umask(old_umask)
    st = os.lstat(allow / "192.0.2.7")
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o644
    assert st.st_size == 0
    assert st.st_mtime == T0
    assert sorted(os.listdir(allow)) == ["192.0.2.7"]


def test_relay_ctrl_check_allows_until_last_login_plus_expiry(allow: Path) -> None:
    sink = RelayCtrlSink(str(allow))
    sink.put(grant("192.0.2.7", last=T0))
    assert relay_ctrl_allows(allow, "192.0.2.7", now=T0 + EXPIRE)
    assert not relay_ctrl_allows(allow, "192.0.2.7", now=T0 + EXPIRE + 1)
    sink.put(grant("192.0.2.7", last=T0 + 600))  # renewal restamps
    assert relay_ctrl_allows(allow, "192.0.2.7", now=T0 + EXPIRE + 1)
    assert not relay_ctrl_allows(allow, "198.51.100.1", now=T0)


def test_ledger_to_directory_end_to_end(allow: Path) -> None:
    """Login, renewal and expiry through the ledger; the directory follows exactly. (The
    addresses are as the matcher hands them on, normalised: tests/test_logins.py.)"""
    ledger = Ledger(expire_after=EXPIRE, never=NeverList.default())
    sink = RelayCtrlSink(str(allow))
    apply(sink, ledger.grant(LoginEvent("192.0.2.7", "bob", "imap-login", T0), T0))
    apply(sink, ledger.grant(LoginEvent("2001:db8::5", "ann", "pop3-login", T0 + 5), T0 + 5))
    apply(sink, ledger.grant(LoginEvent("127.0.0.1", "root", "imap-login", T0 + 6), T0 + 6))
    sink.commit()
    assert sorted(os.listdir(allow)) == ["192.0.2.7", "2001:db8::5"]
    assert relay_ctrl_allows(allow, "2001:db8::5", now=T0 + 100)

    apply(sink, ledger.expire(T0 + EXPIRE))
    assert sorted(os.listdir(allow)) == ["2001:db8::5"]
    apply(sink, ledger.expire(T0 + EXPIRE + 5))
    assert os.listdir(allow) == []


def test_mapped_also_writes_the_dual_stack_name(allow: Path) -> None:
    sink = open_sink(f"relayctrl:{allow}", SinkOptions(relay_ctrl_mapped=True))
    sink.put(grant("192.0.2.7"))
    sink.put(grant("2001:db8::5"))
    assert sorted(os.listdir(allow)) == ["192.0.2.7", "2001:db8::5", "::ffff:192.0.2.7"]
    assert relay_ctrl_allows(allow, "::ffff:192.0.2.7", now=T0)
    sink.drop("192.0.2.7")
    assert os.listdir(allow) == ["2001:db8::5"]


def test_a_symlink_under_a_client_name_is_neither_followed_nor_replaced(
    allow: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    os.utime(victim, (1, 1))
    (allow / "192.0.2.7").symlink_to(victim)
    sink = RelayCtrlSink(str(allow))
    with caplog.at_level(logging.WARNING):
        sink.put(grant("192.0.2.7"))
        sink.put(grant("192.0.2.7", last=T0 + 1))
        sink.drop("192.0.2.7")
    assert (allow / "192.0.2.7").is_symlink()
    assert victim.read_text() == "precious\n" and victim.stat().st_mtime == 1
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [f"relayctrl:{allow}: 192.0.2.7 was not written by relaywatch "
                        "(a symbolic link); leaving it alone"]


@pytest.mark.parametrize("kind", ["content", "directory", "mode"])
def test_files_we_did_not_write_are_left_alone(allow: Path, kind: str) -> None:
    path = allow / "192.0.2.7"
    if kind == "content":
        path.write_text("RELAYCLIENT=\n")
    elif kind == "directory":
        path.mkdir()
    else:
        path.touch()
        path.chmod(0o600)
    before = os.lstat(path)
    sink = RelayCtrlSink(str(allow))
    sink.put(grant("192.0.2.7"))
    sink.drop("192.0.2.7")
    after = os.lstat(path)
    assert (after.st_ino, after.st_mtime_ns, after.st_mode) == (
        before.st_ino, before.st_mtime_ns, before.st_mode)


def test_drop_leaves_a_grant_shaped_file_it_did_not_write(allow: Path) -> None:
    (allow / "198.51.100.3").touch(mode=0o644)
    os.chmod(allow / "198.51.100.3", 0o644)
    RelayCtrlSink(str(allow)).drop("198.51.100.3")
    assert (allow / "198.51.100.3").exists()


def test_restart_takes_back_its_own_files(allow: Path) -> None:
    first = RelayCtrlSink(str(allow))
    first.put(grant("192.0.2.7", last=T0))
    first.close()
    second = RelayCtrlSink(str(allow))
    second.put(grant("192.0.2.7", last=T0 + 60))  # e.g. restored from --state
    assert os.stat(allow / "192.0.2.7").st_mtime == T0 + 60
    second.drop("192.0.2.7")
    assert os.listdir(allow) == []


def test_leftover_temporaries_of_ours_are_removed_at_open(allow: Path) -> None:
    (allow / ".relaywatch.192.0.2.7.0123456789ab").touch()
    (allow / ".other-tool").touch()
    RelayCtrlSink(str(allow))
    assert os.listdir(allow) == [".other-tool"]


@pytest.mark.parametrize("ip", ["../etc/passwd", "192.0.2.7/x", "::FFFF:192.0.2.7", "", ".."])
def test_names_that_are_not_normalised_addresses_are_refused(allow: Path, ip: str) -> None:
    sink = RelayCtrlSink(str(allow))
    with pytest.raises(SinkError) as info:
        sink.put(grant(ip))
    assert not info.value.retryable and str(info.value).startswith(f"relayctrl:{allow}: ")
    assert os.listdir(allow) == []


def test_missing_directory_is_a_one_line_config_error(tmp_path: Path) -> None:
    with pytest.raises(SinkError) as info:
        open_sink(f"relayctrl:{tmp_path}/nope")
    message = str(info.value)
    assert message.startswith(f"relayctrl:{tmp_path}/nope: cannot open the directory")
    assert "\n" not in message and info.value.retryable is False


def test_write_failure_is_retryable(allow: Path) -> None:
    sink = RelayCtrlSink(str(allow))
    sink.put(grant("192.0.2.7"))
    os.unlink(allow / "192.0.2.7")
    # Replace the directory under the open descriptor with nothing writable: remove it.
    os.rmdir(allow)
    with pytest.raises(SinkError) as info:
        sink.put(grant("192.0.2.8"))
    assert info.value.retryable


@pytest.mark.parametrize("spec", ["relayctrl", "relayctrl:", "nosuch:/x", "/var/spool/x"])
def test_bad_specs_are_refused_in_one_line(spec: str) -> None:
    with pytest.raises(SinkError) as info:
        open_sink(spec)
    assert str(info.value).startswith(f"{spec}: ") and not info.value.retryable


def test_a_renewal_restamps_the_file_in_place(allow: Path) -> None:
    """Issue 12: a renewal is one utimensat on the file that is there, not a new file (at
    thousands of renewals a second, a temporary file and a rename each cost a core)."""
    sink = RelayCtrlSink(str(allow))
    sink.put(grant("192.0.2.7", last=T0))
    before = os.lstat(allow / "192.0.2.7")
    sink.put(grant("192.0.2.7", last=T0 + 300))
    after = os.lstat(allow / "192.0.2.7")
    assert after.st_ino == before.st_ino and after.st_mtime == T0 + 300
    assert relay_ctrl_allows(allow, "192.0.2.7", T0 + 300 + EXPIRE)


def test_a_restart_restoring_what_is_published_writes_nothing(allow: Path) -> None:
    """Issue 12: a restore writes only the entries that differ from what is published."""
    RelayCtrlSink(str(allow)).put(grant("192.0.2.7", last=T0))
    RelayCtrlSink(str(allow)).put(grant("198.51.100.9", last=T0))
    same, moved = os.lstat(allow / "192.0.2.7"), os.lstat(allow / "198.51.100.9")
    restarted = RelayCtrlSink(str(allow))
    restarted.put(grant("192.0.2.7", last=T0))
    restarted.put(grant("198.51.100.9", last=T0 + 60))
    unchanged, restamped = os.lstat(allow / "192.0.2.7"), os.lstat(allow / "198.51.100.9")
    assert (unchanged.st_ino, unchanged.st_ctime_ns) == (same.st_ino, same.st_ctime_ns)
    assert restamped.st_ino == moved.st_ino and restamped.st_mtime == T0 + 60
    restarted.drop("192.0.2.7")  # taken back as ours: a later expiry removes it
    assert sorted(os.listdir(allow)) == ["198.51.100.9"]


def test_with_a_margin_a_renewal_restamps_only_when_relay_ctrl_check_needs_it(allow: Path) -> None:
    """Issue 12: with RELAY_CTRL_EXPIRY = --expire + 10 minutes, a renewal within 10 minutes
    of the file's stamp costs nothing, and relay-ctrl-check (its own rule, expiry 2400)
    still allows the client every second of the grant and refuses it after."""
    sink = open_sink(f"relayctrl:{allow}", SinkOptions(relay_ctrl_expiry=EXPIRE + 600))
    sink.put(grant("192.0.2.7", T0))
    inode = os.stat(allow / "192.0.2.7").st_ino
    sink.put(grant("192.0.2.7", T0 + 590))
    assert os.stat(allow / "192.0.2.7").st_mtime == T0  # not restamped
    for now in (T0 + 590, T0 + 590 + EXPIRE):
        assert relay_ctrl_allows(allow, "192.0.2.7", now, expiry=EXPIRE + 600)
    sink.put(grant("192.0.2.7", T0 + 601))
    st = os.stat(allow / "192.0.2.7")
    assert (st.st_mtime, st.st_ino) == (T0 + 601, inode)  # past the margin: restamped in place
    # A restart takes a file within the margin as it is, and still owns it.
    again = open_sink(f"relayctrl:{allow}", SinkOptions(relay_ctrl_expiry=EXPIRE + 600))
    again.put(grant("192.0.2.7", T0 + 900))
    assert os.stat(allow / "192.0.2.7").st_mtime == T0 + 601
    again.drop("192.0.2.7")
    assert not (allow / "192.0.2.7").exists()


def test_without_a_margin_every_renewal_restamps(allow: Path) -> None:
    sink = open_sink(f"relayctrl:{allow}")
    sink.put(grant("192.0.2.7", T0))
    sink.put(grant("192.0.2.7", T0 + 1))
    assert os.stat(allow / "192.0.2.7").st_mtime == T0 + 1
    assert not relay_ctrl_allows(allow, "192.0.2.7", T0 + 2 + EXPIRE)
