"""Publish grants as a Postfix access(5) map that smtpd never reads half-written.

``check_client_access TYPE:PATH`` looks the client address up; a grant is the line
``ADDRESS VALUE`` (``OK`` by default). How a change reaches smtpd, and why:

- **In place, by batches** (hash, btree, lmdb), so the cost follows the changes, not the
  live set. lmdb is written in the live file, each batch as **one LMDB transaction**
  through liblmdb (``sinks/lmdbfile.py``: the C library Postfix itself uses, via ctypes),
  under the exclusive fcntl lock Postfix's readers respect; readers see the whole batch
  or none of it, and Postfix treats lmdb as multi-writer (smtpd sees it at its next
  lookup, no restart). One commit, one sync: about 3 ms for 100 additions and 100
  withdrawals at 100,000 or 400,000 live, against 56 to 100 ms through ``postmap -r -i``
  and ``postmap -d -``, which commit and sync each key on its own; they remain the
  fallback when liblmdb cannot be loaded (said once in the log). The lmdb file is never
  written through a symlink (refused: ``BuildError``); one missing or not LMDB, or a
  withdrawn key not in it, puts the map in doubt. hash and btree are updated by
  ``postmap -r -i`` and ``postmap -d -`` in a copy of the live ``.db`` that is then
  renamed over it. Why not in the live file: Berkeley DB readers keep pages in a private
  cache, and smtpd notices a change only between connections, by an mtime of one-second
  resolution; measured with the lab, a btree updated in place under smtpd made it die
  with "fatal: error reading ...db: Unknown error -30986", and the master then throttled
  every smtpd for a minute. The copy costs a memory-speed copy and an fsync (25 ms at
  400,000 entries), far below a rebuild. Never run ``postmap -i`` or ``-d`` on a live
  lmdb map while relaywatch runs: postmap takes no lock for lmdb, so no writer can keep
  out of its way (``lmdbfile``).
- **Whole** (today's mechanism, kept): the text is written to a temporary file, indexed
  by ``postmap`` under that name, and renamed over the live map. For cdb and texthash
  (no in-place update), when the map may be in doubt (a failed update, a text source
  changed behind our back), for a batch too large to be cheaper in place
  (``batch_limit``, ``BATCH_SHARE``), and once the changes since the last whole build pass
  ``rebuild_after`` or ``rebuild_every`` has passed: hash and lmdb files do not shrink on
  deletes, and the text accumulates withdrawn lines.
- **The text source** (PATH itself) is kept in step before the map is touched: new
  clients are appended, withdrawn ones blanked into a ``#`` comment of the same length, so
  a ``postmap TYPE:PATH`` run by hand builds exactly what is published, and the map is
  never older than its source (smtpd warns of that).
- **A restart** compares first: the first commit after open carries the whole ledger, and
  the sink reads what is already published (the text source, checked against the map
  with ``postmap -s``); only the difference is written, nothing at all when they agree.
- **Renewals** of a client already published change nothing Postfix sees: no postmap.
- Publishing runs on a worker thread and is coalesced: at most one run in flight, the
  commits made meanwhile merged into the next. Failures are logged with postmap's stderr,
  reported by ``health`` and retried with backoff (1 s, doubling, at most 60 s) by a whole
  rebuild; a failed copy or rebuild leaves the last good map live.
- ``texthash`` has no index: smtpd reads the text when it starts, so the file is renamed
  into place and ``postfix reload`` restarts the daemons (skipped if Postfix is not
  running; it will read the file when it starts).
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
from logwatch.sinks import Health, SinkError, SinkOptions, lmdbfile

log = logging.getLogger(__name__)

#: Map type -> suffix postmap adds for the indexed file (None: the text is the map).
SUFFIXES: dict[str, str | None] = {
    "hash": ".db",
    "btree": ".db",
    "lmdb": ".lmdb",
    "cdb": ".cdb",
    "texthash": None,
}

#: Types updated by batches rather than rebuilt: "live" in the live file, "copy" in a
#: copy of it renamed over the live one (see the module docstring for why).
IN_PLACE: dict[str, str] = {"lmdb": "live", "hash": "copy", "btree": "copy"}

#: Seconds a texthash file is backdated (see ``_build``).
TEXT_AGE = 5

#: Whole rebuild once this many changes (or the live set's size, if larger) were made in
#: place since the last one: the text then holds at most about twice the live lines, and
#: the rebuild costs under ~3 us per change made, against ~15 us (lmdb through liblmdb)
#: to ~0.3 ms (hash and btree: the copy; lmdb through postmap: a sync a key) each in place.
REBUILD_AFTER = 10_000

#: Whole rebuild at the first change after this many seconds, whatever the count: it
#: re-asserts the map against any edit made behind relaywatch's back, once an hour.
REBUILD_EVERY = 3600.0

#: A batch with more changes than this, or than 1/``BATCH_SHARE`` of the live set, is
#: rebuilt whole. Measured at 400,000 live (``benchmarks/bench_postmap_batch.py --batch``):
#: a rebuild costs ~1.1 us a live entry (415 to 550 ms); in place, lmdb through liblmdb
#: ~7 to 13 us a change (2,000 changes 17 ms, 20,000 254 ms, 100,000 659 ms) and hash
#: about 5 us beyond its copy (100,000 changes 510 ms), so they break even near 1/6 (lmdb)
#: and 1/4 (hash) of the live set: 1/10 keeps a margin. lmdb through postmap pays ~0.3 ms
#: a key (one transaction and sync each), so it breaks even near 1/200. Under 1,000
#: changes a rebuild's fixed cost (a postmap process, an fsync) is the larger anyway.
BATCH_LIMIT = 1_000
BATCH_SHARE = 10
#: ``BATCH_SHARE`` for lmdb when liblmdb cannot be loaded (batches through postmap).
BATCH_SHARE_POSTMAP = 200
#: Seconds between the end of one publication and the start of the next (``gap``).
GAP = 0.05

HEADER = (
    "# Written by relaywatch: clients allowed to relay after a POP/IMAP login.\n"
    "# Kept in step with the map: new clients appended, withdrawn ones blanked to '#';\n"
    "# rewritten whole now and then. Edits here are lost.\n"
)


class BuildError(Exception):
    """One publication failed; the message is one line, with the command's stderr."""


class InDoubt(BuildError):
    """The map did not hold what relaywatch published (``postmap -d`` found none of the
    keys, or the text source was changed by someone else): rebuild it whole, now."""


class PostfixMapSink:
    """A Postfix lookup table as a sink (``hash:/etc/postfix/relay_clients`` and friends).

    Args:
        map_type: one of ``SUFFIXES``.
        path: the map's absolute path, as written in main.cf after ``TYPE:``.
        value: the access(5) action for each client (``--postfix-value``).
        config_dir: ``-c DIR`` for postmap, postconf and postfix (``--postfix-config``).
        retry_initial, retry_max: backoff after a failed publication, in seconds.
        gap: the least time between the end of one publication and the start of the next,
            in seconds; the commits made meanwhile go into the next one. Why: a worker that
            publishes as soon as it can runs a postmap for every few logins at low rates
            (measured: hash 44 %, cdb 55 % of a core at 300 logins/s); 50 ms costs that
            much latency at most, far inside the 250 ms goal.
        rebuild_after, rebuild_every, batch_limit: when a type updated in place is rebuilt
            whole instead (``REBUILD_AFTER``, ``REBUILD_EVERY``, ``BATCH_LIMIT``).
        lmdb_library: the liblmdb that lmdb batches are written through
            (``lmdbfile.LIBRARY``); loaded by the worker at the first batch. If it cannot be
            loaded, batches go through ``postmap -r -i`` and ``postmap -d -`` (one
            transaction and one sync per key), said once in the log at INFO.

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
        gap: float = GAP,
        rebuild_after: int = REBUILD_AFTER,
        rebuild_every: float = REBUILD_EVERY,
        batch_limit: int = BATCH_LIMIT,
        lmdb_library: str = lmdbfile.LIBRARY,
    ) -> None:
        self.spec = f"{map_type}:{path}"
        self.map_type = map_type
        self.path = Path(path)
        self.value = value
        self.config_dir = config_dir
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.gap = gap
        self.rebuild_after = rebuild_after
        self.rebuild_every = rebuild_every
        self.batch_limit = batch_limit
        self.lmdb_library = lmdb_library
        _check_settings(self.spec, map_type, self.path, value, config_dir)
        self._suffix = SUFFIXES[map_type]
        self.live = self.path if self._suffix is None else Path(f"{path}{self._suffix}")
        self._line_end = f" {value}\n".encode("ascii")

        # The loop's side. Insertion order is login order: the text reads oldest grant
        # first, and no sort is paid per rebuild.
        self._rows: dict[str, None] = {}
        self._changes: dict[str, bool] = {}  # since the last commit: address -> present
        self._first = True  # the first commit carries the whole set, whatever was published

        # Shared with the worker, under _cond.
        self._cond = threading.Condition()
        self._queued: dict[str, bool] | None = None
        self._closing = False
        self._committed = 0  # generation of the latest commit
        self._published = 0  # generation of the map now live
        #: Seconds since the epoch of the last successful publication, or None.
        self.last_success: float | None = None
        self.last_took: float | None = None
        #: One line describing the last failure, or "" once a publication succeeds again.
        self.last_error = ""
        #: Whole rebuilds, batches applied in place (of them, written through liblmdb), and
        #: postmap runs (tests, benchmark).
        self.builds = 0
        self.updates = 0
        self.direct_updates = 0
        self.postmap_runs = 0

        # The worker's side: the wanted set, each address with its line's offset in the
        # text (None: not read yet), the text's size, and why the next run must be whole.
        self._table: dict[str, int] | None = None
        self._text_size = 0
        self._doubt = False
        self._since_rebuild = 0
        self._rebuilt_at = time.monotonic()
        # lmdb: liblmdb once loaded; None until the first batch tries, False if it failed.
        self._lmdb: lmdbfile.Library | None | bool = None
        self._lmdb_value = lmdbfile.postfix_value(value)

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
        already present changes nothing Postfix sees, so it costs nothing here either."""
        if grant.ip not in self._rows:
            self._rows[grant.ip] = None
            self._changes[grant.ip] = True

    def drop(self, ip: str, *, early: bool = False) -> None:
        """Remove the client (visible after ``commit``)."""
        if ip in self._rows:
            del self._rows[ip]
            self._changes[ip] = False

    def commit(self) -> None:
        """Hand the batch's changes to the worker if there are any; returns at once."""
        if not self._changes and not self._first:
            return
        changes, self._changes = self._changes, {}
        self._first = False
        with self._cond:
            if self._closing:
                raise SinkError(self.spec, "commit after close", retryable=False)
            self._committed += 1
            if self._queued is None:
                self._queued = changes
            else:
                self._queued.update(changes)  # merged: the last word on each address wins
            self._cond.notify_all()

    def health(self) -> Health:
        """The worker's last word: failing (with postmap's message) until a publication
        succeeds again, and when the live map last matched a commit.

        Why: ``commit`` only hands the work over, so a postmap that fails later would
        otherwise be invisible to the daemon's status while smtpd answers ``451 4.3.5``.
        """
        with self._cond:
            return Health(ok=not self.last_error, error=self.last_error, last_ok=self.last_success,
                          update_seconds=self.last_took)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until the latest commit is live; False on timeout (e.g. while retrying)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._published >= self._committed, timeout)

    def close(self, timeout: float = 60.0) -> None:
        """Let queued or running work finish (up to ``timeout``), then stop the worker.

        Work that is failing is not waited for: the last good map stays live.
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
                changes, self._queued = self._queued, None
                generation = self._committed
            started = time.monotonic()
            try:
                done = self._publish(changes)
            except InDoubt as error:
                log.warning("%s: %s; rebuilding it whole", self.spec, error)
                self._doubt = True
                with self._cond:
                    if self._queued is None:
                        self._queued = {}
                continue
            except BuildError as error:
                self._doubt = True
                message = (f"{self.spec}: {error}; retrying in {delay:g}s, "
                           "the last good map stays live")
                log.warning("%s", message)
                with self._cond:
                    self.last_error = message
                    if self._queued is None:
                        self._queued = {}  # run again: a whole rebuild, with what came since
                    self._cond.notify_all()
                    self._cond.wait_for(lambda: self._closing, delay)
                delay = min(delay * 2, self.retry_max)
                continue
            delay = self.retry_initial
            took = time.monotonic() - started
            if done:
                log.log(logging.INFO if done.startswith("rebuilt") else logging.DEBUG,
                        "%s: %s in %.0f ms", self.spec, done, took * 1000)
            with self._cond:
                self._published = max(self._published, generation)
                self.last_error = ""
                self.last_success = time.time()
                if done:
                    self.last_took = took
                self._cond.notify_all()  # flush() waiters: what they wait for is live
                if self.gap > 0:  # let commits gather; close() ends the wait at once
                    self._cond.wait_for(lambda: self._closing, self.gap)

    def _publish(self, changes: dict[str, bool]) -> str:
        """Make the map hold the wanted set after ``changes``: in place, whole, or not at all.

        Returns:
            What was done, for the log ("" if the map already held it).

        Raises:
            BuildError: a step failed (``InDoubt``: the map was not what we published).
        """
        table = self._table
        if table is None:  # the first commit since open: the whole wanted set
            wanted = [ip for ip, present in changes.items() if present]
            found = self._read_published()
            if found is None:
                self._table = dict.fromkeys(wanted, 0)
                return self._build_whole("the published map could not be compared")
            table, self._text_size = found
            self._table = table
            keep = set(wanted)
            puts = [ip for ip in wanted if ip not in table]
            drops = [ip for ip in table if ip not in keep]
        else:
            puts = [ip for ip, present in changes.items() if present and ip not in table]
            drops = [ip for ip, present in changes.items() if not present and ip in table]
        if not puts and not drops and not self._doubt:
            return ""
        count = len(puts) + len(drops)
        live = len(table) + len(puts) - len(drops)
        share = (BATCH_SHARE_POSTMAP if self.map_type == "lmdb" and self._library() is None
                 else BATCH_SHARE)
        why = ("in doubt" if self._doubt else
               "no in-place update for this type" if self.map_type not in IN_PLACE else
               f"a batch of {count} changes" if count > max(self.batch_limit, live // share) else
               "changes since the last rebuild" if self._since_rebuild + count
               > max(self.rebuild_after, live) else
               "periodic" if time.monotonic() - self._rebuilt_at > self.rebuild_every else "")
        if why:
            for ip in drops:
                del table[ip]
            table.update(dict.fromkeys(puts, 0))
            return self._build_whole(why)
        self._update(table, puts, drops)
        self._since_rebuild += count
        self.updates += 1
        return f"{len(puts)} added, {len(drops)} withdrawn in place"

    def _build_whole(self, why: str) -> str:
        assert self._table is not None
        self._build(tuple(self._table))
        return f"rebuilt with {len(self._table)} client(s) ({why})"

    def _update(self, table: dict[str, int], puts: list[str], drops: list[str]) -> None:
        """Apply one batch in place: the text source first, then the map.

        The text goes first so that the map is never older than its source, and a
        failure in between leaves the map in doubt (the caller rebuilds it whole).
        """
        # The table becomes the wanted set first, so that a failure below still leaves
        # the whole rebuild that follows it with every address it must hold.
        self._doubt = True  # until the whole batch is in
        end = self._line_end
        blanked = [(table.pop(ip), len(ip) + len(end)) for ip in drops]
        appended = []
        position = start = self._text_size
        for ip in puts:
            line = ip.encode("ascii") + end
            table[ip] = position
            position += len(line)
            appended.append(line)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as error:
            raise InDoubt(f"cannot open the text source ({error.strerror})") from None
        try:
            if os.fstat(fd).st_size != start:
                raise InDoubt("the text source was changed by someone else")
            for offset, length in blanked:
                os.pwrite(fd, b"#" + b" " * (length - 2), offset)
            if appended:
                os.pwrite(fd, b"".join(appended), start)
            self._text_size = position
        except OSError as error:
            raise BuildError(f"cannot update the text source ({error.strerror})") from None
        finally:
            os.close(fd)

        if IN_PLACE[self.map_type] == "live":
            library = self._library()
            if library is None:
                self._postmap_batch(self.path, puts, drops)
            else:
                self._write_live(library, puts, drops)
        else:
            self._update_copy(puts, drops)
        self._doubt = False

    def _library(self) -> lmdbfile.Library | None:
        """liblmdb, loaded at the first lmdb batch (on this worker thread); None if it
        cannot be, which is logged once."""
        if self._lmdb is None:
            try:
                self._lmdb = lmdbfile.Library(self.lmdb_library)
            except lmdbfile.Unavailable as error:
                log.info("%s: %s; batches go through postmap -r -i and postmap -d "
                         "(one transaction and one sync per key)", self.spec, error)
                self._lmdb = False
        return self._lmdb if isinstance(self._lmdb, lmdbfile.Library) else None

    def _write_live(self, library: lmdbfile.Library, puts: list[str], drops: list[str]) -> None:
        """lmdb: the batch into the live file as one LMDB transaction (``lmdbfile``).

        A withdrawn key that is not there means the map was not what we published:
        ``InDoubt`` (the batch itself is committed; the rebuild that follows replaces all).
        A file missing or not LMDB is in doubt too; one that is a symlink, or not a regular
        file, is refused (``BuildError``: reported, then rebuilt whole by rename).
        """
        value = self._lmdb_value
        try:
            written = lmdbfile.write_batch(
                library, self.live, [(lmdbfile.postfix_key(ip), value) for ip in puts],
                [lmdbfile.postfix_key(ip) for ip in drops])
        except lmdbfile.NotAMap as error:
            raise InDoubt(str(error)) from None
        except lmdbfile.LmdbError as error:
            raise BuildError(str(error)) from None
        self.direct_updates += 1
        if written.missing:
            raise InDoubt(f"{written.missing} of {len(drops)} withdrawn key(s) were not in "
                          f"{self.live}")

    def _update_copy(self, puts: list[str], drops: list[str]) -> None:
        """hash, btree: apply the batch to a copy of the live file, then rename it live."""
        assert self._suffix is not None
        directory = self.path.parent
        try:
            fd, base_name = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=directory)
            os.close(fd)
        except OSError as error:
            raise BuildError(f"cannot create a file in {directory} ({error.strerror})") from None
        base = Path(base_name)
        copy = Path(f"{base_name}{self._suffix}")
        try:
            try:
                _copy_file(self.live, copy)
            except OSError as error:
                raise BuildError(f"cannot copy {self.live} ({error.strerror})") from None
            self._postmap_batch(base, puts, drops)
            try:
                _fsync_file(copy)
                os.replace(copy, self.live)  # the switch smtpd sees
                _fsync_file(directory)
            except OSError as error:
                raise BuildError(f"update failed ({error.strerror})") from None
        finally:
            for leftover in (base, copy):
                try:
                    os.unlink(leftover)
                except FileNotFoundError:
                    pass

    def _postmap_batch(self, name: Path, puts: list[str], drops: list[str]) -> None:
        """``postmap -r -i`` the new clients and ``postmap -d -`` the withdrawn ones into
        ``TYPE:name``.

        ``-r``: a key already present takes our value instead of a warning (a restart with
        another ``--postfix-value``). ``-d -`` exits 1 when none of the keys was there,
        with nothing on stderr: then the map was not what we published (``InDoubt``).
        """
        target = f"{self.map_type}:{name}"
        if puts:
            lines = "".join(f"{ip} {self.value}\n" for ip in puts)
            self._postmap(["-r", "-i", target], lines)
        if drops:
            keys = "".join(f"{ip}\n" for ip in drops)
            result = self._postmap(["-d", "-", target], keys, check=False)
            if result.status == 1 and not result.stderr:
                raise InDoubt(f"postmap -d found none of {len(drops)} withdrawn key(s)")
            if result.status != 0:
                raise BuildError(
                    f"postmap failed (exit {result.status}): {result.stderr or 'no output'}")

    def _postmap(self, args: list[str], input: str | None = None,
                 check: bool = True) -> postfix.Result:
        self.postmap_runs += 1
        try:
            result = postfix.run("postmap", args, self.config_dir, input=input)
        except postfix.PostfixError as error:
            raise BuildError(str(error)) from None
        if check and result.status != 0:
            raise BuildError(
                f"postmap failed (exit {result.status}): {result.stderr or 'no output'}")
        return result

    def _read_published(self) -> tuple[dict[str, int], int] | None:
        """What the map publishes now, from its text source checked against the map itself.

        Returns:
            Each address with its line's offset in the text, and the text's size; None if
            there is no text, it holds anything relaywatch would not write (another value,
            a continued line, a key twice), or the map (``postmap -s``) holds other entries.
        """
        try:
            data = self.path.read_bytes()
        except OSError:
            return None
        table: dict[str, int] = {}
        value = self.value.strip()
        position = 0
        for line in data.splitlines(keepends=True):
            offset, position = position, position + len(line)
            text = line.decode("ascii", "replace").rstrip("\n")
            if not text.strip() or text.lstrip().startswith("#"):
                continue
            if text[0].isspace() or not line.endswith(b"\n"):
                return None
            key, _, rest = text.partition(" ")
            if rest.strip() != value or key in table:
                return None
            table[key] = offset
        if self._suffix is not None:
            # cdb cannot be listed: every key of the text is looked up instead, which
            # misses only entries the map has beyond the text (a crash between the two
            # renames of a rebuild); cdb is rebuilt whole at the next change anyway.
            keys = "".join(f"{key}\n" for key in table) if self.map_type == "cdb" else None
            try:
                if keys is None:
                    listed = self._postmap(["-s", self.spec])
                else:
                    listed = self._postmap(["-q", "-", self.spec], keys, check=bool(table))
            except BuildError:
                return None
            published = 0
            for row in listed.stdout.splitlines():  # "key<TAB>value"
                key, _, rest = row.partition("\t")
                if key not in table or rest.strip() != value:
                    return None
                published += 1
            if published != len(table):
                return None
        return table, len(data)

    def _build(self, rows: tuple[str, ...]) -> None:
        """Write the text, index it under a temporary name, and rename it live.

        Raises:
            BuildError: any step failed; temporary files are removed, the live map untouched.
        """
        self.builds += 1
        self._doubt = True
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
                self._postmap([f"{self.map_type}:{temp}"])
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
        except OSError as error:
            raise BuildError(f"rebuild failed ({error.strerror})") from None
        finally:
            for leftover in (temp, built):
                if leftover is not None:
                    try:
                        os.unlink(leftover)
                    except FileNotFoundError:
                        pass
        if self._suffix is None:
            self._reload()
        table: dict[str, int] = {}
        position = len(HEADER)
        width = len(suffix)
        for ip in rows:
            table[ip] = position
            position += len(ip) + width
        self._table = table
        self._text_size = position
        self._doubt = False
        self._since_rebuild = 0
        self._rebuilt_at = time.monotonic()

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
    if not value.strip() or any(ord(c) < 32 or ord(c) >= 127 for c in value):
        raise refuse(f"--postfix-value {value!r}: expected an access(5) action "
                     "on one line of ASCII, such as OK")
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


def _copy_file(source: Path, target: Path) -> None:
    """Copy ``source`` to a new file ``target`` (mode 0644), in the kernel where it can."""
    src = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                      0o644)
        try:
            os.fchmod(dst, 0o644)
            size = os.fstat(src).st_size
            copied = 0
            while copied < size:
                count = os.copy_file_range(src, dst, size - copied)
                if count == 0:
                    raise OSError(0, f"{source} shrank while being copied")
                copied += count
        finally:
            os.close(dst)
    finally:
        os.close(src)


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
