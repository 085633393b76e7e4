"""Tests for LineSplitter and decode: the one place every source cuts bytes into lines."""

from __future__ import annotations

import itertools
import tracemalloc

import pytest

from logwatch.sources.lines import DEFAULT_CAP, LineSplitter, decode

LOGIN = b"Jun 10 12:00:00 mx dovecot: pop3-login: Login: user=<bob>, method=PLAIN, rip=198.51.100.7, lip=192.0.2.1"


def feed_all(splitter: LineSplitter, chunks: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for c in chunks:
        out += splitter.feed(c)
    return out


def split_at(data: bytes, cuts: tuple[int, ...]) -> list[bytes]:
    bounds = (0, *cuts, len(data))
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


# -- complete lines only, capped, however the bytes arrive ------------------------------------

STREAM = b"short\n" + b"x" * 25 + b"\n" + b"exactly10!\n" + b"y" * 11 + b"\n\ntail-without-newline"
CAPPED = [b"short", b"x" * 10, b"exactly10!", b"y" * 10, b""]


@pytest.mark.parametrize("cuts", list(itertools.combinations(range(1, len(STREAM)), 2))[::7])
def test_cap_holds_across_every_chunk_boundary(cuts: tuple[int, int]) -> None:
    s = LineSplitter(cap=10)
    assert feed_all(s, split_at(STREAM, cuts)) == CAPPED
    assert s.cut == 3  # the x line, the y line, and the held tail
    assert s.finish() == b"tail-witho"


def test_byte_at_a_time_equals_one_chunk() -> None:
    one, many = LineSplitter(cap=10), LineSplitter(cap=10)
    assert feed_all(many, [bytes([b]) for b in STREAM]) == one.feed(STREAM) == CAPPED
    assert many.cut == one.cut == 3


def test_partial_line_waits_for_its_newline() -> None:
    s = LineSplitter()
    assert s.feed(LOGIN[:40]) == []
    assert s.pending == 40
    assert s.feed(LOGIN[40:] + b"\n") == [LOGIN]
    assert s.pending == 0
    assert s.finish() is None


def test_ten_megabyte_line_without_newline_uses_bounded_memory() -> None:
    s = LineSplitter()
    chunk = b"z" * 65536
    tracemalloc.start()
    try:
        for _ in range(160):  # 10 MiB, never a newline
            assert s.feed(chunk) == []
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert s.pending == DEFAULT_CAP
    assert peak < 4 * DEFAULT_CAP  # not 10 MB: what is past the cap is dropped as it arrives
    assert s.feed(b"zzz\n" + LOGIN + b"\n") == [b"z" * DEFAULT_CAP, LOGIN]
    assert s.cut == 1


def test_cap_must_be_positive() -> None:
    with pytest.raises(ValueError):
        LineSplitter(cap=0)


# -- consumed: the resume offset ---------------------------------------------------------------


def test_consumed_counts_lines_in_one_chunk() -> None:
    s = LineSplitter()
    s.feed(b"one\ntwo\nthr")
    assert s.consumed == 8


def test_consumed_counts_a_line_that_spans_feeds() -> None:
    """``consumed`` is the follower's resume offset: short, a restart re-reads half a line.

    Regression: ``consumed`` once counted only the chunk holding the newline.
    """
    s = LineSplitter(cap=4)
    s.feed(b"abc")
    s.feed(b"def\n")
    assert s.consumed == 7
    s.feed(b"ghijklmnop")  # cut at 4; the rest is still input that was consumed
    s.feed(b"q\n")
    assert s.consumed == 7 + 12


# -- decode ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (LOGIN + b"\r", LOGIN.decode()),  # CRLF from a Windows-edited or relayed log
        (b"a\rb\r", "a\rb"),  # only the final CR is an ending
        (b"line\r\r", "line\r"),
        (b"\0\0\0" + LOGIN, LOGIN.decode()),  # NUL hole after copytruncate
        (b"mid\0dle", "mid\0dle"),  # a NUL inside a line is data, kept
        (b"\xff\xfe user=<\xc3\x28>", "\ufffd\ufffd user=<\ufffd(>"),  # invalid UTF-8
        (b"caf\xc3\xa9", "café"),
        (b"", ""),
        (b"\0\0\0", ""),
    ],
)
def test_decode(raw: bytes, text: str) -> None:
    assert decode(raw) == text


def test_nul_hole_shorter_than_cap_keeps_the_line() -> None:
    s = LineSplitter()
    lines = s.feed(b"\0" * 5000 + LOGIN + b"\n")
    assert [decode(x) for x in lines] == [LOGIN.decode()]


@pytest.mark.parametrize("chunks", [1, 7, 100], ids=lambda n: f"{n}-chunks")
def test_nul_hole_longer_than_cap_keeps_the_line(chunks: int) -> None:
    """After copytruncate a writer without O_APPEND writes at its old offset, so the hole
    is as long as the log was (often megabytes), far longer than the cap.

    Regression: the hole once filled the cap and pushed the real line out of it.
    """
    data = b"\0" * 100_000 + LOGIN + b"\n" + LOGIN + b"\n"
    step = -(-len(data) // chunks)
    s = LineSplitter()
    lines = feed_all(s, [data[i : i + step] for i in range(0, len(data), step)])
    assert [decode(x) for x in lines] == [LOGIN.decode()] * 2
    assert s.cut == 0
    assert s.consumed == len(data)
