"""Numba kernels of the φ⁴ force ``phi4_force`` (CPU ``njit`` and CUDA), D = 2, 3, 4, batched.

Reference: :func:`lattice_ml.scalar.phi4.phi4_force` (same arguments, same result). Both forms
are one stencil ``F(x) = a sum_mu [phi(x+mu) + phi(x-mu)] + b phi(x) + c phi(x)^3`` with

* standard form (``c_arg = m2``): ``a = 2`` and ``b = -4 D`` from the kinetic term,
  ``b += -2 m2``, ``c = -4 lam`` from the local term;
* hopping form (``c_arg = beta``): ``a = beta`` from the kinetic term, ``b = 4 lam - 2``,
  ``c = -4 lam`` from the local term.

Accepted (else the reference runs): real float32/float64 ``phi[batch, *sites]``, C-contiguous,
D = 2, 3, 4. 2 D + 5 flops and 2 x itemsize bytes (read phi, write F) per site.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..dispatch import register
from ._common import THREADS_PER_BLOCK, array_module, blocks_for, cuda_usable

__all__ = ["phi4_force_cpu", "phi4_force_cuda", "accepts", "coefficients"]


def accepts(phi, form, kinetic, local, c, lam) -> bool:
    try:
        return (phi.dtype in (np.float32, np.float64) and 3 <= phi.ndim <= 5
                and phi.flags.c_contiguous and form in ("standard", "hopping")
                and np.ndim(c) == 0 and np.ndim(lam) == 0)  # per-chain couplings: reference
    except AttributeError:
        return False


def coefficients(D: int, form: str, kinetic: bool, local: bool, c: float, lam: float):
    """``(a, b, c3)`` of ``F = a * neighbour_sum + b * phi + c3 * phi^3``."""
    a = b = c3 = 0.0
    if form == "standard":
        if kinetic:
            a, b = 2.0, -4.0 * D
        if local:
            b, c3 = b - 2.0 * c, -4.0 * lam
    else:
        if kinetic:
            a = c
        if local:
            b, c3 = b - 2.0 + 4.0 * lam, -4.0 * lam
    return a, b, c3


def _geometry(phi):
    """Extents padded to 4 with 1 and the number of directions."""
    sites = tuple(int(L) for L in phi.shape[1:])
    return sites + (1,) * (4 - len(sites)), len(sites)


def site_force(phi, out, n, V, D, ext, a, b, c3):
    """``out[n] = F`` at flat index ``n`` (batch and site) of the flat field ``phi``."""
    base = n - n % V
    s = n - base
    nb = phi[n] - phi[n]  # zero of the field's dtype
    stride = V
    for mu in range(D):
        L = ext[mu]
        stride = stride // L
        x = (s // stride) % L
        fwd = s + stride if x < L - 1 else s - (L - 1) * stride
        bwd = s - stride if x > 0 else s + (L - 1) * stride
        nb = nb + phi[base + fwd] + phi[base + bwd]
    p = phi[n]
    out[n] = a * nb + b * p + c3 * (p * p * p)


_site_cpu = njit(fastmath=False, cache=False, _nrt=False)(site_force)


@njit(parallel=True, fastmath=False, cache=False)
def _force_cpu(phi, out, V, D, ext, a, b, c3):
    for n in prange(phi.shape[0]):
        _site_cpu(phi, out, n, V, D, ext, a, b, c3)


def _prepare(phi, form, kinetic, local, c, lam):
    ext, D = _geometry(phi)
    rdt = np.float32 if phi.dtype == np.float32 else np.float64
    a, b, c3 = (rdt(v) for v in coefficients(D, form, kinetic, local, c, lam))
    out = array_module(phi).empty(phi.shape, dtype=phi.dtype)
    V = int(np.prod(phi.shape[1:]))
    return out, (V, D, ext, a, b, c3)


@register("phi4_force", "cpu", accepts=accepts, name="cpu:phi4_force")
def phi4_force_cpu(phi, form, kinetic, local, c, lam):
    """CPU kernel (parallel ``njit``), same arguments and result as the reference."""
    out, args = _prepare(phi, form, kinetic, local, c, lam)
    _force_cpu(phi.reshape(-1), out.reshape(-1), *args)
    return out


@register("phi4_force", "cuda", accepts=lambda *a, **kw: accepts(*a, **kw) and cuda_usable(),
          name="cuda:phi4_force")
def phi4_force_cuda(phi, form, kinetic, local, c, lam):
    """CUDA kernel, one thread per site (CuPy arrays; NumPy arrays under the simulator)."""
    from ._phi4_cuda import force_kernel
    out, args = _prepare(phi, form, kinetic, local, c, lam)
    n = phi.size
    force_kernel()[blocks_for(n), THREADS_PER_BLOCK](phi.reshape(-1), out.reshape(-1), *args)
    return out
