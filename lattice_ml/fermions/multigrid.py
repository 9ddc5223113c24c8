"""A two-level (aggregation) multigrid preconditioner for the Wilson(-clover) operator: block
restriction and prolongation from near-null vectors, the Galerkin coarse operator with its own
nearest-neighbour stencil, a coarse-grid correction and a smoother, for :func:`fgmres`.

Blocks and the coarse space
---------------------------
The lattice ``sites`` is cut into blocks of ``block`` sites (each extent divisible); coarse site
``y`` holds the block ``B(y)``. From ``n_vec`` near-null vectors ``v_i`` (:func:`near_null_vectors`:
inverse iteration, ``v <- D^-1 v`` approximately, from random vectors) the basis is, on every
block, the vectors restricted to it, split by chirality (``chiral=True``: ``P_+- v_i`` with
``P_+- = (1 +- gamma_5)/2``, which keeps the coarse operator gamma_5-hermitian in the coarse
sense) and orthonormalised there (QR): ``n_c = 2 n_vec`` (or ``n_vec``) coarse components per
coarse site. With the basis ``V(y)`` ``[block dof, n_c]``::

    restriction   (R phi)(y) = V(y)^dag phi|_B(y),      prolongation  P = R^dag,   R P = 1.

Bootstrap (adaptive) setup
--------------------------
Inverse iteration from random vectors finds the low modes slowly in 4D. With ``n_adapt``
passes (Frommer et al., SIAM J. Sci. Comput. 36 (2014) A1581, DD-alphaAMG; Brezina et al.'s
adaptive AMG), the two-level preconditioner ``M`` built from the current vectors is itself the
approximate inverse: ``v_i <- M v_i / |M v_i|`` for all vectors (one batch), then the basis,
the coarse stencil and its inverse are rebuilt. Each pass costs ``n_vec`` applications of ``M``
and one coarse-operator build. How well the coarse space holds a field ``v`` (e.g. a low
eigenvector of ``D``): :meth:`TwoLevelMultigrid.defect`, ``|(1 - P R) v| / |v|``.

Coarse operator
---------------
``D~ = R D P``. ``D`` couples nearest neighbours only, so ``D~`` does too::

    (D~ c)(y) = A~(y) c(y) + sum_mu [ F~_mu(y) c(y + mu) + B~_mu(y) c(y - mu) ]

(coarse extents periodic; the fermion time boundary sits in the fine hops). It is built from
``n_c (1 + 2 D)`` fine operations: for each basis column ``k`` the prolonged field ``p_k``, its
local term and its hops ``H_mu^+ p_k = (1 - gamma_mu)/2 U_mu(x) p_k(x + mu)``,
``H_mu^- p_k = (1 + gamma_mu)/2 U_mu(x - mu)^dag p_k(x - mu)`` (``D = A - sum_mu (H_mu^+ +
H_mu^-)``), the part of each hop that stays inside a block going to ``A~`` and the part that
crosses into the next block to ``F~_mu`` / ``B~_mu``. Layouts: coarse fields
``[batch, *coarse_sites, n_c]``; stencil matrices ``[batch, *coarse_sites, n_c, n_c]``.

Two-level preconditioner
------------------------
``M v``: coarse correction, then ``n_smooth`` smoothing steps on the residual::

    x = P D~^-1 R v,     x <- x + S(v - D x)

with ``S`` minimal-residual steps (``smoother="mr"``), the Schwarz alternating procedure on
blocks (``smoother="sap"``, :mod:`lattice_ml.fermions.sap`) or any callable (a trained PTC
network, :mod:`lattice_ml.fermions.ptc`). ``D~^-1``: a dense inverse (``coarse_solver="direct"``, for
small coarse grids) or GMRES on the stencil to ``coarse_tol`` (``"gmres"``; then ``M`` is not
exactly linear, which :func:`fgmres` allows), optionally right-preconditioned by ``precond``
(:meth:`TwoLevelMultigrid.set_coarse_solver`), or any callable ``c -> y`` in its place (a trained
:class:`lattice_ml.fermions.pooling.CoarseStencilNetwork`, ``M~ ~ D~^-1``).

Learned transfer
----------------
``transfer=pool`` (a :class:`lattice_ml.fermions.pooling.GaugePooling`) replaces the near-null
basis by gauge-equivariant pooling: ``R`` and ``P = R^dag`` are the layer's, the coarse field
has ``pool.coarse_dof`` components per coarse site, and ``D~ = R D P`` is built by the same
stencil code (no vectors, no bootstrap passes).
"""

from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import numpy as np

from ..backend import device_of, namespace, real_dtype_of, to_numpy
from ..lattice import shift
from .blocking import Blocking
from .gamma import gamma5
from .ptc import ParallelTransport
from .sap import SchwarzSmoother
from .solvers import bicgstab, fgmres, norm2, vdot

__all__ = ["Blocking", "near_null_vectors", "CoarseOperator", "TwoLevelMultigrid",
           "mr_smoother"]


# ------------------------------------------------------------------------------------------
def near_null_vectors(W, n_vec: int, n_iter: int = 3, inner_iter: int = 20, seed: int = 0,
                      solve: Callable | None = None):
    """``n_vec`` near-null vectors of the Wilson operator ``W`` by inverse iteration: complex
    Gaussian start (host ``default_rng(seed)``), then ``n_iter`` times ``v <- BiCGStab(D, v)``
    with ``inner_iter`` iterations (an approximate ``D^-1 v``, which amplifies the low modes),
    normalised. ``solve``: any other map iterated in place of the BiCGStab approximate inverse
    (e.g. ``v -> v - S(D v)``, a smoother ``S`` applied to ``D v = 0``, which damps the high
    modes), applied to all vectors as one batch. Returns a list of ``n_vec`` fields
    ``[batch, *sites, spin, colour]``."""
    xp = W.xp
    B = W.U.shape[0]
    rng = np.random.default_rng(seed)
    shape = (n_vec * B,) + tuple(W.sites) + (W.n_spin, W.N)
    h = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    v = xp.asarray(h, dtype=W.dtype, device=W.device)

    def bicgstab_solve(x):
        return bicgstab(W.apply, x, maxiter=inner_iter, raise_on_failure=False)[0]

    f = _per_vector(bicgstab_solve if solve is None else solve, n_vec, B, xp)
    for _ in range(n_iter):
        v = _normalised(f(v))
    return [v[k * B:(k + 1) * B, ...] for k in range(n_vec)]


def _per_vector(f, n_vec: int, B: int, xp):
    """``f`` (a map on fields of the links' batch ``B``) applied to ``n_vec`` fields stacked
    as ``[n_vec * B, ...]``: as one batch when ``B == 1``, vector by vector otherwise."""
    if B == 1:
        return f
    return lambda x: xp.concat([f(x[k * B:(k + 1) * B, ...]) for k in range(n_vec)], axis=0)


def _normalised(v):
    xp = namespace(v)
    nrm = xp.sqrt(norm2(v))
    return v / xp.reshape(xp.astype(nrm, v.dtype), (v.shape[0],) + (1,) * (v.ndim - 1))


# ------------------------------------------------------------------------------------------
class CoarseOperator:
    """The stencil ``(A~, F~_mu, B~_mu)`` of ``D~`` (module docstring), applied to coarse fields
    ``[batch, *coarse_sites, n_c]``."""

    def __init__(self, A, F, Bk):
        self.A, self.F, self.B = A, list(F), list(Bk)
        self.xp = namespace(A)
        self.D = len(self.F)
        self.coarse = tuple(A.shape[1:1 + self.D])
        self.n_c = A.shape[-1]
        self._inv = None

    def apply(self, c):
        z = c[..., None]
        out = self.A @ z
        for mu in range(self.D):
            out = out + self.F[mu] @ shift(z, mu, +1) + self.B[mu] @ shift(z, mu, -1)
        return out[..., 0]

    __call__ = apply

    @property
    def dim(self) -> int:
        return math.prod(self.coarse) * self.n_c

    def dense(self):
        """``[batch, n, n]`` matrices of ``D~`` (``n = coarse volume * n_c``), column by
        column from unit vectors (chunks of 256)."""
        xp, n, Bt = self.xp, self.dim, self.A.shape[0]
        eye = np.eye(n, dtype=complex)
        mats = []
        for b in range(Bt):
            sub = CoarseOperator(self.A[b:b + 1, ...], [f[b:b + 1, ...] for f in self.F],
                                 [g[b:b + 1, ...] for g in self.B])
            cols = []
            for j0 in range(0, n, 256):
                e = xp.asarray(eye[j0:j0 + 256].reshape((-1,) + self.coarse + (self.n_c,)),
                               dtype=self.A.dtype, device=device_of(self.A))
                cols.append(xp.reshape(sub.apply(e), (e.shape[0], n)))
            mats.append(xp.matrix_transpose(xp.concat(cols, axis=0)))
        return xp.stack(mats, axis=0)

    def solve_direct(self, c):
        """``D~^-1 c`` with the dense inverse (built on the first call)."""
        xp = self.xp
        if self._inv is None:
            self._inv = xp.linalg.inv(self.dense())
        sh = tuple(c.shape)
        return xp.reshape(self._inv @ xp.reshape(c, (sh[0], self.dim, 1)), sh)


def mr_smoother(D: Callable, n_steps: int) -> Callable:
    """``r -> y`` after ``n_steps`` minimal-residual steps on ``D y = r`` from ``y = 0``:
    ``q = D rho, omega = <q, rho>/<q, q>, y += omega rho, rho -= omega q`` (per entry)."""
    def smooth(r):
        xp = namespace(r)
        y = xp.zeros_like(r)
        rho = r
        for _ in range(n_steps):
            q = D(rho)
            qq = norm2(q)
            om = vdot(q, rho) / xp.astype(xp.where(qq > 0, qq, xp.ones_like(qq)), r.dtype)
            om = xp.reshape(om, (om.shape[0],) + (1,) * (r.ndim - 1))
            y = y + om * rho
            rho = rho - om * q
        return y
    return smooth


def _check_n_vec(n_vec: int, bl: Blocking, chiral: bool) -> None:
    """Refuse more vectors than a block can hold orthonormally (``R P = 1``): the block dof,
    or half of them (one chirality) with the chiral split."""
    cap = bl.block_dof // 2 if chiral else bl.block_dof
    if n_vec > cap:
        raise ValueError(f"n_vec = {n_vec} exceeds the {cap} "
                         f"{'dof of one chirality' if chiral else 'dof'} of a block {bl.block} "
                         f"(R P = 1 needs n_vec <= {cap})")


def _is(option, name: str) -> bool:
    return isinstance(option, str) and option == name


class TwoLevelMultigrid:
    """Two-level preconditioner for the Wilson operator ``W`` (module docstring).

    Parameters
    ----------
    W : :class:`lattice_ml.fermions.WilsonDirac`
    block : sequence of int
        Block extents (must tile the lattice).
    vectors : list of fields, optional
        Near-null vectors ``[batch, *sites, spin, colour]``; default
        ``near_null_vectors(W, n_vec, n_iter, inner_iter, seed)``.
    chiral : bool
        Split every vector by chirality (D = 2, 4).
    smoother : ``"mr"``, ``"sap"`` or callable ``r -> y``
        Post-smoother: ``n_smooth`` MR steps; the Schwarz alternating procedure
        (:class:`lattice_ml.fermions.sap.SchwarzSmoother` with blocks ``sap_block``, default
        ``block``, ``sap_cycles`` cycles of ``sap_mr`` block MR steps); or e.g. a trained PTC
        network's operator.
    sap_solver : ``"mr"`` or ``"exact"``
        The SAP block solves (``sap_mr`` MR steps, or dense block inverses for small blocks).
    null_solver : ``"bicgstab"`` or ``"sap"``
        The near-null vectors' iteration (``n_iter`` times): ``v <- BiCGStab(D, v)`` with
        ``inner_iter`` steps (inverse iteration), or ``v <- v - S(D v)`` with the SAP smoother
        ``S`` (smoothing ``D v = 0``, as in the DD-alphaAMG setup; needs ``smoother="sap"``).
    n_adapt : int
        Bootstrap passes after that (:meth:`adapt`): ``v_i <- M v_i`` with the multigrid built
        so far, then the coarse space rebuilt (the adaptive setup of DD-alphaAMG).
    coarse_solver : ``"direct"``, ``"gmres"`` (``coarse_tol``, ``coarse_restart``) or callable
        A callable ``c -> y`` on coarse fields replaces ``D~^-1``: e.g. a trained
        :class:`lattice_ml.fermions.pooling.CoarseStencilNetwork` (set it with
        :meth:`set_coarse_solver` after the coarse operator exists, to train it on
        ``coarse_op``).
    transfer : :class:`lattice_ml.fermions.pooling.GaugePooling`, optional
        A learned restriction / prolongation in place of the near-null basis (no vectors are
        computed; ``n_c`` is its ``coarse_dof``; no bootstrap passes).

    ``setup_seconds`` records the wall time of the setup (vectors, basis, coarse operator,
    dense inverse, bootstrap passes; ``adapt_seconds`` those of each pass).
    """

    def __init__(self, W, block: Sequence[int], *, n_vec: int = 8, vectors=None,
                 n_iter: int = 3, inner_iter: int = 20, seed: int = 0, chiral: bool = True,
                 smoother="mr", n_smooth: int = 4, coarse_solver: str = "direct",
                 coarse_tol: float = 0.05, coarse_restart: int = 30,
                 sap_block: Sequence[int] | None = None, sap_cycles: int = 1, sap_mr: int = 4,
                 sap_solver: str = "mr", null_solver: str = "bicgstab", n_adapt: int = 0,
                 transfer=None):
        t0 = time.perf_counter()
        if not (_is(coarse_solver, "direct") or _is(coarse_solver, "gmres")
                or (callable(coarse_solver) and not isinstance(coarse_solver, str))):
            raise ValueError(f"coarse_solver must be 'direct', 'gmres' or a callable, not "
                             f"{coarse_solver!r}")
        if transfer is not None and (vectors is not None or int(n_adapt) > 0):
            raise ValueError("transfer (a learned restriction/prolongation) replaces the "
                             "near-null basis: no vectors and no n_adapt with it")
        if null_solver not in ("bicgstab", "sap") or (null_solver == "sap"
                                                       and not _is(smoother, "sap")):
            raise ValueError(f"null_solver must be 'bicgstab', or 'sap' with smoother='sap'; "
                             f"got {null_solver!r} with smoother {smoother!r}")
        self.W, self.xp = W, W.xp
        self.blocking = Blocking(W.sites, block, W.n_spin, W.N)
        self.transfer = transfer
        if transfer is not None:
            if tuple(transfer.blocking.block) != self.blocking.block:
                raise ValueError(f"transfer has blocks {transfer.blocking.block}, the multigrid "
                                 f"{self.blocking.block}")
        else:
            _check_n_vec(n_vec if vectors is None else len(vectors), self.blocking, bool(chiral))
        if _is(smoother, "mr"):
            smoother = mr_smoother(W.apply, n_smooth)
        elif _is(smoother, "sap"):
            smoother = SchwarzSmoother(W, block if sap_block is None else sap_block,
                                       n_cycles=sap_cycles, n_mr=sap_mr,
                                       block_solver=sap_solver)
        elif isinstance(smoother, str) or not callable(smoother):
            raise ValueError(f"smoother must be 'mr', 'sap' or a callable, not {smoother!r}")
        if int(n_adapt) < 0:
            raise ValueError(f"n_adapt must be >= 0, got {n_adapt}")
        if vectors is None and transfer is None:
            smooth = None
            if null_solver == "sap":                  # v <- v - S(D v): smooth D v = 0
                smooth = lambda v, S=smoother: v - S(W.apply(v))  # noqa: E731
            vectors = near_null_vectors(W, n_vec, n_iter, inner_iter, seed, solve=smooth)
        self.chiral = bool(chiral)
        self.coarse_solver, self.coarse_tol, self.coarse_restart = (coarse_solver, coarse_tol,
                                                                   coarse_restart)
        self.coarse_precond = None
        self.smoother = smoother
        self.coarse_iterations = 0
        self._build(None if transfer is not None else list(vectors))
        self.adapt_seconds = []
        for _ in range(int(n_adapt)):
            ta = time.perf_counter()
            self.adapt()
            self.adapt_seconds.append(time.perf_counter() - ta)
        self.setup_seconds = time.perf_counter() - t0

    def _build(self, vectors):
        """Basis, coarse stencil and (direct coarse solve) its dense inverse from ``vectors``."""
        W = self.W
        self.vectors = vectors
        if self.transfer is None:
            self.V = self._basis(self.vectors)       # [B, *coarse, block_dof, n_c]
            self.n_c = self.V.shape[-1]
        else:
            self.n_c = self.transfer.coarse_dof
        self.coarse_op = self._galerkin()
        if _is(self.coarse_solver, "direct"):
            self.coarse_op.solve_direct(self.xp.zeros((W.U.shape[0],) + self.blocking.coarse
                                                      + (self.n_c,), dtype=W.dtype))

    def adapt(self):
        """One bootstrap pass (module docstring): ``v_i <- M v_i`` with the current two-level
        preconditioner (an approximate ``D^-1``: inverse iteration with the multigrid),
        normalised, then basis, coarse stencil and coarse inverse rebuilt from them."""
        if self.transfer is not None:
            raise ValueError("adapt: the coarse space is a learned transfer, not near-null "
                             "vectors")
        xp, n, B = self.xp, len(self.vectors), self.W.U.shape[0]
        v = _per_vector(self, n, B, xp)(xp.concat(self.vectors, axis=0))
        v = _normalised(v)
        self._build([v[k * B:(k + 1) * B, ...] for k in range(n)])

    def defect(self, v):
        """``|v - P R v| / |v|`` per batch entry (host array): how much of ``v`` (e.g. a low
        eigenvector of ``D``) the coarse space misses (0 for ``v`` in the range of ``P``)."""
        r = v - self.prolong(self.restrict(v))
        return np.sqrt(to_numpy(norm2(r)) / to_numpy(norm2(v)))

    # -- basis --------------------------------------------------------------------------------
    def _chirality_masks(self):
        xp, W = self.xp, self.W
        g5 = np.real(np.diag(to_numpy(gamma5(W.D, np))))      # diagonal in both bases
        out = []
        for sgn in (1.0, -1.0):
            m = (g5 == sgn).astype(np.float64)
            out.append(xp.asarray(m.reshape((1,) * (1 + W.D) + (W.n_spin, 1)),
                                  dtype=real_dtype_of(xp, W.dtype), device=W.device))
        return out

    def _basis(self, vectors):
        xp, bl = self.xp, self.blocking
        _check_n_vec(len(vectors), bl, self.chiral)
        groups = [vectors]
        if self.chiral:
            masks = self._chirality_masks()
            groups = [[v * m for v in vectors] for m in masks]
        Qs = []
        for grp in groups:
            Vb = xp.stack([bl.to_blocks(v) for v in grp], axis=-1)   # [B, *coarse, dof, n_vec]
            Q, _ = xp.linalg.qr(Vb)
            Qs.append(Q)
        return xp.concat(Qs, axis=-1)

    # -- transfer -------------------------------------------------------------------------------
    def restrict(self, phi):
        """``R phi``: ``[batch, *sites, s, N] -> [batch, *coarse_sites, n_c]``."""
        if self.transfer is not None:
            return self.transfer.restrict(phi)
        xp = self.xp
        z = self.blocking.to_blocks(phi)
        return (xp.matrix_transpose(xp.conj(self.V)) @ z[..., None])[..., 0]

    def prolong(self, c):
        """``P c = R^dag c``: ``[batch, *coarse_sites, n_c] -> [batch, *sites, s, N]``."""
        if self.transfer is not None:
            return self.transfer.prolong(c)
        return self.blocking.from_blocks((self.V @ c[..., None])[..., 0])

    # -- Galerkin operator --------------------------------------------------------------------
    def _galerkin(self):
        xp, W, bl = self.xp, self.W, self.blocking
        T = ParallelTransport(W.U, W.boundary)
        g = W.gammas
        eye = xp.eye(W.n_spin, dtype=W.dtype, device=W.device)
        proj = {(mu, s): 0.5 * (eye - s * g[mu, ...]) for mu in range(W.D) for s in (1, -1)}
        rdt = real_dtype_of(xp, W.dtype)
        masks = {}
        for mu in range(W.D):
            pos = bl.block_coordinate(mu)
            for s, edge in ((1, bl.block[mu] - 1), (-1, 0)):
                inside = (pos != edge).astype(np.float64).reshape((1,) + W.sites + (1, 1))
                m_in = xp.asarray(inside, dtype=rdt, device=W.device)
                masks[(mu, s)] = (m_in, 1.0 - m_in)
        A_cols, F_cols, B_cols = [], [[] for _ in range(W.D)], [[] for _ in range(W.D)]
        shape = (W.U.shape[0],) + bl.coarse + (self.n_c,)
        for k in range(self.n_c):
            e = np.zeros(self.n_c)
            e[k] = 1.0
            ek = xp.zeros(shape, dtype=W.dtype, device=W.device) + xp.asarray(
                e, dtype=W.dtype, device=W.device)
            p = self.prolong(ek)
            a = W._local(p)
            for mu in range(W.D):
                for s in (1, -1):
                    h = proj[(mu, s)] @ xp.matrix_transpose(
                        T.hop(xp.matrix_transpose(p), (mu, s)))
                    m_in, m_cross = masks[(mu, s)]
                    a = a - m_in * h
                    (F_cols if s > 0 else B_cols)[mu].append(-self.restrict(m_cross * h))
            A_cols.append(self.restrict(a))
        A = xp.stack(A_cols, axis=-1)
        F = [xp.stack(c, axis=-1) for c in F_cols]
        Bm = [xp.stack(c, axis=-1) for c in B_cols]
        return CoarseOperator(A, F, Bm)

    # -- the preconditioner ---------------------------------------------------------------------
    def set_coarse_solver(self, solver, precond=None) -> None:
        """Replace the coarse solve: ``"direct"``, ``"gmres"`` (with ``precond``, e.g. a
        trained coarse network, as the right preconditioner of the coarse FGMRES) or a
        callable ``c -> y``."""
        if not (_is(solver, "direct") or _is(solver, "gmres")
                or (callable(solver) and not isinstance(solver, str))):
            raise ValueError(f"coarse solver must be 'direct', 'gmres' or a callable, not "
                             f"{solver!r}")
        self.coarse_solver = solver
        self.coarse_precond = precond
        if _is(solver, "direct"):
            self.coarse_op.solve_direct(self.xp.zeros((self.W.U.shape[0],)
                                                      + self.blocking.coarse + (self.n_c,),
                                                      dtype=self.W.dtype))

    def coarse_solve(self, c):
        if _is(self.coarse_solver, "direct"):
            return self.coarse_op.solve_direct(c)
        if not _is(self.coarse_solver, "gmres"):           # a learned correction M~ ~ D~^-1
            return self.coarse_solver(c)
        y, info = fgmres(self.coarse_op.apply, c, M=self.coarse_precond,
                         restart=self.coarse_restart, tol=self.coarse_tol,
                         raise_on_failure=False)
        self.coarse_iterations += int(info.iterations.max())
        return y

    def coarse_correction(self, v):
        """``P D~^-1 R v``."""
        return self.prolong(self.coarse_solve(self.restrict(v)))

    def __call__(self, v):
        """``M v = x + S(v - D x)`` with ``x = P D~^-1 R v``."""
        x = self.coarse_correction(v)
        return x + self.smoother(v - self.W.apply(x))
