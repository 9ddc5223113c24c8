"""Batch-aware Krylov solvers: CG, CGNR/CGNE, BiCGStab, multi-shift CG, mixed-precision CG.

Operators and layouts
---------------------
An operator is a plain callable ``A(x) -> y`` acting on a batched array ``x[batch, ...]`` of any
trailing layout (for fermion fields ``[batch, *sites, spin, colour]``, complex) and returning an
array of the same shape and dtype. Inner products and norms are **per batch entry**: they sum over
all non-batch axes, and ``<a, b> = sum conj(a) b`` conjugates the first argument.

Batch semantics
---------------
Every batch entry is an independent linear system with its own Krylov recursion: its own scalars
(alpha, beta, ...), its own stopping test ``||r_b|| <= tol ||b_b||`` and its own iteration count.
The operator is always applied to the whole batch (a Dirac operator couples the entries of a
batch to their own gauge configurations, so the batch cannot be sliced behind its back); entries
that have converged are *frozen* with masks (``where``), so their iterates never change again and
the arithmetic of entry ``b`` is exactly that of a solve of entry ``b`` alone.

Every solver checks at the end the **true** residual ``b - A x`` (not the recursively updated
one). The CG-type solvers and BiCGStab restart an entry whose true residual is above the tolerance
from that true residual (counted in ``info.restarts``), so "converged" always refers to the true
residual.

Failures raise :class:`SolverError` naming the batch entry and the iteration (non-convergence
within ``maxiter``; breakdowns: a non-finite scalar, ``p^H A p <= 0`` in CG, vanishing ``rho`` or
``omega`` in BiCGStab). With ``raise_on_failure=False`` the solver freezes the failed entries,
finishes the others and returns; ``info.converged`` and ``info.breakdown`` say what happened.
A right-hand side (or start vector) with NaN or inf raises ``ValueError`` naming the entry.

The small per-entry scalars (norms, flags, histories) are copied to the host once per
iteration to steer the loop; all vector work stays in the array namespace of ``b``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..backend import device_of, namespace, real_dtype_of, to_numpy

__all__ = [
    "SolverError",
    "SolverInfo",
    "MultiShiftInfo",
    "MixedInfo",
    "cg",
    "cgne",
    "bicgstab",
    "multishift_cg",
    "cg_mixed",
    "vdot",
    "norm2",
]


class SolverError(RuntimeError):
    """A solve failed: an entry did not converge within ``maxiter`` or the recursion broke down.

    Attributes
    ----------
    entries : list of int
        Batch entries that failed.
    iteration : int or None
        Iteration (of the first failed entry) at which the failure was detected.
    info : SolverInfo, MultiShiftInfo, MixedInfo or None
        What the solver knew when it stopped (``None`` for a breakdown raised immediately).
    """

    def __init__(self, message: str, entries=(), iteration=None, info=None):
        super().__init__(message)
        self.entries = list(entries)
        self.iteration = iteration
        self.info = info


@dataclass
class SolverInfo:
    """Result record of :func:`cg`, :func:`cgne` and :func:`bicgstab` (host NumPy arrays).

    Attributes
    ----------
    method : str
    tol : float
    iterations : int array ``[batch]``
        Iterations performed by each entry (an entry stops counting once it has converged).
    converged : bool array ``[batch]``
        ``True`` where the true relative residual reached ``tol``.
    residual : float array ``[batch]``
        Final **true** relative residual ``||b - A x|| / ||b||`` (of the original system for
        :func:`cgne`).
    history : float array ``[n_iter, batch]``
        Relative residual of the recursion after each iteration (frozen entries repeat their
        last value).
    matvecs : int
        Operator applications to the whole batch (``D`` and ``D^dagger`` counted separately).
    restarts : int array ``[batch]``
        Restarts from the true residual.
    breakdown : dict
        ``{entry: message}`` for entries stopped by a breakdown (only with
        ``raise_on_failure=False``).
    """

    method: str
    tol: float
    iterations: np.ndarray
    converged: np.ndarray
    residual: np.ndarray
    history: np.ndarray
    matvecs: int = 0
    restarts: np.ndarray | None = None
    breakdown: dict = field(default_factory=dict)

    @property
    def all_converged(self) -> bool:
        return bool(np.all(self.converged))

    def __repr__(self) -> str:
        return (f"SolverInfo(method={self.method!r}, tol={self.tol:g}, "
                f"iterations={self.iterations.tolist()}, converged={self.converged.tolist()}, "
                f"residual=[{', '.join(f'{v:.2e}' for v in self.residual)}], "
                f"matvecs={self.matvecs})")


@dataclass
class MultiShiftInfo:
    """Result record of :func:`multishift_cg` (host NumPy arrays).

    Attributes
    ----------
    shifts : float array ``[n_shift]``
    tol : float
    iterations : int array ``[n_shift, batch]``
        Shifted-CG iterations during which shift ``k`` of entry ``b`` was still updated.
    converged : bool array ``[n_shift, batch]``
        True relative residual of ``(A + sigma_k) x_k = b`` reached ``tol``.
    residual : float array ``[n_shift, batch]``
        Final true relative residuals.
    history : float array ``[n_iter, n_shift, batch]``
        Recursion residuals ``|zeta_k| ||r|| / ||b||`` after each iteration.
    matvecs : int
        Applications of ``A`` (shared iterations, refinement and the final residual checks).
    refine_iterations : int array ``[n_shift, batch]``
        Iterations of the plain-CG refinement (zero when the shifted solution was already good).
    """

    shifts: np.ndarray
    tol: float
    iterations: np.ndarray
    converged: np.ndarray
    residual: np.ndarray
    history: np.ndarray
    matvecs: int = 0
    refine_iterations: np.ndarray | None = None

    @property
    def all_converged(self) -> bool:
        return bool(np.all(self.converged))


@dataclass
class MixedInfo:
    """Result record of :func:`cg_mixed` (host NumPy arrays).

    Attributes
    ----------
    tol, inner_tol : float
    outer_iterations : int array ``[batch]``
        Defect-correction cycles in which the entry was still being corrected.
    inner_iterations : int array ``[batch]``
        Low-precision CG iterations, summed over the cycles.
    converged : bool array ``[batch]``
    residual : float array ``[batch]``
        Final true relative residual, computed in high precision.
    history : float array ``[n_outer + 1, batch]``
        True relative residual (high precision) before the first and after every cycle.
    high_matvecs, low_matvecs : int
        Applications of ``A_high`` and ``A_low`` to the whole batch.
    inner_dtype : str
        dtype of the vectors the inner solves worked on.
    """

    tol: float
    inner_tol: float
    outer_iterations: np.ndarray
    inner_iterations: np.ndarray
    converged: np.ndarray
    residual: np.ndarray
    history: np.ndarray
    high_matvecs: int = 0
    low_matvecs: int = 0
    inner_dtype: str = ""

    @property
    def iterations(self) -> np.ndarray:
        """Total low-precision iterations per entry (alias of ``inner_iterations``)."""
        return self.inner_iterations

    @property
    def all_converged(self) -> bool:
        return bool(np.all(self.converged))


# ----------------------------------------------------------------------------------------------
# per-entry linear algebra
# ----------------------------------------------------------------------------------------------
def _is_complex(xp, x) -> bool:
    return xp.isdtype(x.dtype, "complex floating")


def _axes(x) -> tuple[int, ...]:
    return tuple(range(1, x.ndim))


def vdot(a, b):
    """Per-entry inner product ``<a, b> = sum conj(a) b`` over all non-batch axes -> ``[batch]``."""
    xp = namespace(a, b)
    if _is_complex(xp, a):
        a = xp.conj(a)
    return xp.sum(a * b, axis=_axes(a))


def norm2(a):
    """Per-entry squared norm ``||a||^2`` (real) over all non-batch axes -> ``[batch]``."""
    xp = namespace(a)
    if _is_complex(xp, a):
        return xp.sum(xp.real(a) ** 2 + xp.imag(a) ** 2, axis=_axes(a))
    return xp.sum(a * a, axis=_axes(a))


def _col(xp, s, ndim: int):
    """``[batch]`` scalars reshaped to broadcast against ``[batch, ...]`` with ``ndim`` axes."""
    return xp.reshape(s, (s.shape[0],) + (1,) * (ndim - 1))


def _mask(xp, host_bool: np.ndarray, like):
    return xp.asarray(np.asarray(host_bool, dtype=bool), device=device_of(like))


def _host(*arrays) -> list[np.ndarray]:
    return [np.asarray(to_numpy(a)) for a in arrays]


def _check_rhs(xp, b, name: str, what: str = "right-hand side b"):
    if b.ndim < 1:
        raise ValueError(f"{name}: {what} must have a leading batch axis, got a 0-d array")
    if not xp.isdtype(b.dtype, ("real floating", "complex floating")):
        raise ValueError(f"{name}: {what} must be a floating array, got dtype {b.dtype}")
    bb = _host(norm2(b))[0]
    bad = np.flatnonzero(~np.isfinite(bb))
    if bad.size:
        raise ValueError(f"{name}: {what} has non-finite values (NaN or inf) in batch "
                         f"entr{'y' if bad.size == 1 else 'ies'} {', '.join(map(str, bad))}")
    return bb


def _prepare_x0(xp, b, x0, name):
    if x0 is None:
        return None
    if tuple(x0.shape) != tuple(b.shape):
        raise ValueError(f"{name}: x0 has shape {tuple(x0.shape)}, b has {tuple(b.shape)}")
    x0 = xp.astype(x0, b.dtype)
    _check_rhs(xp, x0, name, "start vector x0")
    return x0


def _entries(idx) -> str:
    idx = list(idx)
    return f"entr{'y' if len(idx) == 1 else 'ies'} {', '.join(map(str, idx))}"


def _fail_nonconverged(name, info, maxiter):
    bad = np.flatnonzero(~info.converged)
    brk = [e for e in bad if e in info.breakdown]
    slow = [e for e in bad if e not in info.breakdown]
    parts = []
    if slow:
        parts.append(
            f"batch {_entries(slow)} did not converge in {maxiter} iterations (true relative "
            f"residual {', '.join(f'{info.residual[e]:.3e}' for e in slow)} > tol {info.tol:g})")
    for e in brk:
        parts.append(info.breakdown[e])
    first = slow[0] if slow else brk[0]
    raise SolverError(f"{name}: " + "; ".join(parts), entries=list(bad),
                      iteration=int(info.iterations[first]), info=info)


# ----------------------------------------------------------------------------------------------
# CG
# ----------------------------------------------------------------------------------------------
def cg(A: Callable, b, x0=None, *, tol: float = 1e-10, maxiter: int = 10000,
       raise_on_failure: bool = True, restart_on_true_residual: bool = True,
       callback: Callable | None = None):
    """Conjugate gradients for hermitian positive-definite ``A``, every batch entry on its own.

    Parameters
    ----------
    A : callable ``A(x) -> y`` on ``[batch, ...]`` arrays
        Hermitian positive definite for every entry (e.g. ``D^dagger D``).
    b : array ``[batch, ...]`` (real or complex floating)
    x0 : array like ``b``, optional
        Start vector (warm start); default zero.
    tol : float
        Stop entry ``b`` when ``||r_b|| <= tol ||b_b||``.
    maxiter : int
        Most iterations per entry.
    raise_on_failure : bool
        Raise :class:`SolverError` on non-convergence or breakdown (default); otherwise return
        with ``info.converged`` false for the failed entries.
    restart_on_true_residual : bool
        After the recursion has converged, restart entries whose true residual is still above
        ``tol`` from the true residual (default). Otherwise only report it.
    callback : callable ``callback(k, x, rel_res)``, optional
        Called after each iteration with the iterate and the ``[batch]`` host relative residuals.

    Returns
    -------
    x : array like ``b``
    info : SolverInfo

    Recursion (per entry): ``r_0 = b - A x_0``, ``p_0 = r_0``;
    ``alpha = <r,r>/<p,Ap>``, ``x += alpha p``, ``r -= alpha A p``,
    ``beta = <r',r'>/<r,r>``, ``p = r' + beta p``.
    """
    return _cg(A, b, x0, tol, maxiter, raise_on_failure, restart_on_true_residual, callback,
               "cg")


def _initial(xp, A, b, x0, tol, name):
    """Common start of the single-shift solvers: the checked right-hand side, its squared norms
    ``bb`` (host, per entry), the stopping targets ``tol^2 |b|^2``, and the initial ``x`` and
    residual ``r`` (``x0`` given: ``r = b - A x0``, with ``x = 0`` for entries whose ``b = 0``).
    Returns ``(nd, nb, bb, zero_rhs, bb_safe, target2, x, r, matvecs)``."""
    nd = b.ndim
    bb = _check_rhs(xp, b, name)
    x0 = _prepare_x0(xp, b, x0, name)
    zero_rhs = bb == 0.0
    bb_safe = np.where(zero_rhs, 1.0, bb)
    target2 = (tol ** 2) * bb
    if x0 is None:
        return nd, b.shape[0], bb, zero_rhs, bb_safe, target2, xp.zeros_like(b), b, 0
    # b = 0 has the exact solution x = 0
    x = xp.where(_col(xp, _mask(xp, zero_rhs, b), nd), xp.zeros_like(b), x0)
    return nd, b.shape[0], bb, zero_rhs, bb_safe, target2, x, b - A(x), 1


def _cg(A, b, x0, tol, maxiter, raise_on_failure, restart, callback, name):
    xp = namespace(b)
    nd, nb, bb, zero_rhs, bb_safe, target2, x, r, matvecs = _initial(xp, A, b, x0, tol, name)
    rr_dev = norm2(r)
    rr = _host(rr_dev)[0]
    p = r

    iters = np.zeros(nb, dtype=np.int64)
    restarts = np.zeros(nb, dtype=np.int64)
    failed = np.zeros(nb, dtype=bool)          # breakdown: frozen for good
    breakdown: dict = {}
    history: list[np.ndarray] = []
    active = (rr > target2) & ~zero_rhs
    k = 0

    while True:
        while np.any(active):
            act = _mask(xp, active, b)
            Ap = A(p)
            matvecs += 1
            pAp_dev = vdot(p, Ap)
            if _is_complex(xp, pAp_dev):
                pAp_dev = xp.real(pAp_dev)
            ok_dev = act & (pAp_dev > 0) & xp.isfinite(pAp_dev)
            alpha = xp.where(ok_dev, rr_dev / xp.where(ok_dev, pAp_dev, xp.ones_like(pAp_dev)),
                             xp.zeros_like(rr_dev))
            okc = _col(xp, ok_dev, nd)
            x = xp.where(okc, x + _col(xp, alpha, nd) * p, x)
            r = xp.where(okc, r - _col(xp, alpha, nd) * Ap, r)
            rr_new_dev = norm2(r)
            beta = xp.where(ok_dev, rr_new_dev / xp.where(ok_dev, rr_dev, xp.ones_like(rr_dev)),
                            xp.zeros_like(rr_dev))
            p = xp.where(okc, r + _col(xp, beta, nd) * p, p)
            rr_dev = xp.where(ok_dev, rr_new_dev, rr_dev)
            pAp, rr_new = _host(pAp_dev, rr_new_dev)
            k += 1
            iters += active
            # breakdowns
            bad = active & ~((pAp > 0) & np.isfinite(pAp) & np.isfinite(rr_new))
            for e in np.flatnonzero(bad):
                if not np.isfinite(pAp[e]) or not np.isfinite(rr_new[e]):
                    why = f"non-finite p^H A p = {pAp[e]:.3e} or |r|^2 = {rr_new[e]:.3e}"
                else:
                    why = (f"p^H A p = {pAp[e]:.3e} is not positive (is the operator hermitian "
                           "positive definite?)")
                msg = f"breakdown in batch entry {e} at iteration {int(iters[e])}: {why}"
                if raise_on_failure:
                    raise SolverError(f"{name}: {msg}", entries=[int(e)],
                                      iteration=int(iters[e]))
                breakdown[int(e)] = msg
            failed |= bad
            rr = np.where(active & ~bad, rr_new, rr)
            active = active & ~bad & (rr > target2) & (iters < maxiter)
            history.append(np.sqrt(rr / bb_safe))
            if callback is not None:
                callback(k, x, history[-1])
        # true residual
        rt = b - A(x)
        matvecs += 1
        rt2 = _host(norm2(rt))[0]
        redo = (rt2 > target2) & ~failed & (iters < maxiter) & ~zero_rhs
        if not (restart and np.any(redo)):
            break
        m = _col(xp, _mask(xp, redo, b), nd)
        r = xp.where(m, rt, r)
        p = xp.where(m, rt, p)
        rr_dev = xp.where(_mask(xp, redo, b), norm2(rt), rr_dev)
        rr = np.where(redo, rt2, rr)
        restarts += redo
        active = redo.copy()

    rel = np.sqrt(rt2 / bb_safe)
    info = SolverInfo(method=name, tol=tol, iterations=iters, converged=(rt2 <= target2) & ~failed,
                      residual=rel, history=_stack_history(history, nb), matvecs=matvecs,
                      restarts=restarts, breakdown=breakdown)
    if raise_on_failure and not info.all_converged:
        _fail_nonconverged(name, info, maxiter)
    return x, info


def _stack_history(history, *shape):
    if history:
        return np.stack(history)
    return np.zeros((0,) + tuple(shape))


# ----------------------------------------------------------------------------------------------
# CG on the normal equations
# ----------------------------------------------------------------------------------------------
def cgne(D: Callable, D_dagger: Callable, b, x0=None, *, tol: float = 1e-10,
         maxiter: int = 10000, method: str = "cgnr", raise_on_failure: bool = True,
         restart_on_true_residual: bool = True):
    """Solve ``D x = b`` for a general (non-singular) ``D`` by CG on the normal equations.

    Parameters
    ----------
    D, D_dagger : callables on ``[batch, ...]`` arrays
        The operator and its adjoint (``<u, D v> = <D_dagger u, v>`` per entry).
    b : array ``[batch, ...]``
    method : ``"cgnr"`` (default) or ``"cgne"``
        ``"cgnr"``: CG on ``D^dagger D x = D^dagger b`` (minimises ``||b - D x||`` over the
        Krylov space). ``"cgne"``: Craig's method, CG on ``D D^dagger y = b`` with
        ``x = D^dagger y`` (minimises the error ``||x - x*||``).
    tol : float
        Stop entry ``b`` when the residual **of the original system**
        ``||b_b - D x_b|| <= tol ||b_b||``; both variants update that residual in their
        recursion, and it is recomputed at the end.

    Other parameters and the return value are as for :func:`cg`; ``info.matvecs`` counts
    applications of ``D`` and ``D_dagger`` (two per iteration).

    Recursions (per entry), with ``r = b - D x``:

    * CGNR: ``z = D^dagger r``, ``p = z``; ``w = D p``, ``alpha = |z|^2/|w|^2``,
      ``x += alpha p``, ``r -= alpha w``, ``z' = D^dagger r``, ``beta = |z'|^2/|z|^2``,
      ``p = z' + beta p``.
    * CGNE: ``p = D^dagger r``; ``alpha = |r|^2/|p|^2``, ``x += alpha p``,
      ``r -= alpha D p``, ``beta = |r'|^2/|r|^2``, ``p = D^dagger r' + beta p``.
    """
    if method not in ("cgnr", "cgne"):
        raise ValueError(f"cgne: method must be 'cgnr' or 'cgne', not {method!r}")
    name = method
    xp = namespace(b)
    nd, nb, bb, zero_rhs, bb_safe, target2, x, r, matvecs = _initial(xp, D, b, x0, tol, name)

    def start(r):
        z = D_dagger(r)
        if method == "cgnr":
            return z, z, norm2(z)            # z, p, the scalar of the recursion |z|^2
        return None, z, norm2(r)             # CGNE: p = D^dagger r, scalar |r|^2

    z, p, g_dev = start(r)
    matvecs += 1
    rr = _host(norm2(r))[0]
    iters = np.zeros(nb, dtype=np.int64)
    restarts = np.zeros(nb, dtype=np.int64)
    failed = np.zeros(nb, dtype=bool)
    breakdown: dict = {}
    history: list[np.ndarray] = []
    active = (rr > target2) & ~zero_rhs

    while True:
        while np.any(active):
            act = _mask(xp, active, b)
            Dp = D(p)
            matvecs += 1
            den_dev = norm2(Dp) if method == "cgnr" else norm2(p)
            ok_dev = act & (den_dev > 0) & xp.isfinite(den_dev) & xp.isfinite(g_dev)
            one = xp.ones_like(den_dev)
            alpha = xp.where(ok_dev, g_dev / xp.where(ok_dev, den_dev, one), xp.zeros_like(one))
            okc = _col(xp, ok_dev, nd)
            x = xp.where(okc, x + _col(xp, alpha, nd) * p, x)
            r = xp.where(okc, r - _col(xp, alpha, nd) * Dp, r)
            Ddr = D_dagger(r)
            matvecs += 1
            g_new = norm2(Ddr) if method == "cgnr" else norm2(r)
            beta = xp.where(ok_dev, g_new / xp.where(ok_dev, g_dev, one), xp.zeros_like(one))
            p = xp.where(okc, Ddr + _col(xp, beta, nd) * p, p)
            g_dev = xp.where(ok_dev, g_new, g_dev)
            rr_new_dev = norm2(r)
            den, rr_new, g_h = _host(den_dev, rr_new_dev, g_new)
            iters += active
            bad = active & ~((den > 0) & np.isfinite(den) & np.isfinite(rr_new))
            # CGNR: D^dagger r = 0 with r != 0 means D is singular (least-squares solution)
            bad |= active & ~bad & (g_h == 0) & (rr_new > target2)
            for e in np.flatnonzero(bad):
                if not (np.isfinite(den[e]) and np.isfinite(rr_new[e])):
                    why = "non-finite scalar (NaN or inf in the operator output?)"
                elif den[e] <= 0:
                    why = ("|D p|^2 = 0" if method == "cgnr" else "|p|^2 = 0") + \
                        " (is D singular?)"
                else:
                    why = "D^dagger r = 0 with r != 0 (is D singular?)"
                msg = f"breakdown in batch entry {e} at iteration {int(iters[e])}: {why}"
                if raise_on_failure:
                    raise SolverError(f"{name}: {msg}", entries=[int(e)], iteration=int(iters[e]))
                breakdown[int(e)] = msg
            failed |= bad
            rr = np.where(active & ~bad, rr_new, rr)
            active = active & ~bad & (rr > target2) & (iters < maxiter)
            history.append(np.sqrt(rr / bb_safe))
        rt = b - D(x)
        matvecs += 1
        rt2 = _host(norm2(rt))[0]
        redo = (rt2 > target2) & ~failed & (iters < maxiter) & ~zero_rhs
        if not (restart_on_true_residual and np.any(redo)):
            break
        m1 = _mask(xp, redo, b)
        m = _col(xp, m1, nd)
        r = xp.where(m, rt, r)
        _, p_new, g_new = start(rt)
        matvecs += 1
        p = xp.where(m, p_new, p)
        g_dev = xp.where(m1, g_new, g_dev)
        rr = np.where(redo, rt2, rr)
        restarts += redo
        active = redo.copy()

    info = SolverInfo(method=name, tol=tol, iterations=iters, converged=(rt2 <= target2) & ~failed,
                      residual=np.sqrt(rt2 / bb_safe), history=_stack_history(history, nb),
                      matvecs=matvecs, restarts=restarts, breakdown=breakdown)
    if raise_on_failure and not info.all_converged:
        _fail_nonconverged(name, info, maxiter)
    return x, info


# ----------------------------------------------------------------------------------------------
# BiCGStab
# ----------------------------------------------------------------------------------------------
def bicgstab(A: Callable, b, x0=None, *, tol: float = 1e-10, maxiter: int = 10000,
             raise_on_failure: bool = True, restart_on_true_residual: bool = True,
             breakdown_tol: float | None = None, shadow: str = "random"):
    """BiCGStab (van der Vorst 1992) for a general non-singular ``A``, every entry on its own.

    Recursion (per entry), ``r_0 = b - A x_0``, shadow residual ``rhat`` (see below),
    ``rho = alpha = omega = 1``, ``v = p = 0``::

        rho'   = <rhat, r>;            beta = (rho'/rho)(alpha/omega)
        p      = r + beta (p - omega v);  v = A p;  alpha = rho' / <rhat, v>
        s      = r - alpha v           (if ||s|| <= tol ||b||: x += alpha p, done)
        t      = A s;                  omega = <t, s> / <t, t>
        x     += alpha p + omega s;    r = s - omega t

    Two operator applications per iteration; the scalars are complex for complex fields.
    Breakdowns (raised as :class:`SolverError` naming entry and iteration, or frozen with
    ``raise_on_failure=False``): ``|rho'| <= breakdown_tol ||rhat|| ||r||``,
    ``|<rhat, v>| <= breakdown_tol ||rhat|| ||v||``, ``omega = 0`` or ``<t, t> = 0``, or any
    non-finite scalar. ``breakdown_tol`` defaults to the machine epsilon of the dtype squared
    (only exact or near-exact breakdowns are caught). Entries whose true residual is above ``tol``
    after the recursion has converged restart from the true residual with a fresh shadow vector.

    Shadow residual: ``shadow="random"`` (default) takes a fixed pseudo-random complex Gaussian
    vector (NumPy ``default_rng(2718)`` on the host, the same for every batch entry, so results
    do not depend on the batch; a fresh one after every true-residual restart);
    ``shadow="residual"`` is the classical ``rhat = r_0``. The classical choice breaks down
    exactly on a free Wilson point source: ``r_0 = delta_{x,0} e_s``, ``alpha = 1/(m + D)`` makes
    ``s = alpha H r_0`` vanish at the source site, and ``(A s)(0) = -H s (0) = -(alpha/4)
    sum_mu [(1 - g_mu)(1 + g_mu) + (1 + g_mu)(1 - g_mu)] e_s = 0`` (the Wilson projectors
    annihilate each other; extents > 2, so that x + mu and x - mu differ), so ``r_1`` has no
    component at the source and
    ``rho = <r_0, r_1> = 0`` exactly at iteration 2. A delocalised shadow vector has no such
    symmetry.

    Returns ``(x, SolverInfo)`` as :func:`cg`.
    """
    name = "bicgstab"
    if shadow not in ("random", "residual"):
        raise ValueError(f"shadow must be 'random' or 'residual', not {shadow!r}")
    xp = namespace(b)
    nd, nb, bb, zero_rhs, bb_safe, target2, x, r, matvecs = _initial(xp, A, b, x0, tol, name)
    if breakdown_tol is None:
        breakdown_tol = float(np.finfo(np.float32 if real_dtype_of(xp, b.dtype) == xp.float32
                                       else np.float64).eps) ** 2
    sdt = b.dtype                                   # scalars in the field's dtype

    def ones():
        return xp.ones((nb,), dtype=sdt, device=device_of(b))

    n_shadow = [0]

    def new_shadow(res):
        if shadow == "residual":
            return res
        g = np.random.default_rng([2718, n_shadow[0]])
        n_shadow[0] += 1
        one = tuple(b.shape[1:])
        z = g.standard_normal(one)
        if _is_complex(xp, b):
            z = z + 1j * g.standard_normal(one)
        z = xp.asarray(z[None, ...], dtype=b.dtype, device=device_of(b))
        return xp.zeros_like(res) + z

    rhat = new_shadow(r)
    rhat2 = norm2(rhat)
    rho, alpha, omega = ones(), ones(), ones()
    v = xp.zeros_like(b)
    p = xp.zeros_like(b)
    rr = _host(norm2(r))[0]
    iters = np.zeros(nb, dtype=np.int64)
    restarts = np.zeros(nb, dtype=np.int64)
    failed = np.zeros(nb, dtype=bool)
    breakdown: dict = {}
    history: list[np.ndarray] = []
    active = (rr > target2) & ~zero_rhs

    def fail(entries, why_of, iters_now):
        for e in entries:
            msg = f"breakdown in batch entry {e} at iteration {int(iters_now[e])}: {why_of(e)}"
            if raise_on_failure:
                raise SolverError(f"{name}: {msg}", entries=[int(e)], iteration=int(iters_now[e]))
            breakdown[int(e)] = msg

    while True:
        while np.any(active):
            iters += active
            act = _mask(xp, active, b)
            rho_new = vdot(rhat, r)
            # breakdown test on rho' is done on the host together with the next ones
            safe = lambda d: xp.where(act & (d != 0), d, ones())  # noqa: E731
            beta = (rho_new / safe(rho)) * (alpha / safe(omega))
            p = xp.where(_col(xp, act, nd), r + _col(xp, beta, nd) * (p - _col(xp, omega, nd) * v), p)
            v = xp.where(_col(xp, act, nd), A(p), v)
            matvecs += 1
            rv = vdot(rhat, v)
            alpha_new = rho_new / safe(rv)
            s = r - _col(xp, alpha_new, nd) * v
            h_rho, h_rv, h_rh2, h_rr, h_v2, h_ss = _host(
                rho_new, rv, rhat2, norm2(r), norm2(v), norm2(s))
            nrm = np.sqrt(h_rh2)
            bad_rho = active & ~(np.isfinite(h_rho) &
                                 (np.abs(h_rho) > breakdown_tol * nrm * np.sqrt(h_rr)))
            bad_rv = active & ~bad_rho & ~(np.isfinite(h_rv) & np.isfinite(h_ss) &
                                           (np.abs(h_rv) > breakdown_tol * nrm * np.sqrt(h_v2)))
            fail(np.flatnonzero(bad_rho),
                 lambda e: f"rho = <rhat, r> = {h_rho[e]:.3e} vanishes or is not finite", iters)
            fail(np.flatnonzero(bad_rv),
                 lambda e: f"<rhat, A p> = {h_rv[e]:.3e} vanishes or is not finite", iters)
            bad = bad_rho | bad_rv
            ok = active & ~bad
            half = ok & (h_ss <= target2)
            full = ok & ~half
            okm = _mask(xp, ok, b)
            x = xp.where(_col(xp, okm, nd), x + _col(xp, alpha_new, nd) * p, x)
            t = A(s)
            matvecs += 1
            tt, ts = norm2(t), vdot(t, s)
            fm = _mask(xp, full, b)
            tt_c = xp.astype(tt, sdt)
            omega_new = ts / xp.where(fm & (tt != 0), tt_c, ones())
            h_tt, h_om = _host(tt, omega_new)
            bad_om = full & ~(np.isfinite(h_tt) & (h_tt > 0) & np.isfinite(h_om) & (h_om != 0))
            fail(np.flatnonzero(bad_om),
                 lambda e: f"omega = <t, s>/<t, t> = {h_om[e]:.3e} vanishes or is not finite "
                 f"(<t, t> = {h_tt[e]:.3e})", iters)
            full = full & ~bad_om
            bad = bad | bad_om
            fm = _mask(xp, full, b)
            hm = _mask(xp, half, b)
            fmc = _col(xp, fm, nd)
            x = xp.where(fmc, x + _col(xp, omega_new, nd) * s, x)
            r = xp.where(fmc, s - _col(xp, omega_new, nd) * t,
                         xp.where(_col(xp, hm | _mask(xp, bad_om, b), nd), s, r))
            upd = _mask(xp, ok, b)
            rho = xp.where(upd, rho_new, rho)
            alpha = xp.where(upd, alpha_new, alpha)
            omega = xp.where(fm, omega_new, omega)
            rr_new = _host(norm2(r))[0]
            failed |= bad
            rr = np.where(ok, rr_new, rr)
            active = ok & (rr > target2) & (iters < maxiter)
            history.append(np.sqrt(rr / bb_safe))
        rt = b - A(x)
        matvecs += 1
        rt2 = _host(norm2(rt))[0]
        redo = (rt2 > target2) & ~failed & (iters < maxiter) & ~zero_rhs
        if not (restart_on_true_residual and np.any(redo)):
            break
        m1 = _mask(xp, redo, b)
        m = _col(xp, m1, nd)
        r = xp.where(m, rt, r)
        rhat = xp.where(m, new_shadow(rt), rhat)
        rhat2 = norm2(rhat)
        p = xp.where(m, xp.zeros_like(p), p)
        v = xp.where(m, xp.zeros_like(v), v)
        rho = xp.where(m1, ones(), rho)
        alpha = xp.where(m1, ones(), alpha)
        omega = xp.where(m1, ones(), omega)
        rr = np.where(redo, rt2, rr)
        restarts += redo
        active = redo.copy()

    info = SolverInfo(method=name, tol=tol, iterations=iters, converged=(rt2 <= target2) & ~failed,
                      residual=np.sqrt(rt2 / bb_safe), history=_stack_history(history, nb),
                      matvecs=matvecs, restarts=restarts, breakdown=breakdown)
    if raise_on_failure and not info.all_converged:
        _fail_nonconverged(name, info, maxiter)
    return x, info


# ----------------------------------------------------------------------------------------------
# multi-shift CG
# ----------------------------------------------------------------------------------------------
def multishift_cg(A: Callable, b, shifts: Sequence[float], *, tol: float | Sequence[float] = 1e-10,
                  maxiter: int = 10000, refine: bool = True, raise_on_failure: bool = True):
    """Solve ``(A + sigma_k) x_k = b`` for all shifts at the cost of one CG (Jegerlehner 1996).

    Parameters
    ----------
    A : callable on ``[batch, ...]`` arrays
        Hermitian, with ``A + min(shifts)`` positive definite for every entry.
    b : array ``[batch, ...]``
    shifts : sequence of real numbers ``sigma_k`` (``>= 0`` in the usual use, e.g. RHMC poles)
    tol : float or one float per shift
        Stop updating shift ``k`` of entry ``b`` when ``||r_k,b|| <= tol_k ||b_b||``.
    refine : bool
        Finish every (shift, entry) whose **true** residual is still above its tolerance with a
        warm-started plain CG on ``A + sigma_k`` (default). Otherwise only report it.

    Returns
    -------
    x : array ``[n_shift, batch, ...]``
    info : MultiShiftInfo

    Recursion. Plain CG runs on the seed system ``A_s = A + sigma_s`` with the smallest shift
    ``sigma_s`` (the slowest to converge). With ``Delta_k = sigma_k - sigma_s >= 0`` the residual of
    shift ``k`` stays collinear with the seed residual, ``r_k = zeta_k r``, and per entry::

        alpha  = <r, r> / <p, A_s p>
        zeta_k' = zeta_k zeta_k^- alpha^- /
                  (alpha beta^- (zeta_k^- - zeta_k) + zeta_k^- alpha^- (1 + Delta_k alpha))
        alpha_k = alpha zeta_k' / zeta_k;        x_k += alpha_k p_k
        r -= alpha A_s p;  beta = <r', r'> / <r, r>
        beta_k = beta (zeta_k' / zeta_k)^2;      p_k = zeta_k' r' + beta_k p_k
        p = r' + beta p

    starting from ``x_k = 0``, ``r = p = p_k = b``, ``zeta_k = zeta_k^- = 1``, ``alpha^- = 1``,
    ``beta^- = 0`` (``^-`` is the previous iteration). Shift ``k`` of entry ``b`` is frozen once
    ``|zeta_k| ||r|| <= tol_k ||b||``; the seed recursion of an entry runs until all its shifts
    are frozen. One application of ``A`` per iteration, whatever the number of shifts; the shifts
    cost one vector each for ``x_k`` and ``p_k``.
    """
    name = "multishift_cg"
    xp = namespace(b)
    nd = b.ndim
    bb = _check_rhs(xp, b, name)
    nb = b.shape[0]
    sig = np.asarray(shifts, dtype=np.float64).reshape(-1)
    ns = sig.size
    if ns == 0 or not np.all(np.isfinite(sig)):
        raise ValueError(f"{name}: shifts must be a non-empty sequence of finite numbers, "
                         f"got {shifts!r}")
    tols = np.broadcast_to(np.asarray(tol, dtype=np.float64), (ns,)).copy()
    rdt = real_dtype_of(xp, b.dtype)
    dev = device_of(b)
    s_seed = float(sig.min())
    delta = xp.asarray(np.repeat((sig - s_seed)[:, None], nb, axis=1), dtype=rdt, device=dev)
    zero_rhs = bb == 0.0
    bb_safe = np.where(zero_rhs, 1.0, bb)
    target2 = (tols[:, None] ** 2) * bb[None, :]          # [n_shift, batch]

    def As(v):
        return A(v) + s_seed * v if s_seed != 0.0 else A(v)

    def colk(s):  # [n_shift, batch] -> broadcast against [n_shift, batch, ...]
        return xp.reshape(s, tuple(s.shape) + (1,) * (nd - 1))

    matvecs = 0
    r = b
    p = b
    xs = xp.zeros((ns,) + tuple(b.shape), dtype=b.dtype, device=dev)
    ps = xp.stack([b] * ns)
    one_kb = xp.ones((ns, nb), dtype=rdt, device=dev)
    zeta, zeta_m = one_kb, one_kb
    alpha_m = xp.ones((nb,), dtype=rdt, device=dev)
    beta_m = xp.zeros((nb,), dtype=rdt, device=dev)
    rr_dev = norm2(r)
    rr = bb.copy()
    act_k = (rr[None, :] > target2) & ~zero_rhs[None, :]     # [n_shift, batch]
    iters_k = np.zeros((ns, nb), dtype=np.int64)
    iters = np.zeros(nb, dtype=np.int64)
    history: list[np.ndarray] = []
    res2_k = np.repeat(bb[None, :], ns, axis=0)            # recursion residuals^2, frozen

    while np.any(act_k):
        active = np.any(act_k, axis=0)
        act = _mask(xp, active, b)
        ak = _mask(xp, act_k, b)
        Ap = As(p)
        matvecs += 1
        pAp = vdot(p, Ap)
        if _is_complex(xp, pAp):
            pAp = xp.real(pAp)
        ok_dev = act & (pAp > 0) & xp.isfinite(pAp)
        one = xp.ones_like(rr_dev)
        alpha = xp.where(ok_dev, rr_dev / xp.where(ok_dev, pAp, one), xp.zeros_like(one))
        # shifted coefficients
        den = (alpha * beta_m)[None, :] * (zeta_m - zeta) + \
            zeta_m * alpha_m[None, :] * (1.0 + delta * alpha[None, :])
        upd_k = ak & ok_dev[None, :]
        zeta_new = xp.where(upd_k, zeta * zeta_m * alpha_m[None, :] /
                            xp.where(upd_k, den, one_kb), zeta)
        alpha_k = xp.where(upd_k, alpha[None, :] * zeta_new / xp.where(upd_k, zeta, one_kb),
                           xp.zeros_like(zeta))
        uk = colk(upd_k)
        xs = xp.where(uk, xs + colk(alpha_k) * ps, xs)
        okc = _col(xp, ok_dev, nd)
        r = xp.where(okc, r - _col(xp, alpha, nd) * Ap, r)
        rr_new_dev = norm2(r)
        beta = xp.where(ok_dev, rr_new_dev / xp.where(ok_dev, rr_dev, one), xp.zeros_like(one))
        ratio = zeta_new / xp.where(upd_k, zeta, one_kb)
        beta_k = beta[None, :] * ratio * ratio
        ps = xp.where(uk, colk(zeta_new) * r[None, ...] + colk(beta_k) * ps, ps)
        p = xp.where(okc, r + _col(xp, beta, nd) * p, p)
        zeta_m = xp.where(upd_k, zeta, zeta_m)
        zeta = zeta_new
        alpha_m = xp.where(ok_dev, alpha, alpha_m)
        beta_m = xp.where(ok_dev, beta, beta_m)
        rr_dev = xp.where(ok_dev, rr_new_dev, rr_dev)
        h_pAp, h_rr, zeta_h = _host(pAp, rr_new_dev, zeta)
        iters += active
        iters_k += act_k
        bad = active & ~((h_pAp > 0) & np.isfinite(h_pAp) & np.isfinite(h_rr))
        if np.any(bad):
            e = int(np.flatnonzero(bad)[0])
            msg = (f"breakdown in batch entry {e} at iteration {int(iters[e])}: "
                   f"p^H (A + sigma_min) p = {h_pAp[e]:.3e} is not positive or a scalar is not "
                   "finite (is A + min(shifts) hermitian positive definite?)")
            if raise_on_failure:
                raise SolverError(f"{name}: {msg}", entries=[e], iteration=int(iters[e]))
        rr = np.where(active & ~bad, h_rr, rr)
        res2_k = np.where(act_k & ~bad[None, :], (zeta_h ** 2) * rr[None, :], res2_k)
        act_k = act_k & ~bad[None, :] & (res2_k > target2) & (iters[None, :] < maxiter)
        history.append(np.sqrt(res2_k / bb_safe[None, :]))

    # true residuals, refinement
    def true_res2(k, xk):
        return _host(norm2(b - (A(xk) + float(sig[k]) * xk)))[0]

    res2 = np.zeros((ns, nb))
    refine_it = np.zeros((ns, nb), dtype=np.int64)
    x_list = [xs[k, ...] for k in range(ns)]
    for k in range(ns):
        res2[k] = true_res2(k, x_list[k])
        matvecs += 1
        need = (res2[k] > target2[k]) & ~zero_rhs
        if refine and np.any(need) and np.all(np.isfinite(res2[k])):
            sk = float(sig[k])
            xk, ik = _cg(lambda v: A(v) + sk * v, b, x_list[k], float(tols[k]), maxiter,
                         False, True, None, name + " refinement")
            matvecs += ik.matvecs
            refine_it[k] = ik.iterations
            x_list[k] = xk
            res2[k] = np.where(zero_rhs, 0.0, (ik.residual ** 2) * bb)
    x = xp.stack(x_list)
    info = MultiShiftInfo(shifts=sig, tol=tol, iterations=iters_k,
                          converged=res2 <= target2, residual=np.sqrt(res2 / bb_safe[None, :]),
                          history=_stack_history(history, ns, nb), matvecs=matvecs,
                          refine_iterations=refine_it)
    if raise_on_failure and not info.all_converged:
        kk, ee = np.nonzero(~info.converged)
        pairs = ", ".join(f"(shift {sig[k]:g}, entry {e}: {info.residual[k, e]:.3e})"
                          for k, e in zip(kk, ee))
        raise SolverError(f"{name}: did not converge in {maxiter} iterations for {pairs}",
                          entries=sorted(set(int(e) for e in ee)),
                          iteration=int(iters[ee[0]]), info=info)
    return x, info


# ----------------------------------------------------------------------------------------------
# mixed precision
# ----------------------------------------------------------------------------------------------
def cg_mixed(A_high: Callable, A_low: Callable, b, x0=None, *, tol: float = 1e-10,
             inner_tol: float = 1e-5, max_outer: int = 100, inner_maxiter: int = 10000,
             raise_on_failure: bool = True):
    """Mixed-precision CG by defect correction: float64 accuracy from float32 inner solves.

    Parameters
    ----------
    A_high : callable on ``[batch, ...]`` arrays of ``b``'s dtype (float64 / complex128)
        The operator in high precision; applied once per outer cycle for the true residual.
    A_low : callable on float32 / complex64 arrays
        The same operator in low precision (e.g. built on float32 / complex64 links).
    b : array ``[batch, ...]``, float64 or complex128
    tol : float
        Target of the **true, high-precision** relative residual ``||b - A_high x|| / ||b||``.
    inner_tol : float
        Relative tolerance of every inner low-precision CG (float32 can reach about 1e-6).
    max_outer : int
        Most defect-correction cycles per entry.

    Scheme (per entry)::

        x = x0 (or 0);  r = b - A_high x                                  (high precision)
        repeat while ||r|| > tol ||b||:
            e  = CG_low(A_low, low(r / ||r||), inner_tol)                 (low precision)
            x += ||r|| high(e);  r = b - A_high x                          (high precision)

    The residual is normalised before it is rounded to low precision (no underflow however
    small it gets); the solution is accumulated and the residual recomputed in high precision,
    so the inaccuracy of the inner solves only slows the convergence (each cycle reduces the
    residual by about ``max(inner_tol, eps_low * kappa)``) and never limits the final accuracy.
    An entry whose true residual fails to decrease in a cycle has stagnated (the low-precision
    operator cannot resolve it any further) and fails like a non-converged entry.

    Returns ``(x, MixedInfo)``.
    """
    name = "cg_mixed"
    xp = namespace(b)
    nd, nb, bb, zero_rhs, bb_safe, target2, x, r, high_mv = _initial(xp, A_high, b, x0, tol,
                                                                     name)
    cplx = _is_complex(xp, b)
    low = xp.complex64 if cplx else xp.float32
    low_mv = 0
    rr_dev = norm2(r)
    rr = _host(rr_dev)[0]
    outer = np.zeros(nb, dtype=np.int64)
    inner = np.zeros(nb, dtype=np.int64)
    failed = np.zeros(nb, dtype=bool)
    history = [np.sqrt(rr / bb_safe)]
    active = (rr > target2) & ~zero_rhs
    reasons: dict = {}
    while np.any(active):
        act = _mask(xp, active, b)
        rnorm = xp.sqrt(rr_dev)
        scale = xp.where(act & (rnorm > 0), rnorm, xp.ones_like(rnorm))
        rhs = xp.where(_col(xp, act, nd), r / _col(xp, xp.astype(scale, b.dtype), nd),
                       xp.zeros_like(r))
        e, iinfo = _cg(A_low, xp.astype(rhs, low), None, inner_tol, inner_maxiter, False, False,
                       None, name + " inner")
        low_mv += iinfo.matvecs
        inner += np.where(active, iinfo.iterations, 0)
        corr = xp.astype(e, b.dtype) * _col(xp, xp.astype(scale, b.dtype), nd)
        x = xp.where(_col(xp, act, nd), x + corr, x)
        r = b - A_high(x)
        high_mv += 1
        rr_dev = norm2(r)
        rr_new = _host(rr_dev)[0]
        outer += active
        stag = active & ~(np.isfinite(rr_new) & (rr_new < rr))
        for e_ in np.flatnonzero(stag):
            reasons[int(e_)] = (f"batch entry {e_} stagnated in outer cycle {int(outer[e_])} at "
                                f"relative residual {math.sqrt(rr[e_] / bb_safe[e_]):.3e} "
                                f"(inner solve: {iinfo.breakdown.get(int(e_), 'no breakdown')})")
        failed |= stag
        rr = np.where(active, rr_new, rr)
        history.append(np.sqrt(rr / bb_safe))
        active = active & ~stag & (rr > target2) & (outer < max_outer)
    conv = (rr <= target2) & ~failed
    info = MixedInfo(tol=tol, inner_tol=inner_tol, outer_iterations=outer, inner_iterations=inner,
                     converged=conv, residual=np.sqrt(rr / bb_safe), history=np.stack(history),
                     high_matvecs=high_mv, low_matvecs=low_mv, inner_dtype="complex64" if cplx else "float32")
    if raise_on_failure and not np.all(conv):
        bad = np.flatnonzero(~conv)
        parts = [reasons.get(int(e_), f"batch entry {e_} did not converge in {max_outer} outer "
                             f"cycles (relative residual {info.residual[e_]:.3e} > tol {tol:g})")
                 for e_ in bad]
        raise SolverError(f"{name}: " + "; ".join(parts), entries=list(bad),
                          iteration=int(outer[bad[0]]), info=info)
    return x, info
