"""Rooted staggered fermions through RHMC: the pseudofermion action of ``det(D^dag D)^p`` with
rational approximations computed by :func:`lattice_ml.fermions.rational.remez`, its heatbath
refresh and its molecular-dynamics force (one multi-shift CG per force).

Rooting convention
------------------
``D`` is the staggered operator (:class:`lattice_ml.fermions.StaggeredDirac`), ``A = D^dag D =
m^2 - K^2``. One staggered field describes ``2^(D/2)`` tastes and ``det D = det(A)^(1/2)``
(eigenvalues of ``D`` come in pairs ``m +- i lambda``), so ``n_f`` flavours are
``det(A)^p`` with ``p = n_f / 2^(D/2 + 1)``: in 4D ``p = 1/4`` for two flavours and ``p = 1/8``
for one; in 2D ``p = 1/2`` for two flavours (``det D`` itself) and ``p = 1/4`` for one.
``0 < p < 1`` is required (``p = 1`` is the unrooted two-field case, handled by plain CG).

    S_f[U, phi] = phi^dag r(A) phi,        r(x)  ~ x^(-p)    (``remez(-p, lo, hi, degree)``)
    refresh:   phi = r'(A) eta,             r'(x) ~ x^(p/2)   (``remez(p/2, lo, hi, degree)``)

with ``eta ~ exp(-|eta|^2)``, so that ``phi ~ exp(-phi^dag A^(-p) phi)`` up to the approximation
error and ``S_f = eta^dag r'(A) r(A) r'(A) eta ~ |eta|^2`` right after a refresh. Eigenvalue by
eigenvalue ``r' r r' = x^0 (1 + e_1)^2 (1 + e_2)`` with ``|e_1| <= eps_1``, ``|e_2| <= eps_2``
(the certified errors ``.error`` of the two approximations), hence

    |S_f - |eta|^2| <= [(1 + eps_1)^2 (1 + eps_2) - 1] |eta|^2 + (solver residuals),

checked in the tests.

Spectral range
--------------
``A = m^2 + K^dag K`` with ``K`` anti-hermitian, so ``lambda_min(A) >= m^2``. ``K = sum_mu K_mu``,
``K_mu = (1/2) eta_mu (T_mu - T_mu^dag)`` with ``T_mu`` the unitary parallel transporter, so
``||K_mu|| <= 1`` and ``||K|| <= D`` for any unitary links; hence

    spec(A) in [m^2, m^2 + D^2]        (default ``lo = m^2``, ``hi = m^2 + D^2``).

(The free field reaches only ``m^2 + D``; ``D^2`` is the bound valid for every gauge field.)
:meth:`StaggeredRationalAction.spectral_check` estimates the extreme eigenvalues by power
iteration and reports whether they lie in ``[lo, hi]``.

Force (convention of :mod:`lattice_ml.gauge.action`: ``dS/ds = Re Tr(T M)`` for
``U_mu(x) -> exp(sT) U_mu(x)`` gives ``F = (1/2) TA(M)``)
---------------------------------------------------------------------------------------------
``S_f = a0 |phi|^2 + sum_k a_k phi^dag (A + b_k)^{-1} phi``. For one shift, with
``X_k = (A + b_k)^{-1} phi``, ``dS_k = -X_k^dag dA X_k`` and ``dA = -(dK K + K dK)``; ``K`` and
``dK`` are anti-hermitian, so ``dS_k = 2 Re(X_k^dag dK (K X_k))``. ``K`` depends on ``U_mu(x)``
through ``(1/2) eta_mu(x) U_mu(x) chi(x+mu)`` at ``x`` and ``-(1/2) eta_mu(x) U_mu(x)^dag chi(x)``
at ``x + mu`` (``eta_mu(x + mu) = eta_mu(x)``); with ``dU = T U``, ``T^dag = -T`` and
``Re Tr(T B) = -Re Tr(T B^dag)``, for any two fields ``L``, ``R``::

    2 Re(L^dag dK R) = Re Tr[T M_mu(x)],
    M_mu(x) = eta_mu(x) U_mu(x) [ R~(x+mu) L(x)^dag - L~(x+mu) R(x)^dag ],

``psi~(x+mu)`` the neighbour with the antiperiodic sign of a hop across the time boundary. So

    F_mu(x) = (1/2) TA[ sum_k a_k M_mu(x; L = X_k, R = K X_k) ].

Every ``X_k`` comes from one multi-shift CG (:func:`lattice_ml.fermions.multishift_cg`) from a
zero start, so the force is a deterministic function of ``U`` and the MD stays reversible.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ..backend import namespace, to_numpy
from ..gauge.paths import link
from ..groups import project_algebra
from ..lattice import shift
from .rational import RationalApproximation, remez
from .solvers import multishift_cg, vdot
from .staggered import StaggeredDirac

__all__ = ["StaggeredRationalAction", "staggered_force_matrix", "staggered_spectral_bounds",
           "staggered_root_powers"]


def _outer(a, b):
    """Colour outer product summed over the (size-1) spin axis, ``out_ij = sum_s a_si conj(b_sj)``."""
    xp = namespace(a, b)
    return xp.matrix_transpose(a) @ xp.conj(b)


def staggered_root_powers(n_flavours: int, D: int) -> list[float]:
    """Powers ``p_i`` of the RHMC fields for ``n_flavours`` degenerate staggered flavours.

    One staggered field describes ``2^(D/2)`` tastes (``D = 2, 4``), ``det D_st = det(A)^(1/2)``
    with ``A = D_st^dag D_st``, so ``n_f`` flavours are ``det(A)^P``, ``P = n_f / 2^(D/2 + 1)``:
    2D: ``P = n_f / 4`` (``n_f = 2`` is ``det D_st`` itself, unrooted: ``P = 1/2``);
    4D: ``P = n_f / 8`` (``n_f = 2``: ``P = 1/4``, ``n_f = 4``: ``P = 1/2``).
    Each RHMC field needs ``0 < p < 1``, so ``P`` is split into ``n = floor(P) + 1`` equal
    powers ``p = P / n`` (``det(A)^P = prod_i det(A)^p``; several fields also lower the force
    variance). Returns ``[p] * n``.
    """
    if D not in (2, 4):
        raise ValueError(f"staggered flavour counting needs D = 2 or 4 (2^(D/2) tastes), got {D}")
    if int(n_flavours) != n_flavours or n_flavours < 1:
        raise ValueError(f"n_flavours must be a positive integer, got {n_flavours!r}")
    P = int(n_flavours) / 2 ** (D // 2 + 1)
    n = int(math.floor(P)) + 1
    return [P / n] * n


def staggered_spectral_bounds(mass: float, D: int) -> tuple[float, float]:
    """``(m^2, m^2 + D^2)``: bounds on the spectrum of ``D_st^dag D_st`` for any unitary links."""
    m2 = float(mass) ** 2
    return m2, m2 + float(D) ** 2


def staggered_force_matrix(S: StaggeredDirac, L, R):
    """``M_mu(x)`` with ``2 Re(L^dag dK R) = Re Tr[T M_mu(x)]`` for ``U_mu(x) -> exp(sT) U_mu(x)``
    (``K`` the hopping term of ``S``); ``[batch, D, *sites, N, N]``."""
    xp = S.xp
    out = []
    for mu in range(S.D):
        ap = S.boundary == "antiperiodic" and mu == 0
        R_fwd = shift(R, mu, +1, antiperiodic=ap)
        L_fwd = shift(L, mu, +1, antiperiodic=ap)
        m = _outer(R_fwd, L) - _outer(L_fwd, R)
        out.append(S._eta[mu] * (link(S.U, mu) @ m))
    return xp.stack(out, axis=1)


class StaggeredRationalAction:
    """RHMC pseudofermion action ``S_f = phi^dag r(D^dag D) phi``, ``r ~ x^(-p)``, for
    ``det(D^dag D)^p`` with the staggered operator (module docstring for the conventions).

    Parameters
    ----------
    mass : float
        Staggered mass ``m > 0``.
    N : int
        1 for U(1), N >= 2 for SU(N).
    n_flavours_power : float
        ``p`` with ``0 < p < 1``: ``p = n_f / 2^(D/2 + 1)`` (1/4: two flavours in 4D, one in 2D).
    lo, hi : float, optional
        Spectral range of ``D^dag D`` the approximations are built for; default
        :func:`staggered_spectral_bounds` for the lattice dimension (then the approximations are
        built at the first call, once the dimension is known). ``lo <= m^2`` and
        ``hi >= m^2 + D^2`` are needed for the stated error bound; other values raise unless
        ``check_range=False``.
    degree : int
        Poles of the action approximation ``r``; ``degree_refresh`` (default ``degree``) those of
        ``r'``.
    boundary : ``"antiperiodic"`` (default) or ``"periodic"``.
    tol : float
        Relative residual of every shifted solve (float64: 1e-12 or tighter for HMC).
    solver : callable, default :func:`multishift_cg`.
    maxiter : int

    Attributes
    ----------
    phi, eta : pseudofermion field and the Gaussian vector of the last refresh.
    approx_action, approx_refresh : :class:`RationalApproximation` (``None`` until built).
    solves, iterations : multi-shift solves and their iterations (batch maximum), for costs.
    """

    def __init__(self, mass: float, N: int, n_flavours_power: float, lo: float | None = None,
                 hi: float | None = None, degree: int = 12, *, degree_refresh: int | None = None,
                 boundary: str = "antiperiodic", tol: float = 1e-12,
                 solver: Callable = multishift_cg, maxiter: int = 10000,
                 check_range: bool = True):
        p = float(n_flavours_power)
        if not 0.0 < p < 1.0:
            raise ValueError(f"n_flavours_power must lie in (0, 1), got {n_flavours_power!r}")
        if not float(mass) > 0.0:
            raise ValueError(f"mass must be > 0 (lo = m^2 bounds the spectrum), got {mass!r}")
        if not isinstance(N, int) or N < 1:
            raise ValueError(f"N must be a positive integer (1 for U(1)), got {N!r}")
        if not tol > 0:
            raise ValueError(f"tol must be > 0, got {tol!r}")
        self.mass = float(mass)
        self.N = N
        self.power = p
        # what the user gave (None: the bound of the lattice's D); build() resolves lo/hi from it
        self._lo_given = None if lo is None else float(lo)
        self._hi_given = None if hi is None else float(hi)
        self.lo, self.hi = self._lo_given, self._hi_given
        self.degree = int(degree)
        self.degree_refresh = int(degree if degree_refresh is None else degree_refresh)
        self.boundary = boundary
        self.tol = float(tol)
        self.solver = solver
        self.maxiter = int(maxiter)
        self.check_range = bool(check_range)
        self.approx_action: RationalApproximation | None = None
        self.approx_refresh: RationalApproximation | None = None
        self._D = None
        self.phi = None
        self.eta = None
        self.solves = 0
        self.iterations = 0

    def __repr__(self) -> str:
        return (f"StaggeredRationalAction(mass={self.mass}, N={self.N}, "
                f"n_flavours_power={self.power}, lo={self.lo}, hi={self.hi}, "
                f"degree={self.degree}, tol={self.tol:g})")

    # -- approximations -------------------------------------------------------------------------
    def build(self, D: int) -> None:
        """Compute both rational approximations for a ``D``-dimensional lattice."""
        lo_b, hi_b = staggered_spectral_bounds(self.mass, D)
        lo = lo_b if self._lo_given is None else self._lo_given
        hi = hi_b if self._hi_given is None else self._hi_given
        if self.check_range and (lo > lo_b * (1 + 1e-12) or hi < hi_b * (1 - 1e-12)):
            raise ValueError(f"[lo, hi] = [{lo}, {hi}] does not contain the spectral bound "
                             f"[{lo_b}, {hi_b}] of D^dag D (m^2, m^2 + D^2); pass "
                             f"check_range=False to use it anyway")
        self.lo, self.hi = lo, hi
        self.approx_action = remez(-self.power, lo, hi, self.degree)
        self.approx_refresh = remez(0.5 * self.power, lo, hi, self.degree_refresh)
        self._D = D

    @property
    def error_bound(self) -> float:
        """``(1 + eps_1)^2 (1 + eps_2) - 1``: relative bound on ``|S_f - |eta|^2|`` right after a
        refresh (``eps_1``, ``eps_2`` the errors of ``r'`` and ``r``), solver residuals apart."""
        e1, e2 = self.approx_refresh.error, self.approx_action.error
        return (1 + e1) ** 2 * (1 + e2) - 1

    def operator(self, U) -> StaggeredDirac:
        if U.shape[-1] != self.N:
            raise ValueError(f"links of shape {tuple(U.shape)} are not {self.N}x{self.N}")
        S = StaggeredDirac(U, self.mass, boundary=self.boundary, check=False)
        if self._D != S.D:
            self.build(S.D)
        return S

    def _phi(self, U):
        if self.phi is None:
            raise RuntimeError("pseudofermion field not set: call refresh(U, rng) first (once "
                               "per trajectory) or set .phi")
        if self.phi.shape[0] != U.shape[0]:
            raise ValueError(f"pseudofermion batch {self.phi.shape[0]} does not match the links' "
                             f"batch {U.shape[0]}")
        return self.phi

    def _multishift(self, S, b, approx):
        xs, info = self.solver(S.normal, b, [float(s) for s in approx.shifts], tol=self.tol,
                               maxiter=self.maxiter)
        self.solves += 1
        self.iterations += int(np.max(info.iterations)) if np.size(info.iterations) else 0
        return xs

    # -- heatbath, action, force ----------------------------------------------------------------
    def refresh(self, U, rng):
        """``phi = r'(D^dag D) eta``, ``eta ~ exp(-|eta|^2)`` per chain; returns ``phi``."""
        xp = namespace(U)
        S = self.operator(U)
        eta = xp.astype(rng.complex_normal(tuple(S.sites) + (1, S.N)), U.dtype)
        xs = self._multishift(S, eta, self.approx_refresh)
        r = self.approx_refresh
        phi = r.a0 * eta
        for k in range(r.degree):
            phi = phi + float(r.residues[k]) * xs[k, ...]
        self.eta = eta
        self.phi = phi
        return phi

    def action(self, U):
        """``S_f = phi^dag r(D^dag D) phi`` per configuration, ``[batch]`` (real)."""
        xp = namespace(U)
        S = self.operator(U)
        phi = self._phi(U)
        r = self.approx_action
        xs = self._multishift(S, phi, r)
        out = r.a0 * xp.real(vdot(phi, phi))
        for k in range(r.degree):
            out = out + float(r.residues[k]) * xp.real(vdot(phi, xs[k, ...]))
        return out

    def force(self, U):
        """``F = -dS_f/dU`` as a Lie-algebra field ``[batch, D, *sites, N, N]``."""
        S = self.operator(U)
        phi = self._phi(U)
        r = self.approx_action
        xs = self._multishift(S, phi, r)
        M = None
        for k in range(r.degree):
            X = xs[k, ...]
            term = float(r.residues[k]) * staggered_force_matrix(S, X, S.hopping(X))
            M = term if M is None else M + term
        return 0.5 * project_algebra(M)

    # -- diagnostics ------------------------------------------------------------------------------
    def spectral_check(self, U, rng, iters: int = 200):
        """Power-iteration estimates ``(lambda_min, lambda_max)`` of ``D^dag D`` per configuration
        (host arrays; ``lambda_min`` from the largest eigenvalue of ``hi - A``). Both are inside
        the true spectrum, so they are lower/upper estimates, not bounds."""
        xp = namespace(U)
        S = self.operator(U)
        hi = self.hi

        def power(op):
            v = xp.astype(rng.complex_normal(tuple(S.sites) + (1, S.N)), U.dtype)
            lam = None
            for _ in range(iters):
                n = xp.sqrt(xp.real(vdot(v, v)))
                v = v / xp.reshape(xp.astype(n, U.dtype), (-1,) + (1,) * (v.ndim - 1))
                w = op(v)
                lam = xp.real(vdot(v, w))
                v = w
            return np.asarray(to_numpy(lam), dtype=float)

        lam_max = power(S.normal)
        lam_min = hi - power(lambda v: hi * v - S.normal(v))
        return lam_min, lam_max
