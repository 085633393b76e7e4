"""Replace a small file so that readers, and a crash, see the old content or the new, never half.

Thin I/O, shared by the state file, the log checkpoints and the status file: write a
temporary file in the same directory, fsync it, rename it over the target, fsync the
directory (without that last step a power cut can undo the rename). And when a file
cannot be used, ``set_aside`` renames it, with the time, rather than deleting what may be
evidence.

Neither follows a symbolic link planted in the directory: the temporary file is created
with ``O_CREAT | O_EXCL | O_NOFOLLOW`` under a random name (an existing name, link or not,
fails and another is drawn), and ``rename`` replaces a link at the target, never its target.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path


def write(path: str | os.PathLike[str], data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically and durably; the file gets ``mode``.

    Raises:
        OSError: the directory is not writable, the disk is full, ...; the old file is left
            as it was and no temporary file stays behind.
    """
    target = Path(path)
    fd, temp = _create_temporary(target)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fchmod(out.fileno(), mode)
            os.fsync(out.fileno())
        os.replace(temp, target)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise
    fsync_directory(target.parent)


def _create_temporary(target: Path) -> tuple[int, Path]:
    """Create ``.NAME.RANDOM.tmp`` beside ``target``, mode 0600, never through a link."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(100):
        temp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(temp, flags, 0o600), temp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {target}")


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Make a rename in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def set_aside(path: str | os.PathLike[str], now: float | None = None) -> Path:
    """Rename an unusable ``path`` to ``NAME.corrupt-YYYYmmddTHHMMSSZ[.N]``; return the new name.

    Raises:
        OSError: it could not be renamed.
    """
    source = Path(path)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    aside = source.with_name(f"{source.name}.corrupt-{stamp}")
    number = 1
    while aside.exists() or aside.is_symlink():
        number += 1
        aside = source.with_name(f"{source.name}.corrupt-{stamp}.{number}")
    os.rename(source, aside)
    return aside
