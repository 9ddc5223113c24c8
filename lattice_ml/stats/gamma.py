"""Wolff's Γ-method: errors and integrated autocorrelation times of Monte Carlo averages.

Reference: U. Wolff, "Monte Carlo errors with less errors", Comput. Phys. Commun. 156 (2004)
143, hep-lat/0306017 (equation numbers below refer to it).

Layouts
-------
A history is ``(N,)`` (one chain) or ``(R, N)`` (``R`` replicas/chains of equal length ``N``,
chain axis first like the library's batch axis; the chains of a batched run are replicas).
Several primary observables are passed as a sequence of histories of one common shape.
Inputs may be any array (NumPy, CuPy, array-API); everything is computed on the host in
float64 with NumPy.

Formulas
--------
With primaries ``a_α`` (samples ``a_α^{r}(i)``), global means ``ā_α`` over all ``N_tot = R N``
samples and a derived quantity ``F = f(ā)``:

* projected fluctuations (eq. (24)-(26)) ``δ_F^r(i) = Σ_α f_α (a_α^r(i) − ā_α)`` with the
  gradient ``f_α = ∂f/∂a_α`` at ``ā`` (by finite differences unless given);
* autocorrelation with the replica formula (eq. (31))
  ``Γ(t) = Σ_r Σ_{i=1}^{N−t} δ^r(i) δ^r(i+t) / Σ_r (N − t)``, computed by FFT, ``t < N/2``;
* ``ρ(t) = Γ(t)/Γ(0)``, ``τ_int(W) = 1/2 + Σ_{t=1}^{W} ρ(t)``, ``C_F(W) = 2 τ_int(W) Γ(0)``;
* automatic window (eq. (50)-(52)): ``τ(W) = S / ln((2τ_int(W)+1)/(2τ_int(W)−1))``
  (``τ(W) → 0`` when ``τ_int(W) ≤ 1/2``), ``g(W) = exp(−W/τ) − τ/sqrt(W N_tot)``, and ``W`` is
  the first ``W ≥ 1`` with ``g(W) < 0``;
* bias correction (eq. (49)): ``Γ(t) → Γ(t) + C_F(W)/N_tot``, so that
  ``C_F → C_F (1 + (2W+1)/N_tot)``;
* ``σ_F² = C_F(W)/N_tot``, ``δσ_F = σ_F sqrt((W + 1/2)/N_tot)`` (eq. (44)),
  ``δτ_int² ≈ 4/N_tot (W + 1/2 − τ_int) τ_int²`` (eq. (42)).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from lattice_ml.backend import to_numpy

__all__ = ["GammaResult", "WindowWarning", "gamma_method", "tau_int"]

MIN_SAMPLES = 5
"""Smallest number of samples per replica accepted by the Γ-method (as in pyerrors)."""

_CONVENTIONS = ("wolff", "pyerrors")


class WindowWarning(RuntimeWarning):
    """The automatic window reached its largest value ``W = N//2 − 1`` (``N`` per replica)."""


@dataclass(frozen=True, eq=False)
class GammaResult:
    """Result of :func:`gamma_method`.

    Attributes
    ----------
    value : float
        ``F = f(ā)`` (the mean for a single primary without ``f``).
    error : float
        ``σ_F = sqrt(C_F(W)/N_tot)``.
    error_of_error : float
        ``σ_F sqrt((W + 1/2)/N_tot)``.
    tau_int : float
        Integrated autocorrelation time at the chosen window (``1/2`` for uncorrelated data).
    tau_int_error : float
        ``2 τ_int sqrt((W + 1/2 − τ_int)/N_tot)``, Wolff eq. (42).
    window : int
        The summation window ``W`` (0 for a constant history or ``S = 0``).
    n : int
        Total number of samples ``N_tot = R N``.
    rho : numpy.ndarray
        Normalised autocorrelation ``ρ(t)``, ``t = 0 … N//2 − 1`` (read-only).
    """

    value: float
    error: float
    error_of_error: float
    tau_int: float
    tau_int_error: float
    window: int
    n: int
    rho: np.ndarray

    def to_dict(self, include_rho: bool = False) -> dict[str, Any]:
        """Plain Python numbers (JSON-serialisable); ``rho`` as a list only if asked."""
        d: dict[str, Any] = {
            "value": float(self.value),
            "error": float(self.error),
            "error_of_error": float(self.error_of_error),
            "tau_int": float(self.tau_int),
            "tau_int_error": float(self.tau_int_error),
            "window": int(self.window),
            "n": int(self.n),
        }
        if include_rho:
            d["rho"] = [float(r) for r in self.rho]
        return d


# --------------------------------------------------------------------------- input handling


def _ndim(x: Any) -> int:
    nd = getattr(x, "ndim", None)
    return int(nd) if nd is not None else int(np.ndim(x))


def _to_host(x: Any, what: str) -> np.ndarray:
    """``x`` as a float64 NumPy array; ValueError for complex or non-numeric data."""
    if isinstance(x, (list, tuple)):
        arr = np.asarray(x)
    else:
        try:
            arr = np.asarray(to_numpy(x))
        except Exception:  # objects without DLPack (e.g. nested lists inside other types)
            arr = np.asarray(x)
    if np.iscomplexobj(arr):
        raise ValueError(f"{what} is complex; pass real and imaginary parts as separate primaries")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{what} has non-numeric dtype {arr.dtype}")
    return np.asarray(arr, dtype=np.float64)


def _is_multi(data: Any) -> bool:
    """True when ``data`` is a sequence of several histories (not one history as a list)."""
    return isinstance(data, (list, tuple)) and len(data) > 0 and all(_ndim(e) >= 1 for e in data)


def _check_history(arr: np.ndarray, what: str, min_samples: int) -> None:
    if arr.ndim not in (1, 2):
        raise ValueError(
            f"{what} must have shape (N,) or (R, N) (replica axis first), got shape {arr.shape}; "
            "pass several primary observables as a list of histories"
        )
    n = arr.shape[-1]
    if arr.size == 0 or n < min_samples:
        raise ValueError(
            f"{what} is too short: {n} samples per replica, at least {min_samples} needed"
        )
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        kind = "NaN" if np.isnan(arr[idx]) else "infinite"
        raise ValueError(f"{what} contains {kind} values (first at index {idx})")


def as_primaries(data: Any, min_samples: int = MIN_SAMPLES) -> tuple[np.ndarray, bool]:
    """Validated histories as a float64 array of shape ``(A, R, N)``.

    Returns the array and whether ``data`` was a sequence of several primaries.
    Raises ``ValueError`` for NaN/inf, too few samples, wrong rank or mismatched shapes.
    """
    multi = _is_multi(data)
    items = list(data) if multi else [data]
    arrs = []
    for k, item in enumerate(items):
        what = f"primary observable {k}" if multi else "data"
        arr = _to_host(item, what)
        _check_history(arr, what, min_samples)
        arrs.append(arr)
    shapes = {a.shape for a in arrs}
    if len(shapes) > 1:
        raise ValueError(
            "primary observables have mismatched shapes "
            + ", ".join(str(a.shape) for a in arrs)
            + "; all histories must have the same (N,) or (R, N) shape"
        )
    x = np.stack([a.reshape((-1, a.shape[-1])) for a in arrs])
    return x, multi


def evaluate(f: Callable, a: np.ndarray) -> float:
    """``f(a)`` as a finite float (ValueError otherwise)."""
    out = np.asarray(f(a), dtype=np.float64)
    if out.size != 1:
        raise ValueError(f"f must return a scalar, got shape {out.shape}")
    val = float(out.reshape(()))
    if not math.isfinite(val):
        raise ValueError(f"f returned a non-finite value {val} at the primary means {a}")
    return val


def numerical_gradient(f: Callable, a: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Gradient of ``f`` at ``a`` by central differences with one Richardson step.

    ``D(h) = (f(a + h e_α) − f(a − h e_α)) / 2h``, ``∂_α f ≈ (4 D(h/2) − D(h)) / 3``
    (truncation error O(h⁴)). Components with ``h_α = 0`` (non-fluctuating primaries) get 0.
    """
    g = np.zeros(a.shape[0])
    for al in range(a.shape[0]):
        if h[al] == 0.0:
            continue

        def d(step: float) -> float:
            ap, am = a.copy(), a.copy()
            ap[al] += step
            am[al] -= step
            return (evaluate(f, ap) - evaluate(f, am)) / (2.0 * step)

        g[al] = (4.0 * d(h[al] / 2.0) - d(h[al])) / 3.0
    return g


def _fast_len(n: int) -> int:
    """Smallest 2-3-5-smooth integer ≥ n (an efficient FFT length)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def autocovariance(deltas: np.ndarray, w_max: int) -> np.ndarray:
    """Γ(t), ``t = 0 … w_max−1``, of fluctuations ``deltas`` (shape ``(R, N)``) by FFT.

    ``Γ(t) = Σ_r Σ_{i<N−t} δ^r(i) δ^r(i+t) / (R (N − t))`` (Wolff's replica formula).
    """
    r, n = deltas.shape
    length = _fast_len(n + w_max)
    ft = np.fft.rfft(deltas, n=length, axis=-1)
    corr = np.fft.irfft(ft.real**2 + ft.imag**2, n=length, axis=-1)[:, :w_max].sum(axis=0)
    return corr / (r * (n - np.arange(w_max)))


# --------------------------------------------------------------------------- the Γ-method


def _window(tau_w: np.ndarray, S: float, n_tot: int) -> int:
    """First ``W ≥ 1`` with ``g(W) < 0``, else ``w_max − 1`` (as pyerrors).

    With one replica ``g`` always turns negative before ``W = N/2`` (``exp(−W/τ) < τ/sqrt(W N)``
    there for every ``τ > 0``); with many short replicas (``N_tot ≫ N``) it may not.
    """
    w_max = tau_w.shape[0]
    ws = np.arange(1, w_max)
    t = tau_w[1:]
    ok = t > 0.5
    tau = np.zeros_like(t)
    tau[ok] = S / np.log((2.0 * t[ok] + 1.0) / (2.0 * t[ok] - 1.0))
    g = np.full(t.shape, -1.0)  # τ_int ≤ 1/2: τ(W) → 0, g < 0 (the window is taken)
    g[ok] = np.exp(-ws[ok] / tau[ok]) - tau[ok] / np.sqrt(ws[ok] * float(n_tot))
    hit = np.flatnonzero(g < 0.0)
    return int(ws[hit[0]]) if hit.size else w_max - 1


def gamma_method(
    data: Any,
    f: Callable[[np.ndarray], float] | None = None,
    S: float = 1.5,
    *,
    grad: Callable[[np.ndarray], Sequence[float]] | None = None,
    bias_correction: bool = True,
    convention: str = "wolff",
    pathological: str = "naive",
) -> GammaResult:
    """Mean (or derived quantity), its error and ``τ_int`` by Wolff's Γ-method.

    Parameters
    ----------
    data : array or sequence of arrays
        One history, shape ``(N,)`` or ``(R, N)`` (``R`` replicas, chain axis first), or a list
        of several primary observables' histories, all of the same shape. A list or tuple whose
        elements are arrays (or lists) is always read as several primaries: pass an ``(R, N)``
        history as one array.
    f : callable, optional
        ``f(a) -> float`` of the 1-D array ``a`` of primary means (``a[0], a[1], …``); the
        result is ``F = f(ā)`` with the error from the projected fluctuations
        ``δ_F = Σ_α ∂_α f · δ_α``. Required for several primaries; without it a single
        history's mean is analysed.
    S : float
        Windowing parameter (default 1.5, Wolff's recommendation; pyerrors uses 2.0).
        ``τ(W) = S / ln((2τ_int(W)+1)/(2τ_int(W)−1))``, ``g(W) = exp(−W/τ) − τ/sqrt(W N_tot)``,
        the window is the first ``W ≥ 1`` with ``g(W) < 0``. ``S = 0`` assumes no
        autocorrelation (``W = 0``, ``τ_int = 1/2``).
    grad : callable, optional
        ``grad(a)`` returning ``∂f/∂a_α`` at ``a``. By default the gradient is taken by central
        differences with steps ``h_α = σ_α / (2 sqrt(N_tot))`` (half the naive error of primary
        α, as in Wolff's UWerr) and one Richardson extrapolation (error O(h⁴)).
    bias_correction : bool
        Apply Wolff's eq. (49) ``Γ(t) → Γ(t) + C_F(W)/N_tot`` (default True), which removes the
        leading O(τ/N) bias of ``C_F``, i.e. ``C_F → C_F (1 + (2W+1)/N_tot)``.
    pathological : {"naive", "raise"}
        What the "wolff" convention does when ``C_F(W) ≤ 0`` (a strongly anticorrelated history,
        ρ(1) ≤ −1/2): ``"naive"`` (default) warns (:class:`WindowWarning`) and reports the
        naive error with ``W = 0``, ``τ_int = 1/2``, an upper bound for anticorrelated data, so a
        long run's summary is not lost; ``"raise"`` raises ``ValueError`` as Wolff's UWerr does.
    convention : {"wolff", "pyerrors"}
        ``"wolff"`` (default): fluctuations about the global mean (Wolff's replica formula);
        the bias correction is applied to Γ itself, so ``τ_int = C_F'/(2Γ'(0))`` and ``ρ`` are
        the corrected ones; ``δτ_int`` uses this ``τ_int``; a non-positive ``C_F`` raises
        ``ValueError`` or falls back (see ``pathological``). ``"pyerrors"`` reproduces ``pyerrors.Obs.gamma_method`` exactly:
        fluctuations about each replica's own mean, ``τ_int(W)`` clipped to ``≥ 1/2 + ε``,
        ``τ_int = τ_int(W) (1 + (2W+1)/N_tot)/(1 + 1/N_tot)``,
        ``σ_F² = 2 τ_int Γ(0) (1 + 1/N_tot)/N_tot``, ``δτ_int`` from the uncorrected
        ``τ_int(W)``, and ``σ_F² = Γ(0)/(N_tot − 1)`` for ``S = 0``. For one replica both
        conventions give the same ``W`` and ``σ_F``; ``τ_int`` differs by a factor
        ``(1 + 1/N_tot)/(1 + 2τ_int(W)/N_tot)``.

    Returns
    -------
    GammaResult
        ``value``, ``error``, ``error_of_error``, ``tau_int``, ``tau_int_error``, ``window``,
        ``n`` and ``rho``. A constant history gives error 0, ``τ_int = 1/2``, window 0.

    Raises
    ------
    ValueError
        NaN or infinite samples, fewer than 5 samples per replica, histories that are not
        ``(N,)``/``(R, N)`` or of mismatched shapes, several primaries without ``f``, an ``f``
        that is not finite, ``S < 0``, an unknown convention, or (convention "wolff") a
        pathological ``C_F(W) ≤ 0`` (strongly anticorrelated history).
    """
    if convention not in _CONVENTIONS:
        raise ValueError(f"convention must be one of {_CONVENTIONS}, not {convention!r}")
    if pathological not in ("naive", "raise"):
        raise ValueError(f"pathological must be 'naive' or 'raise', not {pathological!r}")
    if not (isinstance(S, (int, float, np.floating, np.integer)) and math.isfinite(S) and S >= 0):
        raise ValueError(f"S must be a finite number >= 0, got {S!r}")
    x, _ = as_primaries(data)
    n_prim, n_rep, n = x.shape
    n_tot = n_rep * n
    if n_prim > 1 and f is None:
        raise ValueError(
            f"data holds {n_prim} primary observables; pass f (a function of their means) "
            "or analyse them one by one"
        )

    means = x.mean(axis=(1, 2))
    constant = np.ptp(x.reshape(n_prim, -1), axis=1) == 0.0
    if convention == "wolff":
        deltas = x - means[:, None, None]
    else:
        deltas = x - x.mean(axis=2, keepdims=True)
    deltas[constant] = 0.0  # exactly constant primaries do not fluctuate (no rounding noise)

    if f is None:
        value = float(means[0])
        d_f = deltas[0]
    else:
        value = evaluate(f, means.copy())
        if grad is not None:
            g = np.asarray(grad(means.copy()), dtype=np.float64).reshape(-1)
            if g.shape != (n_prim,) or not np.all(np.isfinite(g)):
                raise ValueError(
                    f"grad must return {n_prim} finite numbers, got {np.asarray(grad(means))!r}"
                )
        else:
            h = np.sqrt(np.mean(deltas**2, axis=(1, 2)) / n_tot) / 2.0
            g = numerical_gradient(f, means.copy(), h)
        d_f = np.tensordot(g, deltas, axes=1)

    w_max = n // 2
    gamma = autocovariance(d_f, w_max)
    if not np.any(d_f) or gamma[0] <= 10.0 * np.finfo(np.float64).tiny:
        rho = np.zeros(w_max)
        rho[0] = 1.0
        rho.setflags(write=False)
        return GammaResult(value, 0.0, 0.0, 0.5, 0.0, 0, n_tot, rho)

    rho = gamma / gamma[0]
    tau_w = np.concatenate(([0.5], 0.5 + np.cumsum(rho[1:])))
    if convention == "pyerrors":
        tau_w[tau_w <= 0.5] = 0.5 + np.finfo(np.float64).eps

    if S == 0:
        window = 0
    else:
        window = _window(tau_w, float(S), n_tot)
        if window >= w_max - 1:
            warnings.warn(
                f"the automatic window reached its largest value W = N//2 - 1 = {window} "
                f"({n} samples per replica): the chains are too short for their "
                "autocorrelation, tau_int and the error are underestimated",
                WindowWarning,
                stacklevel=2,
            )

    tw = float(tau_w[window])
    if convention == "pyerrors":
        rho_out = rho
        if S == 0:
            tau, dtau = 0.5, 0.0
            error = math.sqrt(gamma[0] / (n_tot - 1))
        else:
            tau = tw * (1 + (2 * window + 1) / n_tot) / (1 + 1 / n_tot) if bias_correction else tw
            dtau = 0.0 if window == 0 else 2.0 * tw * math.sqrt(abs(window + 0.5 - tw) / n_tot)
            c_f = 2.0 * tau * gamma[0] * ((1 + 1 / n_tot) if bias_correction else 1.0)
            error = math.sqrt(c_f / n_tot)
    else:
        c_f = 2.0 * tw * gamma[0]
        if bias_correction:
            gamma = gamma + c_f / n_tot
            c_f = gamma[0] + 2.0 * gamma[1 : window + 1].sum()
        if not c_f > 0.0:
            message = (f"Γ pathological: estimated C_F(W={window}) = {c_f:.3g} <= 0 "
                       "(strongly anticorrelated history); the Γ-method error is undefined")
            if pathological == "raise":
                raise ValueError(message)
            warnings.warn(message + "; reporting the naive error (W = 0, tau_int = 1/2), an "
                          "upper bound for anticorrelated data", WindowWarning, stacklevel=2)
            window = 0
            gamma = autocovariance(d_f, w_max)
            c_f = gamma[0] * ((1 + 1 / n_tot) if bias_correction else 1.0)
            if bias_correction:
                gamma = gamma + c_f / n_tot
        rho_out = gamma / gamma[0]
        tau = c_f / (2.0 * gamma[0])
        error = math.sqrt(c_f / n_tot)
        dtau = 2.0 * tau * math.sqrt(abs(window + 0.5 - tau) / n_tot)

    rho_out = np.array(rho_out)
    rho_out.setflags(write=False)
    eoe = error * math.sqrt((window + 0.5) / n_tot)
    return GammaResult(value, error, eoe, float(tau), float(dtau), int(window), n_tot, rho_out)


def tau_int(data: Any, S: float = 1.5, **kwargs: Any) -> tuple[float, float]:
    """``(τ_int, δτ_int)`` of a history by :func:`gamma_method` (same arguments)."""
    res = gamma_method(data, S=S, **kwargs)
    return res.tau_int, res.tau_int_error
