"""Shared pieces of the gauge-file readers and writers: errors, header checks, layout maps.

Every reader works on the host with NumPy and hands the links over as ``[1, D, *sites, N, N]``
(the library layout, time = direction 0 = first site axis) in the namespace asked for.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

from ..backend import asarray, to_numpy

__all__ = ["GaugeFileError", "HeaderCheck", "GaugeFileInfo", "plaquette_and_trace",
           "xyzt_file_order", "from_xyzt_file_order", "single_su3_config", "deliver",
           "read_exactly", "float_dtype"]


class GaugeFileError(ValueError):
    """A gauge-configuration file that cannot be read as the format it claims: bad header,
    wrong size, or a header value (checksum, plaquette, link trace) that the data contradict.
    The message names the file, the item, and the expected and found values."""


@dataclass
class HeaderCheck:
    """One consistency check of a file: a value stored in the file against the data.

    ``ok`` is True (agrees), False (mismatch) or None (the file stores no such value).
    ``tolerance`` is the largest accepted absolute difference for floating-point values
    (None: exact comparison).
    """

    name: str
    stored: Any
    computed: Any
    ok: bool | None
    tolerance: float | None = None

    def describe(self) -> str:
        if self.ok is None:
            return f"{self.name}: not stored in the file (computed {self._fmt(self.computed)})"
        status = "ok" if self.ok else "MISMATCH"
        tol = "" if self.tolerance is None else f", tolerance {self.tolerance:.1e}"
        diff = ""
        if self.tolerance is not None and self.stored is not None:
            diff = f", |difference| {abs(float(self.stored) - float(self.computed)):.2e}"
        return (f"{self.name}: {status} (file {self._fmt(self.stored)}, data "
                f"{self._fmt(self.computed)}{diff}{tol})")

    @staticmethod
    def _fmt(v) -> str:
        if isinstance(v, float):
            return f"{v:.15g}"
        return str(v)


def compare_float(name: str, stored: float | None, computed: float, tol: float) -> HeaderCheck:
    """HeaderCheck of a stored float (None: not stored) against a computed one."""
    if stored is None:
        return HeaderCheck(name, None, computed, None, tol)
    ok = bool(math.isfinite(stored) and abs(stored - computed) <= tol)
    return HeaderCheck(name, stored, computed, ok, tol)


@dataclass
class GaugeFileInfo:
    """What a reader found in a file (see :func:`lattice_ml.io.inspect_gauge`).

    ``lattice`` is the site shape in library order ``(L_0 = time, L_1, L_2, L_3)``; ``header``
    the raw header entries of the format; ``checks`` the consistency checks of stored values
    against the data.
    """

    path: str
    format: str
    lattice: tuple[int, ...]
    N: int
    precision: int | None
    endian: str | None
    storage: str | None = None
    header: dict = field(default_factory=dict)
    checks: list[HeaderCheck] = field(default_factory=list)
    n_configs: int = 1

    @property
    def failed(self) -> list[HeaderCheck]:
        return [c for c in self.checks if c.ok is False]

    def raise_on_failure(self) -> None:
        """:class:`GaugeFileError` naming every failed check (expected vs found)."""
        bad = self.failed
        if bad:
            raise GaugeFileError(f"{self.path} ({self.format}): "
                                 + "; ".join(c.describe() for c in bad))


def float_dtype(bits: int, endian: str) -> np.dtype:
    """NumPy dtype of an IEEE float of ``bits`` (32/64) in ``endian`` ('big'/'little') order."""
    if bits not in (32, 64):
        raise ValueError(f"precision must be 32 or 64 bits, not {bits!r}")
    if endian not in ("big", "little"):
        raise ValueError(f"endian must be 'big' or 'little', not {endian!r}")
    return np.dtype(("<" if endian == "little" else ">") + ("f4" if bits == 32 else "f8"))


def read_exactly(fh: BinaryIO, n: int, what: str, path: str) -> bytes:
    """Read ``n`` bytes or raise :class:`GaugeFileError` (a truncated file) naming ``what``."""
    data = fh.read(n)
    if len(data) != n:
        raise GaugeFileError(f"{path}: file is truncated: {what} needs {n} bytes, only "
                             f"{len(data)} remain")
    return data


def file_size(path) -> int:
    return os.stat(path).st_size


# ------------------------------------------------------------------------------------------
# physics of the header values (host NumPy, float64)
# ------------------------------------------------------------------------------------------
def plaquette_and_trace(U0: np.ndarray) -> tuple[float, float]:
    """Average plaquette and link trace of one configuration ``U0[D, *sites, N, N]`` (host).

    ``P = <Re Tr U_mu nu(x)> / N`` over all sites and the D(D-1)/2 planes (periodic), and
    ``T = <Re Tr U_mu(x)> / N`` over all D V links; both in float64 (the NERSC normalisation,
    1 for the unit configuration).
    """
    from ..gauge.observables import average_plaquette  # gauge is a lower layer

    U = np.asarray(U0, dtype=np.complex128)[None]
    N = U.shape[-1]
    plaq = float(to_numpy(average_plaquette(U))[0])
    trace = float(np.mean(np.real(np.trace(U, axis1=-2, axis2=-1)))) / N
    return plaq, trace


# ------------------------------------------------------------------------------------------
# layouts
# ------------------------------------------------------------------------------------------
# NERSC and ILDG store [t][z][y][x][mu], mu = x, y, z, t. The library stores [mu][t][x][y][z]
# with mu = t, x, y, z. So file direction k is library direction (k + 1) % 4.
_LIB_FROM_FILE_MU = [3, 0, 1, 2]  # library mu -> file mu
_FILE_FROM_LIB_MU = [1, 2, 3, 0]  # file mu -> library mu


def from_xyzt_file_order(F: np.ndarray) -> np.ndarray:
    """``F[t, z, y, x, mu_file, N, N]`` (mu_file = x, y, z, t) -> ``U0[mu, t, x, y, z, N, N]``
    (mu = t, x, y, z): ``U0[mu, t, x, y, z] = F[t, z, y, x, (mu + 3) % 4]``."""
    return np.ascontiguousarray(
        np.transpose(F[..., _LIB_FROM_FILE_MU, :, :], (4, 0, 3, 2, 1, 5, 6)))


def xyzt_file_order(U0: np.ndarray) -> np.ndarray:
    """Inverse of :func:`from_xyzt_file_order`: ``U0[mu, t, x, y, z]`` -> ``F[t, z, y, x, k]``
    with ``F[..., k] = U0[(k + 1) % 4]``."""
    F = np.transpose(U0, (1, 4, 3, 2, 0, 5, 6))
    return np.ascontiguousarray(F[..., _FILE_FROM_LIB_MU, :, :])


def single_su3_config(U, fmt: str) -> np.ndarray:
    """Host complex128 copy ``[4, L0, L1, L2, L3, 3, 3]`` of a one-configuration 4D SU(3) link
    array ``U[1, 4, L0, L1, L2, L3, 3, 3]``; ``ValueError`` naming the problem otherwise."""
    shape = tuple(getattr(U, "shape", ()))
    if len(shape) != 8 or shape[1] != 4 or shape[-2:] != (3, 3):
        raise ValueError(f"{fmt} files hold one 4D SU(3) configuration: links must have layout "
                         f"[1, 4, L0, L1, L2, L3, 3, 3], got shape {shape}")
    if shape[0] != 1:
        raise ValueError(f"{fmt} files hold one configuration but the batch axis has "
                         f"{shape[0]}; write U[i:i+1] for each configuration, or use HDF5")
    host = to_numpy(U)
    if not np.iscomplexobj(host):
        raise ValueError(f"links must be complex (complex64 or complex128), got {host.dtype}")
    if not np.all(np.isfinite(host)):
        raise ValueError("links contain non-finite (NaN or inf) entries")
    return np.asarray(host[0], dtype=np.complex128)


def deliver(U_host: np.ndarray, bits: int, xp=None, dtype=None, device=None):
    """Host links ``[batch, ...]`` as an array of ``xp`` (default NumPy) with ``dtype``
    (default: complex64 for 32-bit files, complex128 for 64-bit files)."""
    if xp is None:
        import array_api_compat.numpy as xp
    if dtype is None:
        dtype = xp.complex64 if bits == 32 else xp.complex128
    elif isinstance(dtype, str):
        if dtype not in ("complex64", "complex128"):
            raise ValueError(f"dtype must be 'complex64' or 'complex128', not {dtype!r}")
        dtype = getattr(xp, dtype)
    host = np.ascontiguousarray(U_host.astype(np.complex64 if dtype == xp.complex64
                                              else np.complex128))
    return asarray(host, xp, dtype=dtype, device=device)
