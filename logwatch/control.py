"""The administrator's channel into a running daemon: a Unix socket beside ``--state``, one JSON line each way.

The daemon listens on ``control.sock`` in the state file's directory, mode 0660, group of
that directory (systemd's ``StateDirectory`` makes it the daemon's group: give the
operators that group). A small thread accepts, checks who is calling and reads one request
line (at most ``MAX_REQUEST`` bytes, within ``READ_TIMEOUT``); it then hands the request
to the loop (``requests``) and writes the loop's answer back. Why a thread that only
queues: every change to the ledger happens on the loop's thread, so a manual revocation
keeps the order every grant keeps (write-ahead log, then the sinks, then the checkpoints),
and a client that connects and says nothing cannot stall the loop.

Who may ask (``allowed``): the peer's credentials come from the kernel (``SO_PEERCRED``),
not from anything the client says: root, the daemon's own uid, or a member of the socket's
group (its primary group, or a supplementary one as ``/proc/PID/status`` lists them, or
the group database if the process is gone). The file mode already keeps others out; the
check is what still holds if someone loosens it.

The lock (``LOCK``, ``flock`` on ``control.lock``) is held for as long as the daemon runs:
a second daemon on the same ``--state`` is refused at start, and ``relaywatch
withdraw-expired`` (``logwatch/withdraw.py``) knows for sure whether one is running.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import grp
import json
import logging
import os
import pwd
import queue
import socket
import stat
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("relaywatch")

SOCKET = "control.sock"
LOCK = "control.lock"
#: Longest request line, in bytes; longer is refused.
MAX_REQUEST = 64 << 10
#: Seconds a client has to send its request line.
READ_TIMEOUT = 5.0
#: Seconds the channel waits for the loop's answer before it tells the client so.
ANSWER_TIMEOUT = 30.0
#: Requests waiting for the loop, at most; more are refused ("busy").
MAX_QUEUED = 64
#: Seconds a start waits for the lock (``relaywatch withdraw-expired`` holds it briefly).
LOCK_WAIT = 10.0
#: A path ``bind``/``connect`` accept (``sun_path`` is 108 bytes, with its NUL).
MAX_PATH = 107


class ControlError(Exception):
    """The channel cannot be used; ``str()`` is one line for the operator."""


@dataclass(frozen=True, slots=True)
class Peer:
    """Who is at the other end, as the kernel says."""

    pid: int
    uid: int
    gid: int


@dataclass
class Request:
    """One request from a peer, waiting for the loop's answer."""

    peer: Peer
    body: dict[str, Any]
    _answer: dict[str, Any] | None = None
    _done: threading.Event = field(default_factory=threading.Event)

    def answer(self, reply: dict[str, Any]) -> None:
        """Give the loop's reply (``{"ok": bool, "message": str, ...}``) to the waiting client."""
        self._answer = reply
        self._done.set()

    def wait(self, timeout: float) -> dict[str, Any] | None:
        return self._answer if self._done.wait(timeout) else None


def socket_path(state: str | os.PathLike[str]) -> Path:
    """``control.sock`` beside ``--state FILE`` (the file's own directory, resolved)."""
    return Path(state).parent.resolve() / SOCKET


def _short(path: Path, directory_fd: int) -> str:
    """A name for ``path`` that fits ``sun_path``: itself, or through ``/proc/self/fd``."""
    if len(os.fsencode(path)) <= MAX_PATH:
        return str(path)
    return f"/proc/self/fd/{directory_fd}/{path.name}"


def _lock(fd: int, kind: int, wait: float) -> bool:
    """``flock`` ``fd`` (``kind``), trying for up to ``wait`` seconds; whether it was got."""
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


def peer_of(conn: socket.socket) -> Peer:
    """The connected peer's pid, uid and gid (``SO_PEERCRED``)."""
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return Peer(pid, uid, gid)


def groups_of(pid: int) -> frozenset[int] | None:
    """The supplementary groups of process ``pid`` (None if it cannot be read)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Groups:"):
                    return frozenset(int(g) for g in line.split()[1:])
    except (OSError, ValueError):
        return None
    return frozenset()


def allowed(peer: Peer, group: int, own_uid: int) -> bool:
    """Whether ``peer`` may use the channel: root, ``own_uid``, or a member of ``group``.

    Why ``/proc`` first: a process's groups are what it runs with now (``newgrp``,
    ``setpriv``, systemd's ``SupplementaryGroups``); the group database is the fallback for
    a peer that is already gone, and says only what a fresh login would get.
    """
    if peer.uid in (0, own_uid) or peer.gid == group:
        return True
    groups = groups_of(peer.pid)
    if groups is not None:
        return group in groups
    try:
        user = pwd.getpwuid(peer.uid)
        return user.pw_gid == group or user.pw_name in grp.getgrgid(group).gr_mem
    except KeyError:
        return False


class ControlServer:
    """The daemon's side: the socket, the lock and the thread that queues requests.

    Args:
        state: the ``--state`` file; the socket and the lock go in its directory.

    Raises:
        ControlError: another relaywatch holds the lock, or the socket cannot be made.
    """

    def __init__(self, state: str | os.PathLike[str]) -> None:
        self.path = socket_path(state)
        directory = self.path.parent
        self._dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._lock_fd = -1
        self._queue: queue.Queue[Request] = queue.Queue(MAX_QUEUED)
        self._closed = threading.Event()
        try:
            self._lock_fd = os.open(LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                                    dir_fd=self._dir_fd)
            if not _lock(self._lock_fd, fcntl.LOCK_EX, LOCK_WAIT):
                raise ControlError(f"--state: another relaywatch is running on {directory} "
                                   f"(it holds {directory / LOCK})")
            self.group = os.fstat(self._dir_fd).st_gid
            self._sock = self._bind()
        except OSError as exc:
            self._release()
            raise ControlError(f"control socket {self.path}: {exc.strerror or exc}") from None
        except ControlError:
            self._release()
            raise
        self._thread = threading.Thread(target=self._serve, name="relaywatch control", daemon=True)
        self._thread.start()

    def _bind(self) -> socket.socket:
        """Replace what is at the socket's name (a socket left by a crash: we hold the lock)
        and listen, mode 0660, group of the directory."""
        try:
            st = os.lstat(self.path.name, dir_fd=self._dir_fd)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(st.st_mode):
                raise OSError(errno.EEXIST, f"{self.path} exists and is not a socket; move it away")
            os.unlink(self.path.name, dir_fd=self._dir_fd)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.bind(_short(self.path, self._dir_fd))
            os.chmod(self.path.name, 0o660, dir_fd=self._dir_fd, follow_symlinks=False)
            if os.stat(self.path.name, dir_fd=self._dir_fd, follow_symlinks=False).st_gid != self.group:
                os.chown(self.path.name, -1, self.group, dir_fd=self._dir_fd, follow_symlinks=False)
            sock.listen(16)
            sock.settimeout(0.5)  # the thread looks at _closed this often
        except BaseException:
            sock.close()
            raise
        return sock

    def requests(self) -> list[Request]:
        """The requests waiting for the loop, without waiting (the loop calls it every step)."""
        out = []
        while True:
            try:
                out.append(self._queue.get_nowait())
            except queue.Empty:
                return out

    def _serve(self) -> None:
        own = os.geteuid()
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._closed.is_set():
                    return
                continue
            with conn:
                try:
                    self._one(conn, own)
                except OSError:
                    pass  # the client went away: nothing to tell it
                except Exception as exc:  # the channel must outlive any one odd client
                    log.error("control: internal error: %s: %s", type(exc).__name__, exc)

    def _one(self, conn: socket.socket, own: int) -> None:
        peer = peer_of(conn)
        if not allowed(peer, self.group, own):
            log.warning("control: refused uid %d (pid %d): not root, relaywatch's user or in group %d",
                        peer.uid, peer.pid, self.group)
            _send(conn, {"ok": False, "message": f"uid {peer.uid} may not use relaywatch's control socket "
                                                 f"(root, uid {own} or group {self.group} may)"})
            return
        conn.settimeout(READ_TIMEOUT)
        try:
            body = _receive(conn)
        except ValueError as exc:
            _send(conn, {"ok": False, "message": str(exc)})
            return
        request = Request(peer, body)
        try:
            self._queue.put_nowait(request)
        except queue.Full:
            _send(conn, {"ok": False, "message": "relaywatch is busy with other requests; try again"})
            return
        reply = request.wait(ANSWER_TIMEOUT)
        _send(conn, reply if reply is not None else
              {"ok": False, "message": f"relaywatch did not answer within {ANSWER_TIMEOUT:g} s"})

    def close(self) -> None:
        """Stop listening, remove the socket, answer what is still queued, release the lock."""
        self._closed.set()
        try:
            self._sock.close()
            os.unlink(self.path.name, dir_fd=self._dir_fd)
        except OSError:
            pass
        self._thread.join(2.0)
        for request in self.requests():
            request.answer({"ok": False, "message": "relaywatch is stopping"})
        self._release()

    def _release(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = -1
        if self._dir_fd >= 0:
            os.close(self._dir_fd)
            self._dir_fd = -1


def _receive(conn: socket.socket) -> dict[str, Any]:
    """One request line: a JSON object, at most ``MAX_REQUEST`` bytes.

    Raises:
        ValueError: too long, not JSON, or not an object (one line).
        OSError: the client went away, or was too slow (``TimeoutError``).
    """
    data = b""
    while b"\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST:
            raise ValueError(f"request longer than {MAX_REQUEST} bytes")
    line = data.split(b"\n", 1)[0]
    try:
        body = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError("request is not one line of JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("command"), str):
        raise ValueError('request is not a JSON object with a "command"')
    return body


def _send(conn: socket.socket, reply: dict[str, Any]) -> None:
    conn.sendall(json.dumps(reply, ensure_ascii=True, separators=(",", ":")).encode("ascii") + b"\n")


@contextlib.contextmanager
def holding(state: str | os.PathLike[str]) -> Iterator[bool]:
    """Hold the daemon's lock on ``--state`` while the block runs, if no daemon holds it:
    yields whether it was got (False: a daemon runs). A daemon that starts meanwhile waits
    for it (``LOCK_WAIT``). Used by ``relaywatch withdraw-expired``."""
    directory = Path(state).parent.resolve()
    fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        got = _lock(fd, fcntl.LOCK_EX, 0.0)
        yield got
    finally:
        os.close(fd)  # closing releases the flock


def running(state: str | os.PathLike[str]) -> bool:
    """Whether a daemon runs on ``--state`` (it holds the lock); never waits."""
    directory = Path(state).parent.resolve()
    try:
        fd = os.open(directory / LOCK, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def ask(state: str | os.PathLike[str], body: dict[str, Any], timeout: float = ANSWER_TIMEOUT + 5) -> dict[str, Any]:
    """Send one request to the daemon on ``--state`` and return its answer.

    Raises:
        ControlError: no daemon answers (not running, no permission, ...), in one line.
    """
    path = socket_path(state)
    directory_fd = -1
    try:
        directory_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(timeout)
            sock.connect(_short(path, directory_fd))
            try:
                sock.sendall(json.dumps(body, ensure_ascii=True).encode("ascii") + b"\n")
            except BrokenPipeError:
                pass  # refused before the request was read: its answer is there to read
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except (FileNotFoundError, ConnectionRefusedError):
        raise ControlError(f"no relaywatch is running on {path.parent} (no one listens on {path})") from None
    except PermissionError:
        raise ControlError(f"{path}: permission denied (be root, relaywatch's user, or in the group of "
                           f"{path.parent})") from None
    except TimeoutError:
        raise ControlError(f"{path}: relaywatch did not answer within {timeout:g} s") from None
    except OSError as exc:
        raise ControlError(f"{path}: {exc.strerror or exc}") from None
    finally:
        if directory_fd >= 0:
            os.close(directory_fd)
    try:
        reply = json.loads(data.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ControlError(f"{path}: relaywatch's answer is not JSON") from None
    if not isinstance(reply, dict):
        raise ControlError(f"{path}: relaywatch's answer is not a JSON object")
    return reply
