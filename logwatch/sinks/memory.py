"""An in-process sink that only remembers: for ledger and daemon tests, like Postfix's dict_ht.

``rows`` is what has been put and not dropped; ``published`` is what the last ``commit``
made visible, so a test can tell a batch in progress from a published one.
"""

from __future__ import annotations

from logwatch.model import Grant
from logwatch.sinks import Health, SinkOptions


class MemorySink:
    """A sink that keeps grants in a dict.

    Attributes:
        spec: ``memory:NAME``.
        rows: ip -> grant, as put and dropped so far.
        published: the rows as of the last ``commit``.
        commits: how many times ``commit`` ran.
        closed: True after ``close``.
    """

    def __init__(self, name: str) -> None:
        self.spec = f"memory:{name}"
        self.rows: dict[str, Grant] = {}
        self.published: dict[str, Grant] = {}
        self.commits = 0
        self.closed = False

    def put(self, grant: Grant) -> None:
        self._check_open()
        self.rows[grant.ip] = grant

    def drop(self, ip: str, *, early: bool = False) -> None:
        self._check_open()
        self.rows.pop(ip, None)

    def commit(self) -> None:
        self._check_open()
        self.published = dict(self.rows)
        self.commits += 1

    def health(self) -> Health:
        return Health()

    def close(self) -> None:
        self.closed = True

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError(f"{self.spec}: used after close")


def check(kind: str, name: str, options: SinkOptions) -> None:
    """Nothing can be wrong with a table in memory."""


def open_memory(kind: str, name: str, options: SinkOptions) -> MemorySink:
    """Registry entry for ``memory:NAME``."""
    return MemorySink(name)
