"""Output of the ``lattice-ml`` command: atomic writes and the run directory.

Every file is written to a temporary file in the target's directory, flushed and fsynced, then
moved over the target with :func:`os.replace` (atomic on POSIX and Windows for a same-directory
rename). A reader therefore sees either the old complete file or the new complete file, never a
partial one, and an exception during serialisation or writing removes the temporary file and
leaves the target untouched.

``summary.json`` is written last, by :func:`lattice_ml.cli.main.main`, after the run has
finished: its presence marks a complete run. A run holds :class:`RunLock` on its directory from
before its first write to its end, so two runs never share one. :func:`check_out_dir` refuses a
directory that holds a completed or unfinished run unless asked to overwrite; then
:func:`set_aside` moves the earlier outputs into ``previous-run/`` (summary first, so nothing
looks complete), the new run starts clean, and the earlier run is deleted only once the new
summary is written, or moved back when the new run fails.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lattice_ml.io.atomic import atomic_open_binary, fsync_directory

__all__ = [
    "OutputError",
    "SUMMARY_NAME",
    "HISTORY_NAME",
    "CONFIG_NAME",
    "CHECKPOINT_NAME",
    "TRAINING_NAME",
    "PLOTS_NAME",
    "RUN_OUTPUTS",
    "json_default",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_save_npz",
    "prepare_out_dir",
    "check_out_dir",
    "set_aside",
    "restore_previous",
    "discard_previous",
    "RunLock",
    "default_out_dir",
]

SUMMARY_NAME = "summary.json"
"""Written last; its presence marks a complete run."""
HISTORY_NAME = "history.npz"
"""Per-chain histories written by the run."""
CONFIG_NAME = "config.toml"
"""The resolved configuration of the run, written before it starts."""
CHECKPOINT_NAME = "checkpoint.ckpt"
"""The state of an unfinished run (:mod:`lattice_ml.io.checkpoint`); ``run --resume`` reads it."""
TRAINING_NAME = "training.npz"
"""The flow's training history (loss, ESS, gradient norm, learning rate per step) of a flow run."""
CONFIGS_NAME = "configs"
"""Folder of the configurations saved during a run (``[output]``)."""
PLOTS_NAME = "plots"
"""Folder of ``lattice-ml plot``'s pictures of the run."""
RUN_OUTPUTS = (SUMMARY_NAME, HISTORY_NAME, TRAINING_NAME, CHECKPOINT_NAME, CONFIG_NAME)
"""Files of a run, set aside (summary first) when a directory is overwritten."""


class OutputError(ValueError):
    """A problem with the output location (exists with a summary, not a directory, unwritable)."""


def json_default(obj: Any) -> Any:
    """``default=`` hook for :func:`json.dumps`: NumPy scalars and arrays, paths, sets.

    NumPy integers become ``int``, floats ``float``, booleans ``bool``, arrays nested lists
    (CuPy and other array-API arrays are copied to the host first); complex numbers become
    ``[re, im]``. Raises ``TypeError`` for anything else, as :mod:`json` expects.
    """
    if isinstance(obj, np.generic):
        if isinstance(obj, np.complexfloating):
            return [float(obj.real), float(obj.imag)]
        return obj.item()
    if isinstance(obj, np.ndarray):
        if np.iscomplexobj(obj):
            return np.stack([obj.real, obj.imag], axis=-1).tolist()
        return obj.tolist()
    if isinstance(obj, complex):
        return [obj.real, obj.imag]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if hasattr(obj, "__array_namespace__") or hasattr(obj, "__cuda_array_interface__"):
        from lattice_ml.backend import to_numpy

        return json_default(to_numpy(obj))
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serializable")


# The atomic-write machinery lives in the io layer (lattice_ml.io.atomic), so that file
# formats and checkpoints below the command line use the same code.
_fsync_dir = fsync_directory
_atomic_binary = atomic_open_binary


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically (temporary file, fsync, ``os.replace``)."""
    data = text.encode(encoding)  # encoding errors surface before anything is created
    with _atomic_binary(path) as fh:
        fh.write(data)


def _nonfinite_path(obj: Any, where: str = "") -> str | None:
    """Dotted location of the first NaN or infinity in a JSON-like object, if any."""
    if isinstance(obj, float) or isinstance(obj, np.floating):
        return None if math.isfinite(float(obj)) else (where or "<top>")
    if isinstance(obj, np.ndarray) and obj.dtype.kind in "fc":
        return None if np.all(np.isfinite(obj)) else (where or "<top>")
    if isinstance(obj, dict):
        for k, v in obj.items():
            found = _nonfinite_path(v, f"{where}.{k}" if where else str(k))
            if found:
                return found
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            found = _nonfinite_path(v, f"{where}[{i}]")
            if found:
                return found
    return None


def atomic_write_json(path: str | os.PathLike, obj: Any, *, sort_keys: bool = False,
                      indent: int = 2, default: Callable[[Any], Any] = json_default) -> None:
    """Write ``obj`` as JSON (indent 2, trailing newline) to ``path`` atomically.

    The object is serialised completely before any file is touched. NaN and infinities are
    rejected (strict JSON has no such values): ``ValueError`` naming the key that holds one,
    and ``path`` is left as it was.
    """
    try:
        text = json.dumps(obj, indent=indent, sort_keys=sort_keys, allow_nan=False,
                          default=default, ensure_ascii=False)
    except ValueError as exc:
        where = _nonfinite_path(obj)
        at = f" at {where}" if where else ""
        raise ValueError(f"cannot write {path}: NaN or infinity{at} ({exc})") from None
    except TypeError as exc:
        raise TypeError(f"cannot write {path}: {exc}") from None
    atomic_write_text(path, text + "\n")


def atomic_save_npz(path: str | os.PathLike, **arrays: Any) -> None:
    """Save ``arrays`` (name → array) as an uncompressed ``.npz`` at exactly ``path``, atomically.

    Arrays of other namespaces (CuPy, array-api-strict) are copied to NumPy first. Unlike
    :func:`numpy.savez` with a file name, no ``.npz`` suffix is appended.
    """
    from lattice_ml.backend import to_numpy

    host = {}
    for name, a in arrays.items():
        host[name] = a if isinstance(a, np.ndarray) else (
            np.asarray(a) if np.isscalar(a) or isinstance(a, (list, tuple)) else to_numpy(a))
    with _atomic_binary(path) as fh:
        np.savez(fh, **host)


def default_out_dir(base: str | os.PathLike | None = None,
                    now: _dt.datetime | None = None) -> Path:
    """``<base or cwd>/lattice-ml-runs/<UTC timestamp>``, e.g. ``20250102T030405Z``."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    root = Path(base) if base is not None else Path.cwd()
    return root / "lattice-ml-runs" / now.strftime("%Y%m%dT%H%M%SZ")


def prepare_out_dir(path: str | os.PathLike | None = None) -> Path:
    """Create (if needed) and return the output directory of a run; nothing in it is touched.

    ``None`` gives a new ``lattice-ml-runs/<UTC timestamp>`` folder under the current directory
    (with ``-1``, ``-2``, ... appended if that name is taken). Whether an existing directory may
    be used is decided under its lock, by :func:`check_out_dir`.
    """
    if path is None:
        base = default_out_dir()
        out = base
        n = 0
        while out.exists():
            n += 1
            out = base.with_name(f"{base.name}-{n}")
    else:
        out = Path(path)
    if out.exists() and not out.is_dir():
        raise OutputError(f"output path {out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output directory {out}: {exc.strerror or exc}"
                          ) from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputError(f"output directory {out} is not writable")
    return out


def check_out_dir(out: Path, overwrite: bool = False) -> None:
    """Refuse a directory that holds a completed run (``summary.json``) or an unfinished one
    (``checkpoint.ckpt``) unless ``overwrite``; call it holding the directory's :class:`RunLock`."""
    summary, checkpoint = out / SUMMARY_NAME, out / CHECKPOINT_NAME
    if overwrite:
        return
    if checkpoint.exists() and not summary.exists():
        raise OutputError(f"{out} holds {CHECKPOINT_NAME} of an unfinished run; continue it with "
                          f"`lattice-ml run --resume {out}`, or choose another --out or pass "
                          "--overwrite")
    if summary.exists() or summary.is_symlink():
        raise OutputError(f"{out} already holds {SUMMARY_NAME} from an earlier run; choose "
                          "another --out or pass --overwrite")


PREVIOUS_NAME = "previous-run"
"""Where ``--overwrite`` keeps the earlier run's outputs until the new run has completed."""
LOCK_NAME = ".lattice-ml.lock"
"""The lock file of an output directory (:class:`RunLock`)."""


def set_aside(out: Path) -> Path | None:
    """Move the earlier run's outputs of ``out`` (``summary.json`` first) into
    ``out/previous-run/``; returns that folder, or ``None`` when there was nothing to move.

    The new run then starts in a clean directory, and the old one is only deleted
    (:func:`discard_previous`) once the new summary is written, or put back
    (:func:`restore_previous`) when the new run fails."""
    names = [n for n in (*RUN_OUTPUTS, CONFIGS_NAME, PLOTS_NAME) if (out / n).exists() or
             (out / n).is_symlink()]
    if not names:
        return None
    aside = out / PREVIOUS_NAME
    if aside.exists():
        raise OutputError(f"{aside} exists (kept from an earlier --overwrite that did not "
                          "finish); move or delete it first")
    try:
        aside.mkdir()
        for name in names:
            os.replace(out / name, aside / name)
    except OSError as exc:
        raise OutputError(f"cannot move the earlier outputs of {out} aside: "
                          f"{exc.strerror or exc}") from None
    _fsync_dir(out)
    return aside


def restore_previous(out: Path, aside: Path | None) -> None:
    """Remove a failed run's outputs from ``out`` and move the earlier run back from ``aside``."""
    import shutil

    if aside is None:
        return
    for name in (SUMMARY_NAME, HISTORY_NAME, CHECKPOINT_NAME, CONFIG_NAME, CONFIGS_NAME):
        target = out / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)
    # summary.json last: the directory looks complete only when everything is back
    for name in sorted(os.listdir(aside), key=lambda n: n == SUMMARY_NAME):
        os.replace(aside / name, out / name)
    aside.rmdir()
    _fsync_dir(out)


def discard_previous(aside: Path | None) -> None:
    """Delete the earlier run kept by :func:`set_aside` (the new one has completed)."""
    import shutil

    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


class RunLock:
    """An exclusive lock on an output directory for the life of one ``lattice-ml`` process.

    ``fcntl.flock`` on ``DIR/.lattice-ml.lock`` (released by the kernel when the process ends,
    however it ends, so a killed run leaves no stale lock, only a file that the next run
    reuses); the file holds the holder's PID, host and start time, which a refused second run
    names, and is removed when the lock is released normally. Where ``fcntl`` does not exist
    (Windows) the lock is not taken.
    """

    def __init__(self, out: Path):
        self.path = Path(out) / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return self
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 4096).decode("utf-8", "replace").strip() or "unknown"
                os.close(fd)
                raise OutputError(f"{self.path.parent} is in use by another lattice-ml run "
                                  f"({holder}); wait for it to finish or choose another --out"
                                  ) from None
            # the holder before us removes the file on release: if we locked a file that is no
            # longer the one at the path, a third process may lock the new one; try again
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        import socket

        os.ftruncate(fd, 0)
        started = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, started {started}\n"
                 .encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)  # before the release: see __enter__
            os.close(self._fd)  # releases the lock
            self._fd = None
