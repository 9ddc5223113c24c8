"""The inverse vjp of the gradient flow (lattice_ml.flows.gradient_flow_inverse) and forward-KL
training of gauge flows.

Oracles independent of the code under test: central differences of the inverse map itself
(GradientFlow.inverse, float64) over every link in a random algebra direction and over the
parameters in a random direction; the forward vjp (the inverse's Jacobian is its inverse); exact
heatbath samples for forward KL.
"""

import numpy as np
import pytest

from lattice_ml.backend import RandomStreams, namespace_by_name, to_numpy
from lattice_ml.flows import FlowTrainer, forward_kl_grads
from lattice_ml.flows.gradient_flow import GradientFlow
from lattice_ml.flows.gradient_flow_inverse import cache_from_forward
from lattice_ml.gauge import GaugeAction
from lattice_ml.groups import expm_algebra, random_algebra, random_near_identity
from lattice_ml.optim import Adam
from lattice_ml.samplers.heatbath import Heatbath

NP = namespace_by_name("numpy")


def _pairing(X, G):
    """``sum_links sum_a X^a G^a = -2 Re Tr(X G)`` summed over everything."""
    return float(-2.0 * np.sum(np.real(np.einsum("...ij,...ji->...", to_numpy(X),
                                                 to_numpy(G)))))


def _flow(xp, N, shape, loops, memory, n_steps, seed=0, scale=0.1):
    probe = GradientFlow(shape, N, xp, loops=loops)
    theta = np.random.default_rng(seed + N).normal(scale=scale, size=(probe.n_w, 3))
    theta[0, 0] = 0.4
    return GradientFlow(shape, N, xp, loops=loops, n_t=3, theta=theta, n_steps=n_steps,
                        memory=memory), theta


@pytest.mark.parametrize("backend,N,shape,loops,memory", [
    ("numpy", 1, (3, 3), ("plaquette", "rectangle"), "stages"),
    ("array_api_strict", 1, (3, 3), ("plaquette", "rectangle"), "states"),
    ("numpy", 2, (3, 2), ("plaquette", "polyakov"), "states"),
    ("numpy", 3, (2, 2), ("plaquette",), "constant"),
    pytest.param("numpy", 3, (3, 3), ("plaquette", "rectangle"), "constant",
                 marks=pytest.mark.slow)])
def test_inverse_vjp_matches_finite_differences(backend, N, shape, loops, memory):
    """L(U) = S(z(U)) + <gamma, logdet(U)> for (z, logdet) = inverse(U): d/ds L(exp(s X) U)
    over every link in a random algebra direction X, and d/ds L at theta + s dtheta (U fixed),
    against inverse_vjp (float64 central differences, h = 1e-5: truncation ~1e-9)."""
    xp = namespace_by_name(backend)
    f, theta = _flow(xp, N, shape, loops, memory, n_steps=3)
    rng = RandomStreams(3, 2, xp)
    act = GaugeAction(1.3, N)
    gam = xp.asarray(np.array([0.7, -0.4]))
    U, _ = f.forward(f.draw_latent(rng))

    def L(UU):
        z, ld = f.inverse(UU)
        return float(to_numpy(xp.sum(act.action(z)) + xp.sum(gam * ld)))

    z, ld, cache = f.inverse_cache(U)
    z2, ld2 = f.inverse(U)
    np.testing.assert_array_equal(to_numpy(z), to_numpy(z2))
    np.testing.assert_array_equal(to_numpy(ld), to_numpy(ld2))
    gU, gp = f.inverse_vjp(cache, -act.force(z), gam)
    X = random_algebra(rng, (len(shape), *shape), N)
    h = 1e-5
    fd = (L(expm_algebra(h * X) @ U) - L(expm_algebra(-h * X) @ U)) / (2 * h)
    assert abs(fd - _pairing(X, gU)) < 3e-8 * abs(fd), (fd, _pairing(X, gU))
    d = np.random.default_rng(1).normal(size=theta.shape)
    vals = []
    for s in (h, -h):
        f.load_params({"theta": theta + s * d})
        vals.append(L(U))
    f.load_params({"theta": theta})
    fdt = (vals[0] - vals[1]) / (2 * h)
    an = float(np.sum(to_numpy(gp["theta"]) * d))
    assert abs(fdt - an) < 3e-8 * abs(fdt), (fdt, an)


@pytest.mark.parametrize("backend,N,memory,loops", [
    ("numpy", 1, "states", ("plaquette", "rectangle")),
    ("array_api_strict", 2, "stages", ("plaquette",)),
    pytest.param("numpy", 3, "constant", ("plaquette", "rectangle"), marks=pytest.mark.slow)])
def test_inverse_vjp_undoes_the_forward_vjp(backend, N, memory, loops):
    """The inverse's Jacobian is the inverse of the forward's: inverse_vjp(vjp(G)) = G to
    round-off; and the log-det of the inverse is -logJ(z(U)), so inverse_vjp(gz = grad_z logJ,
    glogdet = 1) = 0. The inverse cache from the inverse map and the one from the forward cache
    give the same cotangents."""
    xp = namespace_by_name(backend)
    f, _ = _flow(xp, N, (3, 3), loops, memory, n_steps=3, seed=5)
    rng = RandomStreams(7, 2, xp)
    z = f.draw_latent(rng)
    U, _, fcache = f.forward_cache(z)
    zero, one = xp.zeros((2,), dtype=xp.float64), xp.ones((2,), dtype=xp.float64)
    G = random_algebra(rng, (2, 3, 3), N)
    gz, _ = f.vjp(fcache, G, zero, need_params=False)
    scale = float(np.max(np.abs(to_numpy(G))))
    for cache in (cache_from_forward(f, z, fcache), f.inverse_cache(U)[2]):
        back, _ = f.inverse_vjp(cache, gz, zero)
        assert float(np.max(np.abs(to_numpy(back - G)))) < 1e-12 * scale
    gl, _ = f.vjp(fcache, xp.zeros_like(G), one, need_params=False)
    res, gp = f.inverse_vjp(cache_from_forward(f, z, fcache), gl, one, need_params=False)
    assert gp is None
    assert float(np.max(np.abs(to_numpy(res)))) < 1e-12 * float(np.max(np.abs(to_numpy(gl))))


def test_memory_modes_give_the_same_inverse_gradients():
    outs = []
    for memory in ("stages", "states", "constant"):
        f, _ = _flow(NP, 2, (2, 2), ("plaquette",), memory, n_steps=3, seed=2)
        U, _ = f.forward(f.draw_latent(RandomStreams(4, 2, NP)))
        z, ld, cache = f.inverse_cache(U)
        outs.append(f.inverse_vjp(cache, NP.zeros_like(z), NP.asarray([1.0, -0.5])))
    for gU, gp in outs[1:]:
        np.testing.assert_allclose(gU, outs[0][0], atol=1e-12)
        np.testing.assert_allclose(gp["theta"], outs[0][1]["theta"], rtol=1e-11, atol=1e-13)


def test_a_solve_that_does_not_converge_names_n_steps():
    """Coefficients far too large for one step: the forward map still runs, the transposed
    step's Neumann series diverges."""
    f = GradientFlow((2, 2), 2, NP, loops=("plaquette",), n_t=1, theta=np.array([[40.0]]),
                     n_steps=1)
    z = f.draw_latent(RandomStreams(1, 2, NP))
    U, _, fcache = f.forward_cache(z)
    with pytest.raises(RuntimeError, match="n_steps"):
        f.inverse_vjp(cache_from_forward(f, z, fcache), random_algebra(
            RandomStreams(2, 2, NP), (2, 2, 2), 2), NP.zeros(2))


# -- forward KL for gauge flows ------------------------------------------------------------
def _heatbath_samples(N, beta, shape, n_chains, n_keep, seed):
    """``n_chains * n_keep`` configurations from heatbath + over-relaxation chains (cold start,
    40 sweeps of thermalisation, 4 sweeps apart)."""
    rng = RandomStreams(seed, n_chains, NP)
    sampler = Heatbath(beta, N, n_or=1)
    U = random_near_identity(rng, (len(shape), *shape), N, 0.0)
    out = []
    for k in range(40 + 4 * n_keep):
        U, _ = sampler.step(U, rng)
        if k >= 40 and (k - 40) % 4 == 3:
            out.append(U)
    return NP.concat(out, axis=0)


def test_forward_kl_gradient_matches_finite_differences():
    f, theta = _flow(NP, 2, (4, 4), ("plaquette", "rectangle"), "stages", n_steps=4, seed=3)
    x = _heatbath_samples(2, 2.0, (4, 4), 4, 1, seed=5)
    loss, grads = forward_kl_grads(f, x)
    d = np.random.default_rng(2).normal(size=theta.shape)
    vals, h = [], 1e-5
    for s in (h, -h):
        f.load_params({"theta": theta + s * d})
        vals.append(-float(np.mean(f.log_prob(x))))
    f.load_params({"theta": theta})
    fd = (vals[0] - vals[1]) / (2 * h)
    an = float(np.sum(grads["theta"] * d))
    assert loss == pytest.approx(-float(np.mean(f.log_prob(x))), rel=1e-12)
    assert abs(fd - an) < 3e-8 * abs(fd), (fd, an)


@pytest.mark.slow
def test_forward_kl_training_from_heatbath_samples_lowers_the_negative_log_likelihood():
    """2D U(1) 4x4 at beta = 1 from the identity map: 12 forward-KL steps (Adam, lr 0.04, so
    the coefficient stays below its optimum ~ beta/2) on 32 heatbath samples lower -mean log q
    of 32 other heatbath samples by more than 5 standard errors (the identity's -log q is 0 for
    every sample). About 35 CPU s."""
    beta, shape = 1.0, (4, 4)
    train = _heatbath_samples(1, beta, shape, 8, 4, seed=11)
    test = _heatbath_samples(1, beta, shape, 8, 4, seed=12)
    f = GradientFlow(shape, 1, NP, loops=("plaquette",), n_t=1, n_steps=3, memory="stages")
    nll0 = -to_numpy(f.log_prob(test))
    np.testing.assert_allclose(nll0, 0.0, atol=1e-12)
    trainer = FlowTrainer(f, GaugeAction(beta, 1), Adam(0.04), batch_size=8, seed=1,
                          mode="forward_kl", samples=train, ess_every=0)
    trainer.train(12)
    nll = -to_numpy(f.log_prob(test))
    err = np.std(nll) / np.sqrt(nll.size)
    assert np.mean(nll) < -5 * err, (np.mean(nll), err)
    assert trainer.history["loss"][-1] < trainer.history["loss"][0]
    with pytest.raises(ValueError, match="samples must have shape"):
        FlowTrainer(f, GaugeAction(beta, 1), Adam(0.1), batch_size=4, mode="forward_kl",
                    samples=train[:, 0])
