"""Atomic file writes: a temporary file in the target's directory, fsync, then rename.

A reader sees either the old complete file or the new complete one, never a partial one: the data
go to ``.<name>.<random>.tmp`` beside the target, are flushed and fsynced, and the temporary file
is moved over the target with :func:`os.replace` (atomic for a same-directory rename on POSIX and
Windows); finally the directory is fsynced so that the rename survives a crash. An exception while
writing removes the temporary file and leaves the target as it was.

File mode: the new file gets the mode that ``open(path, "wb")`` would give it: an existing
target keeps its permission bits, a new one gets ``0o666 & ~umask`` (``tempfile.mkstemp`` alone
would make every file 0600). Owner and group are those of the writing process.

This is the lowest place of the library that writes files (the ``io`` layer); the command line's
outputs (:mod:`lattice_ml.cli.output`) use it too.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import IO, Iterator

__all__ = ["atomic_open_binary", "atomic_write_bytes", "fsync_directory", "temporary_beside"]


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows.

    Linux reports it in ``/proc/self/status``. Elsewhere it is read with :func:`os.umask` twice;
    that is not thread-safe (a file another thread creates in between gets the temporary
    umask), so the temporary value is 0o077, which errs on the private side.
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def _mode_for(target: Path) -> int:
    """Permission bits for a file written to ``target``: those of the existing target, else
    ``0o666 & ~umask`` (what :func:`open` gives a new file)."""
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        return 0o666 & ~current_umask()


def temporary_beside(target: str | os.PathLike) -> tuple[int, str]:
    """``(fd, name)`` of a new temporary file ``.<name>.<random>.tmp`` in the directory of
    ``target``, with the mode the target will have (see the module docstring)."""
    target = Path(target)
    directory = target.parent if str(target.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    try:
        if os.name == "posix":
            os.fchmod(fd, _mode_for(target))
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    return fd, tmp


def fsync_directory(directory: str | os.PathLike) -> None:
    """Make a rename in ``directory`` durable (POSIX); skipped where directories cannot be
    opened."""
    if os.name != "posix":  # pragma: no cover - Windows
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open_binary(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """Yield a binary file object; when the block ends without an exception its content
    replaces ``path`` atomically. On an exception the temporary file is removed and ``path`` is
    untouched."""
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    fd, tmp = temporary_beside(target)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_directory(directory)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see the module docstring)."""
    with atomic_open_binary(path) as fh:
        fh.write(data)
