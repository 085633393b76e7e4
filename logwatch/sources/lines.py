"""Cut a byte stream into complete, length-capped lines.

Pure: bytes in, bytes out. Every source (a replayed file, standard input, a followed log)
feeds what it read through a ``LineSplitter``, so all of them treat bad input alike:

- a partial last line waits for its newline (a writer may be half-way through it);
- a line longer than ``cap`` keeps its first ``cap`` bytes and the rest, up to the next
  newline, is dropped without being held in memory (a 10 MB line costs ``cap`` bytes);
- CRLF endings and the NUL bytes that a copytruncate hole leaves at the start of a line
  are removed by ``decode``; invalid UTF-8 becomes U+FFFD.

Why cap and not reject: Dovecot's longest login line is well under 1 KiB, so a capped line
can never be a login that fullmatch would accept (its end is gone) -- cutting is safe, and
the line still counts, so line numbers stay true.
"""

from __future__ import annotations

import re

#: Bytes of a line that are examined. Dovecot truncates user names and fields long before
#: this, so no real login line is ever cut.
DEFAULT_CAP = 16384


class LineSplitter:
    """Turn chunks of bytes into complete lines.

    Args:
        cap: the most bytes kept of any one line.

    Attributes:
        consumed: bytes of input up to and including the newline of the last complete line
            returned; a follower saves this as its resume offset.
        cut: how many lines were longer than ``cap`` (and so were cut).
    """

    __slots__ = ("cap", "consumed", "cut", "_pending", "_discarding", "_held")

    def __init__(self, cap: int = DEFAULT_CAP) -> None:
        if cap < 1:
            raise ValueError("cap must be positive")
        self.cap = cap
        self.consumed = 0
        self.cut = 0
        self._pending = b""
        self._discarding = False
        self._held = 0  # bytes of the incomplete line received so far, cut or not

    def feed(self, data: bytes) -> list[bytes]:
        """Return the complete lines that ``data`` finishes, without their newlines."""
        if not data:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            self._hold(data)
            return []
        head, tail = data[: end + 1], data[end + 1 :]
        lines = head.split(b"\n")
        lines.pop()  # empty: head ends with a newline
        if self._discarding:
            # The first "line" is the rest of an over-long line already cut and returned.
            lines[0] = self._pending
            self._discarding = False
        elif self._pending:
            lines[0] = self._pending + lines[0]
        self._pending = b""
        self.consumed += self._held + len(head)
        self._held = 0
        if max(map(len, lines)) > self.cap:
            lines = self._cap_all(lines)
        self._hold(tail)
        return lines

    def feed_matching(self, data: bytes, needle: bytes | tuple[bytes, ...]) -> tuple[int, list[bytes]]:
        """Like ``feed``, but return how many lines ``data`` completes and only those of them
        that contain ``needle`` (or one of several: the first is the common one, the others
        rare enough that most chunks hold none).

        A line counts as containing ``needle`` if the part of it that is kept (see ``cap``)
        does. Why: on a busy mail server four lines in five are not from a Dovecot login process.
        Finding the needle in the whole chunk and cutting out just the lines around it
        spares making an object for every other line, which is most of what a bare
        ``for line in f`` loop costs. ``cut`` then counts the cut lines that contain the
        needle, and lines cut across chunks; a long line without it is never looked at.
        """
        needles = (needle,) if isinstance(needle, bytes) else needle
        if not data:
            return 0, []
        end = data.rfind(b"\n")
        if end < 0:
            self._hold(data)
            return 0, []
        first_end = data.find(b"\n")
        first = data[:first_end]
        if self._discarding:
            first = self._pending  # the rest of this line was dropped as it came
            self._discarding = False
        elif self._pending:
            first = self._pending + first
        self._pending = b""
        # Every newline is at or before ``end``. Why not ``data.count``: it compares byte by
        # byte, while ``replace`` jumps from newline to newline (memchr) and copies the runs
        # between them; on log text that is three times faster, for one chunk-sized copy.
        count = len(data) - len(data.replace(b"\n", b""))
        self.consumed += self._held + end + 1
        self._held = 0
        cap = self.cap
        found = []
        if len(first) > cap:
            first = self._cap_one(first)
        if any(first.find(n) >= 0 for n in needles):
            found.append(first)
        rfind = data.rfind
        # Each match runs from a needle to the end of its line, so the search goes on
        # from the next line: a line with the needle twice is found once.
        lines = [(rfind(b"\n", 0, pos) + 1, stop)
                 for pos, stop in map(re.Match.span, _to_line_end(needles[0]).finditer(data, first_end + 1, end))]
        for rare in needles[1:]:
            if data.find(rare, first_end + 1, end) >= 0:  # one fast scan; most chunks have none
                lines += [(rfind(b"\n", 0, pos) + 1, stop)
                          for pos, stop in map(re.Match.span, _to_line_end(rare).finditer(data, first_end + 1, end))]
                lines = sorted(dict(lines).items())  # in file order, a line with both needles once
        for start, stop in lines:
            line = data[start:stop]
            if stop - start > cap:
                line = self._cap_one(line)  # only the kept part can ever match
                if not any(line.find(n) >= 0 for n in needles):
                    continue
            found.append(line)
        self._hold(data[end + 1:])
        return count, found

    def finish(self) -> bytes | None:
        """At the end of a stream that will not grow: return a last line that had no newline.

        A file being followed never calls this: its partial line is still being written.
        """
        if self._discarding or self._pending:
            line = self._pending
            self._pending = b""
            self._discarding = False
            return line
        return None

    @property
    def pending(self) -> int:
        """Bytes held of a line not yet complete (at most ``cap``)."""
        return len(self._pending)

    def _hold(self, data: bytes) -> None:
        self._held += len(data)
        if self._discarding or not data:
            return
        if not self._pending and data[:1] == b"\0":
            data = data.lstrip(b"\0")  # a copytruncate hole: it must not fill the cap
        self._pending += data
        if len(self._pending) > self.cap:
            # Keep what a match may examine; drop the rest of the line as it arrives.
            self._pending = self._pending[: self.cap]
            self._discarding = True
            self.cut += 1

    def _cap_all(self, lines: list[bytes]) -> list[bytes]:
        cap = self.cap
        return [line if len(line) <= cap else self._cap_one(line) for line in lines]

    def _cap_one(self, line: bytes) -> bytes:
        line = line.lstrip(b"\0")  # a hole before the line is not the line
        if len(line) > self.cap:
            line = line[: self.cap]
            self.cut += 1
        return line


_FINDERS: dict[bytes, re.Pattern[bytes]] = {}


def _to_line_end(needle: bytes) -> re.Pattern[bytes]:
    """A regex from ``needle`` to the end of its line (compiled once per needle)."""
    finder = _FINDERS.get(needle)
    if finder is None:
        finder = _FINDERS[needle] = re.compile(re.escape(needle) + b"[^\n]*")
    return finder


def decode(line: bytes) -> str:
    """Return ``line`` as text: NULs of a truncation hole and a CR ending removed.

    Why strip leading NULs: after ``copytruncate`` a writer that did not open the log with
    O_APPEND goes on writing at its old offset, and the file reads as a run of NUL bytes
    followed by real lines. Without this, the first login after every such rotation would
    be lost.
    """
    if line[:1] == b"\0":
        line = line.lstrip(b"\0")
    if line[-1:] == b"\r":
        line = line[:-1]
    return line.decode("utf-8", "replace")


def decode_batch(raw: list[bytes]) -> tuple[str, ...]:
    """Return ``tuple(map(decode, raw))``, decoding the whole batch in one call when it can.

    Why: one ``decode`` call per line costs more than all the reading; catch-up of a 1 GB
    log spends most of its time there. A batch with no CR and no NUL at all needs none of
    ``decode``'s clean-up, and a newline can never be part of an invalid UTF-8 sequence,
    so decoding the joined batch and splitting it again gives exactly the same lines.
    """
    if not raw:
        return ()
    joined = b"\n".join(raw)
    if b"\r" in joined or b"\0" in joined:
        return tuple(map(decode, raw))
    return tuple(joined.decode("utf-8", "replace").split("\n"))
