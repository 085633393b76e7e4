"""Publish grants as a Postfix access(5) map that smtpd only ever reads whole.

``check_client_access TYPE:PATH`` looks the client address up; a grant is the line
``ADDRESS VALUE`` (``OK`` by default). How a change reaches smtpd, and why:

- The text is written to a temporary file in the map's directory and, for indexed types
  (hash, btree, lmdb, cdb), built with ``postmap`` under that temporary name; only then is
  the indexed file renamed over the live one. smtpd never reads a half-built map, and at its
  next connection it sees the old file's link count drop to zero and restarts with the new
  one. (Measured while building this: an in-place ``postmap`` of a hash map twice within one
  second left smtpd answering from the stale map.)
- ``texthash`` has no index: smtpd reads the text when it starts, so the file is renamed
  into place and ``postfix reload`` restarts the daemons (skipped if Postfix is not running;
  it will read the file when it starts).
- Rebuilds run on a worker thread and are coalesced: at most one in flight and one queued.
  A login storm costs two rebuilds, not one per login, and renewals that leave the set of
  addresses unchanged cost none.
- A failing postmap is logged with its stderr, reported by ``health`` (so the daemon's
  status says failing), and retried with backoff (1 s, doubling, at most 60 s); the last
  good map stays live, so a full disk withdraws nobody early and
  grants nobody new until it clears.
- At open, a type ``postconf -m`` does not list is refused, naming the Debian package that
  adds it, and a missing live map is created empty, so smtpd never fails on a missing table.
- No shell anywhere: every command is an argument list (``logwatch.postfix``).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from pathlib import Path

from logwatch import postfix
from logwatch.model import Grant
from logwatch.sinks import Health, SinkError, SinkOptions

log = logging.getLogger(__name__)

#: Map type -> suffix postmap adds for the indexed file (None: the text is the map).
SUFFIXES: dict[str, str | None] = {
    "hash": ".db",
    "btree": ".db",
    "lmdb": ".lmdb",
    "cdb": ".cdb",
    "texthash": None,
}

#: Seconds a texthash file is backdated (see ``_build``).
TEXT_AGE = 5

HEADER = (
    "# Written by relaywatch: clients allowed to relay after a POP/IMAP login.\n"
    "# Rebuilt whole on every change; edits here are lost.\n"
)


class BuildError(Exception):
    """One rebuild failed; the message is one line, with the command's stderr."""


class PostfixMapSink:
    """A Postfix lookup table as a sink (``hash:/etc/postfix/relay_clients`` and friends).

    Args:
        map_type: one of ``SUFFIXES``.
        path: the map's absolute path, as written in main.cf after ``TYPE:``.
        value: the access(5) action for each client (``--postfix-value``).
        config_dir: ``-c DIR`` for postmap, postconf and postfix (``--postfix-config``).
        retry_initial, retry_max: backoff after a failed rebuild, in seconds.

    Raises:
        SinkError: not retryable: a bad path or value, Postfix missing, a type this Postfix
            lacks, or a first build that fails.
    """

    def __init__(
        self,
        map_type: str,
        path: str,
        value: str = "OK",
        config_dir: str | None = None,
        *,
        retry_initial: float = 1.0,
        retry_max: float = 60.0,
    ) -> None:
        self.spec = f"{map_type}:{path}"
        self.map_type = map_type
        self.path = Path(path)
        self.value = value
        self.config_dir = config_dir
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        _check_settings(self.spec, map_type, self.path, value, config_dir)
        self._suffix = SUFFIXES[map_type]
        self.live = self.path if self._suffix is None else Path(f"{path}{self._suffix}")

        # Insertion order is login order: the text reads oldest grant first, and no sort
        # is paid per rebuild (sorting 100,000 addresses cost more than writing them).
        self._rows: dict[str, None] = {}
        self._dirty = True  # the first commit publishes, whatever the old map held
        self._cond = threading.Condition()
        self._queued: tuple[int, tuple[str, ...]] | None = None
        self._closing = False
        self._committed = 0  # generation of the latest commit
        self._published = 0  # generation of the map now live
        #: Seconds since the epoch of the last successful rebuild, or None.
        self.last_success: float | None = None
        #: One line describing the last failure, or "" once a rebuild succeeds again.
        self.last_error = ""
        #: Rebuilds run, successful or not (for tests and the benchmark).
        self.builds = 0

        if not self.live.exists():
            try:
                self._build(())
            except BuildError as error:
                raise SinkError(self.spec, str(error), retryable=False) from None
        self._worker = threading.Thread(target=self._run, name=f"relaywatch {self.spec}",
                                        daemon=True)
        self._worker.start()

    # ----------------------------------------------------------------- Sink

    def put(self, grant: Grant) -> None:
        """Add the client (its address normalised by the matcher); a renewal of a client
        already present changes nothing."""
        if grant.ip not in self._rows:
            self._rows[grant.ip] = None
            self._dirty = True

    def drop(self, ip: str) -> None:
        """Remove the client (visible after ``commit``)."""
        if ip in self._rows:
            del self._rows[ip]
            self._dirty = True

    def commit(self) -> None:
        """Queue a rebuild if the set changed; returns at once (the worker builds)."""
        if not self._dirty:
            return
        snapshot = tuple(self._rows)
        self._dirty = False
        with self._cond:
            if self._closing:
                raise SinkError(self.spec, "commit after close", retryable=False)
            self._committed += 1
            self._queued = (self._committed, snapshot)  # replaces any older queued one
            self._cond.notify_all()

    def health(self) -> Health:
        """The rebuild thread's last word: failing (with postmap's message) until a rebuild
        succeeds again, and when the live map last matched a commit.

        Why: ``commit`` only queues the rebuild, so a postmap that fails later would
        otherwise be invisible to the daemon's status while smtpd answers ``451 4.3.5``.
        """
        with self._cond:
            return Health(ok=not self.last_error, error=self.last_error, last_ok=self.last_success)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until the latest commit is live; False on timeout (e.g. while retrying)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._published >= self._committed, timeout)

    def close(self, timeout: float = 60.0) -> None:
        """Let a queued or running rebuild finish (up to ``timeout``), then stop the worker.

        A rebuild that is failing is not waited for: the last good map stays live.
        """
        with self._cond:
            self._cond.wait_for(
                lambda: self._published >= self._committed or bool(self.last_error), timeout
            )
            self._closing = True
            self._cond.notify_all()
        self._worker.join(timeout)

    @property
    def pending(self) -> bool:
        """True while a committed change is not yet live."""
        with self._cond:
            return self._published < self._committed

    # ----------------------------------------------------------------- worker

    def _run(self) -> None:
        delay = self.retry_initial
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queued is not None or self._closing)
                if self._closing:
                    return
                assert self._queued is not None
                generation, rows = self._queued
                self._queued = None
            started = time.monotonic()
            try:
                self._build(rows)
            except BuildError as error:
                message = (f"{self.spec}: {error}; retrying in {delay:g}s, "
                           "the last good map stays live")
                log.warning("%s", message)
                with self._cond:
                    self.last_error = message
                    if self._queued is None:
                        self._queued = (generation, rows)
                    self._cond.notify_all()
                    self._cond.wait_for(lambda: self._closing, delay)
                delay = min(delay * 2, self.retry_max)
                continue
            delay = self.retry_initial
            log.info("%s: rebuilt with %d client(s) in %.0f ms", self.spec, len(rows),
                     (time.monotonic() - started) * 1000)
            with self._cond:
                self._published = max(self._published, generation)
                self.last_error = ""
                self.last_success = time.time()
                self._cond.notify_all()

    def _build(self, rows: tuple[str, ...]) -> None:
        """Write the text, index it under a temporary name, and rename it live.

        Raises:
            BuildError: any step failed; temporary files are removed, the live map untouched.
        """
        self.builds += 1
        suffix = f" {self.value}\n"
        body = HEADER + suffix.join(rows) + suffix if rows else HEADER
        directory = self.path.parent
        try:
            fd, temp_name = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=directory)
        except OSError as error:
            raise BuildError(f"cannot create a file in {directory} ({error.strerror})") from None
        temp = Path(temp_name)
        built = None if self._suffix is None else Path(f"{temp_name}{self._suffix}")
        try:
            with os.fdopen(fd, "w", encoding="ascii") as out:
                out.write(body)
                out.flush()
                os.fchmod(out.fileno(), 0o644)
                if built is None:  # texthash: the text is the map, so it must be durable
                    os.fsync(out.fileno())
            if built is not None:
                result = postfix.run("postmap", [f"{self.map_type}:{temp}"], self.config_dir)
                if result.status != 0:
                    raise BuildError(
                        f"postmap failed (exit {result.status}): {result.stderr or 'no output'}")
                _fsync_file(built)
                os.replace(built, self.live)  # the switch smtpd sees
            else:
                # Postfix re-reads a text table whose mtime is within the last second,
                # sleeping a second each time, in case a writer is still at work; every
                # smtpd restarted by the reload would stall ~2 s. Ours is complete before
                # the rename, so it is stamped a few seconds old.
                past = time.time() - TEXT_AGE
                os.utime(temp, (past, past))
            os.replace(temp, self.path)
            _fsync_file(directory)
        except (OSError, postfix.PostfixError) as error:
            reason = error.strerror if isinstance(error, OSError) else str(error)
            raise BuildError(f"rebuild failed ({reason})") from None
        finally:
            for leftover in (temp, built):
                if leftover is not None:
                    try:
                        os.unlink(leftover)
                    except FileNotFoundError:
                        pass
        if self._suffix is None:
            self._reload()

    def _reload(self) -> None:
        """Make a running Postfix re-read a texthash map."""
        try:
            if not postfix.is_running(self.config_dir):
                return
            result = postfix.run("postfix", ["reload"], self.config_dir)
        except postfix.PostfixError as error:
            raise BuildError(str(error)) from None
        if result.status != 0:
            raise BuildError(
                f"postfix reload failed (exit {result.status}): {result.stderr or 'no output'}")


def _check_settings(spec: str, map_type: str, path: Path, value: str, config_dir: str | None) -> None:
    """Refuse what cannot work: a type, path, value or Postfix instance that is wrong.

    Raises:
        SinkError: not retryable, one line.
    """
    def refuse(message: str) -> SinkError:
        return SinkError(spec, message, retryable=False)

    if map_type not in SUFFIXES:
        raise refuse(f"type {map_type!r} cannot be rebuilt by relaywatch; expected "
                     f"one of {', '.join(SUFFIXES)}")
    if not path.is_absolute() or any(c in str(path) for c in " \t\n,"):
        raise refuse("expected an absolute path without spaces or commas, such as "
                     f"{map_type}:/etc/postfix/relay_clients")
    if not path.parent.is_dir():
        raise refuse(f"directory {path.parent} does not exist")
    if not value.strip() or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise refuse(f"--postfix-value {value!r}: expected an access(5) action "
                     "on one line, such as OK")
    if config_dir is not None and not Path(config_dir, "main.cf").is_file():
        raise refuse(f"--postfix-config {config_dir}: no main.cf there")
    try:
        types = postfix.map_types(config_dir)
        for command in ("postmap", "postfix"):
            postfix.find(command)
    except postfix.PostfixError as error:
        raise refuse(str(error)) from None
    if map_type not in types:
        raise refuse(f"this Postfix does not support type {map_type} (postconf -m); "
                     f"{postfix.missing_type_hint(map_type)}")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check(kind: str, name: str, options: SinkOptions) -> None:
    """What opening ``TYPE:PATH`` checks, without building or creating the map."""
    _check_settings(f"{kind}:{name}", kind, Path(name), options.postfix_value, options.postfix_config)


def open_postfix_map(kind: str, name: str, options: SinkOptions) -> PostfixMapSink:
    """Registry entry for ``TYPE:PATH``, TYPE one of hash, btree, lmdb, cdb, texthash."""
    return PostfixMapSink(kind, name, options.postfix_value, options.postfix_config)
