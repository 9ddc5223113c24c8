"""Numba kernels of the 4D SU(3) Wilson hopping term ``wilson_hop`` (CPU ``njit`` and CUDA).

Reference: :func:`lattice_ml.fermions.wilson.wilson_hop` (same arguments, same result)::

    H psi(x) = 1/2 sum_mu [(1 - sign g_mu) U_mu(x) psi(x+mu) + (1 + sign g_mu) U_mu(x-mu)^dag psi(x-mu)]

Accepted (else the reference runs): D = 4, N = 3, links ``[Bu, 4, T, X, Y, Z, 3, 3]`` or
compressed ``[Bu, 4, T, X, Y, Z, 2, 3]``, field ``[Bp, T, X, Y, Z, 4, 3]``, both C-contiguous and
of the same dtype complex64 or complex128, ``Bu`` and ``Bp`` equal or one of them 1, even extents
for ``parity`` mode. The kernels work on the real views of these arrays (no copy). Spin
projection: 2 SU(3) mat-vecs per hop, 1320 flops per site (:mod:`._dirac_codegen`).
"""

from __future__ import annotations

import numpy as np

from ..dispatch import register
from ._common import array_module, cuda_usable
from ._dirac_drivers import (dims_of, launch_cuda, make_cpu_loop, make_cuda_loop, real_dtype,
                             real_view)

__all__ = ["wilson_hop_cpu", "wilson_hop_cuda", "accepts", "FLOPS_PER_SITE"]

FLOPS_PER_SITE = 1320

_cpu_loop = make_cpu_loop("wilson")


def accepts(U, psi, sign=1, antiperiodic=True, parity=None) -> bool:
    """True if the kernels handle these arguments (see the module docstring)."""
    try:
        if U.ndim != 8 or psi.ndim != 7:
            return False
        if U.shape[1] != 4 or U.shape[-1] != 3 or U.shape[-2] not in (2, 3):
            return False
        if tuple(psi.shape[-2:]) != (4, 3) or tuple(psi.shape[1:5]) != tuple(U.shape[2:6]):
            return False
        if U.dtype != psi.dtype or U.dtype not in (np.complex64, np.complex128):
            return False
        if not (U.flags.c_contiguous and psi.flags.c_contiguous):
            return False
        if not (U.shape[0] == psi.shape[0] or U.shape[0] == 1 or psi.shape[0] == 1):
            return False
        if sign not in (1, -1):
            return False
        if parity is not None and (parity not in (0, 1) or any(L % 2 for L in psi.shape[1:5])):
            return False
        return True
    except AttributeError:
        return False


def _prepare(U, psi, sign, antiperiodic, parity):
    xp = array_module(psi)
    B = max(U.shape[0], psi.shape[0])
    out = xp.empty((B,) + tuple(psi.shape[1:]), dtype=psi.dtype)
    rdt = real_dtype(psi)
    p = -1 if parity is None else int(parity)
    scalars = (rdt(sign), rdt(-1.0 if antiperiodic else 1.0), rdt(0.5))
    return out, p, scalars


@register("wilson_hop", "cpu", accepts=accepts, name="cpu:wilson_hop")
def wilson_hop_cpu(U, psi, sign=1, antiperiodic=True, parity=None):
    """CPU kernel (parallel ``njit``): same arguments and result as the reference."""
    out, p, sc = _prepare(U, psi, sign, antiperiodic, parity)
    dims = dims_of(U, psi, out)
    _cpu_loop(real_view(U), real_view(psi), real_view(out), dims, p, *sc)
    return out


@register("wilson_hop", "cuda", accepts=lambda *a, **kw: accepts(*a, **kw) and cuda_usable(),
          name="cuda:wilson_hop")
def wilson_hop_cuda(U, psi, sign=1, antiperiodic=True, parity=None):
    """CUDA kernel, one thread per site: CuPy arrays on a GPU (no copies), NumPy arrays under
    Numba's CUDA simulator."""
    out, p, sc = _prepare(U, psi, sign, antiperiodic, parity)
    dims = dims_of(U, psi, out)
    launch_cuda(make_cuda_loop("wilson"), dims, p,
                real_view(U), real_view(psi), real_view(out), dims, p, *sc)
    return out
