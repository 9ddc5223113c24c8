"""Self-learning HMC (lattice_ml.samplers.slhmc): the rho-gradient of the self-learning loss
against finite differences in random directions over all weights (float64), the force of the
effective action, reversibility and volume preservation of the effective-action MD, exactness of
SLHMC with an untrained (arbitrary) network against the exactly reweighted 2D Schwinger model,
and training lowering the loss and the true-vs-effective spread. NumPy and array-api-strict."""

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.linalg import logm

from lattice_ml.backend import RandomStreams, namespace_by_name, to_numpy
from lattice_ml.fermions import (StaggeredPseudofermionAction, StaggeredRationalAction,
                                 WilsonPseudofermionAction)
from lattice_ml.fermions.smeared_fermion_action import SmearedFermionAction
from lattice_ml.gauge import GaugeAction
from lattice_ml.gauge.observables import average_plaquette
from lattice_ml.groups import expm_algebra, generators, random_near_identity
from lattice_ml.optim import Adam
from lattice_ml.samplers import (Level, LieGroupSpace, PseudofermionHMC, SelfLearningHMC,
                                 effective_network, integrate, network_parameter_names,
                                 train_effective_action)

sys.path.insert(0, str(Path(__file__).parent))
from fd_checks import random_direction_deviation  # noqa: E402

RHO = np.array([0.05, -0.04, 0.07, -0.03, 0.06, 0.02])   # an arbitrary, untrained network


def _fermion(kind, mass, N, tol=1e-13):
    if kind == "wilson":
        return WilsonPseudofermionAction(mass, N, tol=tol)
    if kind == "staggered":
        return StaggeredPseudofermionAction(mass, N, tol=tol)
    return StaggeredRationalAction(mass, N, 0.25, degree=8, tol=tol)


def _slhmc(kind, shape, N, beta=2.0, m=0.2, m_h=0.3, rho=RHO, n_steps=4, tol=1e-13,
           tau_jitter=0.0):
    gauge = GaugeAction(beta, N)
    true = _fermion(kind, m, N, tol)
    net = effective_network(shape, 2, rho=np.array(rho, dtype=float))
    eff = SmearedFermionAction(_fermion(kind, m_h, N, tol), net)
    sl = SelfLearningHMC([Level([eff, gauge], n_steps, "omelyan")], LieGroupSpace(N),
                         [gauge, true], tau=1.0, tau_jitter=tau_jitter)
    return sl, net, true, eff, gauge


def test_network_has_the_papers_six_weights():
    net = effective_network((4, 4, 4, 4), 2)
    assert net.n_parameters == 6
    assert network_parameter_names(net) == [
        f"layer{l}/{t}" for l in (0, 1) for t in ("plaquette", "polyakov_t", "polyakov_s")]


CASES = [("wilson", (4, 4), 1), ("staggered", (2, 2, 2, 4), 2), ("rational", (4, 4), 1)]


@pytest.mark.parametrize("kind,shape,N", CASES)
@pytest.mark.parametrize("centered", [False, True])
def test_loss_gradient_matches_finite_differences(xp_cpu, kind, shape, N, centered):
    """dL/drho from the stout backward against central differences of L along random
    directions in the space of all six weights (both layers, plaquette and Polyakov terms)."""
    xp = xp_cpu
    sl, net, *_ = _slhmc(kind, shape, N)
    rng = RandomStreams(7, 3, xp)
    U = random_near_identity(rng, (len(shape), *shape), N, 0.5)
    sl.refresh(U, rng)
    loss, d, grad = sl.loss_and_gradient(U, centered)
    assert grad.shape == (6,) and np.all(grad != 0)
    h = 1e-5
    for seed in range(3):
        delta = np.random.default_rng(seed).standard_normal(6)
        vals = []
        for s in (h, -h):
            net.set_parameters(RHO + s * delta)
            vals.append(sl.loss_and_gradient(U, centered)[0])
        net.set_parameters(RHO)
        fd = (vals[0] - vals[1]) / (2 * h)
        pred = float(grad @ delta)
        assert abs(fd - pred) < 1e-6 * max(1.0, abs(pred)), (seed, fd, pred)


@pytest.mark.parametrize("kind,shape,N", CASES[:2])
def test_effective_action_force_matches_finite_differences(xp_cpu, kind, shape, N):
    sl, net, true, eff, gauge = _slhmc(kind, shape, N)
    rng = RandomStreams(8, 2, xp_cpu)
    U = random_near_identity(rng, (len(shape), *shape), N, 0.5)
    sl.refresh(U, rng)
    assert random_direction_deviation(eff, U, xp_cpu) < 1e-6


def _coords(U, U0):
    """Algebra coordinates x_a of log(U U0^dag) per link (host), U = exp(sum x_a T_a) U0."""
    T = to_numpy(generators(U.shape[-1], namespace_by_name("numpy"), dtype=np.complex128))
    u, u0 = to_numpy(U), to_numpy(U0)
    flat = (u @ np.conj(np.swapaxes(u0, -1, -2))).reshape(-1, u.shape[-1], u.shape[-1])
    X = np.stack([logm(m) for m in flat])
    return (-2 * np.einsum("aij,nji->na", T, X).real).ravel()


@pytest.mark.slow
def test_effective_md_is_reversible_and_volume_preserving():
    """2D SU(2) 2x2 with Wilson fermions on the smeared links: the map (U, p) -> (U', p') of
    the effective MD retraces itself with -p', and its Jacobian in exponential coordinates
    around the start and end points (Haar density 1 there) has determinant 1."""
    xp = namespace_by_name("numpy")
    shape, N = (2, 2), 2
    sl, *_ = _slhmc("wilson", shape, N, n_steps=2)
    space = sl.space
    rng = RandomStreams(9, 1, xp)
    U0 = random_near_identity(rng, (2, *shape), N, 0.6)
    sl.refresh(U0, rng)
    P0 = space.sample_momenta(U0, rng)
    levels = sl.levels
    U1, P1 = integrate(U0, P0, levels, space, 0.7)
    U2, P2 = integrate(U1, -P1, levels, space, 0.7)
    np.testing.assert_allclose(to_numpy(U2), to_numpy(U0), atol=1e-11)
    np.testing.assert_allclose(to_numpy(-P2), to_numpy(P0), atol=1e-11)

    T = to_numpy(generators(N, xp, dtype=np.complex128))
    p0 = -2 * np.einsum("aij,...ji->...a", T, to_numpy(P0)).real       # momentum coordinates
    n = p0.size

    def flow(z):
        x, p = z[:n].reshape(p0.shape), z[n:].reshape(p0.shape)
        U = expm_algebra(xp.asarray(np.einsum("...a,aij->...ij", x, T))) @ U0
        P = xp.asarray(np.einsum("...a,aij->...ij", p, T))
        Un, Pn = integrate(U, P, levels, space, 0.7)
        pn = -2 * np.einsum("aij,...ji->...a", T, to_numpy(Pn)).real
        return np.concatenate([_coords(Un, U1), pn.ravel()])

    z0 = np.concatenate([np.zeros(n), p0.ravel()])
    h = 1e-5
    J = np.empty((2 * n, 2 * n))
    for k in range(2 * n):
        e = np.zeros(2 * n)
        e[k] = h
        J[:, k] = (flow(z0 + e) - flow(z0 - e)) / (2 * h)
    sign, logdet = np.linalg.slogdet(J)
    assert sign > 0 and abs(logdet) < 1e-6, logdet
    assert np.max(np.abs(J - np.eye(2 * n))) > 0.1          # the map is far from the identity


@pytest.mark.slow
def test_slhmc_with_an_untrained_network_is_exact():
    """2D Schwinger model 4x4 (beta 2, Wilson m = 0.1): SLHMC with the arbitrary weights RHO
    and m_h = 0.15 reproduces the plaquette of quenched configurations reweighted by the exact
    det(D^dag D), within 4 sigma; its acceptance is below that of HMC (the effective action
    differs from the true one) but the chain is exact."""
    from lattice_ml.stats import gamma_method
    from test_pseudofermion import SCHWINGER, _plaquette, schwinger_reweighted

    beta, m = SCHWINGER["beta"], SCHWINGER["mass"]
    q, r, U, rng = schwinger_reweighted(64, 60, seed=23)
    sl, *_ = _slhmc("wilson", (4, 4), 1, beta=beta, m=m, m_h=0.15, n_steps=3, tol=1e-10,
                    tau_jitter=0.2)
    dyn, acc = [], []
    for it in range(12 + 50):
        U, step = sl.step(U, rng)
        acc.append(np.mean(to_numpy(step.accepted)))
        if it >= 12:
            dyn.append(_plaquette(U, beta))
    d = gamma_method(np.array(dyn).T)
    assert abs(r.value - d.value) < 4 * np.hypot(r.error, d.error), (r, d)
    # the determinant matters: the dynamical plaquette differs from the quenched one
    assert abs(d.value - q.value) > 3 * np.hypot(q.error, d.error), (q, d)
    assert 0.3 < np.mean(acc) < 0.99, np.mean(acc)


@pytest.mark.slow
def test_training_lowers_the_loss_and_the_spread():
    """2D U(1) 4x4, Wilson m = m_h = 0.1, a network started away from the identity (every
    weight 0.12): 30 trajectories of online training lower the loss and the spread of
    S_theta - S on held-out (U, phi) drawn after training."""
    xp = namespace_by_name("numpy")
    shape = (4, 4)
    sl, net, true, eff, gauge = _slhmc("wilson", shape, 1, m=0.1, m_h=0.1, rho=np.full(6, 0.12))
    hmc = PseudofermionHMC([Level([true, gauge], 4, "omelyan")], LieGroupSpace(1), tau=1.0,
                           tau_jitter=0.1)
    rng = RandomStreams(10, 8, xp)
    U = random_near_identity(rng, (2, *shape), 1, 0.3)
    theta0 = np.array(net.parameters()).copy()
    U, hist = train_effective_action(sl, hmc, net, U, rng, 30, Adam(0.01))
    assert len(hist["loss"]) == 30 and np.mean(hist["acceptance"]) > 0.5
    sl.refresh(U, rng)
    after = sl.loss_and_gradient(U)
    net.set_parameters(theta0)
    before = sl.loss_and_gradient(U)
    assert after[0] < 0.5 * before[0], (after[0], before[0])
    assert np.std(after[1]) < np.std(before[1])


def test_array_api_strict_agrees_with_numpy():
    out = []
    for name in ("numpy", "array_api_strict"):
        xp = namespace_by_name(name)
        sl, net, true, eff, gauge = _slhmc("wilson", (4, 4), 1)
        hmc = PseudofermionHMC([Level([true, gauge], 3)], LieGroupSpace(1))
        rng = RandomStreams(11, 2, xp)
        U = random_near_identity(rng, (2, 4, 4), 1, 0.4)
        U, hist = train_effective_action(sl, hmc, net, U, rng, 2, Adam(0.01))
        U, step = sl.step(U, rng)
        out.append((to_numpy(U), hist["theta"][-1], to_numpy(step.delta_h)))
    for a, b in zip(*out):
        np.testing.assert_allclose(b, a, atol=1e-10)


def test_refusals():
    sl, net, true, eff, gauge = _slhmc("wilson", (4, 4), 1)
    with pytest.raises(ValueError, match="pseudofermion action"):
        SelfLearningHMC(sl.levels, sl.space, [gauge])
    with pytest.raises(ValueError, match="its own object"):
        SelfLearningHMC([Level([true, gauge], 2)], sl.space, [gauge, true])
    other = PseudofermionHMC([Level([_fermion("wilson", 0.2, 1), gauge], 2)], sl.space)
    U = random_near_identity(RandomStreams(0, 2, namespace_by_name("numpy")), (2, 4, 4), 1, 0.1)
    with pytest.raises(ValueError, match="not on the levels"):
        train_effective_action(sl, other, net, U, None, 1, Adam(0.01))
    with pytest.raises(ValueError, match="unknown loop name"):
        effective_network((4, 4), 2, loops=("plaquette", "hexagon"))
    assert float(average_plaquette(U)[0]) > 0.9
