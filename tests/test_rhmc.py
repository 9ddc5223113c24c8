"""Rooted staggered RHMC action: force against finite differences along every generator, the
refresh identity S_f = |eta|^2 within the combined rational-approximation bound, the spectral
bound of D^dag D, gauge invariance and reversibility of an HMC trajectory; fermion forces through
stout-smeared links."""

import numpy as np
import pytest

from lattice_ml.backend import RandomStreams, namespace_by_name, to_numpy
from lattice_ml.fermions.rhmc import StaggeredRationalAction, staggered_spectral_bounds
from lattice_ml.fermions.staggered import StaggeredDirac
from lattice_ml.fermions.staggered_pseudofermion import StaggeredPseudofermionAction
from lattice_ml.fermions.wilson import colour_mul
from lattice_ml.gauge import GaugeAction
from lattice_ml.groups import gauge_transform, random_gauge_transformation, random_near_identity
from lattice_ml.samplers import Level, LieGroupSpace, integrate

from fd_checks import assert_force_matches_fd


def _setup(xp, N, shape, power=0.25, mass=0.3, degree=10, seed=1, n_chains=1, spread=0.5):
    D = len(shape)
    rng = RandomStreams(seed, n_chains, xp)
    U = random_near_identity(rng, (D, *shape), N, spread)
    act = StaggeredRationalAction(mass, N, power, degree=degree, tol=1e-13)
    act.refresh(U, rng)
    return rng, U, act


@pytest.mark.parametrize("N,shape,power", [(1, (4, 4), 0.25), (2, (4, 4), 0.5),
                                           (3, (2, 2, 2, 4), 0.25), (1, (2, 2, 4, 4), 0.125)])
def test_force_is_minus_derivative_along_every_generator(xp_cpu, N, shape, power):
    if N == 3 and xp_cpu is not namespace_by_name("numpy"):
        pytest.skip("SU(3) 4D: NumPy only (time)")
    _, U, act = _setup(xp_cpu, N, shape, power)
    assert_force_matches_fd(act, U, xp_cpu, h=1e-4, rel=1e-8)


def test_force_components_are_nontrivial():
    xp = namespace_by_name("numpy")
    _, U, act = _setup(xp, 2, (4, 4))
    F = to_numpy(act.force(U))
    assert np.min(np.abs(F).reshape(2, -1).max(axis=1)) > 1e-2  # every direction gets a force


def test_refresh_gives_eta_squared_within_rational_bound(xp_cpu):
    """S_f = eta^dag r' r r' eta and |r' r r' - 1| <= (1+e1)^2 (1+e2) - 1 on [lo, hi]."""
    xp = xp_cpu
    n_chains = 8
    rng, U, act = _setup(xp, 2, (4, 4), power=0.25, mass=0.2, degree=6, n_chains=n_chains,
                         spread=0.8)
    bound = act.error_bound
    assert 1e-9 < bound < 1e-5  # degree 6 on [0.04, 4.04]: a visible but small error
    s = to_numpy(act.action(U))
    eta2 = np.sum(np.abs(to_numpy(act.eta)) ** 2, axis=(1, 2, 3, 4))
    rel = np.abs(s - eta2) / eta2
    assert np.all(rel <= bound + 1e-11), (rel, bound)
    # and the approximation is not trivially exact: the deviation is seen at degree 6
    assert rel.max() > 1e-3 * bound
    # higher degree: a much smaller bound, still respected
    rng, U, act = _setup(xp, 2, (4, 4), power=0.25, mass=0.2, degree=10, n_chains=n_chains,
                         spread=0.8)
    s = to_numpy(act.action(U))
    eta2 = np.sum(np.abs(to_numpy(act.eta)) ** 2, axis=(1, 2, 3, 4))
    assert np.max(np.abs(s - eta2) / eta2) <= act.error_bound + 1e-11


def test_spectral_bound_contains_spectrum():
    """Dense spectra of D^dag D on rough 2D and 4D fields lie inside [m^2, m^2 + D^2]; power
    iteration (spectral_check) agrees with the dense extremes."""
    xp = namespace_by_name("numpy")
    for N, shape in [(1, (4, 4)), (3, (2, 2, 2, 2))]:
        D = len(shape)
        rng = RandomStreams(3, 2, xp)
        U = random_near_identity(rng, (D, *shape), N, 3.0)  # far from the identity
        mass = 0.1
        S = StaggeredDirac(U, mass, check=False)
        n = int(np.prod(shape)) * N
        cols = []
        for k in range(n):
            e = np.zeros((1, *shape, 1, N), dtype=np.complex128)
            e.flat[k] = 1.0
            e = np.repeat(e, 2, axis=0)
            cols.append(to_numpy(S.normal(xp.asarray(e))).reshape(2, n))
        ev = np.linalg.eigvalsh(np.stack(cols, axis=-1))
        lo, hi = staggered_spectral_bounds(mass, D)
        assert ev.min() >= lo * (1 - 1e-12) and ev.max() <= hi
        act = StaggeredRationalAction(mass, N, 0.25, degree=6)
        lmin, lmax = act.spectral_check(U, rng, iters=300)
        assert np.all(lmax <= ev.max(axis=1) + 1e-10) and np.all(lmax > 0.9 * ev.max(axis=1))
        assert np.all(lmin >= ev.min(axis=1) - 1e-10)


def test_range_not_covering_the_bound_raises():
    xp = namespace_by_name("numpy")
    U = random_near_identity(RandomStreams(1, 1, xp), (2, 4, 4), 1, 0.1)
    act = StaggeredRationalAction(0.2, 1, 0.25, lo=0.04, hi=3.0, degree=4)
    with pytest.raises(ValueError, match="spectral bound"):
        act.action(U)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        StaggeredRationalAction(0.2, 1, 1.0)


def test_default_range_follows_the_dimension_of_each_lattice():
    """Without a user range the approximation is rebuilt on the bound of each lattice's D
    (reusing one action in 2D and then 4D must not keep the 2D range)."""
    act = StaggeredRationalAction(0.3, 1, 0.5, degree=4)
    act.build(2)
    assert (act.lo, act.hi) == staggered_spectral_bounds(0.3, 2)
    act.build(4)
    assert (act.lo, act.hi) == staggered_spectral_bounds(0.3, 4)


def test_gauge_invariance():
    xp = namespace_by_name("numpy")
    rng, U, act = _setup(xp, 3, (2, 2, 2, 4), n_chains=2, spread=0.8)
    s0 = to_numpy(act.action(U))
    g = random_gauge_transformation(rng, (2, 2, 2, 4), 3)
    act.phi = colour_mul(g, act.phi)
    s1 = to_numpy(act.action(gauge_transform(U, g)))
    np.testing.assert_allclose(s1, s0, rtol=1e-11)


@pytest.mark.parametrize("N", [1, 2])
def test_md_reversible(xp_cpu, N):
    xp = xp_cpu
    rng, U, ferm = _setup(xp, N, (4, 4), power=0.25, mass=0.2, degree=8, n_chains=2)
    space = LieGroupSpace(N)
    P = space.sample_momenta(U, rng)
    levels = [Level([ferm], 3, "omelyan"), Level([GaugeAction(2.0, N)], 2, "omelyan")]
    U1, P1 = integrate(U, P, levels, space, 1.0)
    assert np.max(np.abs(to_numpy(U1) - to_numpy(U))) > 0.1
    U2, P2 = integrate(U1, -P1, levels, space, 1.0)
    np.testing.assert_allclose(to_numpy(U2), to_numpy(U), atol=1e-11)
    np.testing.assert_allclose(to_numpy(-P2), to_numpy(P), atol=1e-11)


def test_pseudofermion_hmc_step_runs_and_refreshes():
    from lattice_ml.samplers import PseudofermionHMC
    xp = namespace_by_name("numpy")
    rng, U, ferm = _setup(xp, 1, (4, 4), power=0.25, mass=0.2, degree=8, n_chains=4)
    hmc = PseudofermionHMC([Level([ferm], 4, "omelyan"), Level([GaugeAction(2.0, 1)], 2)],
                           LieGroupSpace(1), tau=1.0)
    assert hmc.fermion_actions == (ferm,)
    phi0 = to_numpy(ferm.phi)
    U, step = hmc.step(U, rng)
    assert not np.allclose(to_numpy(ferm.phi), phi0)
    assert np.all(np.abs(to_numpy(step.delta_h)) < 0.5)


# ------------------------------------------------------------------------------------------
# fermion forces through stout-smeared links
# ------------------------------------------------------------------------------------------
def _smeared(xp, N, inner, seed=11, n_chains=1, spread=0.5):
    from lattice_ml.fermions.smeared_fermion_action import SmearedFermionAction
    from lattice_ml.smearing import StoutSmearing
    rng = RandomStreams(seed, n_chains, xp)
    U = random_near_identity(rng, (2, 4, 4), N, spread)
    act = SmearedFermionAction(inner, StoutSmearing(2, "plaquette", D=2, rho=0.12))
    act.refresh(U, rng)
    return rng, U, act


@pytest.mark.parametrize("N", [1, 2])
def test_wilson_force_through_two_stout_layers_matches_fd(xp_cpu, N):
    from lattice_ml.fermions.pseudofermion import WilsonPseudofermionAction
    _, U, act = _smeared(xp_cpu, N, WilsonPseudofermionAction(0.2, N, tol=1e-13))
    assert_force_matches_fd(act, U, xp_cpu, h=1e-4, rel=1e-8)


def test_staggered_rhmc_force_through_two_stout_layers_matches_fd():
    xp = namespace_by_name("numpy")
    _, U, act = _smeared(xp, 2, StaggeredRationalAction(0.3, 2, 0.25, degree=10, tol=1e-13))
    assert_force_matches_fd(act, U, xp, h=1e-4, rel=1e-8)


def test_smeared_fermion_action_gauge_invariant_and_refresh_identity():
    from lattice_ml.fermions.pseudofermion import WilsonPseudofermionAction
    from lattice_ml.samplers import PseudofermionHMC
    xp = namespace_by_name("numpy")
    rng, U, act = _smeared(xp, 2, WilsonPseudofermionAction(0.2, 2, tol=1e-14), n_chains=2,
                           spread=0.8)
    s0 = to_numpy(act.action(U))
    # phi = D[U']^dag eta => S = |eta|^2 exactly at the smeared links
    eta2 = np.sum(np.abs(to_numpy(act.eta)) ** 2, axis=(1, 2, 3, 4))
    np.testing.assert_allclose(s0, eta2, rtol=1e-11)
    g = random_gauge_transformation(rng, (4, 4), 2)
    act.phi = colour_mul(g, act.phi)
    np.testing.assert_allclose(to_numpy(act.action(gauge_transform(U, g))), s0, rtol=1e-11)
    # PseudofermionHMC finds it through its refresh method
    hmc = PseudofermionHMC([Level([act], 2, "omelyan"), Level([GaugeAction(2.0, 2)], 2)],
                           LieGroupSpace(2), tau=0.5)
    assert hmc.fermion_actions == (act,)


# ------------------------------------------------------------------------------------------
# 2D U(1) with rooted staggered fermions, det(D^dag D)^p: RHMC against quenched heatbath
# configurations reweighted by the exact determinant (dense staggered matrix, slogdet).
# ------------------------------------------------------------------------------------------
def _log_det_normal_staggered(U):
    """log det(D_st^dag D_st) = 2 log|det D_st| per configuration (dense matrix, m = 0 part
    added back by the caller's mass)."""
    xp = namespace_by_name("numpy")
    S = StaggeredDirac(U, STAGGERED_RW["mass"], check=False)
    sites, N = S.sites, S.N
    n = int(np.prod(sites)) * N
    cols = []
    for k in range(n):
        e = np.zeros((1, *sites, 1, N), dtype=np.complex128)
        e.flat[k] = 1.0
        cols.append(to_numpy(S.apply(xp.asarray(e))).reshape(U.shape[0], n))
    _, logabs = np.linalg.slogdet(np.stack(cols, axis=-1))
    return 2.0 * logabs


STAGGERED_RW = dict(beta=2.0, mass=0.1, L=4)


def _plaquette_u1(U, beta):
    return to_numpy(-GaugeAction(beta, 1).action(U)) / (beta * U.shape[2] * U.shape[3])


def staggered_reweighted(power, n_chains, n_quenched, seed):
    """``(quenched, reweighted, U_start, rng)`` for the plaquette of 2D U(1) 4x4 with
    det(D_st^dag D_st)^power: quenched heatbath configurations, the same reweighted exactly,
    the thermalised start links and the advanced streams (also tests/test_slhmc.py)."""
    from lattice_ml.samplers import Heatbath
    from lattice_ml.stats import gamma_method, reweight

    xp = namespace_by_name("numpy")
    beta, mass, L = STAGGERED_RW["beta"], STAGGERED_RW["mass"], STAGGERED_RW["L"]
    rng = RandomStreams(seed, n_chains, xp)
    U = xp.ones((n_chains, 2, L, L, 1, 1), dtype=xp.complex128)
    hb = Heatbath(beta, 1, n_or=1)
    for _ in range(20):
        U, _ = hb.step(U, rng)
    U_start = U
    plaq, logw = [], []
    for _ in range(n_quenched):
        U, _ = hb.step(U, rng)
        plaq.append(_plaquette_u1(U, beta))
        logw.append(power * _log_det_normal_staggered(U))
    plaq, logw = np.array(plaq).T, np.array(logw).T
    return gamma_method(plaq), reweight(plaq, logw), U_start, rng


def staggered_comparison(power, n_chains, n_quenched, n_hmc, n_therm=12, seed=31, degree=12,
                         unrooted=False):
    """(quenched, reweighted, dynamical, acceptance) for the plaquette of 2D U(1) 4x4 with
    det(D_st^dag D_st)^power: heatbath + exact reweighting against RHMC (``unrooted``: power
    1/2 as the even/odd CG pseudofermion of det D_st)."""
    from lattice_ml.samplers import PseudofermionHMC
    from lattice_ml.stats import gamma_method

    beta, mass = STAGGERED_RW["beta"], STAGGERED_RW["mass"]
    quenched, reweighted, U_start, rng = staggered_reweighted(power, n_chains, n_quenched, seed)
    if unrooted:
        assert power == 0.5
        ferm = StaggeredPseudofermionAction(mass, 1, tol=1e-10)
    else:
        ferm = StaggeredRationalAction(mass, 1, power, degree=degree, tol=1e-10)
    hmc = PseudofermionHMC([Level([ferm], 2, "omelyan"), Level([GaugeAction(beta, 1)], 2, "omelyan")],
                           LieGroupSpace(1), tau=1.0, tau_jitter=0.2)
    U = U_start
    dyn, acc = [], []
    for it in range(n_therm + n_hmc):
        U, step = hmc.step(U, rng)
        acc.append(np.mean(to_numpy(step.accepted)))
        if it >= n_therm:
            dyn.append(_plaquette_u1(U, beta))
    if not unrooted:
        assert ferm.error_bound < 1e-8   # the rational error is far below the statistical one
    return quenched, reweighted, gamma_method(np.array(dyn).T), float(np.mean(acc))


def _check_staggered(q, r, d, acc, n_sigma_effect=3.0):
    assert acc > 0.8
    assert abs(r.value - d.value) < 4 * np.hypot(r.error, d.error), (r, d)
    # the determinant matters: the dynamical plaquette differs from the quenched one
    assert abs(d.value - q.value) > n_sigma_effect * np.hypot(q.error, d.error), (q, d)


def test_staggered_rhmc_agrees_with_reweighted_quenched():
    """p = 1/2: det D_st, two flavours (tastes) in 2D."""
    q, r, d, acc = staggered_comparison(0.5, n_chains=32, n_quenched=40, n_hmc=30, n_therm=8)
    _check_staggered(q, r, d, acc)


def test_unrooted_staggered_hmc_agrees_with_reweighted_quenched():
    """det D_st without a root: the even/odd CG pseudofermion (StaggeredPseudofermionAction)."""
    q, r, d, acc = staggered_comparison(0.5, n_chains=32, n_quenched=40, n_hmc=30, n_therm=8,
                                        unrooted=True)
    _check_staggered(q, r, d, acc)


@pytest.mark.slow
@pytest.mark.parametrize("power", [0.5, 0.25])
def test_staggered_rhmc_agrees_with_reweighted_quenched_high_statistics(power):
    """p = 1/2 (two flavours) and the rooted p = 1/4 (one flavour) with more statistics."""
    q, r, d, acc = staggered_comparison(power, n_chains=64, n_quenched=300, n_hmc=200,
                                        n_therm=20, seed=32)
    _check_staggered(q, r, d, acc)
    assert d.error < 0.0025
