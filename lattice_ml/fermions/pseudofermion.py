"""Two-flavour Wilson pseudofermions: action, heatbath refresh and molecular-dynamics force.
(:class:`lattice_ml.samplers.PseudofermionHMC` refreshes them once per trajectory.)

Action
------
For two degenerate Wilson flavours ``det(D^dag D) = |det D|^2 = det(D)^2`` (``D`` is
gamma_5-hermitian, so ``det D`` is real in D = 2, 4) is represented by a complex pseudofermion
field ``phi[batch, *sites, spin, colour]``::

    S_f[U, phi] = phi^dag (D^dag D)^{-1} phi = |Y|^2,   D^dag D X = phi,   Y = D X.

``refresh(U, rng)`` draws ``eta`` with density ``exp(-|eta|^2)`` (``rng.complex_normal``) and sets
``phi = D^dag eta``, so that ``phi ~ exp(-S_f)``; right after a refresh ``S_f = |eta|^2`` exactly
(``(D^dag D)^{-1} D^dag eta = D^{-1} eta``), which the tests check to round-off.

Force (our convention, :mod:`lattice_ml.gauge.action`)
------------------------------------------------------
The force is the Lie-algebra field ``F_mu(x)`` with ``-2 Re Tr(T_a F_mu(x)) = -dS/ds`` for
``U_mu(x) -> exp(s T_a) U_mu(x)``, i.e. with ``dS/ds = Re Tr(T M)`` one has ``F = (1/2) TA(M)``. With ``D = A - H`` (``A`` site-local, ``H`` the
hopping term) ``dS = -X^dag d(D^dag D) X = -2 Re(Y^dag dD X) = 2 Re(Y^dag dH X)``. ``H`` depends
on ``U_mu(x)`` through ``(1/2)(1 - g_mu) U_mu(x) psi(x+mu)`` at ``x`` and
``(1/2)(1 + g_mu) U_mu(x)^dag psi(x)`` at ``x + mu``; with ``dU = T U`` and ``T^dag = -T``,
for any pair of fields ``L``, ``R``::

    2 Re(L^dag dH R) = Re Tr[T M_mu(x)],
    M_mu(x) = U_mu(x) sum_spin [ R~(x+mu) ((1 - g_mu) L(x))^dag + ((1 + g_mu) L~(x+mu)) R(x)^dag ],

with the colour outer products ``(a b^dag)_{ij} = sum_spin a_{s i} conj(b_{s j})`` and
``psi~(x+mu)`` the neighbour including the antiperiodic sign of a hop across the time boundary.
Since ``-2 Re Tr(T_a F) = -Re Tr(T_a M)`` for every generator and
``sum_a T_a Re Tr(T_a M) = -(1/2) TA(M)``, with ``L = Y``, ``R = X``::

    F_mu(x) = (1/2) TA[ M_mu(x) ].

(The gauge action fits the same rule: ``dS/ds = -(beta/N) Re Tr(T U V)``, ``M = -(beta/N) U V``,
``F = -(beta/2N) TA(U V)``.)

Even/odd preconditioning (``even_odd=True``, no clover): ``Dhat = a - (1/a) H_eo H_oe`` with
``a = m + D``, ``det D = a^{V s N / 2} det Dhat``, so ``phi_e^dag (Dhat^dag Dhat)^{-1} phi_e`` on
the even sites samples the same gauge distribution. ``dS = (2/a) Re[Y^dag dH (H X) +
(H^dag Y)^dag dH X]`` with ``X = (Dhat^dag Dhat)^{-1} phi_e``, ``Y = Dhat X``, so the force is the
sum of two outer-product terms, ``F = (1/(2a)) TA[M(Y, H X) + M(H^dag Y, X)]``.

Solver tolerance: ``action`` and ``force`` solve ``D^dag D X = phi`` from a zero start with CG to
relative (true) residual ``tol``. The approximate force is then still a deterministic function of
``U`` and the kick ``P -> P + eps F(U)`` is a shear, so the molecular dynamics stays reversible and
area-preserving whatever ``tol`` is (measured: reversal to 1e-14 at tol = 1e-13 and 1e-11 at
tol = 1e-8; what remains is round-off and the rare change of an iteration count). The tolerance
does enter the Metropolis step through ``S_f`` (error ``O(tol |phi| |X|)``), so the accept step
needs a tight ``tol``; a looser force-only tolerance or a chronological start guess (which would
break reversibility at ``O(tol)``) is not offered here.
Clover term (``csw > 0``): ``A = (m + D) + C`` depends on the links too, ``dS = 2 Re(Y^dag dH X)
- 2 Re(Y^dag dC X)``, so ``F = (1/2) TA[M_hop(Y, X) - M_clover(Y, X)]`` with
:func:`lattice_ml.fermions.clover.clover_force_matrix`. Even/odd with clover: ``det D =
det A_oo det Dhat_ee``, ``Dhat = A_ee - H_eo A_oo^{-1} H_oe``, so two flavours are
``S = phi_e^dag (Dhat^dag Dhat)^{-1} phi_e - 2 sum_{x odd} log|det A(x)|`` (the second term is
what the clover adds; it is constant without clover). With ``X``, ``Y = Dhat X``,
``R' = A_oo^{-1} H X``, ``L' = A_oo^{-1} H^dag Y`` and ``d(A^{-1}) = -A^{-1} dA A^{-1}``::

    M = M_hop(Y, R') + M_hop(L', X) - M_clover(Y, X) - M_clover(L', R') - 2 M_logdet,

``F = (1/2) TA(M)`` (``M_logdet`` from :func:`lattice_ml.fermions.clover.clover_logdet_force_matrix`
on the odd sites); without clover ``A^{-1} = 1/(m + D)`` and this is the expression above.
"""

from __future__ import annotations

from typing import Callable

from ..backend import namespace
from ..groups import project_algebra
from ..lattice import shift
from ..gauge.paths import link
from .clover import clover_force_matrix, clover_logdet
from .solvers import cg, vdot
from .wilson import WilsonDirac

__all__ = ["WilsonPseudofermionAction", "wilson_fermion_force",
           "hopping_force_matrix"]


def _outer(a, b):
    """Colour outer product summed over spin: ``[..., s, N] x [..., s, N] -> [..., N, N]``,
    ``out_{ij} = sum_s a_{s i} conj(b_{s j})``."""
    xp = namespace(a, b)
    return xp.matrix_transpose(a) @ xp.conj(b)


def hopping_force_matrix(W: WilsonDirac, L, R):
    """``M_mu(x)`` with ``2 Re(L^dag dH R) = Re Tr[T M_mu(x)]`` for ``U_mu(x) -> exp(sT) U_mu(x)``
    (``H`` the hopping term of ``W``); ``[batch, D, *sites, N, N]``."""
    xp = W.xp
    out = []
    for mu in range(W.D):
        ap = W.boundary == "antiperiodic" and mu == 0
        g = W.gammas[mu, ...]
        R_fwd = shift(R, mu, +1, antiperiodic=ap)
        L_fwd = shift(L, mu, +1, antiperiodic=ap)
        m = _outer(R_fwd, L - g @ L) + _outer(L_fwd + g @ L_fwd, R)
        out.append(link(W.U, mu) @ m)
    return xp.stack(out, axis=1)


def wilson_fermion_force(W: WilsonDirac, X, Y=None):
    """Force ``F = -dS/dU`` (Lie-algebra field ``[batch, D, *sites, N, N]``) of
    ``S = phi^dag (D^dag D)^{-1} phi`` given ``X = (D^dag D)^{-1} phi`` (and ``Y = D X``)."""
    if Y is None:
        Y = W.apply(X)
    M = hopping_force_matrix(W, Y, X)
    if W.csw != 0.0:
        M = M - clover_force_matrix(W, Y, X)
    return 0.5 * project_algebra(M)


class WilsonPseudofermionAction:
    """Two-flavour Wilson pseudofermion action ``S_f = phi^dag (D^dag D)^{-1} phi``.

    Parameters
    ----------
    mass : float
        Bare Wilson mass (``kappa = 1/(2m + 2D)``).
    N : int
        1 for U(1), N >= 2 for SU(N).
    boundary : ``"antiperiodic"`` (default) or ``"periodic"`` time boundary of the fermions.
    tol : float
        Relative residual of the CG solves of ``D^dag D X = phi`` (float64: 1e-12 or tighter for
        HMC). With zero-start solves the force is a fixed function of U, so reversibility does
        not depend on it; it sets the accuracy of the action in the accept/reject step.
    solver : callable
        ``solver(A, b, tol=...) -> (x, info)``, default :func:`lattice_ml.fermions.cg`.
    even_odd : bool
        Use the even/odd preconditioned operator (all extents even).
    csw : float
        Clover coefficient ``c_sw >= 0`` (force of the clover term included; with ``even_odd``
        the action adds ``-2 sum_odd log|det A(x)|``).
    maxiter : int
        Passed to the solver.

    State: the pseudofermion field ``phi`` (``None`` until :meth:`refresh`), to be refreshed once
    per trajectory (:class:`lattice_ml.samplers.PseudofermionHMC` does this). ``eta`` holds the Gaussian vector of the
    last refresh; ``solves`` and ``iterations`` count CG solves and their iterations (summed over
    the batch maximum), for cost reports.
    """

    def __init__(self, mass: float, N: int, boundary: str = "antiperiodic", tol: float = 1e-12,
                 solver: Callable = cg, even_odd: bool = False, csw: float = 0.0,
                 maxiter: int = 10000):
        if not (float(csw) >= 0.0):
            raise ValueError(f"csw must be >= 0, got {csw!r}")
        if not isinstance(N, int) or N < 1:
            raise ValueError(f"N must be a positive integer (1 for U(1)), got {N!r}")
        if not tol > 0:
            raise ValueError(f"tol must be > 0, got {tol!r}")
        self.mass = float(mass)
        self.csw = float(csw)
        self.N = N
        self.boundary = boundary
        self.tol = float(tol)
        self.solver = solver
        self.even_odd = bool(even_odd)
        self.maxiter = int(maxiter)
        self.phi = None
        self.eta = None
        self.solves = 0
        self.iterations = 0

    def __repr__(self) -> str:
        return (f"WilsonPseudofermionAction(mass={self.mass}, N={self.N}, "
                f"csw={self.csw}, boundary={self.boundary!r}, tol={self.tol:g}, "
                f"even_odd={self.even_odd})")

    # -- operator helpers ------------------------------------------------------------------
    def operator(self, U) -> WilsonDirac:
        """The Wilson operator on the links ``U`` (no unitarity check: called in the MD loop)."""
        if U.shape[-1] != self.N:
            raise ValueError(f"links of shape {tuple(U.shape)} are not {self.N}x{self.N}")
        return WilsonDirac(U, self.mass, boundary=self.boundary, csw=self.csw, check=False)

    def _D(self, W):
        return W.apply_eo if self.even_odd else W.apply

    def _Ddag(self, W):
        return W.apply_eo_dagger if self.even_odd else W.apply_dagger

    def _solve(self, W):
        if self.phi is None:
            raise RuntimeError("pseudofermion field not set: call refresh(U, rng) first (once "
                               "per trajectory) or set .phi")
        if self.phi.shape[0] != W.U.shape[0]:
            raise ValueError(f"pseudofermion batch {self.phi.shape[0]} does not match the links' "
                             f"batch {W.U.shape[0]}")
        normal = W.normal_eo if self.even_odd else W.normal
        X, info = self.solver(normal, self.phi, tol=self.tol, maxiter=self.maxiter)
        self.solves += 1
        self.iterations += int(max(info.iterations)) if len(info.iterations) else 0
        return X

    # -- pseudofermion heatbath ------------------------------------------------------------
    def refresh(self, U, rng):
        """Draw ``phi = D^dag eta``, ``eta ~ exp(-|eta|^2)`` per chain (even sites only with
        even/odd); returns ``phi`` and keeps it (and ``eta``)."""
        xp = namespace(U)
        W = self.operator(U)
        eta = rng.complex_normal(tuple(W.sites) + (W.n_spin, W.N))
        eta = xp.astype(eta, U.dtype)
        if self.even_odd:
            eta = W.even(eta)
        self.eta = eta
        self.phi = self._Ddag(W)(eta)
        return self.phi

    # -- action and force ------------------------------------------------------------------
    def action(self, U):
        """``S_f = phi^dag (D^dag D)^{-1} phi`` per configuration, ``[batch]`` (real)."""
        xp = namespace(U)
        W = self.operator(U)
        X = self._solve(W)
        S = xp.real(vdot(self.phi, X))
        if self.even_odd and self.csw != 0.0:
            S = S - 2.0 * clover_logdet(W, 1)
        return S

    def force(self, U):
        """``F = -dS_f/dU`` as a Lie-algebra field ``[batch, D, *sites, N, N]`` (convention of
        :class:`lattice_ml.gauge.GaugeAction`)."""
        W = self.operator(U)
        X = self._solve(W)
        if not self.even_odd:
            return wilson_fermion_force(W, X)
        Y = W.apply_eo(X)
        R1 = W._local_inv(W.hopping(X))                # A_oo^{-1} H X      (odd sites)
        L1 = W._local_inv(W._hop(Y, -1))               # A_oo^{-1} H^dag Y  (odd sites)
        M = hopping_force_matrix(W, Y, R1) + hopping_force_matrix(W, L1, X)
        if self.csw != 0.0:
            # one pass over the leaves: -M_clover(Y, X) - M_clover(L', R') - 2 M_logdet
            M = M - clover_force_matrix(W, Y, X, pairs=[(1.0, L1, R1)], logdet=(2.0, 1))
        return 0.5 * project_algebra(M)
