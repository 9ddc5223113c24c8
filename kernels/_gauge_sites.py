"""Per-link bodies and drivers of the 4D SU(3) staple and gauge-force kernels (templates compiled
by :mod:`._build`; SU(3) helpers from :mod:`._su3`).

Layout: links ``U[batch, 4, V, 9]`` (sites in C order, extents ``L = (L0, L1, L2, L3)``;
neighbours through the offset table of :func:`offset_table`). The staple sum of the link ``U_mu(x)`` is (:mod:`lattice_ml.gauge.action`)

    V_mu(x) = c_p sum_{nu != mu} [ U_nu(x+mu) U_mu(x+nu)^dag U_nu(x)^dag
                                  + U_nu(x+mu-nu)^dag U_mu(x-nu)^dag U_nu(x-nu) ]
            + c_r sum_{nu != mu} (the six 2x1 rectangle staples R1 ... R6),

grouped so that shared factors are multiplied once (per nu, above / below the link):

    above: [c_p K + c_r (P1 U_mu(x+nu)^dag + U_nu(x+mu) H5)] U_nu(x)^dag,
           K  = U_nu(x+mu) U_mu(x+nu)^dag,
           P1 = U_mu(x+mu) U_nu(x+2mu) U_mu(x+mu+nu)^dag,
           H5 = U_nu(x+mu+nu) U_mu(x+2nu)^dag U_nu(x+nu)^dag;
    below: [c_p Kd + c_r (P2 U_mu(x-nu)^dag + U_nu(x+mu-nu)^dag H6)] U_nu(x-nu),
           Kd = U_nu(x+mu-nu)^dag U_mu(x-nu)^dag,
           P2 = U_mu(x+mu) U_nu(x+2mu-nu)^dag U_mu(x+mu-nu)^dag,
           H6 = U_nu(x+mu-2nu)^dag U_mu(x-2nu)^dag U_nu(x-2nu);

and the two rectangles whose first link is U_mu(x-mu), summed over nu before the last product:

    c_r [sum_nu K U_mu(x-mu+nu)^dag U_nu(x-mu)^dag
                + Kd U_mu(x-mu-nu)^dag U_nu(x-mu-nu)] U_mu(x-mu).

3x3 complex products per link: 4 (D-1) = 12 for the plaquette staples, 20 (D-1) + 1 = 61 with
rectangles; the force adds one more (``U V``).
"""

from __future__ import annotations

from numba import prange

from ._build import cpu_driver, device
from ._su3 import (add, axpy, load, mul, mul_dd, mul_dn, mul_nd, scale, store, ta,  # noqa: F401
                   zero_like)


@device
def coords(s, L):
    """Site coordinates ``(x0, x1, x2, x3)`` of the C-order index s."""
    x3 = s % L[3]
    r = s // L[3]
    x2 = r % L[2]
    r = r // L[2]
    x1 = r % L[1]
    x0 = r // L[1]
    return (x0, x1, x2, x3)


def offset_table(L):
    """Host-side table ``T[mu, x, k]`` (int64, ``[4, max(L), 4]``): the site-index offset of the
    displacement ``(-2, -1, +1, +2)[k]`` along mu from coordinate ``x`` (periodic, C order).
    Offsets along different axes add, so ``x + a mu_hat + c nu_hat`` has index
    ``s + T[mu, x_mu, .] + T[nu, x_nu, .]``."""
    import numpy as np

    st = (L[1] * L[2] * L[3], L[2] * L[3], L[3], 1)
    T = np.zeros((4, max(L), 4), dtype=np.int64)
    for mu in range(4):
        for x in range(L[mu]):
            for k, a in enumerate((-2, -1, 1, 2)):
                T[mu, x, k] = ((x + a) % L[mu] - x) * st[mu]
    return T


@device
def site_offsets(T, x0, x1, x2, x3):
    """Per axis, the offsets ``(d(-2), d(-1), d(+1), d(+2))`` at the site (x0, x1, x2, x3)."""
    return ((T[0, x0, 0], T[0, x0, 1], T[0, x0, 2], T[0, x0, 3]),
            (T[1, x1, 0], T[1, x1, 1], T[1, x1, 2], T[1, x1, 3]),
            (T[2, x2, 0], T[2, x2, 1], T[2, x2, 2], T[2, x2, 3]),
            (T[3, x3, 0], T[3, x3, 1], T[3, x3, 2], T[3, x3, 3]))


@device
def staple_link(U, b, mu, s, off, cp, cr, has_p, has_r):
    """``V_mu(x)`` of the module docstring at the link (b, mu, s) as a 9-tuple (``has_p`` /
    ``has_r``: whether the plaquette / rectangle loops are in the sum; ``off``: the
    :func:`site_offsets` of x)."""
    acc = zero_like(U[b, mu, s, 0])
    back = acc                              # rectangles through U_mu(x - mu), before U_mu(x-mu)
    m2, m1, p1, p2 = off[mu]
    for nu in range(4):
        if nu == mu:
            continue
        n2, n1, q1, q2 = off[nu]
        K = mul_nd(load(U, b, nu, s + p1), load(U, b, mu, s + q1))
        Kd = mul_dd(load(U, b, nu, s + p1 + n1), load(U, b, mu, s + n1))
        Unu_x = load(U, b, nu, s)
        Unu_xmnu = load(U, b, nu, s + n1)
        if not has_r:
            acc = axpy(cp, add(mul_nd(K, Unu_x), mul(Kd, Unu_xmnu)), acc)
            continue
        Umu_xpmu = load(U, b, mu, s + p1)
        # above
        P1 = mul_nd(mul(Umu_xpmu, load(U, b, nu, s + p2)), load(U, b, mu, s + p1 + q1))
        H5 = mul_nd(mul_nd(load(U, b, nu, s + p1 + q1), load(U, b, mu, s + q2)),
                    load(U, b, nu, s + q1))
        G = add(mul_nd(P1, load(U, b, mu, s + q1)), mul(load(U, b, nu, s + p1), H5))
        G = axpy(cr, G, scale(cp, K)) if has_p else scale(cr, G)
        acc = add(acc, mul_nd(G, Unu_x))
        T3 = mul_dd(load(U, b, mu, s + m1 + q1), load(U, b, nu, s + m1))
        back = add(back, mul(K, T3))
        # below
        P2 = mul(Umu_xpmu, mul_dd(load(U, b, nu, s + p2 + n1), load(U, b, mu, s + p1 + n1)))
        H6 = mul(mul_dd(load(U, b, nu, s + p1 + n2), load(U, b, mu, s + n2)),
                 load(U, b, nu, s + n2))
        Gd = add(mul_nd(P2, load(U, b, mu, s + n1)), mul_dn(load(U, b, nu, s + p1 + n1), H6))
        Gd = axpy(cr, Gd, scale(cp, Kd)) if has_p else scale(cr, Gd)
        acc = add(acc, mul(Gd, Unu_xmnu))
        T4 = mul_dn(load(U, b, mu, s + m1 + n1), load(U, b, nu, s + m1 + n1))
        back = add(back, mul(Kd, T4))
    if has_r:
        acc = axpy(cr, mul(back, load(U, b, mu, s + m1)), acc)
    return acc


# ------------------------------------------------------------------------------------------
# drivers: O[b, m, s] for every link (m = mu, or m = 0 for one direction mu_sel >= 0)
# ------------------------------------------------------------------------------------------
@device
def staple_or_force(U, O, b, m, s, off, cp, cr, has_p, has_r, mu_sel, is_force, force_factor):
    mu = m if mu_sel < 0 else mu_sel
    V = staple_link(U, b, mu, s, off, cp, cr, has_p, has_r)
    if is_force:
        V = scale(force_factor, ta(mul(load(U, b, mu, s), V)))
    store(O, b, m, s, V)


@cpu_driver
def cpu_staples(U, O, L, T, cp, cr, has_p, has_r, mu_sel, is_force, force_factor):
    """``O[b, m, s] = V_mu(x)``, or the force ``force_factor TA(U_mu(x) V_mu(x))`` when
    ``is_force``; ``O`` is ``[batch, 4 or 1, V, 9]``. Parallel over (b, m, x0, x1); the inner
    loops over x2, x3 need no index arithmetic beyond additions."""
    B = O.shape[0]
    nd = O.shape[1]
    L0, L1, L2, L3 = L
    for i in prange(B * nd * L0 * L1):
        x1 = i % L1
        r = i // L1
        x0 = r % L0
        r = r // L0
        m = r % nd
        b = r // nd
        for x2 in range(L2):
            for x3 in range(L3):
                s = ((x0 * L1 + x1) * L2 + x2) * L3 + x3
                off = site_offsets(T, x0, x1, x2, x3)
                staple_or_force(U, O, b, m, s, off, cp, cr, has_p, has_r, mu_sel, is_force,
                                force_factor)


def cuda_staples(U, O, L, T, cp, cr, has_p, has_r, mu_sel, is_force, force_factor):
    """CUDA version of :func:`cpu_staples`: one thread per output link."""
    i = cuda.grid(1)  # noqa: F821  (the CUDA namespace of ._build provides cuda)
    B = O.shape[0]
    nd = O.shape[1]
    V = O.shape[2]
    if i < B * nd * V:
        b = i // (nd * V)
        r = i - b * (nd * V)
        m = r // V
        s = r - m * V
        xs = coords(s, L)
        off = site_offsets(T, xs[0], xs[1], xs[2], xs[3])
        staple_or_force(U, O, b, m, s, off, cp, cr, has_p, has_r, mu_sel, is_force,
                        force_factor)
