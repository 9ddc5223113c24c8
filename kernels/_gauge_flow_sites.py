"""Per-batch-entry bodies of the gauge-flow kernels (:mod:`.gauge_flow`): the generator of a stout
step for any loop set and its pull-back, for U(N) / SU(N) links of any N and dimension D.

Layout: links ``U[batch, D, V, N, N]`` complex128 (the library's ``[batch, D, *sites, N, N]``
reshaped without a copy; site index in C order), neighbour tables ``fwd[V, D]`` (``x + nu_hat``)
and ``bwd[V, D]`` (``x - nu_hat``) on the torus. A loop set is flattened into a path table:
path ``p`` belongs to direction ``p_mu[p]`` and loop type ``p_type[p]``, its steps after the
first link are ``st_dir[p_start[p] + i]``, ``st_sign[...]`` for ``i < p_len[p]``; the paths of
direction ``mu`` are ``mu_first[mu] <= p < mu_first[mu + 1]``.

Conventions of :mod:`lattice_ml.smearing.stout` (its module docstring): the staple of a path
through ``U_mu(x)`` is the product of its other links begun at ``x + mu_hat``,
``S_k,mu(x)`` the sum over the paths of type k, ``W = sum_k rho_k,mu S_k,mu``,
``Q = -TA(U W)``. The pull-back (:func:`pullback_batch`, for ``Lambda = -K``) is the loop-by-loop
recursion of the reference's ``_path_pullback``: per link ``LU = Lambda U``,
``g_k += -2 Re Tr(S_k LU)``, ``Y_mu(x) += sum_k rho_k S_k Lambda``, and every path, with its
first link replaced by ``M = rho_k LU``, opened at each of its other links (suffix times prefix,
the dagger of it for a backward step) is added to ``Y`` at that link; finally
``G_nu(y) = TA(U_nu(y) Y_nu(y))``. One batch entry per loop iteration (``prange`` over the
batch), so the scatter into ``Y`` never races.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._build import _njit
from ._su3 import add, add_to, axpy, dag, load, mul, mul_nd, re_trace_mul, scale, store, ta, zero_like


# ------------------------------------------------------------------------------------------
# N x N helpers on preallocated buffers (no allocation in the inner loops)
# ------------------------------------------------------------------------------------------
def _mul_into(a, b, out):
    """``out = a @ b``."""
    n = a.shape[0]
    for i in range(n):
        for j in range(n):
            acc = 0j
            for k in range(n):
                acc += a[i, k] * b[k, j]
            out[i, j] = acc


def _load_into(U, b, nu, s, dag, out):
    """``out = U[b, nu, s]`` (its dagger when ``dag``)."""
    n = out.shape[0]
    if dag:
        for i in range(n):
            for j in range(n):
                out[i, j] = U[b, nu, s, j, i].conjugate()
    else:
        for i in range(n):
            for j in range(n):
                out[i, j] = U[b, nu, s, i, j]


def _ta_into(Z, out, sign):
    """``out = sign * TA(Z)``: ``(Z - Z^dag)/2`` minus its trace part for N > 1."""
    n = Z.shape[0]
    for i in range(n):
        for j in range(n):
            out[i, j] = sign * 0.5 * (Z[i, j] - Z[j, i].conjugate())
    if n > 1:
        tr = 0j
        for i in range(n):
            tr += out[i, i]
        tr = tr / n
        for i in range(n):
            out[i, i] -= tr


_mul_into = _njit(_mul_into)
_load_into = _njit(_load_into)
_ta_into = _njit(_ta_into)


# ------------------------------------------------------------------------------------------
# staple of one path at one link
# ------------------------------------------------------------------------------------------
def _staple_path(U, b, mu, x, p, p_start, p_len, st_dir, st_sign, fwd, bwd, acc, link, tmp):
    """``acc = `` the staple of path p at the link (b, mu, x) (identity for a one-link loop)."""
    n = acc.shape[0]
    pos = fwd[x, mu]
    m = p_len[p]
    if m == 0:
        for i in range(n):
            for j in range(n):
                acc[i, j] = 1.0 if i == j else 0.0
        return
    for i in range(m):
        nu = st_dir[p_start[p] + i]
        if st_sign[p_start[p] + i] > 0:
            _load_into(U, b, nu, pos, False, link)
            pos = fwd[pos, nu]
        else:
            pos = bwd[pos, nu]
            _load_into(U, b, nu, pos, True, link)
        if i == 0:
            acc[:, :] = link
        else:
            _mul_into(acc, link, tmp)
            acc[:, :] = tmp


_staple_path = _njit(_staple_path)


def generator_batches(U, rho, p_type, p_start, p_len, st_dir, st_sign, mu_first, fwd, bwd,
                      S, have_S, Q):
    """``Q[b, mu, x] = -TA(U W)`` at every link; the staple sums ``S[k, b, mu, x]`` are computed
    (``have_S`` False: ``S`` must be zero on entry) or read (True)."""
    B, D, V, n = U.shape[0], U.shape[1], U.shape[2], U.shape[3]
    K = S.shape[0]
    for b in prange(B):
        acc = np.empty((n, n), dtype=U.dtype)
        link = np.empty((n, n), dtype=U.dtype)
        tmp = np.empty((n, n), dtype=U.dtype)
        W = np.empty((n, n), dtype=U.dtype)
        u = np.empty((n, n), dtype=U.dtype)
        for mu in range(D):
            for x in range(V):
                if not have_S:
                    for p in range(mu_first[mu], mu_first[mu + 1]):
                        _staple_path(U, b, mu, x, p, p_start, p_len, st_dir, st_sign, fwd, bwd,
                                     acc, link, tmp)
                        k = p_type[p]
                        for i in range(n):
                            for j in range(n):
                                S[k, b, mu, x, i, j] += acc[i, j]
                W[:, :] = 0.0
                for k in range(K):
                    r = rho[k, mu]
                    for i in range(n):
                        for j in range(n):
                            W[i, j] += r * S[k, b, mu, x, i, j]
                _load_into(U, b, mu, x, False, u)
                _mul_into(u, W, tmp)
                _ta_into(tmp, acc, -1.0)
                for i in range(n):
                    for j in range(n):
                        Q[b, mu, x, i, j] = acc[i, j]


generator_batches = _njit(generator_batches, parallel=True)


def pullback_batches(U, rho, Kc, S, p_type, p_start, p_len, st_dir, st_sign, mu_first, fwd, bwd,
                     max_len, Y, G, g):
    """``G[b, nu, y] = TA(U_nu(y) Y_nu(y))`` and ``g[b, k, mu] = sum_x -2 Re Tr(S_k Lambda U)``
    for ``Lambda = -Kc`` (module docstring); ``Y`` (zero on entry) is the work field."""
    B, D, V, n = U.shape[0], U.shape[1], U.shape[2], U.shape[3]
    K = S.shape[0]
    for b in prange(B):
        lam = np.empty((n, n), dtype=U.dtype)
        u = np.empty((n, n), dtype=U.dtype)
        LU = np.empty((n, n), dtype=U.dtype)
        Mk = np.empty((n, n), dtype=U.dtype)
        pre = np.empty((n, n), dtype=U.dtype)
        tmp = np.empty((n, n), dtype=U.dtype)
        A = np.empty((max_len + 1, n, n), dtype=U.dtype)
        suf = np.empty((max_len + 1, n, n), dtype=U.dtype)
        a_dir = np.empty(max_len + 1, dtype=np.int64)
        a_site = np.empty(max_len + 1, dtype=np.int64)
        a_sign = np.empty(max_len + 1, dtype=np.int64)
        for mu in range(D):
            for x in range(V):
                for i in range(n):
                    for j in range(n):
                        lam[i, j] = -Kc[b, mu, x, i, j]
                _load_into(U, b, mu, x, False, u)
                _mul_into(lam, u, LU)
                for k in range(K):
                    r = rho[k, mu]
                    # dL/drho = -2 Re Tr(S LU);  Y_mu(x) += rho S Lambda
                    t = 0.0
                    for i in range(n):
                        for j in range(n):
                            t += (S[k, b, mu, x, i, j] * LU[j, i]).real
                    g[b, k, mu] += -2.0 * t
                    for i in range(n):
                        for j in range(n):
                            acc = 0j
                            for l in range(n):
                                acc += S[k, b, mu, x, i, l] * lam[l, j]
                            Y[b, mu, x, i, j] += r * acc
                for p in range(mu_first[mu], mu_first[mu + 1]):
                    m = p_len[p]
                    if m == 0:
                        continue
                    r = rho[p_type[p], mu]
                    for i in range(n):
                        for j in range(n):
                            Mk[i, j] = r * LU[i, j]
                    # the other links of the path, where they sit
                    pos = fwd[x, mu]
                    for i in range(m):
                        nu = st_dir[p_start[p] + i]
                        a_dir[i] = nu
                        if st_sign[p_start[p] + i] > 0:
                            a_sign[i] = 1
                            a_site[i] = pos
                            _load_into(U, b, nu, pos, False, A[i])
                            pos = fwd[pos, nu]
                        else:
                            a_sign[i] = -1
                            pos = bwd[pos, nu]
                            a_site[i] = pos
                            _load_into(U, b, nu, pos, True, A[i])
                    # suf[i] = A[i+1] ... A[m-1] (identity for i = m - 1)
                    for i in range(n):
                        for j in range(n):
                            suf[m - 1, i, j] = 1.0 if i == j else 0.0
                    for i in range(m - 2, -1, -1):
                        _mul_into(A[i + 1], suf[i + 1], suf[i])
                    pre[:, :] = Mk
                    for i in range(m):
                        _mul_into(suf[i], pre, tmp)
                        nu = a_dir[i]
                        y = a_site[i]
                        if a_sign[i] > 0:
                            for r1 in range(n):
                                for r2 in range(n):
                                    Y[b, nu, y, r1, r2] += tmp[r1, r2]
                        else:
                            for r1 in range(n):
                                for r2 in range(n):
                                    Y[b, nu, y, r1, r2] += tmp[r2, r1].conjugate()
                        if i < m - 1:
                            _mul_into(pre, A[i], tmp)
                            pre[:, :] = tmp
        for nu in range(D):
            for y in range(V):
                _load_into(U, b, nu, y, False, u)
                _mul_into(u, Y[b, nu, y], tmp)
                _ta_into(tmp, LU, 1.0)
                for i in range(n):
                    for j in range(n):
                        G[b, nu, y, i, j] = LU[i, j]


pullback_batches = _njit(pullback_batches, parallel=True)


# ------------------------------------------------------------------------------------------
# N = 3: the same two loops on 9-tuples (kernels/_su3.py), links ``U[batch, D, V, 9]``,
# staples ``S[K, batch, D, V, 9]``
# ------------------------------------------------------------------------------------------
def _link3(U, b, nu, s, sign):
    """``U[b, nu, s]`` (its dagger for sign < 0) as a 9-tuple."""
    if sign > 0:
        return load(U, b, nu, s)
    return dag(load(U, b, nu, s))


_link3 = _njit(_link3)


def _staple3(U, b, mu, x, p, p_start, p_len, st_dir, st_sign, fwd, bwd):
    pos = fwd[x, mu]
    one = U[b, mu, x, 0] - U[b, mu, x, 0] + 1.0
    acc = (one, 0j, 0j, 0j, one, 0j, 0j, 0j, one)
    for i in range(p_len[p]):
        nu = st_dir[p_start[p] + i]
        if st_sign[p_start[p] + i] > 0:
            acc = mul(acc, load(U, b, nu, pos))
            pos = fwd[pos, nu]
        else:
            pos = bwd[pos, nu]
            acc = mul_nd(acc, load(U, b, nu, pos))
    return acc


_staple3 = _njit(_staple3)


def generator_batches3(U, rho, p_type, p_start, p_len, st_dir, st_sign, mu_first, fwd, bwd,
                       S, have_S, Q):
    """:func:`generator_batches` for N = 3."""
    B, D, V = U.shape[0], U.shape[1], U.shape[2]
    K = S.shape[0]
    for b in prange(B):
        for mu in range(D):
            for x in range(V):
                if not have_S:
                    for p in range(mu_first[mu], mu_first[mu + 1]):
                        add_to(S[p_type[p]], b, mu, x,
                               _staple3(U, b, mu, x, p, p_start, p_len, st_dir, st_sign, fwd,
                                        bwd))
                W = scale(rho[0, mu], load(S[0], b, mu, x))
                for k in range(1, K):
                    W = axpy(rho[k, mu], load(S[k], b, mu, x), W)
                store(Q, b, mu, x, scale(-1.0, ta(mul(load(U, b, mu, x), W))))


generator_batches3 = _njit(generator_batches3, parallel=True)


def pullback_batches3(U, rho, Kc, S, p_type, p_start, p_len, st_dir, st_sign, mu_first, fwd,
                      bwd, max_len, Y, LUs, g):
    """:func:`pullback_batches` for N = 3 without its last pass (:func:`finish3`): the local
    terms and the paths of the path table added to ``Y``, ``LUs[b, mu, x] = Lambda U``."""
    B, D, V = U.shape[0], U.shape[1], U.shape[2]
    K = S.shape[0]
    for b in prange(B):
        A = np.empty((1, 1, max_len + 1, 9), dtype=U.dtype)
        suf = np.empty((1, 1, max_len + 1, 9), dtype=U.dtype)
        a_dir = np.empty(max_len + 1, dtype=np.int64)
        a_site = np.empty(max_len + 1, dtype=np.int64)
        a_sign = np.empty(max_len + 1, dtype=np.int64)
        for mu in range(D):
            for x in range(V):
                lam = scale(-1.0, load(Kc, b, mu, x))
                LU = mul(lam, load(U, b, mu, x))
                store(LUs, b, mu, x, LU)
                Yl = zero_like(LU[0])
                for k in range(K):
                    Sk = load(S[k], b, mu, x)
                    g[b, k, mu] += -2.0 * re_trace_mul(Sk, LU)
                    Yl = axpy(rho[k, mu], mul(Sk, lam), Yl)
                add_to(Y, b, mu, x, Yl)
                for p in range(mu_first[mu], mu_first[mu + 1]):
                    m = p_len[p]
                    if m == 0:
                        continue
                    pre = scale(rho[p_type[p], mu], LU)
                    # the staple path p, from the link's end x + mu
                    _walk3(U, b, fwd[x, mu], p, p_start, p_len, st_dir, st_sign, fwd, bwd, A,
                           a_dir, a_site, a_sign)
                    # suf[i] = A[i+1] ... A[m-1]
                    if m > 1:
                        store(suf, 0, 0, m - 2, load(A, 0, 0, m - 1))
                        for i in range(m - 3, -1, -1):
                            store(suf, 0, 0, i, mul(load(A, 0, 0, i + 1), load(suf, 0, 0, i + 1)))
                    for i in range(m):
                        if i == m - 1:
                            Gm = pre
                        else:
                            Gm = mul(load(suf, 0, 0, i), pre)
                        if a_sign[i] > 0:
                            add_to(Y, b, a_dir[i], a_site[i], Gm)
                        else:
                            add_to(Y, b, a_dir[i], a_site[i], dag(Gm))
                        if i < m - 1:
                            pre = mul(pre, load(A, 0, 0, i))


pullback_batches3 = _njit(pullback_batches3, parallel=True)


def finish3(U, Y, G):
    """``G = TA(U Y)`` at every link."""
    B, D, V = U.shape[0], U.shape[1], U.shape[2]
    for b in prange(B):
        for nu in range(D):
            for y in range(V):
                store(G, b, nu, y, ta(mul(load(U, b, nu, y), load(Y, b, nu, y))))


finish3 = _njit(finish3, parallel=True)


# ------------------------------------------------------------------------------------------
# N = 3, loop by loop: every contractible loop once per base site instead of once per link it
# passes (the staples of all its n links from prefix and suffix products: ~3n products instead
# of n(n - 2); the pull-back with first-order ("dual") prefix and suffix products: ~8n instead
# of 3n(n - 1)). Loop table: loop r has type l_type[r], steps l_dir/l_sign[l_start[r] + i],
# i < l_len[r], from the base site x.
# ------------------------------------------------------------------------------------------
def _walk3(U, b, x, r, l_start, l_len, l_dir, l_sign, fwd, bwd, A, a_dir, a_site, a_sign):
    """The links of path r (loop or staple table) starting at site x, in path order (daggered
    for backward steps)."""
    pos = x
    for i in range(l_len[r]):
        nu = l_dir[l_start[r] + i]
        a_dir[i] = nu
        if l_sign[l_start[r] + i] > 0:
            a_sign[i] = 1
            a_site[i] = pos
            store(A, 0, 0, i, load(U, b, nu, pos))
            pos = fwd[pos, nu]
        else:
            a_sign[i] = -1
            pos = bwd[pos, nu]
            a_site[i] = pos
            store(A, 0, 0, i, dag(load(U, b, nu, pos)))


_walk3 = _njit(_walk3)


def loop_staples3(U, l_type, l_start, l_len, l_dir, l_sign, fwd, bwd, max_len, S):
    """Add to ``S[k, b, nu, y]`` the staples of every loop of the loop table (a link traversed
    backwards gets the dagger of the loop opened there)."""
    B, V = U.shape[0], U.shape[2]
    for b in prange(B):
        A = np.empty((1, 1, max_len, 9), dtype=U.dtype)
        P = np.empty((1, 1, max_len, 9), dtype=U.dtype)
        R = np.empty((1, 1, max_len, 9), dtype=U.dtype)
        a_dir = np.empty(max_len, dtype=np.int64)
        a_site = np.empty(max_len, dtype=np.int64)
        a_sign = np.empty(max_len, dtype=np.int64)
        for x in range(V):
            for r in range(l_type.shape[0]):
                n = l_len[r]
                Sk = S[l_type[r]]
                _walk3(U, b, x, r, l_start, l_len, l_dir, l_sign, fwd, bwd, A, a_dir, a_site,
                       a_sign)
                store(P, 0, 0, 0, load(A, 0, 0, 0))
                for i in range(1, n - 1):
                    store(P, 0, 0, i, mul(load(P, 0, 0, i - 1), load(A, 0, 0, i)))
                store(R, 0, 0, n - 1, load(A, 0, 0, n - 1))
                for i in range(n - 2, 0, -1):
                    store(R, 0, 0, i, mul(load(A, 0, 0, i), load(R, 0, 0, i + 1)))
                for j in range(n):
                    if j == 0:
                        O = load(R, 0, 0, 1)
                    elif j == n - 1:
                        O = load(P, 0, 0, n - 2)
                    else:
                        O = mul(load(R, 0, 0, j + 1), load(P, 0, 0, j - 1))
                    if a_sign[j] > 0:
                        add_to(Sk, b, a_dir[j], a_site[j], O)
                    else:
                        add_to(Sk, b, a_dir[j], a_site[j], dag(O))


loop_staples3 = _njit(loop_staples3, parallel=True)


def loop_pullback3(U, rho, LU, l_type, l_start, l_len, l_dir, l_sign, fwd, bwd, max_len, Y):
    """Add to ``Y`` the pull-back of every loop of the loop table: with ``X_i = rho M`` (``M =
    LU = Lambda U`` of the link, daggered for a backward step) the loop opened at each link,
    summed over the replacement of every other link by its X."""
    B, V = U.shape[0], U.shape[2]
    for b in prange(B):
        A = np.empty((1, 1, max_len, 9), dtype=U.dtype)
        X = np.empty((1, 1, max_len, 9), dtype=U.dtype)
        P = np.empty((1, 1, max_len, 9), dtype=U.dtype)
        Pd = np.empty((1, 1, max_len, 9), dtype=U.dtype)
        R = np.empty((1, 1, max_len, 9), dtype=U.dtype)
        Rd = np.empty((1, 1, max_len, 9), dtype=U.dtype)
        a_dir = np.empty(max_len, dtype=np.int64)
        a_site = np.empty(max_len, dtype=np.int64)
        a_sign = np.empty(max_len, dtype=np.int64)
        for x in range(V):
            for r in range(l_type.shape[0]):
                n = l_len[r]
                k = l_type[r]
                _walk3(U, b, x, r, l_start, l_len, l_dir, l_sign, fwd, bwd, A, a_dir, a_site,
                       a_sign)
                for i in range(n):
                    m = scale(rho[k, a_dir[i]], load(LU, b, a_dir[i], a_site[i]))
                    store(X, 0, 0, i, m if a_sign[i] > 0 else dag(m))
                store(P, 0, 0, 0, load(A, 0, 0, 0))
                store(Pd, 0, 0, 0, load(X, 0, 0, 0))
                for i in range(1, n - 1):
                    a = load(A, 0, 0, i)
                    p = load(P, 0, 0, i - 1)
                    store(Pd, 0, 0, i, add(mul(load(Pd, 0, 0, i - 1), a),
                                           mul(p, load(X, 0, 0, i))))
                    store(P, 0, 0, i, mul(p, a))
                store(R, 0, 0, n - 1, load(A, 0, 0, n - 1))
                store(Rd, 0, 0, n - 1, load(X, 0, 0, n - 1))
                for i in range(n - 2, 0, -1):
                    a = load(A, 0, 0, i)
                    q = load(R, 0, 0, i + 1)
                    store(Rd, 0, 0, i, add(mul(a, load(Rd, 0, 0, i + 1)),
                                           mul(load(X, 0, 0, i), q)))
                    store(R, 0, 0, i, mul(a, q))
                for j in range(n):
                    if j == 0:
                        O = load(Rd, 0, 0, 1)
                    elif j == n - 1:
                        O = load(Pd, 0, 0, n - 2)
                    else:
                        O = add(mul(load(Rd, 0, 0, j + 1), load(P, 0, 0, j - 1)),
                                mul(load(R, 0, 0, j + 1), load(Pd, 0, 0, j - 1)))
                    if a_sign[j] > 0:
                        add_to(Y, b, a_dir[j], a_site[j], O)
                    else:
                        add_to(Y, b, a_dir[j], a_site[j], dag(O))


loop_pullback3 = _njit(loop_pullback3, parallel=True)
