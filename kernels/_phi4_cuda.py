"""CUDA kernel of the φ⁴ force (see :mod:`.phi4`). ``cuda`` is a module global because Numba's
CUDA simulator swaps that global for its fake module while a kernel runs."""

from __future__ import annotations

import functools

from numba import cuda

from .phi4 import site_force


@functools.lru_cache(maxsize=None)
def force_kernel():
    site = cuda.jit(device=True)(site_force)

    @cuda.jit
    def kernel(phi, out, V, D, ext, a, b, c3):
        n = cuda.grid(1)
        if n < phi.shape[0]:
            site(phi, out, n, V, D, ext, a, b, c3)
    return kernel
