"""Observables of a real scalar field ``phi[batch, *sites]`` (time = site axis 0).

Per-configuration estimators return arrays with the batch axis first. Ensemble quantities that are
non-linear in expectation values (susceptibility, Binder cumulant, correlation length) are given
as functions of those expectation values, to be fed to the Γ-method
(:func:`lattice_ml.stats.gamma_method` with ``f=...``) so that their errors are correct.

Definitions (M = sum_x phi(x) / V, the magnetisation per site):

* ``phi2``              : sum_x phi(x)^2 / V
* ``abs_magnetization`` : |M|
* ``susceptibility``    : chi = V (<M^2> - <|M|>^2)
* ``binder_cumulant``   : U = 1 - <M^4> / (3 <M^2>^2)
* ``two_point_function``: C(t) = (1/V) sum_{t0} Phi(t0 + t) Phi(t0), Phi(t) = sum_xvec phi(t, xvec),
  whose expectation is the zero-momentum propagator sum_xvec <phi(t, xvec) phi(0)>
* second-moment correlation length, from G(p) = <|phi~(p)|^2>/V at p = 0 and at the smallest
  non-zero momentum p1 = 2 pi / L along one axis (averaged over the D axes of extent L):
  xi^2 = (G(0) / G(p1) - 1) / (4 sin^2(p1 / 2)).
"""

from __future__ import annotations

import math

from ..backend import device_of, namespace
from ..lattice import shift

__all__ = [
    "magnetization",
    "abs_magnetization",
    "phi2",
    "two_point_function",
    "momentum_space_propagator",
    "susceptibility",
    "binder_cumulant",
    "second_moment_correlation_length",
]


def _site_axes(phi):
    return tuple(range(1, phi.ndim))


def magnetization(phi):
    """M = sum_x phi(x) / V per configuration, ``[batch]``."""
    xp = namespace(phi)
    return xp.mean(phi, axis=_site_axes(phi))


def abs_magnetization(phi):
    """|M| per configuration, ``[batch]``."""
    xp = namespace(phi)
    return xp.abs(magnetization(phi))


def phi2(phi):
    """Site average of phi^2 per configuration, ``[batch]``."""
    xp = namespace(phi)
    return xp.mean(phi * phi, axis=_site_axes(phi))


def two_point_function(phi):
    """Zero-momentum two-point function C(t) per configuration, ``[batch, T]``.

    C(t) = (1/V) sum_{t0} Phi(t0 + t) Phi(t0) with the time-slice sums Phi(t) = sum_xvec phi(t, xvec)
    (time is site axis 0). Its expectation is sum_xvec <phi(t, xvec) phi(0, 0)>. No disconnected
    part is subtracted: in finite volume <M> = 0 by the phi -> -phi symmetry.
    """
    xp = namespace(phi)
    volume = math.prod(phi.shape[1:])
    T = phi.shape[1]
    slices = xp.sum(phi, axis=tuple(range(2, phi.ndim))) if phi.ndim > 2 else phi  # [batch, T]
    cols = [xp.sum(shift(slices, 0, t) * slices, axis=1) for t in range(T)]
    return xp.stack(cols, axis=1) / volume


def momentum_space_propagator(phi):
    """``(G(0), G(p1))`` per configuration, each ``[batch]``.

    G(p) = |phi~(p)|^2 / V with phi~(p) = sum_x exp(-i p.x) phi(x); p1 = 2 pi / L_mu along each axis
    mu, averaged over the axes whose extent equals that of axis 0 (all axes on a hypercube).
    Feed the two histories to :func:`second_moment_correlation_length` through the Γ-method.
    """
    xp = namespace(phi)
    D = phi.ndim - 1
    shape = phi.shape[1:]
    volume = math.prod(shape)
    g0 = xp.sum(phi, axis=_site_axes(phi)) ** 2 / volume
    L = shape[0]
    axes = [mu for mu in range(D) if shape[mu] == L]
    g1 = 0.0
    for mu in axes:
        # project onto the axis first: Phi_mu(x_mu) = sum over the other axes
        other = tuple(1 + nu for nu in range(D) if nu != mu)
        proj = xp.sum(phi, axis=other)  # [batch, L]
        x = xp.arange(L, dtype=phi.dtype, device=device_of(phi))
        c = xp.cos(2.0 * math.pi * x / L)
        s = xp.sin(2.0 * math.pi * x / L)
        re = xp.sum(proj * c, axis=1)
        im = xp.sum(proj * s, axis=1)
        g1 = g1 + (re * re + im * im) / volume
    return g0, g1 / len(axes)



# -- functions of expectation values (for the Γ-method) -------------------------------------------
def susceptibility(mean_m2: float, mean_abs_m: float, volume: int) -> float:
    """chi = V (<M^2> - <|M|>^2) from the expectation values <M^2> and <|M|>."""
    return volume * (mean_m2 - mean_abs_m ** 2)


def binder_cumulant(mean_m2: float, mean_m4: float) -> float:
    """U = 1 - <M^4> / (3 <M^2>^2) from <M^2> and <M^4>."""
    return 1.0 - mean_m4 / (3.0 * mean_m2 ** 2)


def second_moment_correlation_length(g0: float, g1: float, L: int) -> float:
    """xi = sqrt(G(0)/G(p1) - 1) / (2 sin(pi / L)) from the expectation values G(0), G(p1)."""
    ratio = g0 / g1 - 1.0
    if ratio < 0:
        return float("nan")
    return math.sqrt(ratio) / (2.0 * math.sin(math.pi / L))
