"""Jackknife, bootstrap and binning of Monte Carlo histories.

Histories have shape ``(N,)`` or ``(R, N)`` (chain axis first); several primary observables are
passed as a list of histories of one shape, combined by ``f(a)``, a function of the 1-D array
``a`` of primary means (the same convention as :func:`lattice_ml.stats.gamma_method`).

Blocks (bins) are formed inside each chain: with bin size ``b`` each chain contributes
``N // b`` consecutive blocks and its last ``N mod b`` samples are dropped. The blocks of all
chains are pooled (``K = R · (N // b)`` blocks in total).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from lattice_ml.stats.gamma import _to_host, _check_history, as_primaries, evaluate

__all__ = [
    "ResampleResult",
    "BinningAnalysis",
    "jackknife",
    "bootstrap",
    "binning",
    "binning_analysis",
]


@dataclass(frozen=True, eq=False)
class ResampleResult:
    """Result of :func:`jackknife` or :func:`bootstrap`.

    Attributes
    ----------
    value : float
        ``f`` of the means of all samples used.
    error : float
        Resampling estimate of the standard error of ``value``.
    bias : float
        Estimated bias of ``value`` (jackknife: ``(K−1)(f̄_jk − value)``; bootstrap:
        ``f̄_boot − value``); a bias-corrected estimate is ``value − bias``.
    samples : numpy.ndarray
        The ``K`` jackknife or ``n_boot`` bootstrap values of ``f`` (read-only).
    """

    value: float
    error: float
    bias: float
    samples: np.ndarray

    def to_dict(self) -> dict[str, float]:
        """``value``, ``error`` and ``bias`` as plain floats."""
        return {"value": float(self.value), "error": float(self.error), "bias": float(self.bias)}


@dataclass(frozen=True, eq=False)
class BinningAnalysis:
    """Naive standard error of block means against the bin size (:func:`binning_analysis`).

    All attributes are 1-D arrays of one length: ``bin_size``, ``error``,
    ``error_of_error`` (``error / sqrt(2 (K − 1))``) and ``n_blocks`` (``K``).
    """

    bin_size: np.ndarray
    error: np.ndarray
    error_of_error: np.ndarray
    n_blocks: np.ndarray


def _block_means(x: np.ndarray, bin_size: int) -> np.ndarray:
    """``(..., R, N)`` → ``(..., R, N // bin_size)`` block means (tail of each chain dropped)."""
    nb = x.shape[-1] // bin_size
    return x[..., : nb * bin_size].reshape(x.shape[:-1] + (nb, bin_size)).mean(axis=-1)


def _check_int(v: Any, name: str, lo: int, hi: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {v!r}")
    v = int(v)
    if v < lo or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be {rng}, got {v}")
    return v


def _apply(f: Callable | None, a: np.ndarray, vectorized: bool) -> np.ndarray:
    """``f`` on each column of ``a`` (shape ``(A, K)``) → ``(K,)``."""
    if f is None:
        return a[0].copy()
    if vectorized:
        out = np.asarray(f(a), dtype=np.float64)
        if out.shape != (a.shape[1],):
            raise ValueError(f"vectorized f must return shape ({a.shape[1]},), got {out.shape}")
        if not np.all(np.isfinite(out)):
            raise ValueError("f returned non-finite values on resampled means")
        return out
    return np.array([evaluate(f, a[:, k].copy()) for k in range(a.shape[1])])


def _prepare(x: np.ndarray, f: Callable | None, bin_size: int) -> tuple[np.ndarray, float]:
    """Pooled block means ``(A, K)`` of ``x`` (``(A, R, N)``) and ``f`` of their mean."""
    if x.shape[0] > 1 and f is None:
        raise ValueError(f"data holds {x.shape[0]} primary observables; pass f to combine them")
    n = x.shape[-1]
    bin_size = _check_int(bin_size, "bin_size", 1, n // 2)
    blocks = _block_means(x, bin_size).reshape(x.shape[0], -1)
    means = blocks.mean(axis=1)
    value = float(means[0]) if f is None else evaluate(f, means.copy())
    return blocks, value


def jackknife(
    data: Any,
    f: Callable[[np.ndarray], float] | None = None,
    n_bins: int | None = None,
    *,
    vectorized: bool = False,
) -> ResampleResult:
    """Jackknife estimate of ``f(ā)`` and its error.

    Each chain is cut into ``n_bins`` blocks of ``b = N // n_bins`` samples (default: ``n_bins
    = N``, the delete-one jackknife; the last ``N − n_bins · b`` samples of each chain are
    dropped); ``K = R · n_bins`` blocks are pooled. With ``ā_(k)`` the
    mean with block ``k`` left out and ``f_k = f(ā_(k))``,

    ``σ² = (K − 1)/K · Σ_k (f_k − f̄)²``, ``f̄ = Σ_k f_k / K``, ``bias = (K − 1)(f̄ − f(ā))``.

    For ``f`` = the mean and ``b = 1`` this is exactly the standard error ``s/sqrt(N)``.

    Parameters
    ----------
    data : array or sequence of arrays
        ``(N,)`` or ``(R, N)`` history, or a list of several primaries' histories.
    f : callable, optional
        ``f(a)`` of the 1-D array of primary means; the mean of the single primary if omitted.
    n_bins : int, optional
        Blocks per chain, ``2 ≤ n_bins ≤ N``.
    vectorized : bool
        If True, ``f`` is called once with an ``(A, K)`` array and returns ``(K,)``.
    """
    x, _ = as_primaries(data, min_samples=2)
    n = x.shape[-1]
    n_bins = n if n_bins is None else _check_int(n_bins, "n_bins", 2, n)
    b = n // n_bins
    blocks, value = _prepare(x[..., : n_bins * b], f, b)
    k = blocks.shape[1]
    loo = (blocks.sum(axis=1, keepdims=True) - blocks) / (k - 1)  # leave-one-block-out means
    fk = _apply(f, loo, vectorized)
    fbar = fk.mean()
    error = math.sqrt((k - 1) / k * np.sum((fk - fbar) ** 2))
    fk.setflags(write=False)
    return ResampleResult(value, error, (k - 1) * (fbar - value), fk)


def bootstrap(
    data: Any,
    f: Callable[[np.ndarray], float] | None = None,
    n_boot: int = 1000,
    seed: int | np.random.SeedSequence = 0,
    *,
    bin_size: int = 1,
    vectorized: bool = False,
) -> ResampleResult:
    """Bootstrap estimate of the error of ``f(ā)``, reproducible from ``seed``.

    The ``K`` pooled blocks (bin size ``bin_size``; 1 = single samples) are drawn ``K`` times
    with replacement, ``n_boot`` times, with ``numpy.random.default_rng(seed)``;
    ``f_b = f(mean of the drawn block means)``, ``σ² = Σ_b (f_b − f̄)² / (n_boot − 1)``,
    ``bias = f̄ − f(ā)``. The same ``seed`` gives identical results.

    Parameters
    ----------
    data : array or sequence of arrays
        ``(N,)`` or ``(R, N)`` history, or a list of several primaries' histories.
    f : callable, optional
        ``f(a)`` of the 1-D array of primary means; the mean if omitted.
    n_boot : int
        Number of bootstrap samples (≥ 2).
    seed : int or numpy.random.SeedSequence
        Seed of the NumPy ``Generator``.
    bin_size : int
        Block length inside each chain (use ``b ≫ τ_int`` for autocorrelated data).
    vectorized : bool
        If True, ``f`` is called with an ``(A, n_boot)`` array and returns ``(n_boot,)``.
    """
    n_boot = _check_int(n_boot, "n_boot", 2)
    x, _ = as_primaries(data, min_samples=2)
    blocks, value = _prepare(x, f, bin_size)
    a, k = blocks.shape
    rng = np.random.default_rng(seed)
    boot_means = np.empty((a, n_boot))
    chunk = max(1, 4_000_000 // k)
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, k, size=(stop - start, k))
        boot_means[:, start:stop] = blocks[:, idx].mean(axis=-1)
    fb = _apply(f, boot_means, vectorized)
    error = float(np.std(fb, ddof=1))
    fb.setflags(write=False)
    return ResampleResult(value, error, float(fb.mean() - value), fb)


def binning(data: Any, bin_size: int) -> np.ndarray:
    """Block means of a history: ``(N,) → (N // b,)``, ``(R, N) → (R, N // b)``.

    ``B_k = (1/b) Σ_{i=kb}^{kb+b−1} a(i)`` inside each chain; the last ``N mod b`` samples of
    each chain are dropped.
    """
    arr = _to_host(data, "data")
    _check_history(arr, "data", 1)
    b = _check_int(bin_size, "bin_size", 1, arr.shape[-1])
    return _block_means(arr, b)


def binning_analysis(data: Any, bin_sizes: Sequence[int] | None = None) -> BinningAnalysis:
    """Naive error of the mean from block means, as a function of the bin size.

    For each ``b``: ``K`` pooled block means ``B_k``,
    ``σ_b² = Σ_k (B_k − B̄)² / (K (K − 1))`` and ``δσ_b = σ_b / sqrt(2 (K − 1))``.
    For ``b ≫ τ_int``, ``σ_b`` reaches a plateau at the true error ``σ sqrt(2 τ_int / N)``;
    it approaches from below with a deficit O(τ_int/b).

    Parameters
    ----------
    data : array
        ``(N,)`` or ``(R, N)`` history.
    bin_sizes : sequence of int, optional
        Default: 1, 2, 4, … while there are at least 32 blocks in total.
    """
    arr = _to_host(data, "data")
    _check_history(arr, "data", 4)
    x = arr.reshape(-1, arr.shape[-1])
    r, n = x.shape
    if bin_sizes is None:
        bin_sizes = [2**j for j in range(int(math.log2(n)) + 1) if r * (n // 2**j) >= 32]
        bin_sizes = bin_sizes or [1]
    sizes = np.array([_check_int(b, "bin size", 1, n // 2) for b in bin_sizes], dtype=np.int64)
    err = np.empty(sizes.shape)
    kk = np.empty(sizes.shape, dtype=np.int64)
    for j, b in enumerate(sizes):
        blocks = _block_means(x, int(b)).ravel()
        k = blocks.size
        dev = blocks - blocks.mean() if np.ptp(x) > 0 else np.zeros(k)  # constant: exactly 0
        err[j] = math.sqrt(np.sum(dev**2) / (k * (k - 1)))
        kk[j] = k
    return BinningAnalysis(sizes, err, err / np.sqrt(2.0 * (kk - 1)), kk)
