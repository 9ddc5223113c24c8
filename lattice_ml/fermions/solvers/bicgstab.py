"""BiCGStab for a general (non-hermitian) operator."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ...backend import device_of, namespace, real_dtype_of
from ._common import _host, _is_complex, _Run, norm2, vdot


# ----------------------------------------------------------------------------------------------
# BiCGStab
# ----------------------------------------------------------------------------------------------
def bicgstab(A: Callable, b, x0=None, *, tol: float = 1e-10, maxiter: int = 10000,
             raise_on_failure: bool = True, restart_on_true_residual: bool = True,
             breakdown_tol: float | None = None, shadow: str = "random",
             restart_tol: float = 0.0, shadow_restarts: int = 10):
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

    Restarts with a fresh shadow vector: an entry whose ``rho'`` breaks down (the test above),
    or, with ``restart_tol > 0``, falls below ``restart_tol ||rhat|| ||r||``, is restarted from
    its true residual with a fresh shadow vector instead of being stopped, at most
    ``shadow_restarts`` times (then the breakdown is reported; counted in ``info.restarts``).
    Measured on 8⁴ SU(3) Wilson-clover at ``m_c + 0.001`` (``bench_preconditioners.py --theory
    su3_4d``, the full operator): the recursion loses the bi-orthogonality of its two Krylov
    spaces (the cosine of ``rhat`` and ``r`` falls to 1e-13 by iteration 350) with the relative
    residual stuck near 1e-2, and ``rho'`` is exactly zero at iteration 470; restarted there the
    solve converges to 1e-10 (890 iterations in all, one restart). A healthy
    solve can pass through small cosines too (2e-9 in the even/odd solve at the same mass, which
    converges in 201 iterations and takes 425 with ``restart_tol = sqrt(eps)``), so the default
    restarts only at a breakdown.

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
    x, r, run = _Run.start(xp, A, b, x0, tol, maxiter, raise_on_failure, name)
    if breakdown_tol is None:
        breakdown_tol = _default_breakdown_tol(xp, b.dtype)
    if not (isinstance(restart_tol, (int, float)) and restart_tol >= 0):
        raise ValueError(f"bicgstab: restart_tol must be a number >= 0, got {restart_tol!r}")
    if isinstance(shadow_restarts, bool) or not isinstance(shadow_restarts, (int, np.integer)) \
            or shadow_restarts < 0:
        raise ValueError(f"bicgstab: shadow_restarts must be a non-negative integer, got "
                         f"{shadow_restarts!r}")
    n_shadow = np.zeros(run.nb, dtype=np.int64)
    sdt, col = b.dtype, run.col                     # scalars in the field's dtype

    def ones():
        return xp.ones((run.nb,), dtype=sdt, device=device_of(b))

    shadows = _Shadows(xp, b, shadow)

    def restart_from(entries, rt, r, rhat, p, v, rho, alpha, omega):
        """The recursion of the host mask ``entries`` started again from the residual ``rt``:
        a fresh shadow vector, ``p = v = 0``, ``rho = alpha = omega = 1``."""
        m1 = run.mask(entries)
        m = col(m1)
        rhat = xp.where(m, shadows.new(rt), rhat)
        return (xp.where(m, rt, r), rhat, norm2(rhat), xp.where(m, xp.zeros_like(p), p),
                xp.where(m, xp.zeros_like(v), v), xp.where(m1, ones(), rho),
                xp.where(m1, ones(), alpha), xp.where(m1, ones(), omega))

    rhat = shadows.new(r)
    rhat2 = norm2(rhat)
    rho, alpha, omega = ones(), ones(), ones()
    v = xp.zeros_like(b)
    p = xp.zeros_like(b)
    run.begin(_host(norm2(r))[0])
    while True:
        while np.any(run.active):
            run.iters += run.active
            act = run.mask(run.active)
            rho_new = vdot(rhat, r)
            # breakdown test on rho' is done on the host together with the next ones
            safe = lambda d: xp.where(act & (d != 0), d, ones())  # noqa: E731
            beta = (rho_new / safe(rho)) * (alpha / safe(omega))
            p = xp.where(col(act), r + col(beta) * (p - col(omega) * v), p)
            v = xp.where(col(act), A(p), v)
            run.matvecs += 1
            rv = vdot(rhat, v)
            alpha_new = rho_new / safe(rv)
            s = r - col(alpha_new) * v
            h_ss, bad, lost = _rho_and_rv_breakdowns(run, breakdown_tol, rho_new, rv, rhat2, r,
                                                     v, s, max(restart_tol, breakdown_tol),
                                                     n_shadow < shadow_restarts)
            ok = run.active & ~bad & ~lost
            half = ok & (h_ss <= run.target2)          # converged on s: x += alpha p, done
            x = xp.where(col(run.mask(ok)), x + col(alpha_new) * p, x)
            t = A(s)
            run.matvecs += 1
            omega_new, bad_om = _omega(run, t, s, ok & ~half, sdt, ones)
            full = ok & ~half & ~bad_om
            fmc = col(run.mask(full))
            x = xp.where(fmc, x + col(omega_new) * s, x)
            r = xp.where(fmc, s - col(omega_new) * t,
                         xp.where(col(run.mask(half | bad_om)), s, r))
            rho = xp.where(run.mask(ok), rho_new, rho)
            alpha = xp.where(run.mask(ok), alpha_new, alpha)
            omega = xp.where(run.mask(full), omega_new, omega)
            run.advance(ok, _host(norm2(r))[0])
            if np.any(lost):
                # lost bi-orthogonality: these entries start again from their true residual
                # with a fresh shadow vector (the recursion's scalars reset)
                rt = b - A(x)
                run.matvecs += 1
                rt2 = _host(norm2(rt))[0]
                r, rhat, rhat2, p, v, rho, alpha, omega = restart_from(
                    lost, rt, r, rhat, p, v, rho, alpha, omega)
                n_shadow += lost
                run.restarts += lost
                run.rr = np.where(lost, rt2, run.rr)
                run.active = run.active | (lost & (rt2 > run.target2)
                                           & (run.iters < run.maxiter))
        restarted = run.restart(A, x, restart_on_true_residual)
        if restarted is None:
            return run.finish(x)
        rt, redo = restarted
        r, rhat, rhat2, p, v, rho, alpha, omega = restart_from(
            redo, rt, r, rhat, p, v, rho, alpha, omega)


def _default_breakdown_tol(xp, dtype) -> float:
    """The machine epsilon of the (real) dtype, squared."""
    single = real_dtype_of(xp, dtype) == xp.float32
    return float(np.finfo(np.float32 if single else np.float64).eps) ** 2


class _Shadows:
    """Shadow residuals: ``"residual"`` returns the residual itself; ``"random"`` the n-th
    pseudo-random complex Gaussian vector (NumPy ``default_rng([2718, n])`` on the host, the same
    for every batch entry), n counting the calls."""

    def __init__(self, xp, b, kind: str):
        self.xp, self.b, self.kind, self.n = xp, b, kind, 0

    def new(self, res):
        if self.kind == "residual":
            return res
        xp, b = self.xp, self.b
        g = np.random.default_rng([2718, self.n])
        self.n += 1
        one = tuple(b.shape[1:])
        z = g.standard_normal(one)
        if _is_complex(xp, b):
            z = z + 1j * g.standard_normal(one)
        z = xp.asarray(z[None, ...], dtype=b.dtype, device=device_of(b))
        return xp.zeros_like(res) + z


def _rho_and_rv_breakdowns(run, breakdown_tol, rho, rv, rhat2, r, v, s, restart_tol=0.0,
                           restartable=None):
    """Host check of ``rho' = <rhat, r>`` and ``<rhat, v>`` against ``breakdown_tol`` times the
    norms (and of finiteness); records the breakdowns. Entries with ``|rho'| <= restart_tol
    ||rhat|| ||r||`` that are still ``restartable`` (host mask) are returned as ``lost``
    instead (the caller restarts them with a fresh shadow vector). Returns ``(|s|^2, bad,
    lost)`` (host)."""
    h_rho, h_rv, h_rh2, h_rr, h_v2, h_ss = _host(rho, rv, rhat2, norm2(r), norm2(v), norm2(s))
    nrm = np.sqrt(h_rh2) * np.sqrt(h_rr)
    finite = np.isfinite(h_rho)
    lost = run.active & finite & (np.abs(h_rho) <= restart_tol * nrm)
    lost &= restartable if restartable is not None else False
    bad_rho = run.active & ~lost & ~(finite & (np.abs(h_rho) > breakdown_tol * nrm))
    bad_rv = run.active & ~lost & ~bad_rho & ~(
        np.isfinite(h_rv) & np.isfinite(h_ss)
        & (np.abs(h_rv) > breakdown_tol * np.sqrt(h_rh2) * np.sqrt(h_v2)))
    run.break_down(np.flatnonzero(bad_rho),
                   lambda e: f"rho = <rhat, r> = {h_rho[e]:.3e} vanishes or is not finite")
    run.break_down(np.flatnonzero(bad_rv),
                   lambda e: f"<rhat, A p> = {h_rv[e]:.3e} vanishes or is not finite")
    return h_ss, bad_rho | bad_rv, lost


def _omega(run, t, s, full, sdt, ones):
    """``omega = <t, s> / <t, t>`` for the entries ``full`` (host mask), and the host mask of
    those where it vanishes or is not finite (recorded as breakdowns)."""
    xp = run.xp
    tt, ts = norm2(t), vdot(t, s)
    omega = ts / xp.where(run.mask(full) & (tt != 0), xp.astype(tt, sdt), ones())
    h_tt, h_om = _host(tt, omega)
    bad = full & ~(np.isfinite(h_tt) & (h_tt > 0) & np.isfinite(h_om) & (h_om != 0))
    run.break_down(np.flatnonzero(bad),
                   lambda e: f"omega = <t, s>/<t, t> = {h_om[e]:.3e} vanishes or is not finite "
                   f"(<t, t> = {h_tt[e]:.3e})")
    return omega, bad
