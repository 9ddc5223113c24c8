"""HDF5 ensembles (h5py): configurations, observable histories and run metadata in one file.

File layout (format ``"lattice-ml ensemble"``, version 1)::

    /                    attrs: format, format_version
    /configurations      [n_cfg, *shape] (e.g. links [n_cfg, D, L_0, ..., L_{D-1}, N, N],
                         time = direction 0; or scalar fields [n_cfg, L_0, ...]); chunked,
                         Fletcher-32 checksummed, attr n = committed count, attr layout
    /trajectory, /chain  [n_cfg] int64: Monte Carlo time and chain of each configuration
    /plaquette           [n_cfg] float64, gauge links only: <Re Tr U_p>/N when stored
    /history/<name>      [chain, time, ...] (the layout of lattice_ml.stats), attr n = committed
                         length along time
    /metadata            JSON text: config, versions, seed, rng_state, acceptance, ...

Appending is in place: data are written first, then the committed count ``n`` is raised and the
file flushed, so entries of an append that a crash interrupted are ignored on reading (HDF5
itself is not journaled; for files that must never be torn use whole-file writes, which
:func:`write_ensemble` makes atomic). Every chunk carries a Fletcher-32 checksum that HDF5
verifies on reading; a corrupted chunk raises :class:`~._common.GaugeFileError`.

What is refused: configurations with NaN or inf (any field), and gauge links (complex arrays of
the layout ``[D, *sites, N, N]``) outside U(1)/SU(N) by :func:`lattice_ml.groups.check_links`
(at its tolerance for their dtype); ``check=False`` stores complex arrays of the link layout
that are not group elements (momenta, forces), never NaN. A refused append or write leaves the
file as it was (no dataset created, no temporary file left).
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import __version__
from ..backend import asarray, to_numpy
from ._common import GaugeFileError, check_finite, plaquette_and_trace
from .atomic import fsync_directory, temporary_beside

__all__ = ["Ensemble", "write_ensemble", "is_hdf5", "select", "FORMAT_NAME", "FORMAT_VERSION"]

FORMAT_NAME = "lattice-ml ensemble"
FORMAT_VERSION = 1
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_CHUNK_BYTES = 1 << 26


def is_hdf5(head: bytes) -> bool:
    """Whether the first bytes of a file are the HDF5 signature."""
    return head[:8] == HDF5_SIGNATURE


def _h5py():
    try:
        import h5py
    except ImportError as exc:  # pragma: no cover - h5py is a dependency
        raise ImportError("HDF5 ensembles need h5py (pip install h5py)") from exc
    return h5py


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return [float(obj.real), float(obj.imag)] if np.iscomplexobj(obj) else obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist() if not np.iscomplexobj(obj) else \
            np.stack([obj.real, obj.imag], -1).tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "__array_namespace__"):
        return _json_default(to_numpy(obj))
    raise TypeError(f"metadata value of type {type(obj).__name__} is not JSON serialisable")


def _is_gauge(shape: Sequence[int], dtype) -> bool:
    """Links ``[*, D, L_0..L_{D-1}, N, N]`` (shape without the batch axis)?"""
    return (np.issubdtype(dtype, np.complexfloating) and len(shape) >= 5
            and 2 <= shape[0] <= 4 and len(shape) == shape[0] + 3 and shape[-1] == shape[-2])


def _checked(U, check: bool = True) -> np.ndarray:
    """Host copy of configurations ``U[batch, ...]`` to store: ``ValueError`` for NaN/inf and,
    with ``check``, for gauge links outside the group (see the module docstring)."""
    from ..groups import check_links  # groups is a lower layer

    host = np.ascontiguousarray(to_numpy(U))
    if host.ndim < 2:
        raise ValueError(f"configurations must be [batch, ...], got shape {host.shape}")
    if _is_gauge(host.shape[1:], host.dtype):
        if check:
            check_links(host)
            return host
        check_finite(host, "links")
    else:
        check_finite(host)
    return host


def select(index, n: int):
    """Which of ``n`` stored configurations ``index`` picks: all (None), one (an int, negative
    from the end; kept as a slice of one), a slice, or a list of indices (in the order given,
    duplicates allowed). ``IndexError`` when out of range."""
    if index is None:
        return slice(0, n)
    if isinstance(index, (int, np.integer)):
        i = int(index) + (n if index < 0 else 0)
        if not 0 <= i < n:
            raise IndexError(f"configuration {index} out of range (the file holds {n})")
        return slice(i, i + 1)
    if isinstance(index, slice):
        return slice(*index.indices(n))
    idx = np.asarray(index, dtype=np.int64)
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise IndexError(f"configuration indices {index} out of range (the file holds {n})")
    return idx % n


def versions() -> dict:
    """Versions of lattice_ml, NumPy, h5py and Python (stored in new ensembles)."""
    return {"lattice_ml": __version__, "numpy": np.__version__,
            "h5py": _h5py().__version__, "python": platform.python_version()}


class Ensemble:
    """An HDF5 ensemble file (see the module docstring for the layout).

    Parameters
    ----------
    path : str or Path
    mode : {"r", "a", "w", "x"}
        read only; read/append (created if missing); create or truncate; create, failing if
        the file exists.
    metadata : dict, optional
        JSON-able run metadata for a new file (``versions`` is added automatically).

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, path, mode: str = "r", metadata: dict | None = None):
        if mode not in ("r", "a", "w", "x"):
            raise ValueError(f"mode must be 'r', 'a', 'w' or 'x', not {mode!r}")
        h5py = _h5py()
        self.path = str(path)
        new = mode in ("w", "x") or (mode == "a" and not os.path.exists(self.path))
        try:
            self._f = h5py.File(self.path, mode)
        except FileExistsError:
            raise
        except OSError as exc:
            if mode == "r" and not os.path.exists(self.path):
                raise FileNotFoundError(f"no such file: {self.path}") from None
            raise GaugeFileError(f"{self.path}: cannot open as HDF5 ({exc})") from None
        if new:
            self._f.attrs["format"] = FORMAT_NAME
            self._f.attrs["format_version"] = FORMAT_VERSION
            self._write_metadata({"versions": versions(), **(metadata or {})})
        else:
            fmt = self._f.attrs.get("format")
            if isinstance(fmt, bytes):
                fmt = fmt.decode()
            if fmt != FORMAT_NAME:
                self._f.close()
                raise GaugeFileError(f"{self.path}: HDF5 file is not a {FORMAT_NAME} (its "
                                     f"'format' attribute is {fmt!r})")
            version = int(self._f.attrs.get("format_version", 0))
            if version > FORMAT_VERSION:
                self._f.close()
                raise GaugeFileError(f"{self.path}: ensemble format version {version} is newer "
                                     f"than this library's {FORMAT_VERSION}")
            if metadata:
                self.update_metadata(metadata)

    # -- context --------------------------------------------------------------------------
    def close(self) -> None:
        if self._f.id.valid:
            self._f.close()

    def __enter__(self) -> "Ensemble":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- metadata -------------------------------------------------------------------------
    def _write_metadata(self, meta: dict) -> None:
        text = json.dumps(meta, default=_json_default)
        if "metadata" in self._f:
            del self._f["metadata"]
        self._f.create_dataset("metadata", data=text, dtype=_h5py().string_dtype("utf-8"))
        self._f.flush()

    @property
    def metadata(self) -> dict:
        """The run metadata (a new dict each time)."""
        if "metadata" not in self._f:
            return {}
        raw = self._f["metadata"][()]
        return json.loads(raw.decode() if isinstance(raw, bytes) else raw)

    def update_metadata(self, items: dict | None = None, **more) -> None:
        """Merge top-level keys into the metadata, e.g. ``config=..., seed=...,
        rng_state=streams.state(), acceptance=...``; values must be JSON-able (NumPy values
        are converted)."""
        meta = self.metadata
        meta.update(items or {})
        meta.update(more)
        self._write_metadata(meta)

    # -- configurations -------------------------------------------------------------------
    @property
    def n_configurations(self) -> int:
        ds = self._f.get("configurations")
        return 0 if ds is None else int(ds.attrs["n"])

    @property
    def configuration_shape(self) -> tuple[int, ...] | None:
        """Shape of one configuration (without the ensemble axis), None if empty."""
        ds = self._f.get("configurations")
        return None if ds is None else tuple(ds.shape[1:])

    def append_configurations(self, U, trajectory: int | None = None,
                              chain: Sequence[int] | None = None, *, check: bool = True) -> None:
        """Append the configurations of a batch ``U[batch, ...]`` (any namespace).

        Each gets the Monte Carlo time ``trajectory`` (default: the number of earlier appends)
        and its chain index (default ``0 .. batch - 1``). Gauge links also get their plaquette.
        The shape and dtype must match the configurations already stored. NaN/inf, and with
        ``check`` gauge links outside U(1)/SU(N), are a ``ValueError`` before anything is
        written (see the module docstring).
        """
        self._append(_checked(U, check), trajectory, chain)

    def _append(self, host: np.ndarray, trajectory, chain) -> None:
        b = host.shape[0]
        ds = self._f.get("configurations")
        if ds is None:
            item = host.shape[1:]
            per = host[0].nbytes
            chunks = (1,) + item if per <= _CHUNK_BYTES or len(item) < 3 else \
                (1, 1, 1) + item[2:]
            ds = self._f.create_dataset("configurations", shape=(0,) + item,
                                        maxshape=(None,) + item, dtype=host.dtype,
                                        chunks=chunks, fletcher32=True)
            ds.attrs["n"] = 0
            ds.attrs["layout"] = ("[n_cfg, D, L_0, ..., L_{D-1}, N, N], time = direction 0"
                                  if _is_gauge(item, host.dtype) else "[n_cfg, *field shape]")
            for name in ("trajectory", "chain"):
                self._f.create_dataset(name, shape=(0,), maxshape=(None,), dtype=np.int64,
                                       chunks=(1024,))
            if _is_gauge(item, host.dtype):
                self._f.create_dataset("plaquette", shape=(0,), maxshape=(None,),
                                       dtype=np.float64, chunks=(1024,))
        if tuple(ds.shape[1:]) != host.shape[1:] or ds.dtype != host.dtype:
            raise ValueError(f"{self.path}: configurations are {tuple(ds.shape[1:])} "
                             f"{ds.dtype}; cannot append {host.shape[1:]} {host.dtype}")
        n = int(ds.attrs["n"])
        if trajectory is None:
            prev = self._f["trajectory"][:n]
            trajectory = int(prev.max()) + 1 if n else 0
        chains = np.arange(b) if chain is None else np.asarray(chain, dtype=np.int64)
        if chains.shape != (b,):
            raise ValueError(f"chain must have one entry per configuration ({b}), got "
                             f"{chains.shape}")
        new = {"configurations": host, "trajectory": np.full(b, int(trajectory)),
               "chain": chains}
        if "plaquette" in self._f:
            new["plaquette"] = np.array([plaquette_and_trace(u)[0] for u in host])
        for name, values in new.items():
            d = self._f[name]
            d.resize(n + b, axis=0)
            d[n:n + b] = values
        self._f.flush()
        ds.attrs["n"] = n + b  # commit
        self._f.flush()

    def configurations(self, index=None, *, xp=None, dtype=None, device=None):
        """Configurations ``[k, ...]``: all (``index=None``), one (an int, kept as ``k = 1``),
        a slice or a list of indices; as an array of ``xp`` (default NumPy)."""
        n = self.n_configurations
        if n == 0:
            raise GaugeFileError(f"{self.path}: the ensemble holds no configurations")
        sel = select(index, n)
        try:
            if isinstance(sel, slice):
                host = self._f["configurations"][sel]
            else:  # h5py reads increasing, unique indices
                unique, inverse = np.unique(sel, return_inverse=True)
                host = self._f["configurations"][unique][inverse.reshape(-1)]
        except OSError as exc:
            raise GaugeFileError(f"{self.path}: configurations cannot be read, the file is "
                                 f"corrupted ({exc})") from None
        if xp is None:
            return host if dtype is None else host.astype(dtype)
        return asarray(host, xp, dtype=dtype, device=device)

    def _column(self, name: str) -> np.ndarray:
        n = self.n_configurations
        return self._f[name][:n] if name in self._f else np.zeros(0)

    @property
    def trajectories(self) -> np.ndarray:
        """Monte Carlo time of each stored configuration, ``[n_cfg]``."""
        return self._column("trajectory")

    @property
    def chains(self) -> np.ndarray:
        """Chain index of each stored configuration, ``[n_cfg]``."""
        return self._column("chain")

    @property
    def plaquettes(self) -> np.ndarray | None:
        """Plaquette recorded at each append (gauge links only), ``[n_cfg]``, else None."""
        return self._column("plaquette") if "plaquette" in self._f else None

    # -- histories ------------------------------------------------------------------------
    @property
    def history_names(self) -> list[str]:
        return sorted(self._f["history"]) if "history" in self._f else []

    def append_history(self, name: str, values) -> None:
        """Append a block ``values[chain, n_new, ...]`` (the stats layout ``[chain, time]``)
        to the history ``name``; created on first use, later blocks must match in every axis
        but time."""
        host = np.asarray(to_numpy(values))
        if host.ndim < 2:
            raise ValueError(f"history block {name!r} must be [chain, time, ...], got shape "
                             f"{host.shape} (use values[None] for a single chain)")
        if "/" in name or not name:
            raise ValueError(f"history name {name!r} must be non-empty without '/'")
        grp = self._f.require_group("history")
        if name not in grp:
            shape = (host.shape[0], 0) + host.shape[2:]
            chunk_t = max(1, min(1024, (1 << 16) // max(1, host[:, :1].nbytes)))
            ds = grp.create_dataset(name, shape=shape,
                                    maxshape=(host.shape[0], None) + host.shape[2:],
                                    dtype=host.dtype, chunks=(host.shape[0], chunk_t)
                                    + host.shape[2:], fletcher32=True)
            ds.attrs["n"] = 0
        ds = grp[name]
        if ds.shape[0] != host.shape[0] or ds.shape[2:] != host.shape[2:]:
            layout = ", ".join([str(ds.shape[0]), "time"] + [str(n) for n in ds.shape[2:]])
            raise ValueError(f"history {name!r} is [{layout}]; cannot append a block of shape "
                             f"{host.shape}")
        n = int(ds.attrs["n"])
        ds.resize(n + host.shape[1], axis=1)
        ds[:, n:n + host.shape[1]] = host.astype(ds.dtype, copy=False)
        self._f.flush()
        ds.attrs["n"] = n + host.shape[1]
        self._f.flush()

    def append_histories(self, histories: dict) -> None:
        """:meth:`append_history` for every ``name: block`` of a dict."""
        for name, block in histories.items():
            self.append_history(name, block)

    def history(self, name: str) -> np.ndarray:
        """The history ``name`` as a host array ``[chain, time, ...]``."""
        if name not in self.history_names:
            raise KeyError(f"{self.path}: no history {name!r} (have: "
                           f"{', '.join(self.history_names) or 'none'})")
        ds = self._f["history"][name]
        try:
            return ds[:, :int(ds.attrs["n"])]
        except OSError as exc:
            raise GaugeFileError(f"{self.path}: history {name!r} cannot be read, the file is "
                                 f"corrupted ({exc})") from None

    def histories(self) -> dict[str, np.ndarray]:
        """All histories, ``name -> [chain, time, ...]``."""
        return {name: self.history(name) for name in self.history_names}


def write_ensemble(path, U, *, metadata: dict | None = None, histories: dict | None = None,
                   trajectory: int | None = None, check: bool = True) -> None:
    """Write a new ensemble file holding the batch ``U[batch, ...]`` (and optional histories
    and metadata) atomically: it is built under a temporary name and renamed over ``path``.
    Configurations are checked as by :meth:`Ensemble.append_configurations` before any file
    is created."""
    host = _checked(U, check)
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    fd, tmp = temporary_beside(target)
    os.close(fd)
    try:
        with Ensemble(tmp, "w", metadata=metadata) as ens:
            ens._append(host, trajectory, None)
            if histories:
                ens.append_histories(histories)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_directory(directory)
