"""Two-flavour Wilson pseudofermions: force against finite differences along every generator,
gauge invariance, the refresh identity S_f = |eta|^2, HMC reversibility and dH ~ eps^2, and the
2D Schwinger model against quenched configurations reweighted by the exact determinant."""

import sys
from pathlib import Path

import numpy as np
import pytest

from lattice_ml.backend import RandomStreams, namespace_by_name, to_numpy
from lattice_ml.fermions.pseudofermion import WilsonPseudofermionAction
from lattice_ml.samplers import PseudofermionHMC
from lattice_ml.fermions.wilson import WilsonDirac, colour_mul
from lattice_ml.gauge import GaugeAction
from lattice_ml.groups import gauge_transform, random_gauge_transformation, random_near_identity
from lattice_ml.samplers import HMC, Level, LieGroupSpace, integrate

sys.path.insert(0, str(Path(__file__).parent))
from fd_checks import worst_fd_deviation  # noqa: E402


def _fd_check(xp, N, shape, even_odd, mass=0.2, h=1e-4):
    D = len(shape)
    rng = RandomStreams(1, 1, xp)
    U = random_near_identity(rng, (D, *shape), N, 0.5)
    act = WilsonPseudofermionAction(mass, N, tol=1e-13, even_odd=even_odd)
    act.refresh(U, rng)
    return worst_fd_deviation(act, U, xp, h=h, min_component=1e-3)


@pytest.mark.parametrize("N,shape", [(1, (4, 4)), (2, (4, 4)), (3, (2, 2, 2, 4))])
@pytest.mark.parametrize("even_odd", [False, True])
def test_force_is_minus_derivative_along_every_generator(xp_cpu, N, shape, even_odd):
    if N == 3 and xp_cpu is not namespace_by_name("numpy"):
        pytest.skip("SU(3) 4D: NumPy only (time); array-api-strict is compared with NumPy below")
    assert _fd_check(xp_cpu, N, shape, even_odd) < 1e-8


@pytest.mark.parametrize("even_odd", [False, True])
def test_array_api_strict_agrees_with_numpy_su3_4d(even_odd):
    out = []
    for name in ("numpy", "array_api_strict"):
        xp = namespace_by_name(name)
        rng = RandomStreams(2, 2, xp)
        U = random_near_identity(rng, (4, 2, 2, 2, 4), 3, 0.6)
        act = WilsonPseudofermionAction(0.2, 3, tol=1e-13, even_odd=even_odd)
        act.refresh(U, rng)
        out.append((to_numpy(act.action(U)), to_numpy(act.force(U))))
    np.testing.assert_allclose(out[1][0], out[0][0], rtol=1e-12)
    np.testing.assert_allclose(out[1][1], out[0][1], atol=1e-11)


@pytest.mark.parametrize("N,shape", [(1, (4, 4)), (3, (2, 2, 2, 4))])
def test_gauge_invariance(N, shape):
    xp = namespace_by_name("numpy")
    rng = RandomStreams(4, 2, xp)
    D = len(shape)
    U = random_near_identity(rng, (D, *shape), N, 0.8)
    act = WilsonPseudofermionAction(0.1, N, tol=1e-13)
    act.refresh(U, rng)
    s0 = to_numpy(act.action(U))
    g = random_gauge_transformation(rng, shape, N)
    act.phi = colour_mul(g, act.phi)
    s1 = to_numpy(act.action(gauge_transform(U, g)))
    np.testing.assert_allclose(s1, s0, rtol=1e-11)


@pytest.mark.parametrize("even_odd", [False, True])
def test_refresh_gives_action_eta_squared(xp_cpu, even_odd):
    """phi = D^dag eta  =>  S_f = eta^dag eta exactly; <|eta|^2> = complex dofs."""
    xp = xp_cpu
    n_chains = 64
    rng = RandomStreams(7, n_chains, xp)
    shape = (4, 4)
    U = random_near_identity(rng, (2, *shape), 2, 0.7)
    act = WilsonPseudofermionAction(0.05, 2, tol=1e-14, even_odd=even_odd)
    act.refresh(U, rng)
    s = to_numpy(act.action(U))
    eta2 = np.sum(np.abs(to_numpy(act.eta)) ** 2, axis=(1, 2, 3, 4))
    np.testing.assert_allclose(s, eta2, rtol=1e-11)
    n_dof = 16 * 2 * 2 // (2 if even_odd else 1)  # volume x spin x colour
    # |eta|^2 is a sum of n_dof unit exponentials: mean n_dof, variance n_dof
    assert abs(s.mean() - n_dof) < 5 * np.sqrt(n_dof / n_chains)


def test_unset_phi_raises():
    xp = namespace_by_name("numpy")
    U = random_near_identity(RandomStreams(1, 1, xp), (2, 4, 4), 1, 0.1)
    with pytest.raises(RuntimeError, match="refresh"):
        WilsonPseudofermionAction(0.1, 1).action(U)


def _pf_setup(xp, N, n_chains, seed=5, beta=2.0, mass=0.1, tol=1e-13):
    rng = RandomStreams(seed, n_chains, xp)
    U = random_near_identity(rng, (2, 4, 4), N, 0.5)
    gauge = GaugeAction(beta, N)
    ferm = WilsonPseudofermionAction(mass, N, tol=tol)
    return rng, U, gauge, ferm


@pytest.mark.parametrize("N", [1, 2])
def test_md_reversible_with_two_time_scales(xp_cpu, N):
    xp = xp_cpu
    rng, U, gauge, ferm = _pf_setup(xp, N, 2)
    space = LieGroupSpace(N)
    ferm.refresh(U, rng)
    P = space.sample_momenta(U, rng)
    levels = [Level([ferm], 3, "omelyan"), Level([gauge], 2, "omelyan")]
    U1, P1 = integrate(U, P, levels, space, 1.0)
    assert np.max(np.abs(to_numpy(U1) - to_numpy(U))) > 0.1
    U2, P2 = integrate(U1, -P1, levels, space, 1.0)
    # zero-start CG makes the force a deterministic function of U: measured 1e-14
    np.testing.assert_allclose(to_numpy(U2), to_numpy(U), atol=1e-11)
    np.testing.assert_allclose(to_numpy(-P2), to_numpy(P), atol=1e-11)


def test_delta_h_scales_as_eps_squared():
    xp = namespace_by_name("numpy")
    rng, U, gauge, ferm = _pf_setup(xp, 2, 2)
    space = LieGroupSpace(2)
    ferm.refresh(U, rng)
    P = space.sample_momenta(U, rng)
    dh = []
    for n in (6, 12, 24):
        hmc = HMC([Level([gauge, ferm], n, "leapfrog")], space, tau=1.0)
        Un, Pn, _ = hmc.trajectory(U, P)
        dh.append(np.mean(np.abs(to_numpy(hmc.hamiltonian(Un, Pn) - hmc.hamiltonian(U, P)))))
    # measured: 0.122, 0.0287, 0.00708 (ratios 4.24, 4.06)
    assert 3.6 < dh[0] / dh[1] < 4.5 and 3.7 < dh[1] / dh[2] < 4.3, dh


def test_pseudofermion_hmc_chains_independent_of_batch():
    xp = namespace_by_name("numpy")
    out = []
    for n_chains in (2, 3):
        rng, U, gauge, ferm = _pf_setup(xp, 1, n_chains, tol=1e-12)
        hmc = PseudofermionHMC([Level([ferm], 2, "omelyan"), Level([gauge], 2, "omelyan")],
                               LieGroupSpace(1), tau=0.8, tau_jitter=0.2)
        assert hmc.fermion_actions == (ferm,)
        for _ in range(2):
            U, step = hmc.step(U, rng)
        out.append((to_numpy(U)[:2], to_numpy(step.delta_h)[:2]))
    np.testing.assert_allclose(out[1][0], out[0][0], atol=1e-12)
    np.testing.assert_allclose(out[1][1], out[0][1], atol=1e-9)


def test_pseudofermion_hmc_rejects_fermion_action_not_on_a_level():
    ferm = WilsonPseudofermionAction(0.1, 1)
    with pytest.raises(ValueError, match="not on any integrator level"):
        PseudofermionHMC([Level([GaugeAction(2.0, 1)], 2)], LieGroupSpace(1),
                         fermion_actions=[ferm])


# ------------------------------------------------------------------------------------------
# 2D Schwinger model (U(1), Nf = 2 Wilson): pseudofermion HMC against quenched heatbath
# configurations reweighted by the exact determinant det(D^dag D) = |det D|^2.
# ------------------------------------------------------------------------------------------
SCHWINGER = dict(beta=2.0, mass=0.1, L=4)


def _plaquette(U, beta):
    L0, L1 = U.shape[2], U.shape[3]
    return to_numpy(-GaugeAction(beta, 1).action(U)) / (beta * L0 * L1)


def _log_det_normal(U, mass):
    """log det(D^dag D) per configuration from the dense Wilson matrix (columns D e_k)."""
    xp = namespace_by_name("numpy")
    W = WilsonDirac(U, mass, check=False)
    sites, s, N = W.sites, W.n_spin, W.N
    n = int(np.prod(sites)) * s * N
    cols = []
    for k in range(n):
        e = np.zeros((1, *sites, s, N), dtype=np.complex128)
        e.flat[k] = 1.0
        cols.append(to_numpy(W.apply(xp.asarray(e))).reshape(U.shape[0], n))
    sign, logabs = np.linalg.slogdet(np.stack(cols, axis=-1))
    return 2.0 * logabs


def schwinger_reweighted(n_chains, n_quenched, seed):
    """``(quenched, reweighted, U_start, rng)``: Γ-method results of the plaquette of quenched
    heatbath configurations and of the same reweighted by det(D^dag D) (exact, dense), the
    thermalised quenched start links and the random streams (advanced), for a dynamical run
    to compare with (also tests/test_slhmc.py)."""
    from lattice_ml.samplers import Heatbath
    from lattice_ml.stats import gamma_method, reweight

    xp = namespace_by_name("numpy")
    beta, mass, L = SCHWINGER["beta"], SCHWINGER["mass"], SCHWINGER["L"]
    rng = RandomStreams(seed, n_chains, xp)
    U = xp.ones((n_chains, 2, L, L, 1, 1), dtype=xp.complex128)
    hb = Heatbath(beta, 1, n_or=1)
    for _ in range(20):
        U, _ = hb.step(U, rng)
    U_start = U
    plaq, logw = [], []
    for _ in range(n_quenched):
        U, _ = hb.step(U, rng)
        plaq.append(_plaquette(U, beta))
        logw.append(_log_det_normal(U, mass))
    plaq, logw = np.array(plaq).T, np.array(logw).T
    return gamma_method(plaq), reweight(plaq, logw), U_start, rng


def schwinger_comparison(n_chains, n_quenched, n_hmc, n_therm=12, seed=21):
    """Returns (quenched, reweighted, dynamical) GammaResults of the plaquette."""
    from lattice_ml.stats import gamma_method

    beta, mass = SCHWINGER["beta"], SCHWINGER["mass"]
    quenched, reweighted, U_start, rng = schwinger_reweighted(n_chains, n_quenched, seed)
    gauge = GaugeAction(beta, 1)
    ferm = WilsonPseudofermionAction(mass, 1, tol=1e-10)
    hmc = PseudofermionHMC([Level([ferm], 2, "omelyan"), Level([gauge], 2, "omelyan")],
                           LieGroupSpace(1), tau=1.0, tau_jitter=0.2)
    U = U_start
    dyn, acc = [], []
    for it in range(n_therm + n_hmc):
        U, step = hmc.step(U, rng)
        acc.append(np.mean(to_numpy(step.accepted)))
        if it >= n_therm:
            dyn.append(_plaquette(U, beta))
    dynamical = gamma_method(np.array(dyn).T)
    return quenched, reweighted, dynamical, float(np.mean(acc))


def _check_schwinger(q, r, d, acc):
    assert acc > 0.8
    comb = np.hypot(r.error, d.error)
    assert abs(r.value - d.value) < 4 * comb, (r, d)
    # the determinant must matter: quenched and dynamical differ by more than 3 sigma
    assert abs(d.value - q.value) > 3 * np.hypot(q.error, d.error), (q, d)
    assert abs(r.value - q.value) > 3 * np.hypot(q.error, r.error), (q, r)


def test_schwinger_model_hmc_agrees_with_reweighted_quenched():
    q, r, d, acc = schwinger_comparison(n_chains=64, n_quenched=60, n_hmc=40)
    _check_schwinger(q, r, d, acc)


@pytest.mark.slow
def test_schwinger_model_hmc_agrees_with_reweighted_quenched_high_statistics():
    q, r, d, acc = schwinger_comparison(n_chains=64, n_quenched=300, n_hmc=200, n_therm=20,
                                       seed=22)
    _check_schwinger(q, r, d, acc)
    assert d.error < 0.0025
