"""The Wilson hopping term on the CPU in a **lanes** layout: several sites per SIMD vector, as in
Grid, so that LLVM vectorises the site body across sites.

Operator (the same as :func:`lattice_ml.fermions.wilson.wilson_hop`, 4D SU(3))::

    H psi(x) = 1/2 sum_mu [(1 - sign g_mu) U_mu(x) psi(x+mu) + (1 + sign g_mu) U_mu(x-mu)^dag psi(x-mu)]

a hop across the time boundary times -1 if antiperiodic; DeGrand-Rossi spin projection, 1320
flops per site (:mod:`._dirac_codegen`, whose projection tables and helpers are reused).

**Layout.** ``lanes = (NT, NX, NY, NZ)`` splits the lattice ``(T, X, Y, Z)`` into
``W = NT NX NY NZ`` sub-lattices of outer extents ``(LT, LX, LY, LZ) = (T/NT, X/NX, Y/NY,
Z/NZ)``; the site ``x_mu = o_mu + L_mu l_mu`` is lane ``l = ((l_t NX + l_x) NY + l_y) NZ + l_z``
of outer site ``o``. The lanes of one outer site are ``W`` sites whose neighbours in direction
``mu`` are the same lanes of the neighbouring outer site, except across a sub-lattice edge
(``o_mu = L_mu - 1`` forward, ``0`` backward; only where ``N_mu > 1``), where lane ``l`` reads
the lane with ``l_mu -> l_mu +- 1 (mod N_mu)``. Real arrays, real and imaginary parts in
separate planes, the lane axes innermost and contiguous (``W`` reals per vector; the four lane
axes make an array carry its split):

* spinors ``[B, LT, LX, LY, LZ, 4, 3, 2, NT, NX, NY, NZ]`` (spin, colour, re/im, lane);
* links, *doubled*: ``[Bu, LT, LX, LY, LZ, 8, R, 3, 2, NT, NX, NY, NZ]``, hop ``h = 2 mu`` holds
  ``U_mu(x)``, hop ``2 mu + 1`` holds ``U_mu(x - mu)`` (so a site reads its 8 links from one
  place and the kernel permutes only spinors; twice the memory of the links, the same bytes
  read per site); ``R = 3`` rows, or ``R = 2`` (two-row compression, third row rebuilt).

:func:`links_to_lanes` (once per configuration) and :func:`spinor_to_lanes` /
:func:`spinor_from_lanes` (once per solve) convert from and to the library's layouts; they are
array-API code (NumPy, CuPy, array-api-strict). The kernel :func:`wilson_hop_lanes` takes NumPy
arrays; :class:`WilsonLanes` is the clover-free Wilson operator on them (a solver works on the
lanes arrays between one conversion of its source and one of its solution). Measurements and
how the body is made to vectorise: docs/kernels.md, "Kernel-internal layouts".

Even/odd: with ``parity = p`` only the sites of parity ``p`` are computed and the others are
zero, as in the library's full-size even/odd fields. All lanes of an outer site have its parity
when every outer extent is even, which ``parity`` requires.

**Kernel.** A parallel ``njit`` loop over (batch, LT, LX) planes of outer sites calls the
generated body (:func:`._wilson_layout_codegen.lanes_site_source`): eight hops inside one
``for l in range(W)`` loop without branches, which LLVM vectorises (packed AVX/AVX-512
instructions, checked by ``tests/test_kernels_wilson_simd.py`` on the generated assembly).
Neighbour spinors across a sub-lattice edge are first copied with their lanes permuted into a
scratch buffer of the thread (``8 * 24 * W`` reals). Fast-math: ``contract`` only (fused
multiply-adds; :data:`._wilson_layout_codegen.FASTMATH`), so results equal the scalar kernel to
round-off and NaN/inf propagate as there.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba import njit, prange

from ..backend import make_complex, namespace
from ._wilson_layout_codegen import FASTMATH, build

__all__ = ["default_lanes", "check_lanes", "spinor_to_lanes", "spinor_from_lanes",
           "links_to_lanes", "links_from_lanes", "wilson_hop_lanes", "WilsonLanes",
           "FLOPS_PER_SITE"]

FLOPS_PER_SITE = 1320


def default_lanes(sites, dtype) -> tuple[int, int, int, int]:
    """The default split of ``sites = (T, X, Y, Z)``: 8 lanes (``(1, 2, 2, 2)``) for float64 /
    complex128, 16 (``(2, 2, 2, 2)``) for float32 / complex64, i.e. one 512-bit vector of reals;
    a direction whose extent is not a multiple of 4 is not split (lanes go to the others)."""
    want = 16 if np.dtype(dtype) in (np.float32, np.complex64) else 8
    lanes = [1, 1, 1, 1]
    for _ in range(2):          # at most two factors of 2 per direction
        for mu in (3, 2, 1, 0):  # innermost direction first
            if math.prod(lanes) < want and sites[mu] % (4 * lanes[mu]) == 0:
                lanes[mu] *= 2
    return tuple(lanes)


def check_lanes(sites, lanes) -> tuple[int, int, int, int]:
    """The outer extents ``sites / lanes``; ValueError unless every lane count divides its
    extent."""
    if len(sites) != 4 or len(lanes) != 4 or any(n < 1 for n in lanes):
        raise ValueError(f"the lanes layout is for 4D lattices and 4 lane counts; got sites "
                         f"{tuple(sites)}, lanes {tuple(lanes)}")
    if any(L % n for L, n in zip(sites, lanes)):
        raise ValueError(f"lanes {tuple(lanes)} do not divide the lattice {tuple(sites)}")
    return tuple(L // n for L, n in zip(sites, lanes))


def _to_lanes(a, n_pre: int, lanes):
    """``a[B, *pre, T, X, Y, Z, *inner]`` (complex) -> real ``[B, LT, LX, LY, LZ, *pre,
    *inner, 2, NT, NX, NY, NZ]``."""
    xp = namespace(a)
    B, pre = a.shape[0], tuple(a.shape[1:1 + n_pre])
    sites, inner = tuple(a.shape[1 + n_pre:5 + n_pre]), tuple(a.shape[5 + n_pre:])
    outer = check_lanes(sites, lanes)
    split = sum(((n, L) for n, L in zip(lanes, outer)), ())
    a = xp.reshape(a, (B, *pre, *split, *inner))
    r = xp.stack((xp.real(a), xp.imag(a)), axis=-1)
    s0, i0 = 1 + n_pre, 9 + n_pre          # first split axis, first inner axis
    order = ((0,) + tuple(s0 + 2 * k + 1 for k in range(4)) + tuple(range(1, s0))
             + tuple(range(i0, r.ndim)) + tuple(s0 + 2 * k for k in range(4)))
    r = xp.permute_dims(r, order)
    # flattening copies the permuted view into C order
    return xp.reshape(xp.reshape(r, (-1,)), (B, *outer, *pre, *inner, 2, *lanes))


def _from_lanes(r, n_pre: int):
    """Inverse of :func:`_to_lanes`: real ``[B, LT, LX, LY, LZ, *pre, *inner, 2, NT, NX, NY,
    NZ]`` -> complex ``[B, *pre, T, X, Y, Z, *inner]``."""
    xp = namespace(r)
    B, outer, lanes = r.shape[0], tuple(r.shape[1:5]), tuple(r.shape[-4:])
    pre, inner = tuple(r.shape[5:5 + n_pre]), tuple(r.shape[5 + n_pre:-5])
    if r.shape[-5] != 2:
        raise ValueError(f"not a lanes array: shape {tuple(r.shape)}")
    ni = len(inner)
    i0 = 5 + n_pre
    ri = i0 + ni                            # the re/im axis
    order = ((0,) + tuple(range(5, i0))
             + sum(((ri + 1 + k, 1 + k) for k in range(4)), ()) + tuple(range(i0, ri)) + (ri,))
    r = xp.permute_dims(r, order)
    cdt = xp.complex64 if r.dtype == xp.float32 else xp.complex128
    c = make_complex(xp, r[..., 0], r[..., 1], cdt)
    sites = tuple(n * L for n, L in zip(lanes, outer))
    return xp.reshape(c, (B, *pre, *sites, *inner))


def spinor_to_lanes(psi, lanes):
    """Spinor field ``psi[B, T, X, Y, Z, 4, 3]`` (complex) -> ``[B, LT, LX, LY, LZ, 4, 3, 2,
    NT, NX, NY, NZ]`` (real, C-contiguous) for ``lanes = (NT, NX, NY, NZ)``."""
    if psi.ndim != 7 or tuple(psi.shape[-2:]) != (4, 3):
        raise ValueError(f"expected a 4D Wilson field [B, T, X, Y, Z, 4, 3]; got {psi.shape}")
    return _to_lanes(psi, 0, lanes)


def spinor_from_lanes(a):
    """Inverse of :func:`spinor_to_lanes`: ``[B, LT, LX, LY, LZ, 4, 3, 2, NT, NX, NY, NZ]`` ->
    ``[B, T, X, Y, Z, 4, 3]`` complex."""
    return _from_lanes(a, 0)


def links_to_lanes(U, lanes):
    """SU(3) links ``U[Bu, 4, T, X, Y, Z, R, 3]`` (``R`` = 3, or 2 for two-row links) ->
    doubled lanes links ``[Bu, LT, LX, LY, LZ, 8, R, 3, 2, NT, NX, NY, NZ]``: hop ``2 mu`` is
    ``U_mu(x)``,
    hop ``2 mu + 1`` is ``U_mu(x - mu)``."""
    if U.ndim != 8 or U.shape[1] != 4 or U.shape[-1] != 3 or U.shape[-2] not in (2, 3):
        raise ValueError(f"expected 4D SU(3) links [B, 4, T, X, Y, Z, 3|2, 3]; got {U.shape}")
    xp = namespace(U)
    hops = []
    for mu in range(4):
        hops += [U[:, mu, ...], xp.roll(U[:, mu, ...], 1, axis=1 + mu)]   # U_mu(x), U_mu(x - mu)
    return _to_lanes(xp.stack(hops, axis=1), 1, lanes)


def links_from_lanes(Ul):
    """The library links ``[Bu, 4, T, X, Y, Z, R, 3]`` of doubled lanes links (their forward
    hops)."""
    return _from_lanes(Ul, 1)[:, 0::2, ...]


@functools.lru_cache(maxsize=None)
def _cpu_loop(R: int, lanes: tuple):
    """The parallel loop ``loop(U, P, O, dims, parity, sgn, tbc, half)`` over outer sites,
    calling the lanes body for ``R`` stored link rows and ``lanes``."""
    site = build("lanes", R, "cpu", lanes)

    @njit(parallel=True, fastmath=FASTMATH, cache=False)
    def loop(U, P, O, dims, parity, sgn, tbc, half):
        B, Bu, Bp, W, LT, LX, LY, LZ, NT, NX, NY, NZ = dims
        one = half + half
        # time-boundary factors per lane, four rows (forward hop W, backward hop W): the time
        # slice crosses neither boundary, the forward one (last outer slice: the lanes of the
        # last time lane cross t = T-1 -> 0), the backward one (first slice), both (LT = 1)
        PH = np.empty(8 * W, dtype=P.dtype)
        NL = NX * NY * NZ
        for l in range(W):
            lt = l // NL
            f = tbc if lt == NT - 1 else one
            bk = tbc if lt == 0 else one
            for row in range(4):
                PH[2 * row * W + l] = f if row & 1 else one
                PH[2 * row * W + W + l] = bk if row & 2 else one
        Vo = LT * LX * LY * LZ
        SW = 24 * W
        TX = LT * LX
        for n in prange(B * TX):
            S = np.empty(8 * SW, dtype=P.dtype)    # lane-permuted neighbours of this thread
            b = n // TX
            r = n - b * TX
            ot = r // LX
            ox = r - ot * LX
            for oy in range(LY):
                for oz in range(LZ):
                    if parity < 0 or ((ot + ox + oy + oz) & 1) == parity:
                        site(U, P, S, O, PH, dims, b, ot, ox, oy, oz, sgn, half)
                    else:
                        base = (b * Vo + ((ot * LX + ox) * LY + oy) * LZ + oz) * SW
                        for k in range(SW):
                            O[base + k] = 0
    return loop


def check_arguments(links, field, sign, parity, extents, what: str):
    """The checks shared with :mod:`.wilson_soa`: links and field both float32 or both
    float64, batches equal or one of them 1, ``sign`` +-1, ``parity`` None or 0/1 with even
    ``extents`` (named ``what`` in the message)."""
    if links.dtype != field.dtype or field.dtype not in (np.float32, np.float64):
        raise TypeError(f"links and field must both be float32 or float64; got {links.dtype}, "
                        f"{field.dtype}")
    Bu, Bp = links.shape[0], field.shape[0]
    if not (Bu == Bp or Bu == 1 or Bp == 1):
        raise ValueError(f"link batch {Bu} and field batch {Bp} do not broadcast")
    if sign not in (1, -1):
        raise ValueError(f"sign must be +1 or -1, not {sign}")
    if parity is not None and (parity not in (0, 1) or any(L % 2 for L in extents)):
        raise ValueError(f"parity needs even {what}; got {tuple(extents)}")


def wilson_hop_lanes(Ul, psil, sign=1, antiperiodic=True, parity=None):
    """``H psi`` (``sign = +1``) or ``H^dag psi`` (``-1``) in the lanes layout: doubled links
    ``Ul`` (:func:`links_to_lanes`), spinor ``psil`` (:func:`spinor_to_lanes`), both NumPy,
    C-contiguous, float32 or float64 alike, of the same lattice and lanes; batches ``Bu``,
    ``Bp`` equal or one of them 1. Returns the result in the lanes layout (batch
    ``max(Bu, Bp)``)."""
    if not (isinstance(Ul, np.ndarray) and isinstance(psil, np.ndarray)):
        raise TypeError("wilson_hop_lanes takes NumPy arrays")
    if not (Ul.flags.c_contiguous and psil.flags.c_contiguous):
        raise ValueError("lanes arrays must be C-contiguous")
    lanes = tuple(int(n) for n in psil.shape[-4:])
    W = math.prod(lanes)
    outer = tuple(psil.shape[1:5])
    if (psil.ndim != 12 or tuple(psil.shape[5:8]) != (4, 3, 2) or Ul.ndim != 13
            or tuple(Ul.shape[1:5]) != outer or Ul.shape[5] != 8 or Ul.shape[6] not in (2, 3)
            or tuple(Ul.shape[7:9]) != (3, 2) or tuple(Ul.shape[-4:]) != lanes):
        raise ValueError(f"not lanes arrays of one lattice and split: links {Ul.shape}, "
                         f"field {psil.shape}")
    check_arguments(Ul, psil, sign, parity, outer, "outer extents (sites / lanes)")
    Bu, Bp = Ul.shape[0], psil.shape[0]
    B = max(Bu, Bp)
    out = np.empty((B,) + tuple(psil.shape[1:]), dtype=psil.dtype)
    rdt = psil.dtype.type
    dims = (B, Bu, Bp, W, *outer, *lanes)
    p = -1 if parity is None else int(parity)
    loop = _cpu_loop(int(Ul.shape[6]), lanes)
    loop(Ul.reshape(-1), psil.reshape(-1), out.reshape(-1), dims, p, rdt(sign),
         rdt(-1.0 if antiperiodic else 1.0), rdt(0.5))
    return out


class WilsonLanes:
    """The clover-free Wilson operator ``D = (m + 4) - H`` on lanes arrays: the kernel side of a
    solver-level layout conversion. Links are converted once (here), a solve converts its
    source with :meth:`to_lanes` and its solution with :meth:`from_lanes`, and every operator
    application in between stays in the lanes layout (the vector updates of a Krylov solver
    are layout-free: CG on the real lanes arrays is CG on the complex field, the real form of
    a hermitian operator being symmetric).

    ``U[Bu, 4, T, X, Y, Z, 3|2, 3]`` NumPy links, ``mass`` the bare mass, ``antiperiodic`` the
    time boundary, ``lanes`` the split (default :func:`default_lanes`)."""

    def __init__(self, U, mass: float, antiperiodic: bool = True, lanes=None):
        self.lanes = tuple(lanes or default_lanes(tuple(U.shape[2:6]), U.dtype))
        self.links = np.ascontiguousarray(links_to_lanes(U, self.lanes))
        self.diag = float(mass) + 4.0
        self.antiperiodic = bool(antiperiodic)

    def to_lanes(self, psi):
        """``psi[B, T, X, Y, Z, 4, 3]`` in the lanes layout."""
        return np.ascontiguousarray(spinor_to_lanes(psi, self.lanes))

    def from_lanes(self, a):
        """A lanes field back in the library layout."""
        return spinor_from_lanes(a)

    def hop(self, a, sign: int = 1, parity=None):
        """``H a`` (``sign`` = 1) or ``H^dag a`` (-1), one parity or all."""
        return wilson_hop_lanes(self.links, a, sign, self.antiperiodic, parity)

    def apply(self, a):
        """``D a``."""
        return self.diag * a - self.hop(a, 1)

    def apply_dagger(self, a):
        """``D^dag a``."""
        return self.diag * a - self.hop(a, -1)

    def normal(self, a):
        """``D^dag D a`` (hermitian positive definite for m > 0)."""
        return self.apply_dagger(self.apply(a))
