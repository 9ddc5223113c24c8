"""Effective sample size and reweighting with log-weights.

Weights are passed as log-weights ``l_i = log w_i`` (e.g. ``−S_target + S_sampled`` or
``log p − log q`` for a flow), of shape ``(N,)`` or ``(R, N)`` like the histories. Only ratios
of weights enter, so everything is computed with ``w_i = exp(l_i − max_j l_j) ≤ 1``: no
overflow, and the results are invariant under a constant shift of the log-weights.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lattice_ml.stats.gamma import GammaResult, _to_host, _check_history, gamma_method

__all__ = ["effective_sample_size", "reweight"]


def _log_weights(log_weights: Any, min_samples: int = 1) -> np.ndarray:
    lw = _to_host(log_weights, "log_weights")
    if lw.ndim not in (1, 2) or lw.shape[-1] < min_samples:
        raise ValueError(
            f"log_weights must have shape (N,) or (R, N) with N >= {min_samples}, got {lw.shape}"
        )
    if np.isnan(lw).any():
        first = tuple(int(i) for i in np.argwhere(np.isnan(lw))[0])
        raise ValueError(f"log_weights contain NaN (first at index {first})")
    if np.isposinf(lw).any():
        raise ValueError("log_weights contain +inf (an infinite weight)")
    if np.isneginf(lw).all():
        raise ValueError("all log_weights are -inf (every weight is zero)")
    return lw


def effective_sample_size(log_weights: Any, axis: int | None = None) -> float | np.ndarray:
    """Effective sample size per sample, ``(Σ_i w_i)² / (N Σ_i w_i²)``, a fraction in ``(0, 1]``.

    Equal weights give 1, a single non-zero weight gives ``1/N``. Computed from
    ``w_i = exp(l_i − max l)``; ``l_i = −inf`` (zero weight) is allowed.

    Parameters
    ----------
    log_weights : array
        ``(N,)`` or ``(R, N)`` log-weights.
    axis : int, optional
        ``None`` (default): one number over all samples; ``-1``: one per chain of an
        ``(R, N)`` array.
    """
    lw = _log_weights(log_weights)
    if axis is None:
        lw = lw.ravel()
        ax = 0
    else:
        ax = axis
        if np.isneginf(lw).all(axis=ax).any():
            raise ValueError("a chain has all log_weights -inf (every weight is zero)")
    w = np.exp(lw - lw.max(axis=ax, keepdims=True))
    n = lw.shape[ax]
    ess = w.sum(axis=ax) ** 2 / (n * (w**2).sum(axis=ax))
    return float(ess) if np.ndim(ess) == 0 else ess


def reweight(observable: Any, log_weights: Any, S: float = 1.5, **kwargs: Any) -> GammaResult:
    """Reweighted expectation ``⟨O⟩_target = ⟨O w⟩ / ⟨w⟩`` with its Γ-method error.

    The two primaries ``O_i w_i`` and ``w_i`` (``w_i = exp(l_i − max l)``) are analysed together
    by :func:`~lattice_ml.stats.gamma_method` with ``f(a) = a_0 / a_1`` and its exact gradient
    ``(1/a_1, −a_0/a_1²)``, so the autocorrelations of both and their correlation enter the
    error. The error is exactly invariant under a constant shift of the log-weights.

    Parameters
    ----------
    observable, log_weights : array
        Histories of one shape, ``(N,)`` or ``(R, N)``.
    S : float
        Windowing parameter of the Γ-method.
    **kwargs
        Passed on to :func:`~lattice_ml.stats.gamma_method` (``bias_correction``,
        ``convention``).
    """
    obs = _to_host(observable, "observable")
    lw = _log_weights(log_weights)
    if obs.shape != lw.shape:
        raise ValueError(
            f"observable and log_weights have mismatched shapes {obs.shape} and {lw.shape}"
        )
    _check_history(obs, "observable", 1)
    w = np.exp(lw - lw.max())
    return gamma_method(
        [obs * w, w],
        lambda a: a[0] / a[1],
        S,
        grad=lambda a: np.array([1.0 / a[1], -a[0] / a[1] ** 2]),
        **kwargs,
    )
