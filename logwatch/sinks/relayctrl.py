"""Publish grants as a qmail relay-ctrl directory: one empty file per client, mtime = last login.

What reads it: ``relay-ctrl-check`` (run by tcpserver before qmail-smtpd) allows relay while
the file named by ``$TCPREMOTEIP`` has ``mtime + RELAY_CTRL_EXPIRY >= now`` (default 900 s),
and exports every ``NAME=VALUE`` line in that file into qmail-smtpd's environment.

So, why each rule here:

- Files are empty: nothing a client controls (a user name, say) must ever reach the SMTP
  server's environment.
- A file is written under a temporary name, stamped, and renamed into place: the checker
  never sees a half-made file, and the mtime it reads is the login's time, not ours. A
  renewal only restamps the file that is there (one ``utimensat``, not a new file): at an
  ISP's thousands of renewals a second that is the difference between a core and nothing.
  A file that already has the right stamp (a restart that restores what is published) is
  not touched at all.
- With ``expiry`` (``--relay-ctrl-expiry``, what ``RELAY_CTRL_EXPIRY`` is set to, at least
  ``--expire``) a renewal restamps only a file whose stamp is more than ``expiry - expire``
  older than the login: relay-ctrl-check then still allows until ``stamp + expiry >=
  last login + expire``, the grant's own end, and relaywatch removes the file at that end.
  The margin is the renewals it spares (a client polling every 5 minutes, ``--expire
  30m``, ``RELAY_CTRL_EXPIRY=2400``: one login in three restamps); the price is that a file left
  behind by a relaywatch that stopped is honoured up to the margin longer (until
  ``withdraw-expired`` removes it). ``expire`` is each grant's own (``until - last``), so a
  reload that changes ``--expire`` is followed.
- Every operation is relative to a directory descriptor opened once and never follows a
  symlink: a planted link cannot make a root daemon create, stamp or delete files elsewhere.
- Files relaywatch did not write are left alone. A file counts as ours if this sink wrote
  it in this run, or if it has exactly the shape we write (a regular, empty, single-link
  file, mode 0644, owned by our user): that lets a restart with ``--state`` take back its
  own files. Anything else under a client's name (a link, a directory, a file with content
  or another owner) is reported once and never touched.
- ``drop`` removes only names this sink wrote in this run.
- Mode 0644: the checker runs as the SMTP user and must read the file.
- ``mapped``: tcpserver on a dual-stack socket reports an IPv4 client as ``::ffff:a.b.c.d``,
  so each IPv4 grant is also written under that name.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from collections.abc import Iterable

from logwatch.model import Grant
from logwatch.sinks import Health, SinkError, SinkOptions

log = logging.getLogger(__name__)

MODE = 0o644
#: ``st_mode`` of a file we write: a regular file, mode ``MODE``, no other bit.
_OUR_MODE = stat.S_IFREG | MODE
TEMP_PREFIX = ".relaywatch."
#: The characters of a normalised address; a name of others is never a file name here.
_ADDRESS_CHARS = frozenset("0123456789abcdef:.")


class RelayCtrlSink:
    """A relay-ctrl directory as a sink (``relayctrl:DIR``).

    Args:
        directory: the directory relay-ctrl-check reads (``RELAY_CTRL_DIR``'s ``allow``).
        mapped: also write ``::ffff:a.b.c.d`` for each IPv4 address.
        expiry: ``RELAY_CTRL_EXPIRY`` in seconds (see the module docstring), or None:
            every renewal restamps.

    Raises:
        SinkError: not retryable: the directory does not exist or is not a directory.
    """

    def __init__(self, directory: str, mapped: bool = False, expiry: float | None = None) -> None:
        self.spec = f"relayctrl:{directory}"
        self.directory = directory
        self.mapped = mapped
        self._dir = _open_directory(self.spec, directory)
        self._uid = os.geteuid()
        self.expiry = expiry
        #: Our files: name -> the stamp we gave it.
        self._ours: dict[str, float] = {}
        self._reported: set[str] = set()
        self._remove_stale_temporaries()

    # ----------------------------------------------------------------- Sink

    def put(self, grant: Grant) -> None:
        """Write (or restamp) the client's file with mtime = its last login.

        Raises:
            SinkError: retryable, if the file could not be written (disk full, ...).
        """
        slack = 0.0 if self.expiry is None else self.expiry - (grant.until - grant.last)
        for name in self._names(grant.ip):
            self._write(name, grant.last, slack)

    def drop(self, ip: str, *, early: bool = False) -> None:
        """Remove the client's file, if this sink wrote it.

        Raises:
            SinkError: retryable, if the file could not be removed.
        """
        for name in self._names(ip):
            if name not in self._ours:
                continue
            if self._foreign(name):
                self._ours.pop(name, None)
                continue
            try:
                os.unlink(name, dir_fd=self._dir)
            except FileNotFoundError:
                pass
            except OSError as error:
                raise SinkError(self.spec, f"cannot remove {name} ({error.strerror})",
                                retryable=True) from None
            self._ours.pop(name, None)

    def commit(self) -> None:
        """Nothing to do: each put and drop is already visible."""

    def health(self) -> Health:
        """Always ok: every failure is raised by the call that met it."""
        return Health()

    def keep_only(self, ips: Iterable[str]) -> int:
        """Remove every file of ours whose client is not among ``ips`` (normalised); return how
        many. For ``relaywatch withdraw-expired``, while no daemon runs: a file is ours by
        its shape (see the module docstring), so a file someone else put there stays.
        """
        keep: set[str] = set()
        for ip in ips:
            keep.update(self._names(ip))
        removed = 0
        for entry in os.scandir(self._dir):
            name = entry.name
            if name in keep or name.startswith(".") or not _ADDRESS_CHARS.issuperset(name):
                continue
            if self._foreign(name):
                continue
            try:
                os.unlink(name, dir_fd=self._dir)
            except FileNotFoundError:
                continue
            except OSError as error:
                raise SinkError(self.spec, f"cannot remove {name} ({error.strerror})", retryable=True) from None
            self._ours.pop(name, None)
            removed += 1
        return removed

    def close(self) -> None:
        """Release the directory; the files stay, so relay keeps working across a restart."""
        if self._dir >= 0:
            os.close(self._dir)
            self._dir = -1

    # ----------------------------------------------------------------- internals

    def _names(self, ip: str) -> list[str]:
        """The file names for ``ip`` (normalised by the matcher, not here again).

        Why a guard all the same: the name becomes a file name in a directory a root daemon
        writes, so a name that is not made of an address's characters (``..``, ``/``) is
        refused rather than trusted.
        """
        if not ip or ip[0] == "." or not _ADDRESS_CHARS.issuperset(ip):
            raise SinkError(self.spec, f"{ip!r} is not a normalised IP address",
                            retryable=False)
        if self.mapped and "." in ip:
            return [ip, f"::ffff:{ip}"]
        return [ip]

    def _write(self, name: str, mtime: float, slack: float = 0.0) -> None:
        """Make ``name`` say a login at ``mtime``; a stamp up to ``slack`` older will do."""
        stamp = self._ours.get(name)
        if stamp is not None:
            if 0.0 <= mtime - stamp <= slack:
                return  # relay-ctrl-check allows it as long as the grant lasts
            if self._restamp(name, mtime):
                self._ours[name] = mtime
                return
        else:  # not written in this run: a restart's first put (a million of them at an ISP)
            st = self._inspect(name)
            if st is not None:
                if st.st_mode != _OUR_MODE or st.st_size or st.st_nlink != 1 or st.st_uid != self._uid:
                    if self._not_ours(name, st):
                        return
                seen = st.st_mtime
                if abs(seen - mtime) < 0.001 or 0.0 <= mtime - seen <= slack:
                    self._ours[name] = seen  # what we published before a restart: nothing to write
                    return
                if self._restamp(name, mtime):
                    self._ours[name] = mtime
                    return
        temp = f"{TEMP_PREFIX}{name}.{secrets.token_hex(6)}"
        try:
            fd = os.open(
                temp,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                MODE,
                dir_fd=self._dir,
            )
            try:
                os.fchmod(fd, MODE)  # the umask must not make it unreadable to the checker
                os.utime(fd, (mtime, mtime))
            finally:
                os.close(fd)
            os.rename(temp, name, src_dir_fd=self._dir, dst_dir_fd=self._dir)
        except OSError as error:
            try:
                os.unlink(temp, dir_fd=self._dir)
            except OSError:
                pass
            raise SinkError(self.spec, f"cannot write {name} ({error.strerror})",
                            retryable=True) from None
        self._ours[name] = mtime

    def _restamp(self, name: str, mtime: float) -> bool:
        """Set the mtime of our file ``name`` (never through a link); False if it is gone."""
        try:
            os.utime(name, (mtime, mtime), dir_fd=self._dir, follow_symlinks=False)
        except FileNotFoundError:
            return False
        except OSError as error:
            raise SinkError(self.spec, f"cannot restamp {name} ({error.strerror})",
                            retryable=True) from None
        return True

    def _inspect(self, name: str) -> os.stat_result | None:
        """``name``'s own status (a link's, not its target's), or None if it does not exist."""
        try:
            return os.stat(name, dir_fd=self._dir, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise SinkError(self.spec, f"cannot inspect {name} ({error.strerror})",
                            retryable=True) from None

    def _foreign(self, name: str) -> bool:
        """True if ``name`` exists and is not shaped like a file we write (reported once)."""
        st = self._inspect(name)
        return st is not None and self._not_ours(name, st)

    def _not_ours(self, name: str, st: os.stat_result) -> bool:
        """True if ``st`` is not shaped like a file we write (reported once)."""
        if (
            stat.S_ISREG(st.st_mode)
            and st.st_size == 0
            and st.st_nlink == 1
            and st.st_uid == self._uid
            and stat.S_IMODE(st.st_mode) == MODE
        ):
            return False
        if name not in self._reported:
            self._reported.add(name)
            log.warning("%s: %s was not written by relaywatch (%s); leaving it alone",
                        self.spec, name, _describe(st))
        return True

    def _remove_stale_temporaries(self) -> None:
        """Remove our own temporary files left by a crash (and nothing else)."""
        for entry in os.scandir(self._dir):
            if not entry.name.startswith(TEMP_PREFIX):
                continue
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) and st.st_uid == self._uid and st.st_size == 0:
                try:
                    os.unlink(entry.name, dir_fd=self._dir)
                except OSError:
                    pass


def _open_directory(spec: str, directory: str) -> int:
    try:
        return os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as error:
        raise SinkError(
            spec, f"cannot open the directory ({error.strerror}); expected an "
            "existing directory, such as /var/spool/relay-ctrl/allow", retryable=False,
        ) from None


def _describe(st: os.stat_result) -> str:
    if stat.S_ISLNK(st.st_mode):
        return "a symbolic link"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_size:
        return f"{st.st_size} bytes of content"
    if st.st_nlink != 1:
        return f"{st.st_nlink} links"
    if st.st_uid != os.geteuid():
        return f"owned by uid {st.st_uid}"
    return f"mode {stat.S_IMODE(st.st_mode):04o}"


def check(kind: str, name: str, options: SinkOptions) -> None:
    """What opening ``relayctrl:DIR`` checks, without removing anything: the directory opens."""
    os.close(_open_directory(f"{kind}:{name}", name))


def open_relayctrl(kind: str, name: str, options: SinkOptions) -> RelayCtrlSink:
    """Registry entry for ``relayctrl:DIR``."""
    return RelayCtrlSink(name, mapped=options.relay_ctrl_mapped, expiry=options.relay_ctrl_expiry)
