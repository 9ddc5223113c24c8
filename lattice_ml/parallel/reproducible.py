"""Reproducible sums: binned summation whose result has the same bits for every order of the
summands and every split over ranks (the bound: :func:`reproducible_sum`)."""

from __future__ import annotations

import math

import numpy as np

from ..backend import device_of, make_complex, namespace, to_numpy
from .chains import Communicator

# -- reproducible sums ---------------------------------------------------------------------------
def _pieces(count: int) -> tuple[int, int]:
    """``(W, K)`` for a sum of ``count`` numbers: each number is cut into K integers of at most
    W bits on fixed binary boundaries, so that ``count * 2^W <= 2^52`` (every partial sum of
    the integers is exact in float64) and ``K W >= 106``."""
    b = max(1, int(math.ceil(math.log2(max(count, 2)))))
    W = 52 - b
    if W < 8:
        raise ValueError(f"reproducible sum of {count} numbers: at most 2^44 per sum")
    return W, -(-106 // W)


def _rounded_sum(values) -> float:
    """``math.fsum`` (the correctly rounded sum); where it raises (an overflow it cannot
    round, or +inf with -inf) the IEEE sum of the values, in order."""
    try:
        return math.fsum(values)
    except (OverflowError, ValueError):
        with np.errstate(over="ignore", invalid="ignore"):
            return float(np.sum(np.asarray(values, dtype=np.float64)))


def reproducible_sum(comm: Communicator, x, count: int):
    """``sum_j x[..., j]`` over the last axis of the local arrays ``x`` of all ranks (``count``
    numbers in all), the same bits for any split of the numbers over ranks and any order.

    Binned summation (Demmel & Nguyen, IEEE TC 64 (2015) 2060; ReproBLAS): one exact global
    ``M = max |x|`` (per output), ``2^(e-1) <= M < 2^e``; every number is cut into K integers
    ``n_k = round(r_k 2^(W(k+1)-e))`` (rounded to nearest even as ``(y + 1.5 2^52) - 1.5 2^52``), ``r_{k+1} = r_k - n_k 2^(e-W(k+1))``, all exact; the
    integers of piece k are summed exactly (:func:`_pieces`: ``count 2^W <= 2^52``), the ranks'
    partial sums added exactly, and the K totals ``S_k 2^(e-W(k+1))`` rounded once
    (``math.fsum``). The error is at most half an ulp of the result plus
    ``count 2^(e-KW-1) <= count 2^-106 M`` (the dropped remainders; ``e`` is raised to at
    least ``KW - 1074``, so that the last boundary is the smallest subnormal, the scales
    applied in two exact steps). Near overflow (``e > 960``) the numbers are first scaled by
    ``2^-64`` (exact, but for subnormal results far below the dropped remainders) and the rounded
    result by ``2^64``: a sum whose correctly rounded value exceeds the largest float is
    ``±inf`` as IEEE summation gives (``[DBL_MAX/2] * 2`` is ``DBL_MAX``, ``[DBL_MAX] * 2`` is
    ``inf``; an intermediate overflow, ``[DBL_MAX, DBL_MAX, -DBL_MAX]``, is not one: ``DBL_MAX``).
    Non-finite numbers are decided from global flags, so the result is the same on every grid:
    nan with a nan, with ``+inf`` and ``-inf``, or with an inf and a finite part that overflows
    to the other sign (``[DBL_MAX, DBL_MAX, -inf]``: nan); otherwise the inf present. Real
    floating input (float32 summed in float64 and rounded at the end); complex: real and
    imaginary parts."""
    xp = namespace(x)
    if xp.isdtype(x.dtype, "complex floating"):
        re = reproducible_sum(comm, xp.real(x), count)
        im = reproducible_sum(comm, xp.imag(x), count)
        return make_complex(xp, re, im, x.dtype)
    out_dtype = x.dtype
    x = xp.astype(x, xp.float64)
    W, K = _pieces(count)
    out_shape = tuple(x.shape[:-1])
    m_local = to_numpy(xp.max(xp.abs(x), axis=-1)) if x.shape[-1] else np.zeros(out_shape)
    m = np.asarray(m_local, dtype=np.float64)
    if comm.comm is not None:
        m = np.max(np.stack(comm.allgather(m)), axis=0)
    finite = np.isfinite(m)        # global: every rank takes the same branch below
    dev = device_of(x)
    flags = None
    if np.all(finite):
        r = x
    else:
        # non-finite numbers: decided from global flags (nan, +inf, -inf), the same on every
        # grid; the finite numbers are summed as always (their own max sets the scale)
        fin = xp.isfinite(x)
        r = xp.where(fin, x, xp.zeros_like(x))
        both = np.zeros((4,) + out_shape)      # max |finite|, any nan, any +inf, any -inf
        if x.shape[-1]:                         # (a rank may hold none of the numbers)
            both[0] = to_numpy(xp.max(xp.abs(r), axis=-1))
            for i, bad in enumerate((xp.isnan(x), x == math.inf, x == -math.inf)):
                both[i + 1] = to_numpy(xp.any(bad, axis=-1))
        if comm.comm is not None:
            both = np.max(np.stack(comm.allgather(both)), axis=0)
        m, flags = both[0], both[1:] > 0
    e = np.frexp(m)[1].astype(np.int64)  # M < 2^e
    # below M = 2^(KW - 1074) the last boundary is the smallest subnormal: nothing is dropped
    e = np.maximum(e, K * W - 1074)
    sums = np.zeros((K,) + out_shape)
    magic = 1.5 * 2.0 ** 52        # (y + magic) - magic rounds |y| <= 2^51 to an integer

    def power(t):                  # 2^t, |t| <= 1074, as a per-output column
        return xp.asarray(np.ldexp(1.0, t)[..., None], dtype=xp.float64, device=dev)

    # near overflow a piece n 2^(e-W) can round up to 2^1024: scale such outputs by 2^-64 first
    shift = np.where(e > 960, 64, 0).astype(np.int64)
    if np.any(shift):
        r, e = r * power(-shift), e - shift

    for k in range(K):
        t = W * (k + 1) - e        # scale by 2^t; in two exact steps where 2^t would overflow
        if np.all(np.abs(t) <= 1022):
            n = (r * power(t) + magic) - magic
            r = r - n * power(-t)
        else:
            t1 = t // 2
            n = ((r * power(t1)) * power(t - t1) + magic) - magic
            r = r - (n * power(-t1)) * power(t1 - t)
        sums[k] = to_numpy(xp.sum(n, axis=-1))
    if comm.comm is not None:
        sums = np.sum(np.stack(comm.allgather(sums)), axis=0)   # integers < 2^52: exact
    scaled = [np.ldexp(sums[k], e - W * (k + 1)) for k in range(K)]
    flat = np.array([_rounded_sum(v) for v in zip(*[s.reshape(-1) for s in scaled])],
                    dtype=np.float64).reshape(out_shape)
    if np.any(shift):
        with np.errstate(over="ignore"):  # beyond the largest float: inf, as IEEE rounds
            flat = np.ldexp(flat, shift)
    if flags is not None:
        # IEEE on the global numbers, whatever the split: nan with a nan, with +inf and -inf,
        # or with an inf against a finite part that overflowed to the other sign; else the inf
        nan, pos, neg = flags
        pos, neg = pos | (flat == math.inf), neg | (flat == -math.inf)
        flat = np.where(nan | (pos & neg), math.nan,
                        np.where(pos, math.inf, np.where(neg, -math.inf, flat)))
    return xp.asarray(flat, dtype=out_dtype, device=dev)


