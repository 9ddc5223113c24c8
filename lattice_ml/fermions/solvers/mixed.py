"""Mixed-precision CG by defect correction (float32 inner solves, float64 accuracy)."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ...backend import namespace
from ._common import MixedInfo, SolverError, _col, _host, _initial, _is_complex, _mask, norm2
from .cg import _cg


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
