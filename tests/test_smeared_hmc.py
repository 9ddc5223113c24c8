"""Actions on stout-smeared links: force by finite differences, gauge invariance, and HMC
(reversibility, dH ~ eps^2, Creutz's equality <exp(-dH)> = 1)."""

import sys
from pathlib import Path

import numpy as np
import pytest

from lattice_ml.backend import RandomStreams, namespace_by_name, to_numpy
from lattice_ml.gauge import GaugeAction
from lattice_ml.groups import gauge_transform, random_gauge_transformation, random_near_identity
from lattice_ml.samplers import HMC, Level, LieGroupSpace, integrate
from lattice_ml.smearing import SmearedAction, StoutSmearing
from lattice_ml.stats import gamma_method

sys.path.insert(0, str(Path(__file__).parent))
from fd_checks import assert_force_matches_fd  # noqa: E402


def smeared(beta, N, D, layers=2, loops="plaquette", rho=0.08, kind="wilson"):
    net = StoutSmearing(layers, loops, D=D, directions="anisotropic", rho=rho)
    theta = np.asarray(net.parameters()).copy()
    theta[::2] *= 1.5  # different temporal and spatial weights
    net.set_parameters(theta)
    return SmearedAction(GaugeAction(beta, N, kind), net)


@pytest.mark.parametrize("N,shape,loops", [(1, (4, 4), "plaquette"), (2, (4, 4), ["plaquette", "rectangle"]),
                                           (3, (3, 4), "plaquette"), (3, (2, 3, 3), "plaquette")])
def test_force_is_minus_derivative_along_every_generator(xp_cpu, N, shape, loops):
    xp = xp_cpu
    D = len(shape)
    act = smeared(1.7, N, D, loops=loops, kind="symanzik")
    U = random_near_identity(RandomStreams(3, 1, xp), (D, *shape), N, 0.5)
    assert_force_matches_fd(act, U, xp)


def test_gauge_invariance():
    xp = namespace_by_name("numpy")
    rng = RandomStreams(4, 2, xp)
    act = smeared(2.0, 3, 3)
    U = random_near_identity(rng, (3, 4, 4, 4), 3, 0.8)
    g = random_gauge_transformation(rng, (4, 4, 4), 3)
    np.testing.assert_allclose(act.action(gauge_transform(U, g)), act.action(U), rtol=1e-11)


@pytest.mark.parametrize("N", [1, 3])
def test_hmc_reversible_and_dh_scaling(xp_cpu, N):
    xp = xp_cpu
    rng = RandomStreams(5, 2, xp)
    act = smeared(3.0, N, 2)
    space = LieGroupSpace(N)
    U = random_near_identity(rng, (2, 4, 4), N, 0.6)
    P = space.sample_momenta(U, rng)
    levels = [Level([act], 6, "omelyan")]
    U1, P1 = integrate(U, P, levels, space, 1.0)
    U2, P2 = integrate(U1, -P1, levels, space, 1.0)
    np.testing.assert_allclose(to_numpy(U2), to_numpy(U), atol=1e-11)
    np.testing.assert_allclose(to_numpy(-P2), to_numpy(P), atol=1e-11)
    if xp is namespace_by_name("numpy"):
        dh = []
        for n in (6, 12, 24):
            hmc = HMC([Level([act], n, "leapfrog")], space, tau=1.0)
            Un, Pn, _ = hmc.trajectory(U, P)
            dh.append(np.mean(np.abs(to_numpy(hmc.hamiltonian(Un, Pn) - hmc.hamiltonian(U, P)))))
        assert 3.5 < dh[0] / dh[1] < 4.5 and 3.6 < dh[1] / dh[2] < 4.4, dh


def test_creutz_equality_with_smeared_action():
    """<exp(-dH)> = 1 at equilibrium for HMC on the smeared Wilson action (step size chosen so
    that <dH> is clearly non-zero)."""
    xp = namespace_by_name("numpy")
    N = 2
    act = smeared(2.5, N, 2, layers=1, rho=0.1)
    hmc = HMC([Level([act], 3, "leapfrog")], LieGroupSpace(N), tau=1.0, tau_jitter=0.2)
    rng = RandomStreams(6, 16, xp)
    U = random_near_identity(rng, (2, 6, 6), N, 0.0)
    for _ in range(30):
        U, _ = hmc.step(U, rng)
    dh = []
    for _ in range(150):
        U, info = hmc.step(U, rng)
        dh.append(to_numpy(info.delta_h))
    dh = np.array(dh).T
    res = gamma_method(np.exp(-dh))
    assert np.mean(dh) > 0.05
    assert abs(res.value - 1.0) < 4 * res.error, (res.value, res.error, np.mean(dh))
