"""HMC for gauge fields through the generic integrators: reversibility, dH ~ eps^2, links stay in
the group, and the 2D plaquette against the exact character-expansion results."""

import sys
from pathlib import Path

import numpy as np
import pytest

from lattice_ml.backend import RandomStreams, namespace_by_name, to_numpy
from lattice_ml.gauge import GaugeAction
from lattice_ml.gauge.observables import average_plaquette, topological_charge_2d
from lattice_ml.groups import check_links, haar_random, random_near_identity
from lattice_ml.samplers import HMC, Level, LieGroupSpace, integrate
from lattice_ml.stats import gamma_method

sys.path.insert(0, str(Path(__file__).parent))
from gauge_exact import sun_plaquette, u1_plaquette, u1_topological_susceptibility  # noqa: E402


@pytest.mark.parametrize("N", [1, 2, 3])
@pytest.mark.parametrize("scheme", ["leapfrog", "omelyan"])
def test_reversible_and_in_group(xp_cpu, N, scheme):
    xp = xp_cpu
    rng = RandomStreams(1, 2, xp)
    U = random_near_identity(rng, (2, 4, 4), N, 0.5)
    space = LieGroupSpace(N)
    P = space.sample_momenta(U, rng)
    levels = [Level([GaugeAction(2.0, N, "symanzik")], 6, scheme)]
    U1, P1 = integrate(U, P, levels, space, 1.0)
    check_links(U1, N)
    U2, P2 = integrate(U1, -P1, levels, space, 1.0)
    np.testing.assert_allclose(to_numpy(U2), to_numpy(U), atol=1e-12)
    np.testing.assert_allclose(to_numpy(-P2), to_numpy(P), atol=1e-12)


def test_kinetic_energy_normalisation():
    """K = sum p_a^2 / 2 with p_a ~ N(0,1): <K> = n_gen / 2 per link."""
    xp = namespace_by_name("numpy")
    for N, n_gen in ((1, 1), (2, 3), (3, 8)):
        rng = RandomStreams(5, 8, xp)
        U = haar_random(rng, (2, 8, 8), N)
        K = to_numpy(LieGroupSpace(N).kinetic_energy(LieGroupSpace(N).sample_momenta(U, rng)))
        n_links = 2 * 64
        assert K.mean() / n_links == pytest.approx(n_gen / 2, rel=5 * np.sqrt(2 / (n_gen * n_links * 8)))


@pytest.mark.parametrize("N,kind", [(1, "wilson"), (3, "iwasaki")])
def test_energy_violation_scales_as_eps_squared(N, kind):
    xp = namespace_by_name("numpy")
    rng = RandomStreams(2, 4, xp)
    U = random_near_identity(rng, (2, 4, 4), N, 0.7)
    space = LieGroupSpace(N)
    P = space.sample_momenta(U, rng)
    dh = []
    for n in (8, 16, 32):
        hmc = HMC([Level([GaugeAction(3.0, N, kind)], n, "leapfrog")], space, tau=1.0)
        U1, P1, _ = hmc.trajectory(U, P)
        dh.append(np.mean(np.abs(to_numpy(hmc.hamiltonian(U1, P1) - hmc.hamiltonian(U, P)))))
    assert 3.6 < dh[0] / dh[1] < 4.4 and 3.6 < dh[1] / dh[2] < 4.4, dh


def run_plaquette(N, beta, shape=(8, 8), n_chains=16, n_therm=50, n_meas=300, seed=7,
                  levels=None):
    xp = namespace_by_name("numpy")
    rng = RandomStreams(seed, n_chains, xp)
    action = GaugeAction(beta, N, "wilson")
    hmc = HMC(levels or [Level([action], 8, "omelyan")], LieGroupSpace(N), tau=1.0,
              tau_jitter=0.2)
    U = random_near_identity(rng, (len(shape), *shape), N, 0.0)
    acc, hist, charge = [], [], []
    for k in range(n_therm + n_meas):
        U, info = hmc.step(U, rng)
        if k >= n_therm:
            acc.append(to_numpy(info.accepted))
            hist.append(to_numpy(average_plaquette(U)))
            if N == 1 and len(shape) == 2:
                charge.append(to_numpy(topological_charge_2d(U)))
    check_links(U, N)
    res = gamma_method(np.array(hist).T)
    if charge:
        q = np.array(charge).T
        np.testing.assert_allclose(q, np.round(q), atol=1e-9)  # integer on every configuration
        return res, np.mean(acc), q ** 2 / np.prod(shape)
    return res, np.mean(acc)


@pytest.mark.parametrize("beta", [1.0, 2.0, 4.0])
def test_u1_2d_plaquette_and_topology_exact_finite_volume(beta):
    res, acc, q2 = run_plaquette(1, beta)
    exact = u1_plaquette(beta, 64)
    assert acc > 0.7
    assert abs(res.value - exact) < 4 * res.error, (res.value, res.error, exact)
    assert res.error < 0.005
    if beta < 4.0:  # at beta = 4 the charge needs far longer chains: see the slow test
        exact_chi = u1_topological_susceptibility(beta, 64)
        chi = gamma_method(q2)
        assert chi.window < 149  # the Γ-method window fits in the chains
        assert abs(chi.value - exact_chi) < 4 * chi.error, (chi.value, chi.error, exact_chi)
        assert chi.error < 0.15 * exact_chi


@pytest.mark.slow
def test_u1_2d_topological_susceptibility_at_weak_coupling():
    """At beta = 4 the charge tunnels rarely (tau_int of Q^2 ~ 60 trajectories on 8x8):
    long chains, and the Γ-method window must fit in them."""
    beta = 4.0
    res, acc, q2 = run_plaquette(1, beta, n_meas=2000, n_chains=8)
    chi = gamma_method(q2)
    exact_chi = u1_topological_susceptibility(beta, 64)
    assert chi.window < 2000 // 2 - 1
    assert abs(chi.value - exact_chi) < 4 * chi.error, (chi.value, chi.error, exact_chi)
    assert chi.error < 0.2 * exact_chi


@pytest.mark.parametrize("N,beta,n_meas", [
    (2, 2.0, 200), (2, 4.0, 200), (3, 3.0, 100),
    pytest.param(3, 6.0, 300, marks=pytest.mark.slow),
    pytest.param(4, 6.0, 200, marks=pytest.mark.slow),
    pytest.param(5, 10.0, 200, marks=pytest.mark.slow),
])
def test_sun_2d_plaquette_exact(N, beta, n_meas):
    exact = sun_plaquette(beta, N, points=96 if N < 4 else 40)
    assert 64 * exact ** 64 < 1e-6  # finite-volume corrections of the character sum
    res, acc = run_plaquette(N, beta, n_meas=n_meas, n_chains=12 if N == 2 else 8)
    assert acc > 0.7
    assert abs(res.value - exact) < 4 * res.error, (res.value, res.error, exact)
    assert res.error < 0.005


@pytest.mark.parametrize("N,beta,n_meas", [(1, 2.0, 150),
                                            pytest.param(2, 2.5, 200, marks=pytest.mark.slow)])
def test_multiple_time_scales_sample_the_same_distribution(N, beta, n_meas):
    """Rectangles on the outer level, plaquettes on an inner one: same action, same plaquette as
    the single-level integrator within errors."""
    a = GaugeAction(beta, N, "symanzik")
    r1 = run_plaquette(N, beta, n_meas=n_meas, levels=[Level([a], 8, "omelyan")])[0]
    r2 = run_plaquette(N, beta, n_meas=n_meas,
                          levels=[Level([a.part("rectangle")], 4, "omelyan"),
                                  Level([a.part("plaquette")], 2, "omelyan")])[0]
    assert abs(r1.value - r2.value) < 4 * np.hypot(r1.error, r2.error)


def test_hmc_rejects_invalid_fields():
    xp = namespace_by_name("numpy")
    rng = RandomStreams(1, 1, xp)
    U = to_numpy(haar_random(rng, (2, 4, 4), 3)).copy()
    hmc = HMC([Level([GaugeAction(1.0, 3)], 2)], LieGroupSpace(3))
    bad = U.copy()
    bad[0, 0, 0, 0] *= 1.1
    with pytest.raises(ValueError, match="not unitary"):
        hmc.step(bad, rng)
    bad = U.copy()
    bad[0, 1, 2, 3, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        hmc.step(bad, rng)
    with pytest.raises(ValueError, match="3x3|N = 3"):
        hmc.step(to_numpy(haar_random(rng, (2, 4, 4), 2)), rng)
