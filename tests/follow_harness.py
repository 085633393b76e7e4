"""Run the follower and its checkpoints as a process a test can SIGKILL, like the daemon will.

Usage: python tests/follow_harness.py --state DIR [--backend B] [--grace S] [--drop-dac] LOG...

Stdout, line-buffered, one record a line:
    # ready <backend>          the follower has its start positions; write from now on
    L <log>\t<line>            a line received (acted on)
    @ <json>                   the checkpoint about to be saved for a log

It acts the way the daemon must: hand on a batch's lines first, save the checkpoint after.
Why the ``@`` records: a SIGKILL can land between acting and saving. A test reads the
checkpoint that reached the disk and finds the ``@`` record equal to it; lines after that
record were acted on but not committed, and the restarted process re-reads them. That is
the daemon's contract (grants are idempotent renewals), and it lets a test check that every
line is committed exactly once across any number of kills.

``--drop-dac`` removes CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from this process, so
that file modes bind it even when it runs as root (CI does): the permission tests then
meet the kernel's real EACCES instead of a simulated one.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from logwatch import checkpoint  # noqa: E402
from logwatch.sources.tail import open_source  # noqa: E402

_CAP_VERSION_3 = 0x20080522
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_dac() -> None:
    """Give up the capabilities that let root ignore file modes (Linux capget/capset)."""
    libc = ctypes.CDLL(None, use_errno=True)
    header = _CapHeader(_CAP_VERSION_3, 0)
    data = (_CapData * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget failed")
    keep = ~((1 << _CAP_DAC_OVERRIDE) | (1 << _CAP_DAC_READ_SEARCH)) & 0xFFFFFFFF
    for field in ("effective", "permitted", "inheritable"):
        setattr(data[0], field, getattr(data[0], field) & keep)
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--state", required=True)
    ap.add_argument("--backend", default="auto", choices=("auto", "inotify", "polling"))
    ap.add_argument("--grace", type=float, default=5.0)
    ap.add_argument("--drop-dac", action="store_true")
    ap.add_argument("logs", nargs="+")
    args = ap.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
    if args.drop_dac:
        drop_dac()
    out = sys.stdout
    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    source = open_source(args.logs, args.state, backend=args.backend, grace=args.grace)
    out.write(f"# ready {source.backend}\n")
    out.flush()
    saved: dict[str, checkpoint.LogCheckpoint] = {}
    next_save = 0.0
    while not stop and not source.finished:
        batches = source.poll(0.2)
        for b in batches:
            out.write("".join(f"L {b.log}\t{line}\n" for line in b.lines))
        out.flush()
        now = time.monotonic()
        if batches or now >= next_save:  # after every batch, and at least once a second
            for cp in source.checkpoints():
                if saved.get(cp.path) != cp:
                    out.write("@ " + json.dumps([cp.path, [list(_f(p)) for p in cp.files]]) + "\n")
                    out.flush()
                    checkpoint.save(args.state, cp)
                    saved[cp.path] = cp
            next_save = now + 1.0
    for cp in source.checkpoints():
        checkpoint.save(args.state, cp)
    source.close()
    return 0


def _f(p: checkpoint.FilePosition) -> tuple[int, int, int, str]:
    return (p.device, p.inode, p.offset, p.fingerprint)


if __name__ == "__main__":
    raise SystemExit(main())
