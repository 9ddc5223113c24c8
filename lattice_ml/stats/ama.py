"""All-mode averaging (AMA): bias-corrected approximate measurements with Γ-method errors.

Reference: T. Blum, T. Izubuchi, E. Shintani, PRD 88 (2013) 094503, arXiv:1208.4349; with a
trained regression as the approximation: B. Yoon, T. Bhattacharya, R. Gupta, PRD 100 (2019)
014504, arXiv:1807.05971.

The estimator
-------------
An approximation ``O_a`` of an observable ``O`` (a sloppy solve, a regression from cheap
observables) is measured on every configuration, ``O`` itself only on every ``every``-th one
(offset ``offset``). With the approximation fixed independently of the configurations of the
subset,

    <O>_AMA = <O_a>_all + <O - O_a>_subset

is unbiased whatever the quality of ``O_a``: the second term removes its bias. Its variance has
three parts, ``Var <O_a>_all + Var <O - O_a>_subset + 2 Cov``; the covariance is not small (the
two terms are measured on the same chains, the correction on configurations that are also in the
first average), and it can have either sign.

Its error by the Γ-method
-------------------------
The chains are cut into blocks of ``every`` consecutive measurements, block ``j`` holding the
``j``-th subset measurement (at position ``offset`` inside it). Two primaries per block,

    A_j = (1/every) sum_{i in block j} O_a(i),        C_j = (O - O_a)(offset + j every),

have the same shape ``(R, n_blocks)``, and ``<O>_AMA = mean(A) + mean(C)`` exactly (on the
measurements of the complete blocks). The combination is a derived quantity of the two primaries
on the same chains, so :func:`lattice_ml.stats.gamma_method` with ``f(a) = a_0 + a_1`` projects
the fluctuations ``delta_F(j) = delta A_j + delta C_j`` per block and sums their autocorrelation
function: the cross-correlation of the two terms, at every lag, is in the error. Working in blocks
of the subset spacing keeps ``delta_F`` stationary: on the full time axis the correction would be
a comb of spikes every ``every`` measurements, whose autocorrelation the automatic window would
cut off after its first (empty) lags.

Measurements in an incomplete last block are not used (at most ``every - 1`` per chain, reported
as ``n_dropped``). The separate analyses of the two terms (``approx``, ``correction``) and the
error one would quote by adding them in quadrature (``error_uncorrelated``) are reported beside
the result; ``correlation`` is the correlation coefficient of the two means implied by the three
variances.

A trained approximation
-----------------------
:func:`ama_regression` fits a ridge regression ``O ≈ X c`` (:class:`RidgeRegression`) on the
first ``n_train`` subset measurements of every chain and applies AMA to the remaining blocks
only: the training configurations enter neither term, so the approximation is fixed with respect
to the configurations it is averaged over (up to the autocorrelation across the boundary between
the training stretch and the rest, which is as small as a thermalisation cut of the same length
makes it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .gamma import GammaResult, _to_host, gamma_method

__all__ = ["AMAResult", "ama", "RidgeRegression", "ama_regression"]


@dataclass(frozen=True, eq=False)
class AMAResult:
    """Result of :func:`ama`.

    Attributes
    ----------
    value, error : float
        ``<O_a>_all + <O - O_a>_subset`` and its Γ-method error (cross-correlation included).
    tau_int, tau_int_error, window : float, float, int
        Of the combined fluctuation ``delta A + delta C``, in units of blocks (``every``
        measurements).
    combined : GammaResult
        The full Γ-method result of the combination.
    approx : GammaResult
        ``<O_a>`` over all used measurements (from the block means ``A``).
    correction : GammaResult
        ``<O - O_a>`` over the subset.
    exact : GammaResult or None
        ``<O>`` from the subset alone (the estimate without the approximation), when the exact
        values were given.
    error_uncorrelated : float
        ``sqrt(sigma_approx^2 + sigma_correction^2)``: the error that ignoring the correlation of
        the two terms would give.
    correlation : float
        ``(sigma^2 - sigma_approx^2 - sigma_correction^2) / (2 sigma_approx sigma_correction)``
        (NaN when a term does not fluctuate).
    every, offset, n_blocks, n_all, n_subset, n_dropped : int
        Subset spacing and position, blocks per chain, measurements used in the first term (all
        chains), in the second, and per-chain measurements left out (an incomplete last block).
    extra : dict
        JSON-ready facts of the approximation (:func:`ama_regression`: training size, residuals).
    model : object or None
        The trained approximation (:func:`ama_regression`: the :class:`RidgeRegression`).
    """

    value: float
    error: float
    tau_int: float
    tau_int_error: float
    window: int
    combined: GammaResult
    approx: GammaResult
    correction: GammaResult
    exact: GammaResult | None
    error_uncorrelated: float
    correlation: float
    every: int
    offset: int
    n_blocks: int
    n_all: int
    n_subset: int
    n_dropped: int
    extra: dict = field(default_factory=dict)
    model: Any = None

    def to_dict(self) -> dict[str, Any]:
        """Plain Python numbers (JSON-serialisable); the parts as nested entries."""
        d: dict[str, Any] = {
            "value": float(self.value), "error": float(self.error),
            "error_of_error": float(self.combined.error_of_error),
            "tau_int": float(self.tau_int), "tau_int_error": float(self.tau_int_error),
            "window": int(self.window),
            "error_uncorrelated": float(self.error_uncorrelated),
            "correlation": float(self.correlation),
            "approx": {"value": float(self.approx.value), "error": float(self.approx.error)},
            "correction": {"value": float(self.correction.value),
                           "error": float(self.correction.error)},
            "every": int(self.every), "offset": int(self.offset),
            "n_blocks": int(self.n_blocks), "n_all": int(self.n_all),
            "n_subset": int(self.n_subset), "n_dropped": int(self.n_dropped),
        }
        if self.exact is not None:
            d["exact"] = {"value": float(self.exact.value), "error": float(self.exact.error)}
        d.update(self.extra)
        return d


def _as_chains(x: Any, what: str) -> np.ndarray:
    arr = _to_host(x, what)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"{what} must have shape (N,) or (R, N) (chains first), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} contains NaN or infinite values")
    return arr


def ama(approx, exact=None, *, every: int, offset: int = 0, approx_subset=None,
        correction=None, S: float = 1.5) -> AMAResult:
    """``<O>_AMA = <O_a>_all + <O - O_a>_subset`` with its Γ-method error (module docstring).

    Parameters
    ----------
    approx : array ``(N,)`` or ``(R, N)``
        The approximation ``O_a`` at every measurement of ``R`` chains.
    exact : array ``(n,)`` or ``(R, n)``, optional
        The exact ``O`` at measurements ``offset, offset + every, ...`` of every chain (the
        subset, in order). Give ``exact`` or ``correction``.
    every : int
        Spacing of the subset (``>= 1``); the blocks of the analysis have this length.
    offset : int
        Position of the first subset measurement (``0 <= offset < every``).
    approx_subset : array like ``exact``, optional
        ``O_a`` at the subset measurements (default ``approx[:, offset::every]``). Pass it when
        the approximation at the subset was recorded on its own axis (e.g. binned histories).
    correction : array like ``exact``, optional
        ``O - O_a`` on the subset, instead of ``exact`` (then ``exact`` is not reported).
    S : float
        The Γ-method's window parameter.

    Returns
    -------
    AMAResult

    Raises
    ------
    ValueError
        Bad spacing/offset, mismatched chains, NaN/inf, or fewer than 5 complete blocks per chain
        (the Γ-method's minimum).
    """
    if not (isinstance(every, (int, np.integer)) and every >= 1):
        raise ValueError(f"every must be an integer >= 1, got {every!r}")
    if not (isinstance(offset, (int, np.integer)) and 0 <= offset < every):
        raise ValueError(f"offset must be an integer in [0, every) = [0, {every}), got {offset!r}")
    if (exact is None) == (correction is None):
        raise ValueError("give exactly one of exact (O on the subset) and correction (O - O_a)")
    a = _as_chains(approx, "approx")
    R, N = a.shape
    n_full = (N - offset + every - 1) // every   # subset points inside the history
    sub = _as_chains(exact if exact is not None else correction,
                     "exact" if exact is not None else "correction")
    if sub.shape[0] != R:
        raise ValueError(f"the subset history has {sub.shape[0]} chains, approx has {R}")
    if approx_subset is None:
        a_sub = a[:, offset::every]
    else:
        a_sub = _as_chains(approx_subset, "approx_subset")
        if a_sub.shape != sub.shape:
            raise ValueError(f"approx_subset has shape {a_sub.shape}, the subset history "
                             f"{sub.shape}")
    n_blocks = min(N // every, sub.shape[1], a_sub.shape[1])
    if sub.shape[1] > n_full:
        raise ValueError(f"the subset history has {sub.shape[1]} entries per chain, more than "
                         f"the {n_full} measurements offset + k every of the {N} in approx")
    if n_blocks < 5:
        raise ValueError(f"{n_blocks} complete blocks of every = {every} measurements per chain "
                         "(each with its subset measurement); the Γ-method needs at least 5")
    A = a[:, :n_blocks * every].reshape(R, n_blocks, every).mean(axis=2)
    if exact is not None:
        C = sub[:, :n_blocks] - a_sub[:, :n_blocks]
    else:
        C = sub[:, :n_blocks]
    one = lambda m: float(m[0] + m[1])  # noqa: E731
    comb = gamma_method([A, C], f=one, grad=lambda m: [1.0, 1.0], S=S)
    res_a = gamma_method(A, S=S)
    res_c = gamma_method(C, S=S)
    res_e = gamma_method(sub[:, :n_blocks], S=S) if exact is not None else None
    unc = math.hypot(res_a.error, res_c.error)
    if res_a.error > 0 and res_c.error > 0:
        corr = (comb.error**2 - res_a.error**2 - res_c.error**2) / (2 * res_a.error * res_c.error)
    else:
        corr = float("nan")
    return AMAResult(comb.value, comb.error, comb.tau_int, comb.tau_int_error, comb.window,
                     comb, res_a, res_c, res_e, unc, float(corr), int(every), int(offset),
                     int(n_blocks), int(R * n_blocks * every), int(R * n_blocks),
                     int(N - n_blocks * every))


# ------------------------------------------------------------------------------------------
# a trained approximation
# ------------------------------------------------------------------------------------------
class RidgeRegression:
    """Linear least squares with a ridge penalty, ``y ≈ c_0 + sum_k c_k x_k`` (NumPy).

    The features are standardised on the training data (mean 0, standard deviation 1; constant
    features are dropped from the penalty's scale) and the intercept is not penalised:
    ``min_c |y - c_0 - Z c|^2 + alpha |c|^2`` with ``Z`` the standardised features.
    """

    def __init__(self, alpha: float = 1e-6):
        if not (math.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
        self.alpha = float(alpha)
        self.coef_: np.ndarray | None = None
        self.intercept_: float | None = None

    def fit(self, X, y) -> "RidgeRegression":
        """Fit on features ``X`` ``(n, k)`` and targets ``y`` ``(n,)``."""
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        if X.ndim != 2 or X.shape[0] != y.shape[0]:
            raise ValueError(f"features must be (n, k) with n = {y.shape[0]} targets, got "
                             f"{X.shape}")
        if X.shape[0] < 2:
            raise ValueError("the regression needs at least 2 training samples")
        if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
            raise ValueError("training data contain NaN or infinite values")
        self._mu = X.mean(axis=0)
        sd = X.std(axis=0)
        self._sd = np.where(sd > 0, sd, 1.0)
        Z = (X - self._mu) / self._sd
        ym = y.mean()
        k = Z.shape[1]
        G = Z.T @ Z + self.alpha * np.eye(k)
        c = np.linalg.lstsq(G, Z.T @ (y - ym), rcond=None)[0]
        self.coef_ = c / self._sd
        self.intercept_ = float(ym - self._mu @ self.coef_)
        resid = y - self.predict(X)
        self.train_rms_ = float(np.sqrt(np.mean(resid**2)))
        self.train_r2_ = float(1.0 - np.sum(resid**2) / max(np.sum((y - ym) ** 2), 1e-300))
        return self

    def predict(self, X) -> np.ndarray:
        """``c_0 + X c`` for features ``X`` ``(..., k)``."""
        if self.coef_ is None:
            raise RuntimeError("fit the regression before predict")
        X = np.asarray(X, dtype=np.float64)
        return self.intercept_ + X @ self.coef_


def ama_regression(features, features_subset, exact, *, every: int, n_train: int,
                   offset: int = 0, alpha: float = 1e-6, S: float = 1.5) -> AMAResult:
    """AMA with a ridge regression from cheap features to ``O`` as the approximation.

    Parameters
    ----------
    features : array ``(R, N, k)`` (or ``(N, k)``)
        The features (e.g. plaquette, rectangle, Polyakov loop) at every measurement.
    features_subset : array ``(R, n, k)``
        The features at the subset measurements (default position ``offset + j every``; pass
        ``features[:, offset::every]`` when they were not recorded separately).
    exact : array ``(R, n)``
        ``O`` at the subset measurements.
    every, offset : as for :func:`ama`.
    n_train : int
        The first ``n_train`` subset measurements of every chain (``R n_train`` samples) train
        the regression; their blocks (the first ``n_train every`` measurements of every chain)
        are then left out of both AMA terms.
    alpha : float
        Ridge penalty on the standardised features.

    Returns
    -------
    AMAResult whose ``extra`` holds ``model`` (:class:`RidgeRegression`), ``n_train`` and the
    regression's training and held-out (subset) residual rms and R².
    """
    F = np.asarray(_to_host(features, "features"))
    Fs = np.asarray(_to_host(features_subset, "features_subset"))
    if F.ndim == 2:
        F = F[None]
    if Fs.ndim == 2:
        Fs = Fs[None]
    y = _as_chains(exact, "exact")
    if F.ndim != 3 or Fs.ndim != 3 or F.shape[2] != Fs.shape[2]:
        raise ValueError(f"features must be (R, N, k) and features_subset (R, n, k), got "
                         f"{F.shape} and {Fs.shape}")
    if Fs.shape[:2] != y.shape or F.shape[0] != y.shape[0]:
        raise ValueError(f"features_subset {Fs.shape[:2]} and exact {y.shape} must match, with "
                         f"the chains of features {F.shape[0]}")
    if not (isinstance(n_train, (int, np.integer)) and n_train >= 1):
        raise ValueError(f"n_train must be an integer >= 1, got {n_train!r}")
    if n_train >= y.shape[1]:
        raise ValueError(f"n_train = {n_train} leaves no subset measurements of the "
                         f"{y.shape[1]} per chain for the bias correction")
    R, k = y.shape[0], F.shape[2]
    model = RidgeRegression(alpha).fit(Fs[:, :n_train].reshape(-1, k), y[:, :n_train].reshape(-1))
    start = n_train * every
    pred = model.predict(F[:, start:])
    pred_sub = model.predict(Fs[:, n_train:])
    res = ama(pred, y[:, n_train:], every=every, offset=offset, approx_subset=pred_sub, S=S)
    held = y[:, n_train:] - pred_sub
    var = float(np.var(y[:, n_train:]))
    extra = {"n_train": int(n_train), "n_train_samples": int(R * n_train),
             "train_rms": model.train_rms_, "train_r2": model.train_r2_,
             "heldout_rms": float(np.sqrt(np.mean(held**2))),
             "heldout_r2": float(1.0 - np.mean(held**2) / var) if var > 0 else float("nan")}
    return replace(res, extra=extra, model=model)
