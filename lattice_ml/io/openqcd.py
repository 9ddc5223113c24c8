"""openQCD gauge-configuration files (the "universal" format of ``export_cnfg``), 4D SU(3).

File layout (little-endian, whatever the machine)::

    int32 N0, N1, N2, N3        lattice extents, N0 = time
    float64 plaq                average of Re Tr U_p over the 6 V plaquettes (NOT divided by 3)
    then, for every odd point x (x0 + x1 + x2 + x3 odd) in lexicographic order
    ix = x3 + N3 (x2 + N2 (x1 + N1 x0)) (x0 slowest), eight 3x3 complex matrices
        U(x, 0), U(x - 0^, 0), U(x, 1), U(x - 1^, 1), U(x, 2), U(x - 2^, 2), U(x, 3), U(x - 3^, 3)
    each row by row, (Re, Im) float64.

Every link joins an odd and an even point, so the forward and backward links of the odd points
are all 4 V links, each once (this needs even extents). openQCD's coordinates and directions
are the library's: ``U[0, mu, x0, x1, x2, x3]`` is openQCD's ``U(x, mu)`` with the same
``(x0, x1, x2, x3)``, time first.

The header plaquette is normalised to 3 (= N) for the unit configuration, so it is 3 times the
library's :func:`~lattice_ml.gauge.observables.average_plaquette`. On reading it must agree with
the data to ``16 sqrt(6 V) eps`` (eps = 2^-52); openQCD's own ``import_cnfg`` demands
``sqrt(6 V) eps``, the factor 16 allows for another summation order. Links that openQCD sets to
zero (the time links at x0 = N0 - 1 with open boundary conditions) are read and written as
they are; their plaquettes count as 0, as in openQCD, and the check that the links are in SU(3)
passes over them (and over no other link). With SF or open-SF boundary conditions openQCD's header
plaquette also counts the space-like plaquettes at x0 = N0, made of boundary links that the file
does not hold: such files fail the check; read them with ``check=False``.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np

from ._common import (GaugeFileError, GaugeFileInfo, HeaderCheck, check_data, compare_float,
                      file_size, open_boundary_as_unit, plaquette_and_trace, read_exactly,
                      single_su3_config)
from .atomic import atomic_open_binary

__all__ = ["read_openqcd", "write_openqcd", "openqcd_plaquette_tolerance"]

_HEAD = struct.Struct("<4id")


def openqcd_plaquette_tolerance(volume: int) -> float:
    """Largest accepted |header plaquette - plaquette of the data| (normalisation 3)."""
    return 16.0 * math.sqrt(6.0 * volume) * 2.0 ** -52


def _odd_mask(shape) -> np.ndarray:
    coords = np.indices(shape).sum(axis=0)
    return coords % 2 == 1


def read_openqcd(path, *, check: bool = True) -> tuple[np.ndarray, GaugeFileInfo]:
    """Read an openQCD (``export_cnfg``) file.

    Returns ``(U0, info)``: ``U0`` host complex128 ``[4, N0, N1, N2, N3, 3, 3]`` and the
    :class:`~._common.GaugeFileInfo` with the plaquette comparison (header value divided by 3
    against the library plaquette, tolerance :func:`openqcd_plaquette_tolerance` / 3) and the
    check that the links are in SU(3) (zero open-boundary links excepted). With ``check=True`` a
    failure raises :class:`~._common.GaugeFileError`.
    """
    path = str(path)
    size = file_size(path)
    with open(path, "rb") as fh:
        n0, n1, n2, n3, plaq3 = _HEAD.unpack(read_exactly(fh, _HEAD.size, "openQCD header",
                                                          path))
        dims = (n0, n1, n2, n3)
        if min(dims) < 2 or any(n % 2 for n in dims) or max(dims) > 1 << 16:
            raise GaugeFileError(f"{path}: openQCD header extents N0..N3 = {dims} are not "
                                 "positive even lattice sizes (not an openQCD file, or "
                                 "another byte order)")
        volume = n0 * n1 * n2 * n3
        nbytes = volume * 4 * 18 * 8
        have = size - _HEAD.size
        if have != nbytes:
            raise GaugeFileError(
                f"{path}: openQCD data size mismatch: header N0..N3 = "
                f"{'x'.join(map(str, dims))} needs {nbytes} bytes of links, the file holds "
                f"{have}" + (" (truncated)" if have < nbytes else " (trailing bytes)"))
        raw = fh.read(nbytes)
    vals = np.frombuffer(raw, dtype="<f8").reshape(volume // 2, 4, 2, 3, 3, 2)
    links = vals[..., 0] + 1j * vals[..., 1]  # [odd point, mu, +/-, 3, 3]
    odd = _odd_mask(dims)
    even = ~odd
    U0 = np.empty((4,) + dims + (3, 3), dtype=np.complex128)
    for mu in range(4):
        U0[mu][odd] = links[:, mu, 0]
        back = np.zeros(dims + (3, 3), dtype=np.complex128)
        back[odd] = links[:, mu, 1]  # back(x) = U(x - mu^, mu) at odd x
        U0[mu][even] = np.roll(back, -1, axis=mu)[even]  # U(y, mu) = back(y + mu^)
    plaq, trace = plaquette_and_trace(U0)
    tol = openqcd_plaquette_tolerance(volume)
    checks = [compare_float("plaquette (Re Tr U_p, normalised to 3)", plaq3, 3.0 * plaq, tol),
              HeaderCheck("link trace", None, trace, None)]
    info = GaugeFileInfo(path=path, format="openqcd", lattice=dims, N=3, precision=64,
                         endian="little", storage="3x3", header={"N0": n0, "N1": n1, "N2": n2,
                                                                 "N3": n3, "plaq": plaq3},
                         checks=checks)
    check_data(info, open_boundary_as_unit(U0)[None])
    if check:
        info.raise_on_failure()
    return U0, info


def write_openqcd(path, U) -> GaugeFileInfo:
    """Write one configuration ``U[1, 4, N0, N1, N2, N3, 3, 3]`` (even extents) as an
    openQCD file, atomically; the header plaquette is 3 times the library plaquette. NaN/inf and
    links outside SU(3) (other than zero time links at ``x0 = N0 - 1``, openQCD's open
    boundary) are a ``ValueError`` before any file is created."""
    U0 = single_su3_config(U, "openQCD", open_boundary=True)
    dims = tuple(int(n) for n in U0.shape[1:5])
    if any(n % 2 for n in dims):
        raise ValueError(f"openQCD files need even extents (links are stored by odd points), "
                         f"got {dims}")
    odd = _odd_mask(dims)
    parts = []
    for mu in range(4):
        parts.append(U0[mu][odd])
        parts.append(np.roll(U0[mu], 1, axis=mu)[odd])  # U(x - mu^, mu)
    links = np.stack(parts, axis=1)  # [odd point, 8, 3, 3]
    raw = np.ascontiguousarray(np.stack([links.real, links.imag], axis=-1), dtype="<f8")
    plaq, _ = plaquette_and_trace(U0)
    with atomic_open_binary(Path(path)) as fh:
        fh.write(_HEAD.pack(*dims, 3.0 * plaq))
        fh.write(raw.tobytes())
    volume = int(np.prod(dims))
    return GaugeFileInfo(path=str(path), format="openqcd", lattice=dims, N=3, precision=64,
                         endian="little", storage="3x3",
                         header={"N0": dims[0], "N1": dims[1], "N2": dims[2], "N3": dims[3],
                                 "plaq": 3.0 * plaq},
                         checks=[HeaderCheck("plaquette (Re Tr U_p, normalised to 3)",
                                             3.0 * plaq, 3.0 * plaq, True,
                                             openqcd_plaquette_tolerance(volume))])
