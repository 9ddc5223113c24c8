"""Force of the clover (Sheikholeslami-Wohlert) term of the Wilson operator.

The clover term of :class:`lattice_ml.fermions.WilsonDirac` is site-local::

    C(x) = c_sw (i/2) sum_{mu<nu} sigma_munu (x) F_munu(x),     F_munu = (Q_munu - Q_munu^dag) / 8,

``Q_munu(x)`` the sum of the four plaquette leaves in the (mu, nu) plane that start and end at
``x`` (:func:`clover_leaves`, the same paths as :func:`lattice_ml.fermions.clover_field_strength`).

Derivative (convention of :mod:`lattice_ml.gauge.action`: ``U_rho(y) -> exp(sT) U_rho(y)``,
``dS/ds = Re Tr(T M)`` gives ``F = (1/2) TA(M)``). For two fermion fields ``L``, ``R``
(``[batch, *sites, spin, colour]``)::

    2 Re(L^dag dC R) = Re sum_x sum_{mu<nu} Tr[dF_munu(x) G_munu(x)],
    G_munu(x) = i c_sw B_munu(x),   B_munu(x)_{ba} = sum_s (sigma_munu R)(x)_{s b} conj(L(x)_{s a}),

and, since ``Re Tr[dQ^dag G] = Re Tr[dQ G^dag]``,
``Re Tr[dF G] = (1/8) Re Tr[dQ W]`` with ``W = G - G^dag``. A leaf is a product of links
``A U B``; differentiating the link ``U_rho(y)`` it contains gives, with ``Tr`` cyclic,

* traversed forward (``A U_rho(y) B``): ``M_rho(y) += (1/8) U_rho(y) B W(x) A``,
* traversed backward (``A U_rho(y)^dag B``): ``M_rho(y) += -(1/8) B W(x) A U_rho(y)^dag``,

``x`` the leaf's base site, ``A`` the transport from ``x`` to the link and ``B`` from the link
back to ``x``. Summed over planes, leaves and their four links (16 terms per plane), this is
:func:`clover_force_matrix` with ``2 Re(L^dag dC R) = Re Tr[T M_rho(y)]``. With ``D = A - H``,
``A = (m + D) + C``, the two-flavour pseudofermion force is
``F = (1/2) TA[M_hop(Y, X) - M_clover(Y, X)]`` (:func:`lattice_ml.fermions.wilson_fermion_force`).

Even/odd with clover needs ``det A_oo`` as well: :func:`clover_logdet` gives
``sum_{x of parity} log|det A(x)|`` and :func:`clover_logdet_force_matrix` its derivative, the same
leaf derivative with the insertion ``G_munu = (i c_sw / 2) sum_{s s'} (sigma_munu)_{s s'}
A^{-1}(x)_{(s' b), (s a)}`` (from ``d log det A = Tr[A^{-1} dC]``).
"""

from __future__ import annotations

import math

import numpy as np

from ..backend import namespace, real_dtype_of, to_numpy
from ..gauge.paths import link, shift_by, transport
from ..groups import dagger, identity_like
from .gamma import sigma_munu

__all__ = ["clover_leaves", "clover_force_matrix", "clover_logdet_force_matrix", "clover_logdet"]


def clover_leaves(mu: int, nu: int) -> list[tuple[tuple[int, int], ...]]:
    """The four plaquette leaves of the clover in the (mu, nu) plane, each a path of
    ``(direction, +-1)`` steps that starts and ends at the base site."""
    return [((mu, 1), (nu, 1), (mu, -1), (nu, -1)),
            ((nu, 1), (mu, -1), (nu, -1), (mu, 1)),
            ((mu, -1), (nu, -1), (mu, 1), (nu, 1)),
            ((nu, -1), (mu, 1), (nu, 1), (mu, -1))]


def _outer(a, b):
    """``out_{ij} = sum_s a_{s i} conj(b_{s j})``: ``[..., s, N] x [..., s, N] -> [..., N, N]``."""
    xp = namespace(a, b)
    return xp.matrix_transpose(a) @ xp.conj(b)


def _path_transport(U, path, start, eye):
    return transport(U, path, start) if path else eye


def clover_force_matrix(W, L, R, pairs=(), logdet=None):
    """``M_rho(y)`` with ``2 Re(L^dag dC R) = Re Tr[T M_rho(y)]`` for ``U_rho(y) -> exp(sT) U_rho(y)``,
    ``C`` the clover term of the Wilson operator ``W`` (``W.csw``); ``[batch, D, *sites, N, N]``
    (module docstring for the derivation). Zero when ``csw = 0``.

    The result is linear in the insertion, so several terms share one pass over the leaves:
    ``pairs`` adds ``c * M(L', R')`` for every ``(c, L', R')`` and ``logdet = (c, parity)`` adds
    ``c * clover_logdet_force_matrix(W, parity)``."""
    sig = sigma_munu(W.D, W.xp, dtype=W.U.dtype, device=W.device)
    terms = [(1.0, L, R), *pairs]
    ld = None if logdet is None or W.csw == 0.0 else (logdet[0], _logdet_insertion(W, logdet[1]))

    def insertion(mu, nu):
        G = None
        for c, a, b in terms:
            g = (1j * W.csw * c) * _outer(sig[mu, nu, ...] @ b, a)
            G = g if G is None else G + g
        return G if ld is None else G + ld[0] * ld[1](mu, nu)

    return _insertion_force(W, insertion)


def clover_logdet_force_matrix(W, parity: int):
    """``M_rho(y)`` with ``d/ds sum_{x of parity} log|det A(x)| = Re Tr[T M_rho(y)]``, ``A(x)`` the
    site-local ``(n_spin N) x (n_spin N)`` block ``(m + D) + C(x)`` of ``W`` (hermitian).

    ``d log det A = Tr[A^{-1} dC] = Re sum_{mu<nu} Tr_c[dF_munu G_munu]`` with
    ``G_munu = (i c_sw / 2) B_munu``, ``B_munu(x)_{ba} = sum_{s s'} (sigma_munu)_{s s'}
    A^{-1}(x)_{(s' b), (s a)}`` (spin-major index ``s N + colour``), restricted to the sites of
    ``parity``; then as :func:`clover_force_matrix`."""
    if W.csw == 0.0:
        return _insertion_force(W, None)
    return _insertion_force(W, _logdet_insertion(W, parity))


def _logdet_insertion(W, parity):
    xp, N, ns = W.xp, W.N, W.n_spin
    if W._Ainv is None:
        W._Ainv = xp.linalg.inv(W._local_matrix())
    Ainv = W._Ainv                                                # [batch, *sites, sN, sN]
    mask = W._mask(parity)                                        # [1, *sites, 1, 1]
    sig = sigma_munu(W.D, xp, dtype=W.U.dtype, device=W.device)
    host_sig = np.asarray(to_numpy(sig))

    def insertion(mu, nu):
        B = None
        for s in range(ns):
            for t in range(ns):
                c = complex(host_sig[mu, nu, s, t])
                if c == 0:
                    continue
                term = c * Ainv[..., t * N:(t + 1) * N, s * N:(s + 1) * N]
                B = term if B is None else B + term
        return (0.5j * W.csw) * (B * xp.astype(mask, B.dtype))

    return insertion


def clover_logdet(W, parity: int):
    """``sum_{x of parity} log|det A(x)|`` per configuration, ``[batch]`` (real)."""
    xp = W.xp
    if W.csw == 0.0:                                              # A = (m + D) 1
        n_par = int(np.prod(W.sites)) // 2
        const = n_par * W.n_spin * W.N * math.log(abs(W.diag))
        return xp.zeros((W.U.shape[0],), dtype=real_dtype_of(xp, W.U.dtype),
                        device=W.device) + const
    _, logabs = xp.linalg.slogdet(W._local_matrix())             # [batch, *sites]
    mask = xp.astype(W._mask(parity)[..., 0, 0], logabs.dtype)
    return xp.sum(logabs * mask, axis=tuple(range(1, logabs.ndim)))


def _insertion_force(W, insertion):
    """``M_rho(y)`` of ``Re sum_x sum_{mu<nu} Tr[dF_munu(x) G_munu(x)]`` with
    ``G_munu = insertion(mu, nu)`` ``[batch, *sites, N, N]`` (module docstring)."""
    xp, U, D = W.xp, W.U, W.D
    links = [link(U, rho) for rho in range(D)]
    if W.csw == 0.0:
        return xp.stack([xp.zeros_like(lk) for lk in links], axis=1)
    eye = identity_like(links[0])
    M = [None] * D

    def add(rho, term):
        M[rho] = term if M[rho] is None else M[rho] + term

    for mu in range(D):
        for nu in range(mu + 1, D):
            G = insertion(mu, nu)
            Wmn = G - dagger(G)
            for path in clover_leaves(mu, nu):
                pos = [0] * D                      # position of the current site relative to x
                for k, (rho, sgn) in enumerate(path):
                    A = _path_transport(U, path[:k], None, eye)        # at x
                    Z = Wmn @ A                                          # W(x) A(x), at x
                    if sgn > 0:
                        # link U_rho(y), y = x + pos; B from y + rho back to x
                        e = [0] * D
                        e[rho] = 1
                        B = _path_transport(U, path[k + 1:], e, eye)   # at y (start y + rho)
                        Zy = shift_by(Z, [-p for p in pos])             # Z(y - pos) = Z(x)
                        add(rho, 0.125 * (links[rho] @ (B @ Zy)))
                        pos = list(pos)
                        pos[rho] += 1
                    else:
                        # link U_rho(y)^dag, y = x + pos - rho; B from y back to x
                        pos = list(pos)
                        pos[rho] -= 1
                        B = _path_transport(U, path[k + 1:], None, eye)  # at y
                        Zy = shift_by(Z, [-p for p in pos])              # Z(y - pos) = Z(x)
                        add(rho, -0.125 * ((B @ Zy) @ dagger(links[rho])))
    return xp.stack(M, axis=1)
