"""CUDA kernel of the φ⁴ force (see :mod:`.phi4`): one thread per (chain, site), the body
:func:`site_force` compiled as a device function. ``cuda`` is a module global because Numba's
CUDA simulator swaps that global for its fake module while a kernel runs."""

from __future__ import annotations

import functools

from numba import cuda


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


@functools.lru_cache(maxsize=None)
def force_kernel():
    site = cuda.jit(device=True)(site_force)

    @cuda.jit
    def kernel(phi, out, V, D, ext, a, b, c3):
        n = cuda.grid(1)
        if n < phi.shape[0]:
            site(phi, out, n, V, D, ext, a, b, c3)
    return kernel
