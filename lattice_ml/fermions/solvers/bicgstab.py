"""BiCGStab for a general (non-hermitian) operator."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ...backend import device_of, namespace, real_dtype_of
from ._common import (SolverError, SolverInfo, _col, _fail_nonconverged, _host, _initial,
                      _is_complex, _mask, _stack_history, norm2, vdot)


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
