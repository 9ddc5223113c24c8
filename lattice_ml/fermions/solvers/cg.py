"""Conjugate gradients on a hermitian positive operator, and CGNR/CGNE for a general one."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ...backend import namespace
from ._common import _cg_step, _host, _ratio, _Run, check_interval, enter_layout, norm2


# ----------------------------------------------------------------------------------------------
# CG
# ----------------------------------------------------------------------------------------------
def cg(A: Callable, b, x0=None, *, tol: float = 1e-10, maxiter: int = 10000,
       raise_on_failure: bool = True, restart_on_true_residual: bool = True,
       callback: Callable | None = None, check_every: int | None = None):
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
    check_every : int, optional
        Iterations between two reads of the recursion's scalars on the host (one transfer for
        all of them). Default: 1 for arrays in host memory, ``DEVICE_CHECK_EVERY`` (10) on a
        device (``_common.in_host_memory``), so that a CuPy solve does not wait for the GPU at every iteration. The iterates
        and the record do not depend on it (an entry stops on the device at the iteration at
        which it converges); ``info.matvecs`` counts the up to ``check_every - 1`` idle
        iterations at the end, ``info.host_syncs`` the transfers.

    An operator with the solver-level layout hook (``solver_layout``, e.g.
    ``WilsonDirac(..., layout="lanes").normal``) is solved in its kernel's layout, ``b`` and
    the solution converted once (:func:`~lattice_ml.fermions.solvers._common.enter_layout`).

    Returns
    -------
    x : array like ``b``
    info : SolverInfo

    Recursion (per entry): ``r_0 = b - A x_0``, ``p_0 = r_0``;
    ``alpha = <r,r>/<p,Ap>``, ``x += alpha p``, ``r -= alpha A p``,
    ``beta = <r',r'>/<r,r>``, ``p = r' + beta p``.
    """
    A, b, x0, callback, back = enter_layout(A, b, x0, callback)
    x, info = _cg(A, b, x0, tol, maxiter, raise_on_failure, restart_on_true_residual, callback,
                  "cg", check_every)
    return (x if back is None else back(x)), info


def _cg(A, b, x0, tol, maxiter, raise_on_failure, restart, callback, name, check_every=None):
    xp = namespace(b)
    x, r, run = _Run.start(xp, A, b, x0, tol, maxiter, raise_on_failure, name)
    every = check_interval(b, check_every, callback, name)
    rr_dev = norm2(r)
    run.begin(_host(rr_dev)[0])
    p = r
    k = 0
    while True:
        act = run.device_active()
        while np.any(run.active):
            buffered = []
            for _ in range(every):
                Ap = A(p)
                run.matvecs += 1
                pAp_dev, ok_dev, alpha = _cg_step(xp, p, Ap, rr_dev, act)
                okc = run.col(ok_dev)
                x = xp.where(okc, x + run.col(alpha) * p, x)
                r = xp.where(okc, r - run.col(alpha) * Ap, r)
                rr_new_dev = norm2(r)
                beta = _ratio(xp, ok_dev, rr_new_dev, rr_dev)
                p = xp.where(okc, r + run.col(beta) * p, p)
                rr_dev = xp.where(ok_dev, rr_new_dev, rr_dev)
                act = run.device_advance(ok_dev, rr_dev, xp.isfinite(rr_new_dev))
                buffered.append((pAp_dev, rr_new_dev))
            # the host replays the buffered iterations (one transfer): the same bookkeeping as
            # reading them one at a time; iterations after the last active entry did nothing
            for pAp, rr_new in run.fetch(buffered):
                if not np.any(run.active):
                    break
                k += 1
                run.iters += run.active
                bad = run.active & ~((pAp > 0) & np.isfinite(pAp) & np.isfinite(rr_new))
                run.break_down(np.flatnonzero(bad),
                               lambda e: _cg_breakdown(pAp[e], rr_new[e]))
                rel = run.advance(run.active & ~bad, rr_new)
                if callback is not None:
                    callback(k, x, rel)
        restarted = run.restart(A, x, restart)
        if restarted is None:
            return run.finish(x)
        rt, redo = restarted
        m = run.col(run.mask(redo))
        r = xp.where(m, rt, r)
        p = xp.where(m, rt, p)
        rr_dev = xp.where(run.mask(redo), norm2(rt), rr_dev)


def _cg_breakdown(pAp: float, rr: float) -> str:
    if not np.isfinite(pAp) or not np.isfinite(rr):
        return f"non-finite p^H A p = {pAp:.3e} or |r|^2 = {rr:.3e}"
    return f"p^H A p = {pAp:.3e} is not positive (is the operator hermitian positive definite?)"


# ----------------------------------------------------------------------------------------------
# CG on the normal equations
# ----------------------------------------------------------------------------------------------
def cgne(D: Callable, D_dagger: Callable, b, x0=None, *, tol: float = 1e-10,
         maxiter: int = 10000, method: str = "cgnr", raise_on_failure: bool = True,
         restart_on_true_residual: bool = True, check_every: int | None = None):
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

    Other parameters (``check_every`` included) and the return value are as for :func:`cg`;
    ``info.matvecs`` counts applications of ``D`` and ``D_dagger`` (two per iteration).

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
    x, r, run = _Run.start(xp, D, b, x0, tol, maxiter, raise_on_failure, name)
    every = check_interval(b, check_every, None, name)

    def start(r):
        z = D_dagger(r)
        if method == "cgnr":
            return z, norm2(z)               # p = z = D^dagger r, the scalar |z|^2
        return z, norm2(r)                   # CGNE: p = D^dagger r, the scalar |r|^2

    p, g_dev = start(r)
    run.matvecs += 1
    run.begin(_host(norm2(r))[0])
    while True:
        act = run.device_active()
        while np.any(run.active):
            buffered = []
            for _ in range(every):
                Dp = D(p)
                run.matvecs += 1
                den_dev = norm2(Dp) if method == "cgnr" else norm2(p)
                ok_dev = act & (den_dev > 0) & xp.isfinite(den_dev) & xp.isfinite(g_dev)
                alpha = _ratio(xp, ok_dev, g_dev, den_dev)
                okc = run.col(ok_dev)
                x = xp.where(okc, x + run.col(alpha) * p, x)
                r = xp.where(okc, r - run.col(alpha) * Dp, r)
                Ddr = D_dagger(r)
                run.matvecs += 1
                g_new = norm2(Ddr) if method == "cgnr" else norm2(r)
                beta = _ratio(xp, ok_dev, g_new, g_dev)
                p = xp.where(okc, Ddr + run.col(beta) * p, p)
                g_dev = xp.where(ok_dev, g_new, g_dev)
                rr_new_dev = norm2(r)
                # the host's breakdown rule below, on the device: an entry with a non-finite
                # scalar or with D^dagger r = 0 above tolerance stops here
                act = run.device_advance(ok_dev, rr_new_dev, xp.isfinite(rr_new_dev)
                                         & xp.isfinite(g_new) & (g_new != 0))
                buffered.append((den_dev, rr_new_dev, g_new))
            for den, rr_new, g_h in run.fetch(buffered):
                if not np.any(run.active):
                    break
                run.iters += run.active
                bad = run.active & ~((den > 0) & np.isfinite(den) & np.isfinite(rr_new)
                                     & np.isfinite(g_h))
                # CGNR: D^dagger r = 0 with r != 0 means D is singular (least-squares solution)
                bad |= run.active & ~bad & (g_h == 0) & (rr_new > run.target2)
                run.break_down(np.flatnonzero(bad),
                               lambda e: _cgne_breakdown(method, den[e], rr_new[e], g_h[e]))
                run.advance(run.active & ~bad, rr_new)
        restarted = run.restart(D, x, restart_on_true_residual)
        if restarted is None:
            return run.finish(x)
        rt, redo = restarted
        m1 = run.mask(redo)
        r = xp.where(run.col(m1), rt, r)
        p_new, g_new = start(rt)
        run.matvecs += 1
        p = xp.where(run.col(m1), p_new, p)
        g_dev = xp.where(m1, g_new, g_dev)


def _cgne_breakdown(method: str, den: float, rr: float, g: float) -> str:
    if not (np.isfinite(den) and np.isfinite(rr) and np.isfinite(g)):
        return "non-finite scalar (NaN or inf in the operator output?)"
    if den <= 0:
        return ("|D p|^2 = 0" if method == "cgnr" else "|p|^2 = 0") + " (is D singular?)"
    return "D^dagger r = 0 with r != 0 (is D singular?)"
