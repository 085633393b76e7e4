"""``relaywatch --test-pattern``: run the pattern sets over sample lines and report.

The face an admin uses before trusting a set: replay lines (arguments, ``--file PATH``, or
``-`` for standard input) through the same matcher the daemon uses, with no ledger and no
sinks, and say for every line what it would do; then a summary in the spirit of
fail2ban-regex: counts, hits per set and pattern, and the lines nothing matched.

Output contracts (scripts rely on them):

- ``--json``: one object per input line, in input order, with keys ``line`` (1-based),
  ``result`` (``login``/``ignored``/``nomatch``), ``ip``, ``user``, ``service``,
  ``pattern_set``, ``pattern``, ``time`` (ISO 8601 or null); relaywatch adds
  ``authorise`` (logins: would the policy grant relay) and ``why``.

What the policy says comes from the daemon's own code: each login becomes a ``LoginEvent``
by ``logins.login_event`` and is judged by ``Ledger.refusal`` (the never-list, and with
``--expire`` the login's age at the time the input was written), so this face cannot
promise what the daemon would refuse.
- ``--summary``: counts only; with ``--json`` one object with ``lines``, ``login``,
  ``ignored``, ``nomatch`` (and ``hits``, ``cut``).
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from datetime import datetime
from typing import IO, TYPE_CHECKING, BinaryIO, TypeVar

from logwatch import timestamps
from logwatch.display import printable
from logwatch.ledger import Ledger
from logwatch.logins import login_event
from logwatch.matcher import NEEDLES, NOMATCH, Matcher, Verdict
from logwatch.sources.lines import LineSplitter, decode, decode_batch
from logwatch.sources.stream import batches, matching

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult

T = TypeVar("T")

#: Lines that matched nothing, listed after the summary unless ``--print-all``.
MISSED_SHOWN = 20


class UsageError(Exception):
    """Bad usage or an unreadable input: one line for the user, exit status 2."""


def refusal(ledger: Ledger, verdict: Verdict, now: float) -> str | None:
    """Why the daemon would not authorise ``verdict``'s login at ``now`` (None: it would, or
    the line is not a login). The matcher already ignores services that are not enabled."""
    event = login_event(verdict, now)
    return None if event is None else ledger.refusal(event, now)


@dataclass
class Tally:
    """Counts of a run, and the lines that matched nothing (for the summary)."""

    lines: int = 0
    login: int = 0
    ignored: int = 0
    hits: Counter[tuple[str, str]] = field(default_factory=Counter)
    missed: list[tuple[int, str]] = field(default_factory=list)
    missed_limit: int | None = MISSED_SHOWN
    cut: int = 0

    @property
    def nomatch(self) -> int:
        return self.lines - self.login - self.ignored

    def add(self, number: int, verdict: Verdict, text: Callable[[], str]) -> None:
        """Count one line; ``text`` gives its text, asked for only when it is kept."""
        self.lines += 1
        if verdict.result == "nomatch":
            if self.missed_limit is None or len(self.missed) < self.missed_limit:
                self.missed.append((number, text()))
            return
        if verdict.result == "login":
            self.login += 1
        else:
            self.ignored += 1
        self.hits[verdict.pattern_set or "", verdict.pattern or ""] += 1

    def as_json(self) -> dict[str, object]:
        return {"lines": self.lines, "login": self.login, "ignored": self.ignored,
                "nomatch": self.nomatch, "cut": self.cut,
                "hits": {f"{s}/{p}": n for (s, p), n in sorted(self.hits.items())}}


@dataclass(frozen=True)
class Summary:
    """The fail2ban-regex-like summary, as a rich renderable."""

    tally: Tally
    sets: tuple[str, ...]
    print_all: bool = False

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.table import Table
        from rich.text import Text

        t = self.tally
        yield Text.assemble(
            ("Lines: ", "bold"), f"{t.lines} lines, ", (f"{t.login} login", "green"), ", ",
            (f"{t.ignored} ignored", "yellow"), ", ", (f"{t.nomatch} no match", "red"),
            f" (sets: {', '.join(self.sets)})",
        )
        if t.cut:
            yield Text(f"{t.cut} line(s) longer than the cap were examined in part only", style="yellow")
        if t.hits:
            yield Text("Hits per set and pattern:", style="bold")
            table = Table(box=None, pad_edge=False)
            table.add_column("set")
            table.add_column("pattern")
            table.add_column("hits", justify="right")
            for (set_name, pattern), hits in sorted(t.hits.items()):
                table.add_row(set_name, pattern, str(hits))
            yield table
        if t.missed:
            shown = "" if self.print_all or t.nomatch <= len(t.missed) else f", first {len(t.missed)}; --print-all for all"
            yield Text(f"Lines that matched nothing ({t.nomatch}{shown}):", style="bold")
            for number, text in t.missed:
                yield Text(f"{number:>7}  {printable(text)}", no_wrap=True, overflow="ellipsis")


def line_text(number: int, verdict: Verdict, refusal: str | None) -> str:
    """One line of human output, as rich markup: number, verdict, address, service, who
    claimed it, what policy says (or why it is ignored), then the user name, which can be
    long and is the client's own text."""
    from rich.markup import escape

    if verdict.result == "nomatch":
        return f"{number:>7}  [red]nomatch[/]"
    where = escape(f"{verdict.pattern_set}/{verdict.pattern}")
    columns = f"{verdict.ip or '-':<15}  {verdict.service or '-':<16}  {where}"
    user = f"  user=<{escape(printable(verdict.user))}>" if verdict.user else ""
    if verdict.result == "ignored":
        return f"{number:>7}  [yellow]ignored[/]  {columns}  [dim]{escape(verdict.why or '')}[/]{user}"
    policy = "[green]authorise[/]" if refusal is None else f"[red]refuse[/] ({escape(refusal)})"
    return f"{number:>7}  [green]login[/]    {columns}  {policy}{user}"


def json_record(number: int, verdict: Verdict, refusal: str | None, moment: datetime | None) -> str:
    record = {
        "line": number, "result": verdict.result, "ip": verdict.ip, "user": verdict.user,
        "service": verdict.service, "pattern_set": verdict.pattern_set, "pattern": verdict.pattern,
        "time": moment.isoformat() if moment else None,
    }
    if verdict.result == "login":
        record["authorise"] = refusal is None
    if refusal or verdict.why:
        record["why"] = refusal or verdict.why
    return json.dumps(record, ensure_ascii=False)


def inputs(lines: list[str], file: str | None, stdin: BinaryIO) -> tuple[BinaryIO, float, LineSplitter]:
    """Open the input and say the moment it was written by (for year-less stamps).

    Raises:
        UsageError: both lines and --file, or a file that cannot be read.
    """
    if file is not None and lines:
        raise UsageError("--test-pattern: give sample lines, --file PATH, or - for standard input; not both")
    if file is not None:
        try:
            stream = open(file, "rb")  # closed when the process ends; a replay reads it once
            written = os.fstat(stream.fileno()).st_mtime
        except OSError as exc:
            raise UsageError(f"--file {file}: cannot read: {exc.strerror}") from None
        return stream, written, LineSplitter()
    if lines == ["-"]:
        return stdin, time.time(), LineSplitter()
    if not lines:
        raise UsageError("--test-pattern: no input; give sample lines, --file PATH, or - for standard input")
    data = b"".join(line.rstrip("\r\n").encode("utf-8", "surrogateescape") + b"\n" for line in lines)
    return io.BytesIO(data), time.time(), LineSplitter()


def _guarded(source: Iterator[T], name: str | None) -> Iterator[T]:
    try:
        yield from source
    except OSError as exc:  # e.g. a directory, or an I/O error half-way
        raise UsageError(f"--file {name}: cannot read: {exc.strerror}") from None


def run(matcher: Matcher, ledger: Ledger, lines: list[str], file: str | None, *, as_json: bool,
        summary_only: bool, print_all: bool, out: IO[str], console: Console | None = None,
        stdin: BinaryIO | None = None) -> int:
    """Replay the input through ``matcher``, judge each login by ``ledger``'s refusal rules,
    and write the report to ``out``.

    Returns:
        0 when it ran. Raises ``UsageError`` for the caller to print and exit 2.
    """
    stream, written, splitter = inputs(lines, file, stdin if stdin is not None else sys.stdin.buffer)
    tally = Tally(missed_limit=None if print_all else MISSED_SHOWN)
    if summary_only:
        _count(matcher, stream, splitter, tally)
    else:
        now = datetime.fromtimestamp(written).astimezone()
        write = out.write
        if not as_json:
            from rich.console import Console as RichConsole

            console = console or RichConsole(file=out, highlight=False, soft_wrap=True)
        number = 0
        for batch in _guarded(batches(stream, splitter=splitter), file):
            for raw in batch:
                number += 1
                verdict = matcher.match(decode(raw)) if any(n in raw for n in NEEDLES) else NOMATCH
                why = refusal(ledger, verdict, written) if verdict.result == "login" else None
                tally.add(number, verdict, partial(decode, raw))
                if as_json:
                    moment = timestamps.parse(verdict.stamp, now) if verdict.stamp else None
                    write(json_record(number, verdict, why, moment) + "\n")
                else:
                    assert console is not None
                    console.print(line_text(number, verdict, why))
    tally.cut = splitter.cut
    sets = tuple(s.name for s in matcher.sets)
    if as_json:
        if summary_only:
            out.write(json.dumps(tally.as_json()) + "\n")
        return 0
    if console is None:
        from rich.console import Console as RichConsole

        console = RichConsole(file=out, highlight=False, soft_wrap=True)
    if not summary_only:
        console.print()
    console.print(Summary(tally, sets, print_all))
    return 0


def _count(matcher: Matcher, stream: BinaryIO, splitter: LineSplitter, tally: Tally) -> None:
    """The ``--summary`` loop: counts only, and only lines that contain one of ``NEEDLES`` are cut
    out of the chunks read, decoded and matched (``LineSplitter.feed_matching``).

    Why a loop of its own: it is the cost model of catching up on a day's log. Per-line
    work on lines that cannot match is what makes log tools slow.
    """
    classify = matcher.classify
    lines = 0
    hits: Counter[tuple[str, str | None, str | None]] = Counter()
    for count, found in _guarded(matching(stream, NEEDLES, splitter), getattr(stream, "name", None)):
        lines += count
        hits.update(map(classify, decode_batch(found)))
    tally.lines = lines
    for (result, set_name, pattern), n in hits.items():
        if result == "login":
            tally.login += n
        elif result == "ignored":
            tally.ignored += n
        else:
            continue
        tally.hits[set_name or "", pattern or ""] += n
