"""Write one batch into a live Postfix ``lmdb`` map as one LMDB transaction, through liblmdb.

Why: ``postmap -i`` and ``postmap -d`` commit each key as its own LMDB transaction, each
with its sync, so at an ISP's change rate (about 320 a second) the syncs alone take most of
a second. Here a batch of additions and withdrawals is one write transaction: one commit,
however many keys. Why ``ctypes`` and not a Python package: ``liblmdb.so.0`` is the library
Postfix's own lmdb client links (Debian's ``liblmdb0``, a dependency of ``postfix-lmdb``),
so it is present wherever an lmdb map can be, and no new dependency is needed; only the
calls below are declared.

What Postfix's readers expect, and this writer does (``dict_lmdb.c``, ``slmdb.c``):

- The file is opened with ``MDB_NOSUBDIR | MDB_NOLOCK``: no LMDB lock file. Postfix's
  daemons lock the database file itself with ``fcntl`` (whole file): a shared lock around
  each lookup (its read transaction begins and ends inside it), an exclusive one around
  each update. With ``MDB_NOLOCK`` LMDB does not know of readers, so it may reuse the pages
  the previous transaction freed: this writer holds the exclusive lock from before its
  transaction begins until after it commits, so no reader is inside a snapshot while
  pages are reused. ``postmap -i`` and ``-d`` take no lock at all for lmdb (``mkmap_open``
  opens it without ``DICT_FLAG_LOCK``: "LMDB uses MVCC"), so nothing keeps another writer
  out of their way: never run them on the map while relaywatch writes it (measured: one
  alongside this writer left a file that gave ``MDB_CURSOR_FULL``; two ``postmap -r -i``
  at once stop with LMDB's "Assertion 'pglast <= env->me_pglast' failed"). fcntl locks
  belong to the process and go when *any* descriptor of the file in the process is
  closed: do not open one map twice in one process at once (a ``lookup`` in one thread
  while another writes would end the writer's lock).
- Keys and values are written as Postfix writes them on Linux: with one trailing NUL
  byte (``DICT_FLAG_TRY1NULL``; lookups try with the NUL, then without), the key
  lowercased (postmap folds keys unless ``-f``), the value with the surrounding blanks
  postmap trims removed (``postfix_key``, ``postfix_value``). A key already present takes
  the new value (``postmap -r``).
- Map size: at least Postfix's ``lmdb_map_size`` (16 MiB) and twice the file's size; on
  ``MDB_MAP_FULL`` the transaction is aborted and the whole batch retried with the map
  doubled, as Postfix's writers do. The size is recorded in the file at commit; a reader
  that opened the map before it grew gets ``MDB_MAP_RESIZED`` and Postfix's slmdb adopts
  the new size (``mdb_env_set_mapsize(env, 0)``) and retries, as this writer does too.
- The environment is opened per batch (open, check, lock, one transaction, commit, close):
  a whole rebuild renames a new file over the live one, and a batch must never be written
  through a mapping of the file that was replaced. Measured: the open and close cost
  about 0.1 ms (``benchmarks/bench_postmap_batch.py``).
- A normal commit (no ``MDB_NOSYNC``): the pages written, one ``fdatasync``, then the meta
  page written through LMDB's ``O_DSYNC`` descriptor (strace). One batch, one commit.

Security: relaywatch never follows a symlink it did not make, but LMDB opens by name, and
twice (the data, then an ``O_DSYNC`` descriptor for the meta page). So the path is
``lstat``-ed (a regular file, not a symlink, not empty), opened with ``O_NOFOLLOW`` and
``fstat``-ed (the same device and inode), and LMDB is given ``/proc/self/fd/N`` of that
descriptor, so both its opens reach the inode checked, whatever is renamed meanwhile (the
path itself where /proc is missing). The descriptor LMDB opened (``mdb_env_get_fd``) is
``fstat``-ed too; any mismatch closes the environment unwritten and raises ``Refused``.
Once the lock is held, the path must still name that file (a rebuild by hand may have
renamed a new one over it while we waited): if not, the open is repeated.

Every call here may block (the lock, the sync) and releases the GIL: call it from a
worker thread, never from an event loop.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The shared object Postfix's lmdb client links (Debian package ``liblmdb0``).
LIBRARY = "liblmdb.so.0"

#: Postfix's ``lmdb_map_size`` default, the least map size a batch is written with.
MAP_SIZE = 16 * 1024 * 1024

#: Times a batch is retried with the map doubled after ``MDB_MAP_FULL`` (16 MiB * 2**24
#: is 256 TiB, beyond any address space a map gets).
MAX_GROWTHS = 24

#: Times the open is repeated when the path was renamed over while the lock was awaited.
MAX_REOPENS = 3

# lmdb.h (0.9): environment flags and return codes.
MDB_NOSUBDIR = 0x4000
MDB_RDONLY = 0x20000
MDB_NOLOCK = 0x400000
MDB_NOTFOUND = -30798
MDB_VERSION_MISMATCH = -30794
MDB_INVALID = -30793
MDB_MAP_FULL = -30792
MDB_MAP_RESIZED = -30785

_MIB = 1024 * 1024


class LmdbError(Exception):
    """A batch could not be written; one line, naming the file. Nothing was committed."""


class Unavailable(LmdbError):
    """liblmdb cannot be loaded (or lacks a call): write with ``postmap -i`` / ``-d``."""


class NotAMap(LmdbError):
    """The file is missing, empty or not an LMDB file: the map must be rebuilt whole."""


class Refused(LmdbError):
    """The path is a symlink or not a regular file, or changed while it was opened."""


class MDBVal(ctypes.Structure):
    """``MDB_val``: a length and a pointer."""

    _fields_ = [("mv_size", ctypes.c_size_t), ("mv_data", ctypes.c_void_p)]


_P = ctypes.c_void_p

#: name -> (restype, argtypes) of every call used.
_CALLS: dict[str, tuple[Any, list[Any]]] = {
    "mdb_env_create": (ctypes.c_int, [ctypes.POINTER(_P)]),
    "mdb_env_set_mapsize": (ctypes.c_int, [_P, ctypes.c_size_t]),
    "mdb_env_open": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.c_uint, ctypes.c_uint]),
    "mdb_env_get_fd": (ctypes.c_int, [_P, ctypes.POINTER(ctypes.c_int)]),
    "mdb_env_close": (None, [_P]),
    "mdb_txn_begin": (ctypes.c_int, [_P, _P, ctypes.c_uint, ctypes.POINTER(_P)]),
    "mdb_txn_commit": (ctypes.c_int, [_P]),
    "mdb_txn_abort": (None, [_P]),
    "mdb_dbi_open": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.c_uint,
                                    ctypes.POINTER(ctypes.c_uint)]),
    "mdb_put": (ctypes.c_int, [_P, ctypes.c_uint, ctypes.POINTER(MDBVal),
                               ctypes.POINTER(MDBVal), ctypes.c_uint]),
    "mdb_del": (ctypes.c_int, [_P, ctypes.c_uint, ctypes.POINTER(MDBVal),
                               ctypes.POINTER(MDBVal)]),
    "mdb_get": (ctypes.c_int, [_P, ctypes.c_uint, ctypes.POINTER(MDBVal),
                               ctypes.POINTER(MDBVal)]),
    "mdb_strerror": (ctypes.c_char_p, [ctypes.c_int]),
}


class Library:
    """liblmdb, loaded with ctypes and its calls declared (the GIL is released in each).

    Raises:
        Unavailable: the library cannot be loaded or lacks one of the calls.
    """

    def __init__(self, name: str = LIBRARY) -> None:
        self.name = name
        try:
            self._dll = ctypes.CDLL(name, use_errno=True)
            for call, (restype, argtypes) in _CALLS.items():
                function = getattr(self._dll, call)
                function.restype = restype
                function.argtypes = argtypes
        except (OSError, AttributeError) as error:
            raise Unavailable(f"cannot load {name} ({error})") from None

    def call(self, name: str, *args: Any) -> int:
        """Call an ``int``-returning function; its status (0, an errno or an MDB_ code)."""
        status: int = getattr(self._dll, name)(*args)
        return status

    def void(self, name: str, *args: Any) -> None:
        """Call a ``void`` function (``mdb_txn_abort``, ``mdb_env_close``)."""
        getattr(self._dll, name)(*args)

    def strerror(self, status: int) -> str:
        """LMDB's text for a status (``strerror`` for an errno)."""
        text: bytes | None = self._dll.mdb_strerror(status)
        return text.decode("utf-8", "replace") if text else f"error {status}"


@dataclass(frozen=True, slots=True)
class Written:
    """What one batch did.

    Attributes:
        added: keys put (new or replaced).
        withdrawn: withdrawn keys found and deleted.
        missing: withdrawn keys that were not in the map (not an error here; the caller
            decides whether the map was what it thought).
        map_size: the map size this writer set, in bytes (after ``MDB_MAP_RESIZED`` the
            larger size recorded in the file was adopted instead).
        growths: times the batch was retried with the map doubled.
    """

    added: int
    withdrawn: int
    missing: int
    map_size: int
    growths: int


def postfix_key(text: str) -> bytes:
    """A key as postmap writes it: lowercased, one trailing NUL.

    Raises:
        ValueError: empty, or not one line of ASCII without blanks (postmap would split it).
    """
    if not text or any(c.isspace() or ord(c) < 32 or ord(c) > 126 for c in text):
        raise ValueError(f"key {text!r}: expected non-empty ASCII without blanks")
    return text.lower().encode("ascii") + b"\0"


def postfix_value(text: str) -> bytes:
    """A value as postmap writes it: leading and trailing blanks trimmed, one trailing NUL.

    Raises:
        ValueError: not one line of printable ASCII.
    """
    if any(ord(c) < 32 and c not in " \t" or ord(c) > 126 for c in text):
        raise ValueError(f"value {text!r}: expected one line of printable ASCII")
    return text.strip(" \t").encode("ascii") + b"\0"


class _Vals:
    """Byte strings copied into one C buffer, and an ``MDB_val`` for each pointing into it;
    the buffer lives as long as this object, so keep it while LMDB reads the vals."""

    def __init__(self, items: Sequence[bytes]) -> None:
        self.buffer = ctypes.create_string_buffer(b"".join(items), sum(map(len, items)) or 1)
        self.vals: list[MDBVal] = []
        address = ctypes.addressof(self.buffer)
        for item in items:
            self.vals.append(MDBVal(len(item), address))
            address += len(item)


def _round_up(size: int) -> int:
    return -(-size // _MIB) * _MIB


class _Env:
    """One open environment on ``path``, checked to be the regular file ``lstat`` found.

    Raises:
        NotAMap, Refused, LmdbError: as ``write_batch``; nothing is left open.
    """

    def __init__(self, lib: Library, path: Path, map_size: int, flags: int) -> None:
        self.lib = lib
        self.path = path
        self.env: ctypes.c_void_p | None = None
        try:
            before = os.lstat(path)
        except FileNotFoundError:
            raise NotAMap(f"{path}: missing; expected the map's LMDB file") from None
        except OSError as error:
            raise LmdbError(f"{path}: cannot stat ({error.strerror})") from None
        if stat.S_ISLNK(before.st_mode):
            raise Refused(f"{path}: a symlink; expected the map's LMDB file itself "
                          "(relaywatch follows no symlink it did not make)")
        if not stat.S_ISREG(before.st_mode):
            raise Refused(f"{path}: not a regular file; expected the map's LMDB file")
        if before.st_size == 0:  # LMDB would make it a new, empty environment
            raise NotAMap(f"{path}: empty; expected an LMDB file")
        self.identity = (before.st_dev, before.st_ino)
        self.map_size = max(map_size, _round_up(2 * before.st_size))
        try:  # O_NONBLOCK: a FIFO swapped in since the lstat must not block the open
            pinned = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as error:
            raise Refused(f"{path}: cannot open without following a symlink "
                          f"({error.strerror}); expected the map's LMDB file") from None
        try:
            self._check_identity(pinned, "opened")
            # LMDB opens the name twice (the data, then an O_DSYNC descriptor for the meta
            # page): through /proc both opens reach the inode checked above, whatever is
            # renamed meanwhile. Without /proc, the path itself (checked after the open).
            proc = f"/proc/self/fd/{pinned}"
            name = proc if os.path.exists(proc) else str(path)
            self._open(name, flags)
        finally:
            os.close(pinned)  # before any lock is taken: closing a descriptor ends them

    def _open(self, name: str, flags: int) -> None:
        lib = self.lib
        env = ctypes.c_void_p()
        self.check(lib.call("mdb_env_create", ctypes.byref(env)), "cannot create an environment")
        self.env = env
        try:
            self.check(lib.call("mdb_env_set_mapsize", env, self.map_size),
                       "cannot set the map size")
            status = lib.call("mdb_env_open", env, os.fsencode(name), flags, 0o644)
            if status in (MDB_INVALID, MDB_VERSION_MISMATCH):
                raise NotAMap(f"{self.path}: not an LMDB file this liblmdb reads "
                              f"({lib.strerror(status)}); expected a map built by postmap")
            self.check(status, "cannot open")
            fd = ctypes.c_int(-1)
            self.check(lib.call("mdb_env_get_fd", env, ctypes.byref(fd)), "no descriptor")
            self.fd = fd.value
            self._check_identity(self.fd, "opened by liblmdb")
        except BaseException:
            self.close()
            raise

    def _check_identity(self, fd: int, how: str) -> None:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != self.identity:
            raise Refused(f"{self.path}: replaced while being {how}; expected the regular "
                          "file lstat found (nothing written)")

    def check(self, status: int, what: str) -> None:
        """Raise ``LmdbError`` naming the file, what failed and LMDB's text, unless 0."""
        if status != 0:
            raise LmdbError(f"{self.path}: {what} ({self.lib.strerror(status)})")

    def still_there(self) -> bool:
        """True if the path still names the file this environment has open."""
        try:
            now = os.lstat(self.path)
        except OSError:
            return False
        return stat.S_ISREG(now.st_mode) and (now.st_dev, now.st_ino) == self.identity

    def set_map_size(self, size: int, what: str) -> None:
        """Set the map size (0: adopt the size recorded in the file); no transaction open."""
        self.check(self.lib.call("mdb_env_set_mapsize", self.env, size), what)

    def begin(self, flags: int) -> ctypes.c_void_p:
        """A transaction; after ``MDB_MAP_RESIZED`` (another writer grew the map since the
        open), the size recorded in the file is adopted and the begin repeated."""
        txn = ctypes.c_void_p()
        status = self.lib.call("mdb_txn_begin", self.env, None, flags, ctypes.byref(txn))
        if status == MDB_MAP_RESIZED:
            self.set_map_size(0, "cannot adopt the grown map size")
            status = self.lib.call("mdb_txn_begin", self.env, None, flags, ctypes.byref(txn))
        self.check(status, "cannot begin a transaction")
        return txn

    def dbi(self, txn: ctypes.c_void_p) -> tuple[int, ctypes.c_uint]:
        """The status and handle of the map's (unnamed) database in ``txn``."""
        dbi = ctypes.c_uint(0)
        return self.lib.call("mdb_dbi_open", txn, None, 0, ctypes.byref(dbi)), dbi

    def close(self) -> None:
        """Close the environment; this closes its descriptor, which ends our fcntl lock."""
        if self.env is not None:
            self.lib.void("mdb_env_close", self.env)
            self.env = None


def _apply(lib: Library, txn: ctypes.c_void_p, dbi: ctypes.c_uint, drops: list[MDBVal],
           keys: list[MDBVal], values: list[MDBVal]) -> tuple[int, int]:
    """Delete then put inside ``txn``: the first failing status (0 if none), and how many
    withdrawn keys were not there."""
    missing = 0
    for key in drops:
        status = lib.call("mdb_del", txn, dbi, ctypes.byref(key), None)
        if status == MDB_NOTFOUND:
            missing += 1
        elif status != 0:
            return status, missing
    for key, value in zip(keys, values):
        status = lib.call("mdb_put", txn, dbi, ctypes.byref(key), ctypes.byref(value), 0)
        if status != 0:
            return status, missing
    return 0, missing


def write_batch(lib: Library, path: Path, puts: Sequence[tuple[bytes, bytes]],
                drops: Sequence[bytes], *, map_size: int = MAP_SIZE) -> Written:
    """Delete ``drops`` (keys) and put ``puts`` (key, value) in one committed transaction.

    Keys and values are stored exactly as given (see ``postfix_key``, ``postfix_value``); a
    key already present takes the new value.

    Raises:
        NotAMap: the file is missing, empty or not LMDB (rebuild it whole).
        Refused: a symlink, not a regular file, or replaced during the open.
        LmdbError: any other failure; the transaction was aborted, nothing written.
    """
    keys = _Vals([key for key, _ in puts])
    values = _Vals([value for _, value in puts])
    withdrawn = _Vals(drops)
    for _ in range(MAX_REOPENS):
        env = _Env(lib, path, map_size, MDB_NOSUBDIR | MDB_NOLOCK)
        try:
            try:
                fcntl.lockf(env.fd, fcntl.LOCK_EX)  # fcntl(F_SETLKW), whole file, as Postfix
            except OSError as error:
                raise LmdbError(f"{path}: cannot lock ({error.strerror})") from None
            if not env.still_there():  # renamed over while we waited: write the new file
                continue
            growths = 0
            while True:
                txn = env.begin(0)
                status, dbi = env.dbi(txn)
                missing = 0
                if status == 0:
                    status, missing = _apply(lib, txn, dbi, withdrawn.vals, keys.vals,
                                             values.vals)
                if status == 0:
                    status = lib.call("mdb_txn_commit", txn)  # frees txn, whatever it returns
                else:
                    lib.void("mdb_txn_abort", txn)
                if status == MDB_MAP_FULL and growths < MAX_GROWTHS:
                    growths += 1
                    env.map_size *= 2
                    env.set_map_size(env.map_size, "cannot grow the map")
                    continue
                env.check(status, "batch not written, nothing committed")
                return Written(len(puts), len(drops) - missing, missing, env.map_size, growths)
        finally:
            env.close()
    raise LmdbError(f"{path}: renamed over {MAX_REOPENS} times while its lock was awaited")


def lookup(lib: Library, path: Path, key: bytes) -> bytes | None:
    """The value stored under exactly ``key`` (bytes as stored), or None; for tests and
    checks, read under a shared fcntl lock as Postfix's readers do.

    Raises:
        NotAMap, Refused, LmdbError: as ``write_batch``.
    """
    wanted = _Vals([key])
    env = _Env(lib, path, MAP_SIZE, MDB_NOSUBDIR | MDB_NOLOCK | MDB_RDONLY)
    try:
        try:
            fcntl.lockf(env.fd, fcntl.LOCK_SH)
        except OSError as error:
            raise LmdbError(f"{path}: cannot lock ({error.strerror})") from None
        txn = env.begin(MDB_RDONLY)
        try:
            status, dbi = env.dbi(txn)
            value = MDBVal()
            if status == 0:
                status = lib.call("mdb_get", txn, dbi, ctypes.byref(wanted.vals[0]),
                                  ctypes.byref(value))
            if status == MDB_NOTFOUND:
                return None
            env.check(status, "cannot read")
            return ctypes.string_at(value.mv_data, value.mv_size)
        finally:
            lib.void("mdb_txn_abort", txn)
    finally:
        env.close()
