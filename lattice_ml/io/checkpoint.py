"""Checkpoint files: arrays and JSON state in one self-checking file, written atomically.

A checkpoint holds a *state tree*: nested dicts (string keys), lists and tuples whose leaves are
``None``, booleans, integers, floats (NaN and infinities included), strings and arrays (NumPy
arrays and scalars, or arrays of any array-API namespace, copied to the host). Python floats and
integers go through JSON exactly (shortest round-trip text, arbitrary-size integers); arrays keep
their dtype, shape and every bit. :func:`load_checkpoint` gives the tree back with the same
containers (tuples stay tuples) and host NumPy arrays (big-endian arrays come back
little-endian, same values); NumPy scalars come back as NumPy scalars and Python complex
numbers as ``numpy.complex128``.

File layout (format version 1, all integers little-endian)::

    offset  size  content
    0       8     magic  b"LMLCKPT\\0"
    8       4     format version (uint32)
    12      4     reserved, 0 (uint32)
    16      8     H: bytes of the JSON header (uint64), a multiple of 64
    24      8     P: bytes of the array payload (uint64)
    32      32    SHA-256 of bytes [0, 32) followed by bytes [64, 64 + H + P)
    64      H     UTF-8 JSON header, padded with spaces
    64 + H  P     arrays, raw C-order little-endian bytes, each starting at a multiple of 64

The JSON header is ``{"format": "lattice-ml checkpoint", "kind": ..., "created": <UTC ISO
time>, "versions": {"lattice_ml", "numpy", "python"}, "arrays": [{"dtype": "<f8", "shape":
[...], "offset": ..., "nbytes": ...}, ...], "state": <tree>}``; in the tree an array leaf is
``{"__array__": i}`` (``i`` indexes ``"arrays"``; ``"scalar": true`` for a NumPy scalar) and a
tuple is ``{"__tuple__": [...]}``. Dict keys spelled ``__array__`` or ``__tuple__`` are refused.

Guarantees
----------
* **Atomic**: the file is written to a temporary file in the target's directory, flushed and
  fsynced, then renamed over the target (:func:`os.replace`), and the directory is fsynced. A
  crash leaves the old checkpoint or the new one, never a torn one.
* **Self-checking**: a truncated file, trailing bytes, a flipped byte anywhere, another file
  type or a newer format version raise :class:`CheckpointError` naming the problem (size,
  SHA-256 mismatch, magic, version) before anything of the state is used.

Training
--------
:func:`save_training_checkpoint` and :func:`load_training_checkpoint` store and restore the
state of a training loop: step, parameters (or a model with ``state_dict()`` /
``load_state_dict()``, or with ``parameters()`` / ``set_parameters()``), optimiser
(:mod:`lattice_ml.optim` ``state_dict``), random streams (:class:`~lattice_ml.backend.RandomStreams`
``state``), loss history and free extra data. Training resumed from a checkpoint is bit-identical
to uninterrupted training when the loop draws all its randomness from the saved streams.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..backend import to_numpy
from .atomic import atomic_open_binary

__all__ = [
    "CheckpointError",
    "Checkpoint",
    "FORMAT_VERSION",
    "MAGIC",
    "save_checkpoint",
    "load_checkpoint",
    "save_training_checkpoint",
    "load_training_checkpoint",
]

MAGIC = b"LMLCKPT\0"
"""First eight bytes of every checkpoint file."""
FORMAT_VERSION = 1
"""Version of the file layout written by this library (readers accept this one and older)."""
FORMAT_NAME = "lattice-ml checkpoint"

_PREAMBLE = struct.Struct("<8sIIQQ32s")  # magic, version, reserved, H, P, sha256 -> 64 bytes
_ALIGN = 64
_ARRAY, _TUPLE = "__array__", "__tuple__"
_DTYPE_KINDS = "biufc"  # bool, signed, unsigned, float, complex


class CheckpointError(ValueError):
    """A checkpoint that cannot be written or read; the message names the file and the problem."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: the state tree and the file's metadata."""

    state: Any
    kind: str
    created: str
    versions: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    path: Path | None = None


# ------------------------------------------------------------------------------------------
# state tree <-> JSON + arrays
# ------------------------------------------------------------------------------------------
def _is_array(x) -> bool:
    return isinstance(x, (np.ndarray, np.generic)) or hasattr(x, "__array_namespace__") or (
        hasattr(x, "__cuda_array_interface__"))


def _encode(node, arrays: list, where: str):
    if node is None or isinstance(node, (bool, str)):
        return node
    if isinstance(node, (int, float)) and not isinstance(node, np.generic):
        return node
    if isinstance(node, complex):
        node = np.complex128(node)
    if _is_array(node):
        scalar = isinstance(node, np.generic)
        a = np.asarray(node) if scalar or isinstance(node, np.ndarray) else to_numpy(node)
        if a.dtype.kind not in _DTYPE_KINDS:
            raise CheckpointError(f"cannot store the array at {where}: dtype {a.dtype} is not "
                                  "boolean, integer, float or complex")
        arrays.append(a)
        ref = {_ARRAY: len(arrays) - 1}
        if scalar:
            ref["scalar"] = True
        return ref
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if not isinstance(k, str):
                raise CheckpointError(f"cannot store {where}: dict key {k!r} is not a string")
            if k in (_ARRAY, _TUPLE):
                raise CheckpointError(f"cannot store {where}: the dict key {k!r} is reserved")
            out[k] = _encode(v, arrays, f"{where}[{k!r}]")
        return out
    if isinstance(node, list):
        return [_encode(v, arrays, f"{where}[{i}]") for i, v in enumerate(node)]
    if isinstance(node, tuple):
        return {_TUPLE: [_encode(v, arrays, f"{where}[{i}]") for i, v in enumerate(node)]}
    raise CheckpointError(f"cannot store {where}: a {type(node).__name__} is not a state value "
                          "(dict, list, tuple, None, bool, int, float, str or array)")


def _decode(node, arrays: list):
    if isinstance(node, dict):
        if _ARRAY in node:
            a = arrays[node[_ARRAY]]
            return a[()] if node.get("scalar") else a
        if _TUPLE in node:
            return tuple(_decode(v, arrays) for v in node[_TUPLE])
        return {k: _decode(v, arrays) for k, v in node.items()}
    if isinstance(node, list):
        return [_decode(v, arrays) for v in node]
    return node


def _host_bytes(a: np.ndarray) -> tuple[np.ndarray, str]:
    """A C-contiguous little-endian copy-or-view of ``a`` and its dtype string."""
    big = a.dtype.byteorder == ">" or (a.dtype.byteorder == "=" and not np.little_endian)
    dt = a.dtype.newbyteorder("<") if big else a.dtype
    a = a.astype(dt, copy=False)
    if not a.flags.c_contiguous:  # (np.ascontiguousarray would turn 0-d into 1-d)
        a = a.copy(order="C")
    return a, a.dtype.str


def _pad(n: int) -> int:
    return (-n) % _ALIGN


# ------------------------------------------------------------------------------------------
# write
# ------------------------------------------------------------------------------------------
def save_checkpoint(path: str | os.PathLike, state: Any, *, kind: str = "state") -> int:
    """Write ``state`` (a state tree, see the module docstring) to ``path`` atomically.

    ``kind`` is a free word stored in the header and checked by :func:`load_checkpoint`
    (``"run"`` for ``lattice-ml run``, ``"training"`` for training loops). Returns the number of
    bytes written. Raises :class:`CheckpointError` for a value that cannot be stored (naming
    where it is in the tree) before any file is created; ``OSError`` from the file system.
    """
    arrays: list[np.ndarray] = []
    tree = _encode(state, arrays, "state")
    host, table, offset = [], [], 0
    for a in arrays:
        a, dt = _host_bytes(a)
        table.append({"dtype": dt, "shape": list(a.shape), "offset": offset, "nbytes": a.nbytes})
        host.append(a)
        offset += a.nbytes + _pad(a.nbytes)
    payload_len = offset
    header = {
        "format": FORMAT_NAME, "kind": str(kind),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"lattice_ml": __version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "arrays": table, "state": tree,
    }
    text = json.dumps(header, ensure_ascii=False, allow_nan=True, separators=(",", ":"))
    head = text.encode("utf-8")
    head += b" " * _pad(len(head))

    digest = hashlib.sha256()
    with atomic_open_binary(path) as fh:
        fh.write(b"\0" * _PREAMBLE.size)  # the preamble, with the digest, is written last
        fh.write(head)
        body = [head]
        for a in host:
            view = memoryview(a.reshape(-1).view(np.uint8))
            pad = b"\0" * _pad(a.nbytes)
            fh.write(view)
            fh.write(pad)
            body.extend((view, pad))
        digest.update(_PREAMBLE.pack(MAGIC, FORMAT_VERSION, 0, len(head), payload_len,
                                     b"\0" * 32)[:32])
        for chunk in body:
            digest.update(chunk)
        fh.seek(0)
        fh.write(_PREAMBLE.pack(MAGIC, FORMAT_VERSION, 0, len(head), payload_len,
                                digest.digest()))
    return _PREAMBLE.size + len(head) + payload_len


# ------------------------------------------------------------------------------------------
# read
# ------------------------------------------------------------------------------------------
def load_checkpoint(path: str | os.PathLike, kind: str | None = None) -> Checkpoint:
    """Read and verify the checkpoint at ``path``; return a :class:`Checkpoint`.

    Checks, in order: the file exists and is a regular file; its first 64 bytes are a checkpoint
    preamble (magic, a known format version, reserved field 0); its size is the size that the
    preamble announces (truncated files and trailing bytes are refused); the SHA-256 of its
    contents is the recorded one; the header is a valid table of arrays; and, if ``kind`` is
    given, the kind matches. Each failure is a :class:`CheckpointError` naming the file and the
    problem. Arrays come back as host NumPy arrays (writable; they share one buffer).
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint {p} does not exist")
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} is not a regular file")
    size = p.stat().st_size
    with open(p, "rb") as fh:
        pre = fh.read(_PREAMBLE.size)
        if len(pre) < _PREAMBLE.size:
            if not MAGIC.startswith(pre[: len(MAGIC)]):
                raise CheckpointError(f"{p} is not a lattice-ml checkpoint (wrong magic bytes)")
            raise CheckpointError(f"checkpoint {p} is truncated: {size} bytes, shorter than the "
                                  f"{_PREAMBLE.size}-byte preamble")
        magic, version, reserved, h_len, p_len, recorded = _PREAMBLE.unpack(pre)
        if magic != MAGIC:
            raise CheckpointError(f"{p} is not a lattice-ml checkpoint (wrong magic bytes "
                                  f"{magic!r})")
        if version > FORMAT_VERSION or version < 1:
            raise CheckpointError(f"checkpoint {p} has format version {version}; this library "
                                  f"reads versions 1 to {FORMAT_VERSION} (corrupt, or written by a "
                                  "newer lattice-ml)")
        expected = _PREAMBLE.size + h_len + p_len
        if size < expected:
            raise CheckpointError(f"checkpoint {p} is truncated: {size} bytes, its preamble "
                                  f"announces {expected}")
        if size > expected:
            raise CheckpointError(f"checkpoint {p} has {size - expected} bytes after the end "
                                  f"announced by its preamble ({expected} bytes)")
        body = bytearray(h_len + p_len)
        got = fh.readinto(body)
    if got != len(body):  # the file shrank while we read it
        raise CheckpointError(f"checkpoint {p} is truncated: read {got + _PREAMBLE.size} of "
                              f"{expected} bytes")
    digest = hashlib.sha256(pre[:32])
    digest.update(body)
    if digest.digest() != recorded or reserved != 0:
        raise CheckpointError(f"checkpoint {p} is corrupt: SHA-256 mismatch (contents "
                              f"{digest.hexdigest()[:16]}..., recorded {recorded.hex()[:16]}...)")
    try:
        header = json.loads(bytes(body[:h_len]).decode("utf-8"))
        if header.get("format") != FORMAT_NAME:
            raise ValueError(f"format field {header.get('format')!r}")
        arrays = []
        for i, e in enumerate(header["arrays"]):
            dt = np.dtype(e["dtype"])
            shape = tuple(int(s) for s in e["shape"])
            count = int(np.prod(shape, dtype=np.int64))
            start, nbytes = h_len + int(e["offset"]), int(e["nbytes"])
            if dt.kind not in _DTYPE_KINDS or nbytes != count * dt.itemsize or (
                    start < h_len or start + nbytes > len(body)):
                raise ValueError(f"array {i} ({e}) does not fit the payload")
            arrays.append(np.frombuffer(body, dtype=dt, count=count, offset=start).reshape(shape))
        state = _decode(header["state"], arrays)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise CheckpointError(f"checkpoint {p} has an invalid header: {exc}") from None
    found = header.get("kind")
    if kind is not None and found != kind:
        raise CheckpointError(f"{p} is a {found!r} checkpoint, not a {kind!r} checkpoint")
    return Checkpoint(state=state, kind=found, created=header.get("created", ""),
                      versions=header.get("versions", {}), format_version=version, path=p)


# ------------------------------------------------------------------------------------------
# training loops
# ------------------------------------------------------------------------------------------
def _model_state(model):
    if hasattr(model, "state_dict"):
        return {"protocol": "state_dict", "state": model.state_dict()}
    if hasattr(model, "parameters"):
        return {"protocol": "parameters", "state": model.parameters()}
    raise CheckpointError(f"model {type(model).__name__} has neither state_dict() nor "
                          "parameters()")


def save_training_checkpoint(path: str | os.PathLike, *, step: int, parameters: Any = None,
                             model: Any = None, optimizer: Any = None, rng: Any = None,
                             history: Any = None, extra: Any = None) -> int:
    """Write the state of a training loop after ``step`` completed updates (kind ``"training"``).

    Parameters
    ----------
    step : int
        Number of completed training steps; the loop resumes at step ``step``.
    parameters : state tree, optional
        Parameters held outside a model (e.g. ``theta`` passed to ``optimizer.step``).
    model : optional
        An object with ``state_dict()`` / ``load_state_dict()`` (flows) or ``parameters()`` /
        ``set_parameters()`` (:class:`~lattice_ml.smearing.StoutSmearing`).
    optimizer : optional
        A :mod:`lattice_ml.optim` optimiser (its ``state_dict()`` is stored).
    rng : optional
        :class:`~lattice_ml.backend.RandomStreams` (its ``state()`` is stored).
    history, extra : state trees, optional
        The loss history and anything else the loop needs (a dict of lists, arrays, numbers).

    Returns the number of bytes written; see :func:`save_checkpoint` for the guarantees.
    """
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise CheckpointError(f"step must be a non-negative integer, not {step!r}")
    state = {
        "step": int(step),
        "parameters": parameters,
        "model": _model_state(model) if model is not None else None,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "rng": rng.state() if rng is not None else None,
        "history": history,
        "extra": extra,
    }
    return save_checkpoint(path, state, kind="training")


def load_training_checkpoint(path: str | os.PathLike, *, model: Any = None,
                             optimizer: Any = None, rng: Any = None) -> dict:
    """Read a training checkpoint and restore ``model``, ``optimizer`` and ``rng`` in place.

    Returns ``{"step", "parameters", "history", "extra"}`` (arrays on the host as NumPy; move
    them to your namespace with :func:`lattice_ml.backend.asarray`). A ``model``, ``optimizer``
    or ``rng`` passed here that the checkpoint does not hold is a :class:`CheckpointError`,
    as is a random-stream state of another number of chains or an optimiser of another type.
    """
    ck = load_checkpoint(path, kind="training")
    s = ck.state
    for name, obj in (("model", model), ("optimizer", optimizer), ("rng", rng)):
        if obj is not None and s.get(name) is None:
            raise CheckpointError(f"training checkpoint {ck.path} holds no {name} state")
    try:
        if model is not None:
            m = s["model"]
            if m["protocol"] == "state_dict":
                model.load_state_dict(m["state"])
            else:
                model.set_parameters(m["state"])
        if optimizer is not None:
            optimizer.load_state_dict(s["optimizer"])
        if rng is not None:
            rng.set_state(s["rng"])
    except (ValueError, KeyError, AttributeError) as exc:
        raise CheckpointError(f"training checkpoint {ck.path} does not fit: {exc}") from None
    return {k: s.get(k) for k in ("step", "parameters", "history", "extra")}
