"""Fits of periodic two-point correlators: the ground-state mass of ``A [e^{-mt} + e^{-m(T-t)}]``.

Conventions and layout
----------------------
A correlator is ``C[T]``, ``t = 0 … T−1`` on a lattice periodic in time, with
``C(t) = C(T − t)`` in expectation (bilinears such as the pion are periodic even with
antiperiodic fermions). A history of correlators is ``[chain, time, T]`` (the layout of the
library's measurements: chains first, Monte Carlo time second) or ``[time, T]``; the primaries
of :func:`lattice_ml.stats.gamma_method` are then ``C[..., t]``, one ``(R, N)`` history per
``t``.

* **Folding**: ``c(t) = [C(t) + C((T − t) mod T)] / 2`` for ``t = 0 … T//2``; the model is
  symmetric, so the fold loses nothing and halves the noise of the backward half.
* **Model**: ``C(t) = A [e^{-m t} + e^{-m (T − t)}] = 2 A e^{-m T/2} cosh(m (T/2 − t))``; the
  backward (periodic-image) term is what a pure exponential misses close to ``T/2``.
* **Fit**: uncorrelated weighted least squares over ``t_min ≤ t ≤ t_max`` (``t_max ≤ T//2``),
  ``χ²(m, A) = Σ_t [c(t) − A f_t(m)]² / σ_t²``. For fixed ``m`` the amplitude is linear,
  ``A(m) = Σ w c f / Σ w f²`` (``w = 1/σ²``), and variable projection leaves the 1-D problem
  ``χ²_p(m) = Σ w c² − (Σ w c f)² / Σ w f²``, whose minimum is the root of
  ``g(m) = Σ_t w_t [c(t) − A(m) f_t(m)] ∂_m f_t(m)`` (the residual orthogonal to ``∂_m f``).
  It is bracketed on a logarithmic grid around the two-point mass of the end points and solved
  by Brent's method to rounding accuracy, so that the fit is a smooth, deterministic function
  of the mean correlator (needed for the finite-difference gradient of the Γ-method).
* **Why uncorrelated**: a correlated fit needs the inverse of the ``(n_t × n_t)`` covariance of
  the means, estimated from the same few (and autocorrelated) configurations; its small
  eigenvalues are underestimated and the inverse is biased and unstable, which biases the fit
  (C. Michael and A. McKerrell, Phys. Rev. D 51 (1995) 3745, hep-lat/9412087). The
  uncorrelated fit is a consistent estimator for any fixed weights; its error is obtained by
  treating the whole fit as a derived quantity ``m = f(C̄(0), …, C̄(T−1))`` of the primary means
  in the Γ-method (U. Wolff, hep-lat/0306017, §3), which propagates all correlations between
  time slices and the autocorrelations in Monte Carlo time. (The uncorrelated χ² is then not a
  goodness-of-fit test.)

Error of the mass (the call pattern)
------------------------------------
>>> import numpy as np
>>> from lattice_ml.stats import gamma_method
>>> from lattice_ml.stats.fits import (choose_fit_range, cosh_correlator, fit_cosh_mass,
...                                    folded_errors)
>>> T, rng = 16, np.random.default_rng(1)
>>> C = cosh_correlator(T, 0.5, 2.0) * (1 + 0.01 * rng.standard_normal((4, 200, T)))
>>> t_range = choose_fit_range(C)                      # [chain, time, T] history
>>> sigma = folded_errors(C)                           # weights: Γ-method errors of c(t)
>>> res = gamma_method([C[..., t] for t in range(T)],
...                    f=lambda c: fit_cosh_mass(c, t_range, sigma=sigma).mass)
>>> abs(res.value - 0.5) < 4 * res.error
True
"""

from __future__ import annotations

import math
import warnings
from typing import Any, NamedTuple

import numpy as np
from scipy.optimize import brentq

from lattice_ml.stats.gamma import WindowWarning, _to_host, gamma_method

__all__ = [
    "CoshFit",
    "cosh_correlator",
    "fold_correlator",
    "folded_errors",
    "fit_cosh_mass",
    "choose_fit_range",
]

_GRID = np.geomspace(1.0 / 16.0, 16.0, 161)
"""Scan of ``m / m_0`` (``m_0`` the two-point mass) that brackets the minimum of ``χ²_p``."""


class CoshFit(NamedTuple):
    """Result of :func:`fit_cosh_mass`: unpacks as ``mass, amplitude = fit``.

    ``C(t) ≈ amplitude · [e^{-mass t} + e^{-mass (T − t)}]``.
    """

    mass: float
    amplitude: float


# --------------------------------------------------------------------------- helpers


def cosh_correlator(T: int, mass: float, amplitude: float = 1.0) -> np.ndarray:
    """``A [e^{-m t} + e^{-m (T − t)}]`` for ``t = 0 … T−1`` (float64, shape ``(T,)``)."""
    t = np.arange(T, dtype=np.float64)
    return amplitude * (np.exp(-mass * t) + np.exp(-mass * (T - t)))


def fold_correlator(C: Any) -> np.ndarray:
    """Folded correlator ``c(t) = [C(t) + C((T − t) mod T)] / 2``, ``t = 0 … T//2``.

    ``C`` is ``[..., T]`` (any leading axes: a mean correlator or a whole history); returns
    ``[..., T//2 + 1]`` float64 on the host. ``c(0) = C(0)``, and ``c(T/2) = C(T/2)`` for even
    ``T``.
    """
    arr = _to_host(C, "correlator")
    if arr.ndim < 1 or arr.shape[-1] < 2:
        raise ValueError(f"a correlator needs a time axis of length >= 2, got shape {arr.shape}")
    T = arr.shape[-1]
    t = np.arange(T // 2 + 1)
    return 0.5 * (arr[..., t] + arr[..., (T - t) % T])


def _symmetrised_history(history: Any) -> np.ndarray:
    """History ``[chain, time, T]`` or ``[time, T]`` with ``C(t) → [C(t) + C(T−t)]/2`` for all t."""
    h = _to_host(history, "correlator history")
    if h.ndim not in (2, 3):
        raise ValueError(
            f"a correlator history is [chain, time, T] or [time, T], got shape {h.shape}"
        )
    T = h.shape[-1]
    if T < 4:
        raise ValueError(f"the time extent T = {T} is too short for a cosh fit (T >= 4)")
    return 0.5 * (h + h[..., (-np.arange(T)) % T])


def folded_errors(history: Any, S: float = 1.5) -> np.ndarray:
    """Γ-method errors of the folded mean correlator ``c(t)``, ``t = 0 … T//2``.

    ``history`` is ``[chain, time, T]`` or ``[time, T]``; each ``c(t)`` history is analysed by
    :func:`lattice_ml.stats.gamma_method` with window parameter ``S`` (autocorrelations
    included). These are the natural weights ``σ_t`` of :func:`fit_cosh_mass`.
    """
    hs = _symmetrised_history(history)
    return np.array([gamma_method(hs[..., t], S=S).error for t in range(hs.shape[-1] // 2 + 1)])


def _log_cosh(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    return ax + np.log1p(np.exp(-2.0 * ax)) - math.log(2.0)


def _check_range(t_range: Any, T: int) -> tuple[int, int]:
    if t_range is None:
        return 1, T // 2
    try:
        t_min, t_max = (int(v) for v in t_range)
        ok = all(float(v) == int(v) for v in t_range)
    except (TypeError, ValueError):
        raise ValueError(f"t_range must be two integers (t_min, t_max), got {t_range!r}") from None
    if not ok:
        raise ValueError(f"t_range must be two integers (t_min, t_max), got {t_range!r}")
    if not 0 <= t_min < t_max <= T // 2:
        raise ValueError(
            f"t_range = ({t_min}, {t_max}) must satisfy 0 <= t_min < t_max <= T//2 = {T // 2} "
            "(the folded correlator holds t = 0 ... T//2)"
        )
    return t_min, t_max


def _two_point_mass(r: float, a: float, b: float) -> float:
    """``m > 0`` with ``cosh(m a) / cosh(m b) = r`` (``a > b ≥ 0``, ``r > 1``)."""
    target = math.log(r)
    hi = (target + math.log(2.0)) / (a - b) + 1.0
    return brentq(lambda m: float(_log_cosh(m * a) - _log_cosh(m * b)) - target, 0.0, hi,
                  xtol=1e-300, rtol=4 * np.finfo(np.float64).eps, maxiter=500)


# --------------------------------------------------------------------------- the fit


def fit_cosh_mass(C: Any, t_range: tuple[int, int] | None = None, *,
                  sigma: Any = None) -> CoshFit:
    """Mass and amplitude of ``C(t) = A [e^{-m t} + e^{-m (T − t)}]`` by a folded,
    uncorrelated least-squares fit over ``t_min ≤ t ≤ t_max``.

    Parameters
    ----------
    C : array, shape ``(T,)``
        Mean correlator at ``t = 0 … T−1`` (periodic in time). It is folded,
        ``c(t) = [C(t) + C((T − t) mod T)] / 2`` (:func:`fold_correlator`), before the fit.
    t_range : (t_min, t_max), optional
        Inclusive fit range of the folded correlator, ``0 ≤ t_min < t_max ≤ T//2`` (at least
        two points; three or more leave a degree of freedom). Default ``(1, T//2)``: every
        point but the contact term ``t = 0``. The range must not depend on the data inside a
        Γ-method ``f`` (it would make ``f`` discontinuous): choose it once, e.g. with
        :func:`choose_fit_range`, and pass it.
    sigma : array, shape ``(T//2 + 1,)``, optional
        Errors ``σ_t`` of the folded correlator (e.g. :func:`folded_errors`); the weights are
        ``1/σ_t²`` and must be positive and finite in the fit range. Default: ``σ_t = c(t)``
        (every point with the same relative weight, the right choice for a constant relative
        error as for the pion).

    Returns
    -------
    CoshFit
        ``(mass, amplitude)``, both positive floats.

    Method
    ------
    ``χ²(m, A) = Σ_t w_t [c(t) − A f_t(m)]²`` with ``f_t(m) ∝ cosh(m (T/2 − t))`` is reduced to
    ``m`` alone (``A`` is linear; variable projection). The minimum of the projected ``χ²_p(m)``
    is located on a logarithmic grid ``m ∈ m_0 · [1/16, 16]`` around the two-point mass ``m_0``
    of ``c(t_min)/c(t_max)`` and refined to rounding accuracy as the root of
    ``Σ_t w_t [c(t) − A(m) f_t(m)] ∂_m f_t(m)`` (Brent). See the module docstring for why the
    fit is uncorrelated and how its error is obtained:

    ``gamma_method([H[..., t] for t in range(T)], f=lambda c: fit_cosh_mass(c, t_range,
    sigma=sigma).mass)`` for a history ``H[chain, time, T]``.

    Raises
    ------
    ValueError
        ``C`` not a finite real 1-D array with ``T ≥ 4``; a bad ``t_range`` or ``sigma``; a
        folded correlator that is not positive in the range; one that does not decrease from
        ``t_min`` to ``t_max`` (noise, or no signal); or no minimum of ``χ²`` within the scan
        (the data are not described by a single cosh).
    """
    c_full = _to_host(C, "correlator")
    if c_full.ndim != 1:
        raise ValueError(
            f"C must be the mean correlator of shape (T,), got shape {c_full.shape}; "
            "average the history first (or pass the primaries' means through gamma_method)"
        )
    T = c_full.shape[0]
    if T < 4:
        raise ValueError(f"the time extent T = {T} is too short for a cosh fit (T >= 4)")
    if not np.all(np.isfinite(c_full)):
        raise ValueError("the correlator contains NaN or infinite values")
    t_min, t_max = _check_range(t_range, T)
    c = fold_correlator(c_full)
    t = np.arange(t_min, t_max + 1)
    y = c[t]
    bad = np.flatnonzero(~(y > 0.0))
    if bad.size:
        raise ValueError(
            f"the folded correlator is not positive at t = {int(t[bad[0]])} "
            f"(c = {y[bad[0]]:.3g}): no cosh fit over t = {t_min} ... {t_max}; "
            "the signal is lost in the noise there, shorten the range"
        )
    if sigma is None:
        s_t = y
    else:
        s = _to_host(sigma, "sigma")
        if s.shape != (T // 2 + 1,):
            raise ValueError(
                f"sigma must hold the errors of the folded correlator, shape ({T // 2 + 1},), "
                f"got shape {s.shape}"
            )
        s_t = s[t]
        if not np.all(np.isfinite(s_t) & (s_t > 0.0)):
            raise ValueError(f"sigma must be positive and finite on t = {t_min} ... {t_max}")
    scale = float(y.max())
    y = y / scale
    w = (scale / s_t) ** 2
    w = w / w.max()

    if not y[0] > y[-1]:
        raise ValueError(
            f"the folded correlator does not decrease from t = {t_min} to t = {t_max} "
            f"(c = {y[0] * scale:.3g} vs {y[-1] * scale:.3g}): no positive mass"
        )
    half = 0.5 * T
    x = half - t                          # >= 0, largest at t_min
    m0 = _two_point_mass(float(y[0] / y[-1]), float(x[0]), float(x[-1]))

    def basis(m):
        """f_t(m) = cosh(m x_t) / cosh(m x_min) (≤ 1, no overflow) and ∂_m f_t."""
        m = np.asarray(m, dtype=np.float64)[..., None]
        f = np.exp(_log_cosh(m * x) - _log_cosh(m * x[0]))
        df = f * (x * np.tanh(m * x) - x[0] * np.tanh(m * x[0]))
        return f, df

    def chi2_p(m):
        f, _ = basis(m)
        return np.sum(w * y * y) - np.sum(w * y * f, axis=-1) ** 2 / np.sum(w * f * f, axis=-1)

    def g(m):
        f, df = basis(m)
        a = np.sum(w * y * f) / np.sum(w * f * f)
        return float(np.sum(w * (y - a * f) * df))

    grid = m0 * _GRID
    i = int(np.argmin(chi2_p(grid)))
    if i in (0, grid.size - 1):
        raise ValueError(
            f"no minimum of chi^2 for m in [{grid[0]:.3g}, {grid[-1]:.3g}] (two-point mass "
            f"{m0:.3g}) over t = {t_min} ... {t_max}: the correlator is not described by a "
            "single cosh there"
        )
    lo, hi = grid[i - 1], grid[i + 1]
    g_lo, g_mid, g_hi = g(lo), g(grid[i]), g(hi)
    if g_mid == 0.0:
        m = float(grid[i])
    else:
        if g_lo > 0.0 and g_mid < 0.0:
            hi = grid[i]
        elif g_mid > 0.0 and g_hi < 0.0:
            lo = grid[i]
        else:
            raise ValueError(
                f"the chi^2 minimum near m = {grid[i]:.3g} could not be bracketed "
                f"(g = {g_lo:.3g}, {g_mid:.3g}, {g_hi:.3g}): the fit is ill-conditioned"
            )
        m = brentq(g, lo, hi, xtol=1e-300, rtol=4 * np.finfo(np.float64).eps, maxiter=500)
    f, _ = basis(m)
    a_scaled = float(np.sum(w * y * f) / np.sum(w * f * f))
    # A_s f_t = C/scale with f_t = cosh(m x_t)/cosh(m x_min) and
    # C(t) = 2 A e^{-mT/2} cosh(m x_t)  =>  A = scale A_s e^{m t_min} / (1 + e^{-2 m x_min})
    amplitude = scale * a_scaled * math.exp(m * t_min) / (1.0 + math.exp(-2.0 * m * x[0]))
    if not (math.isfinite(amplitude) and amplitude > 0.0 and m > 0.0):
        raise ValueError(f"the fit gave m = {m:.3g}, A = {amplitude:.3g}: not a decaying cosh")
    return CoshFit(float(m), float(amplitude))


# --------------------------------------------------------------------------- the fit range


def _cosh_masses(a: np.ndarray) -> np.ndarray:
    """``m(t) = arccosh[(c(t−1) + c(t+1)) / (2 c(t))]`` for ``a = c(t_0 − 1) … c(t_1 + 1)``."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.arccosh((a[:-2] + a[2:]) / (2.0 * a[1:-1]))


def _plateau_deviation(a: np.ndarray) -> float:
    """``m(t) − mean(m(t+1), …, m(t_max))`` for ``a = c(t − 1) … c(t_max + 1)``."""
    m = _cosh_masses(a)
    return float(m[0] - m[1:].mean())


def choose_fit_range(history: Any, *, n_sigma: float = 1.0, min_points: int = 3,
                     min_snr: float = 2.0, rtol: float = 1e-10,
                     S: float = 1.5) -> tuple[int, int]:
    """Fit range ``(t_min, t_max)`` of :func:`fit_cosh_mass` from the effective-mass plateau.

    ``history`` is ``[chain, time, T]`` or ``[time, T]``. With the folded correlator ``c(t)``
    (``c(T/2 + k) = c(T/2 − k)``), its Γ-method errors ``σ_c(t)`` and the cosh effective mass
    ``m(t) = arccosh[(c(t−1) + c(t+1)) / (2 c(t))]``:

    1. ``t_max`` is the largest ``t ≤ T//2`` such that for every ``1 ≤ t' ≤ t`` the signal is
       significant, ``c(t') > min_snr · σ_c(t')``, and ``m(t')`` is defined (argument > 1).
    2. ``t_min`` is the first ``t ≥ 1`` (with ``t_max − t + 1 ≥ min_points``) where the
       effective mass has reached the plateau formed by the later times within its error:
       ``|d(t)| ≤ max(n_sigma · σ_d(t), rtol · m(t))`` with
       ``d(t) = m(t) − mean(m(t+1), …, m(t_max))`` and ``σ_d(t)`` its Γ-method error as a
       derived quantity of ``c(t−1) … c(t_max+1)`` (so the strong correlations between the
       effective masses and the autocorrelations enter). For a correlator with positive
       spectral weights (the pion) ``m(t)`` decreases to the ground-state mass, the
       excited-state contamination falling like ``e^{-Δ t}``; the fit starts where that
       contamination is no longer resolved by the statistics. ``rtol`` only matters for
       noise-free data (an exact cosh gives ``t_min = 1``).

    The rule is deterministic (no random numbers) and always gives
    ``1 ≤ t_min < t_max ≤ T//2``. The Γ-method warnings of the intermediate analyses are
    suppressed (they only steer the choice; the fit's own analysis reports them).

    Raises
    ------
    ValueError
        A history of the wrong rank, ``T < 4``, fewer than ``min_points`` significant points
        (``t_max < min_points``), or no plateau by ``t = t_max − min_points + 1`` (the time
        extent is too short for the excited states, or the statistics too high for it; pass a
        range by hand).
    """
    if min_points < 2:
        raise ValueError(f"min_points must be >= 2 (two fit parameters), got {min_points}")
    hs = _symmetrised_history(history)
    T = hs.shape[-1]
    th = T // 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", WindowWarning)
        mean = hs.reshape(-1, T).mean(axis=0)
        err = np.array([gamma_method(hs[..., t], S=S).error for t in range(th + 1)])
        m_eff = _cosh_masses(mean[np.arange(-1, th + 2) % T])        # m(0) … m(T//2 + 1)
        t_max = 0
        for t in range(1, th + 1):
            if not (mean[t] > 0.0 and mean[t] > min_snr * err[t] and np.isfinite(m_eff[t])):
                break
            t_max = t
        if t_max < min_points:
            raise ValueError(
                f"only t = 1 ... {t_max} of the folded correlator (T = {T}) carry a significant "
                f"signal with a defined effective mass; at least {min_points} points are needed"
            )
        for t in range(1, t_max - min_points + 2):
            prim = [hs[..., k % T] for k in range(t - 1, t_max + 2)]
            try:
                res = gamma_method(prim, f=_plateau_deviation, S=S)
            except ValueError:   # an effective mass undefined at a perturbed mean
                continue
            if abs(res.value) <= max(n_sigma * res.error, rtol * m_eff[t]):
                return t, t_max
    raise ValueError(
        f"no effective-mass plateau by t = {t_max - min_points + 1} (T = {T}, t_max = {t_max}): "
        "the excited states have not died out within the errors; choose the range by hand"
    )
