"""BiCGStab for a general (non-hermitian) operator."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ...backend import device_of, namespace, real_dtype_of
from ._common import _host, _is_complex, _Run, check_interval, norm2, vdot


# ----------------------------------------------------------------------------------------------
# BiCGStab
# ----------------------------------------------------------------------------------------------
def bicgstab(A: Callable, b, x0=None, *, tol: float = 1e-10, maxiter: int = 10000,
             raise_on_failure: bool = True, restart_on_true_residual: bool = True,
             breakdown_tol: float | None = None, shadow: str = "random",
             restart_tol: float = 0.0, shadow_restarts: int = 10,
             check_every: int | None = None):
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
    vector, numbered per batch entry: an entry's n-th shadow vector (n = 0 at the start, one more
    at each of its restarts, true-residual or shadow) is NumPy ``default_rng([2718, n])`` on the
    host, whatever the other entries did, so an entry's result does not depend on the batch or
    on ``check_every``;
    ``shadow="residual"`` is the classical ``rhat = r_0``. The classical choice breaks down
    exactly on a free Wilson point source: ``r_0 = delta_{x,0} e_s``, ``alpha = 1/(m + D)`` makes
    ``s = alpha H r_0`` vanish at the source site, and ``(A s)(0) = -H s (0) = -(alpha/4)
    sum_mu [(1 - g_mu)(1 + g_mu) + (1 + g_mu)(1 - g_mu)] e_s = 0`` (the Wilson projectors
    annihilate each other; extents > 2, so that x + mu and x - mu differ), so ``r_1`` has no
    component at the source and
    ``rho = <r_0, r_1> = 0`` exactly at iteration 2. A delocalised shadow vector has no such
    symmetry.

    ``check_every``: iterations between two reads of the recursion's scalars on the host, as
    for :func:`~lattice_ml.fermions.solvers.cg` (default 1 on host arrays, 10 on a device).
    Every decision of an iteration (the breakdown and restart tests, convergence on ``s``, the
    stopping rule) is taken on the device with masks; the host replays the buffered scalars
    (messages, history, counts), so iterates and record do not depend on it, except that an
    entry that lost bi-orthogonality restarts at the next read instead of at once (its
    iterates are the same; its history rows in between repeat its last value).
    ``info.host_syncs`` counts the reads (one per interval, one per such restart and per
    true-residual check).

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
    every = check_interval(b, check_every, None, name)
    sdt, col = b.dtype, run.col                     # scalars in the field's dtype
    xdev = device_of(b)

    def ones():
        return xp.ones((run.nb,), dtype=sdt, device=xdev)

    shadows = _Shadows(xp, b, shadow)

    def restart_from(entries, rt, r, rhat, p, v, rho, alpha, omega):
        """The recursion of the host mask ``entries`` started again from the residual ``rt``:
        a fresh shadow vector, ``p = v = 0``, ``rho = alpha = omega = 1``."""
        m1 = run.mask(entries)
        m = col(m1)
        rhat = xp.where(m, shadows.new(rt, entries), rhat)
        return (xp.where(m, rt, r), rhat, norm2(rhat), xp.where(m, xp.zeros_like(p), p),
                xp.where(m, xp.zeros_like(v), v), xp.where(m1, ones(), rho),
                xp.where(m1, ones(), alpha), xp.where(m1, ones(), omega))

    rhat = shadows.new(r)
    rhat2 = norm2(rhat)
    rho, alpha, omega = ones(), ones(), ones()
    v = xp.zeros_like(b)
    p = xp.zeros_like(b)
    run.begin(_host(norm2(r))[0])
    lost_tol = max(restart_tol, breakdown_tol)
    while True:
        act = run.device_active()
        # entries that may still restart with a fresh shadow vector (changes only at restarts)
        restartable = run.mask(n_shadow < shadow_restarts)
        while np.any(run.active):
            buffered = []
            for _ in range(every):
                # one iteration with every decision taken on the device (device masks);
                # its scalars are buffered for the host's replay
                rho_new = vdot(rhat, r)
                safe = lambda d: xp.where(act & (d != 0), d, ones())  # noqa: E731
                beta = (rho_new / safe(rho)) * (alpha / safe(omega))
                p = xp.where(col(act), r + col(beta) * (p - col(omega) * v), p)
                v = xp.where(col(act), A(p), v)
                run.matvecs += 1
                rv = vdot(rhat, v)
                alpha_new = rho_new / safe(rv)
                s = r - col(alpha_new) * v
                lost, bad_rho, bad_rv, ss = _rho_and_rv_tests(
                    xp, act, act & restartable, breakdown_tol, lost_tol, rho_new, rv, rhat2, r, v, s)
                ok = act & ~bad_rho & ~bad_rv & ~lost
                # converged on s: x += alpha p, done
                half = ok & (xp.astype(ss, xp.float64) <= run.device_target2())
                x = xp.where(col(ok), x + col(alpha_new) * p, x)
                t = A(s)
                run.matvecs += 1
                full0 = ok & ~half
                tt, ts = norm2(t), vdot(t, s)
                omega_new = ts / xp.where(full0 & (tt != 0), xp.astype(tt, sdt), ones())
                bad_om = full0 & ~(xp.isfinite(tt) & (tt > 0) & xp.isfinite(omega_new)
                                   & (omega_new != 0))
                full = full0 & ~bad_om
                x = xp.where(col(full), x + col(omega_new) * s, x)
                r = xp.where(col(full), s - col(omega_new) * t,
                             xp.where(col(half | bad_om), s, r))
                rho = xp.where(ok, rho_new, rho)
                alpha = xp.where(ok, alpha_new, alpha)
                omega = xp.where(full, omega_new, omega)
                rr_new = norm2(r)
                # an entry with an omega breakdown stays in the recursion (r = s), as it always
                # did; lost and broken-down entries stop here
                act = run.device_advance(ok, rr_new, ok)
                buffered.append(_bicg_scalars(xp, rr_new, (rho_new, rv, omega_new), tt,
                                              (ok, lost, bad_rho, bad_rv, bad_om)))
            # the host replays the buffered iterations (one transfer) with the device's
            # decisions; entries that lost bi-orthogonality restart afterwards, in the order
            # of the iterations at which they were lost (one shadow vector each time, as with
            # check_every = 1)
            lost_groups = []
            for vals in run.fetch(buffered):
                if not np.any(run.active):
                    break
                run.iters += run.active
                rr_h, (h_rho, h_rv, h_om), h_tt, (ok_h, lost_h, brho_h, brv_h, bom_h) = \
                    _unpack_bicg(vals, _is_complex(xp, b))
                run.break_down(np.flatnonzero(brho_h & run.active), lambda e: (
                    f"rho = <rhat, r> = {h_rho[e]:.3e} vanishes or is not finite"))
                run.break_down(np.flatnonzero(brv_h & run.active), lambda e: (
                    f"<rhat, A p> = {h_rv[e]:.3e} vanishes or is not finite"))
                run.break_down(np.flatnonzero(bom_h & run.active), lambda e: (
                    f"omega = <t, s>/<t, t> = {h_om[e]:.3e} vanishes or is not finite "
                    f"(<t, t> = {h_tt[e]:.3e})"))
                lost_h = lost_h & run.active
                run.advance(ok_h & run.active, rr_h)
                if np.any(lost_h):
                    lost_groups.append(lost_h)
            if lost_groups:
                # lost bi-orthogonality: these entries start again from their true residual
                # with a fresh shadow vector (the recursion's scalars reset); their iterates
                # have not moved since
                rt = b - A(x)
                run.matvecs += 1
                rt2 = _host(norm2(rt))[0]
                run.host_syncs += 1
                for lost_h in lost_groups:
                    r, rhat, rhat2, p, v, rho, alpha, omega = restart_from(
                        lost_h, rt, r, rhat, p, v, rho, alpha, omega)
                    n_shadow += lost_h
                    run.restarts += lost_h
                    run.rr = np.where(lost_h, rt2, run.rr)
                    run.active = run.active | (lost_h & (rt2 > run.target2)
                                               & (run.iters < run.maxiter))
                act = run.device_active()
                restartable = run.mask(n_shadow < shadow_restarts)
        restarted = run.restart(A, x, restart_on_true_residual)
        if restarted is None:
            return run.finish(x)
        rt, redo = restarted
        r, rhat, rhat2, p, v, rho, alpha, omega = restart_from(
            redo, rt, r, rhat, p, v, rho, alpha, omega)


def _rho_and_rv_tests(xp, act, can_lose, breakdown_tol, lost_tol, rho, rv, rhat2, r, v, s):
    """The device tests of ``rho' = <rhat, r>`` and ``<rhat, v>`` against ``breakdown_tol``
    times the norms (and of finiteness), as device masks: ``lost`` (``|rho'| <= lost_tol
    ||rhat|| ||r||`` with the entry still restartable, ``can_lose``: restarted with a fresh
    shadow vector instead of stopped), ``bad_rho``, ``bad_rv``; and ``|s|^2``."""
    rr, v2, ss = norm2(r), norm2(v), norm2(s)
    nrm = xp.sqrt(rhat2) * xp.sqrt(rr)
    finite = xp.isfinite(rho)
    a_rho = xp.abs(rho)
    lost = act & can_lose & finite & (a_rho <= lost_tol * nrm)
    bad_rho = act & ~lost & ~(finite & (a_rho > breakdown_tol * nrm))
    bad_rv = act & ~lost & ~bad_rho & ~(
        xp.isfinite(rv) & xp.isfinite(ss)
        & (xp.abs(rv) > breakdown_tol * xp.sqrt(rhat2) * xp.sqrt(v2)))
    return lost, bad_rho, bad_rv, ss


def _parts(xp, z):
    """Real and imaginary parts of ``z`` (zero imaginary part for a real ``z``)."""
    if _is_complex(xp, z):
        return (xp.real(z), xp.imag(z))
    return (z, xp.zeros_like(z))


def _bicg_scalars(xp, rr_new, complexes, tt, masks):
    """One iteration's scalars for :meth:`_Run.fetch`: all ``[batch]`` of the real dtype of
    ``rr_new`` (complex ones split into real and imaginary parts, masks as 0/1)."""
    rdt = rr_new.dtype
    out = [rr_new]
    for z in complexes:
        out += [xp.astype(a, rdt) for a in _parts(xp, z)]
    out.append(xp.astype(tt, rdt))
    out += [xp.astype(m, rdt) for m in masks]
    return tuple(out)


def _unpack_bicg(vals, cplx: bool):
    """Inverse of :func:`_bicg_scalars` on the host (``cplx``: complex fields)."""
    rr = vals[0]
    cx = tuple(vals[1 + 2 * i] + 1j * vals[2 + 2 * i] if cplx else vals[1 + 2 * i]
               for i in range(3))
    return rr, cx, vals[7], tuple(m != 0 for m in vals[8:13])


def _default_breakdown_tol(xp, dtype) -> float:
    """The machine epsilon of the (real) dtype, squared."""
    single = real_dtype_of(xp, dtype) == xp.float32
    return float(np.finfo(np.float32 if single else np.float64).eps) ** 2


class _Shadows:
    """Shadow residuals: ``"residual"`` returns the residual itself; ``"random"`` gives every
    batch entry its own n-th pseudo-random complex Gaussian vector (NumPy
    ``default_rng([2718, n])`` on the host), ``n`` counting that entry's shadow vectors
    (``n[e]``: 0 for the first, then one more at each of its restarts), so an entry's shadows,
    and hence its iterates, do not depend on the other entries of the batch or on when the host
    reads the scalars."""

    def __init__(self, xp, b, kind: str):
        self.xp, self.b, self.kind = xp, b, kind
        self.n = np.zeros(b.shape[0], dtype=np.int64)

    def new(self, res, entries=None):
        """Fresh shadow vectors for the host mask ``entries`` (default all); the rows of the
        other entries are zero (the caller keeps their old shadows)."""
        if self.kind == "residual":
            return res
        xp, b = self.xp, self.b
        nb = b.shape[0]
        entries = np.ones(nb, dtype=bool) if entries is None else np.asarray(entries, bool)
        one = tuple(b.shape[1:])
        cplx = _is_complex(xp, b)
        z = np.zeros((nb,) + one, dtype=np.complex128 if cplx else np.float64)
        cache = {}
        for e in np.flatnonzero(entries):
            k = int(self.n[e])
            if k not in cache:                     # entries at the same count share the draw
                g = np.random.default_rng([2718, k])
                h = g.standard_normal(one)
                cache[k] = h + 1j * g.standard_normal(one) if cplx else h
            z[e] = cache[k]
            self.n[e] += 1
        return xp.asarray(z, dtype=b.dtype, device=device_of(b))
