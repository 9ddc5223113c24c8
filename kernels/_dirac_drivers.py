"""Site loops shared by the Wilson and staggered kernels: a CPU ``prange`` loop and a CUDA grid
over the sites (all sites, or the sites of one parity), each calling a generated site body
(:mod:`._dirac_codegen`).

Parity mode: with ``parity = p`` in {0, 1} the loop visits only the sites with
``(t + x + y + z) % 2 == p`` (half the work) and writes zeros at the sites of the other parity,
which is the even/odd layout of the library (full-size fields, zero on the other parity).
``parity = -1`` means all sites.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._common import THREADS_PER_BLOCK, blocks_for
from ._dirac_codegen import build_site


def make_cpu_loop(kind: str):
    """A parallel ``njit`` loop ``loop(U, P, O, dims, parity, s0, s1, s2)`` over every
    (batch, site) calling ``site(U, P, O, dims, b, t, x, y, z, s0, s1, s2)`` on the flat real
    arrays; ``dims = (B, Bu, Bp, R, T, X, Y, Z)``. ``site`` is the body ``kind``
    (:func:`._dirac_codegen.build_site`)."""
    site = build_site(kind, "cpu")

    @njit(parallel=True, fastmath=False, cache=False)
    def loop(U, P, O, dims, parity, s0, s1, s2):
        B, T, X, Y, Z = dims[0], dims[4], dims[5], dims[6], dims[7]
        V = T * X * Y * Z
        SC = O.shape[0] // (B * V)
        # threads share the (b, t, x) planes; y and z run inside, so that there is no integer
        # division per site (a 64-bit division costs tens of cycles, a staggered site ~300)
        TX = T * X
        for n in prange(B * TX):
            b = n // TX
            r = n - b * TX
            t = r // X
            x = r - t * X
            for y in range(Y):
                if parity < 0:
                    for z in range(Z):
                        site(U, P, O, dims, b, t, x, y, z, s0, s1, s2)
                else:
                    # parity mode: sites with (t + x + y + z) % 2 == parity; the others zeroed
                    z0 = (t + x + y + parity) & 1
                    for z in range(z0, Z, 2):
                        site(U, P, O, dims, b, t, x, y, z, s0, s1, s2)
                    base = (b * V + ((t * X + x) * Y + y) * Z) * SC
                    for z in range(1 - z0, Z, 2):
                        for k in range(SC):
                            O[base + z * SC + k] = 0
    return loop


def make_cuda_loop(kind: str):
    """The CUDA kernel of the site body ``kind`` (:mod:`._dirac_cuda`, imported on first use so
    that importing the kernels does not import ``numba.cuda``)."""
    from ._dirac_cuda import cuda_loop
    return cuda_loop(kind)


def launch_cuda(loop, dims, parity, *args):
    """Launch ``loop`` with one thread per (batch, site) or (batch, site pair)."""
    n = dims[0] * dims[4] * dims[5] * dims[6] * dims[7]
    if parity >= 0:
        n //= 2
    loop[blocks_for(n), THREADS_PER_BLOCK](*args)


def dims_of(U, psi, out) -> tuple:
    """``(B, Bu, Bp, R, T, X, Y, Z)`` for links ``[Bu, 4, T, X, Y, Z, R, N]``, fields
    ``[Bp, T, X, Y, Z, S, N]`` and the output ``[B, ...]``."""
    return tuple(int(v) for v in (out.shape[0], U.shape[0], psi.shape[0], U.shape[-2],
                                  *psi.shape[1:5]))


def real_view(a):
    """The flat real view of a C-contiguous complex array (no copy): ``re, im`` interleaved."""
    rdt = np.float32 if a.dtype == np.complex64 else np.float64
    return a.reshape(-1).view(rdt)


def real_dtype(a):
    return np.float32 if a.dtype == np.complex64 else np.float64
