"""The administrator's hand on the ledger: allow, revoke, block and unblock, kept across restarts.

``Administrator.apply`` turns one control request (``control.Request.body``) into a reply
and the ledger's Changes, which the daemon publishes like any other (write-ahead log, then
the sinks). It runs on the loop's thread only. What must outlive a restart is kept in
``admin.json`` beside the state file (``AdminRecord``), replaced atomically before the
reply is sent and read back through ``safefile``:

- blocks: ``{user: {"until", "note", "by", "at"}}``: that user's logins authorise nothing
  (``until`` null: until unblocked);
- allowances: ``{ip: {"until", "note", "by", "at"}}``: a restart gives the grant its full
  time again (the state file keeps only logins, judged by ``--expire``);
- revocations: ``{ip: at}``: a grant the state or its write-ahead log still holds from
  before ``at`` is not restored (kept for ``--expire``, after which no such grant is left).

Why a file of its own and not the state: the state store is being rewritten; this file is
small, changes only by hand, and is mode 0640 so that ``relaywatch status`` can show the
blocks to the operators' group.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from logwatch import atomic, safefile
from logwatch.addresses import normalise
from logwatch.brake import Brake, UserAddresses, user_key
from logwatch.display import printable
from logwatch.durations import format_duration
from logwatch.ledger import Ledger
from logwatch.model import DROP, PUT, Change, LoginEvent

log = logging.getLogger("relaywatch")

NAME = "admin.json"
FORMAT = "relaywatch-admin"
VERSION = 1
MAX_BYTES = 4 << 20
MODE = 0o640
#: Longest note kept with an action.
MAX_NOTE = 200


@dataclass(frozen=True, slots=True)
class Mark:
    """One block or allowance: until when (None: no end), why, by whom (uid), since when."""

    until: float | None
    note: str
    by: int
    at: float

    def live(self, now: float) -> bool:
        return self.until is None or self.until > now

    def to_json(self) -> dict[str, Any]:
        return {"until": self.until, "note": self.note, "by": self.by, "at": self.at}

    @classmethod
    def from_json(cls, doc: object) -> Mark:
        if not isinstance(doc, dict):
            raise ValueError("expected an object")
        until, note, by, at = doc.get("until"), doc.get("note", ""), doc.get("by", -1), doc.get("at")
        if until is not None and not safefile.is_time(until):
            raise ValueError("'until' is not a time")
        if not isinstance(note, str) or not isinstance(by, int) or not isinstance(at, (int, float)) \
                or not safefile.is_time(at):
            raise ValueError("'note', 'by' or 'at' is not what relaywatch writes")
        return cls(None if until is None else float(until), note[:MAX_NOTE], by, float(at))


@dataclass
class AdminRecord:
    """What ``admin.json`` holds (see the module docstring)."""

    blocks: dict[str, Mark] = field(default_factory=dict)
    allowances: dict[str, Mark] = field(default_factory=dict)
    revocations: dict[str, float] = field(default_factory=dict)

    def prune(self, now: float, expire: float) -> None:
        """Forget blocks and allowances that ended, and revocations older than ``expire``."""
        self.blocks = {u: m for u, m in self.blocks.items() if m.live(now)}
        self.allowances = {ip: m for ip, m in self.allowances.items() if m.live(now)}
        self.revocations = {ip: t for ip, t in self.revocations.items() if t + expire > now}

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION,
                "blocks": {u: m.to_json() for u, m in sorted(self.blocks.items())},
                "allowances": {ip: m.to_json() for ip, m in sorted(self.allowances.items())},
                "revocations": dict(sorted(self.revocations.items()))}

    @classmethod
    def from_json(cls, doc: object) -> AdminRecord:
        """Raises ValueError (one line) for a document relaywatch did not write."""
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != VERSION:
            raise ValueError(f"not a {FORMAT} file, version {VERSION}")
        record = cls()
        for key in ("blocks", "allowances", "revocations"):
            if not isinstance(doc.get(key, {}), dict):
                raise ValueError(f"{key!r} is not an object")
        for user, mark in doc.get("blocks", {}).items():
            record.blocks[user_key(user)] = Mark.from_json(mark)
        for ip, mark in doc.get("allowances", {}).items():
            if normalise(ip) != ip:
                raise ValueError(f"allowance {ip!r} is not an address")
            record.allowances[ip] = Mark.from_json(mark)
        for ip, at in doc.get("revocations", {}).items():
            if normalise(ip) != ip or not safefile.is_time(at):
                raise ValueError(f"revocation {ip!r} is not an address and a time")
            record.revocations[ip] = float(at)
        return record


def path_of(state: str | os.PathLike[str]) -> Path:
    """``admin.json`` beside ``--state FILE``."""
    return Path(state).parent.resolve() / NAME


def load(path: Path) -> AdminRecord:
    """Read ``admin.json`` (an empty record if there is none).

    Raises:
        ValueError: it cannot be read or is not what relaywatch writes (one line naming it).
    """
    try:
        return AdminRecord.from_json(safefile.loads(safefile.read(path, MAX_BYTES, writer=True)))
    except FileNotFoundError:
        return AdminRecord()
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: {getattr(exc, 'strerror', None) or exc}") from None


def read_for_viewer(state: str | os.PathLike[str]) -> AdminRecord | None:
    """The record as a viewer may read it (None if absent or unreadable: the viewer says less)."""
    try:
        doc = safefile.loads(safefile.read(path_of(state), MAX_BYTES, writer=False))
        return AdminRecord.from_json(doc)
    except (OSError, ValueError):
        return None


def save(path: Path, record: AdminRecord) -> None:
    """Replace ``admin.json`` atomically. Raises OSError."""
    atomic.write(path, json.dumps(record.to_json(), ensure_ascii=True, indent=1).encode("ascii") + b"\n", mode=MODE)


class Refused(ValueError):
    """A request that cannot be done; ``str()`` is the one line for the client."""


class Administrator:
    """Blocks, manual allowances, revocations, the per-user address index and the brake.

    Args:
        state: the ``--state`` file (None: nothing is kept across restarts).
        brake: the credential-stuffing brake.
    """

    def __init__(self, state: str | None, brake: Brake) -> None:
        self.path = path_of(state) if state else None
        self.record = AdminRecord()
        self.users = UserAddresses()
        self.brake = brake
        #: One line per manual action done, for the daemon to log and show (kind, ip, user, reason).
        self.done: list[tuple[str, str, str, str]] = []

    # ------------------------------------------------------------------ start

    def start(self, ledger: Ledger, restored: Sequence[Change], now: float) -> tuple[Change, ...]:
        """Read ``admin.json`` and amend what the state restored: revoked grants go, manual
        allowances get their full time again. Returns the Changes to publish instead of ``restored``.

        Raises:
            ValueError: ``admin.json`` cannot be used (one line naming it).
        """
        if self.path is not None:
            self.record = load(self.path)
        self.record.prune(now, ledger.expire_after)
        amended: dict[str, list[Change]] = {}  # address -> what replaces its restored PUT
        for ip, at in self.record.revocations.items():
            grant = ledger.get(ip)
            if grant is not None and grant.last <= at and grant.service != "manual":
                change = ledger.withdraw(ip, "revoked by hand before the restart")
                amended[ip] = [change] if change is not None else []  # a sink may still hold it from before
        for ip, mark in self.record.allowances.items():
            if mark.until is not None:
                amended[ip] = amended.get(ip, []) + list(ledger.allow(
                    ip, "(by hand)", mark.until, now, _said("allowed by hand", mark.by, mark.note, "(restored)")))
        # One pass over what was restored (a million at an ISP), not one per amendment.
        out = [c for c in restored if c.ip not in amended] if amended else list(restored)
        self.users.restore([c.grant for c in out if c.reason == "restored"])  # restore gives PUTs only
        for changes in amended.values():
            self.users.observe(changes)
            out.extend(changes)
        return tuple(out)

    # ------------------------------------------------------------------ logins

    def refusal(self, event: LoginEvent, now: float) -> tuple[str, bool] | None:
        """Why a login may not authorise, and whether to say so now; None if it may."""
        block = self.record.blocks.get(user_key(event.user))
        if block is not None and block.live(now):
            return f"user is blocked by hand{_ending(block, now)}", self.brake.say("block " + event.user, now)
        why = self.brake.refusal(self.users, event.user, event.ip, now)
        if why is not None:
            return why, self.brake.say(event.user, now)
        return None

    def observe(self, changes: Sequence[Change]) -> None:
        """Follow every Change the daemon publishes."""
        self.users.observe(changes)

    def blocked_now(self, now: float) -> int:
        return sum(1 for m in self.record.blocks.values() if m.live(now))

    # ------------------------------------------------------------------ requests

    def apply(self, body: dict[str, Any], uid: int, ledger: Ledger, now: float) -> tuple[dict[str, Any], list[Change]]:
        """One request: its reply (``{"ok", "message", ...}``) and the Changes to publish.

        The record is saved before the reply: what the client is told was done survives a
        crash that comes next.
        """
        self.done = []
        command = body.get("command")
        try:
            handler = _HANDLERS.get(command if isinstance(command, str) else "")
            if handler is None:
                raise Refused(f"unknown command {printable(str(command))!r}")
            reply, changes = handler(self, body, uid, ledger, now)
        except Refused as exc:
            return {"ok": False, "message": str(exc)}, []
        if self.path is not None and command != "blocked":
            self.record.prune(now, ledger.expire_after)
            try:
                save(self.path, self.record)
            except OSError as exc:
                reply["ok"] = False
                reply["message"] += f"; but {self.path} could not be written ({exc.strerror}): a restart forgets it"
        return reply, changes

    def _allow(self, body: dict[str, Any], uid: int, ledger: Ledger, now: float) -> tuple[dict[str, Any], list[Change]]:
        ip = _address(body.get("ip"))
        for_ = _seconds(body.get("for"), default=ledger.expire_after)
        note = _note(body)
        if ip in ledger.never:
            raise Refused(f"{ip} is on the never-list ({ledger.never}); it is never authorised")
        until = now + for_
        reason = _said("allowed by hand", uid, note, f"for {format_duration(for_)}")
        changes = list(ledger.allow(ip, "(by hand)", until, now, reason))
        self.record.allowances[ip] = Mark(until, note, uid, now)
        self.record.revocations.pop(ip, None)
        return {"ok": True, "message": f"{ip} may relay for {format_duration(for_)}", "until": until}, changes

    def _revoke(self, body: dict[str, Any], uid: int, ledger: Ledger, now: float) -> tuple[dict[str, Any], list[Change]]:
        user = body.get("user")
        note = _note(body)
        if user is not None:
            if not isinstance(user, str) or not user:
                raise Refused("revoke --user: expected a user name")
            ips = self.users.addresses(user, now)
            what = f"user {printable(user)}"
        else:
            raw = body.get("ips")
            if not isinstance(raw, list) or not raw:
                raise Refused("revoke: give one address or more, or --user NAME")
            ips = [_address(ip) for ip in raw]
            what = ", ".join(ips)
        changes = []
        for ip in ips:
            self.record.revocations[ip] = now
            self.record.allowances.pop(ip, None)
            change = ledger.withdraw(ip, _said("revoked by hand", uid, note, f"user {user}" if user else ""))
            if change is not None:
                changes.append(change)
        if user is not None and not changes:
            self.done.append(("withdrawn", "", user, _said("revoked by hand", uid, note, "no address held")))
        gone = [c.ip for c in changes]
        return {"ok": True, "message": f"{what}: withdrew {len(gone)} address(es)"
                + (f": {', '.join(gone)}" if gone else ""), "withdrawn": gone}, changes

    def _block(self, body: dict[str, Any], uid: int, ledger: Ledger, now: float) -> tuple[dict[str, Any], list[Change]]:
        user = _user(body)
        seconds = body.get("for")
        until = None if seconds is None else now + _seconds(seconds, default=0)
        note = _note(body)
        self.record.blocks[user_key(user)] = Mark(until, note, uid, now)
        held = self.users.addresses(user, now)
        length = "until unblocked" if until is None else f"for {format_duration(until - now)}"
        self.done.append(("refused", "", user, _said("blocked by hand", uid, note, length)))
        hint = (f"; {len(held)} address(es) still authorised: relaywatch revoke --user {user} withdraws them"
                if held else "")
        return {"ok": True, "message": f"user {printable(user)} blocked {length}{hint}", "until": until,
                "held": held}, []

    def _unblock(self, body: dict[str, Any], uid: int, ledger: Ledger, now: float) -> tuple[dict[str, Any], list[Change]]:
        user = _user(body)
        mark = self.record.blocks.pop(user_key(user), None)
        if mark is None or not mark.live(now):
            raise Refused(f"user {printable(user)} is not blocked")
        self.done.append(("authorised", "", user, _said("unblocked by hand", uid, _note(body), "")))
        return {"ok": True, "message": f"user {printable(user)} unblocked"}, []

    def _blocked(self, body: dict[str, Any], uid: int, ledger: Ledger, now: float) -> tuple[dict[str, Any], list[Change]]:
        live = {u: m for u, m in sorted(self.record.blocks.items()) if m.live(now)}
        return {"ok": True, "message": f"{len(live)} user(s) blocked",
                "blocked": [{"user": u, **m.to_json()} for u, m in live.items()]}, []

    def _ping(self, body: dict[str, Any], uid: int, ledger: Ledger, now: float) -> tuple[dict[str, Any], list[Change]]:
        return {"ok": True, "message": f"relaywatch runs (pid {os.getpid()}); {len(ledger)} client(s) authorised",
                "pid": os.getpid()}, []


_HANDLERS = {"allow": Administrator._allow, "revoke": Administrator._revoke, "block-user": Administrator._block,
             "unblock-user": Administrator._unblock, "blocked": Administrator._blocked, "ping": Administrator._ping}


def _ending(mark: Mark, now: float) -> str:
    return "" if mark.until is None else f" for {format_duration(max(0.0, mark.until - now))} more"


def _said(what: str, uid: int, note: str, detail: str) -> str:
    return f"{what} (uid {uid})" + (f" {detail}" if detail else "") + (f": {note}" if note else "")


def _address(value: object) -> str:
    if not isinstance(value, str):
        raise Refused("expected an IP address")
    ip = normalise(value.strip())
    if ip is None:
        raise Refused(f"{printable(value)!r} is not an IP address")
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise Refused(f"{printable(value)!r} is not an IP address") from None
    return ip


def _seconds(value: object, default: float) -> float:
    if value is None:
        return default
    if (not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)
            or not 0 < value <= 366 * 86400):
        raise Refused("--for: expected a duration from 1 s to 366 days")
    return float(value)


def _user(body: dict[str, Any]) -> str:
    user = body.get("user")
    if not isinstance(user, str) or not user or len(user) > 256:
        raise Refused("expected a user name")
    return user


def _note(body: dict[str, Any]) -> str:
    note = body.get("note", "")
    if not isinstance(note, str):
        raise Refused("--note: expected text")
    return printable(note[:MAX_NOTE])


__all__ = ["AdminRecord", "Administrator", "DROP", "PUT", "Refused"]
