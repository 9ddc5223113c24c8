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

from ..backend import complex_dtype_of, device_of, namespace, real_dtype_of, to_numpy

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


def _cg(A, b, x0, tol, maxiter, raise_on_failure, restart, callback, name):
    xp = namespace(b)
    nd = b.ndim
    bb = _check_rhs(xp, b, name)
    x0 = _prepare_x0(xp, b, x0, name)
    nb = b.shape[0]
    rdt = real_dtype_of(xp, b.dtype)
    zero_rhs = bb == 0.0
    bb_safe = np.where(zero_rhs, 1.0, bb)
    target2 = (tol ** 2) * bb
    matvecs = 0

    if x0 is None:
        x = xp.zeros_like(b)
        r = b
    else:
        # b = 0 has the exact solution x = 0
        x = xp.where(_col(xp, _mask(xp, zero_rhs, b), nd), xp.zeros_like(b), x0)
        r = b - A(x)
        matvecs += 1
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
