"""Per-link bodies and drivers of the 4D SU(3) stout-smearing kernels (plaquette loop set, one
weight per link), forward and backward (templates compiled by :mod:`._build`).

Conventions of :mod:`lattice_ml.smearing.stout`: with the plaquette staple sum ``S_mu(x)``
(:func:`._gauge_sites.staple_link` with ``c_p = 1``) and the weight ``r = rho[b, mu, x]``,

    Z = r U S,   Q = -TA(Z),   E = exp(Q),   U' = E U.

Backward, given the force ``F'`` at ``U'`` (pass 1, per link):

    B = E^dag F',   Lambda = TA(L(Q, B)) (:func:`._su3.exp_pullback`),
    F_1 = B E - TA(Z Lambda),   M = r Lambda U,   g = dL/drho = -2 Re Tr(S Lambda U),

and (pass 2, per link ``U_nu(y)``, after every M is known) ``F = F_1 - TA(U_nu(y) Y_nu(y))`` with,
summed over mu != nu, the plaquettes through ``U_nu(y)`` with one other link replaced by M:

    above (A = U_mu(y+nu), B = U_nu(y+mu)^dag, C = U_mu(y)^dag):
        [M_mu(y+nu) B + A M_nu(y+mu)^dag] C + A B M_mu(y)^dag
    below (A = U_mu(y-mu+nu)^dag, B = U_nu(y-mu)^dag, C = U_mu(y-mu)):
        [M_mu(y-mu+nu)^dag B + A M_nu(y-mu)^dag] C + A B M_mu(y-mu)

(five 3x3 products per side). This is the loop-by-loop pull-back of the reference
(``_path_pullback``) gathered at the receiving link, so no two threads write the same link.
"""

from __future__ import annotations

from numba import prange

from ._build import cpu_driver, device
from ._gauge_sites import coords, site_offsets, staple_link
from ._su3 import (add, add_to, exp_pullback, exp_su3, load, mul, mul_dd, mul_dn,  # noqa: F401
                   mul_nd, re_trace_mul, scale, store, sub, ta, zero_like)


@device
def stout_forward_link(U, R, O, S_out, Q_out, E_out, keep, b, mu, s, off, one):
    """``O[b, mu, s] = exp(Q) U`` (and S, Q, E stored when ``keep``)."""
    S = staple_link(U, b, mu, s, off, one, one, True, False)
    u = load(U, b, mu, s)
    Q = scale(-1.0, ta(scale(R[b, mu, s], mul(u, S))))
    E, Qh, Qh2, c0, c1 = exp_su3(Q)
    store(O, b, mu, s, mul(E, u))
    if keep:
        store(S_out, b, mu, s, S)
        store(Q_out, b, mu, s, Q)
        store(E_out, b, mu, s, E)


@device
def stout_backward_link(U, R, F, S_in, has_S, O, M, G, b, mu, s, off, one):
    """Pass 1 at the link (b, mu, s): ``O = F_1``, ``M = r Lambda U``, ``G = dL/drho``."""
    u = load(U, b, mu, s)
    r = R[b, mu, s]
    if has_S:
        S = load(S_in, b, mu, s)
    else:
        S = staple_link(U, b, mu, s, off, one, one, True, False)
    Z = scale(r, mul(u, S))
    E, Qh, Qh2, c0, c1 = exp_su3(scale(-1.0, ta(Z)))
    Bm = mul_dn(E, load(F, b, mu, s))
    Lam = exp_pullback(Qh, Qh2, c0, c1, Bm)
    LU = mul(Lam, u)
    G[b, mu, s] = -2.0 * re_trace_mul(S, LU)
    store(M, b, mu, s, scale(r, LU))
    store(O, b, mu, s, sub(mul(Bm, E), ta(mul(Z, Lam))))


@device
def stout_pullback_link(U, M, O, b, nu, s, off):
    """Pass 2 at the link (b, nu, s): ``O -= TA(U_nu(y) Y_nu(y))``."""
    n2, n1, q1, q2 = off[nu]
    Y = zero_like(U[b, nu, s, 0])
    for mu in range(4):
        if mu == nu:
            continue
        m2, m1, p1, p2 = off[mu]
        # above: A = U_mu(y+nu), B = U_nu(y+mu)^dag, C = U_mu(y)^dag
        A = load(U, b, mu, s + q1)
        Bd = load(U, b, nu, s + p1)                    # B^dag
        C = load(U, b, mu, s)                          # C^dag
        t = add(mul_nd(load(M, b, mu, s + q1), Bd), mul_nd(A, load(M, b, nu, s + p1)))
        Y = add(Y, mul_nd(t, C))
        Y = add(Y, mul_nd(mul_nd(A, Bd), load(M, b, mu, s)))
        # below: A = U_mu(y-mu+nu)^dag, B = U_nu(y-mu)^dag, C = U_mu(y-mu)
        Ad = load(U, b, mu, s + m1 + q1)               # A^dag
        Bd = load(U, b, nu, s + m1)                    # B^dag
        C = load(U, b, mu, s + m1)
        t = add(mul_dd(load(M, b, mu, s + m1 + q1), Bd), mul_dd(Ad, load(M, b, nu, s + m1)))
        Y = add(Y, mul(t, C))
        Y = add(Y, mul(mul_dd(Ad, Bd), load(M, b, mu, s + m1)))
    add_to(O, b, nu, s, scale(-1.0, ta(mul(load(U, b, nu, s), Y))))


# ------------------------------------------------------------------------------------------
# drivers (every link (b, mu, s) of O[batch, 4, V, 9]); the backward is two launches, since
# pass 2 reads M at the neighbours
# ------------------------------------------------------------------------------------------
@cpu_driver
def cpu_stout_forward(U, R, O, S_out, Q_out, E_out, keep, L, T, one):
    B = O.shape[0]
    L0, L1, L2, L3 = L
    for i in prange(B * 4 * L0 * L1):
        x1 = i % L1
        r = i // L1
        x0 = r % L0
        r = r // L0
        mu = r % 4
        b = r // 4
        for x2 in range(L2):
            for x3 in range(L3):
                s = ((x0 * L1 + x1) * L2 + x2) * L3 + x3
                off = site_offsets(T, x0, x1, x2, x3)
                stout_forward_link(U, R, O, S_out, Q_out, E_out, keep, b, mu, s, off, one)


@cpu_driver
def cpu_stout_backward_links(U, R, F, S_in, has_S, O, M, G, L, T, one):
    B = O.shape[0]
    L0, L1, L2, L3 = L
    for i in prange(B * 4 * L0 * L1):
        x1 = i % L1
        r = i // L1
        x0 = r % L0
        r = r // L0
        mu = r % 4
        b = r // 4
        for x2 in range(L2):
            for x3 in range(L3):
                s = ((x0 * L1 + x1) * L2 + x2) * L3 + x3
                off = site_offsets(T, x0, x1, x2, x3)
                stout_backward_link(U, R, F, S_in, has_S, O, M, G, b, mu, s, off, one)


@cpu_driver
def cpu_stout_pullback(U, M, O, L, T):
    B = O.shape[0]
    L0, L1, L2, L3 = L
    for i in prange(B * 4 * L0 * L1):
        x1 = i % L1
        r = i // L1
        x0 = r % L0
        r = r // L0
        nu = r % 4
        b = r // 4
        for x2 in range(L2):
            for x3 in range(L3):
                s = ((x0 * L1 + x1) * L2 + x2) * L3 + x3
                off = site_offsets(T, x0, x1, x2, x3)
                stout_pullback_link(U, M, O, b, nu, s, off)


@device
def link_of_thread(i, n, L, T):
    """``(b, mu, s, off)`` of the link handled by CUDA thread i (n = V sites)."""
    b = i // (4 * n)
    r = i - b * (4 * n)
    mu = r // n
    s = r - mu * n
    xs = coords(s, L)
    return b, mu, s, site_offsets(T, xs[0], xs[1], xs[2], xs[3])


def cuda_stout_forward(U, R, O, S_out, Q_out, E_out, keep, L, T, one):
    i = cuda.grid(1)  # noqa: F821  (the CUDA namespace of ._build provides cuda)
    if i < O.shape[0] * 4 * O.shape[2]:
        b, mu, s, off = link_of_thread(i, O.shape[2], L, T)
        stout_forward_link(U, R, O, S_out, Q_out, E_out, keep, b, mu, s, off, one)


def cuda_stout_backward_links(U, R, F, S_in, has_S, O, M, G, L, T, one):
    i = cuda.grid(1)  # noqa: F821
    if i < O.shape[0] * 4 * O.shape[2]:
        b, mu, s, off = link_of_thread(i, O.shape[2], L, T)
        stout_backward_link(U, R, F, S_in, has_S, O, M, G, b, mu, s, off, one)


def cuda_stout_pullback(U, M, O, L, T):
    i = cuda.grid(1)  # noqa: F821
    if i < O.shape[0] * 4 * O.shape[2]:
        b, nu, s, off = link_of_thread(i, O.shape[2], L, T)
        stout_pullback_link(U, M, O, b, nu, s, off)
