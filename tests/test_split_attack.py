"""Issue 10, attack 1, for real: a failed client makes Dovecot 2.3 write a forged login line.

Dovecot's processes send each log message to the log process through a pipe, as
``\\001`` + type + pid + space + text; a message longer than ``PIPE_BUF`` (4096 bytes) is
cut into chunks of ``4092 - len(pid)`` bytes of text, and every chunk becomes a log line
of its own with the full prefix (``imap-login: Info: `` in Dovecot's own file,
``dovecot: imap-login: `` through syslog): lib/failures.c, ``internal_send_split``.

With ``imap_id_log = *`` (a common how-to setting) imap-login logs every ``ID`` command as
``ID sent: key=value, ...: user=<...>, method=PLAIN, rip=..., lip=..., session=<...>``, and
the keys and values are the client's. So a client whose ``LOGIN`` failed (which puts
``user=<nosuchuser>, method=PLAIN`` into the tail) sends an ``ID`` of about 4 KB padded so
that the cut falls exactly before its own text ``Logged in: user=<qqq`` (or
``Login: user=<qqq``), and Dovecot itself writes

    Nov 30 21:48:22 imap-login: Info: Logged in: user=<qqq: user=<nosuchuser>, method=PLAIN, rip=127.0.0.72, lip=127.0.0.1, session=<...>

which looks like a 2.4 success line for the attacker's own address. The cut depends on the
number of digits of the login process's pid, which the client cannot see, so the attacker
sends one padding per possible pid length (2 to 7 digits; Linux's pid_max is at most
4194304), each from its own source address and so in its own login process (Dovecot's
default, one process per connection), all at once (each failed LOGIN costs Dovecot's 2 s
``auth_failure_delay``).

The test asserts the attack is live (some line really starts with the forged text, or it
proves nothing), then that ``relaywatch run`` with the default pattern sets authorises
none of the attacker's addresses (no relay-ctrl file, Postfix answers 554) while a genuine
login in the same log, after the attack, does relay (250); and that ``relaywatch
--test-pattern --json --file`` calls no line of the attack a login. Both log modes: Dovecot's
own file and syslog through the lab's private rsyslogd. The lines it captured are in
``tests/data/split-attack.log``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import postfixlab
from tests.daemonlab import wait_for
from logwatch import patternset
from logwatch.matcher import Matcher
from tests.conftest import ROOT
from tests.dovecotlab import DovecotLab, LogMode, need_lab

#: The forged text of each variant: the 2.4 success wording, and the 2.x one (which only a
#: set that does not require ``mpid=`` could take).
FORGED = {"logged-in": "Logged in: user=<qqq", "login": "Login: user=<qqq"}
#: The pid lengths tried: a pid of one digit is never a login process; 7 digits is the
#: most Linux gives (pid_max <= 4194304).
PID_DIGITS = range(2, 8)
#: How many times the attack is played at most. Why twice: a round misses only when the
#: pids cross a digit boundary (or wrap) while its dozen login processes start, so the
#: process padded for D digits got another length; a second round from fresh addresses
#: makes that flake negligible, and costs nothing when the first round hits.
ROUNDS = 2
#: A genuine account holder who logs in after the attack, in the same log.
GENUINE = "127.0.0.90"
#: A name no account has: the LOGIN fails, but Dovecot keeps it (and ``method=PLAIN``) for
#: the session's later lines, which gives the forged line its ``>, method=PLAIN, rip=`` tail.
NOBODY = "nosuchuser"

#: The attack's continuation lines as Dovecot 2.3.19 wrote them here, both variants, own
#: file and syslog, each after a ``# expect: nomatch -- why`` line (for unit tests).
CAPTURED = ROOT / "tests" / "data" / "split-attack.log"

PIPE_BUF = 4096
#: What Dovecot writes before the client's pairs.
ID_SENT = "ID sent: "
#: imap-login's limits for a logged ID pair (longer ones are cut and marked): key, value.
KEY_MAX, VALUE_MAX = 30, 80

#: The text before the message in each mode (Dovecot's default ``log_timestamp``; rsyslog's
#: RFC 3339 stamp, host and tag).
PREFIX = {
    "file": r"[A-Z][a-z]{2} [ 0-3]\d \d\d:\d\d:\d\d imap-login: Info: ",
    "syslog": r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]\d\d:\d\d \S+ dovecot: imap-login: ",
}


def sources(round_: int) -> dict[tuple[str, int], str]:
    """The attacker's source for (variant, pid digits) in a round: 127.0.R.72-77 for
    ``Logged in``, 127.0.R.82-87 for ``Login`` (R is the round; all of 127.0.0.0/8 is
    loopback on Linux)."""
    return {(variant, digits): f"127.0.{round_}.{base + digits}"
            for variant, base in (("logged-in", 70), ("login", 80)) for digits in PID_DIGITS}


class FalseAuthorisation(AssertionError):
    """relaywatch took a line of the attack for a login: what issue 10's attack 1 did
    before the matcher change (a8b0ede), which these tests failed with.

    Its own class so that such a regression reads as what it is, apart from a lab that
    did not reproduce the attack (an ordinary AssertionError).
    """


def split_at(pid_digits: int) -> int:
    """Bytes of message text in each chunk Dovecot 2.3 sends to its log process.

    ``internal_send_split``: ``PIPE_BUF - prefix_len - 1``, the prefix being ``\\001``,
    the type byte, the pid and a space; the 1 is the newline.
    """
    return PIPE_BUF - (3 + pid_digits) - 1


def crafted_id(forged: str, pid_digits: int) -> list[tuple[str, str]]:
    """ID pairs that Dovecot logs as ``ID sent: p00=xx..., ..., zz=FORGED`` with FORGED
    starting at exactly ``split_at(pid_digits)`` bytes into the message.

    Every key and value stays within imap-login's limits and is plain ASCII without
    quotes or backslashes, so the logged text is byte for byte what was sent.
    """
    last_key = "zz"
    room = split_at(pid_digits) - len(ID_SENT) - len(last_key) - len("=")
    count = -(-room // (len("p00=") + VALUE_MAX + len(", ")))
    values = room - count * len("p00=, ")
    pairs = [(f"p{index:02d}", "x" * (values // count + (index < values % count)))
             for index in range(count)]
    pairs.append((last_key, forged))
    logged = ID_SENT + ", ".join(f"{key}={value}" for key, value in pairs)
    assert logged.index(forged, len(ID_SENT)) == split_at(pid_digits)
    assert all(0 < len(value) <= VALUE_MAX and len(key) <= KEY_MAX for key, value in pairs)
    return pairs


def attack(port: int, source: str, forged: str, pid_digits: int, timeout: float) -> None:
    """One attacker's session: a failed LOGIN, the crafted ID, LOGOUT (raw IMAP: imaplib
    has no ID command)."""
    pairs = crafted_id(forged, pid_digits)
    arguments = " ".join(f'"{key}" "{value}"' for key, value in pairs)
    with socket.create_connection(("127.0.0.1", port), timeout,
                                  source_address=(source, 0)) as conn:
        replies = conn.makefile("rb")

        def command(tag: str, text: str) -> bytes:
            conn.sendall(f"{tag} {text}\r\n".encode("ascii"))
            while line := replies.readline():
                if line.startswith(tag.encode() + b" "):
                    return line
            raise ConnectionError(f"{source}: connection closed before {tag}'s reply")

        assert replies.readline().startswith(b"* OK "), source
        reply = command("a", f'LOGIN "{NOBODY}" "wrong"')
        assert reply.startswith(b"a NO "), (source, reply)
        reply = command("b", f"ID ({arguments})")
        assert reply.startswith(b"b OK "), (source, reply)
        command("c", "LOGOUT")


def attack_all(lab: DovecotLab, played: dict[tuple[str, int], str]) -> None:
    """Every attacker at once (each thread its own source and login process); returns
    when Dovecot has logged every attacker's disconnection, which its login process
    writes after the ID line."""
    errors: list[BaseException] = []

    def one(variant: str, digits: int) -> None:
        try:
            attack(lab.imap_port, played[variant, digits], FORGED[variant], digits,
                   lab.deadline)
        except BaseException as e:  # re-raised below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=one, args=key) for key in played]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]

    def all_logged() -> bool:
        ended = {source for line in lab.lines() if "Disconnected: Aborted login by logging "
                 "out (auth failed" in line for source in played.values()
                 if f"rip={source}, lip=" in line}
        return ended == set(played.values())
    wait_for(all_logged, "Dovecot to log every attacker's disconnection", lab.deadline)


def forged_lines(lines: list[str], mode: LogMode,
                 attackers: set[str]) -> dict[str, list[str]]:
    """The continuation lines that start with a forged text, per variant: the lines
    Dovecot wrote by itself that read as a success line for an attacker's address."""
    found: dict[str, list[str]] = {variant: [] for variant in FORGED}
    for variant, forged in FORGED.items():
        shape = re.compile(PREFIX[mode] + re.escape(f"{forged}: user=<{NOBODY}>, method=PLAIN, ")
                           + r"rip=(127\.0\.\d+\.\d+), lip=127\.0\.0\.1, session=<[^>]*>")
        for line in lines:
            if (hit := shape.fullmatch(line)) and hit[1] in attackers:
                found[variant].append(line)
    return found


def need_postfix() -> None:
    problems = postfixlab.missing()
    if problems:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the Postfix lab: {'; '.join(problems)}")
        pytest.skip("; ".join(problems))


@pytest.fixture(scope="module")
def postfix() -> Iterator[postfixlab.PostfixLab]:
    """One private Postfix for both modes (its start is the slowest part)."""
    need_postfix()
    lab = postfixlab.start(["hash"])
    try:
        yield lab
    finally:
        lab.stop()


def empty_map(postfix: postfixlab.PostfixLab, spec: str) -> None:
    """Start each mode from an empty map (the Postfix is shared): what the mode before
    authorised must not answer for this one. smtpd sees the new map at its next
    connection (a process whose table changed exits before accepting)."""
    Path(spec.partition(":")[2]).write_text("")
    postmap = shutil.which("postmap", path=postfixlab.SBIN_PATH) or "postmap"
    subprocess.run([postmap, "-c", str(postfix.config_dir), spec], check=True,
                   capture_output=True, timeout=60)


@pytest.mark.parametrize("mode", ["file", "syslog"])
def test_split_id_line_authorises_no_attacker(mode: LogMode, tmp_path: Path,
                                              postfix: postfixlab.PostfixLab) -> None:
    need_lab(mode)
    began = time.monotonic()
    relay_ctrl = tmp_path / "relay-ctrl"
    relay_ctrl.mkdir()
    err = tmp_path / "relaywatch.err"
    spec = postfix.map_spec("hash")
    empty_map(postfix, spec)
    false: list[str] = []
    with DovecotLab(tmp_path, log=mode, settings={"imap_id_log": "*"}) as dovecot:
        args = [sys.executable, "-m", "logwatch", "run", "--log", str(dovecot.log_path),
                "--postfix-map", spec, "--postfix-config", str(postfix.config_dir),
                "--relay-ctrl-dir", str(relay_ctrl), "--state", str(tmp_path / "state.json"),
                "--never", "127.0.0.1/32", "--expire", "10m"]
        with err.open("wb") as stderr:
            daemon = subprocess.Popen(args, stderr=stderr, stdin=subprocess.DEVNULL)
        try:
            wait_for(lambda: "first start" in err.read_text() or daemon.poll() is not None,
                     "relaywatch to start")
            assert daemon.poll() is None, err.read_text()
            attackers: set[str] = set()
            for round_ in range(ROUNDS):
                played = sources(round_)
                attack_all(dovecot, played)
                attackers |= set(played.values())
                live = forged_lines(dovecot.lines(), mode, attackers)
                if all(live.values()):
                    break
            # The attack is live, or everything below proves nothing.
            for variant, hits in live.items():
                assert hits, (f"no line of Dovecot's log starts with {FORGED[variant]!r}: "
                               f"the attack did not reproduce; ID lines: "
                               f"{[s[:120] for s in dovecot.lines() if 'ID sent' in s]}")
            # After the attack in the same log: relaywatch reads in order, so once this
            # login relays, every line of the attack has been decided.
            genuine = dovecot.login("imap", "alice", source=GENUINE)
            wait_for(lambda: GENUINE in {p.name for p in relay_ctrl.iterdir()},
                     f"the relay-ctrl file of {GENUINE}")
            wait_for(lambda: postfix.probe("hash", GENUINE)[0] == 250, f"{GENUINE} to relay")
            for name in {p.name for p in relay_ctrl.iterdir()} & attackers:
                false.append(f"relay-ctrl file for attacker {name}")
            for source in sorted(attackers):
                code, text = postfix.probe("hash", source)
                if code == 250:
                    false.append(f"Postfix relays for attacker {source}: {code} {text}")
                else:
                    assert (code, "Relay access denied" in text) == (554, True), (source, text)
        finally:
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(timeout=60)
        assert code == 0, err.read_text()
    log = err.read_text()
    assert f"authorised {GENUINE} (imap-login, user=<alice>)" in log, log
    false += [line for line in log.splitlines()
              if any(f"authorised {source} " in line for source in attackers)]

    # The same log, whole, through --test-pattern: no line of the attack is a login.
    lines = dovecot.lines()
    report = subprocess.run([sys.executable, "-m", "logwatch", "--test-pattern", "--json",
                             "--file", str(dovecot.log_path)],
                            capture_output=True, text=True, timeout=60)
    assert report.returncode == 0, report.stderr
    verdicts = [json.loads(row) for row in report.stdout.splitlines()]
    assert len(verdicts) == len(lines)
    logins = [(v["ip"], lines[v["line"] - 1]) for v in verdicts if v["result"] == "login"]
    assert (GENUINE, genuine.line) in logins
    false += [f"--test-pattern: login {ip}: {line}" for ip, line in logins if ip != GENUINE]
    false += [f"--test-pattern: {v['result']} on an attack line: {lines[v['line'] - 1]}"
              for v in verdicts if v["result"] == "login"
              and any(f"rip={source}, " in lines[v["line"] - 1] for source in attackers)]

    print(f"{mode}: {time.monotonic() - began:.1f} s; Dovecot wrote:")
    for variant in FORGED:
        for line in live[variant]:
            print(f"  {line}")
    if false:
        raise FalseAuthorisation(f"{mode}: relaywatch authorised an attacker:\n  "
                                 + "\n  ".join(dict.fromkeys(false)))


def test_the_padding_puts_the_forged_text_at_the_cut() -> None:
    """The arithmetic alone, without Dovecot: for every pid length the logged message has
    the forged text exactly at the cut, and it is short enough for imap-login's limits."""
    for variant, forged in FORGED.items():
        for digits in PID_DIGITS:
            pairs = crafted_id(forged, digits)
            message = ID_SENT + ", ".join(f"{key}={value}" for key, value in pairs)
            assert message[split_at(digits):].startswith(forged), (variant, digits)
            assert message.endswith(forged)
    assert split_at(5) == 4087  # measured: a 5-digit pid's first ID chunk held 4087 bytes


def captured() -> list[tuple[str, str, str]]:
    """``(expected result, why, line)`` for every line of ``CAPTURED``."""
    rows = CAPTURED.read_text(encoding="utf-8").split("\n")
    assert rows[-1] == "" and len(rows) % 2 == 1, "comment, line, comment, line, ..."
    found = []
    for comment, line in zip(rows[:-1:2], rows[1:-1:2]):
        head = re.fullmatch(r"# expect: (login|ignored|nomatch) -- (.+)", comment)
        assert head and not line.startswith("#"), (comment, line)
        found.append((head[1], head[2], line))
    return found


def test_the_captured_lines_authorise_nothing() -> None:
    """Without Dovecot: every captured continuation line, from the file and from syslog,
    both variants, is no login for the default pattern sets (the set that claims it, if
    any, says which fix is missing)."""
    rows = captured()
    assert len(rows) == 4
    for variant, forged in FORGED.items():
        assert sum(f": {forged}: user=<{NOBODY}>, " in line for _, _, line in rows) == 2, variant
    matcher = Matcher(patternset.builtin())
    claimed = []
    for expected, _why, line in rows:
        verdict = matcher.match(line)
        if verdict.result == "login":
            claimed.append(f"{verdict.pattern_set}/{verdict.pattern} -> {verdict.ip}: {line}")
        else:
            assert expected == "nomatch" and verdict.ip is None, (verdict, line)
    if claimed:
        raise FalseAuthorisation("\n".join(claimed))
