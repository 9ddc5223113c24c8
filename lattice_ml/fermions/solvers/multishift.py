"""Multi-shift CG: (A + s_k) x_k = b for many shifts at the cost of one CG."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ...backend import device_of, namespace, real_dtype_of
from ._common import (MultiShiftInfo, SolverError, _check_rhs, _col, _host, _is_complex, _mask,
                      _stack_history, norm2, vdot)
from .cg import _cg


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
