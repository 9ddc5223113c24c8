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


@njit(parallel=True, fastmath=False, cache=True)
def _force_cpu(p, out, D, a, b, c3):
    """CPU driver on the ``[batch, E0, E1, E2, E3]`` view whose last ``D`` axes are the lattice
    (the leading ones padded with 1, so the innermost loop is a full lattice row): parallel over
    rows, neighbours by comparison instead of the per-site integer divisions of
    :func:`._phi4_cuda.site_force` (the body of the one-thread-per-site CUDA kernel)."""
    B, E0, E1, E2, E3 = p.shape
    for row in prange(B * E0 * E1 * E2):
        x2 = row % E2
        r1 = row // E2
        x1 = r1 % E1
        r0 = r1 // E1
        x0 = r0 % E0
        bb = r0 // E0
        x0p = x0 + 1 if x0 < E0 - 1 else 0
        x0m = x0 - 1 if x0 > 0 else E0 - 1
        x1p = x1 + 1 if x1 < E1 - 1 else 0
        x1m = x1 - 1 if x1 > 0 else E1 - 1
        x2p = x2 + 1 if x2 < E2 - 1 else 0
        x2m = x2 - 1 if x2 > 0 else E2 - 1
        for x3 in range(E3):
            x3p = x3 + 1 if x3 < E3 - 1 else 0
            x3m = x3 - 1 if x3 > 0 else E3 - 1
            v = p[bb, x0, x1, x2, x3]
            nb = p[bb, x0, x1, x2, x3p] + p[bb, x0, x1, x2, x3m]
            if D > 1:
                nb += p[bb, x0, x1, x2p, x3] + p[bb, x0, x1, x2m, x3]
            if D > 2:
                nb += p[bb, x0, x1p, x2, x3] + p[bb, x0, x1m, x2, x3]
            if D > 3:
                nb += p[bb, x0p, x1, x2, x3] + p[bb, x0m, x1, x2, x3]
            out[bb, x0, x1, x2, x3] = a * nb + b * v + c3 * (v * v * v)


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
    out, (V, D, ext, a, b, c3) = _prepare(phi, form, kinetic, local, c, lam)
    shape5 = (phi.shape[0],) + (1,) * (4 - D) + tuple(phi.shape[1:])
    _force_cpu(phi.reshape(shape5), out.reshape(shape5), D, a, b, c3)
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
