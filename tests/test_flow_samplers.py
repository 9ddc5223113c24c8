"""Flow-based samplers: independence Metropolis and flow HMC.

Exactness is checked against exact values: the free propagator G(p) on 4x4 (with a poorly trained
flow, ESS ~ 0.3) and numerical quadrature of the interacting 2x2 theory at m^2 = -4, lambda = 8
(with an *untrained* random flow for Metropolis, acceptance of a few per cent). A flow whose
density is the target gives acceptance 1 and a free latent force; the flow-HMC force equals
finite differences of the pulled-back action in float64. The statistical checks run on NumPy;
the other tests on NumPy and array-api-strict."""

import numpy as np
import pytest

from lattice_ml.backend import RandomStreams, asarray, namespace_by_name, to_numpy
from lattice_ml.flows import FlowTrainer, effective_sample_size, make_phi4_flow
from lattice_ml.lattice import Lattice
from lattice_ml.optim import Adam
from lattice_ml.samplers.flow_hmc import FlowHMC, PulledBackAction
from lattice_ml.samplers.flow_mcmc import FlowMetropolis
from lattice_ml.scalar import Phi4Action, free_propagator
from lattice_ml.stats import effective_sample_size as stats_ess
from lattice_ml.stats import gamma_method

Z_MAX = 4.0
NP = namespace_by_name("numpy")     # statistical checks run on NumPy (array-api-strict is slow)


def quadrature_2x2(m2, lam, n=50, a=2.4):
    """<phi^2> (site average) and <M^2>/V on the 2x2 lattice (standard form) by quadrature.

    On 2x2 every site has the two others of opposite parity as neighbours in both directions,
    so with sites a=(0,0), d=(1,1) and b=(0,1), c=(1,0) the action is
    S = sum_x [(4 + m2) phi^2 + lam phi^4] - 4 (phi_a + phi_d)(phi_b + phi_c),
    and Z = sum_{ad, bc} w_ad exp(4 u_ad v_bc) w_bc is a matrix product over two 2D grids.
    """
    g = np.linspace(-a, a, n)
    w = np.exp(-((4.0 + m2) * g ** 2 + lam * g ** 4))
    A, D = np.meshgrid(g, g, indexing="ij")
    W2 = np.outer(w, w).ravel()
    u = (A + D).ravel()
    q = (A ** 2 + D ** 2).ravel()
    E = np.exp(4.0 * np.outer(u, u))
    Z = W2 @ E @ W2
    phi2 = 2 * ((W2 * q) @ E @ W2) / Z / 4
    M2 = (2 * ((W2 * u ** 2) @ E @ W2) + 2 * ((W2 * u) @ E @ (W2 * u))) / Z / 4
    return phi2, M2


def test_quadrature_matches_the_action_on_a_grid():
    """The closed form of the 2x2 action used by the quadrature equals Phi4Action."""
    xp = NP
    act = Phi4Action(Lattice((2, 2)), "standard", m2=-4.0, lam=8.0)
    phi = np.random.default_rng(0).standard_normal((20, 2, 2))
    a, b, c, d = phi[:, 0, 0], phi[:, 0, 1], phi[:, 1, 0], phi[:, 1, 1]
    local = sum(0.0 * p2 + 8.0 * p2 ** 2 for p2 in (a * a, b * b, c * c, d * d))
    S = local - 4 * (a + d) * (b + c)
    np.testing.assert_allclose(to_numpy(act.action(xp.asarray(phi))), S, rtol=1e-12)
    # converged in the grid: the default n = 50 agrees with n = 40 to 1e-7 (and with n = 70 to
    # 1e-11, checked once; too slow for every run)
    assert quadrature_2x2(-4.0, 8.0, n=40) == pytest.approx(quadrature_2x2(-4.0, 8.0), rel=1e-7)


def z_scores(hist, exact, discard):
    """(estimate - exact) / Gamma-method error for histories [n_steps][batch] -> (R, N)."""
    r = gamma_method(np.stack([to_numpy(h) for h in hist], axis=1)[:, discard:])
    return (r.value - exact) / r.error


def z_scores_by_chain(hist, exact, discard):
    """(estimate - exact) / error from the spread of the R independent chain means (robust when
    the chains are long-correlated, as with a poor proposal: no window to choose)."""
    means = np.mean(np.stack([to_numpy(h) for h in hist], axis=1)[:, discard:], axis=1)
    return (np.mean(means) - exact) / (np.std(means, ddof=1) / np.sqrt(len(means)))


def test_flow_metropolis_is_exact_for_the_free_field_with_a_poor_flow():
    xp = NP
    lat = Lattice((4, 4))
    action = Phi4Action(lat, "standard", m2=0.5, lam=0.0)
    G = to_numpy(free_propagator(lat, xp, "standard", m2=0.5))
    flow = make_phi4_flow((4, 4), xp, n_layers=2, hidden=(4,), seed=3, final_scale=0.3)
    FlowTrainer(flow, action, Adam(3e-2), batch_size=32, seed=5).train(30)
    sampler = FlowMetropolis(flow, action)
    rng = RandomStreams(1, 16, xp)
    obs = {"p2": lambda x: np.abs(np.fft.fft2(to_numpy(x))) ** 2 / lat.volume}
    _, hist = sampler.run(rng, 300, obs)
    summary = sampler.summary(hist)
    assert 0.2 < summary["acceptance"] < 0.9 and 0.05 < summary["ess"] < 0.9, summary
    P = np.stack(hist["p2"], axis=1)[:, 30:]
    for n0 in range(4):
        for n1 in range(4):
            r = gamma_method(P[..., n0, n1])
            assert abs(r.value - G[n0, n1]) < Z_MAX * r.error, (n0, n1, r.value, G[n0, n1])


def test_flow_metropolis_is_exact_on_2x2_with_an_untrained_flow():
    xp = NP
    action = Phi4Action(Lattice((2, 2)), "standard", m2=-4.0, lam=8.0)
    phi2, M2 = quadrature_2x2(-4.0, 8.0)
    flow = make_phi4_flow((2, 2), xp, n_layers=2, hidden=(4,), seed=3, final_scale=0.5)
    sampler = FlowMetropolis(flow, action)
    obs = {"phi2": lambda x: xp.mean(x * x, axis=(1, 2)),
           "M2": lambda x: xp.sum(x, axis=(1, 2)) ** 2 / 4}
    _, hist = sampler.run(RandomStreams(2, 16, xp), 600, obs)
    acc = sampler.summary(hist)["acceptance"]
    assert 0.01 < acc < 0.2, acc                      # a poor proposal (tau_int ~ 30) ...
    # ... and still exact; 16 chain means, t-distribution with 15 d.o.f.: |t| < 4.5 at 1e-3
    assert abs(z_scores_by_chain(hist["phi2"], phi2, 50)) < 4.5
    assert abs(z_scores_by_chain(hist["M2"], M2, 50)) < 4.5


def test_exact_flow_is_always_accepted(xp):
    """Target = the flow's own density: every proposal is accepted, ESS = 1, and the pulled-back
    action is the free latent action z^2/2 + const with force -z."""
    flow = make_phi4_flow((4, 4), xp, n_layers=2, hidden=(3,), seed=4)

    class FlowDensity:
        def action(self, x):
            return -flow.log_prob(x)

        def force(self, x):
            z, ld, caches = flow.inverse_cache(x)
            g, _ = flow.inverse_vjp(caches, -z, xp.full((x.shape[0],), 1.0, dtype=x.dtype))
            return g

    target = FlowDensity()
    sampler = FlowMetropolis(flow, target)
    _, hist = sampler.run(RandomStreams(5, 4, xp), 5, {})
    s = sampler.summary(hist)
    assert s["acceptance"] == 1.0 and s["ess"] == pytest.approx(1.0, abs=1e-12)
    z = RandomStreams(6, 3, xp).normal((4, 4))
    pulled = PulledBackAction(flow, target)
    np.testing.assert_allclose(to_numpy(pulled.force(z)), -to_numpy(z), atol=1e-11)
    S = to_numpy(pulled.action(z)) - 0.5 * np.sum(to_numpy(z) ** 2, axis=(1, 2))
    np.testing.assert_allclose(S, S[0], atol=1e-11)


def test_flow_hmc_force_matches_finite_differences(xp):
    action = Phi4Action(Lattice((4, 4)), "standard", m2=-4.0, lam=8.0)
    flow = make_phi4_flow((4, 4), xp, n_layers=3, hidden=(3,), seed=7, final_scale=0.5)
    pulled = PulledBackAction(flow, action)
    z = RandomStreams(8, 2, xp).normal((4, 4)) * 0.5
    F = to_numpy(pulled.force(z))
    h = 1e-6                     # the quartic action is stiff: truncation error ~ 4e3 h^2 here
    worst = 0.0
    for k in range(3):
        v = np.random.default_rng(k).standard_normal((2, 4, 4))
        vx = asarray(v, xp)
        dS = (to_numpy(pulled.action(z + h * vx)) - to_numpy(pulled.action(z - h * vx))) / (2 * h)
        an = -np.sum(F * v, axis=(1, 2))
        worst = max(worst, float(np.max(np.abs(dS - an) / np.maximum(np.abs(an), 1e-3))))
    assert worst < 1e-7, worst


def test_flow_hmc_is_exact_on_2x2():
    xp = NP
    action = Phi4Action(Lattice((2, 2)), "standard", m2=-4.0, lam=8.0)
    phi2, M2 = quadrature_2x2(-4.0, 8.0)
    flow = make_phi4_flow((2, 2), xp, n_layers=2, hidden=(4,), seed=3, final_scale=0.5)
    FlowTrainer(flow, action, Adam(2e-2), batch_size=32, seed=1).train(30)
    hmc = FlowHMC(flow, action, n_steps=3, tau=1.0, tau_jitter=0.3)
    rng = RandomStreams(9, 16, xp)
    z = rng.normal((2, 2))
    acc, h_phi2, h_M2 = [], [], []
    for _ in range(100):
        z, info = hmc.step(z, rng)
        acc.append(to_numpy(info.accepted))
        x = hmc.to_field(z)
        h_phi2.append(xp.mean(x * x, axis=(1, 2)))
        h_M2.append(xp.sum(x, axis=(1, 2)) ** 2 / 4)
    assert np.mean(acc) > 0.7
    assert abs(z_scores(h_phi2, phi2, 15)) < Z_MAX
    assert abs(z_scores(h_M2, M2, 15)) < Z_MAX
    x = hmc.to_field(z)
    np.testing.assert_allclose(to_numpy(hmc.from_field(x)), to_numpy(z), atol=1e-12)


def test_effective_sample_size_agrees_with_stats(xp_cpu):
    lw = np.random.default_rng(0).standard_normal(50) * 2.0
    assert effective_sample_size(lw) == pytest.approx(stats_ess(lw), rel=1e-14)
    assert effective_sample_size(np.zeros(7)) == pytest.approx(1.0)
    assert effective_sample_size is stats_ess            # one ESS in the library
    with pytest.raises(ValueError, match="NaN"):
        effective_sample_size(np.array([0.0, np.nan]))


def test_flow_metropolis_rejects_bad_arguments(xp_cpu):
    flow = make_phi4_flow((2, 2), xp_cpu, n_layers=2, hidden=(2,))
    action = Phi4Action(Lattice((2, 2)), "standard", m2=1.0, lam=0.0)
    with pytest.raises(ValueError, match="n_steps"):
        FlowMetropolis(flow, action).run(RandomStreams(0, 2, xp_cpu), 0, {})


def test_hopping_point_of_the_benchmark_is_the_tutorial_point():
    """S_hopping(beta = 0.5, lam = 0.5)[2 phi] = S_standard(m2 = -4, lam = 8)[phi] + V/2, the map
    used by benchmarks/bench_flows.py and docs/flows.md (phi_standard = phi_hopping / 2)."""
    lat = Lattice((4, 6))
    std = Phi4Action(lat, "standard", m2=-4.0, lam=8.0)
    hop = Phi4Action(lat, "hopping", beta=0.5, lam=0.5)
    phi = NP.asarray(np.random.default_rng(1).standard_normal((3, 4, 6)))
    np.testing.assert_allclose(to_numpy(hop.action(2 * phi)),
                               to_numpy(std.action(phi)) + lat.volume / 2, rtol=1e-13)
    np.testing.assert_allclose(to_numpy(hop.force(2 * phi)), to_numpy(std.force(phi)) / 2,
                               rtol=1e-12, atol=1e-12)


def test_step_with_kept_log_weight_matches_the_recomputed_one(xp):
    """step(x) (log-weight recomputed) makes the same decisions as step(x, log_w=kept)."""
    action = Phi4Action(Lattice((4, 4)), "standard", m2=-4.0, lam=8.0)
    flow = make_phi4_flow((4, 4), xp, n_layers=2, hidden=(3,), seed=2, final_scale=0.5)
    sampler = FlowMetropolis(flow, action)
    rng_a, rng_b = RandomStreams(4, 8, xp), RandomStreams(4, 8, xp)
    state = sampler.init(rng_a)
    x = sampler.init(rng_b).x
    log_w = state.log_w
    xa = state.x
    n_acc = 0
    for _ in range(6):
        xa, info = sampler.step(xa, rng_a, log_w)
        log_w = info.log_w
        x, step = sampler.step(x, rng_b)
        np.testing.assert_array_equal(to_numpy(step.accepted), to_numpy(info.accepted))
        np.testing.assert_allclose(to_numpy(x), to_numpy(xa), atol=1e-12)
        np.testing.assert_allclose(to_numpy(step.log_w), to_numpy(sampler.log_weight(x)),
                                   atol=1e-9)
        n_acc += int(np.sum(to_numpy(info.accepted)))
        acc = to_numpy(step.accepted)
        assert np.all((to_numpy(step.delta_h) < 0) <= acc)    # a downhill move is accepted
    assert 0 < n_acc < 48


@pytest.mark.slow
def test_tutorial_point_two_point_susceptibility_matches_published_hmc():
    """L = 8, m^2 = -4, lambda = 8 (Albergo et al., arXiv:2101.08176): flow Metropolis with a
    briefly trained flow reproduces the tutorial's HMC value chi_2 = V <M^2> = 0.75(1)."""
    xp = NP
    lat = Lattice((8, 8))
    action = Phi4Action(lat, "standard", m2=-4.0, lam=8.0)
    flow = make_phi4_flow(lat.shape, xp, n_layers=8, hidden=(8,), seed=8, dtype=xp.float32)
    from lattice_ml.optim import cosine_decay

    FlowTrainer(flow, action, Adam(cosine_decay(3e-3, 300, 1e-5)), batch_size=64, seed=8,
                max_grad_norm=100.0, dtype="float32").train(300)
    sampler = FlowMetropolis(flow, action)
    obs = {"M2": lambda x: to_numpy(xp.mean(x, axis=(1, 2))).astype(np.float64) ** 2}
    _, hist = sampler.run(RandomStreams(11, 64, xp, dtype="float32"), 400, obs)
    assert sampler.summary(hist)["acceptance"] > 0.05
    # a briefly trained flow rejects in long streaks, so 360 samples per chain are too few for the
    # Gamma-method window; the 64 chains are independent, so the spread of their means is an
    # honest error (each chain mean is itself an average over its own autocorrelated history)
    means = np.mean(np.stack(hist["M2"], axis=1)[:, 40:], axis=1)
    chi2 = lat.volume * float(np.mean(means))
    err = lat.volume * float(np.std(means, ddof=1)) / np.sqrt(means.size)
    assert abs(chi2 - 0.75) < Z_MAX * np.hypot(err, 0.01), (chi2, err)
