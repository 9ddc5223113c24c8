"""The path-gradient estimator of the reverse KL (FlowTrainer(mode="path_gradient"),
lattice_ml.flows.train.path_gradient_grads) for the φ⁴ coupling flows and the gauge gradient
flows.

Oracles: central differences of the batch loss with the density's parameters held fixed (the
estimator is that loss's exact gradient); the reverse-KL estimator, whose expectation is the
same (compared over many batches, paired, within their errors); flows that are exact for their
target, where the path gradient vanishes sample by sample.
"""

import math

import numpy as np
import pytest

from lattice_ml.backend import RandomStreams, asarray, namespace, namespace_by_name, to_numpy
from lattice_ml.flows import FlowTrainer, make_phi4_flow, reverse_kl_grads
from lattice_ml.flows.train import path_gradient_grads
from lattice_ml.flows.gradient_flow import GradientFlow
from lattice_ml.flows.trivializing import luscher_flow
from lattice_ml.gauge import GaugeAction
from lattice_ml.lattice import Lattice
from lattice_ml.optim import SGD, flatten, unflatten
from lattice_ml.scalar import Phi4Action

NP = namespace_by_name("numpy")
H = 1e-5


def _fixed_density_loss(flow, action, z, params, density_params):
    """mean_b [S(x_b) + log q_{density_params}(x_b)] with x_b = f_{params}(z_b)."""
    old = flow.params
    try:
        flow.params = params
        x, _ = flow.forward(z)
        flow.params = density_params
        return float(np.mean(to_numpy(action.action(x) + flow.log_prob(x))))
    finally:
        flow.params = old


def _worst_fd(flow, action, z, grads, seed):
    """Largest relative deviation of the path gradient from central differences of the
    fixed-density loss, one random direction per parameter leaf."""
    names, leaves, td = flatten(flow.params)
    _, gleaves, _ = flatten(grads)
    worst = 0.0
    for i, (p, g) in enumerate(zip(leaves, gleaves)):
        xp = namespace(p)
        v = np.random.default_rng(seed + i).standard_normal(tuple(p.shape))
        vals = []
        for s in (H, -H):
            new = list(leaves)
            new[i] = p + s * asarray(v, xp, dtype=p.dtype)
            vals.append(_fixed_density_loss(flow, action, z, unflatten(td, new), flow.params))
        fd = (vals[0] - vals[1]) / (2 * H)
        an = float(np.sum(to_numpy(g) * v))
        worst = max(worst, abs(fd - an) / max(abs(an), 1e-3))
    return worst


def test_path_gradient_of_a_phi4_flow_matches_finite_differences(xp_cpu):
    xp = xp_cpu
    action = Phi4Action(Lattice((4, 4)), "standard", m2=-1.0, lam=0.5)
    flow = make_phi4_flow((4, 4), xp, n_layers=2, hidden=(3,), seed=1)
    z = RandomStreams(0, 3, xp).normal((4, 4))
    loss, grads, log_w = path_gradient_grads(flow, action, z)
    loss_r, _, log_w_r = reverse_kl_grads(flow, action, z)
    assert loss == loss_r
    np.testing.assert_array_equal(log_w, log_w_r)
    assert _worst_fd(flow, action, z, grads, seed=3) < 1e-6


@pytest.mark.parametrize("N,memory", [(1, "constant"), (2, "stages")])
def test_path_gradient_of_a_gradient_flow_matches_finite_differences(xp_cpu, N, memory):
    xp = xp_cpu
    action = GaugeAction(2.0, N)
    flow = GradientFlow((3, 3), N, xp, loops=("plaquette", "rectangle"), n_t=2, n_steps=3,
                        memory=memory, theta=np.array([[0.4, -0.2], [0.1, 0.05]]))
    z = flow.draw_latent(RandomStreams(2, 2, xp))
    loss, grads, log_w = path_gradient_grads(flow, action, z)
    assert loss == reverse_kl_grads(flow, action, z)[0]
    assert _worst_fd(flow, action, z, grads, seed=5) < 1e-7


def _exact_free_flow(xp):
    """S = sum_x phi^2 (hopping form, beta = lam = 0: phi(x) ~ N(0, 1/2) independently) and two
    affine couplings whose conditioners output the constant s = log(1/sqrt 2), t = 0: x = z /
    sqrt 2, exactly the target. The weights of the conditioners are zero, their gradients
    not."""
    action = Phi4Action(Lattice((4, 4)), "hopping", beta=0.0, lam=0.0)
    flow = make_phi4_flow((4, 4), xp, n_layers=2, hidden=(3,), seed=1)
    host = flow.params_to_host()
    for layer in host.values():
        for conv in layer.values():
            for k in conv:
                conv[k] = np.zeros_like(conv[k])
        last = layer[f"conv{len(layer) - 1}"]
        last["bias"][0] = math.atanh(-0.5 * math.log(2.0))       # tanh(b) = s
    flow.load_params(host)
    return flow, action


def test_path_gradient_vanishes_for_every_batch_at_an_exact_flow():
    """At a flow with q = p the path gradient is zero sample by sample (grad_x [S + log q] = 0),
    while the reverse-KL gradient is zero only on average (each batch's is of size 1/sqrt(B)).
    Two cases: the exact affine flow of a free ultralocal φ⁴ theory, and the identity gradient
    flow of SU(2) at beta = 0 (Haar target)."""
    flow, action = _exact_free_flow(NP)
    gauge = GradientFlow((4, 4), 2, NP, loops=("plaquette", "rectangle"), n_t=2, n_steps=2)
    cases = [(flow, action, lambda r: r.normal((4, 4))),
             (gauge, GaugeAction(0.0, 2), gauge.draw_latent)]
    for fl, act, draw in cases:
        rng = RandomStreams(4, 8, NP)
        for _ in range(3):
            z = draw(rng)
            loss, gp, log_w = path_gradient_grads(fl, act, z)
            _, gr, _ = reverse_kl_grads(fl, act, z)
            assert np.ptp(log_w) < 1e-12                       # the flow is exact
            assert max(float(np.max(np.abs(g))) for g in flatten(gp)[1]) < 1e-13
            assert max(float(np.max(np.abs(g))) for g in flatten(gr)[1]) > 1e-3


def _paired_means(flow, action, draw, n_batches, seed):
    """Per-batch reverse-KL and path gradients on the same latent batches (flattened leaves)."""
    rng = RandomStreams(seed, 8, NP)
    rk, pg = [], []
    for _ in range(n_batches):
        z = draw(rng)
        rk.append(np.concatenate([np.ravel(g) for g in flatten(
            reverse_kl_grads(flow, action, z)[1])[1]]))
        pg.append(np.concatenate([np.ravel(g) for g in flatten(
            path_gradient_grads(flow, action, z)[1])[1]]))
    return np.array(rk), np.array(pg)


@pytest.mark.parametrize("case", ["phi4", pytest.param("su2", marks=pytest.mark.slow)])
def test_path_gradient_has_the_expectation_of_the_reverse_kl_gradient(case):
    """Paired over the same batches, the mean difference of the two estimators is zero within
    4 standard errors in every component, while the mean gradient itself is many standard errors
    from zero (so a wrong sign, factor or missing term would show)."""
    if case == "phi4":
        action = Phi4Action(Lattice((4, 4)), "standard", m2=-1.0, lam=0.5)
        flow = make_phi4_flow((4, 4), NP, n_layers=2, hidden=(2,), seed=2)
        rk, pg = _paired_means(flow, action, lambda r: r.normal((4, 4)), 60, seed=6)
    else:
        action = GaugeAction(2.0, 2)
        flow = luscher_flow(action, (4, 4), NP, loops=("plaquette", "rectangle"), n_t=2,
                            n_steps=6, memory="stages")
        flow.load_params({"theta": np.array([[0.1, 0.2], [0.15, -0.1]])})   # far from optimal
        rk, pg = _paired_means(flow, action, flow.draw_latent, 40, seed=6)
    n = rk.shape[0]
    diff = pg - rk
    z_diff = np.mean(diff, 0) / (np.std(diff, 0, ddof=1) / math.sqrt(n))
    z_mean = np.mean(rk, 0) / (np.std(rk, 0, ddof=1) / math.sqrt(n))
    assert np.max(np.abs(z_diff)) < 4.0, z_diff
    assert np.max(np.abs(z_mean)) > 8.0, z_mean


def test_path_gradient_trainer_reports_the_reverse_kl_loss():
    """Same seed, same latent draws: the first step's loss and ESS equal reverse KL's."""
    action = GaugeAction(2.0, 1)
    out = {}
    for mode in ("reverse_kl", "path_gradient"):
        flow = luscher_flow(action, (4, 4), NP, n_t=2, n_steps=4, memory="stages")
        flow.load_params({"theta": 0.5 * flow.params_to_host()["theta"]})
        tr = FlowTrainer(flow, action, SGD(0.0), batch_size=8, seed=3, mode=mode)
        out[mode] = tr.step()
    assert out["path_gradient"]["loss"] == out["reverse_kl"]["loss"]
    assert out["path_gradient"]["ess"] == out["reverse_kl"]["ess"]
    assert math.isfinite(out["path_gradient"]["grad_norm"])


def test_path_gradient_needs_the_inverse_vjp():
    class NoInverse:
        params = {"w": NP.zeros(1)}
    with pytest.raises(ValueError, match="inverse_vjp"):
        FlowTrainer(NoInverse(), None, SGD(0.1), batch_size=4, mode="path_gradient")
