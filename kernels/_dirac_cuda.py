"""CUDA site loops of the Dirac kernels (see :mod:`._dirac_drivers`). ``cuda`` is a module
global here because Numba's CUDA simulator swaps that global for its fake module while a kernel
runs."""

from __future__ import annotations

import functools

from numba import cuda

from ._dirac_codegen import build_site


@functools.lru_cache(maxsize=None)
def cuda_loop(kind: str):
    """A CUDA kernel ``loop[blocks, threads](U, P, O, dims, parity, s0, s1, s2)``, one thread
    per (batch, site) (per pair of sites in parity mode), calling the device version of the
    site body ``kind`` (:func:`._dirac_codegen.build_site`)."""
    site = build_site(kind, "cuda")

    @cuda.jit
    def loop(U, P, O, dims, parity, s0, s1, s2):
        n = cuda.grid(1)
        B, T, X, Y, Z = dims[0], dims[4], dims[5], dims[6], dims[7]
        V = T * X * Y * Z
        if parity < 0:
            if n >= B * V:
                return
            b = n // V
            r = n - b * V
            z = r % Z
            r = r // Z
            y = r % Y
            r = r // Y
            x = r % X
            t = r // X
            site(U, P, O, dims, b, t, x, y, z, s0, s1, s2)
        else:
            Zh = Z // 2
            n_sites = T * X * Y * Zh
            if n >= B * n_sites:
                return
            b = n // n_sites
            r = n - b * n_sites
            zh = r % Zh
            r = r // Zh
            y = r % Y
            r = r // Y
            x = r % X
            t = r // X
            z = 2 * zh + ((t + x + y + parity) % 2)
            site(U, P, O, dims, b, t, x, y, z, s0, s1, s2)
            SC = O.shape[0] // (B * V)
            oo = (b * V + ((t * X + x) * Y + y) * Z + (z ^ 1)) * SC
            for k in range(SC):
                O[oo + k] = 0
    return loop
