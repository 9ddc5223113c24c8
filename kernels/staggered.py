"""Numba kernels of the 4D SU(3) staggered hopping term ``staggered_hop`` (CPU ``njit`` and
CUDA).

Reference: :func:`lattice_ml.fermions.staggered.staggered_hop` (same arguments, same result)::

    K chi(x) = 1/2 sum_mu eta_mu(x) [U_mu(x) chi(x + mu) - U_mu(x - mu)^dag chi(x - mu)],
    eta_mu(x) = (-1)^(x_0 + ... + x_{mu-1})

Accepted (else the reference runs): D = 4, N = 3, links ``[Bu, 4, T, X, Y, Z, 3, 3]`` or
compressed ``[..., 2, 3]``, field ``[Bp, T, X, Y, Z, 1, 3]``, both C-contiguous, same dtype
complex64 or complex128, ``Bu`` and ``Bp`` equal or one of them 1, even extents. The phases are
computed from the coordinates (the ``eta`` argument, the operator's cached copy of the same
phases, is not read). 570 flops per site (8 SU(3) mat-vecs of 66, 7 colour-vector sums of 6,
phases and the factor 1/2 counted as in MILC).
"""

from __future__ import annotations

import numpy as np

from ..dispatch import register
from ._common import array_module, cuda_usable
from ._dirac_drivers import (dims_of, launch_cuda, make_cpu_loop, make_cuda_loop, real_dtype,
                             real_view)

__all__ = ["staggered_hop_cpu", "staggered_hop_cuda", "accepts", "FLOPS_PER_SITE"]

FLOPS_PER_SITE = 570

_cpu_loop = make_cpu_loop("staggered")


def accepts(U, chi, antiperiodic=True, parity=None, eta=None) -> bool:
    """True if the kernels handle these arguments (see the module docstring)."""
    try:
        if U.ndim != 8 or chi.ndim != 7:
            return False
        if U.shape[1] != 4 or U.shape[-1] != 3 or U.shape[-2] not in (2, 3):
            return False
        if tuple(chi.shape[-2:]) != (1, 3) or tuple(chi.shape[1:5]) != tuple(U.shape[2:6]):
            return False
        if any(L % 2 for L in chi.shape[1:5]):
            return False
        if U.dtype != chi.dtype or U.dtype not in (np.complex64, np.complex128):
            return False
        if not (U.flags.c_contiguous and chi.flags.c_contiguous):
            return False
        if not (U.shape[0] == chi.shape[0] or U.shape[0] == 1 or chi.shape[0] == 1):
            return False
        if eta is not None and not getattr(eta, "standard", False):
            return False  # the kernels compute the standard phases themselves
        return parity is None or parity in (0, 1)
    except AttributeError:
        return False


def _prepare(U, chi, antiperiodic, parity):
    xp = array_module(chi)
    out = xp.empty((max(U.shape[0], chi.shape[0]),) + tuple(chi.shape[1:]), dtype=chi.dtype)
    rdt = real_dtype(chi)
    p = -1 if parity is None else int(parity)
    return out, p, (rdt(1.0), rdt(-1.0 if antiperiodic else 1.0), rdt(0.5))


@register("staggered_hop", "cpu", accepts=accepts, name="cpu:staggered_hop")
def staggered_hop_cpu(U, chi, antiperiodic=True, parity=None, eta=None):
    """CPU kernel (parallel ``njit``): same arguments and result as the reference."""
    out, p, sc = _prepare(U, chi, antiperiodic, parity)
    dims = dims_of(U, chi, out)
    _cpu_loop(real_view(U), real_view(chi), real_view(out), dims, p, *sc)
    return out


@register("staggered_hop", "cuda", accepts=lambda *a, **kw: accepts(*a, **kw) and cuda_usable(),
          name="cuda:staggered_hop")
def staggered_hop_cuda(U, chi, antiperiodic=True, parity=None, eta=None):
    """CUDA kernel, one thread per site (CuPy arrays; NumPy arrays under the simulator)."""
    out, p, sc = _prepare(U, chi, antiperiodic, parity)
    dims = dims_of(U, chi, out)
    launch_cuda(make_cuda_loop("staggered"), dims, p,
                real_view(U), real_view(chi), real_view(out), dims, p, *sc)
    return out
