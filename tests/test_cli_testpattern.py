"""``relaywatch --test-pattern`` as users and scripts call it: a real process each time."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
from rich.console import Console

from logwatch import cli
from logwatch.faces.testpattern import Summary, Tally, line_text
from logwatch.matcher import Verdict
from tests.conftest import ROOT

LOGIN = "Jun 10 12:00:00 mx dovecot: imap-login: Login: user=<bob>, method=PLAIN, rip=192.0.2.7, lip=192.0.2.1, mpid=9, TLS"
LOGIN24 = "2024-06-10T12:00:00+02:00 mx dovecot: pop3-login: Logged in: user=<eve>, method=PLAIN, rip=2001:DB8::7, lip=2001:db8::1, mpid=7"
FAILED = "Jun 10 12:00:00 mx dovecot: imap-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<x>, method=PLAIN, rip=203.0.113.9, lip=192.0.2.1"
LOOPBACK = "Jun 10 12:00:00 imap-login: Info: Login: user=<alice>, method=PLAIN, rip=127.0.0.3, lip=127.0.0.1, mpid=1"
KEYS = ["line", "result", "ip", "user", "service", "pattern_set", "pattern", "time"]


def relaywatch(*args: str, stdin: bytes | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TZ="UTC")
    return subprocess.run([sys.executable, "-m", "logwatch", *args], input=stdin.decode() if stdin else None,
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def peak_rss_kib(*args: str) -> int:
    """Peak memory of one relaywatch process, measured from a thin parent.

    Why a parent of its own: a forked child starts with its parent's pages, so measured
    from the test process itself the child would seem as large as pytest.
    """
    probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    done = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m", "logwatch", *args],
                          capture_output=True, text=True, check=True)
    return int(done.stdout)


def records(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_json_one_object_per_line_in_order() -> None:
    done = relaywatch("--test-pattern", "--json", LOGIN, "", FAILED, "junk", LOGIN24, LOOPBACK)
    assert done.returncode == 0, done.stderr
    got = records(done.stdout)
    assert [r["line"] for r in got] == [1, 2, 3, 4, 5, 6]
    for r in got:
        assert list(r)[:8] == KEYS
    assert got[0] == {"line": 1, "result": "login", "ip": "192.0.2.7", "user": "bob", "service": "imap-login",
                      "pattern_set": "dovecot-2.0-2.3", "pattern": "login", "time": got[0]["time"], "authorise": True}
    assert str(got[0]["time"]).endswith("-06-10T12:00:00+00:00")
    assert got[1] == dict(zip(KEYS, [2, "nomatch", None, None, None, None, None, None]))
    assert got[2]["result"] == "ignored" and got[2]["pattern"] == "disconnected-reason" and got[2]["ip"] is None
    assert got[3]["result"] == "nomatch"
    assert got[4]["ip"] == "2001:db8::7" and got[4]["time"] == "2024-06-10T12:00:00+02:00"
    assert (got[5]["result"], got[5]["authorise"]) == ("login", False)
    assert str(got[5]["why"]).startswith("127.0.0.3 is on the never-list (127.0.0.0/8,")  # the ledger's own words


def test_expire_refuses_what_run_would_refuse_as_too_old(tmp_path: Path) -> None:
    """Issue 11: --test-pattern's own copy of the policy ignored --expire; it now asks the
    ledger, judging each login at the time the input was written (here the file's mtime)."""
    sample = tmp_path / "mail.log"
    sample.write_text(LOGIN + "\n" + LOGIN.replace("12:00:00", "12:20:00").replace("192.0.2.7", "192.0.2.8") + "\n")
    written = datetime(datetime.now().year, 6, 10, 12, 25, tzinfo=timezone.utc).timestamp()
    os.utime(sample, (written, written))
    done = relaywatch("--test-pattern", "--json", "--expire", "15m", "--file", str(sample))
    assert done.returncode == 0, done.stderr
    got = records(done.stdout)
    assert [(r["ip"], r["authorise"]) for r in got] == [("192.0.2.7", False), ("192.0.2.8", True)]
    assert str(got[0]["why"]).endswith("is older than --expire (900s)")
    done = relaywatch("--test-pattern", "--json", "--file", str(sample))  # without it, no line is too old
    assert [r["authorise"] for r in records(done.stdout)] == [True, True]


def test_summary_json() -> None:
    done = relaywatch("--test-pattern", "--summary", "--json", LOGIN, FAILED, "junk", "")
    summary = json.loads(done.stdout)
    assert {k: summary[k] for k in ("lines", "login", "ignored", "nomatch")} == {"lines": 4, "login": 1, "ignored": 1, "nomatch": 2}
    assert summary["hits"] == {"dovecot-2.0-2.3/disconnected-reason": 1, "dovecot-2.0-2.3/login": 1}


def test_stdin_and_never_none() -> None:
    done = relaywatch("--test-pattern", "--json", "--never", "none", "-", stdin=(LOOPBACK + "\n" + LOGIN).encode())
    got = records(done.stdout)
    assert [(r["ip"], r["authorise"]) for r in got] == [("127.0.0.3", True), ("192.0.2.7", True)]


def test_file_with_bad_bytes_and_a_huge_line(tmp_path: Path) -> None:
    """CRLF, NULs, invalid UTF-8, and a 50 MB line without a newline cost bounded memory."""
    log = tmp_path / "mail.log"
    with log.open("wb") as f:
        f.write(LOGIN.encode() + b"\r\n")
        f.write(b"\0" * 4096 + LOGIN24.encode() + b"\n")  # a copytruncate hole
        f.write(b"Jun 10 12:00:00 mx dovecot: imap-login: Login: user=<b\xff\xfeb>, method=PLAIN, rip=192.0.2.8, lip=192.0.2.1, mpid=2\n")
        f.write(b"x" * 50_000_000 + b"\n")
        f.write(b"\0binary\0junk\n")
        f.write(FAILED.encode())  # no final newline
    done = relaywatch("--test-pattern", "--json", "--file", str(log))
    assert done.returncode == 0, done.stderr
    got = records(done.stdout)
    assert [r["result"] for r in got] == ["login", "login", "login", "nomatch", "nomatch", "ignored"]
    assert got[2]["user"] == "b\ufffd\ufffdb"
    assert peak_rss_kib("--test-pattern", "--summary", "--file", str(log)) < 60_000, \
        "a 50 MB line must not be held whole (as bytes and text it would cost over 100 MB)"
    summary = json.loads(relaywatch("--test-pattern", "--summary", "--json", "--file", str(log)).stdout)
    assert (summary["lines"], summary["login"], summary["cut"]) == (6, 3, 1)


def test_missed_lines_are_capped_unless_print_all() -> None:
    lines = [f"junk {i}" for i in range(25)]
    capped = relaywatch("--test-pattern", "--summary", *lines).stdout
    assert "junk" not in capped
    human = relaywatch("--test-pattern", *lines).stdout
    assert "Lines that matched nothing (25, first 20; --print-all for all):" in human
    assert human.count("junk ") == 20
    assert relaywatch("--test-pattern", "--print-all", *lines).stdout.count("junk ") == 25


@pytest.mark.parametrize("args, message", [
    (["--test-pattern", "--file", "/nonexistent/mail.log"], "relaywatch: --file /nonexistent/mail.log: cannot read: No such file or directory"),
    (["--test-pattern", "--file", "/"], "relaywatch: --file /: cannot read: Is a directory"),
    (["--test-pattern", "--file", "x.log", LOGIN], "relaywatch: --test-pattern: give sample lines, --file PATH, or - for standard input; not both"),
    (["--test-pattern"], "relaywatch: --test-pattern: no input"),
    (["--test-pattern", "--pattern-set", "dovecot-9", LOGIN], "relaywatch: --pattern-set: no set is named 'dovecot-9'"),
    (["--test-pattern", "--never", "10.0.0.0/33", LOGIN], "relaywatch: --never: '10.0.0.0/33' is not a network"),
    (["--test-pattern", "--frobnicate", LOGIN], "relaywatch --test-pattern: unrecognized arguments: --frobnicate"),
])
def test_usage_errors_are_one_line_and_status_2(args: list[str], message: str) -> None:
    done = relaywatch(*args)
    assert done.returncode == 2
    assert done.stderr.startswith(message), done.stderr
    assert done.stderr.count("\n") == 1


def test_broken_admin_set_names_file_and_key(tmp_path: Path) -> None:
    (tmp_path / "site.toml").write_text('name = "site"\ncovers = ["x"]\n[pattern.login]\nresult = "login"\nregex = \'.*rip=(?P<ip><ADDR>)\'\n')
    done = relaywatch("--test-pattern", "--pattern-dir", str(tmp_path), LOGIN)
    assert done.returncode == 2
    assert done.stderr == f"relaywatch: {tmp_path / 'site.toml'}: pattern.login.regex: a login pattern must start with literal text, not a wildcard\n"


def test_pattern_set_restricts() -> None:
    done = relaywatch("--test-pattern", "--json", "--pattern-set", "dovecot-2.4", LOGIN, LOGIN24)
    assert [r["result"] for r in records(done.stdout)] == ["nomatch", "login"]


def test_console_script_and_module_agree() -> None:
    script = shutil.which("relaywatch")
    if script is None:
        if os.environ.get("CI") == "true":
            pytest.fail("the relaywatch console script is not installed")
        pytest.skip("relaywatch is not installed")
    a = subprocess.run([script, "--test-pattern", "--json", LOGIN], capture_output=True, text=True, env=dict(os.environ, TZ="UTC"))
    b = relaywatch("--test-pattern", "--json", LOGIN)
    assert a.returncode == 0 and a.stdout == b.stdout


def test_replaying_the_bundled_log_with_test_pattern() -> None:
    done = relaywatch("--test-pattern", "--summary", "--file", str(ROOT / "logwatch" / "demo" / "sample.log"))
    assert done.returncode == 0, done.stderr
    assert "Lines: 27 lines, 10 login, 10 ignored, 7 no match" in done.stdout


def test_human_lines_render_exactly() -> None:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    login = Verdict("login", "192.0.2.7", "b\x1bob", "imap-login", "dovecot-2.4", "login", "Jun 10 12:00:00")
    console.print(line_text(3, login, None))
    console.print(line_text(4, login, "192.0.2.7 is in --never"))
    console.print(line_text(5, Verdict("nomatch"), None))
    assert console.file.getvalue() == (
        "      3  login    192.0.2.7        imap-login        dovecot-2.4/login  authorise  user=<b\\x1bob>\n"
        "      4  login    192.0.2.7        imap-login        dovecot-2.4/login  refuse (192.0.2.7 is in --never)  user=<b\\x1bob>\n"
        "      5  nomatch\n"
    )


def test_summary_renders_exactly() -> None:
    tally = Tally(lines=4, login=1, ignored=1)
    tally.hits["dovecot-2.4", "login"] = 1
    tally.hits["dovecot-2.4", "aborted"] = 1
    tally.missed = [(3, "junk\x07"), (4, "")]
    console = Console(file=io.StringIO(), width=60, color_system=None)
    console.print(Summary(tally, ("dovecot-2.4",)))
    assert console.file.getvalue() == (
        "Lines: 4 lines, 1 login, 1 ignored, 2 no match (sets: \n"
        "dovecot-2.4)\n"
        "Hits per set and pattern:\n"
        "set          pattern  hits\n"
        "dovecot-2.4  aborted     1\n"
        "dovecot-2.4  login       1\n"
        "Lines that matched nothing (2):\n"
        "      3  junk\\x07\n"
        "      4  \n"
    )


def test_main_in_process_returns_status() -> None:
    assert cli.main(["--test-pattern", "--summary", "--json", "junk"]) == 0
    assert cli.main(["--test-pattern"]) == 2
