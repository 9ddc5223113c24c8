"""Conjugate gradients on a hermitian positive operator, and CGNR/CGNE for a general one."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ...backend import namespace
from ._common import (SolverError, SolverInfo, _col, _fail_nonconverged, _host, _initial,
                      _is_complex, _mask, _stack_history, norm2, vdot)


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
