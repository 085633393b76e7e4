"""The only place the parts meet: the loop that follows the log, grants, publishes, expires, persists.

One thread runs the loop (the Postfix sink rebuilds and the DNSBL gate looks up in threads
of their own)::

    batch of lines --match--> Verdict --login_event--> LoginEvent --(gate)--ledger.grant--> Changes
    timer (next expiry, at least once a second) --ledger.expire--> Changes
    Changes --durability.record (FILE.wal)--> every outlet (sink, commit, retry)
    then, at most once a second: durability.persist (the state, then the log checkpoints),
    then the viewers' files (events, status.json)

The order is the guarantee (``durability``): every grant is in the write-ahead log before a
sink sees it, and the state is durable before the checkpoints, so after a SIGKILL or a
power cut a line is read twice (a harmless renewal) rather than a grant lost. A sink that
fails keeps its backlog in its outlet (``sinks.outlet``); the ledger never forgets a grant
because a sink is down. Each part is built from the settings by ``startup``, which
``relaywatch check-config`` runs too.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from logwatch import logsetup, metrics, notify, startup
from logwatch.admin import Administrator
from logwatch.brake import Brake
from logwatch.collector import Collector
from logwatch.config import BY_NAME, Settings
from logwatch.control import ControlError, ControlServer
from logwatch.display import printable
from logwatch.durability import Durability
from logwatch.durations import format_duration
from logwatch.ledger import Ledger
from logwatch.logins import line_time, login_event
from logwatch.matcher import SHUTDOWN, STARTUP, Matcher, Verdict
from logwatch.model import DROP, Change, LoginEvent
from logwatch.reporter import Reporter
from logwatch.sinks import Sink
from logwatch.sinks.background import BackgroundOutlet
from logwatch.sinks.outlet import Outlet
from logwatch.sources import LineSource
from logwatch.sources.tail import FirstStart, open_source
from logwatch.startup import StartError
from logwatch.statusrecord import DaemonStatus, LogStatus, LoopTimes, SinkStatus
from logwatch.viewers import Viewers

if TYPE_CHECKING:
    from logwatch.dnsbl import Decision, Gate

__all__ = ["Daemon", "StartError"]

log = logging.getLogger("relaywatch")

#: Seconds between saves of the state and the checkpoints, at most.
SAVE_EVERY = 1.0
#: Longest wait in the loop: signals and expiry are looked at least this often.
TICK = 1.0
#: Longest wait while a login waits for its DNSBL decision.
GATE_TICK = 0.02
#: Longest wait while the control channel is open: a request is answered within this.
CONTROL_TICK = 0.1
#: Seconds between two writes of the status (and ``--metrics``) while nothing else changes:
#: a viewer tells a hung daemon by the status's age (``faces.check``).
STATUS_EVERY = 5.0

#: Opens the line source for ``--log`` (tests pass a scripted one).
OpenSource = Callable[[Sequence[str], "str | None"], LineSource]


class Daemon:
    """``relaywatch run``: build every part from ``settings``, then loop until told to stop.

    Args:
        settings: validated settings.
        reload_settings: called on SIGHUP to read the settings again (None: reload only the
            pattern sets). May raise; the daemon then keeps running on the old ones.
        clock: seconds since the epoch; tests pass their own.
        sinks: sinks already open (tests); default: opened from the settings at ``start``.
        open_source: opens the logs (tests pass their own); default ``tail.open_source``, a
            file without a checkpoint read back ``--expire`` (``tail.FirstStart``).
        control: open the control channel beside ``--state`` (``control``; ``relaywatch run``
            does; in-process tests that crash a daemon and start another one do not).
    """

    def __init__(self, settings: Settings, reload_settings: Callable[[], Settings] | None = None,
                 clock: Callable[[], float] = time.time, *, sinks: Sequence[Sink] | None = None,
                 open_source: OpenSource | None = None, control: bool = False) -> None:
        self.settings = settings
        self._reload_settings = reload_settings
        self._clock = clock
        self._sinks = sinks
        self._open_source = open_source
        self._stop = self._reload = False
        self._report = Reporter(log)
        self.matcher = startup.matcher(settings)
        self.ledger = startup.ledger(settings)
        _follow_sessions(self.matcher, self.ledger, settings)
        #: With --sessions: Dovecot's log showed a logout without a session id (its
        #: mail_log_prefix lacks %{session}); said once.
        self._sessionless = False
        self.outlets: list[Outlet | BackgroundOutlet] = []
        self.source: LineSource | None = None
        self.gate: Gate | None = None
        self.started = clock()
        self.durability = Durability(settings.state, self._report, self.started)
        self.viewers = Viewers(self.durability.directory, self._report)
        #: Blocks, grants and revocations by hand, and the brake (``admin``); their channel.
        self.admin = Administrator(settings.state, Brake(settings.max_addresses_per_user))
        self._want_control = control and settings.state is not None
        self.control: ControlServer | None = None
        #: Refusals by reason (``metrics.reason_of``), for ``--metrics``.
        self.refusals: Counter[str] = Counter()
        self._status_at = float("-inf")
        #: Something for the state or the viewers happened since the last save.
        self._dirty = False
        #: Positions read past but not saved yet (held back while a login waits at the gate).
        self._positions_owed = False
        self._saved_at = float("-inf")
        #: The sinks' health as the viewers last read it: a change (a rebuild failing on
        #: its thread, or working again) is published even while the log is idle.
        self._told: tuple[SinkStatus, ...] = ()
        #: The most a login acted on since the last periodic status lagged behind its line's time.
        self._lag: float | None = None
        #: The longest steps since the last periodic status (``statusrecord.LoopTimes``).
        self._loop = LoopTimes()
        #: The cyclic garbage collector, kept off the loop's path (made at start).
        self.collector: Collector | None = None

    # ------------------------------------------------------------------ start

    def start(self) -> None:
        """Open the sinks, restore the state, publish it, open the logs, write the status.

        Raises:
            StartError: one line naming what cannot work (see ``startup``).
        """
        s = self.settings
        for warning in startup.check_logs(s.log):
            log.warning("%s", warning)
        startup.check_state(s.state)
        sinks = list(self._sinks) if self._sinks is not None else startup.open_sinks(s)
        # A sink that lost what it published gets the whole ledger (as it is then) again.
        # (``grants`` copies the ledger's values in one C call: safe from a background
        # outlet's thread while this one changes the ledger.)
        self.outlets = [_outlet(Outlet(sink, self._report, snapshot=lambda: self.ledger.grants()), self._clock)
                        for sink in sinks]
        try:
            self.gate = startup.gate(s)
        except StartError:
            self._close_outlets()
            raise
        now = self._clock()
        # A million grants, their Changes and the brake's index are millions of objects made
        # at once, none in a cycle: the cyclic collector would walk them again and again
        # while they are made (1.3 s of 3.4 at 1,000,000 grants, bench_state.py). Off until
        # the sinks have them, then what start-up made is frozen out of every later pass.
        collecting = gc.isenabled()
        gc.disable()
        try:
            restored = self.durability.restore(self.ledger, now)
            try:  # before anything is published: withdraw-expired knows a daemon runs (its lock)
                restored = self.admin.start(self.ledger, restored, now)
                self.control = ControlServer(s.state) if self._want_control and s.state else None
            except (ValueError, ControlError) as exc:
                self._close_outlets()
                raise StartError(str(exc)) from None
            for outlet in self.outlets:
                outlet.send(restored, now)
                if outlet.failing:
                    log.warning("%s is not usable yet; relaywatch goes on and retries", outlet.spec)
            del restored
        finally:
            if collecting:
                gc.enable()
            gc.freeze()
        self.collector = Collector()
        log.info("pattern sets: %s; services: %s", self.matcher.describe(), ", ".join(sorted(self.matcher.services)))
        log.info("sinks: %s; expire %s; never %s", ", ".join(o.spec for o in self.outlets),
                 format_duration(self.ledger.expire_after), self.ledger.never)
        if self.gate is not None:
            log.info("DNSBL gate: %s (a timeout fails %s)", ", ".join(s.dnsbl), s.dnsbl_fail)
        if self.ledger.following:
            blind = self.matcher.unfollowable()
            log.info("sessions: a client stays while its session is open, each at most %s%s",
                     format_duration(s.session_max),
                     f"; these sets cannot follow sessions (their logins expire {format_duration(s.expire)} "
                     f"after the last one): {', '.join(blind)}" if blind else "")
        if self.durability.directory is None:
            log.warning("no --state: a restart forgets every grant and where the logs were read up to")
        self.source = self._open_logs(now)
        self._told = self._health()
        self.viewers.publish(self.status(now, True), now)  # a viewer of an idle daemon sees it run
        notify.notify("READY=1", f"STATUS=following {', '.join(s.log)}")

    def _open_logs(self, now: float) -> LineSource:
        """The files (``--log``), the journal (``--journal``), or both as one source."""
        s = self.settings
        opener = self._open_source or partial(open_source, first_start=FirstStart(self.ledger.expire_after, now))
        files = opener([os.path.abspath(p) if p != "-" else p for p in s.log],
                       self.durability.directory) if s.log else None
        if not s.journal:
            assert files is not None
            return files
        from logwatch.sources import journal  # python-systemd only when --journal is given

        try:
            reader = journal.open_journal(s.journal_match, self.durability.directory, self.ledger.expire_after, now)
        except (ImportError, ValueError, OSError) as exc:
            if files is not None:
                files.close()
            raise StartError(f"--journal: {exc}") from None
        if files is None:
            return reader
        from logwatch.sources.both import Both
        from logwatch.sources.tail import Tail

        assert isinstance(files, Tail)
        return Both(files, reader)

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
                self.step(self.timeout())
        finally:
            self.shutdown()
        return 0

    def timeout(self) -> float:
        """How long the next step may wait for lines: until the next expiry or sink retry,
        at most ``TICK``, and at most ``GATE_TICK`` while a login waits at the gate."""
        now = self._clock()
        due = [self.ledger.next_expiry(), *(o.due() for o in self.outlets)]
        wait = min([TICK] + [max(0.0, d - now) for d in due if d is not None])
        return min(wait, GATE_TICK) if self.gate is not None and self.gate.holding else wait

    def step(self, timeout: float) -> None:
        """One turn: read what is there (waiting up to ``timeout``), act, expire, persist."""
        assert self.source is not None
        batches = self.source.poll(timeout if self.control is None else min(timeout, CONTROL_TICK))
        began = time.perf_counter()  # busy from here: the time waiting for lines is not a stall
        now = self._clock()
        changes: list[Change] = []
        lines = 0
        for batch in batches:
            for line, who in batch.untrusted:  # a journal entry that imitates Dovecot
                self._untrusted(line, who, now)
            lines += len(batch.lines)
            for line in batch.lines:
                try:
                    changes.extend(self.handle(line, now))
                except Exception as exc:  # a bug must not turn one odd line into a crash loop
                    self._report.say("line", logging.ERROR, "internal error on a log line, skipped (please "
                                     "report it with the line): %s: %s: %r", type(exc).__name__, exc,
                                     line[:300], now=now)
        read = time.perf_counter()
        if self.gate is not None:
            for event, decision in self.gate.released(now):
                changes.extend(self._decide(event, decision, now))
        changes.extend(self.ledger.expire(now))
        self.publish(changes, now)
        if self.control is not None:
            self._serve(now)
        if self.matcher.timeouts:
            self._report.say("timeouts", logging.WARNING, "a pattern set of yours ran out of time on %d line(s); "
                             "those lines were left to the other sets", self.matcher.timeouts, now=now)
            self.matcher.timeouts = 0
        self._dirty |= bool(changes)
        self._positions_owed |= bool(batches)
        if now - self._saved_at >= SAVE_EVERY and (self._dirty or self._positions_owed or self.durability.owed(now)
                                                   or self._told != self._health()):
            self.save(now)
        if now - self._status_at >= STATUS_EVERY:
            self._tell(now)
        if self.collector is not None:
            self.collector.tend()
        done = time.perf_counter()
        self._loop = self._loop.noted(done - began, lines, done - read)

    def _tell(self, now: float) -> None:
        """The status for viewers (even when idle) and ``--metrics``."""
        self._status_at = now
        record = self.status(now, True)
        self._lag = None  # the next record says the most since this one
        self._loop = LoopTimes(long_pauses=self._loop.long_pauses)
        if self.collector is not None:
            self.collector.longest = 0.0
        self.viewers.publish(record, now)
        if self.settings.metrics:
            try:
                metrics.write(self.settings.metrics, metrics.render(record, self.refusals))
            except OSError as exc:
                self._report.say("metrics", logging.WARNING, "cannot write --metrics %s: %s", self.settings.metrics,
                                 exc.strerror or exc, now=now)

    def handle(self, line: str, now: float) -> tuple[Change, ...]:
        """Match one line; for a login, return what the ledger says the sinks must do."""
        verdict = self.matcher.match(line)
        if verdict.result == "nomatch":
            return ()
        self.viewers.hit(verdict.pattern_set or "", verdict.pattern or "")
        if verdict.result == "logout":
            return self._logout(verdict, now)
        if verdict.result == "ignored":
            if verdict.pattern == STARTUP:  # the pattern sets follow Dovecot's version
                (log.warning if self.matcher.pinned else log.info)("%s", verdict.why)
            if verdict.pattern in (STARTUP, SHUTDOWN) and self.ledger.session_count():
                gone = self.ledger.end_all(_line_time(verdict, now), now, verdict.pattern or "")
                log.info("Dovecot %s: every open session ended", "started" if verdict.pattern == STARTUP else "stopped")
                return gone
            log.debug("ignored: %s/%s %s", verdict.pattern_set, verdict.pattern, verdict.why)
            self.viewers.ignored(now, verdict.user or "", verdict.service or "",
                                 lambda: f"{verdict.pattern_set}/{verdict.pattern}: {verdict.why}")
            return ()
        event = login_event(verdict, now)
        assert event is not None
        self._lag = max(self._lag or 0.0, now - event.when)
        if self.gate is not None and self.ledger.refusal(event, now) is None:
            decision = self.gate.admit(event, now)
            if decision is None:  # looked up in the background; released in a later step
                return ()
            return self._decide(event, decision, now)
        return self._grant(event, now)

    def _logout(self, verdict: Verdict, now: float) -> tuple[Change, ...]:
        """A mail process's logout (``--sessions``): end its session, if it is open."""
        if verdict.session:
            return self.ledger.end(verdict.session, _line_time(verdict, now), now)
        if not self._sessionless:
            self._sessionless = True
            log.warning("sessions cannot be followed: Dovecot logs its mail processes without the session "
                        "(%s/%s); every session is ended and logins expire %s after the last one; set "
                        "mail_log_prefix = \"%%s(%%u)<%%{pid}><%%{session}>: \" (2.3's default)",
                        verdict.pattern_set, verdict.pattern, format_duration(self.ledger.expire_after))
        return self.ledger.end_all(_line_time(verdict, now), now, "no-sessions")

    def _untrusted(self, line: str, who: str, now: float) -> None:
        """Report a journal entry that reads as a login but is not Dovecot's; never grant from it."""
        verdict = self.matcher.match(line)
        event = login_event(verdict, now)
        if event is not None:
            self._report.say("untrusted", logging.WARNING, "journal: %s imitates a Dovecot login "
                             "(%s, user=<%s>); refused", who, event.ip, printable(event.user), now=now)
            self._refused(event, who, now)

    def _decide(self, event: LoginEvent, decision: Decision, now: float) -> tuple[Change, ...]:
        """Apply a DNSBL decision to one login."""
        if not decision.allowed:
            self._refused(event, decision.reason, now)
            return ()
        if decision.reason:
            log.debug("DNSBL: %s: %s", event.ip, decision.reason)
        return self._grant(event, now)

    def _grant(self, event: LoginEvent, now: float) -> tuple[Change, ...]:
        held = self.admin.refusal(event, now)  # blocked by hand, or the brake
        if held is not None:
            if held[1]:  # said once per user and minute; counted always
                self._refused(event, held[0], now)
            else:
                self.viewers.counts["refused"] += 1
                self.refusals[metrics.reason_of(held[0])] += 1
            return ()
        changes = self.ledger.grant(event, now)
        self.admin.observe(changes)  # now, not at publish: the next login of this batch counts it
        if not changes:
            why = self.ledger.refusal(event, now)
            if why:
                self._refused(event, why, now)
        return changes

    def _refused(self, event: LoginEvent, why: str, now: float) -> None:
        log.info("refused %s (%s, user=<%s>): %s", event.ip, event.service, printable(event.user), why)
        self.viewers.event("refused", now, event.ip, event.user, event.service, why)
        self.refusals[metrics.reason_of(why)] += 1

    def publish(self, changes: Sequence[Change], now: float) -> None:
        """Record ``changes`` (and the sessions opened and ended since the last call) in the
        state, log each one, then send them to every outlet (with any backlog due for a retry)."""
        self.durability.record(changes, now, self.ledger.session_changes())  # before any sink sees them
        self.admin.observe(changes)
        for change in changes:
            g = change.grant
            if change.warning:
                log.warning("%s", change.warning)
            if change.kind == DROP:
                verb = "withdrawn"
                log.info("withdrawn %s (%s, user=<%s>): %s", g.ip, g.service, printable(g.user), change.reason)
            elif change.reason in ("renew", "connected"):  # counted, at debug level: an ISP has thousands a second
                self.viewers.renewal(now)
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("refreshed %s (%s, user=<%s>) until %s", g.ip, g.service, printable(g.user),
                              datetime.fromtimestamp(g.until).astimezone().isoformat(timespec="seconds"))
                continue
            else:
                verb = "authorised"
                said = "restored" if change.reason == "restored" else verb
                if change.reason in _SESSION_ENDS:
                    said = f"sessions ended ({change.reason}), authorised"
                log.info("%s %s (%s, user=<%s>) until %s", said, g.ip, g.service, printable(g.user),
                         datetime.fromtimestamp(g.until).astimezone().isoformat(timespec="seconds"))
            self.viewers.event(verb, now, g.ip, g.user, g.service, self._why(change))
        for outlet in self.outlets:
            outlet.send(changes, now)

    def _why(self, change: Change) -> str:
        """The reason an event gives (``--sessions``: why the address is still authorised)."""
        if change.kind == DROP:
            return change.reason
        if change.reason in _SESSION_ENDS:
            return (f"last session ended ({change.reason}): kept {format_duration(self.ledger.expire_after)} "
                    "after it")
        connected = self.ledger.open_sessions(change.grant.ip)
        if connected:
            return f"{change.reason}, connected ({connected} session{'' if connected == 1 else 's'})"
        return change.reason

    def _serve(self, now: float) -> None:
        """Answer the control channel's requests (``admin``): on this thread, so a change by
        hand is published like any other (write-ahead log, sinks, then checkpoints)."""
        assert self.control is not None
        for request in self.control.requests():
            uid = request.peer.uid
            reply, changes = self.admin.apply(request.body, uid, self.ledger, now)
            log.log(logging.INFO if reply.get("ok") else logging.WARNING, "control: uid %d (pid %d): %s: %s",
                    uid, request.peer.pid, printable(str(request.body.get("command"))), reply.get("message"))
            for kind, ip, user, reason in self.admin.done:
                self.viewers.event(kind, now, ip, user, "", reason)
            self.publish(changes, now)
            self._dirty = True
            request.answer(reply)

    def save(self, now: float, running: bool = True) -> None:
        """The state, then the log checkpoints (held back while a login waits at the gate),
        then what viewers read."""
        assert self.source is not None
        held = self.gate is not None and self.gate.holding
        try:
            self.durability.persist(now, self.ledger.grants, None if held else self.source.checkpoints(),
                                    stopping=not running)
        except OSError as exc:
            self._report.say("save", logging.ERROR, "cannot save %s: %s; retrying", self.settings.state,
                             exc.strerror or exc, now=now)
            return
        self._positions_owed = held
        self._dirty = False
        self._saved_at = now
        record = self.status(now, running)
        self._told = record.sinks
        self.viewers.publish(record, now)

    def status(self, now: float, running: bool) -> DaemonStatus:
        """What ``status.json`` says (see ``statusrecord``)."""
        hits, counts = self.viewers.tallies()
        backend = self.source.backend if self.source is not None else "?"
        return DaemonStatus(
            pid=os.getpid(), started=self.started, updated=now, running=running,
            logs=tuple(LogStatus(p, backend) for p in self.settings.log)
            + ((LogStatus("journal", "journal"),) if self.settings.journal else ()),
            sinks=self._health(),
            pattern_sets=tuple(p.name for p in self.matcher.sets), hits=hits, counts=counts,
            logins_last_minute=self.viewers.logins_last_minute(now),
            log_lag=None if self._lag is None else round(self._lag, 3),
            loop=replace(self._loop, gc=self.collector.longest if self.collector is not None else 0.0),
            expire=self.ledger.expire_after, state=self.settings.state, grants=len(self.ledger))

    def _health(self) -> tuple[SinkStatus, ...]:
        return tuple(o.health() for o in self.outlets)

    def reload(self) -> None:
        """SIGHUP: read the settings and pattern sets again; on any error keep the old ones."""
        try:
            new = self._reload_settings() if self._reload_settings else self.settings
            matcher = startup.matcher(new)
            matcher.read_sessions(self.matcher.sessions)  # --sessions changes with a restart only
            ledger_changed = (new.expire, new.never, new.max_entries) != (
                self.settings.expire, self.settings.never, self.settings.max_entries)
            if ledger_changed:
                fresh = startup.ledger(new)
                fresh.session_max = self.ledger.session_max
                fresh.restore(self.ledger.grants(), self._clock())
                fresh.restore_sessions(self.ledger.sessions(), self._clock())
                fresh.session_changes()  # the sessions it kept are in the state already
        except Exception as exc:  # a bad edit must never stop a running daemon
            log.error("reload refused, still running on the old settings: %s", exc)
            return
        fixed = [o.name for o in _RESTART_ONLY if getattr(new, o.attr) != getattr(self.settings, o.attr)]
        if fixed:
            log.warning("reload: %s change(s) only with a restart", ", ".join(fixed))
        if self.matcher.version is not None:
            matcher.follow(self.matcher.version)  # the Dovecot version read from the log stays known
        self.matcher = matcher
        self.settings = new
        self.admin.brake.limit = new.max_addresses_per_user
        logsetup.set_level(new.log_level)
        if ledger_changed:
            # A grant the new policy does not keep (now on the never-list, past the new cap
            # or the new expiry) must leave the sinks too, not only the ledger.
            now = self._clock()
            gone = [Change(DROP, g, "reload") for g in self.ledger.grants() if g.ip not in fresh]
            kept = {sid for sid, _ip, _start in fresh.sessions()}
            ended = [sid for sid, _ip, _start in self.ledger.sessions() if sid not in kept]
            self.durability.record((), now, ((), ended))  # a session whose address is now never authorised
            self.ledger = fresh
            self.publish(gone, now)
            self.durability.rewrite_soon()  # viewers judge the state file by the new --expire
            self._dirty = True
        log.info("reloaded: pattern sets %s", ", ".join(p.name for p in matcher.sets))

    def shutdown(self) -> None:
        """Publish what is owed, save the state and the checkpoints, close everything."""
        notify.notify("STOPPING=1")
        now = self._clock()
        if self.control is not None:
            self.control.close()
        if self.source is not None:
            self.source.close()
        if self.gate is not None:
            self.gate.close()
        for outlet in self.outlets:
            outlet.flush(now)
        if self.source is not None:
            self.save(now, running=False)
        self._close_outlets()
        if self.collector is not None:
            self.collector.close()
        log.info("stopped; %d client(s) authorised", len(self.ledger))

    def _close_outlets(self) -> None:
        for outlet in self.outlets:
            outlet.close()


#: Settings a SIGHUP cannot change: they are files opened at start.
_RESTART_ONLY = tuple(BY_NAME[name] for name in (
    "log", "journal", "journal-match", "state", "relay-ctrl-dir", "relay-ctrl-mapped", "relay-ctrl-expiry",
    "postfix-map", "postfix-value", "postfix-config",
    "sql", "sql-table", "sql-password-file", "sessions", "session-max"))


#: Reasons of a PUT when a client's last session ended (``ledger``).
_SESSION_ENDS = frozenset(("logout", "session-max", STARTUP, SHUTDOWN, "no-sessions"))


def _outlet(outlet: Outlet, clock: Callable[[], float]) -> Outlet | BackgroundOutlet:
    """A sink that can block (``blocking``: a database) is served by a thread of its own
    (``sinks.background``); the others on the loop, where they cost least."""
    return BackgroundOutlet(outlet, clock) if getattr(outlet.sink, "blocking", False) else outlet


def _follow_sessions(matcher: Matcher, ledger: Ledger, s: Settings) -> None:
    """``--sessions``: the matcher reads logouts, the ledger keeps sessions (each at most
    ``--session-max``); without it neither does anything new."""
    matcher.read_sessions(s.sessions)
    ledger.session_max = float(s.session_max) if s.sessions else None


def _line_time(verdict: Verdict, now: float) -> float:
    """When the line of ``verdict`` was written (its stamp), at most ``now``; ``now`` without one."""
    moment = line_time(verdict.stamp, now) if verdict.stamp else None
    return now if moment is None else min(moment, now)
