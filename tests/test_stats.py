"""Tests of lattice_ml.stats: Γ-method against exact AR(1) results and pyerrors, resampling,
binning, effective sample size and reweighting, and input validation."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import scipy.signal

from lattice_ml.stats import (
    GammaResult,
    WindowWarning,
    binning,
    binning_analysis,
    bootstrap,
    effective_sample_size,
    gamma_method,
    jackknife,
    reweight,
    tau_int,
    to_pyerrors,
)
from lattice_ml.stats.gamma import autocovariance

try:  # only the comparisons with pyerrors need it; every other test runs without
    import pyerrors as pe
except ImportError:
    pe = None
needs_pyerrors = pytest.mark.skipif(pe is None, reason="pyerrors not installed")


def ar1(rho: float, shape, seed: int) -> np.ndarray:
    """Stationary AR(1): x_t = ρ x_{t−1} + sqrt(1−ρ²) η_t, x_0 ~ N(0, 1), along the last axis.

    Unit variance and ρ(t) = ρ^|t|, so τ_int = (1+ρ)/(2(1−ρ)) exactly.
    """
    eta = np.random.default_rng(seed).standard_normal(shape)
    eta[..., 0] /= math.sqrt(1.0 - rho**2)
    return scipy.signal.lfilter([math.sqrt(1.0 - rho**2)], [1.0, -rho], eta, axis=-1)


def exact_tau(rho: float) -> float:
    return (1.0 + rho) / (2.0 * (1.0 - rho))


def binder(a):
    return 1.0 - a[1] / (3.0 * a[0] ** 2)


def binder_grad(a):
    return np.array([2.0 * a[1] / (3.0 * a[0] ** 3), -1.0 / (3.0 * a[0] ** 2)])


def pe_obs(x: np.ndarray):
    """pyerrors Obs of an (N,) or (R, N) history (replicas named e|r0, e|r1, ...)."""
    return to_pyerrors(x, "e")


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


# --------------------------------------------------------------------------- AR(1): exact τ_int


@pytest.mark.parametrize("rho", [0.5, 0.9])
@pytest.mark.parametrize("shape", [(100_000,), (8, 20_000)], ids=["one-chain", "8-replicas"])
def test_ar1_tau_int_and_error_exact(rho, shape):
    x = ar1(rho, shape, seed=11)
    res = gamma_method(x)
    t = exact_tau(rho)
    n = x.size
    assert res.n == n
    assert abs(res.tau_int - t) < 3.0 * res.tau_int_error, (res.tau_int, t, res.tau_int_error)
    exact_error = math.sqrt(2.0 * t / n)  # σ = 1
    assert rel(res.error, exact_error) < 0.10
    # the estimate is also consistent with its own error-of-error
    assert abs(res.error - exact_error) < 4.0 * res.error_of_error
    # eq. (42) and the error-of-error formula
    w = res.window
    assert res.tau_int_error == pytest.approx(
        2 * res.tau_int * math.sqrt((w + 0.5 - res.tau_int) / n), rel=1e-12
    )
    assert res.error_of_error == pytest.approx(res.error * math.sqrt((w + 0.5) / n), rel=1e-12)
    # the measured autocorrelation follows ρ^t at small t
    assert np.allclose(res.rho[:4], rho ** np.arange(4), atol=0.03)
    assert tau_int(x) == (res.tau_int, res.tau_int_error)


def test_window_rule():
    """W is the first W >= 1 with g(W) < 0, from the uncorrected τ_int(W) (checked by hand)."""
    x = ar1(0.8, (50_000,), seed=5)
    res = gamma_method(x, bias_correction=False)
    d = x - x.mean()
    n = x.size
    gam = np.array([d[: n - t] @ d[t:] / (n - t) for t in range(300)])
    tau_w = 0.5 + np.cumsum(gam[1:] / gam[0])
    for w in range(1, 300):
        tw = tau_w[w - 1]
        tau = 1.5 / math.log((2 * tw + 1) / (2 * tw - 1))
        if math.exp(-w / tau) - tau / math.sqrt(w * n) < 0:
            break
    assert res.window == w
    assert res.tau_int == pytest.approx(tau_w[w - 1], rel=1e-12)
    # bias correction: C_F -> C_F (1 + (2W+1)/N)
    corr = gamma_method(x)
    assert corr.window == w
    assert corr.error**2 == pytest.approx(res.error**2 * (1 + (2 * w + 1) / n), rel=1e-12)


def test_fft_autocovariance_matches_direct_sum():
    d = np.random.default_rng(0).standard_normal((3, 57))
    w_max = 28
    direct = np.array(
        [sum(d[r, : 57 - t] @ d[r, t:] for r in range(3)) / (3 * (57 - t)) for t in range(w_max)]
    )
    assert np.allclose(autocovariance(d, w_max), direct, rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------- pyerrors


def _compare_pe(res: GammaResult, o, tol: float):
    assert res.window == o.e_windowsize["e"]
    assert res.value == pytest.approx(o.value, rel=1e-13)
    assert res.error == pytest.approx(o.dvalue, rel=tol)
    assert res.error_of_error == pytest.approx(o.ddvalue, rel=tol)
    assert res.tau_int == pytest.approx(o.e_tauint["e"], rel=tol)
    assert res.tau_int_error == pytest.approx(o.e_dtauint["e"], rel=tol)
    assert np.allclose(res.rho, o.e_rho["e"], rtol=0, atol=max(tol, 1e-12))


@needs_pyerrors
@pytest.mark.parametrize("S", [1.5, 2.0, 0.0])
@pytest.mark.parametrize(
    "rho,shape",
    [(0.0, (20_000,)), (0.5, (20_000,)), (0.9, (20_000,)), (0.0, (4, 5_000)), (0.9, (4, 5_000))],
)
def test_pyerrors_primary_exact(rho, shape, S):
    x = 0.3 + ar1(rho, shape, seed=21)
    o = pe_obs(x)
    o.gamma_method(S=S)
    _compare_pe(gamma_method(x, S=S, convention="pyerrors"), o, tol=1e-10)


@needs_pyerrors
def test_to_pyerrors_keeps_chains_as_replicas_and_the_measurement_numbers():
    x = 0.3 + ar1(0.6, (3, 400), seed=5)
    o = to_pyerrors(x, "run", discard=100, every=2)
    assert o.names == ["run|r0", "run|r1", "run|r2"]
    assert list(o.idl["run|r1"]) == list(range(201, 801, 2))
    assert o.value == pytest.approx(x[:, 100:].mean(), rel=1e-14)
    o.gamma_method(S=2.0)
    res = gamma_method(x[:, 100:], S=2.0, convention="pyerrors")
    assert o.dvalue == pytest.approx(res.error, rel=1e-10)
    # a history with an observable axis (a correlator [chain, time, T]) gives one Obs per t
    C = np.stack([x, 2 * x, x ** 2], axis=-1)
    oc = to_pyerrors(C, "run")
    assert oc.shape == (3,) and oc.dtype == object
    for t in range(3):
        assert oc[t].value == pytest.approx(C[..., t].mean(), rel=1e-14)
    # observables measured on different schedules of the same chains combine in pyerrors:
    # every second measurement of x is the same data as x on configurations 2, 4, ...
    half = to_pyerrors(x[:, 1::2], "run", every=2, first=2)
    d = to_pyerrors(x, "run") - half
    d.gamma_method()
    assert abs(d.value) < 4 * d.dvalue


def test_to_pyerrors_refuses_bad_input_and_names_the_missing_package(monkeypatch):
    import sys
    with pytest.raises(ValueError, match="discard"):
        to_pyerrors(np.zeros((2, 10)), "e", discard=10)
    with pytest.raises(ValueError, match="replica separator"):
        to_pyerrors(np.zeros((2, 10)), "a|b")
    monkeypatch.setitem(sys.modules, "pyerrors", None)
    with pytest.raises(ImportError, match="pip install pyerrors"):
        to_pyerrors(np.zeros((2, 10)), "e")


@needs_pyerrors
def test_pyerrors_default_convention_one_replica():
    """Wolff convention, one replica: same window and error; τ_int differs by a known factor."""
    x = ar1(0.5, (20_000,), seed=3)
    n = x.size
    o = pe_obs(x)
    for S in (1.5, 2.0):
        o.gamma_method(S=S)
        res = gamma_method(x, S=S)
        w = o.e_windowsize["e"]
        tau_w = o.e_n_tauint["e"][w]  # uncorrected τ_int(W) (> 1/2 here: no clipping)
        assert res.window == w
        assert res.error == pytest.approx(o.dvalue, rel=1e-12)
        assert res.error_of_error == pytest.approx(o.ddvalue, rel=1e-12)
        # Wolff: τ = C_F'/(2Γ'(0)) with Γ'(0) = Γ(0)(1 + 2τ(W)/N); pyerrors divides by (1 + 1/N)
        assert res.tau_int == pytest.approx(
            o.e_tauint["e"] * (1 + 1 / n) / (1 + 2 * tau_w / n), rel=1e-12
        )
        assert res.tau_int_error == pytest.approx(
            2 * res.tau_int * math.sqrt((w + 0.5 - res.tau_int) / n), rel=1e-12
        )


@needs_pyerrors
def test_pyerrors_default_convention_replicas():
    """Global (Wolff) vs replica means (pyerrors): C_F differs by O((2W+1)(R−1)/N_tot), far
    inside the statistical error; the global-mean estimate is the larger one."""
    x = ar1(0.9, (4, 5_000), seed=8)
    n = x.size
    o = pe_obs(x)
    o.gamma_method(S=1.5)
    res = gamma_method(x)
    w = res.window
    assert abs(w - o.e_windowsize["e"]) <= 2
    assert abs(res.error - o.dvalue) < res.error_of_error
    assert abs(res.tau_int - o.e_tauint["e"]) < res.tau_int_error
    assert 0 < (res.error / o.dvalue) ** 2 - 1 < 2 * (2 * w + 1) * (4 - 1) / n


@needs_pyerrors
@pytest.mark.parametrize("shape", [(20_000,), (3, 8_000)], ids=["one-chain", "3-replicas"])
def test_pyerrors_derived_binder(shape):
    m = 0.3 + ar1(0.7, shape, seed=31)
    m2, m4 = m**2, m**4
    b = pe.derived_observable(lambda a: 1 - a[1] / (3 * a[0] ** 2), [pe_obs(m2), pe_obs(m4)])
    b.gamma_method(S=1.5)
    # numerical (Richardson) gradient: agreement limited by its O(h^4) truncation error
    _compare_pe(gamma_method([m2, m4], binder, convention="pyerrors"), b, tol=1e-8)
    _compare_pe(gamma_method([m2, m4], binder, grad=binder_grad, convention="pyerrors"), b, 1e-12)


@needs_pyerrors
def test_pyerrors_derived_ratio_replicas():
    x = 2.0 + ar1(0.6, (4, 6_000), seed=41)
    y = 1.0 + 0.5 * ar1(0.3, (4, 6_000), seed=42) + 0.2 * x
    r = pe_obs(x) / pe_obs(y)
    r.gamma_method(S=2.0)
    _compare_pe(gamma_method([x, y], lambda a: a[0] / a[1], S=2.0, convention="pyerrors"), r, 1e-8)


# --------------------------------------------------------------------------- derived quantities


def _rel_uncertainty_of_error(y: np.ndarray) -> float:
    """Statistical relative uncertainty of an error estimated from iid samples of y."""
    d = y - y.mean()
    kurt = np.mean(d**4) / np.mean(d**2) ** 2
    return 0.5 * math.sqrt((kurt - 1.0) / y.size)


def test_derived_binder_and_susceptibility_exact_delta_method():
    """iid Gaussian M ~ N(0,1): exact delta-method errors of Binder cumulant and χ."""
    n = 100_000
    m = np.random.default_rng(7).standard_normal(n)
    # Binder: B = 1 - <M^4>/(3<M^2>^2), grad (2, -1/3), Var(2M^2 - M^4/3) = 8/3
    res = gamma_method([m**2, m**4], binder)
    exact = math.sqrt(8.0 / 3.0 / n)
    tol = _rel_uncertainty_of_error(2 * m**2 - m**4 / 3)
    assert abs(res.error / exact - 1) < 4 * tol, (res.error, exact, tol)
    assert abs(res.value - 0.0) < 4 * exact
    jk = jackknife([m**2, m**4], binder)
    # jackknife = delta method with the sample covariance, up to O(1/N) nonlinear terms
    assert jk.error == pytest.approx(gamma_method([m**2, m**4], binder, S=0).error, rel=1e-3)

    # susceptibility χ = V(<M^2> - <|M|>^2), Var(M^2 - 2c|M|) = 2 - 16/π^2 with c = sqrt(2/π)
    vol = 64
    chi = lambda a: vol * (a[1] - a[0] ** 2)  # noqa: E731
    res = gamma_method([np.abs(m), m**2], chi)
    exact = vol * math.sqrt((2 - 16 / math.pi**2) / n)
    tol = _rel_uncertainty_of_error(m**2 - 2 * math.sqrt(2 / math.pi) * np.abs(m))
    assert abs(res.error / exact - 1) < 4 * tol, (res.error, exact, tol)
    assert abs(res.value - vol * (1 - 2 / math.pi)) < 4 * exact
    jk = jackknife([np.abs(m), m**2], chi)
    assert jk.error == pytest.approx(gamma_method([np.abs(m), m**2], chi, S=0).error, rel=1e-3)


def test_numerical_gradient_matches_exact():
    m = 0.5 + ar1(0.5, (20_000,), seed=9)
    num = gamma_method([m**2, m**4], binder)
    ex = gamma_method([m**2, m**4], binder, grad=binder_grad)
    assert num.window == ex.window
    assert num.error == pytest.approx(ex.error, rel=1e-8)


# --------------------------------------------------------------------------- constant / edge cases


@pytest.mark.parametrize("convention", ["wolff", "pyerrors"])
def test_constant_history(convention):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for x in (np.full(100, 0.1), np.full((3, 50), 2.0)):
            res = gamma_method(x, convention=convention)
            assert res.value == pytest.approx(x.flat[0], rel=1e-15)
            assert (res.error, res.error_of_error, res.tau_int, res.tau_int_error) == (0, 0, 0.5, 0)
            assert res.window == 0
            assert np.all(np.isfinite(res.rho)) and res.rho[0] == 1.0
        # derived quantity of constant primaries
        c = np.full(64, 0.7)
        res = gamma_method([c, c**2], lambda a: a[1] - a[0] ** 2, convention=convention)
        assert res.error == 0.0 and res.tau_int == 0.5
        assert np.isfinite(res.value)
        assert jackknife(c).error == 0.0
        assert binning_analysis(c).error.max() == 0.0


def test_window_warning_for_many_short_chains():
    """Many chains much shorter than τ_int (a wide batch, short run): W hits N//2 − 1."""
    x = ar1(0.99, (100, 50), seed=1)
    with pytest.warns(WindowWarning, match="too short"):
        res = gamma_method(x)
    assert res.window == 50 // 2 - 1
    assert res.tau_int < exact_tau(0.99)  # underestimated, as the warning says


def test_pathological_anticorrelated_history():
    t = np.arange(1000)
    x = (-1.0) ** t + 0.01 * np.random.default_rng(0).standard_normal(1000)
    with pytest.raises(ValueError, match="pathological"):
        gamma_method(x, pathological="raise")
    with pytest.warns(WindowWarning, match="pathological"):
        naive = gamma_method(x)
    assert naive.window == 0 and naive.tau_int == pytest.approx(0.5, rel=1e-2)
    n = x.size
    # the naive error sqrt(Γ(0)/N) (with the bias factor): an upper bound here
    assert naive.error == pytest.approx(np.sqrt(x.var() * (1 + 1 / n) / n), rel=1e-12)
    res = gamma_method(x, convention="pyerrors")  # pyerrors clips τ_int(W) at 1/2
    assert res.tau_int > 0.5 and np.isfinite(res.error)


def test_result_to_dict_json_and_frozen():
    res = gamma_method(ar1(0.5, (1000,), seed=2))
    d = res.to_dict()
    assert set(d) == {"value", "error", "error_of_error", "tau_int", "tau_int_error", "window", "n"}
    assert all(type(v) in (float, int) for v in d.values())
    json.dumps(res.to_dict(include_rho=True))
    with pytest.raises(AttributeError):
        res.error = 0.0  # type: ignore[misc]
    with pytest.raises(ValueError):
        res.rho[0] = 2.0


def test_array_api_input():
    xp = pytest.importorskip("array_api_strict")
    x = ar1(0.5, (2, 500), seed=4)
    a = gamma_method(xp.asarray(x))
    b = gamma_method(x)
    assert (a.value, a.error, a.tau_int, a.window) == (b.value, b.error, b.tau_int, b.window)
    assert effective_sample_size(xp.asarray(x)) == effective_sample_size(x)


# --------------------------------------------------------------------------- resampling, binning


def test_jackknife_mean_is_standard_error():
    x = np.random.default_rng(1).standard_normal(5_000) + 3.0
    jk = jackknife(x)
    assert jk.value == pytest.approx(x.mean(), rel=1e-14)
    assert jk.error == pytest.approx(x.std(ddof=1) / math.sqrt(x.size), rel=1e-10)
    assert abs(jk.bias) < 1e-12
    # replicas are pooled: same identity over all samples
    xr = x.reshape(5, 1000)
    assert jackknife(xr).error == pytest.approx(jk.error, rel=1e-10)
    # binned jackknife = standard error of the block means
    jb = jackknife(x, n_bins=50)
    blocks = binning(x, 100)
    assert jb.error == pytest.approx(blocks.std(ddof=1) / math.sqrt(50), rel=1e-10)
    assert jackknife(xr, n_bins=10).samples.shape == (50,)


def test_bootstrap_reproducible_and_close_to_standard_error():
    x = np.random.default_rng(2).standard_normal(20_000)
    b1 = bootstrap(x, n_boot=400, seed=123)
    b2 = bootstrap(x, n_boot=400, seed=123)
    b3 = bootstrap(x, n_boot=400, seed=124)
    assert np.array_equal(b1.samples, b2.samples) and b1.error == b2.error
    assert not np.array_equal(b1.samples, b3.samples)
    se = x.std(ddof=1) / math.sqrt(x.size)
    assert rel(b1.error, se) < 3.0 / math.sqrt(2 * 400)  # ~3σ of a 400-sample error estimate
    # derived quantity, several primaries, vectorized f
    bv = bootstrap([x**2, x**4], lambda a: 1 - a[1] / (3 * a[0] ** 2), n_boot=400, seed=5,
                   vectorized=True)
    bl = bootstrap([x**2, x**4], binder, n_boot=400, seed=5)
    assert np.allclose(bv.samples, bl.samples, rtol=1e-13)


def test_binning_shapes():
    x = np.arange(23.0)
    assert np.array_equal(binning(x, 5), [2.0, 7.0, 12.0, 17.0])
    assert binning(np.ones((3, 23)), 4).shape == (3, 5)


def test_binning_plateau_matches_gamma_method():
    x = ar1(0.9, (100_000,), seed=13)
    g = gamma_method(x)
    ba = binning_analysis(x)
    assert ba.bin_size[0] == 1 and ba.n_blocks[-1] >= 32
    assert ba.error[0] == pytest.approx(x.std(ddof=1) / math.sqrt(x.size), rel=1e-12)
    for b in (512, 1024, 2048):  # b > 50 τ_int: bias O(τ/b) ~ 1%
        j = int(np.flatnonzero(ba.bin_size == b)[0])
        assert abs(ba.error[j] - g.error) < 3 * math.hypot(ba.error_of_error[j], g.error_of_error)
    # far below the plateau the naive error is too small by about sqrt(2 τ_int)
    assert ba.error[0] < g.error / 3


# --------------------------------------------------------------------------- ESS and reweighting


def test_effective_sample_size():
    n = 1000
    assert effective_sample_size(np.zeros(n)) == pytest.approx(1.0, rel=1e-15)
    one = np.full(n, -1e4)
    one[17] = 0.0
    assert effective_sample_size(one) == pytest.approx(1.0 / n, rel=1e-12)
    one[17] = -np.inf  # zero weights are allowed
    one[3] = 5.0
    assert effective_sample_size(one) == pytest.approx(1.0 / n, rel=1e-12)
    lw = np.random.default_rng(0).normal(size=n)
    e = effective_sample_size(lw)
    assert 0 < e < 1
    w = np.exp(lw)
    assert e == pytest.approx(w.sum() ** 2 / (n * (w**2).sum()), rel=1e-13)
    assert effective_sample_size(lw + 800.0) == pytest.approx(e, rel=1e-12)  # exp(800) overflows
    assert effective_sample_size(lw - 800.0) == pytest.approx(e, rel=1e-12)
    per_chain = effective_sample_size(lw.reshape(4, 250), axis=-1)
    assert per_chain.shape == (4,)
    assert per_chain[1] == pytest.approx(effective_sample_size(lw[250:500]), rel=1e-14)


def test_reweighting_between_gaussians():
    """Samples of N(0,1), weights p1/p0 with p1 = N(μ,1): <x>_1 = μ, ESS -> exp(-μ²),
    error² of the ratio estimator = exp(μ²)(1+μ²)/N."""
    n, mu = 100_000, 0.5
    x = np.random.default_rng(17).standard_normal(n)
    lw = mu * x - 0.5 * mu**2 + 1234.5  # any constant shift
    res = reweight(x, lw)
    exact_err = math.sqrt(math.exp(mu**2) * (1 + mu**2) / n)
    assert abs(res.value - mu) < 3 * res.error
    assert rel(res.error, exact_err) < 0.05
    assert effective_sample_size(lw) == pytest.approx(math.exp(-mu**2), rel=0.02)
    shifted = reweight(x, lw - 2000.0)
    assert shifted.value == pytest.approx(res.value, rel=1e-12)
    assert shifted.error == pytest.approx(res.error, rel=1e-10)
    # replicas
    r = reweight(x.reshape(4, -1), lw.reshape(4, -1))
    assert r.n == n and abs(r.value - mu) < 3 * r.error


# --------------------------------------------------------------------------- bad input


def test_bad_input_messages():
    good = np.random.default_rng(0).standard_normal(100)
    nan = good.copy()
    nan[10] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        gamma_method(nan)
    inf = good.copy()
    inf[3] = np.inf
    with pytest.raises(ValueError, match="infinite"):
        gamma_method(inf)
    with pytest.raises(ValueError, match="too short"):
        gamma_method(np.ones(4))
    with pytest.raises(ValueError, match="too short"):
        gamma_method(np.ones((10, 3)))
    with pytest.raises(ValueError, match="mismatched shapes"):
        gamma_method([good, good[:50]], lambda a: a[0] * a[1])
    with pytest.raises(ValueError, match="mismatched shapes"):
        gamma_method([good.reshape(2, 50), good.reshape(4, 25)], lambda a: a[0])
    with pytest.raises(ValueError, match=r"\(N,\) or \(R, N\)"):
        gamma_method(np.ones((2, 3, 10)))
    with pytest.raises(ValueError, match="pass f"):
        gamma_method([good, good])
    with pytest.raises(ValueError, match="S must be"):
        gamma_method(good, S=-1.0)
    with pytest.raises(ValueError, match="convention"):
        gamma_method(good, convention="uwerr")
    with pytest.raises(ValueError, match="complex"):
        gamma_method(good + 1j)
    with pytest.raises(ValueError, match="non-finite"), np.errstate(divide="ignore"):
        gamma_method([good, np.zeros(100)], lambda a: a[0] / a[1])
    with pytest.raises(ValueError, match="NaN"):
        jackknife(nan)
    with pytest.raises(ValueError, match="n_bins"):
        jackknife(good, n_bins=1)
    with pytest.raises(ValueError, match="NaN"):
        bootstrap([good, nan], lambda a: a[0] + a[1], n_boot=10)
    with pytest.raises(ValueError, match="bin_size"):
        binning(good, 0)
    with pytest.raises(ValueError, match="NaN"):
        binning_analysis(nan)
    with pytest.raises(ValueError, match="NaN"):
        effective_sample_size(nan)
    with pytest.raises(ValueError, match="-inf"):
        effective_sample_size(np.full(10, -np.inf))
    with pytest.raises(ValueError, match="mismatched shapes"):
        reweight(good, good[:50])
    with pytest.raises(ValueError, match="NaN"):
        reweight(nan, good)
