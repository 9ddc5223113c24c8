"""Gradient flows of loop actions for gauge fields (lattice_ml.flows.gradient_flow) and Lüscher's
leading-order trivialising map (lattice_ml.flows.trivializing).

Oracles independent of the code under test: finite differences of the forward map (vjp, dense
Jacobian), the gauge transformation of lattice_ml.groups, the exact 2D results of gauge_exact.py,
and the leading-order solution checked by its optimality at small beta.
"""

import math

import numpy as np
import pytest

from gauge_exact import sun_plaquette, u1_plaquette, u1_topological_susceptibility
from lattice_ml.backend import RandomStreams, namespace_by_name, to_numpy
from lattice_ml.flows import FlowTrainer, effective_sample_size
from lattice_ml.flows.gradient_flow import GradientFlow, casimir
from lattice_ml.flows.trivializing import luscher_coefficients, luscher_flow
from lattice_ml.gauge import GaugeAction
from lattice_ml.gauge.observables import average_plaquette, topological_charge_2d
from lattice_ml.groups import (dagger, expm_algebra, gauge_transform, generators,
                               matrix_to_algebra, project_algebra, random_algebra,
                               random_gauge_transformation, unitarity_deviation)
from lattice_ml.optim import Adam
from lattice_ml.samplers.flow_hmc import FlowHMC
from lattice_ml.samplers.flow_mcmc import FlowMetropolis

NP = namespace_by_name("numpy")
Z_MAX = 4.0


def _flow(xp, N, shape, theta, **kw):
    kw.setdefault("loops", ("plaquette",))
    return GradientFlow(shape, N, xp, n_t=np.shape(theta)[1], theta=np.asarray(theta), **kw)


def _pairing(X, G):
    """``sum_links sum_a X^a G^a = -2 Re Tr(X G)`` summed over everything."""
    return float(-2.0 * np.sum(np.real(np.einsum("...ij,...ji->...", to_numpy(X),
                                                 to_numpy(G)))))


# -- symmetries and invertibility -----------------------------------------------------------
@pytest.mark.parametrize("N,shape,loops", [(1, (4, 4), ("plaquette", "rectangle")),
                                           (2, (4, 3), ("plaquette", "polyakov")),
                                           (3, (2, 2, 2, 2), ("plaquette", "chair"))])
def test_gauge_equivariance(xp_cpu, N, shape, loops):
    xp = xp_cpu
    rng = RandomStreams(11, 2, xp)
    probe = GradientFlow(shape, N, xp, loops=loops)
    theta = [[0.7, 0.2]] + [[0.15, -0.1]] * (probe.n_w - 1)
    f = _flow(xp, N, shape, theta, loops=loops, n_steps=3)
    z = f.draw_latent(rng)
    g = random_gauge_transformation(rng, shape, N)
    U, lj = f.forward(z)
    Ug, ljg = f.forward(gauge_transform(z, g))
    np.testing.assert_allclose(to_numpy(Ug), to_numpy(gauge_transform(U, g)), atol=1e-12)
    np.testing.assert_allclose(to_numpy(ljg), to_numpy(lj), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("N,backend", [(1, "numpy"), (2, "array_api_strict"), (3, "numpy")])
def test_inverse_to_round_off(N, backend):
    xp = namespace_by_name(backend)
    f = _flow(xp, N, (4, 4), [[0.9, 0.3], [0.2, -0.1]], loops=("plaquette", "rectangle"),
              n_steps=8)
    z = f.draw_latent(RandomStreams(3, 3, xp))
    U, lj = f.forward(z)
    assert unitarity_deviation(U) < 1e-13
    z2, ld = f.inverse(U)
    np.testing.assert_allclose(to_numpy(z2), to_numpy(z), atol=1e-11)
    np.testing.assert_allclose(to_numpy(ld), -to_numpy(lj), rtol=1e-10)
    np.testing.assert_allclose(to_numpy(f.log_prob(U)), -to_numpy(lj), rtol=1e-10)


def test_zero_coefficients_are_the_identity():
    f = _flow(NP, 3, (4, 4), [[0.0, 0.0]])
    z = f.draw_latent(RandomStreams(1, 2, NP))
    U, lj = f.forward(z)
    np.testing.assert_array_equal(to_numpy(U), to_numpy(z))
    np.testing.assert_array_equal(to_numpy(lj), 0.0)


def test_loops_through_a_link_twice_are_refused():
    with pytest.raises(ValueError, match="twice"):
        GradientFlow((1, 4), 1, NP, loops=("plaquette",))
    with pytest.raises(ValueError, match="unknown loop type"):
        GradientFlow((4, 4), 1, NP, loops=("hexagon",))


# -- the log-det ----------------------------------------------------------------------------
def _fd_divergence(f, U):
    """``sum_{links, a} d^a Z^a`` of the flow's vector field at t = 0 (one Euler stage of size
    1, per configuration) by central differences, and the closed form (dlogJ)."""
    T = to_numpy(generators(f.N, NP))

    def field(V):
        _, dlogJ, st = f._step(NP.asarray(V), 0.0, 1.0, keep=True)
        return to_numpy(st[0]["X"]), to_numpy(dlogJ)

    _, div = field(U)
    h, fd = 1e-5, 0.0
    for site in np.ndindex(U.shape[1:-2]):
        idx = (slice(None),) + site
        comp = []
        for a in range(T.shape[0]):
            for s in (h, -h):
                V = U.copy()
                V[idx] = to_numpy(expm_algebra(NP.asarray(s * T[a]))) @ U[idx]
                Z = field(V)[0][idx]
                comp.append(-2.0 * np.einsum("ij,bji->b", T[a], Z).real)
            fd = fd + (comp[-2] - comp[-1]) / (2 * h)
    return fd, div


def _dense_logdet(f, z, h=1e-5):
    """log|det| of the Jacobian of the discrete map in left-trivialised algebra coordinates, by
    central differences (first configuration only)."""
    T = to_numpy(generators(f.N, NP))
    U0, _ = f.forward(z)
    cols = []
    for site in np.ndindex(z.shape[1:-2]):
        for b in range(T.shape[0]):
            out = []
            for s in (h, -h):
                zz = np.array(z)
                zz[(0,) + site] = to_numpy(expm_algebra(NP.asarray(s * T[b]))) @ z[(0,) + site]
                U, _ = f.forward(zz)
                out.append(to_numpy(matrix_to_algebra(project_algebra(U[0] @ dagger(U0[0])),
                                                      f.N)))
            cols.append(((out[0] - out[1]) / (2 * h)).ravel())
    return np.linalg.slogdet(np.array(cols).T)[1]


@pytest.mark.parametrize("N,shape,scheme,order", [(1, (3, 3), "rk3", 3), (2, (2, 2), "rk3", 3),
                                                  (2, (2, 2), "euler", 1)])
def test_logdet_converges_to_the_discrete_jacobian_at_the_order_of_the_scheme(N, shape, scheme,
                                                                             order):
    """The integrated divergence (*) differs from log|det| of the discrete map by O(eps^order):
    halving eps divides the difference by 2^order (1 + O(eps))."""
    errs = []
    steps = (8, 16, 32) if order == 3 else (16, 32, 64)
    for n in steps:
        f = _flow(NP, N, shape, [[0.5, 0.2]], n_steps=n, scheme=scheme)
        z = f.draw_latent(RandomStreams(5, 1, NP))
        _, lj = f.forward(z)
        errs.append(_dense_logdet(f, z) - float(to_numpy(lj)[0]))
    ratios = [errs[0] / errs[1], errs[1] / errs[2]]
    assert abs(ratios[1] / 2 ** order - 1) < 0.1, (errs, ratios)
    assert abs(ratios[1] / 2 ** order - 1) <= abs(ratios[0] / 2 ** order - 1) + 1e-3


def test_divergence_formula_uses_the_casimir():
    assert casimir(1) == 0.5 and casimir(2) == 0.75 and casimir(3) == pytest.approx(4 / 3)


# -- gradients ------------------------------------------------------------------------------
@pytest.mark.parametrize("N,shape,loops,scheme,memory", [
    (1, (4, 4), ("plaquette", "rectangle"), "rk3", "states"),
    (2, (4, 3), ("plaquette", "polyakov"), "rk3", "constant"),
    (3, (4, 4), ("plaquette", "rectangle"), "euler", "states"),
    (3, (2, 2, 2, 2), ("plaquette",), "rk3", "constant")])
def test_vjp_matches_finite_differences_in_random_directions(xp_cpu, N, shape, loops, scheme,
                                                            memory):
    """L = S(F(z)) + <gamma, logJ>; d/ds L(exp(s X) z) over every link in a random algebra
    direction X, and d/ds L(theta + s dtheta), against the vjp (float64 central differences)."""
    xp = xp_cpu
    rng = RandomStreams(3, 2, xp)
    probe = GradientFlow(shape, N, xp, loops=loops)
    theta = np.random.default_rng(N).normal(scale=0.3 if memory == "states" else 0.1,
                                            size=(probe.n_w, 3))
    theta[0, 0] = 0.6
    f = _flow(xp, N, shape, theta, loops=loops, n_steps=3 if memory == "states" else 6,
              scheme=scheme, memory=memory)
    check_vjp_against_fd(f, theta, rng, xp)


def check_vjp_against_fd(f, theta, rng, xp, h=1e-5, rel=1e-7):
    """L = S(F(z)) + <gamma, logJ> (batch 2): the vjp against central differences along a
    random algebra direction moving every link and along a random direction of theta."""
    N, shape = f.N, f.shape
    act = GaugeAction(1.3, N)
    gam = xp.asarray(np.array([0.7, -0.4]))
    z = f.draw_latent(rng)

    def L(zz):
        U, lj = f.forward(zz)
        return float(to_numpy(xp.sum(act.action(U)) + xp.sum(gam * lj)))

    U, lj, cache = f.forward_cache(z)
    gz, gp = f.vjp(cache, -act.force(U), gam)
    X = random_algebra(rng, (len(shape), *shape), N)
    fd = (L(expm_algebra(h * X) @ z) - L(expm_algebra(-h * X) @ z)) / (2 * h)
    assert abs(fd - _pairing(X, gz)) < rel * abs(fd), (fd, _pairing(X, gz))
    d = np.random.default_rng(0).normal(size=theta.shape)
    vals = []
    for s in (h, -h):
        f.load_params({"theta": theta + s * d})
        vals.append(L(z))
    f.load_params({"theta": theta})
    fdt = (vals[0] - vals[1]) / (2 * h)
    an = float(np.sum(to_numpy(gp["theta"]) * d))
    assert abs(fdt - an) < rel * abs(fdt), (fdt, an)


def test_constant_memory_gradients_equal_stored_ones():
    kw = dict(loops=("plaquette", "rectangle"), n_steps=4)
    a = _flow(NP, 2, (4, 4), [[0.8, 0.1], [0.1, 0.0]], memory="states", **kw)
    b = _flow(NP, 2, (4, 4), [[0.8, 0.1], [0.1, 0.0]], memory="constant", **kw)
    z = a.draw_latent(RandomStreams(2, 2, NP))
    act = GaugeAction(2.0, 2)
    gl = NP.asarray(np.array([1.0, -1.0]))
    outs = []
    for f in (a, b):
        U, lj, cache = f.forward_cache(z)
        outs.append(f.vjp(cache, -act.force(U), gl))
    assert b.forward_cache(z)[2]["states"] is None
    np.testing.assert_allclose(to_numpy(outs[1][0]), to_numpy(outs[0][0]), atol=1e-10)
    np.testing.assert_allclose(to_numpy(outs[1][1]["theta"]), to_numpy(outs[0][1]["theta"]),
                               rtol=1e-9)


# -- Lüscher's map ---------------------------------------------------------------------------
def test_luscher_coefficients():
    th = luscher_coefficients(GaugeAction(6.0, 3), ["plaquette"], [4], 2)
    np.testing.assert_allclose(th, [[6.0 / 16.0, 0.0]])                 # beta / 16 for SU(3)
    th = luscher_coefficients(GaugeAction(2.0, 1), ["plaquette"], [4], 1)
    np.testing.assert_allclose(th, [[1.0]])                              # beta / 2 for U(1)
    act = GaugeAction(2.0, 3, "symanzik")
    th = luscher_coefficients(act, ["plaquette", "rectangle"], [4, 6], 1)
    np.testing.assert_allclose(th[:, 0], [2.0 * act.c0 / (3 * 4 * 4 / 3),
                                          2.0 * act.c1 / (3 * 6 * 4 / 3)])
    with pytest.raises(ValueError, match="rectangle"):
        luscher_coefficients(act, ["plaquette"], [4], 1)


@pytest.mark.parametrize("N,beta", [(1, 0.4), (2, 0.8), (3, 1.2)])
def test_leading_order_map_is_optimal_at_small_beta(N, beta):
    """At small beta the leading-order coefficient minimises the reverse KL along the line of
    rescaled coefficients: the loss at scale 1 is below scale 0.6 and 1.4 (same latent batch),
    and the ESS beats the identity map by far."""
    act = GaugeAction(beta, N)
    z = None
    losses = {}
    for scale in (0.0, 0.6, 1.0, 1.4):
        f = luscher_flow(act, (4, 4), NP, n_steps=6)
        f.load_params({"theta": f.params_to_host()["theta"] * scale})
        if z is None:
            z = f.draw_latent(RandomStreams(4, 512, NP))
        U, lj = f.forward(z)
        lw = -to_numpy(act.action(U)) + to_numpy(lj)
        losses[scale] = (-float(np.mean(lw)), effective_sample_size(lw))
    assert losses[1.0][0] < min(losses[0.6][0], losses[1.4][0]), losses
    assert losses[1.0][1] > 0.9 and losses[1.0][1] > losses[0.0][1] + 0.1, losses


# -- samplers against exact 2D results ------------------------------------------------------
def _chain_means_z(hist, exact, discard):
    means = np.mean(np.stack([to_numpy(h) for h in hist], axis=1)[:, discard:], axis=1)
    return (np.mean(means) - exact) / (np.std(means, ddof=1) / math.sqrt(len(means)))


@pytest.mark.parametrize("N,beta", [(1, 1.0), (2, 2.0), (3, 3.0)])
def test_flow_metropolis_reproduces_the_exact_2d_plaquette(N, beta):
    """Independence Metropolis with the (untrained) leading-order map on a 4x4 torus."""
    shape = (4, 4)
    act = GaugeAction(beta, N)
    flow = luscher_flow(act, shape, NP, n_steps=6)
    sampler = FlowMetropolis(flow, act)
    obs = {"plaquette": average_plaquette}
    if N == 1:
        obs["Q2"] = lambda U: topological_charge_2d(U) ** 2
    _, hist = sampler.run(RandomStreams(8, 16, NP), 150, obs)
    acc = sampler.summary(hist)["acceptance"]
    assert acc > 0.2, acc
    exact = u1_plaquette(beta, 16) if N == 1 else sun_plaquette(beta, N)
    assert abs(_chain_means_z(hist["plaquette"], exact, 10)) < Z_MAX
    if N == 1:
        chi = u1_topological_susceptibility(beta, 16) * 16
        assert abs(_chain_means_z(hist["Q2"], chi, 10)) < Z_MAX


def test_trained_flow_hmc_reproduces_the_exact_u1_plaquette():
    """Reverse-KL training for a few steps, then HMC in the latent links (force through the
    flow's vjp): exact plaquette and charge susceptibility."""
    shape, beta = (4, 4), 2.0
    act = GaugeAction(beta, 1)
    flow = luscher_flow(act, shape, NP, n_t=2, n_steps=4)
    tr = FlowTrainer(flow, act, Adam(5e-3), batch_size=16, seed=1)
    tr.train(5)
    assert np.all(np.isfinite(tr.history["loss"]))
    # the latent action of a map towards a peaked density is stiffer than S: dH ~ 1.2 at 10
    # steps, 0.07 at 20 (plain HMC: 0.02 at 10)
    hmc = FlowHMC(flow, act, n_steps=12, tau=1.0, tau_jitter=0.2)
    rng = RandomStreams(9, 16, NP)
    z = flow.draw_latent(rng)
    acc, plaq, q2 = [], [], []
    for _ in range(40):
        z, info = hmc.step(z, rng)
        acc.append(to_numpy(info.accepted))
        U = hmc.to_field(z)
        plaq.append(average_plaquette(U))
        q2.append(topological_charge_2d(U) ** 2)
    assert np.mean(acc) > 0.5, np.mean(acc)
    assert abs(_chain_means_z(plaq, u1_plaquette(beta, 16), 5)) < Z_MAX
    assert abs(_chain_means_z(q2, 16 * u1_topological_susceptibility(beta, 16), 5)) < Z_MAX


def test_flow_hmc_force_is_the_gradient_of_the_pulled_back_action():
    act = GaugeAction(1.5, 2)
    flow = luscher_flow(act, (3, 3), NP, n_steps=3)
    hmc = FlowHMC(flow, act, n_steps=2)
    pa = hmc.latent_action
    rng = RandomStreams(1, 2, NP)
    z = flow.draw_latent(rng)
    X = random_algebra(rng, (2, 3, 3), 2)
    h = 1e-5
    fd = float(np.sum(to_numpy(pa.action(expm_algebra(h * X) @ z)
                               - pa.action(expm_algebra(-h * X) @ z)))) / (2 * h)
    an = -_pairing(X, pa.force(z))
    assert abs(fd - an) < 1e-7 * abs(fd), (fd, an)
