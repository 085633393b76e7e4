"""The only place the parts meet: follow the log, match, grant, publish, expire, persist.

One thread runs the loop (the Postfix sink rebuilds in a thread of its own)::

    batch of lines --match--> LoginEvent --ledger.grant--> Changes --> every sink, commit
    timer (next expiry, at least once a second) --ledger.expire--> Changes --> sinks
    then, at most once a second: the state (write-ahead log synced, or the state file
    rewritten, see ``state.rewrite_due``), then log checkpoints

The order is the guarantee: every grant is in the state's write-ahead log before a sink
sees it, and the state is durable before the checkpoints, so after a SIGKILL or a power
cut a line is read twice (a harmless renewal) rather than a grant lost. A sink that fails
keeps its backlog and is retried with backoff; the ledger never forgets a grant because a
sink is down.
"""

from __future__ import annotations

import logging
import os
import signal
import stat
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from logwatch import catalog, checkpoint, notify, postfix, state, timestamps
from logwatch.config import BY_NAME, Settings
from logwatch.display import printable
from logwatch.durations import format_duration
from logwatch.ledger import Ledger
from logwatch.matcher import Matcher
from logwatch.model import DROP, Change, LoginEvent
from logwatch.reporter import Reporter
from logwatch.sinks import Sink, SinkError, SinkOptions, apply, open_sink
from logwatch.sources import LineSource
from logwatch.sources.tail import open_source
from logwatch.status import KINDS, Publisher, directory_of, hits_document

log = logging.getLogger("relaywatch")

#: Seconds between saves of the state and the checkpoints, at most.
SAVE_EVERY = 1.0
#: Longest wait in the loop: signals and expiry are looked at least this often.
TICK = 1.0
#: Retry delays for a failing sink, doubling up to the maximum.
RETRY_MIN, RETRY_MAX = 1.0, 60.0


class StartError(Exception):
    """relaywatch cannot start as configured; ``str()`` is the one line for the operator."""


@dataclass
class Outlet:
    """A sink with the changes it still owes, retried with backoff when it fails.

    Why a backlog and not a retry loop: a Postfix map that cannot be rebuilt must not stop
    the relay-ctrl directory, the expiry timer or the log from moving on. Every sink
    operation is idempotent (put rewrites, drop of a missing entry is nothing), so the
    backlog can be re-sent whole.
    """

    spec: str
    sink: Sink
    backlog: list[Change] = field(default_factory=list)
    retry_at: float = 0.0
    delay: float = RETRY_MIN
    last_ok: float | None = None
    failing: str = ""

    def send(self, changes: Sequence[Change], now: float, report: Reporter) -> None:
        self.backlog.extend(changes)
        if not self.backlog or now < self.retry_at:
            return
        try:
            apply(self.sink, self.backlog)
            self.sink.commit()
        except SinkError as exc:
            self.failing = str(exc)
            self.retry_at = now + self.delay
            report.say(f"sink {self.spec}", logging.ERROR, "%s; %d change(s) kept, retrying in %s",
                       exc, len(self.backlog), format_duration(self.delay), now=now)
            self.delay = min(self.delay * 2, RETRY_MAX)
            return
        if self.failing:
            log.info("%s: working again; %d change(s) published", self.spec, len(self.backlog))
        self.backlog.clear()
        self.failing = ""
        self.delay = RETRY_MIN
        self.last_ok = now


class Daemon:
    """``relaywatch run``: build every part from ``settings``, then loop until told to stop.

    Args:
        settings: validated settings.
        reload_settings: called on SIGHUP to read the settings again (None: reload only the
            pattern sets). May raise; the daemon then keeps running on the old ones.
        clock: seconds since the epoch; tests pass their own.
    """

    def __init__(self, settings: Settings, reload_settings: Callable[[], Settings] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self._reload_settings = reload_settings
        self._clock = clock
        self._stop = False
        self._reload = False
        self._report = Reporter(log)
        self.matcher = self._matcher(settings)
        self.ledger = self._ledger(settings)
        self.outlets: list[Outlet] = []
        self.source: LineSource | None = None
        self._state_dirty = False
        self._saved_at = 0.0
        #: Grants changed since the state file was last written whole, and what the
        #: write-ahead log holds since then (see ``state.rewrite_due``).
        self._unwritten = False
        self._rewritten_at = clock()
        self._wal_bytes = 0
        self._wal_unsynced = False
        self._wal_failed = False
        self.started = clock()
        self.counts: Counter[str] = Counter()
        self.hits: Counter[tuple[str, str]] = Counter()
        self.publisher: Publisher | None = None
        self.gate: Any = None
        #: Logins waiting for their DNSBL decision, by address.
        self._parked: dict[str, list[LoginEvent]] = {}
        #: Positions read past but not saved yet (held back while a login is parked).
        self._positions_owed = False

    # ------------------------------------------------------------------ start

    @staticmethod
    def _matcher(s: Settings) -> Matcher:
        try:
            return Matcher(catalog.select(s.pattern_set, s.pattern_dir), services=s.service)
        except ValueError as exc:
            raise StartError(str(exc)) from None

    @staticmethod
    def _ledger(s: Settings) -> Ledger:
        try:
            never = postfix.never_list(s.never, s.postfix_config)
            return Ledger(s.expire, never, s.max_entries)
        except (ValueError, postfix.PostfixError) as exc:
            raise StartError(f"--never: {exc}" if "--never" not in str(exc) else str(exc)) from None

    def start(self) -> None:
        """Open the sinks, restore the state, publish it, and open the logs.

        Raises:
            StartError: one line naming what cannot work (a log that cannot be read, a sink
                directory that is missing or not writable, a map type postmap lacks).
        """
        s = self.settings
        self._check_logs(s.log)
        options = SinkOptions(postfix_value=s.postfix_value, postfix_config=s.postfix_config,
                              relay_ctrl_mapped=s.relay_ctrl_mapped)
        specs = ([f"relayctrl:{s.relay_ctrl_dir}"] if s.relay_ctrl_dir else []) + list(s.postfix_map)
        for spec in specs:
            try:
                self.outlets.append(Outlet(spec, open_sink(spec, options)))
            except SinkError as exc:
                self.close_sinks()
                raise StartError(str(exc)) from None
        now = self._clock()
        restored: tuple[Change, ...] = ()
        if s.state:
            self.publisher = Publisher(directory_of(s.state))
            restored, warning = state.restore(s.state, self.ledger, now)
            if warning:
                log.warning("%s", warning)
            if restored:
                log.info("restored %d grant(s) from %s", len(restored), s.state)
            try:  # a log left by a crash is folded into the state file within a minute
                self._wal_bytes = state.wal_path(s.state).stat().st_size
            except OSError:
                self._wal_bytes = 0
            self._unwritten = self._wal_bytes > 0
            if not Path(s.state).exists():
                self._rewritten_at = float("-inf")  # a first start writes it with the first grant
        for outlet in self.outlets:
            outlet.send(restored, now, self._report)
            if outlet.failing:
                log.warning("%s is not usable yet; relaywatch goes on and retries", outlet.spec)
        sets = ", ".join(p.name for p in self.matcher.sets)
        log.info("pattern sets: %s; services: %s", sets, ", ".join(sorted(self.matcher.services)))
        log.info("sinks: %s; expire %s; never %s", ", ".join(o.spec for o in self.outlets),
                 format_duration(self.ledger.expire_after), self.ledger.never)
        if s.dnsbl:
            from logwatch.dnsbl import Gate  # dnspython only when the gate is on

            self.gate = Gate(s.dnsbl, s.resolver, timeout=1.0, fail_closed=s.dnsbl_fail == "closed")
            log.info("DNSBL gate: %s (a timeout fails %s)", ", ".join(s.dnsbl), s.dnsbl_fail)
        state_dir = str(Path(s.state).resolve().parent) if s.state else None
        if state_dir is None:
            log.warning("no --state: a restart forgets every grant and where the logs were read up to")
        self.source = open_source([os.path.abspath(p) if p != "-" else p for p in s.log], state_dir)
        notify.notify("READY=1", f"STATUS=following {', '.join(s.log)}")

    def _check_logs(self, logs: Sequence[str]) -> None:
        for path in logs:
            if path == "-":
                continue
            parent = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(parent):
                raise StartError(f"--log {path}: its directory {parent} does not exist")
            try:
                st = os.stat(path)
            except FileNotFoundError:
                log.warning("--log %s does not exist yet; relaywatch will read it from its start when it appears", path)
                continue
            except OSError as exc:
                raise StartError(f"--log {path}: cannot read: {exc.strerror}") from None
            if not os.access(path, os.R_OK):
                raise StartError(f"--log {path}: cannot read: permission denied")
            if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                log.warning("--log %s is writable by users other than its owner: they could write "
                            "lines that look like Dovecot's and open the relay (see README, trust of the log)", path)

    # ------------------------------------------------------------------- loop

    def request_stop(self, *_: Any) -> None:
        self._stop = True

    def request_reload(self, *_: Any) -> None:
        self._reload = True

    def install_signals(self) -> None:
        """SIGTERM and SIGINT stop (after flushing), SIGHUP reloads."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGHUP, self.request_reload)

    def run(self) -> int:
        """Loop until stopped or standard input ends; flush everything; return 0."""
        assert self.source is not None, "start() first"
        try:
            while not self._stop and not self.source.finished:
                if self._reload:
                    self._reload = False
                    self.reload()
                self.step(self._timeout())
        finally:
            self.shutdown()
        return 0

    def _timeout(self) -> float:
        due = self.ledger.next_expiry()
        wait = TICK if due is None else min(TICK, max(0.0, due - self._clock()))
        if self._parked:
            wait = min(wait, 0.02)  # a DNSBL decision is due at most a second after the login
        if any(o.backlog for o in self.outlets):
            wait = min(wait, max(0.0, min(o.retry_at for o in self.outlets if o.backlog) - self._clock()))
        return wait

    def step(self, timeout: float) -> None:
        """One turn: read what is there (waiting up to ``timeout``), act, expire, persist."""
        assert self.source is not None
        batches = self.source.poll(timeout)
        now = self._clock()
        changes: list[Change] = []
        moved = bool(batches)
        for batch in batches:
            for line in batch.lines:
                try:
                    changes.extend(self.handle(line, now))
                except Exception as exc:  # a bug must not turn one odd line into a crash loop
                    self._report.say("line", logging.ERROR, "internal error on a log line, skipped (please "
                                     "report it with the line): %s: %s: %r", type(exc).__name__, exc,
                                     line[:300], now=now)
        if self.gate is not None:
            for decision in self.gate.ready(now):
                for event in self._parked.pop(decision.ip, []):
                    changes.extend(self._decide(event, decision, now))
        changes.extend(self.ledger.expire(now))
        self.publish(changes, now)
        if self.matcher.timeouts:
            self._report.say("timeouts", logging.WARNING, "a pattern set of yours ran out of time on %d line(s); "
                             "those lines were left to the other sets", self.matcher.timeouts, now=now)
            self.matcher.timeouts = 0
        if changes:
            self._state_dirty = self._unwritten = True
        self._positions_owed |= moved
        rewrite_owed = self._unwritten and now - self._rewritten_at >= state.REWRITE_EVERY
        if (self._state_dirty or self._positions_owed or rewrite_owed) and now - self._saved_at >= SAVE_EVERY:
            self.save(now)

    def handle(self, line: str, now: float) -> tuple[Change, ...]:
        """Match one line; for a login, return what the ledger says the sinks must do."""
        verdict = self.matcher.match(line)
        if verdict.result == "nomatch":
            return ()
        self.hits[verdict.pattern_set or "", verdict.pattern or ""] += 1
        if verdict.result == "ignored":
            log.debug("ignored: %s/%s %s", verdict.pattern_set, verdict.pattern, verdict.why)
            self._event("ignored", now, "", verdict.user or "", verdict.service or "",
                        f"{verdict.pattern_set}/{verdict.pattern}: {verdict.why}")
            return ()
        assert verdict.ip is not None and verdict.service is not None
        moment = timestamps.parse(verdict.stamp, datetime.fromtimestamp(now).astimezone()) if verdict.stamp else None
        when = now if moment is None else min(moment.timestamp(), now)
        event = LoginEvent(verdict.ip, verdict.user or "", verdict.service, when,
                           verdict.pattern_set or "", verdict.pattern or "")
        if self.gate is not None and self.ledger.refusal(event, now) is None:
            decision = self.gate.submit(event.ip, now)
            if decision is None:  # looked up in the background; decided in a later step
                self._parked.setdefault(event.ip, []).append(event)
                return ()
            return self._decide(event, decision, now)
        return self._grant(event, now)

    def _decide(self, event: LoginEvent, decision: Any, now: float) -> tuple[Change, ...]:
        """Apply a DNSBL decision to one login."""
        if not decision.allowed:
            log.info("refused %s (%s, user=<%s>): %s", event.ip, event.service, printable(event.user), decision.reason)
            self._event("refused", now, event.ip, event.user, event.service, decision.reason)
            return ()
        if decision.reason:
            log.debug("DNSBL: %s: %s", event.ip, decision.reason)
        return self._grant(event, now)

    def _grant(self, event: LoginEvent, now: float) -> tuple[Change, ...]:
        changes = self.ledger.grant(event, now)
        if not changes:
            why = self.ledger.refusal(event, now)
            if why:
                log.info("refused %s (%s, user=<%s>): %s", event.ip, event.service, printable(event.user), why)
                self._event("refused", now, event.ip, event.user, event.service, why)
        return changes

    def publish(self, changes: Sequence[Change], now: float) -> None:
        """Send ``changes`` to every sink (and any backlog due for a retry); log each one.

        The grants go to the state's write-ahead log first (``state.append``), so a grant a
        sink has seen is never one the state has not."""
        if self.settings.state and changes:
            try:
                added = state.append(self.settings.state, [c.grant for c in changes if c.kind != DROP])
                self._wal_bytes += added
                self._wal_unsynced |= added > 0
            except OSError as exc:
                self._wal_failed = True  # so the next save rewrites the state file first
                self._report.say("wal", logging.WARNING, "cannot append to %s: %s",
                                 state.wal_path(self.settings.state), exc.strerror or exc, now=now)
        for change in changes:
            g = change.grant
            if change.warning:
                log.warning("%s", change.warning)
            if change.kind == DROP:
                verb = "withdrawn"
                log.info("withdrawn %s (%s, user=<%s>): %s", g.ip, g.service, printable(g.user), change.reason)
            else:
                verb = "authorised" if change.reason in ("login", "restored") else "refreshed"
                said = "restored" if change.reason == "restored" else verb
                log.info("%s %s (%s, user=<%s>) until %s", said, g.ip, g.service, printable(g.user),
                         datetime.fromtimestamp(g.until).astimezone().isoformat(timespec="seconds"))
            self._event(verb, now, g.ip, g.user, g.service, change.reason)
        for outlet in self.outlets:
            outlet.send(changes, now, self._report)

    def save(self, now: float, running: bool = True) -> None:
        """The state first (the ledger: the state file rewritten when ``state.rewrite_due``,
        else the write-ahead log synced), then the log checkpoints: see the module
        docstring. Then what viewers read: the events of this second and the status."""
        assert self.source is not None
        s = self.settings
        if s.state:
            try:
                if self._unwritten and state.rewrite_due(now, self._rewritten_at, self._wal_bytes,
                                                         self._wal_failed, stopping=not running):
                    state.save(s.state, self.ledger.grants(), now)
                    self._unwritten = self._wal_unsynced = self._wal_failed = False
                    self._rewritten_at, self._wal_bytes = now, 0
                elif self._wal_unsynced:
                    state.sync_wal(s.state)
                    self._wal_unsynced = False
                state_dir = str(Path(s.state).resolve().parent)
                # A login still waiting for its DNSBL decision is owed: do not move past it.
                if not self._parked:
                    for cp in self.source.checkpoints():
                        checkpoint.save(state_dir, cp)
                    self._positions_owed = False
            except OSError as exc:
                self._report.say("save", logging.ERROR, "cannot save %s: %s; retrying", s.state,
                                 exc.strerror or exc, now=now)
                return
        self._state_dirty = False
        self._saved_at = now
        if self.publisher is not None:
            try:
                self.publisher.flush()
                self.publisher.status(self.status_document(now, running))
            except OSError as exc:
                self.publisher.drop_pending(keep=10000)
                self._report.say("status", logging.WARNING, "cannot write the status for viewers: %s",
                                 exc.strerror or exc, now=now)

    def _event(self, kind: str, now: float, ip: str, user: str, service: str, reason: str) -> None:
        self.counts[kind] += 1
        if self.publisher is not None:
            self.publisher.event(kind, now, ip, user, service, reason)

    def status_document(self, now: float, running: bool) -> dict[str, Any]:
        """What ``status.json`` says (see ``status``)."""
        assert self.source is not None
        return {
            "pid": os.getpid(), "started": self.started, "updated": now, "running": running,
            "logs": [{"path": p, "backend": self.source.backend} for p in self.settings.log],
            "sinks": [{"spec": o.spec, "ok": not o.failing, "last_ok": o.last_ok, "error": o.failing,
                       "backlog": len(o.backlog)} for o in self.outlets],
            "pattern_sets": [p.name for p in self.matcher.sets],
            "hits": hits_document(self.hits.items()),
            "counts": {kind: self.counts[kind] for kind in KINDS},
            "expire": self.ledger.expire_after, "state": self.settings.state, "grants": len(self.ledger),
        }

    def reload(self) -> None:
        """SIGHUP: read the settings and pattern sets again; on any error keep the old ones."""
        try:
            new = self._reload_settings() if self._reload_settings else self.settings
            matcher = self._matcher(new)
            ledger_changed = (new.expire, new.never, new.max_entries) != (
                self.settings.expire, self.settings.never, self.settings.max_entries)
            if ledger_changed:
                fresh = self._ledger(new)
                fresh.restore(self.ledger.grants(), self._clock())
        except Exception as exc:  # a bad edit must never stop a running daemon
            log.error("reload refused, still running on the old settings: %s", exc)
            return
        fixed = [o.name for o in _RESTART_ONLY if getattr(new, o.attr) != getattr(self.settings, o.attr)]
        if fixed:
            log.warning("reload: %s change(s) only with a restart", ", ".join(fixed))
        self.matcher = matcher
        self.settings = new
        logging.getLogger().setLevel(new.log_level.upper())
        if ledger_changed:
            # A grant the new policy does not keep (now on the never-list, past the new cap
            # or the new expiry) must leave the sinks too, not only the ledger.
            now = self._clock()
            gone = [Change(DROP, g, "reload") for g in self.ledger.grants() if g.ip not in fresh]
            self.ledger = fresh
            self.publish(gone, now)
            self._state_dirty = self._unwritten = True
        log.info("reloaded: pattern sets %s", ", ".join(p.name for p in matcher.sets))

    def shutdown(self) -> None:
        """Publish what is owed, save the state and the checkpoints, close everything."""
        notify.notify("STOPPING=1")
        now = self._clock()
        if self.source is not None:
            self.source.close()
        if self.gate is not None:
            self.gate.close()
        for outlet in self.outlets:
            outlet.retry_at = 0.0
            outlet.send((), now, self._report)
        self._state_dirty = True
        if self.source is not None:
            self.save(now, running=False)
        self.close_sinks()
        log.info("stopped; %d client(s) authorised", len(self.ledger))

    def close_sinks(self) -> None:
        for outlet in self.outlets:
            try:
                outlet.sink.close()
            except SinkError as exc:
                log.error("%s", exc)


#: Settings a SIGHUP cannot change: they are files opened at start.
_RESTART_ONLY = tuple(BY_NAME[name] for name in (
    "log", "state", "relay-ctrl-dir", "relay-ctrl-mapped", "postfix-map", "postfix-value", "postfix-config"))


def configure_logging(level: str) -> None:
    """Log to standard error; under systemd, with the priority prefixes journald reads.

    Why: journald stamps each line itself; elsewhere a timestamp is what an operator needs.
    """
    handler = logging.StreamHandler()
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s relaywatch %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class _JournalFormatter(logging.Formatter):
    _PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}

    def format(self, record: logging.LogRecord) -> str:
        return f"<{self._PRIORITY.get(record.levelno, 6)}>{super().format(record)}"
