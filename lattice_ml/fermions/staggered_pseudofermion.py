"""Unrooted staggered fermions: the even/odd pseudofermion action of ``det D_st`` itself, with
plain CG (no rational approximation), its heatbath refresh and its molecular-dynamics force.

Determinant
-----------
``D_st = m + K`` (:class:`lattice_ml.fermions.StaggeredDirac`), ``K`` anti-hermitian and
connecting opposite parities, so ``A = D^dag D = m^2 - K^2`` is block diagonal in parity with
the even block ``A_ee = m^2 - K_eo K_oe`` (hermitian positive definite for m > 0). The
non-zero eigenvalues of ``K_eo K_oe`` and ``K_oe K_eo`` agree and both blocks have ``V/2``
sites, so ``det A = det(A_ee)^2`` and

    det D_st = det(A)^(1/2) = det A_ee          (one staggered field: 2^(D/2) tastes),

the weight of **four tastes in 4D** (two in 2D) without a root. In the flavour counting of
:mod:`lattice_ml.fermions.rhmc` this is ``det(D^dag D)^p`` with ``p = 1/2`` (``power``), which
:class:`~lattice_ml.fermions.rhmc.StaggeredRationalAction` can only approximate.

    S_f[U, phi_e] = phi_e^dag A_ee^{-1} phi_e,      X = A_ee^{-1} phi_e   (CG on the even sites),
    refresh:  phi_e = (D^dag eta)_e = m eta_e - K_eo eta_o,   eta ~ exp(-|eta|^2) on all sites,

so ``<phi_e phi_e^dag> = P_e D^dag D P_e = A_ee`` and ``phi_e ~ exp(-S_f) / det A_ee^{-1}``.

Force (convention of :mod:`lattice_ml.gauge.action`, ``F = (1/2) TA(M)`` for ``dS/ds = Re Tr(T
M)``): for even ``X`` one has ``A X = A_ee X``, so ``S_f = phi^dag A^{-1} phi`` and, as for one
pole of the rational action (``dA = -(dK K + K dK)``, ``K``, ``dK`` anti-hermitian),
``dS = 2 Re(X^dag dK (K X))``:

    F_mu(x) = (1/2) TA[ M_mu(x; L = X, R = K X) ]      (:func:`~lattice_ml.fermions.rhmc.staggered_force_matrix`).

The solves start from zero, so the force is a fixed function of ``U`` and the molecular dynamics
stays reversible whatever ``tol`` is; ``tol`` sets the accuracy of ``S_f`` in the accept step.
"""

from __future__ import annotations

from typing import Callable

from ..backend import namespace
from ..groups import project_algebra
from .rhmc import staggered_force_matrix
from .solvers import cg, vdot
from .staggered import StaggeredDirac

__all__ = ["StaggeredPseudofermionAction"]


class StaggeredPseudofermionAction:
    """Unrooted staggered pseudofermion action ``S_f = phi_e^dag (m^2 - K_eo K_oe)^{-1} phi_e``
    for ``det D_st`` (``2^(D/2)`` tastes; module docstring).

    Parameters
    ----------
    mass : float
        Staggered mass ``m > 0``.
    N : int
        1 for U(1), N >= 2 for SU(N).
    boundary : ``"antiperiodic"`` (default) or ``"periodic"`` time boundary.
    tol : float
        Relative residual of the CG solves (float64: 1e-12 or tighter for HMC).
    solver : callable ``solver(A, b, tol=..., maxiter=...) -> (x, info)``, default
        :func:`lattice_ml.fermions.cg`.
    maxiter : int

    Attributes
    ----------
    power : 0.5, the power of ``det(D^dag D)`` this field represents (as
        :attr:`StaggeredRationalAction.power <lattice_ml.fermions.rhmc.StaggeredRationalAction>`).
    phi, eta : pseudofermion field (even sites, zero on the odd ones) and the Gaussian vector of
        the last refresh (all sites).
    solves, iterations : CG solves and their iterations (batch maximum), for cost reports.
    """

    power = 0.5

    def __init__(self, mass: float, N: int, boundary: str = "antiperiodic", tol: float = 1e-12,
                 solver: Callable = cg, maxiter: int = 10000):
        if not float(mass) > 0.0:
            raise ValueError(f"mass must be > 0 (A_ee = m^2 - K_eo K_oe is then positive), "
                             f"got {mass!r}")
        if not isinstance(N, int) or N < 1:
            raise ValueError(f"N must be a positive integer (1 for U(1)), got {N!r}")
        if not tol > 0:
            raise ValueError(f"tol must be > 0, got {tol!r}")
        self.mass = float(mass)
        self.N = N
        self.boundary = boundary
        self.tol = float(tol)
        self.solver = solver
        self.maxiter = int(maxiter)
        self.phi = None
        self.eta = None
        self.solves = 0
        self.iterations = 0

    def __repr__(self) -> str:
        return (f"StaggeredPseudofermionAction(mass={self.mass}, N={self.N}, "
                f"boundary={self.boundary!r}, tol={self.tol:g})")

    def operator(self, U) -> StaggeredDirac:
        """The staggered operator on ``U`` (no unitarity check: called in the MD loop)."""
        if U.shape[-1] != self.N:
            raise ValueError(f"links of shape {tuple(U.shape)} are not {self.N}x{self.N}")
        return StaggeredDirac(U, self.mass, boundary=self.boundary, check=False)

    def _solve(self, S):
        if self.phi is None:
            raise RuntimeError("pseudofermion field not set: call refresh(U, rng) first (once "
                               "per trajectory) or set .phi")
        if self.phi.shape[0] != S.U.shape[0]:
            raise ValueError(f"pseudofermion batch {self.phi.shape[0]} does not match the links' "
                             f"batch {S.U.shape[0]}")
        X, info = self.solver(S.normal_eo, self.phi, tol=self.tol, maxiter=self.maxiter)
        self.solves += 1
        self.iterations += int(max(info.iterations)) if len(info.iterations) else 0
        return X

    def refresh(self, U, rng):
        """``phi_e = (D^dag eta)_e``, ``eta ~ exp(-|eta|^2)`` on every site, per chain; returns
        ``phi`` and keeps it (and ``eta``)."""
        xp = namespace(U)
        S = self.operator(U)
        eta = xp.astype(rng.complex_normal(tuple(S.sites) + (1, S.N)), U.dtype)
        self.eta = eta
        self.phi = S.even(S.apply_dagger(eta))
        return self.phi

    def action(self, U):
        """``S_f = phi_e^dag A_ee^{-1} phi_e`` per configuration, ``[batch]`` (real)."""
        xp = namespace(U)
        S = self.operator(U)
        return xp.real(vdot(self.phi, self._solve(S)))

    def force(self, U):
        """``F = -dS_f/dU`` as a Lie-algebra field ``[batch, D, *sites, N, N]``."""
        S = self.operator(U)
        X = self._solve(S)
        return 0.5 * project_algebra(staggered_force_matrix(S, X, S.hopping(X)))
