"""Multi-shift CG: (A + s_k) x_k = b for many shifts at the cost of one CG."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ...backend import device_of, namespace, real_dtype_of
from ._common import (MultiShiftInfo, SolverError, _cg_step, _check_rhs, _col, _host, _mask,
                      _ratio, _stack_history, check_interval, norm2)
from .cg import _cg


# ----------------------------------------------------------------------------------------------
# multi-shift CG
# ----------------------------------------------------------------------------------------------
def multishift_cg(A: Callable, b, shifts: Sequence[float], *, tol: float | Sequence[float] = 1e-10,
                  maxiter: int = 10000, refine: bool = True, raise_on_failure: bool = True,
                  check_every: int | None = None):
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
    check_every : int, optional
        Iterations between two reads of the recursion's scalars on the host, as for
        :func:`~lattice_ml.fermions.solvers.cg` (default 1 on host arrays, 10 on a device; the
        shifted solutions and the record do not depend on it; ``info.host_syncs`` counts the
        reads of the shared recursion).

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
    bb = _check_rhs(xp, b, name)
    sig, tols = _check_shifts(name, shifts, tol)
    zero_rhs = bb == 0.0
    bb_safe = np.where(zero_rhs, 1.0, bb)
    target2 = (tols[:, None] ** 2) * bb[None, :]          # [n_shift, batch]
    every = check_interval(b, check_every, None, name)
    xs, iters, iters_k, history, matvecs, syncs = _shifted_cg(xp, A, b, sig, bb, target2,
                                                              maxiter, raise_on_failure, name,
                                                              every)
    x, res2, refine_it, mv = _check_and_refine(A, b, xs, sig, tols, bb, target2, maxiter,
                                               refine, name)
    info = MultiShiftInfo(shifts=sig, tol=tol, iterations=iters_k,
                          converged=res2 <= target2, residual=np.sqrt(res2 / bb_safe[None, :]),
                          history=_stack_history(history, sig.size, b.shape[0]),
                          matvecs=matvecs + mv, refine_iterations=refine_it,
                          host_syncs=syncs)
    if raise_on_failure and not info.all_converged:
        kk, ee = np.nonzero(~info.converged)
        pairs = ", ".join(f"(shift {sig[k]:g}, entry {e}: {info.residual[k, e]:.3e})"
                          for k, e in zip(kk, ee))
        raise SolverError(f"{name}: did not converge in {maxiter} iterations for {pairs}",
                          entries=sorted(set(int(e) for e in ee)),
                          iteration=int(iters[ee[0]]), info=info)
    return x, info


def _check_shifts(name, shifts, tol):
    """The shifts ``[n_shift]`` (float64, finite, at least one) and one tolerance per shift."""
    sig = np.asarray(shifts, dtype=np.float64).reshape(-1)
    if sig.size == 0 or not np.all(np.isfinite(sig)):
        raise ValueError(f"{name}: shifts must be a non-empty sequence of finite numbers, "
                         f"got {shifts!r}")
    return sig, np.broadcast_to(np.asarray(tol, dtype=np.float64), (sig.size,)).copy()


def _shifted_cg(xp, A, b, sig, bb, target2, maxiter, raise_on_failure, name, every=1):
    """The shared recursion (see :func:`multishift_cg`). Returns ``(xs [n_shift, batch, ...],
    iters [batch], iters_k [n_shift, batch], history, matvecs, host_syncs)``."""
    nd, nb, ns = b.ndim, b.shape[0], sig.size
    rdt = real_dtype_of(xp, b.dtype)
    dev = device_of(b)
    s_seed = float(sig.min())
    delta = xp.asarray(np.repeat((sig - s_seed)[:, None], nb, axis=1), dtype=rdt, device=dev)
    zero_rhs = bb == 0.0
    bb_safe = np.where(zero_rhs, 1.0, bb)

    def As(v):
        return A(v) + s_seed * v if s_seed != 0.0 else A(v)

    def colk(s):  # [n_shift, batch] -> broadcast against [n_shift, batch, ...]
        return xp.reshape(s, tuple(s.shape) + (1,) * (nd - 1))

    matvecs = host_syncs = 0
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

    # the stopping rule also on the device (``check_every``, as in :func:`cg`): per (shift,
    # entry) active while its residual zeta_k^2 |r|^2 (compared in float64) is above target
    t2_dev = xp.asarray(np.asarray(target2, dtype=np.float64), device=dev)
    act_dev = _mask(xp, act_k, b)
    iters_dev = xp.asarray(iters, device=dev)
    while np.any(act_k):
        buffered = []
        for _ in range(every):
            active_dev = xp.any(act_dev, axis=0)
            Ap = As(p)
            matvecs += 1
            pAp, ok_dev, alpha = _cg_step(xp, p, Ap, rr_dev, active_dev)
            # shifted coefficients
            upd_k = act_dev & ok_dev[None, :]
            den = (alpha * beta_m)[None, :] * (zeta_m - zeta) + \
                zeta_m * alpha_m[None, :] * (1.0 + delta * alpha[None, :])
            zeta_new = xp.where(upd_k, zeta * zeta_m * alpha_m[None, :] /
                                xp.where(upd_k, den, one_kb), zeta)
            alpha_k = xp.where(upd_k, alpha[None, :] * zeta_new / xp.where(upd_k, zeta, one_kb),
                               xp.zeros_like(zeta))
            uk = colk(upd_k)
            xs = xp.where(uk, xs + colk(alpha_k) * ps, xs)
            okc = _col(xp, ok_dev, nd)
            r = xp.where(okc, r - _col(xp, alpha, nd) * Ap, r)
            rr_new_dev = norm2(r)
            beta = _ratio(xp, ok_dev, rr_new_dev, rr_dev)
            ratio = zeta_new / xp.where(upd_k, zeta, one_kb)
            beta_k = beta[None, :] * ratio * ratio
            ps = xp.where(uk, colk(zeta_new) * r[None, ...] + colk(beta_k) * ps, ps)
            p = xp.where(okc, r + _col(xp, beta, nd) * p, p)
            zeta_m = xp.where(upd_k, zeta, zeta_m)
            zeta = zeta_new
            alpha_m = xp.where(ok_dev, alpha, alpha_m)
            beta_m = xp.where(ok_dev, beta, beta_m)
            rr_dev = xp.where(ok_dev, rr_new_dev, rr_dev)
            good = ok_dev & xp.isfinite(rr_new_dev)
            iters_dev = iters_dev + xp.astype(active_dev, iters_dev.dtype)
            res2_dev = xp.astype(zeta * zeta, xp.float64) * xp.astype(rr_dev, xp.float64)[None, :]
            act_dev = (act_dev & good[None, :] & (res2_dev > t2_dev)
                       & (iters_dev < maxiter)[None, :])
            buffered.append((pAp, rr_new_dev, zeta))
        host_syncs += 1
        flat = _host(xp.concat([xp.stack([pA, rn]) for pA, rn, _ in buffered]
                               + [z for _, _, z in buffered]))[0]
        m = len(buffered)
        for i in range(m):
            if not np.any(act_k):
                break
            h_pAp, h_rr, zeta_h = flat[2 * i], flat[2 * i + 1], flat[2 * m + ns * i:
                                                                     2 * m + ns * (i + 1)]
            active = np.any(act_k, axis=0)
            iters += active
            iters_k += act_k
            bad = active & ~((h_pAp > 0) & np.isfinite(h_pAp) & np.isfinite(h_rr))
            if np.any(bad) and raise_on_failure:
                e = int(np.flatnonzero(bad)[0])
                raise SolverError(
                    f"{name}: breakdown in batch entry {e} at iteration {int(iters[e])}: "
                    f"p^H (A + sigma_min) p = {h_pAp[e]:.3e} is not positive or a scalar is not "
                    "finite (is A + min(shifts) hermitian positive definite?)",
                    entries=[e], iteration=int(iters[e]))
            rr = np.where(active & ~bad, h_rr, rr)
            # exactly the device's rule: zeta^2 in the field's precision, the product in float64
            z2 = (zeta_h * zeta_h).astype(np.float64)
            res2_k = np.where(act_k & ~bad[None, :], z2 * rr[None, :], res2_k)
            act_k = act_k & ~bad[None, :] & (res2_k > target2) & (iters[None, :] < maxiter)
            history.append(np.sqrt(res2_k / bb_safe[None, :]))
        # the device masks already equal the host's: nothing goes back to the device
    return xs, iters, iters_k, history, matvecs, host_syncs


def _check_and_refine(A, b, xs, sig, tols, bb, target2, maxiter, refine, name):
    """True residuals of every shift; with ``refine`` a warm-started plain CG on ``A + sigma_k``
    for the (shift, entry) pairs above tolerance. Returns ``(x, res2, refine_iterations,
    matvecs)``."""
    xp = namespace(b)
    ns, nb = sig.size, b.shape[0]
    zero_rhs = bb == 0.0
    res2 = np.zeros((ns, nb))
    refine_it = np.zeros((ns, nb), dtype=np.int64)
    x_list = [xs[k, ...] for k in range(ns)]
    matvecs = 0
    for k in range(ns):
        sk = float(sig[k])
        res2[k] = _host(norm2(b - (A(x_list[k]) + sk * x_list[k])))[0]
        matvecs += 1
        need = (res2[k] > target2[k]) & ~zero_rhs
        if refine and np.any(need) and np.all(np.isfinite(res2[k])):
            xk, ik = _cg(lambda v: A(v) + sk * v, b, x_list[k], float(tols[k]), maxiter,
                         False, True, None, name + " refinement")
            matvecs += ik.matvecs
            refine_it[k] = ik.iterations
            x_list[k] = xk
            res2[k] = np.where(zero_rhs, 0.0, (ik.residual ** 2) * bb)
    return xp.stack(x_list), res2, refine_it, matvecs
