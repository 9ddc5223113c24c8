"""CUDA loop of the structure-of-arrays Wilson kernel (:mod:`.wilson_soa`). ``cuda`` is a
module global here because Numba's CUDA simulator swaps that global for its fake module while a
kernel runs (as in :mod:`._dirac_cuda`)."""

from __future__ import annotations

import functools

from numba import cuda

from ._wilson_layout_codegen import build


@functools.lru_cache(maxsize=None)
def soa_loop(R: int):
    """A CUDA kernel ``loop[blocks, threads](U, P, O, dims, parity, sgn, tbc, half)`` with one
    thread per (batch, site), or per (batch, site of parity ``parity``), calling the device
    body :func:`._wilson_layout_codegen.soa_site_source` for ``R`` stored link rows.

    Thread ``n`` of batch entry ``b`` takes the site at position ``n`` of the even/odd order
    (all even sites first): consecutive threads take consecutive positions, so their loads of
    one real of their own site (spinor, output, forward links) are consecutive addresses, and
    those of a neighbour nearly so. ``dims = (B, Bu, Bp, T, X, Y, Z)``, every extent even."""
    site = build("soa", R, "cuda")

    @cuda.jit
    def loop(U, P, O, dims, parity, sgn, tbc, half):
        n = cuda.grid(1)
        B, T, X, Y, Z = dims[0], dims[3], dims[4], dims[5], dims[6]
        V = T * X * Y * Z
        Vh = V // 2
        Zh = Z // 2
        per = V if parity < 0 else Vh
        if n >= B * per:
            return
        b = n // per
        c = n - b * per
        if parity < 0:
            p = c // Vh
            c = c - p * Vh
        else:
            p = parity
        # c = ((t X + x) Y + y) Z/2 + z/2 among the sites of parity p
        zh = c % Zh
        r = c // Zh
        y = r % Y
        r = r // Y
        x = r % X
        t = r // X
        z = 2 * zh + ((t + x + y + p) & 1)
        site(U, P, O, dims, b, t, x, y, z, p, sgn, tbc, half)
        if parity >= 0:     # the other parity is zero (the library's full-size even/odd fields)
            base = b * 24 * V + (1 - p) * Vh + c
            for k in range(24):
                O[base + k * V] = 0
    return loop
