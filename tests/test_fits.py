"""Cosh fits of periodic correlators (lattice_ml.stats.fits): exact cosh data, the role of the
fold and of the backward (periodic-image) term, Γ-method errors of the fitted mass against a
synthetic Monte Carlo with known truth (pulls), the automatic fit range, and the free Wilson
pion against its effective-mass plateau."""

import warnings

import numpy as np
import pytest

from lattice_ml.backend import namespace_by_name, to_numpy
from lattice_ml.fermions import WilsonDirac
from lattice_ml.fermions.observables import effective_mass, pion_correlator
from lattice_ml.groups import identity
from lattice_ml.stats import (WindowWarning, choose_fit_range, cosh_correlator, fit_cosh_mass,
                              fold_correlator, folded_errors, gamma_method)

NP = namespace_by_name("numpy")


def ar1_history(rng, T, m, A, R, N, phi, eps, rho_t):
    """[R, N, T] correlators C(t) (1 + eps x(t)): x is AR(1) in Monte Carlo time with
    coefficient phi (unit variance, tau_int = (1 + phi) / (2 (1 - phi))) and correlated across
    time slices, corr(x(t), x(t')) = rho_t^|t - t'|."""
    d = np.abs(np.subtract.outer(np.arange(T), np.arange(T)))
    L = np.linalg.cholesky(rho_t ** d)
    xi = rng.standard_normal((R, N, T)) @ L.T
    x = np.empty_like(xi)
    x[:, 0] = xi[:, 0]
    for i in range(1, N):
        x[:, i] = phi * x[:, i - 1] + np.sqrt(1.0 - phi * phi) * xi[:, i]
    return cosh_correlator(T, m, A) * (1.0 + eps * x)


def mass_error(H, t_range, S=1.5):
    """The CLI's call pattern: the fitted mass as a derived quantity of C(0) ... C(T-1)."""
    T = H.shape[-1]
    sigma = folded_errors(H)
    return gamma_method([H[..., t] for t in range(T)],
                        f=lambda c: fit_cosh_mass(c, t_range, sigma=sigma).mass, S=S)


# ------------------------------------------------------------------------------------------
# (1) exact cosh correlators
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("T", [16, 32])
@pytest.mark.parametrize("m,A", [(0.5, 2.0), (0.05, 1e-3), (1.7, 3e5), (3.0, 1.0)])
def test_exact_cosh_is_recovered(T, m, A):
    C = cosh_correlator(T, m, A)
    ranges = [None, (0, T // 2), (1, T // 2), (2, 5), (T // 4, T // 2 - 1),
              (T // 2 - 2, T // 2), (T // 2 - 1, T // 2)]
    sigma = 0.01 * fold_correlator(C) * (1 + np.arange(T // 2 + 1))   # any weights
    for r in ranges:
        for s in (None, sigma):
            fit = fit_cosh_mass(C, r, sigma=s)
            mass, amp = fit                                   # unpacks as (mass, amplitude)
            assert abs(mass / m - 1) < 1e-10, (r, mass)
            assert abs(amp / A - 1) < 1e-10, (r, amp)


def test_exact_cosh_odd_T_and_array_types():
    T, m, A = 15, 0.3, 0.7
    C = cosh_correlator(T, m, A)
    for r in [(1, 7), (3, 7), (0, 4)]:
        fit = fit_cosh_mass(list(C), r)
        np.testing.assert_allclose([fit.mass, fit.amplitude], [m, A], rtol=1e-10)


def test_model_and_fold():
    T, m, A = 12, 0.4, 1.5
    t = np.arange(T)
    C = cosh_correlator(T, m, A)
    np.testing.assert_allclose(C, 2 * A * np.exp(-m * T / 2) * np.cosh(m * (T / 2 - t)),
                               rtol=1e-14)
    X = np.random.default_rng(0).standard_normal((3, 5, T))
    F = fold_correlator(X)
    assert F.shape == (3, 5, T // 2 + 1)
    np.testing.assert_array_equal(F[..., 0], X[..., 0])
    np.testing.assert_array_equal(F[..., T // 2], X[..., T // 2])
    np.testing.assert_allclose(F[..., 3], 0.5 * (X[..., 3] + X[..., T - 3]), rtol=1e-15)
    # folding is idempotent on a symmetric correlator
    np.testing.assert_allclose(fold_correlator(C), C[: T // 2 + 1], rtol=1e-15)


# ------------------------------------------------------------------------------------------
# (2) the backward part and the fold matter
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("T,m", [(16, 0.3), (32, 0.2)])
def test_backward_part_matters_close_to_T_over_2(T, m):
    """Close to T/2 the periodic image dominates the slope: a pure exponential log-linear fit
    over [T/2 - 3, T/2] gets a mass far below m (the effective log-mass vanishes at T/2);
    the cosh fit is exact there."""
    C = cosh_correlator(T, m, 1.0)
    r = (T // 2 - 3, T // 2)
    t = np.arange(r[0], r[1] + 1)
    slope = np.polyfit(t, np.log(C[t]), 1)[0]
    assert -slope < 0.5 * m                   # the exponential fit is wrong by > 50 %
    assert abs(fit_cosh_mass(C, r).mass / m - 1) < 1e-10


def test_fold_removes_the_antisymmetric_part():
    """A correlator with an antisymmetric admixture (C(t) - C(T - t) != 0, e.g. a
    time-reflection-odd noise pattern) fits exactly after the fold; fitting the forward half
    alone (mirrored onto the backward half, i.e. no averaging) gets the mass wrong."""
    T, m, A = 24, 0.35, 1.0
    t = np.arange(T)
    odd = 0.2 * A * (np.exp(-m * t) - np.exp(-m * (T - t)))
    odd[0] = 0.0
    C = cosh_correlator(T, m, A) + odd
    assert abs(C[3] - C[T - 3]) > 1e-3 * C[3]
    fit = fit_cosh_mass(C, (2, T // 2))
    np.testing.assert_allclose([fit.mass, fit.amplitude], [m, A], rtol=1e-10)
    forward = C.copy()
    forward[T // 2 + 1:] = C[1: T // 2][::-1]            # C(T - t) := C(t): no fold
    assert abs(fit_cosh_mass(forward, (2, T // 2)).mass / m - 1) > 1e-2


# ------------------------------------------------------------------------------------------
# (3) synthetic Monte Carlo: the quoted error is right (pulls)
# ------------------------------------------------------------------------------------------
def test_pulls_of_the_fitted_mass_with_autocorrelated_correlated_noise():
    """200 independent replicas of 4 chains x 250 configurations of C(t)(1 + 0.05 x(t)), x
    AR(1) in Monte Carlo time (phi = 0.7, tau_int = 2.83) and correlated across time slices
    (0.8^|t-t'|); T = 16, m = 0.4. The fit range is chosen per replica by choose_fit_range
    (the CLI's path). Pulls (m_fit - m)/error: mean within +-0.3, std in [0.7, 1.3].
    The same pulls with the naive error (S = 0, autocorrelation ignored) have std ~ sqrt(2
    tau_int) = 2.4: the test detects a wrong error."""
    T, m, A = 16, 0.4, 1.0
    rng = np.random.default_rng(2024)
    pulls, naive = [], []
    for _ in range(200):
        H = ar1_history(rng, T, m, A, 4, 250, 0.7, 0.05, 0.8)
        t_range = choose_fit_range(H)
        assert 1 <= t_range[0] < t_range[1] <= T // 2
        with warnings.catch_warnings():
            warnings.simplefilter("error", WindowWarning)
            res = mass_error(H, t_range)
        pulls.append((res.value - m) / res.error)
        naive.append((res.value - m) / mass_error(H, t_range, S=0).error)
    pulls, naive = np.array(pulls), np.array(naive)
    print(f"pulls: mean {pulls.mean():.3f} std {pulls.std():.3f}; naive std {naive.std():.3f}")
    assert abs(pulls.mean()) < 0.3
    assert 0.7 <= pulls.std() <= 1.3
    assert naive.std() > 1.6


# ------------------------------------------------------------------------------------------
# (4) the automatic fit range
# ------------------------------------------------------------------------------------------
def test_range_chooser_exact_and_deterministic():
    T = 32
    C = cosh_correlator(T, 0.3, 1.0)
    # noise-free history (every configuration the same): the plateau starts at t = 1
    assert choose_fit_range(np.tile(C, (2, 10, 1))) == (1, T // 2)
    rng = np.random.default_rng(11)
    H = ar1_history(rng, T, 0.3, 1.0, 2, 400, 0.5, 0.05, 0.5)
    H = H + cosh_correlator(T, 1.1, 3.0)                    # an excited state, gap 0.8
    r1 = choose_fit_range(H)
    r2 = choose_fit_range(H.copy())
    r3 = choose_fit_range(H[..., :].reshape(2, 400, T).astype(np.float64))
    assert r1 == r2 == r3
    t_min, t_max = r1
    assert 1 <= t_min < t_max <= T // 2 and t_max - t_min + 1 >= 3
    # the excited state is resolved at small t: the plateau starts later than t = 1, and the
    # contamination of m(t_min) is within a few errors of the plateau
    assert t_min > 3
    res = mass_error(H, r1)
    me = to_numpy(effective_mass(H.mean(axis=(0, 1))))          # entry i is t = i + 1
    assert abs(me[t_min - 1] - 0.3) < 5 * res.error * np.sqrt(t_max - t_min + 1)
    assert abs(res.value - 0.3) < 4 * res.error
    # [time, T] histories (one chain) are accepted
    r = choose_fit_range(H[0])
    assert 1 <= r[0] < r[1] <= T // 2


def test_range_chooser_cuts_noise_and_fails_clearly():
    T = 16
    rng = np.random.default_rng(3)
    # signal lost at large t: strong noise on a heavy state, t_max stops before T/2
    H = cosh_correlator(T, 1.2, 1.0) * (1 + 0.3 * rng.standard_normal((1, 200, T)))
    H = H + 2e-3 * rng.standard_normal(H.shape)
    t_min, t_max = choose_fit_range(H)
    assert 1 <= t_min < t_max < T // 2
    # a noise-free two-state correlator never reaches a plateau at rtol = 1e-10
    two = cosh_correlator(T, 0.5, 1.0) + cosh_correlator(T, 1.5, 1.0)
    with pytest.raises(ValueError, match="no effective-mass plateau"):
        choose_fit_range(np.tile(two, (10, 1)))
    with pytest.raises(ValueError, match="significant"):
        choose_fit_range(rng.standard_normal((50, T)))
    with pytest.raises(ValueError, match=r"\[chain, time, T\]"):
        choose_fit_range(two)


# ------------------------------------------------------------------------------------------
# failures are ValueErrors with the reason, not NaN
# ------------------------------------------------------------------------------------------
def test_bad_correlators_raise():
    T = 16
    C = cosh_correlator(T, 0.4, 1.0)
    neg = C.copy()
    neg[5] = neg[T - 5] = -1e-3                   # (the fold averages t and T - t)
    with pytest.raises(ValueError, match="not positive at t = 5"):
        fit_cosh_mass(neg, (2, 8))
    fit_cosh_mass(neg, (6, 8))                    # fine outside the range
    with pytest.raises(ValueError, match="does not decrease"):
        fit_cosh_mass(np.ones(T), (2, 8))            # constant: no decay
    rising = C.copy()
    rising[8] = 2 * C[2]
    with pytest.raises(ValueError, match="does not decrease"):
        fit_cosh_mass(rising, (2, 8))
    nan = C.copy()
    nan[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_cosh_mass(nan)
    for r in [(0, 9), (5, 5), (-1, 4), (3, 2), (1.5, 4), "ab", (1, 2, 3)]:
        with pytest.raises(ValueError, match="t_range"):
            fit_cosh_mass(C, r)
    with pytest.raises(ValueError, match="shape"):
        fit_cosh_mass(np.tile(C, (3, 1)))
    with pytest.raises(ValueError, match="too short"):
        fit_cosh_mass(C[:3])
    with pytest.raises(ValueError, match="sigma"):
        fit_cosh_mass(C, (1, 8), sigma=np.ones(T))
    with pytest.raises(ValueError, match="sigma"):
        fit_cosh_mass(C, (1, 8), sigma=np.zeros(T // 2 + 1))
    # a zig-zag correlator is not a cosh (here it rises from t = 1 to t = 8)
    zig = C * (1 + 0.9 * (-1.0) ** np.arange(T))
    with pytest.raises(ValueError, match="does not decrease"):
        fit_cosh_mass(zig, (1, 8))
    # steep fall and a large last point: the end points give m_0 = 0.006, the chi^2 wants a
    # much larger mass, outside the scan m_0 [1/16, 16]
    c = np.r_[1, 1, 0.1, 0.01, 1e-3, 1e-4, 1e-5, 1e-6, 0.999]
    with pytest.raises(ValueError, match="no minimum of chi"):
        fit_cosh_mass(np.r_[c, c[1:-1][::-1]], (1, 8))


def test_failure_inside_gamma_method_is_a_value_error():
    """The CLI's summary_entry returns None on a ValueError of a derived quantity: a noisy
    correlator that is negative in the range must raise, not give NaN."""
    rng = np.random.default_rng(5)
    H = cosh_correlator(16, 0.4, 1.0) * (1 + 0.01 * rng.standard_normal((2, 50, 16)))
    H[..., 7] -= 1.0
    with pytest.raises(ValueError, match="not positive"):
        gamma_method([H[..., t] for t in range(16)], f=lambda c: fit_cosh_mass(c, (2, 8)).mass)


# ------------------------------------------------------------------------------------------
# (5) the free Wilson pion
# ------------------------------------------------------------------------------------------
def test_free_wilson_pion_fit_agrees_with_the_plateau():
    """Free Wilson pion on 64 x 4, m = 0.5. The free correlator is not one cosh: it is a sum
    over two-quark states with positive weights, the lightest two quarks at rest with
    2E, cosh E = 1 + m^2/(2(1+m)); the excited states die like e^{-Delta t} (their
    contamination of m_eff is 6e-8 relative at t = 12 and 8e-10 at t = 16). At t >= 16 the
    effective mass is flat at 2E to 5e-8 relative -- the limit is the solver (tol 1e-12) on a
    correlator that falls by e^{-26} to T/2. So a fit over [16, 32] must agree with m_eff(t),
    t = 16 ... 31, and with 2E to 1e-7 relative; a fit starting at t = 2, inside the excited
    states, misses by more than 1e-4 (4.8e-4)."""
    T, m = 64, 0.5
    U = identity(1, (1, 2, T, 4), NP)
    C = to_numpy(pion_correlator(WilsonDirac(U, mass=m)))[0]
    me = to_numpy(effective_mass(C))                         # entry i is t = i + 1
    two_E = 2 * np.arccosh(1 + m * m / (2 * (1 + m)))
    fit = fit_cosh_mass(C, (16, 32))
    plateau = me[15:31]                                      # t = 16 ... 31
    np.testing.assert_allclose(plateau, fit.mass, rtol=1e-7)
    assert abs(fit.mass / two_E - 1) < 1e-7
    assert abs(fit_cosh_mass(C, (2, 32)).mass / two_E - 1) > 1e-4
    # the amplitude reproduces the correlator in the plateau region
    np.testing.assert_allclose(cosh_correlator(T, fit.mass, fit.amplitude)[16:49], C[16:49],
                               rtol=1e-6)


def test_free_wilson_pion_with_noise_chooses_the_plateau():
    """The free pion x (1 + 1% noise) on 48 x 4: the chosen range avoids the excited states
    (t_min > 3, where m_eff is 1.4 % above 2E at t = 4) and the fit agrees with 2E within 3
    errors."""
    T, m = 48, 0.5
    U = identity(1, (1, 2, T, 4), NP)
    C = to_numpy(pion_correlator(WilsonDirac(U, mass=m)))[0]
    two_E = 2 * np.arccosh(1 + m * m / (2 * (1 + m)))
    rng = np.random.default_rng(8)
    H = C * (1 + 0.01 * rng.standard_normal((4, 200, T)))
    t_range = choose_fit_range(H)
    assert 3 < t_range[0] < t_range[1] == T // 2
    res = mass_error(H, t_range)
    assert abs(res.value - two_E) < 3 * res.error
