"""Atomic file writes: a temporary file in the target's directory, fsync, then rename.

A reader sees either the old complete file or the new complete one, never a partial one: the data
go to ``.<name>.<random>.tmp`` beside the target, are flushed and fsynced, and the temporary file
is moved over the target with :func:`os.replace` (atomic for a same-directory rename on POSIX and
Windows); finally the directory is fsynced so that the rename survives a crash. An exception while
writing removes the temporary file and leaves the target as it was.

This is the lowest place of the library that writes files (the ``io`` layer); the command line's
outputs (:mod:`lattice_ml.cli.output`) use it too.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

__all__ = ["atomic_open_binary", "atomic_write_bytes", "fsync_directory"]


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
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
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
