"""Follow the systemd journal (``--journal``): only entries whose trusted fields say Dovecot, resumable by cursor.

Why the journal rather than ``journalctl -f | relaywatch --log -``: a pipe forgets what was
logged while relaywatch was down, and text cannot say who wrote it. journald stamps every
entry with fields the sender cannot choose (``_UID``, ``_EXE``, ``_COMM``, ``_SYSTEMD_UNIT``:
from the socket's credentials and /proc), and every entry has a cursor to resume after.
``SYSLOG_IDENTIFIER`` and ``MESSAGE`` are the sender's own words: ``logger -t dovecot`` by
any local user writes them.

Which entries count (``trusted``): by default ``_SYSTEMD_UNIT=dovecot.service`` where
systemd is the init system (``/run/systemd/system`` exists), else the executable of
Dovecot's master or log process (``_EXE``) together with ``_UID=0`` (a user may run
/usr/lib/dovecot/log, but not as root). ``--journal-match FIELD=VALUE`` replaces that: the
same field repeated is an alternative, different fields must all hold (journalctl's rule).

An entry that looks like Dovecot's (its ``SYSLOG_IDENTIFIER`` is ``dovecot`` or a login
service's) but fails the trusted match is handed on in ``Batch.untrusted``: the daemon
reports it (a ``refused`` event, counted in the status) and never grants from it.

The line the matcher reads is built here, not taken from the sender: the entry's
``__REALTIME_TIMESTAMP`` (journald's receive time) as RFC 3339 UTC, ``dovecot: ``, then
``MESSAGE`` (for Dovecot's syslog output ``imap-login: Login: ...``), so the shipped pattern
sets and the strict prefix apply unchanged. A journal ``MESSAGE`` may hold any bytes,
newlines included (``logger`` passes them through): every control byte is written as
``#ooo`` (octal, as rsyslog escapes), so one entry is always one line and no text in it can
stand where a prefix or another line would.

Position: the cursor of the last entry handed on, saved through the file checkpoints (the
same ordering: state before checkpoint) as a ``LogCheckpoint`` for the pseudo-path
``JOURNAL_LOG`` whose one ``FilePosition`` carries the cursor in ``fingerprint``. A cursor
whose entry the journal has vacuumed is said once and reading starts at the oldest entry
inside ``--expire``; a first start reads back ``--expire`` too (seek by time).

Backend: python-systemd's reader (Debian ``python3-systemd``; PyPI ``systemd-python``). Measured
against ``journalctl -o json --follow`` as a child process (benchmarks/bench_journal.py, 200,000
Dovecot entries): the reader through its raw accessors reads 425,000 entries/s, journalctl's
JSON alone 29,000/s (journalctl spends 6.8 s formatting what the reader reads in 0.47 s).
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from logwatch import checkpoint as ckpt
from logwatch.checkpoint import FilePosition, LogCheckpoint
from logwatch.sources import Batch
from logwatch.sources.lines import DEFAULT_CAP

log = logging.getLogger("relaywatch.journal")

#: The pseudo-path under which the journal's cursor is checkpointed (and shown in ``Batch.log``).
JOURNAL_LOG = "/journal"
#: Where Dovecot's master and log process live (Debian, RHEL/Fedora, a source build).
DOVECOT_EXES = ("/usr/sbin/dovecot", "/usr/lib/dovecot/log", "/usr/libexec/dovecot/log",
                "/usr/local/sbin/dovecot", "/usr/local/libexec/dovecot/log")
#: Identifiers under which an entry imitates Dovecot (checked, reported, never trusted).
IMITATED = ("dovecot", "imap-login", "pop3-login", "submission-login", "managesieve-login")
#: Entries read per poll at most, so a catch-up hands on bounded batches.
BUDGET = 20000
#: The fields shown when an untrusted entry is reported.
_SHOWN = ("_UID", "_COMM", "_EXE", "_PID", "_SYSTEMD_UNIT")
_FIELD = re.compile(r"[A-Z0-9_]{1,64}")
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")


def _octal(m: re.Match[bytes]) -> bytes:
    return b"#%03o" % m[0][0]


def entry_line(realtime_us: int, message: bytes, cap: int = DEFAULT_CAP) -> str:
    """The log line the matcher reads for one trusted entry.

    Args:
        realtime_us: the entry's ``__REALTIME_TIMESTAMP`` (microseconds since the epoch).
        message: its ``MESSAGE``, raw bytes; cut at ``cap`` bytes.

    Returns:
        ``2026-06-10T12:00:00.123456+00:00 dovecot: MESSAGE``, every control byte (newline,
        CR, NUL, ESC, ...) of ``MESSAGE`` written as ``#ooo``.
    """
    if len(message) > cap:
        message = message[:cap]
    if _CONTROL.search(message):
        message = _CONTROL.sub(_octal, message)
    stamp = datetime.fromtimestamp(realtime_us // 1_000_000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{realtime_us % 1_000_000:06d}+00:00 dovecot: {message.decode('utf-8', 'replace')}"


def default_match(systemd_running: bool | None = None) -> dict[str, frozenset[str]]:
    """The trusted match when ``--journal-match`` is not given (see the module docstring)."""
    if systemd_running is None:
        systemd_running = os.path.isdir("/run/systemd/system")
    if systemd_running:
        return {"_SYSTEMD_UNIT": frozenset({"dovecot.service"})}
    return {"_EXE": frozenset(DOVECOT_EXES), "_UID": frozenset({"0"})}


def parse_matches(matches: Sequence[str]) -> dict[str, frozenset[str]]:
    """``FIELD=VALUE`` strings as field -> allowed values.

    Raises:
        ValueError: one line naming the bad item.
    """
    out: dict[str, set[str]] = {}
    for item in matches:
        field, eq, value = item.partition("=")
        if not eq or not _FIELD.fullmatch(field) or field[0].isdigit():
            raise ValueError(f"--journal-match: {item!r} is not FIELD=VALUE with FIELD in capitals, digits and _ "
                             "(such as _SYSTEMD_UNIT=dovecot.service)")
        if field in ("MESSAGE", "SYSLOG_IDENTIFIER") or not field.startswith("_"):
            raise ValueError(f"--journal-match: {field} is written by the sender, so it proves nothing; "
                             "match trusted fields (those starting with _, such as _SYSTEMD_UNIT, _EXE, _UID)")
        out.setdefault(field, set()).add(value)
    return {k: frozenset(v) for k, v in out.items()}


def describe(match: Mapping[str, frozenset[str]]) -> str:
    return " and ".join("|".join(f"{k}={v}" for v in sorted(vals)) for k, vals in match.items())


def journal_module() -> Any:
    """python-systemd's ``systemd.journal``.

    Raises:
        ImportError: with the fix (Debian python3-systemd, or pip install systemd-python).
    """
    try:
        return importlib.import_module("systemd.journal")
    except ImportError:
        raise ImportError("--journal needs python-systemd (Debian: apt install python3-systemd; "
                          "elsewhere pip install systemd-python, which builds against libsystemd-dev)") from None


class JournalSource:
    """The systemd journal as a ``LineSource``.

    Args:
        match: the trusted match (``default_match`` or ``parse_matches``).
        resume: the cursor saved last time (``load_cursor``), or None for a first start.
        look_back: seconds of journal to read at a first start or after a vacuumed cursor
            (``--expire``).
        now: seconds since the epoch at start.
        path: a journal directory to read instead of the system's (tests, benchmarks).
        cap: the most bytes of ``MESSAGE`` examined.
    """

    backend = "journal"

    def __init__(self, match: Mapping[str, frozenset[str]], resume: str | None, look_back: float,
                 now: float | None = None, *, path: str | None = None, cap: int = DEFAULT_CAP) -> None:
        journal = journal_module()
        if not match:
            raise ValueError("--journal-match: no trusted field to match")
        self.match = dict(match)
        self._fields = tuple((k.encode(), v) for k, v in self.match.items())
        self._cap = cap
        flags = 0 if path else journal.LOCAL_ONLY | journal.SYSTEM_ONLY
        self._reader = journal.Reader(flags=flags, path=path)
        self._reader.data_threshold = max(cap, 4096)
        # Trusted entries, or imitations (checked one by one below): journald filters, we judge.
        for field, values in self.match.items():
            for value in sorted(values):
                self._reader.add_match(f"{field}={value}")
        self._reader.add_disjunction()
        for ident in IMITATED:
            self._reader.add_match(f"SYSLOG_IDENTIFIER={ident}")
        self._cursor: str | None = resume
        self._closed = False
        self._untrusted = 0
        now = time.time() if now is None else now
        log.info("following the journal: trusted entries are %s", describe(self.match))
        self._position(resume, now - look_back, look_back)

    def _position(self, resume: str | None, since: float, look_back: float) -> None:
        r = self._reader
        when = datetime.fromtimestamp(since).astimezone().isoformat(timespec="seconds")
        if resume is not None:
            r.seek_cursor(resume)
            if r._next() and r.test_cursor(resume):
                log.info("journal: resuming after the saved cursor")
                return  # positioned on the last entry acted on: the next read is the one after
            log.warning("journal: the entry at the saved cursor is no longer in the journal (vacuumed, or "
                        "--journal-match changed); reading from %s, --expire (%gs) back", when, look_back)
        else:
            log.info("journal: first start, reading from %s, --expire (%gs) back", when, look_back)
        r.seek_realtime(int(max(0.0, since) * 1_000_000))

    @property
    def finished(self) -> bool:
        return False

    def poll(self, timeout: float) -> list[Batch]:
        if self._closed:
            return []
        self._reader.process()  # take in new and removed journal files (rotation, vacuum)
        batch = self._read()
        if batch is None and timeout > 0:
            self._reader.wait(timeout)
            batch = self._read()
        return [batch] if batch is not None else []

    def _read(self) -> Batch | None:
        r = self._reader
        get = r._get
        lines: list[str] = []
        untrusted: list[tuple[str, str]] = []
        n = 0
        while n < BUDGET and r._next():
            n += 1
            try:
                message = get("MESSAGE")
            except KeyError:
                continue
            if not isinstance(message, bytes):
                message = str(message).encode()
            line = entry_line(r._get_realtime(), message, self._cap)
            if self._trusted(get):
                lines.append(line)
            else:
                self._untrusted += 1
                untrusted.append((line, self._who(get)))
        if n == 0:
            return None
        self._cursor = r._get_cursor()
        return Batch(JOURNAL_LOG, tuple(lines), None, self._checkpoint(), tuple(untrusted))

    def _trusted(self, get: Any) -> bool:
        for field, values in self.match.items():
            try:
                value = get(field)
            except KeyError:
                return False
            if (value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)) not in values:
                return False
        return True

    @staticmethod
    def _who(get: Any) -> str:
        said = []
        for field in _SHOWN:
            try:
                value = get(field)
            except KeyError:
                continue
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            said.append(f"{field}={text[:80]}")
        return "untrusted journal entry (" + (", ".join(said) or "no trusted fields") + ")"

    def _checkpoint(self) -> LogCheckpoint | None:
        if self._cursor is None:
            return None
        return LogCheckpoint(JOURNAL_LOG, (FilePosition(0, 0, 0, self._cursor),))

    def checkpoints(self) -> list[LogCheckpoint]:
        cp = self._checkpoint()
        return [cp] if cp is not None else []

    def fileno(self) -> int:
        """The descriptor that becomes readable when the journal changes (``both.Both`` waits on it)."""
        return int(self._reader.fileno())

    @property
    def untrusted(self) -> int:
        """Entries that imitated Dovecot and failed the trusted match, so far."""
        return self._untrusted

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._reader.close()


def load_cursor(state_dir: str | os.PathLike[str] | None) -> str | None:
    """The journal cursor saved in ``state_dir``, or None (none, or unusable: said by ``checkpoint``)."""
    if state_dir is None:
        return None
    cp = ckpt.load(state_dir, JOURNAL_LOG)
    if cp is None or len(cp.files) != 1 or not cp.files[0].fingerprint.startswith("s="):
        return None
    return cp.files[0].fingerprint


def open_journal(matches: Sequence[str], state_dir: str | os.PathLike[str] | None, look_back: float,
                 now: float | None = None) -> JournalSource:
    """The source for ``--journal`` (with ``--journal-match`` items, or the default match).

    Raises:
        ValueError: a bad ``--journal-match``.
        ImportError: python-systemd is missing.
    """
    match = parse_matches(matches) if matches else default_match()
    return JournalSource(match, load_cursor(state_dir), look_back, now)
