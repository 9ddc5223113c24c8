"""Output of the ``lattice-ml`` command: atomic writes and the run directory.

Every file is written to a temporary file in the target's directory, flushed and fsynced, then
moved over the target with :func:`os.replace` (atomic on POSIX and Windows for a same-directory
rename). A reader therefore sees either the old complete file or the new complete file, never a
partial one, and an exception during serialisation or writing removes the temporary file and
leaves the target untouched.

``summary.json`` is written last, by :func:`lattice_ml.cli.main.main`, after the run has
finished: its presence marks a complete run. :func:`prepare_out_dir` refuses a directory that
already holds one unless asked to overwrite, and then deletes it *first*, so a rerun that fails
can never leave the old summary looking like the result of the new run.
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
    "RUN_OUTPUTS",
    "json_default",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_save_npz",
    "prepare_out_dir",
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
RUN_OUTPUTS = (SUMMARY_NAME, HISTORY_NAME, CHECKPOINT_NAME, CONFIG_NAME)
"""Files of a run, removed (summary first) when a directory is overwritten."""


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


def prepare_out_dir(path: str | os.PathLike | None = None, overwrite: bool = False) -> Path:
    """Create (if needed) and return the output directory of a run.

    ``None`` gives a new ``lattice-ml-runs/<UTC timestamp>`` folder under the current directory
    (with ``-1``, ``-2``, ... appended if that name is taken). An existing directory is used
    as it is, unless it holds a ``summary.json`` (a completed run) or a ``checkpoint.ckpt`` (an
    unfinished run that ``lattice-ml run --resume`` can continue): then :class:`OutputError`,
    or with ``overwrite=True`` the old ``summary.json`` is deleted first, then the other run
    outputs (``history.npz``, ``checkpoint.ckpt``, ``config.toml``).
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
    summary, checkpoint = out / SUMMARY_NAME, out / CHECKPOINT_NAME
    if not overwrite and checkpoint.exists() and not summary.exists():
        raise OutputError(f"{out} holds {CHECKPOINT_NAME} of an unfinished run; continue it with "
                          f"`lattice-ml run --resume {out}`, or choose another --out or pass "
                          "--overwrite")
    if summary.exists() or summary.is_symlink() or checkpoint.exists():
        if not overwrite:
            raise OutputError(f"{out} already holds {SUMMARY_NAME} from an earlier run; choose "
                              "another --out or pass --overwrite")
        try:
            for name in RUN_OUTPUTS:  # summary.json first
                target = out / name
                if target.is_dir() and not target.is_symlink():
                    raise OutputError(f"cannot overwrite {target}: it is a directory")
                target.unlink(missing_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot remove the earlier outputs in {out}: "
                              f"{exc.strerror or exc}") from None
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output directory {out}: {exc.strerror or exc}"
                          ) from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputError(f"output directory {out} is not writable")
    return out
