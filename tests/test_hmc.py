"""HMC and its integrators: reversibility, energy-violation scaling, exactness of the sampling
against free-field results and against direct numerical integration of a tiny interacting system."""

import numpy as np
import pytest

from lattice_ml.backend import RandomStreams, namespace_by_name, to_numpy
from lattice_ml.lattice import Lattice
from lattice_ml.samplers import HMC, EuclideanSpace, Level, integrate
from lattice_ml.scalar import (Phi4Action, free_propagator, magnetization, momentum_space_propagator,
                               phi2, second_moment_correlation_length, two_point_function)
from lattice_ml.stats import gamma_method


def levels_for(action, scheme, n_steps, fine_steps=0):
    if fine_steps:
        return [Level([action.part("kinetic")], n_steps, scheme),
                Level([action.part("local")], fine_steps, scheme)]
    return [Level([action], n_steps, scheme)]


INTERACTING = Phi4Action(Lattice((4, 4)), "standard", m2=-1.0, lam=1.5)


@pytest.mark.parametrize("scheme,fine", [("leapfrog", 0), ("omelyan", 0), ("leapfrog", 3),
                                         ("omelyan", 2)])
def test_integrator_is_reversible(xp_cpu, scheme, fine):
    xp = xp_cpu
    rng = RandomStreams(1, 3, xp)
    phi = rng.normal((4, 4))
    p = rng.normal((4, 4))
    levels = levels_for(INTERACTING, scheme, 7, fine)
    space = EuclideanSpace()
    phi1, p1 = integrate(phi, p, levels, space, 1.3)
    phi2_, p2 = integrate(phi1, -p1, levels, space, 1.3)
    assert float(xp.max(xp.abs(phi1 - phi))) > 0.1  # it moved
    np.testing.assert_allclose(to_numpy(phi2_), to_numpy(phi), rtol=0, atol=1e-12)
    np.testing.assert_allclose(to_numpy(-p2), to_numpy(p), rtol=0, atol=1e-12)


@pytest.mark.parametrize("scheme,fine", [("leapfrog", 0), ("omelyan", 0), ("leapfrog", 2)])
def test_energy_violation_scales_as_eps_squared(scheme, fine):
    """|dH| of one trajectory of fixed length falls by 4 when the step size halves."""
    xp = namespace_by_name("numpy")
    rng = RandomStreams(2, 16, xp)
    action = INTERACTING
    phi = 0.8 * rng.normal((4, 4))
    p = rng.normal((4, 4))
    dh = []
    for n in (16, 32, 64):
        hmc = HMC(levels_for(action, scheme, n, fine), EuclideanSpace(), tau=1.0)
        new, p_new, _ = hmc.trajectory(phi, p)
        dh.append(np.mean(np.abs(to_numpy(hmc.hamiltonian(new, p_new) - hmc.hamiltonian(phi, p)))))
    ratios = [dh[0] / dh[1], dh[1] / dh[2]]
    assert all(3.6 < r < 4.4 for r in ratios), (dh, ratios)


def test_force_evaluation_counts():
    action = INTERACTING
    hmc = HMC(levels_for(action, "leapfrog", 4, 3), EuclideanSpace(), tau=1.0)
    phi = RandomStreams(0, 1).normal((4, 4))
    _, _, counts = hmc.trajectory(phi, phi)
    assert counts == (5, 4 * 4)  # outer: merged kicks n + 1; inner: n trajectories of m + 1
    hmc = HMC(levels_for(action, "omelyan", 4), EuclideanSpace(), tau=1.0)
    assert hmc.trajectory(phi, phi)[2] == (2 * 4 + 1,)


def test_exp_minus_dh_averages_to_one():
    """Creutz's equality <exp(-dH)> = 1 at equilibrium, with a step size large enough that
    <dH> is far from zero."""
    xp = namespace_by_name("numpy")
    lat = Lattice((6, 6))
    action = Phi4Action(lat, "standard", m2=-1.0, lam=1.5)
    hmc = HMC([Level([action], 4, "leapfrog")], EuclideanSpace(), tau=1.0, tau_jitter=0.2)
    rng = RandomStreams(3, 32, xp)
    phi = rng.normal(lat.shape)
    for _ in range(60):
        phi, _ = hmc.step(phi, rng)
    dh = []
    for _ in range(300):
        phi, info = hmc.step(phi, rng)
        dh.append(to_numpy(info.delta_h))
    dh = np.array(dh).T  # [chain, time]
    res = gamma_method(np.exp(-dh))
    assert np.mean(dh) > 0.2  # the test has teeth: the violation is sizeable
    assert abs(res.value - 1.0) < 4 * res.error, (res.value, res.error)


def test_chains_do_not_depend_on_batch_size(xp_cpu):
    xp = xp_cpu
    lat = Lattice((4, 4))
    hmc = HMC([Level([INTERACTING], 5, "omelyan")], EuclideanSpace(), tau=1.0, tau_jitter=0.3)
    out = []
    for n_chains in (2, 5):
        rng = RandomStreams(9, n_chains, xp)
        phi = rng.normal(lat.shape)
        for _ in range(5):
            phi, info = hmc.step(phi, rng)
        out.append(to_numpy(phi))
    np.testing.assert_array_equal(out[0], out[1][:2])


def run_hmc(action, levels, n_chains, n_therm, n_meas, seed, measure, xp=None, tau=1.0):
    xp = xp or namespace_by_name("numpy")
    rng = RandomStreams(seed, n_chains, xp)
    hmc = HMC(levels, EuclideanSpace(), tau=tau, tau_jitter=0.3)
    phi = 0.5 * rng.normal(action.lattice.shape)
    for _ in range(n_therm):
        phi, _ = hmc.step(phi, rng)
    hist, acc = [], []
    for _ in range(n_meas):
        phi, info = hmc.step(phi, rng)
        hist.append(measure(phi))
        acc.append(to_numpy(info.accepted))
    return hist, np.mean(acc)


FREE = [
    ("standard", dict(m2=0.4), 0),
    ("hopping", dict(beta=0.22), 3),  # with two time scales
]


@pytest.mark.parametrize("form,couplings,fine", FREE)
def test_free_field_matches_exact_propagator(form, couplings, fine):
    """lam = 0: <phi^2>, C(t) and the second-moment correlation length against the exact
    finite-volume propagator G(p) = 1/(2K(p)), within Γ-method errors."""
    xp = namespace_by_name("numpy")
    lat = Lattice((8, 8))
    action = Phi4Action(lat, form, lam=0.0, **couplings)
    G = to_numpy(free_propagator(lat, xp, form, **couplings))
    exact_phi2 = G.mean()
    exact_C = np.real(np.fft.ifft(G[:, 0]))  # sum over space of G(t, x): p_space = 0
    exact_g1 = G[1, 0]

    def measure(phi):
        g0, g1 = momentum_space_propagator(phi)
        return (to_numpy(phi2(phi)), to_numpy(two_point_function(phi)), to_numpy(g0), to_numpy(g1))

    hist, acc = run_hmc(action, levels_for(action, "omelyan", 6, fine), 16, 100, 600, 11, measure)
    assert acc > 0.8
    p2 = np.array([h[0] for h in hist]).T
    C = np.array([h[1] for h in hist]).transpose(1, 2, 0)  # [chain, t, time]
    g0 = np.array([h[2] for h in hist]).T
    g1 = np.array([h[3] for h in hist]).T

    r = gamma_method(p2)
    assert abs(r.value - exact_phi2) < 4 * r.error, (r.value, r.error, exact_phi2)
    assert r.error < 0.01 * exact_phi2  # precise enough to see a factor-2 normalisation error
    z = [(gamma_method(C[:, t]).value - exact_C[t]) / gamma_method(C[:, t]).error for t in range(8)]
    assert max(map(abs, z)) < 4, z
    r1 = gamma_method(g1)
    assert abs(r1.value - exact_g1) < 4 * r1.error
    xi = gamma_method([g0, g1], f=lambda m: second_moment_correlation_length(m[0], m[1], 8))
    exact_xi = second_moment_correlation_length(G[0, 0], exact_g1, 8)
    if form == "standard":
        assert exact_xi == pytest.approx(1 / np.sqrt(couplings["m2"]))
    assert abs(xi.value - exact_xi) < 4 * xi.error, (xi.value, xi.error, exact_xi)


def quadrature_2x2(form, couplings, n=48, cut=3.6):
    """Exact expectation values on the 2x2 lattice by tensor Gauss-Legendre quadrature over the
    four site variables (the action written out by hand from SPEC section 3)."""
    x, w = np.polynomial.legendre.leggauss(n)
    x, w = cut * x, cut * w
    a, b, c, d = np.meshgrid(x, x, x, x, indexing="ij", sparse=True)  # sites 00, 01, 10, 11
    W = w[:, None, None, None] * w[None, :, None, None] * w[None, None, :, None] * w[None, None, None, :]
    # each of the 4 nearest-neighbour links appears twice on a 2x2 periodic lattice
    links = 2 * (a * c + b * d + a * b + c * d)
    sq = a * a + b * b + c * c + d * d
    quart = a ** 4 + b ** 4 + c ** 4 + d ** 4
    if form == "standard":
        kin = 2 * 2 * sq - 2 * links  # sum_x sum_mu (phi(x+mu) - phi(x))^2
        S = kin + couplings["m2"] * sq + couplings["lam"] * quart
    else:
        S = -couplings["beta"] * links + sq + couplings["lam"] * (
            (a * a - 1) ** 2 + (b * b - 1) ** 2 + (c * c - 1) ** 2 + (d * d - 1) ** 2)
    weight = W * np.exp(-(S - S.min()))
    Z = weight.sum()
    M = (a + b + c + d) / 4
    return {"phi2": (weight * sq / 4).sum() / Z, "m2": (weight * M * M).sum() / Z,
            "absm": (weight * np.abs(M)).sum() / Z}


@pytest.mark.parametrize("form,couplings", [("standard", dict(m2=-1.0, lam=0.5)),
                                            ("hopping", dict(beta=0.6, lam=0.7))])
def test_interacting_2x2_against_quadrature(form, couplings):
    exact = quadrature_2x2(form, couplings)
    lat = Lattice((2, 2))
    action = Phi4Action(lat, form, **couplings)

    def measure(phi):
        M = to_numpy(magnetization(phi))
        return to_numpy(phi2(phi)), M * M, np.abs(M)

    hist, acc = run_hmc(action, levels_for(action, "omelyan", 5), 64, 100, 800, 5, measure)
    for i, key in enumerate(("phi2", "m2", "absm")):
        r = gamma_method(np.array([h[i] for h in hist]).T)
        assert abs(r.value - exact[key]) < 4 * r.error, (key, r.value, r.error, exact[key])
        assert r.error < 0.02 * exact[key]


def test_quadrature_is_converged():
    """The quadrature error is far below the statistical errors (~1e-3) of the HMC test; |M| has
    a kink, so Gauss-Legendre converges only algebraically for it."""
    a = quadrature_2x2("standard", dict(m2=-1.0, lam=0.5), n=48)
    b = quadrature_2x2("standard", dict(m2=-1.0, lam=0.5), n=64, cut=4.2)
    assert a["phi2"] == pytest.approx(b["phi2"], rel=1e-10)
    assert a["m2"] == pytest.approx(b["m2"], rel=1e-10)
    assert a["absm"] == pytest.approx(b["absm"], rel=1e-4)


def test_hmc_runs_on_every_backend(xp):
    """Same seed -> same chain on every namespace (host-drawn random numbers)."""
    lat = Lattice((4, 4))
    action = Phi4Action(lat, "hopping", beta=0.3, lam=1.0)
    outs = []
    for ns in (xp, namespace_by_name("numpy")):
        rng = RandomStreams(4, 2, ns)
        hmc = HMC([Level([action], 4, "omelyan")], EuclideanSpace(), tau=1.0)
        phi = rng.normal(lat.shape)
        for _ in range(3):
            phi, info = hmc.step(phi, rng)
        outs.append(to_numpy(phi))
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-12, atol=1e-12)


def test_bad_hmc_arguments():
    with pytest.raises(ValueError, match="tau"):
        HMC([Level([INTERACTING], 3)], EuclideanSpace(), tau=0.0)
    with pytest.raises(ValueError, match="tau_jitter"):
        HMC([Level([INTERACTING], 3)], EuclideanSpace(), tau_jitter=1.0)
    with pytest.raises(ValueError, match="integrator 'euler'"):
        Level([INTERACTING], 3, "euler")
    with pytest.warns(DeprecationWarning, match="integrator"):  # the keyword of earlier versions
        old = Level([INTERACTING], 3, scheme="omelyan")
    assert old == Level([INTERACTING], 3, integrator="omelyan") and old.scheme == "omelyan"
    with pytest.raises(ValueError, match="n_steps"):
        Level([INTERACTING], 0)


def test_hmc_rejects_nan_field():
    hmc = HMC([Level([INTERACTING], 3)], EuclideanSpace())
    phi = np.zeros((1, 4, 4))
    phi[0, 1, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        hmc.step(phi, RandomStreams(0, 1))
