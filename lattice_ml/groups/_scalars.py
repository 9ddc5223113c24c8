"""Scalar functions of the closed-form exponentials, stable at 0: ``sin(r)/r`` and
``xi1(r) = (cos r - sin r / r) / r^2``."""

from __future__ import annotations

import math

from ..backend import namespace


def _sinc(xp, r):
    """sin(r)/r (real array), Taylor series below |r| = 0.05 (truncation error < 3e-21)."""
    r2 = r * r
    series = 1.0 - r2 / 6.0 * (1.0 - r2 / 20.0 * (1.0 - r2 / 42.0 * (1.0 - r2 / 72.0)))
    small = xp.abs(r) < 0.05
    safe = xp.where(small, xp.ones_like(r), r)
    return xp.where(small, series, xp.sin(safe) / safe)


def _xi1(xp, r):
    """``xi1(r) = (cos r - sin r / r) / r^2 = d/dr(sin r / r) / r`` (real array), stable at 0:
    the Taylor series ``sum_{k>=1} (-1)^k 2k r^(2k-2) / (2k+1)!`` (12 terms) for ``|r| < 1``."""
    r2 = r * r
    series = xp.zeros_like(r)
    for k in range(12, 0, -1):  # Horner from the highest term
        series = series * r2 + (-1.0) ** k * 2.0 * k / math.factorial(2 * k + 1)
    small = xp.abs(r) < 1.0
    safe = xp.where(small, xp.ones_like(r), r)
    closed = (xp.cos(safe) - xp.sin(safe) / safe) / (safe * safe)
    return xp.where(small, series, closed)


def xi1(r):
    """:func:`_xi1` in the namespace of ``r``."""
    return _xi1(namespace(r), r)
