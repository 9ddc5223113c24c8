"""Flexible GMRES(m): right-preconditioned GMRES with restarts, for a preconditioner that may
change from step to step (a learned network, a multigrid cycle with an inexact coarse solve)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ...backend import device_of, namespace
from ._common import _host, _is_complex, _Run, check_interval, norm2, vdot


def fgmres(A: Callable, b, x0=None, *, M: Callable | None = None, restart: int = 30,
           tol: float = 1e-10, maxiter: int = 10000, raise_on_failure: bool = True,
           callback: Callable | None = None, check_every: int | None = None):
    """Flexible GMRES (Saad 1993) for a general non-singular ``A``, every batch entry on its own.

    Parameters
    ----------
    A : callable on ``[batch, ...]`` arrays
    b : array ``[batch, ...]``
    x0 : array like ``b``, optional
    M : callable ``M(v) -> z`` on ``[batch, ...]`` arrays, optional
        Right preconditioner, applied once per iteration; it may be nonlinear or change between
        calls (``z_j = M(v_j)`` is kept, so the update is right whatever ``M`` did). Default:
        none (plain GMRES). Correctness never depends on ``M`` being a good approximation of
        ``A^-1``: only the iteration count does. ``M`` may work in another precision (e.g. a
        complex64 multigrid in a complex128 solve, or the reverse): its output is cast to the
        dtype of ``b``, so the preconditioned vectors, ``A z_j`` and the update of ``x`` are in
        the solve's precision and ``x`` keeps the dtype of ``b`` (a low-precision ``M`` is just
        a less accurate preconditioner).
    restart : int
        Arnoldi steps per cycle (memory: ``restart + 1`` basis vectors and ``restart``
        preconditioned vectors).
    tol, maxiter, raise_on_failure
        As for :func:`cg`; ``maxiter`` counts Arnoldi steps per entry over all cycles.
    callback : callable ``callback(k, rel_res)``, optional
        After each step, with the ``[batch]`` host residual estimates (forces
        ``check_every = 1``).
    check_every : int, optional
        Arnoldi steps between two reads of the Hessenberg columns on the host (default 1 on host
        arrays, 10 on a device, as for :func:`cg`). The steps of an interval run on the device
        (``v_{j+1} = w / h_{j+1,j}`` normalised there), the host then replays the Givens
        rotations and the stopping rule step by step; an entry's solution update takes only
        its own steps, so ``x`` and the record do not depend on the interval; ``info.matvecs``
        counts the up to ``check_every - 1`` steps per cycle taken after the last entry
        stopped.

    Cycle (per entry), ``r = b - A x``, ``beta = ||r||``, ``v_0 = r / beta``::

        for j = 0, 1, ...:   z_j = M(v_j);  w = A z_j
                             h_ij = <v_i, w>, w -= h_ij v_i  (i <= j, modified Gram-Schmidt)
                             h_{j+1,j} = ||w||;  v_{j+1} = w / h_{j+1,j}
        y = argmin || beta e_1 - H y ||   (Givens rotations on the host, per entry)
        x += sum_j y_j z_j

    The least-squares residual ``|g_{j+1}|`` after the rotations is ``||b - A x_j||`` in exact
    arithmetic; an entry stops its cycle when it is ``<= tol ||b||`` (or ``h_{j+1,j}`` vanishes:
    a lucky breakdown, the Krylov space holds the solution), after ``restart`` steps, or at
    ``maxiter``. At the end of every cycle the **true** residual is computed and the entries
    above ``tol`` start a new cycle from it (``info.restarts`` counts the cycles after the first).
    A non-finite scalar is a breakdown (:class:`SolverError`, or frozen with
    ``raise_on_failure=False``). One host copy of the new Hessenberg columns per
    ``check_every`` steps (``info.host_syncs``, with the true residual of every cycle).

    Returns ``(x, SolverInfo)``; ``info.matvecs`` counts applications of ``A`` and
    ``info.precond_calls`` of ``M``.
    """
    name = "fgmres"
    if isinstance(restart, bool) or not isinstance(restart, (int, np.integer)) or restart < 1:
        raise ValueError(f"{name}: restart must be a positive integer, not {restart!r}")
    m = int(restart)
    xp = namespace(b)
    x, r, run = _Run.start(xp, A, b, x0, tol, maxiter, raise_on_failure, name)
    precond_calls = 0
    nb, col = run.nb, run.col
    cdt = np.complex128
    every = check_interval(b, check_every, callback, name)
    run.begin(_host(norm2(r))[0])
    k_total = 0
    while True:
        # ---- one cycle from the residual r ------------------------------------------------
        in_cycle = run.active.copy()
        beta = np.sqrt(np.where(in_cycle, run.rr, 1.0))
        V = [r * col(xp.asarray(1.0 / beta, dtype=r.dtype, device=device_of(r)))]
        Z = []
        H = np.zeros((nb, m + 1, m), dtype=cdt)
        cs = np.zeros((nb, m))
        sn = np.zeros((nb, m), dtype=cdt)
        g = np.zeros((nb, m + 1), dtype=cdt)
        g[:, 0] = beta
        steps = np.zeros(nb, dtype=np.int64)        # Arnoldi steps of this cycle, per entry
        j0 = 0
        while j0 < m and np.any(run.active):
            # ---- the Arnoldi steps j0 .. j1-1 on the device, their columns read at once ----
            j1 = min(j0 + every, m)
            flat = []
            for j in range(j0, j1):
                z = V[j] if M is None else M(V[j])
                if M is not None:
                    precond_calls += 1
                    if z.dtype != b.dtype:           # M in another precision: back to b's
                        z = xp.astype(z, b.dtype)
                w = A(z)
                run.matvecs += 1
                hs = []
                for i in range(j + 1):               # modified Gram-Schmidt
                    h = vdot(V[i], w)
                    w = w - col(h) * V[i]
                    hs.append(h)
                hn = xp.sqrt(norm2(w))
                finite = xp.isfinite(hn)
                for h in hs:
                    finite = finite & xp.isfinite(h)
                # 1 / h_{j+1,j} where finite and positive, else 0 (in the dtype of hn, as the
                # host computed it before)
                pos = finite & (hn > 0)
                inv = xp.where(pos, 1.0 / xp.where(pos, hn, xp.ones_like(hn)),
                               xp.zeros_like(hn))
                V.append(w * col(xp.astype(inv, w.dtype)))
                Z.append(z)
                flat += hs + [xp.astype(hn, hs[0].dtype)]
            host = _host(xp.stack(flat, axis=-1))[0]
            run.host_syncs += 1
            # ---- the host replays them: Hessenberg columns, Givens rotations, stopping rule --
            off = 0
            for j in range(j0, j1):
                hcol = host[:, off:off + j + 1]
                hnext = host[:, off + j + 1].real
                off += j + 2
                if not np.any(run.active):
                    continue
                act = run.active.copy()
                finite = np.isfinite(hcol).all(axis=1) & np.isfinite(hnext)
                bad = act & ~finite
                run.break_down(np.flatnonzero(bad),
                               lambda e: "non-finite Hessenberg entry (NaN or inf in A or M?)")
                ok = act & finite
                # Hessenberg column j and the Givens rotations, on the host, for the entries ok
                Hc = np.zeros((nb, m + 1), dtype=cdt)
                Hc[:, :j + 1] = np.where(ok[:, None], hcol, 0.0)
                Hc[:, j + 1] = np.where(ok, hnext, 0.0)
                for i in range(j):
                    a, c = Hc[:, i].copy(), Hc[:, i + 1].copy()
                    Hc[:, i] = cs[:, i] * a + sn[:, i] * c
                    Hc[:, i + 1] = -np.conj(sn[:, i]) * a + cs[:, i] * c
                a, c = Hc[:, j], Hc[:, j + 1].real
                den = np.sqrt(np.abs(a) ** 2 + c ** 2)
                den_s = np.where(den > 0, den, 1.0)
                cj = np.where(den > 0, np.abs(a) / den_s, 1.0)
                ph = np.where(np.abs(a) > 0, a / np.where(np.abs(a) > 0, np.abs(a), 1.0), 1.0)
                sj = np.where(den > 0, ph * c / den_s, 0.0)
                cs[ok, j] = cj[ok]
                sn[ok, j] = sj[ok]
                Hc[:, j] = np.where(ok, ph * den, Hc[:, j])
                Hc[:, j + 1] = 0.0
                H[ok, :, j] = Hc[ok]
                gj = g[:, j].copy()
                g[ok, j] = cj[ok] * gj[ok]
                g[ok, j + 1] = -np.conj(sj[ok]) * gj[ok]
                steps += ok
                run.iters += act
                k_total += 1
                lucky = ok & (hnext <= 1e-14 * np.maximum(np.abs(hcol).max(axis=1), 1e-300))
                rr_est = np.where(lucky, 0.0, np.abs(g[:, j + 1]) ** 2)
                rel = run.advance(ok, rr_est)
                run.active &= (steps < m)
                if callback is not None:
                    callback(k_total, rel)
            j0 = j1
        # ---- update x with the least-squares solution of every entry that took steps --------
        Y = np.zeros((nb, len(Z)), dtype=cdt)
        for e in np.flatnonzero(in_cycle & (steps > 0)):
            k = int(steps[e])
            R = np.triu(H[e, :k, :k])
            Y[e, :k] = _back_substitute(R, g[e, :k])
        if not _is_complex(xp, b):
            Y = Y.real
        # an entry takes only its own steps (after it stopped, the device went on with it)
        # (the coefficients and the mask go to the device in one copy each)
        used = run.mask(np.arange(len(Z))[None, :] < steps[:, None])
        Yd = xp.asarray(Y, dtype=b.dtype, device=device_of(b)) if Z else None
        for jj, z in enumerate(Z):
            upd = x + col(Yd[:, jj]) * z
            x = xp.where(col(used[:, jj]), upd, x)
        restarted = run.restart(A, x, True)
        if restarted is None:
            return run.finish(x, precond_calls=precond_calls)
        r, _ = restarted


def _back_substitute(R, g):
    """``y`` with ``R y = g`` for the upper-triangular ``R`` (a zero pivot gives ``y_i = 0``)."""
    k = R.shape[0]
    y = np.zeros(k, dtype=np.complex128)
    for i in range(k - 1, -1, -1):
        d = R[i, i]
        y[i] = (g[i] - R[i, i + 1:] @ y[i + 1:]) / d if d != 0 else 0.0
    return y
