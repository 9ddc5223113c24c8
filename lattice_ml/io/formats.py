"""One entry point for every gauge-file format: detection, :func:`read_gauge`,
:func:`write_gauge` and :func:`inspect_gauge`.

Formats: ``"nersc"``, ``"ildg"`` (LIME), ``"openqcd"``, ``"hdf5"`` (lattice-ml ensembles), and,
for reading only, ``"checkpoint"`` (the run checkpoints of ``lattice-ml run``, kind ``"run"``,
:mod:`.checkpoint`). Detection reads the first bytes: ``BEGIN_HEADER`` (NERSC), the LIME magic
number 0x456789ab (ILDG), the HDF5 signature, the checkpoint magic ``LMLCKPT\0``; otherwise a
file whose first 24 bytes are a plausible openQCD header (even extents) and whose size matches
is openQCD. Links come back in the library layout ``[batch, D, *sites, N, N]`` (time =
direction 0); NERSC, ILDG and openQCD files hold one 4D SU(3) configuration (batch 1), an HDF5
ensemble any number of configurations of any group, a run checkpoint the field of each chain
(batch = chains: links, or a scalar field ``[chains, *sites]``).

Every reader ends with a check of the data (:func:`._common.check_data`): links in U(1)/SU(N)
(no NaN/inf, ``max |U^dag U - 1|`` and ``max |det U - 1|`` within the tolerance of
:func:`lattice_ml.groups.check_links`), scalar fields finite; ``read_gauge(check=True)``
refuses a file that fails it as it refuses a checksum mismatch.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from ._common import GaugeFileError, GaugeFileInfo, HeaderCheck, check_data, deliver
from .checkpoint import MAGIC as CHECKPOINT_MAGIC
from .checkpoint import CheckpointError, load_checkpoint
from .hdf5 import Ensemble, _is_gauge, is_hdf5, select, write_ensemble
from .ildg import read_ildg, write_ildg
from .lime import is_lime
from .nersc import read_nersc, write_nersc
from .openqcd import read_openqcd, write_openqcd

__all__ = ["FORMATS", "READABLE_FORMATS", "detect_format", "format_from_extension", "read_gauge",
           "write_gauge", "inspect_gauge", "HDF5_PLAQUETTE_TOL"]

FORMATS = ("nersc", "ildg", "openqcd", "hdf5")
"""The formats that :func:`write_gauge` writes (and every reader reads)."""
READABLE_FORMATS = FORMATS + ("checkpoint",)
"""The formats that :func:`read_gauge` and :func:`inspect_gauge` read."""
_EXTENSIONS = {".nersc": "nersc", ".lime": "ildg", ".ildg": "ildg", ".h5": "hdf5",
               ".hdf5": "hdf5", ".openqcd": "openqcd", ".oqcd": "openqcd"}
HDF5_PLAQUETTE_TOL = 1e-12
"""Largest accepted difference between the plaquette an ensemble recorded at append time and the
plaquette of the configuration read back (the same float64 computation on the same data)."""


def _check_format(fmt: str, writing: bool = False) -> str:
    name = str(fmt).lower()
    aliases = {"lime": "ildg", "h5": "hdf5", "oqcd": "openqcd", "ckpt": "checkpoint"}
    name = aliases.get(name, name)
    if writing and name == "checkpoint":
        raise ValueError("checkpoint files are read here, not written: lattice-ml run writes "
                         "them (lattice_ml.io.save_checkpoint); choose one of "
                         f"{', '.join(FORMATS)}")
    if name not in READABLE_FORMATS:
        raise ValueError(f"unknown gauge-file format {fmt!r}; choose one of "
                         f"{', '.join(FORMATS if writing else READABLE_FORMATS)}")
    return name


def format_from_extension(path) -> str | None:
    """Format named by the file extension (``.nersc``, ``.lime``/``.ildg``,
    ``.openqcd``/``.oqcd``, ``.h5``/``.hdf5``), or None."""
    return _EXTENSIONS.get(Path(path).suffix.lower())


def detect_format(path) -> str:
    """The format of an existing file, from its content (see the module docstring)."""
    path = str(path)
    with open(path, "rb") as fh:
        head = fh.read(24)
    if head.startswith(b"BEGIN_HEADER"):
        return "nersc"
    if is_lime(head):
        return "ildg"
    if is_hdf5(head):
        return "hdf5"
    if head.startswith(CHECKPOINT_MAGIC):
        return "checkpoint"
    if len(head) == 24:
        dims = struct.unpack("<4i", head[:16])
        if all(2 <= n <= 1 << 16 and n % 2 == 0 for n in dims):
            volume = int(np.prod(dims, dtype=np.int64))
            if os.path.getsize(path) == 24 + volume * 4 * 18 * 8:
                return "openqcd"
    raise GaugeFileError(f"{path}: cannot tell the format (not NERSC, ILDG/LIME, HDF5, openQCD "
                         "or a checkpoint); name it with format=")


def _hdf5_info(path: str, index):
    with Ensemble(path, "r") as ens:
        U = ens.configurations(index)
        n = ens.n_configurations
        sel = select(index, n)
        stored = ens.plaquettes
        meta = ens.metadata
        hist = {name: list(ens._f["history"][name].shape[:1]) + [int(
            ens._f["history"][name].attrs["n"])] + list(ens._f["history"][name].shape[2:])
            for name in ens.history_names}
    item = U.shape[1:]
    gauge = stored is not None
    checks = []
    if gauge:
        from ._common import plaquette_and_trace

        computed = np.array([plaquette_and_trace(u)[0] for u in U])
        want = stored[sel]
        diff = float(np.max(np.abs(want - computed))) if computed.size else 0.0
        worst = int(np.argmax(np.abs(want - computed))) if computed.size else 0
        checks.append(HeaderCheck(
            "plaquette (recorded at append, worst configuration)", float(want[worst]),
            float(computed[worst]), bool(diff <= HDF5_PLAQUETTE_TOL), HDF5_PLAQUETTE_TOL))
    precision = 32 if U.dtype in (np.complex64, np.float32) else 64
    info = GaugeFileInfo(
        path=path, format="hdf5", lattice=tuple(item[1:-2]) if gauge else tuple(item),
        N=int(item[-1]) if gauge else 0, precision=precision, endian="native",
        storage=f"{item[-1]}x{item[-1]}" if gauge else None,
        header={"metadata": meta, "histories": hist,
                "configuration shape": list(item), "dtype": str(U.dtype)},
        checks=checks, n_configs=n)
    check_data(info, U)
    return U, info


def _checkpoint_info(path: str, index):
    """The field of a run checkpoint (``lattice-ml run``): ``[chains, ...]`` and its info; the
    header holds the kind, ``next_update`` of ``total_updates``, the theory and sampler of the
    stored config, and the chains read."""
    try:
        ck = load_checkpoint(path)
    except CheckpointError as exc:
        raise GaugeFileError(str(exc)) from None
    state = ck.state
    if ck.kind != "run" or not isinstance(state, dict) or "field" not in state:
        raise GaugeFileError(f"{path} is a {ck.kind!r} checkpoint without a field; only run "
                             "checkpoints (kind 'run', written by lattice-ml run) hold one")
    field = np.asarray(state["field"])
    if field.ndim < 2:
        raise GaugeFileError(f"{path}: the checkpoint's field has shape {list(field.shape)}, "
                             "not [chains, ...]")
    sel = select(index, field.shape[0])
    U = field[sel]
    item = field.shape[1:]
    gauge = _is_gauge(item, field.dtype)
    lattice = tuple(item[1:-2]) if gauge else tuple(item)
    config = state.get("config") if isinstance(state.get("config"), dict) else {}
    stored_shape = (config.get("lattice") or {}).get("shape")
    checks = [HeaderCheck("lattice.shape of the config", stored_shape, list(lattice),
                          None if stored_shape is None else list(stored_shape) == list(lattice))]
    header = {"kind": ck.kind, "created": ck.created,
              "next_update": state.get("next_update"), "total_updates": state.get("total_updates"),
              "theory": config.get("theory"), "sampler": (config.get("sampler") or {}).get("name"),
              "chains": np.arange(field.shape[0])[sel].tolist(), "field shape": list(field.shape),
              "dtype": str(field.dtype), "versions": ck.versions}
    precision = 32 if field.dtype in (np.complex64, np.float32) else 64
    info = GaugeFileInfo(path=path, format="checkpoint", lattice=lattice,
                         N=int(item[-1]) if gauge else 0, precision=precision, endian="little",
                         header=header, checks=checks, n_configs=int(U.shape[0]))
    check_data(info, U)
    return U, info


def inspect_gauge(path, format: str | None = None, *, index=None):
    """Read a file without raising on failed checks: ``(U_host, info)`` with ``U_host`` a NumPy
    array ``[batch, D, *sites, N, N]`` and ``info`` a :class:`~._common.GaugeFileInfo` whose
    ``checks`` say which stored values (checksums, plaquette, link trace) agree with the data.
    Structural problems (bad header, wrong size, truncation) still raise
    :class:`~._common.GaugeFileError`. ``index`` selects configurations of an HDF5 ensemble or
    chains of a run checkpoint (default: all)."""
    path = str(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    fmt = _check_format(format) if format else detect_format(path)
    if fmt == "hdf5":
        return _hdf5_info(path, index)
    if fmt == "checkpoint":
        return _checkpoint_info(path, index)
    if index not in (None, 0, -1):
        raise ValueError(f"{fmt} files hold one configuration; index {index!r} is out of range")
    reader = {"nersc": read_nersc, "ildg": read_ildg, "openqcd": read_openqcd}[fmt]
    U0, info = reader(path, check=False)
    return U0[None], info


def read_gauge(path, format: str | None = None, *, xp=None, dtype=None, device=None,
               check: bool = True, index=None):
    """Read gauge links from a file of any supported format.

    Parameters
    ----------
    path : str or Path
    format : {"nersc", "ildg", "openqcd", "hdf5", "checkpoint"}, optional
        Detected from the content when omitted.
    xp : array namespace, optional
        Namespace of the result (NumPy by default; e.g. ``array_api_strict`` or CuPy).
    dtype : "complex64" or "complex128" (or the xp dtype), optional
        Default: complex64 for 32-bit files, complex128 for 64-bit files.
    check : bool
        Verify the stored checksums, plaquette and link trace, and that the links are in
        U(1)/SU(N) (scalar fields: finite), and raise :class:`~._common.GaugeFileError` naming
        any failure (stored vs computed, the largest deviation).
    index : int, slice or list, optional
        HDF5 and checkpoints only: which configurations or chains (default all).

    Returns
    -------
    Links ``[batch, D, L_0, ..., L_{D-1}, N, N]`` (batch 1 except for HDF5 ensembles and
    checkpoints).
    """
    U, info = inspect_gauge(path, format, index=index)
    if check:
        info.raise_on_failure()
    return deliver(U, info.precision, xp=xp, dtype=dtype, device=device)


def write_gauge(path, U, format: str, **opts) -> GaugeFileInfo:
    """Write links ``U[batch, D, *sites, N, N]`` in ``format``, atomically (temporary file +
    rename: a failed write leaves no partial file).

    Options: NERSC ``precision`` (64/32), ``endian`` ('big'/'little'), ``storage``
    ('3x3'/'3x2'), ``ensemble_id``, ``ensemble_label``, ``sequence_number``; ILDG
    ``precision``, ``lfn``; openQCD none; HDF5 ``metadata`` (dict), ``histories``,
    ``trajectory``, ``check``. NERSC, ILDG and openQCD need one 4D SU(3) configuration
    (batch 1). NaN/inf and links outside U(1)/SU(N) are a ``ValueError`` before any file is
    created (HDF5 scalar fields: NaN/inf). Checkpoints are not written here.
    """
    fmt = _check_format(format, writing=True)
    if fmt == "nersc":
        return write_nersc(path, U, **opts)
    if fmt == "ildg":
        return write_ildg(path, U, **opts)
    if fmt == "openqcd":
        if opts:
            raise TypeError(f"openQCD files take no options, got {', '.join(opts)}")
        return write_openqcd(path, U)
    write_ensemble(path, U, **opts)
    return _hdf5_info(str(path), None)[1]
