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
           "read_exactly", "float_dtype", "link_deviations", "check_data",
           "open_boundary_as_unit", "check_finite"]


class GaugeFileError(ValueError):
    """A gauge-configuration file that cannot be read as the format it claims: bad header,
    wrong size, or a header value (checksum, plaquette, link trace) that the data contradict.
    The message names the file, the item, and the expected and found values."""


@dataclass
class HeaderCheck:
    """One consistency check of a file: a value stored in the file against the data.

    ``ok`` is True (agrees), False (mismatch) or None (the file stores no such value).
    ``tolerance`` is the largest accepted absolute difference for floating-point values
    (None: exact comparison). A check of the data alone (links in the group, finite values)
    stores nothing (``stored`` None) and says what it found in ``detail``.
    """

    name: str
    stored: Any
    computed: Any
    ok: bool | None
    tolerance: float | None = None
    detail: str | None = None

    def describe(self) -> str:
        if self.detail is not None:
            return f"{self.name}: {'ok' if self.ok else 'FAILED'} ({self.detail})"
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
    against the data, and last the check of the data themselves (:func:`check_data`).
    ``N`` is 0 for scalar fields. ``unitarity`` and ``det_deviation`` are ``max |U^dag U - 1|``
    and ``max |det U - 1|`` of the links read (None for scalar fields; ``det_deviation`` None
    for U(1); NaN for non-finite links).
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
    unitarity: float | None = None
    det_deviation: float | None = None

    @property
    def failed(self) -> list[HeaderCheck]:
        return [c for c in self.checks if c.ok is False]

    def raise_on_failure(self) -> None:
        """:class:`GaugeFileError` naming every failed check (expected vs found)."""
        bad = self.failed
        if bad:
            raise GaugeFileError(f"{self.path} ({self.format}): "
                                 + "; ".join(c.describe() for c in bad))


def link_deviations(U: np.ndarray) -> tuple[float, float | None]:
    """``(max |U^dagger U - 1|, max |det U - 1|)`` of host links ``[..., N, N]``; the second is
    None for U(1) (N = 1); NaN where the links hold NaN or inf."""
    from ..groups import det  # groups is a lower layer

    N = U.shape[-1]
    with np.errstate(invalid="ignore", over="ignore"):
        dev = float(np.max(np.abs(np.conj(np.swapaxes(U, -1, -2)) @ U - np.eye(N))))
        ddev = float(np.max(np.abs(det(U) - 1.0))) if N > 1 else None
    return dev, ddev


def check_finite(values: np.ndarray, name: str = "field values") -> None:
    """``ValueError`` naming how many entries of ``values`` are NaN or inf (if any)."""
    bad = int(np.count_nonzero(~np.isfinite(values)))
    if bad:
        raise ValueError(f"{name} contain {bad} non-finite (NaN or inf) entries")


def open_boundary_as_unit(U0: np.ndarray) -> np.ndarray:
    """One configuration ``U0[4, N0, ...]`` with the time links at ``x0 = N0 - 1`` that are exactly
    zero (openQCD's open boundary conditions) replaced by unit matrices, so that they pass the
    group check; every other link as it is (a zero link elsewhere still fails)."""
    zero = np.all(U0[0, -1] == 0, axis=(-2, -1))
    if not zero.any():
        return U0
    out = U0.copy()
    out[0, -1][zero] = np.eye(U0.shape[-1], dtype=U0.dtype)
    return out


def check_data(info: GaugeFileInfo, U: np.ndarray) -> None:
    """Check the data of a file read, ``U[batch, ...]`` (host), and append the result to
    ``info.checks``: gauge links (``info.N >= 1``) must lie in U(1)/SU(N) by
    :func:`lattice_ml.groups.check_links` (no NaN/inf, ``max |U^dag U - 1|`` and for SU(N)
    ``max |det U - 1|`` within its tolerance for the dtype a reader delivers: 1e-5 for 32-bit
    data, 1e-10 for 64-bit); scalar fields (``info.N == 0``) must be finite. Also records
    ``info.unitarity`` and ``info.det_deviation``."""
    from ..groups import _default_tol, check_links  # groups is a lower layer

    if info.N == 0:
        try:
            check_finite(U)
            ok, detail = True, "no NaN or inf"
        except ValueError as exc:
            ok, detail = False, str(exc)
        info.checks.append(HeaderCheck("field values finite", None, None, ok, detail=detail))
        return
    V = U.astype(np.complex64) if info.precision == 32 else U
    tol = _default_tol(np, V.dtype)
    info.unitarity, info.det_deviation = link_deviations(V)
    found = f"max |U^dag U - 1| = {info.unitarity:.2e}"
    if info.det_deviation is not None:
        found += f", max |det U - 1| = {info.det_deviation:.2e}"
    try:
        check_links(V, info.N)
        ok, detail = True, f"{found}, tolerance {tol:.0e}"
    except ValueError as exc:
        ok, detail = False, str(exc)
    group = "U(1)" if info.N == 1 else f"SU({info.N})"
    info.checks.append(HeaderCheck(f"links in {group}", None, info.unitarity, ok, tol, detail))


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


def single_su3_config(U, fmt: str, *, open_boundary: bool = False) -> np.ndarray:
    """Host complex128 copy ``[4, L0, L1, L2, L3, 3, 3]`` of a one-configuration 4D SU(3) link
    array ``U[1, 4, L0, L1, L2, L3, 3, 3]``; ``ValueError`` naming the problem otherwise: another
    shape, a real dtype, NaN/inf, links not in SU(3) (:func:`lattice_ml.groups.check_links`, at
    its tolerance for the dtype of ``U``). With ``open_boundary`` the time links at
    ``x0 = L0 - 1`` may be zero (openQCD's open boundary conditions)."""
    from ..groups import check_links  # groups is a lower layer

    shape = tuple(getattr(U, "shape", ()))
    if len(shape) != 8 or shape[1] != 4 or shape[-2:] != (3, 3):
        raise ValueError(f"{fmt} files hold one 4D SU(3) configuration: links must have layout "
                         f"[1, 4, L0, L1, L2, L3, 3, 3], got shape {shape}")
    if shape[0] != 1:
        raise ValueError(f"{fmt} files hold one configuration but the batch axis has "
                         f"{shape[0]}; write U[i:i+1] for each configuration, or use HDF5")
    host = to_numpy(U)
    check_links(open_boundary_as_unit(host[0])[None] if open_boundary else host, 3)
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
