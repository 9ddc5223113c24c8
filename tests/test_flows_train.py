"""Flow training: loss gradients against finite differences, learning on a free field, exact
resumption from a checkpoint, gradient clipping, forward-KL from samples, argument errors."""

import io
import math

import numpy as np
import pytest

from lattice_ml.backend import RandomStreams, asarray, namespace, namespace_by_name, to_numpy
from lattice_ml.flows import (FlowTrainer, ProgressPrinter, forward_kl_grads, make_phi4_flow,
                              prior_log_prob, reverse_kl_grads)
from lattice_ml.lattice import Lattice
from lattice_ml.optim import SGD, Adam, cosine_decay, flatten, unflatten
from lattice_ml.scalar import Phi4Action, free_propagator

H = 1e-5
NP = namespace_by_name("numpy")     # learning checks on NumPy (array-api-strict is slow)


def with_params(flow, params, fn):
    old = flow.params
    flow.params = params
    try:
        return fn()
    finally:
        flow.params = old


def worst_param_fd(flow, loss_fn, grads, seed):
    names, leaves, td = flatten(flow.params)
    _, gleaves, _ = flatten(grads)
    worst = 0.0
    for i, (p, g) in enumerate(zip(leaves, gleaves)):
        xp = namespace(p)
        v = np.random.default_rng(seed + i).standard_normal(tuple(p.shape))
        vx = asarray(v, xp, dtype=p.dtype)

        def at(eps):
            new = list(leaves)
            new[i] = p + eps * vx
            return with_params(flow, unflatten(td, new), loss_fn)

        fd = (at(H) - at(-H)) / (2 * H)
        an = float(np.sum(to_numpy(g) * v))
        worst = max(worst, abs(fd - an) / max(abs(an), 1e-3))
    return worst


def test_reverse_kl_gradient_matches_finite_differences(xp):
    lat = Lattice((4, 4))
    action = Phi4Action(lat, "standard", m2=-1.0, lam=0.5)
    flow = make_phi4_flow((4, 4), xp, n_layers=2, hidden=(3,), seed=1)
    z = RandomStreams(0, 3, xp).normal((4, 4))
    loss, grads, log_w = reverse_kl_grads(flow, action, z)
    x, logJ = flow.forward(z)
    expected = float(np.mean(to_numpy(prior_log_prob(z) - logJ + action.action(x))))
    assert loss == pytest.approx(expected, rel=1e-13)
    np.testing.assert_allclose(log_w, -to_numpy(action.action(x) + prior_log_prob(z) - logJ),
                               rtol=1e-13)
    assert worst_param_fd(flow, lambda: reverse_kl_grads(flow, action, z)[0], grads, 10) < 1e-7


def test_forward_kl_gradient_matches_finite_differences(xp):
    flow = make_phi4_flow((4, 4), xp, n_layers=2, hidden=(3,), seed=2)
    x = RandomStreams(1, 3, xp).normal((4, 4))
    loss, grads = forward_kl_grads(flow, x)
    assert loss == pytest.approx(-float(np.mean(to_numpy(flow.log_prob(x)))), rel=1e-13)
    assert worst_param_fd(flow, lambda: forward_kl_grads(flow, x)[0], grads, 20) < 1e-7


def free_field_setup(xp, seed=3):
    lat = Lattice((4, 4))
    action = Phi4Action(lat, "standard", m2=0.5, lam=0.0)
    flow = make_phi4_flow((4, 4), xp, n_layers=2, hidden=(4,), seed=seed, final_scale=0.3)
    return lat, action, flow


def test_reverse_kl_training_learns_the_free_field():
    xp = NP
    _, action, flow = free_field_setup(xp)
    tr = FlowTrainer(flow, action, Adam(3e-2), batch_size=64, seed=4)
    ess0 = tr.flow_ess(RandomStreams(99, 512, xp))
    tr.train(60)
    h = tr.history
    assert len(h["loss"]) == 60 and tr.step_count == 60 and tr.skipped == 0
    ess1 = tr.flow_ess(RandomStreams(99, 512, xp))
    # the reverse KL is bounded below by -log Z; it must drop and the ESS must rise
    assert np.mean(h["loss"][-10:]) < np.mean(h["loss"][:10]) - 1.0
    assert ess1 > 2 * ess0 and ess1 > 0.3, (ess0, ess1)


def exact_free_samples(lat, m2, n, seed):
    """Independent samples of the free standard-form field from its propagator (by FFT)."""
    G = to_numpy(free_propagator(lat, NP, "standard", m2=m2))
    rng = np.random.default_rng(seed)
    white = rng.standard_normal((n, *lat.shape))
    return np.real(np.fft.ifft2(np.fft.fft2(white) * np.sqrt(G)))


def test_forward_kl_training_from_samples():
    xp = NP
    lat, action, flow = free_field_setup(xp, seed=5)
    host = exact_free_samples(lat, 0.5, 2000, 6)
    # the generated field has <|phi~(p)|^2>/V = G(p)
    G = to_numpy(free_propagator(lat, NP, "standard", m2=0.5))
    est = np.mean(np.abs(np.fft.fft2(host)) ** 2, axis=0) / lat.volume
    assert np.max(np.abs(est / G - 1)) < 0.15
    samples = asarray(host, xp)
    tr = FlowTrainer(flow, action, Adam(3e-2), batch_size=64, seed=7, mode="forward_kl",
                     samples=samples, ess_every=20)
    nll0 = -float(np.mean(to_numpy(flow.log_prob(samples))))
    tr.train(60)
    nll1 = -float(np.mean(to_numpy(flow.log_prob(samples))))
    assert nll1 < nll0 - 1.0, (nll0, nll1)
    ess = tr.history["ess"]
    assert all(math.isfinite(e) for e in ess[::20]) and math.isnan(ess[1])


def test_checkpoint_resumes_exactly(xp_cpu):
    xp = xp_cpu
    _, action, _ = free_field_setup(xp)

    def make():
        flow = make_phi4_flow((4, 4), xp, n_layers=2, hidden=(3,), seed=8)
        opt = Adam(cosine_decay(1e-2, 10))
        return FlowTrainer(flow, action, opt, batch_size=8, seed=9, max_grad_norm=5.0)

    full = make()
    full.train(6)
    first = make()
    first.train(3)
    state = first.state_dict()
    resumed = make()
    resumed.load_state_dict(state)
    resumed.train(3)
    for a, b in zip(flatten(full.flow.params)[1], flatten(resumed.flow.params)[1]):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    for k in ("loss", "ess", "grad_norm", "lr"):
        assert full.history[k] == resumed.history[k]
    assert resumed.step_count == 6
    with pytest.raises(ValueError, match="batch size"):
        FlowTrainer(make().flow, action, Adam(1e-2), batch_size=4).load_state_dict(state)


def test_gradient_clipping_bounds_the_update(xp_cpu):
    xp = xp_cpu
    _, action, flow = free_field_setup(xp)
    before = [to_numpy(p).copy() for p in flatten(flow.params)[1]]
    tr = FlowTrainer(flow, action, SGD(0.5), batch_size=8, seed=1, max_grad_norm=1e-3)
    rec = tr.step()
    assert rec["grad_norm"] > 1e-3                     # recorded before clipping
    after = [to_numpy(p) for p in flatten(flow.params)[1]]
    moved = math.sqrt(sum(float(np.sum((a - b) ** 2)) for a, b in zip(after, before)))
    assert moved == pytest.approx(0.5 * 1e-3, rel=1e-10)


def test_progress_printer_and_callback(xp_cpu):
    _, action, flow = free_field_setup(xp_cpu)
    buf = io.StringIO()
    seen = []
    printer = ProgressPrinter(every=2, stream=buf)
    tr = FlowTrainer(flow, action, Adam(1e-2), batch_size=4, seed=2)
    tr.train(4, callback=lambda t, r: (seen.append(r["step"]), printer(t, r)))
    assert seen == [1, 2, 3, 4]
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("step      2") and "ess" in lines[0]


def test_trainer_rejects_bad_arguments(xp_cpu):
    xp = xp_cpu
    _, action, flow = free_field_setup(xp)
    with pytest.raises(ValueError, match="training mode"):
        FlowTrainer(flow, action, Adam(1e-2), batch_size=4, mode="kl")
    with pytest.raises(ValueError, match="needs samples"):
        FlowTrainer(flow, action, Adam(1e-2), batch_size=4, mode="forward_kl")
    with pytest.raises(ValueError, match="samples must have shape"):
        FlowTrainer(flow, action, Adam(1e-2), batch_size=4, mode="forward_kl",
                    samples=xp.zeros((5, 4, 3)))
    with pytest.raises(ValueError, match="batch_size"):
        FlowTrainer(flow, action, Adam(1e-2), batch_size=1)
    with pytest.raises(ValueError, match="max_grad_norm"):
        FlowTrainer(flow, action, Adam(1e-2), batch_size=4, max_grad_norm=0.0)


def test_forward_kl_trainer_runs_on_every_namespace(xp_cpu):
    xp = xp_cpu
    _, action, flow = free_field_setup(xp)
    samples = RandomStreams(0, 20, xp).normal((4, 4))
    tr = FlowTrainer(flow, action, Adam(1e-2), batch_size=8, mode="forward_kl", samples=samples,
                     ess_every=1)
    tr.train(2)
    assert all(math.isfinite(v) for k in ("loss", "ess", "grad_norm") for v in tr.history[k])
