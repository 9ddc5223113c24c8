"""AMA (stats.ama): unbiased means and Γ-method errors that cover the known answer on synthetic
autocorrelated data, the correlation of the two terms (a case where leaving it out is wrong), the
ridge-regression approximation with its training stretch left out, identities and refusals."""

import math

import numpy as np
import pytest
from scipy.signal import lfilter

from lattice_ml.stats import RidgeRegression, ama, ama_regression, gamma_method

REPS = 600
BAND = 3.0 * math.sqrt(0.6827 * 0.3173 / REPS)   # 3 sigma of the binomial coverage


def ar1(rng, shape, phi):
    """Stationary AR(1) with unit variance along the last axis (tau_int = (1+phi)/(2(1-phi)))."""
    e = rng.standard_normal(shape)
    e[..., 0] /= math.sqrt(1 - phi**2)
    return lfilter([math.sqrt(1 - phi**2)], [1, -phi], e, axis=-1)


MU = 0.7


def _case(name, rng, R, N):
    X = ar1(rng, (R, N), 0.8)                                  # tau_int = 4.5 measurements
    if name == "biased":      # a biased, partly correlated approximation
        Y = ar1(rng, (R, N), 0.9)
        O = MU + X + 0.5 * Y
        Oa = MU + 0.3 + X + 0.2 * Y + 0.3 * ar1(rng, (R, N), 0.5)
    elif name == "noisy":     # O_a = O + eps: the two terms anticorrelated
        O = MU + X
        Oa = O + 1.5 * ar1(rng, (R, N), 0.8)
    elif name == "scaled":    # O_a = O / 2 - 1: the two terms positively correlated
        O = MU + X
        Oa = 0.5 * O - 1.0
    else:
        raise ValueError(name)
    return O, Oa


def _coverage(name, every, R=4, N=1000, seed=1):
    rng = np.random.default_rng(seed)
    z, z_unc, corr = [], [], []
    for _ in range(REPS):
        O, Oa = _case(name, rng, R, N)
        res = ama(Oa, O[:, ::every], every=every)
        z.append((res.value - MU) / res.error)
        z_unc.append((res.value - MU) / res.error_uncorrelated)
        corr.append(res.correlation)
    return np.array(z), np.array(z_unc), float(np.mean(corr))


@pytest.mark.parametrize("name,every", [("biased", 4), ("noisy", 2), ("scaled", 4)])
def test_ama_is_unbiased_and_its_error_covers(name, every):
    """600 independent ensembles (4 chains x 1000 autocorrelated measurements, the exact value
    on every 2nd/4th): the mean of the pulls is 0 within 4/sqrt(600), their spread 1 within 10%,
    and |pull| < 1 in 68.3% of the ensembles within 3 binomial sigma."""
    z, _, _ = _coverage(name, every)
    assert abs(np.mean(z)) < 4 / math.sqrt(REPS), np.mean(z)
    assert abs(np.std(z) - 1) < 0.1, np.std(z)
    cover = np.mean(np.abs(z) < 1)
    assert abs(cover - 0.6827) < BAND, cover


@pytest.mark.parametrize("name,every,sign", [("noisy", 2, -1), ("scaled", 4, +1)])
def test_ignoring_the_correlation_of_the_two_terms_gives_a_wrong_error(name, every, sign):
    """With O_a = O + eps the two terms are anticorrelated (the correction is -eps on the subset,
    the first term holds +eps there): adding their errors in quadrature overstates the error
    (coverage ~ 0.97); with O_a = O/2 - 1 they are positively correlated and quadrature
    understates it. The Γ-method on the combination covers in both (the test above)."""
    z, z_unc, corr = _coverage(name, every, seed=2)
    cover, cover_unc = np.mean(np.abs(z) < 1), np.mean(np.abs(z_unc) < 1)
    assert abs(cover - 0.6827) < BAND, cover
    assert sign * (0.6827 - cover_unc) > 2 * BAND, cover_unc
    assert sign * corr > 0.3, corr


def test_identities():
    rng = np.random.default_rng(5)
    O = 1.0 + ar1(rng, (3, 403), 0.6)
    # O_a = O: the correction vanishes, the result is the mean of the complete blocks
    r = ama(O, O[:, 1::4], every=4, offset=1)
    assert r.n_blocks == 100 and r.n_dropped == 3 and r.n_subset == 300 and r.n_all == 1200
    assert r.value == pytest.approx(O[:, :400].mean(), abs=1e-14)
    blocks = O[:, :400].reshape(3, 100, 4).mean(axis=2)
    assert r.error == pytest.approx(gamma_method(blocks).error, rel=1e-12)
    assert r.correction.error == 0.0
    # O_a = 0: the exact subset alone
    r0 = ama(np.zeros_like(O), O[:, ::4], every=4)
    g = gamma_method(O[:, ::4][:, :100])
    assert r0.value == pytest.approx(g.value, abs=1e-14)
    assert r0.error == pytest.approx(g.error, rel=1e-12)
    assert r0.exact.value == pytest.approx(g.value, abs=1e-14)
    # correction= and approx_subset= give the same as exact=
    Oa = O + 0.1 * rng.standard_normal(O.shape)
    a = ama(Oa, O[:, ::4], every=4)
    b = ama(Oa, correction=O[:, ::4] - Oa[:, ::4], every=4)
    c = ama(Oa, O[:, ::4], every=4, approx_subset=Oa[:, ::4])
    assert a.value == pytest.approx(b.value, abs=1e-14) == c.value
    assert a.error == pytest.approx(b.error, rel=1e-12)
    assert b.exact is None
    d = a.to_dict()
    assert set(d) >= {"value", "error", "tau_int", "error_uncorrelated", "correlation", "approx",
                      "correction", "exact", "every", "n_blocks"}


def test_refusals():
    x = np.ones((2, 40))
    with pytest.raises(ValueError, match="every"):
        ama(x, x[:, ::4], every=0)
    with pytest.raises(ValueError, match="offset"):
        ama(x, x[:, ::4], every=4, offset=4)
    with pytest.raises(ValueError, match="exactly one"):
        ama(x, every=4)
    with pytest.raises(ValueError, match="chains"):
        ama(x, x[:1, ::4], every=4)
    with pytest.raises(ValueError, match="at least 5"):
        ama(x[:, :16], x[:, :16:4], every=4)
    with pytest.raises(ValueError, match="NaN"):
        y = x.copy()
        y[0, 3] = np.nan
        ama(y, x[:, ::4], every=4)
    with pytest.raises(ValueError, match="more than"):
        ama(x, np.ones((2, 11)), every=4)


def test_ridge_regression():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 3)) * [1.0, 10.0, 0.01] + [0, 5, 1]
    y = 1.0 + X @ np.array([2.0, -0.3, 40.0])
    m = RidgeRegression(alpha=0.0).fit(X, y)
    np.testing.assert_allclose(m.predict(X), y, atol=1e-10)
    assert m.train_r2_ == pytest.approx(1.0)
    # a constant feature does not break the standardisation
    Xc = np.concatenate([X, np.ones((200, 1))], axis=1)
    np.testing.assert_allclose(RidgeRegression(1e-8).fit(Xc, y).predict(Xc), y, atol=1e-6)
    with pytest.raises(ValueError):
        RidgeRegression(-1.0)
    with pytest.raises(RuntimeError):
        RidgeRegression().predict(X)


def _regression_data(rng, R, N):
    f1, f2 = ar1(rng, (R, N), 0.8), ar1(rng, (R, N), 0.5)
    O = MU + 0.8 * f1 - 0.4 * f2 + 0.3 * ar1(rng, (R, N), 0.7)   # what the features miss
    F = np.stack([f1, f2, f1 * f2], axis=-1)
    return O, F


def test_ama_regression_covers_and_leaves_the_training_out():
    """The regression is trained on the first n_train subset measurements of every chain; those
    blocks enter neither term (n_all, n_subset), the pulls cover as for a fixed approximation, and
    the held-out R^2 is what the model explains."""
    rng = np.random.default_rng(7)
    every, n_train = 4, 20
    z, r2 = [], []
    for _ in range(300):
        O, F = _regression_data(rng, 4, 1000)
        res = ama_regression(F, F[:, ::every], O[:, ::every], every=every, n_train=n_train)
        z.append((res.value - MU) / res.error)
        r2.append(res.extra["heldout_r2"])
    z = np.array(z)
    assert res.n_all == 4 * (1000 - n_train * every) and res.n_subset == 4 * (250 - n_train)
    assert res.extra["n_train_samples"] == 4 * n_train
    assert isinstance(res.model, RidgeRegression)
    assert abs(np.mean(z)) < 4 / math.sqrt(300)
    band = 3.0 * math.sqrt(0.6827 * 0.3173 / 300)
    assert abs(np.mean(np.abs(z) < 1) - 0.6827) < band
    assert 0.7 < np.mean(r2) < 0.95     # 0.8 f1 - 0.4 f2 of variance 0.8, noise 0.09
    # no worse than the exact subset alone (every 4th of measurements with tau_int = 4.5 are
    # nearly independent already, so the gain is small here)
    assert res.error < res.exact.error
    with pytest.raises(ValueError, match="n_train"):
        ama_regression(F, F[:, ::every], O[:, ::every], every=every, n_train=250)
