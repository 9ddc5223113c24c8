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
    Non-finite numbers give the plain sum's inf/nan (``+inf`` with ``-inf``: nan). Real
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
    finite = np.isfinite(m)
    e = np.frexp(np.where(finite, m, 1.0))[1].astype(np.int64)  # M < 2^e
    # below M = 2^(KW - 1074) the last boundary is the smallest subnormal: nothing is dropped
    e = np.maximum(e, K * W - 1074)
    dev = device_of(x)
    sums = np.zeros((K,) + out_shape)
    if np.all(finite):
        r = x
    else:  # an output with a non-finite number is the plain sum's (below): zeros here
        keep = xp.asarray(finite[..., None], device=dev)
        r = xp.where(xp.isfinite(x) & keep, x, xp.zeros_like(x))
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
    # non-finite input: the global max says so; the plain sums of the partials give inf/nan
    if not np.all(finite):
        with np.errstate(invalid="ignore", over="ignore"):  # inf - inf: nan, as IEEE says
            plain = to_numpy(xp.sum(x, axis=-1))
        if comm.comm is not None:
            plain = np.sum(np.stack(comm.allgather(np.asarray(plain))), axis=0)
        flat = np.where(finite, flat, plain)
    return xp.asarray(flat, dtype=out_dtype, device=dev)


