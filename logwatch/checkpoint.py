"""Save and restore where each followed log was read up to, atomically, in the state directory.

One small JSON file per followed log path. It names every file still being read for that
path (a rotated file still being drained, then the live one) by device, inode, offset and
a fingerprint of the file's first line, so that a restart after a clean stop, a crash or
SIGKILL resumes exactly where the last saved batch ended.

Why atomic (temporary file, fsync, rename, fsync of the directory): a checkpoint torn by a
crash or a full disk would either skip lines (a login never acted on) or make us start over.
With rename, a reader sees the old checkpoint or the new one, never a mix.

Why a corrupt checkpoint starts at the end of the file (and says so in one line): it is
the same as a first start. Guessing an offset inside a file could hand on half a line;
re-reading a whole log could re-grant stale logins to a flood of clients. The corrupt file
is renamed aside, like an unreadable ``--state`` file (see ``state.py``): it may be evidence.
So is one that must not be trusted (``safefile``: a symbolic link, not a regular file, not
the daemon's own, writable by others, over ``MAX_BYTES``): read through a link, a planted
checkpoint would choose where reading resumes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from logwatch import atomic, safefile

log = logging.getLogger("relaywatch.checkpoint")

#: Format version written into every file; a file with another version is treated as corrupt.
VERSION = 1
#: A checkpoint larger than this (1 MiB; one names a few files in about 100 bytes each) is
#: refused unread.
MAX_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class FilePosition:
    """Where reading of one open file stands.

    Attributes:
        device: ``st_dev`` of the file.
        inode: ``st_ino`` of the file.
        offset: bytes up to and including the newline of the last line handed on.
        fingerprint: hash of the file's first line ("" while the file has no complete line);
            together with the inode it tells the same file from a new one that got the
            inode of a deleted log.
    """

    device: int
    inode: int
    offset: int
    fingerprint: str


@dataclass(frozen=True, slots=True)
class LogCheckpoint:
    """The resume state of one followed log path.

    Attributes:
        path: the log path as configured (``--log``), absolute.
        files: the files to resume, oldest first: rotated files that were still being
            drained, then the live file. Usually exactly one.
    """

    path: str
    files: tuple[FilePosition, ...]


def checkpoint_file(state_dir: str | os.PathLike[str], path: str) -> Path:
    """Return the checkpoint file of log ``path`` inside ``state_dir``.

    The name carries the log's base name (for the admin reading the directory) and a hash
    of its absolute path (so two logs with the same base name never share a file).
    """
    absolute = os.path.abspath(path)
    digest = hashlib.sha256(absolute.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    base = "".join(c if c.isalnum() or c in "._-" else "_" for c in os.path.basename(absolute))
    return Path(state_dir) / f"tail-{base[:64]}-{digest}.json"


def save(state_dir: str | os.PathLike[str], checkpoint: LogCheckpoint) -> None:
    """Write ``checkpoint`` so that a crash at any moment leaves the old or the new one.

    Raises:
        OSError: the state directory cannot be written (the caller keeps the previous
            checkpoint and retries; no line is lost, some may be re-read).
    """
    target = checkpoint_file(state_dir, checkpoint.path)
    doc = {
        "version": VERSION,
        "path": os.path.abspath(checkpoint.path),
        "files": [
            {"device": f.device, "inode": f.inode, "offset": f.offset, "fingerprint": f.fingerprint}
            for f in checkpoint.files
        ],
    }
    data = (json.dumps(doc, separators=(",", ":")) + "\n").encode()
    atomic.write(target, data)


def load(state_dir: str | os.PathLike[str], path: str, now: float | None = None) -> LogCheckpoint | None:
    """Return the saved checkpoint of log ``path``, or None to start at the end of the file.

    None means there is none (a first start) or it is unusable; an unusable one (corrupt,
    or refused by ``safefile``) is reported in one line naming the file and what was
    wrong, and renamed to ``NAME.corrupt-YYYYmmddTHHMMSSZ`` (from ``now``, default the clock).
    """
    target = checkpoint_file(state_dir, path)
    try:
        raw = safefile.read(target, MAX_BYTES, writer=True)
    except FileNotFoundError:
        return None
    except safefile.Refused as exc:
        aside = _set_aside(target, now)
        log.warning("checkpoint %s: refused (%s); %s; starting %s at its end", target, exc.strerror, aside, path)
        return None
    except OSError as exc:
        log.warning("checkpoint %s: cannot read (%s); starting %s at its end", target, exc.strerror, path)
        return None
    try:
        return _parse(raw, os.path.abspath(path))
    except (ValueError, TypeError, KeyError) as exc:
        aside = _set_aside(target, now)
        log.warning("checkpoint %s: corrupt (%s); %s; starting %s at its end", target, exc, aside, path)
        return None


def _parse(raw: bytes, path: str) -> LogCheckpoint:
    doc = safefile.loads(raw)
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        raise ValueError(f"expected a JSON object with version {VERSION}")
    if doc.get("path") != path:
        raise ValueError(f"it is for {doc.get('path')!r}, expected {path!r}")
    files = []
    for item in doc["files"]:
        device, inode, offset, fingerprint = (item[k] for k in ("device", "inode", "offset", "fingerprint"))
        if not all(type(v) is int and 0 <= v < bound for v, bound in ((device, 1 << 64), (inode, 1 << 64),
                                                                       (offset, 1 << 63))):
            raise ValueError("device, inode and offset must be non-negative integers (below 2**64, 2**64, 2**63)")
        if not isinstance(fingerprint, str):
            raise ValueError("fingerprint must be a string")
        files.append(FilePosition(device, inode, offset, fingerprint))
    if not files:
        raise ValueError("no files listed")
    return LogCheckpoint(path, tuple(files))


def _set_aside(target: Path, now: float | None) -> str:
    try:
        aside = atomic.set_aside(target, now)
    except OSError as exc:
        return f"could not move it aside ({exc.strerror})"
    return f"moved to {aside.name}"
