"""Heatbath and over-relaxation for the Wilson action (lattice_ml.samplers.heatbath).

* exactness of the single-link kernels in a fixed, non-unitary staple: U(1) angle histogram and
  SU(2) a0 histogram (chi-square with equal-probability bins) against the exact densities,
  isotropy of the SU(2) vector part, SU(3) Cabibbo-Marinari against a Weyl integral and an
  importance-weighted Haar Monte Carlo; also with one fixed round, so that the fallback streams
  do most of the work;
* over-relaxation keeps the action per chain (also in 3D and 4D, which checks that the links
  of one direction and parity are independent), is an involution, and changes the links;
* 2D plaquettes against the exact character expansion (tests/gauge_exact.py) with Γ-method
  errors;
* links stay in the group, chains do not depend on the batch size, NumPy and array-api-strict
  agree, bad input is rejected.
"""

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from scipy.special import ive

from lattice_ml.backend import RandomStreams, namespace_by_name, to_numpy
from lattice_ml.gauge import GaugeAction
from lattice_ml.gauge.observables import average_plaquette
from lattice_ml.groups import check_links, haar_random, random_near_identity, trace
from lattice_ml.lattice import Lattice
from lattice_ml.samplers import HMC, Level, LieGroupSpace
from lattice_ml.samplers import heatbath as hbmod
from lattice_ml.samplers.heatbath import (Heatbath, HeatbathStep, heatbath_links,
                                          heatbath_sweep, overrelax_links,
                                          overrelaxation_sweep, subgroups)
from lattice_ml.stats import gamma_method

sys.path.insert(0, str(Path(__file__).parent))
from gauge_exact import sun_plaquette, u1_plaquette  # noqa: E402

NP = namespace_by_name("numpy")


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------
def equal_probability_chi2(samples, grid, pdf, n_bins=40):
    """Chi-square p-value of ``samples`` against the density ``pdf`` tabulated on ``grid``
    (bins of equal exact probability, from the trapezoidal CDF)."""
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (pdf[1:] + pdf[:-1]) * np.diff(grid))])
    cdf /= cdf[-1]
    edges = np.interp(np.linspace(0.0, 1.0, n_bins + 1), cdf, grid)
    edges[0], edges[-1] = grid[0] - 1e-9, grid[-1] + 1e-9
    observed, _ = np.histogram(samples, bins=edges)
    expected = np.full(n_bins, samples.size / n_bins)
    return stats.chisquare(observed, expected).pvalue


def fixed_staple(N, n_terms=3, seed=11):
    """A fixed staple: a sum of Haar elements with positive weights (not a group element)."""
    rng = RandomStreams(seed, 1, NP)
    g = to_numpy(haar_random(rng, (n_terms,), N))[0]
    w = np.array([1.0, 0.7, 0.45, 0.3, 0.2][:n_terms])
    return np.einsum("k,kij->ij", w, g)


def batch_of(M, n_chains, n_links):
    """The matrix ``M`` repeated as ``[n_chains, n_links, N, N]``."""
    return NP.asarray(np.broadcast_to(M, (n_chains, n_links) + M.shape).copy())


def u1_pdf_theta(theta, kappa, phi):
    return np.exp(kappa * (np.cos(theta + phi) - 1.0))


# ------------------------------------------------------------------------------------------
# quaternion helpers against matrices
# ------------------------------------------------------------------------------------------
def test_quaternion_product_projection_and_subgroups():
    rng = RandomStreams(3, 2, NP)
    a = tuple(rng.normal((7,)) for _ in range(4))
    b = tuple(rng.normal((7,)) for _ in range(4))
    A, B = (hbmod._qmatrix(NP, q, NP.complex128) for q in (a, b))
    AB = hbmod._qmatrix(NP, hbmod._qmul(a, b), NP.complex128)
    np.testing.assert_allclose(to_numpy(AB), to_numpy(A @ B), atol=1e-13)
    # projection: exact on quaternions; Re Tr[r w] = Re Tr[r proj(w)] for a general 2x2 w
    back = hbmod._qproject(NP, A[..., 0, 0], A[..., 0, 1], A[..., 1, 0], A[..., 1, 1])
    for x, y in zip(back, a):
        np.testing.assert_allclose(to_numpy(x), to_numpy(y), atol=1e-14)
    w = rng.complex_normal((7, 2, 2))
    r = haar_random(rng, (7,), 2)
    p = hbmod._qmatrix(NP, hbmod._qproject(NP, w[..., 0, 0], w[..., 0, 1], w[..., 1, 0],
                                           w[..., 1, 1]), NP.complex128)
    tr = lambda m: np.real(np.trace(to_numpy(m), axis1=-2, axis2=-1))  # noqa: E731
    np.testing.assert_allclose(tr(r @ w), tr(r @ p), atol=1e-13)
    assert subgroups(3) == [(0, 1), (0, 2), (1, 2)] and len(subgroups(5)) == 10


# ------------------------------------------------------------------------------------------
# 1. exactness of the single-link kernels
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kappa_target", [0.3, 2.5, 15.0])
@pytest.mark.parametrize("rounds", [hbmod.DEFAULT_ROUNDS, 1])
def test_u1_single_link_von_mises(kappa_target, rounds):
    V = fixed_staple(1)
    v = complex(V[0, 0])
    beta = kappa_target / abs(v)
    kappa, phi = beta * abs(v), math.atan2(v.imag, v.real)
    n_chains, n_links = 2, 25000
    rng = RandomStreams(100 + rounds, n_chains, NP)
    Vb = batch_of(V, n_chains, n_links)
    U = heatbath_links(NP.ones_like(Vb), Vb, beta, rng, rounds=rounds)
    u = to_numpy(U)[..., 0, 0].ravel()
    np.testing.assert_allclose(np.abs(u), 1.0, atol=1e-14)
    theta = np.angle(u)
    grid = np.linspace(-np.pi, np.pi, 200001)
    pdf = u1_pdf_theta(grid, kappa, phi)
    assert equal_probability_chi2(theta, grid, pdf) > 1e-3
    # teeth: a 10 % wrong coupling is rejected decisively by the same samples
    assert equal_probability_chi2(theta, grid, u1_pdf_theta(grid, 1.1 * kappa, phi)) < 1e-6 \
        or kappa < 1.0
    # the exact mean <Re(U V)> = |V| I1(kappa)/I0(kappa)
    re_uv = np.real(u * v)
    mean = abs(v) * ive(1, kappa) / ive(0, kappa)
    assert abs(re_uv.mean() - mean) < 4 * re_uv.std() / np.sqrt(re_uv.size)


def su2_a0_pdf(a0, alpha):
    return np.sqrt(np.clip(1.0 - a0 * a0, 0.0, None)) * np.exp(alpha * (a0 - 1.0))


@pytest.mark.parametrize("alpha_target", [0.8, 3.5, 12.0])  # Creutz, Kennedy-Pendleton, KP
@pytest.mark.parametrize("rounds", [hbmod.DEFAULT_ROUNDS, 1])
def test_su2_single_link_a0_and_isotropy(alpha_target, rounds):
    V = fixed_staple(2)
    k = math.sqrt(np.real(np.linalg.det(V)))
    W = V / k
    np.testing.assert_allclose(W @ W.conj().T, np.eye(2), atol=1e-13)  # V = k W, W in SU(2)
    beta = alpha_target / k
    n_chains, n_links = 2, 25000
    rng = RandomStreams(200 + rounds, n_chains, NP)
    Vb = batch_of(V, n_chains, n_links)
    U = heatbath_links(NP.ones_like(Vb), Vb, beta, rng, rounds=rounds)
    check_links(NP.reshape(U, (n_chains, 2, 1, n_links // 2, 2, 2)), 2)
    X = to_numpy(U) @ W  # density exp(alpha x0) dX
    a0 = 0.5 * np.real(np.trace(X, axis1=-2, axis2=-1)).ravel()
    grid = np.linspace(-1.0, 1.0, 400001)
    assert equal_probability_chi2(a0, grid, su2_a0_pdf(grid, beta * k)) > 1e-3
    assert equal_probability_chi2(a0, grid, su2_a0_pdf(grid, 1.1 * beta * k)) < 1e-6
    # isotropy of the vector part x = (b1, b2, b3) of X = x0 + i x.sigma
    b = np.stack([0.5 * np.imag(X[..., 0, 1] + X[..., 1, 0]),
                  0.5 * np.real(X[..., 0, 1] - X[..., 1, 0]),
                  0.5 * np.imag(X[..., 0, 0] - X[..., 1, 1])], axis=-1).reshape(-1, 3)
    n = b / np.linalg.norm(b, axis=1, keepdims=True)
    M = n.shape[0]
    assert np.all(np.abs(n.mean(axis=0)) < 4.5 * np.sqrt(1 / 3 / M))
    second = n.T @ n / M
    diag_err, off_err = np.sqrt(4 / 45 / M), np.sqrt(1 / 15 / M)
    assert np.all(np.abs(np.diag(second) - 1 / 3) < 4.5 * diag_err), second
    assert np.all(np.abs(second[np.triu_indices(3, 1)]) < 4.5 * off_err), second


def cm_chain(V, beta, n_chains=2, n_links=4000, n_therm=10, n_meas=30, seed=5, rounds=None):
    """Many independent copies of one SU(N) link in the fixed staple V, updated by
    Cabibbo-Marinari; returns the per-copy time averages of Re Tr(UV)/N and Re Tr(U)/N."""
    N = V.shape[-1]
    rng = RandomStreams(seed, n_chains, NP)
    Vb = batch_of(V, n_chains, n_links)
    U = haar_random(rng, (n_links,), N)
    acc = np.zeros((2, n_chains * n_links))
    kw = {} if rounds is None else {"rounds": rounds}
    for it in range(n_therm + n_meas):
        U = heatbath_links(U, Vb, beta, rng, **kw)
        if it >= n_therm:
            u = to_numpy(U)
            acc[0] += np.real(np.trace(u @ V, axis1=-2, axis2=-1)).ravel() / N
            acc[1] += np.real(np.trace(u, axis1=-2, axis2=-1)).ravel() / N
    check_links(NP.reshape(U, (n_chains, 2, 1, n_links // 2, N, N)), N)
    return acc / n_meas


@pytest.mark.parametrize("rounds", [None, 1])
def test_su3_cabibbo_marinari_single_link_weyl(rounds):
    """V = k G with G in SU(3): Re Tr(UV) = k Re Tr X with X = UG Haar, so
    <Re Tr(UV)>/3 = k * (the Weyl integral of tests/gauge_exact.py at coupling beta k)."""
    rng = RandomStreams(21, 1, NP)
    k = 1.7
    V = k * to_numpy(haar_random(rng, (), 3))[0]
    beta = 3.0
    exact = k * sun_plaquette(beta * k, 3, points=128)
    per_copy = cm_chain(V, beta, rounds=rounds)[0]
    err = per_copy.std() / np.sqrt(per_copy.size)  # copies are independent
    assert err < 0.004
    assert abs(per_copy.mean() - exact) < 4 * err, (per_copy.mean(), err, exact)
    # teeth: the SU(2) coupling with beta/N in place of 2 beta/N gives another value
    assert abs(k * sun_plaquette(0.5 * beta * k, 3, points=128) - exact) > 20 * err


def test_su3_cabibbo_marinari_general_staple_importance_sampling():
    """A general (non-unitary) staple: compare with an independent Monte Carlo of Haar-random
    SU(3) matrices (NumPy QR of Ginibre matrices, Mezzadri's phase fix) weighted with
    exp((beta/3) Re Tr UV). Exact up to its own, small and known, statistical error; the
    coupling is moderate so the weights are mild (ESS of several 10^4)."""
    V = fixed_staple(3, n_terms=4)
    beta = 3.5
    gen = np.random.default_rng(12345)
    M = 200000
    Z = (gen.standard_normal((M, 3, 3)) + 1j * gen.standard_normal((M, 3, 3))) / np.sqrt(2)
    Q, R = np.linalg.qr(Z)
    d = np.diagonal(R, axis1=-2, axis2=-1)
    Q = Q * (d / np.abs(d))[:, None, :]
    det = np.linalg.det(Q)
    Q = Q * (det ** (-1.0 / 3.0))[:, None, None]
    f = np.stack([np.real(np.trace(Q @ V, axis1=-2, axis2=-1)) / 3,
                  np.real(np.trace(Q, axis1=-2, axis2=-1)) / 3])
    logw = (beta / 3) * 3 * f[0]
    w = np.exp(logw - logw.max())
    ess = w.sum() ** 2 / (w * w).sum()
    assert ess > 2e4
    ref = (w * f).sum(axis=1) / w.sum()
    ref_err = np.sqrt(((w * (f - ref[:, None])) ** 2).sum(axis=1)) / w.sum()
    per_copy = cm_chain(V, beta, seed=8)
    mc = per_copy.mean(axis=1)
    mc_err = per_copy.std(axis=1) / np.sqrt(per_copy.shape[1])
    tot = np.hypot(mc_err, ref_err)
    assert tot[0] < 0.006
    assert np.all(np.abs(mc - ref) < 4 * tot), (mc, ref, tot)


# ------------------------------------------------------------------------------------------
# 2. over-relaxation
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("N", [1, 2, 3])
def test_overrelaxation_links_involution_and_invariance(xp_cpu, N):
    xp = xp_cpu
    rng = RandomStreams(4, 2, xp)
    U = haar_random(rng, (50,), N)
    V = haar_random(rng, (50,), N) + 0.6 * haar_random(rng, (50,), N) \
        + 0.3 * haar_random(rng, (50,), N)
    U1 = overrelax_links(U, V)
    re = lambda A: to_numpy(xp.real(trace(A @ V)))  # noqa: E731
    np.testing.assert_allclose(re(U1), re(U), atol=1e-12)
    assert np.max(np.abs(to_numpy(U1 - U))) > 0.1
    back = overrelax_links(U1, V, reverse=True)
    np.testing.assert_allclose(to_numpy(back), to_numpy(U), atol=1e-12)
    if N <= 2:  # a single reflection: an involution without reversing
        np.testing.assert_allclose(to_numpy(overrelax_links(U1, V)), to_numpy(U), atol=1e-12)
    else:  # each SU(2) subgroup step is an involution, the pass over all of them is not
        assert np.max(np.abs(to_numpy(overrelax_links(U1, V) - U))) > 1e-3


@pytest.mark.parametrize("N,shape", [(1, (4, 6)), (2, (4, 4)), (3, (4, 4)), (1, (4, 4, 4)),
                                     (3, (2, 4, 2)), (2, (2, 2, 2, 4))])
def test_overrelaxation_sweep_keeps_action_and_is_reversible(xp_cpu, N, shape):
    """Per chain, to round-off. In D >= 3 this also checks that the links of one direction and
    parity share no plaquette (otherwise simultaneous reflections would change S)."""
    xp = xp_cpu
    rng = RandomStreams(6, 3, xp)
    U = haar_random(rng, (len(shape), *shape), N)
    action = GaugeAction(2.0, N, "wilson")
    S0 = to_numpy(action.action(U))
    U1 = overrelaxation_sweep(U, 2.0, Lattice(shape))
    check_links(U1, N)
    np.testing.assert_allclose(to_numpy(action.action(U1)), S0, rtol=0,
                               atol=1e-11 * np.abs(S0).max())
    assert np.max(np.abs(to_numpy(U1 - U))) > 0.1
    U2 = overrelaxation_sweep(U1, reverse=True)
    np.testing.assert_allclose(to_numpy(U2), to_numpy(U), atol=1e-10)


# ------------------------------------------------------------------------------------------
# 3. 2D plaquettes against the exact results
# ------------------------------------------------------------------------------------------
def run_heatbath(N, beta, n_or=1, shape=(8, 8), n_chains=16, n_therm=20, n_meas=200, seed=3):
    rng = RandomStreams(seed, n_chains, NP)
    sampler = Heatbath(beta, N, n_or=n_or)
    U = random_near_identity(rng, (len(shape), *shape), N, 0.0)  # cold start
    hist, rounds = [], []
    for k in range(n_therm + n_meas):
        U, info = sampler.step(U, rng)
        rounds.append(to_numpy(info.mean_rounds))
        if k >= n_therm:
            hist.append(to_numpy(average_plaquette(U)))
    check_links(U, N)
    return gamma_method(np.array(hist).T), float(np.mean(rounds))


@pytest.mark.parametrize("beta,n_or", [(1.0, 0), (2.0, 1), (4.0, 2)])
def test_u1_2d_plaquette_exact_finite_volume(beta, n_or):
    res, rounds = run_heatbath(1, beta, n_or=n_or)
    exact = u1_plaquette(beta, 64)
    assert 1.0 <= rounds < 1.6
    assert res.error < 0.005
    assert abs(res.value - exact) < 4 * res.error, (res.value, res.error, exact)


@pytest.mark.parametrize("N,beta,n_meas,n_or", [
    (2, 2.0, 150, 1), (2, 4.0, 150, 2), (3, 3.0, 100, 1),
    pytest.param(3, 6.0, 300, 2, marks=pytest.mark.slow),
    pytest.param(4, 6.0, 200, 2, marks=pytest.mark.slow),
    pytest.param(5, 10.0, 200, 2, marks=pytest.mark.slow),
])
def test_sun_2d_plaquette_exact(N, beta, n_meas, n_or):
    exact = sun_plaquette(beta, N, points=96 if N < 4 else 40)
    assert 64 * exact ** 64 < 1e-6  # finite-volume corrections of the character sum
    res, rounds = run_heatbath(N, beta, n_or=n_or, n_meas=n_meas, n_chains=12 if N == 2 else 8)
    assert 1.0 <= rounds < 1.6
    assert res.error < 0.005
    assert abs(res.value - exact) < 4 * res.error, (res.value, res.error, exact)


@pytest.mark.slow
def test_4d_su2_heatbath_agrees_with_hmc():
    """4D, where every link has 6 staples: heatbath+OR and HMC sample the same plaquette. HMC
    starts from the heatbath's last configuration (the start does not bias either chain)."""
    beta, shape, n_chains = 2.3, (4, 4, 4, 4), 4
    rng = RandomStreams(9, n_chains, NP)
    U = random_near_identity(rng, (4, *shape), 2, 0.0)
    sampler = Heatbath(beta, 2, n_or=2)
    hist = []
    for k in range(350):
        U, _ = sampler.step(U, rng)
        if k >= 50:
            hist.append(to_numpy(average_plaquette(U)))
    res_hb = gamma_method(np.array(hist).T)
    hmc = HMC([Level([GaugeAction(beta, 2, "wilson")], 10, "omelyan")], LieGroupSpace(2),
              tau=1.0, tau_jitter=0.3)
    hist = []
    for k in range(310):
        U, _ = hmc.step(U, rng)
        if k >= 10:
            hist.append(to_numpy(average_plaquette(U)))
    res_hmc = gamma_method(np.array(hist).T)
    assert res_hb.error < 0.001 and res_hmc.error < 0.002
    assert abs(res_hb.value - res_hmc.value) < 4 * np.hypot(res_hb.error, res_hmc.error), (
        res_hb.value, res_hb.error, res_hmc.value, res_hmc.error)


# ------------------------------------------------------------------------------------------
# 4. group, batch independence, backends, bad input
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("N", [1, 2, 3])
def test_links_stay_in_group_without_reunitarisation(N):
    rng = RandomStreams(8, 2, NP)
    U = haar_random(rng, (3, 4, 4, 4), N)
    sampler = Heatbath(1.5, N, n_or=3, reunitarize=False)
    for _ in range(15):
        U, _ = sampler.step(U, rng)
    check_links(U, N, tol=1e-12)


@pytest.mark.parametrize("N", [1, 2, 3])
@pytest.mark.parametrize("rounds", [hbmod.DEFAULT_ROUNDS, 1])
def test_chains_do_not_depend_on_batch_size(N, rounds):
    """Chain b gives the same links with 2 or 5 chains, also when the fallback streams are used
    (rounds = 1: about a third of the links need them)."""
    out, fallback = [], []
    for n_chains in (2, 5):
        rng = RandomStreams(17, n_chains, NP)
        U = haar_random(rng, (2, 4, 4), N)
        sampler = Heatbath(2.0, N, n_or=1, rounds=rounds)
        for _ in range(3):
            U, info = sampler.step(U, rng)
            fallback.append(info.fallback_rounds)
        out.append(to_numpy(U))
    np.testing.assert_array_equal(out[0], out[1][:2])
    if rounds == 1:
        assert min(fallback) > 0


@pytest.mark.parametrize("N", [1, 2, 3])
def test_numpy_and_array_api_strict_agree(N):
    res = []
    for name in ("numpy", "array_api_strict"):
        xp = namespace_by_name(name)
        rng = RandomStreams(23, 2, xp)
        U = haar_random(rng, (3, 2, 4, 2), N)
        sampler = Heatbath(1.8, N, n_or=2, rounds=2)
        for _ in range(2):
            U, info = sampler.step(U, rng)
        U = heatbath_sweep(U, 0.7, rng)
        U = overrelaxation_sweep(U)
        res.append((to_numpy(U), to_numpy(info.mean_rounds)))
    np.testing.assert_allclose(res[0][0], res[1][0], atol=1e-12)
    np.testing.assert_allclose(res[0][1], res[1][1], atol=1e-12)


def test_step_info_and_plain_sweep():
    rng = RandomStreams(1, 3, NP)
    U = haar_random(rng, (2, 4, 4), 3)
    sampler = Heatbath(3.0, 3, n_or=2)
    U1, info = sampler.step(U, rng)
    assert isinstance(info, HeatbathStep) and info.n_or == 2
    assert to_numpy(info.mean_rounds).shape == (3,)
    assert np.all(to_numpy(info.mean_rounds) >= 1.0)
    assert not hasattr(info, "accepted")  # the run loop reports acceptance 1 for such samplers
    check_links(U1, 3)
    U2 = heatbath_sweep(U1, 3.0, rng, Lattice((4, 4)))
    check_links(U2, 3)
    assert "n_or=2" in repr(sampler)


def test_single_precision():
    rng = RandomStreams(2, 2, NP, dtype="float32")
    U = haar_random(rng, (2, 4, 4), 3)
    assert U.dtype == NP.complex64
    sampler = Heatbath(3.0, 3, n_or=1)
    for _ in range(3):
        U, _ = sampler.step(U, rng)
    assert U.dtype == NP.complex64
    check_links(U, 3)


def test_zero_staple_gives_haar():
    """beta = 0 (or V = 0): the kernels are Haar, no division by zero."""
    rng = RandomStreams(4, 2, NP)
    V = NP.zeros((2, 20000, 2, 2), dtype=NP.complex128)
    U = heatbath_links(NP.ones_like(V), V, 2.0, rng)
    a0 = 0.5 * np.real(np.trace(to_numpy(U), axis1=-2, axis2=-1)).ravel()
    grid = np.linspace(-1, 1, 200001)
    assert equal_probability_chi2(a0, grid, su2_a0_pdf(grid, 0.0)) > 1e-3
    Vu = NP.zeros((2, 100, 1, 1), dtype=NP.complex128)
    Uu = heatbath_links(NP.ones_like(Vu), Vu, 1.0, rng)
    np.testing.assert_allclose(np.abs(to_numpy(Uu)), 1.0, atol=1e-14)
    np.testing.assert_allclose(to_numpy(overrelax_links(Uu, Vu)), np.conj(to_numpy(Uu)),
                               atol=1e-15)


def test_bad_input():
    rng = RandomStreams(1, 2, NP)
    U = haar_random(rng, (2, 4, 4), 2)
    with pytest.raises(ValueError, match="not unitary"):
        heatbath_sweep(1.01 * U, 2.0, rng)
    with pytest.raises(ValueError, match="layout"):
        heatbath_sweep(U[:, 0, ...], 2.0, rng)
    with pytest.raises(ValueError, match="N = 3"):
        Heatbath(2.0, 3).step(U, rng)
    with pytest.raises(ValueError, match="even extents"):
        heatbath_sweep(haar_random(rng, (2, 4, 3), 2), 2.0, rng)
    with pytest.raises(ValueError, match="do not live on"):
        heatbath_sweep(U, 2.0, rng, Lattice((4, 6)))
    with pytest.raises(ValueError, match="beta"):
        Heatbath(-1.0, 2)
    with pytest.raises(ValueError, match="beta"):
        heatbath_sweep(U, float("nan"), rng)
    with pytest.raises(ValueError, match="n_or"):
        Heatbath(1.0, 2, n_or=-1)
    with pytest.raises(ValueError, match="rounds"):
        Heatbath(1.0, 2, rounds=0)
    with pytest.raises(ValueError, match="chains"):
        heatbath_sweep(U, 2.0, RandomStreams(1, 3, NP))
    with pytest.raises(ValueError, match="namespace"):
        heatbath_sweep(U, 2.0, RandomStreams(1, 2, namespace_by_name("array_api_strict")))
    with pytest.raises(ValueError, match="shape"):
        heatbath_links(U, U[:, :1], 2.0, rng)
    bad = NP.asarray(np.where(np.arange(2)[:, None, None, None, None, None] == 0, np.nan,
                              to_numpy(U)))
    with pytest.raises(ValueError, match="non-finite"):
        overrelaxation_sweep(bad)


def test_non_finite_staples_are_rejected_and_rejection_loop_is_bounded(monkeypatch):
    rng = RandomStreams(1, 2, NP)
    V = NP.full((2, 3, 1, 1), complex(np.nan, 0.0))
    with pytest.raises(ValueError, match="non-finite"):
        heatbath_links(NP.ones_like(V), V, 1.0, rng)
    # a proposal that is never accepted raises after MAX_FALLBACK_ROUNDS further rounds
    monkeypatch.setattr(hbmod, "MAX_FALLBACK_ROUNDS", 5)
    u = rng.uniform((2 * 3, 4))
    seed_u = rng.uniform(())

    def never(ur):
        return ur[..., 0, :], ur[..., 0, :] > 2.0

    fb = hbmod._Fallback(rng, seed_u, NP.float64, None)
    with pytest.raises(RuntimeError, match="accepted no proposal"):
        hbmod._rejection(NP, never, u, 2, fb)
    assert fb.rounds == 2 * 5
