"""CASK (smearing.cask): the attention-weighted stout layer reduces to stout at beta = 0, stays in
the group, is gauge covariant to round-off, and its hand-written backward matches central finite
differences (float64) along random directions that move every link, for every weight one by one
and along a random direction of all weights; NumPy and array-api-strict agree; it plugs into
SmearedAction like a trainable stout network."""

import sys
from pathlib import Path

import numpy as np
import pytest

from lattice_ml.backend import RandomStreams, namespace_by_name, to_numpy
from lattice_ml.gauge import GaugeAction
from lattice_ml.groups import (check_links, gauge_transform, haar_random, project_algebra,
                               random_gauge_transformation, trace)
from lattice_ml.smearing import SmearedAction, StoutSmearing, stout_smear
from lattice_ml.smearing.cask import CASKSmearing, cask_smear

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fd_checks import random_direction_deviation  # noqa: E402
from test_stout import fd_check_params, links  # noqa: E402

NP = namespace_by_name("numpy")


class Loss:
    """Per configuration: L_b(U') = S_iwasaki(U') + sum Re Tr(W U') (a random linear term that
    reaches every link and colour component); its force F' = -dL/dU'."""

    def __init__(self, xp, N, U, seed=9):
        self.xp = xp
        self.act = GaugeAction(1.7, N, "iwasaki")
        g = np.random.default_rng(seed)
        self.W = xp.asarray(g.standard_normal(U.shape) + 1j * g.standard_normal(U.shape),
                            dtype=U.dtype)

    def action(self, Up):
        xp = self.xp
        lin = xp.real(trace(Up @ self.W))
        return self.act.action(Up) + xp.sum(xp.reshape(lin, (Up.shape[0], -1)), axis=1)

    def force(self, Up):
        return self.act.force(Up) + 0.5 * project_algebra(Up @ self.W)


class Through:
    """``L(net(U))`` as an action with its force through the network's backward pass."""

    def __init__(self, net, loss):
        self.net, self.loss = net, loss

    def action(self, U):
        return self.loss.action(self.net.forward(U))

    def force(self, U):
        return self.net.backward(self.loss.force(self.net.forward(U)))[0]


def _net(N, shape, loops, n_layers=2, seed=3):
    net = CASKSmearing(n_layers, loops, D=len(shape))
    g = np.random.default_rng(seed)
    theta = np.empty(net.param_shape)
    theta[..., 0] = 0.03 + 0.1 * g.random(theta.shape[:-1])           # rho
    theta[..., 1] = g.uniform(-3.0, 3.0, theta.shape[:-1])           # beta: sharp attention
    net.set_parameters(theta.reshape(-1))
    return net


CASES = [(1, (4, 4), ["plaquette", "rectangle"]), (2, (3, 4, 3), ["plaquette", "rectangle"]),
         (3, (2, 3, 2, 2), ["plaquette"]), (3, (3, 3, 2), ["plaquette", "rectangle"]),
         (4, (3, 3), ["plaquette"])]


@pytest.mark.parametrize("N", [1, 2, 3])
def test_beta_zero_is_plain_stout(xp, N):
    shape = (3, 4, 3)
    U = links(xp, N, shape, seed=2)
    loops = ["plaquette", "rectangle"]
    Up, _ = cask_smear(U, [0.11, -0.03], 0.0, loops)
    ref = stout_smear(U, [0.11, -0.03], loops)
    np.testing.assert_allclose(to_numpy(Up), to_numpy(ref), atol=1e-14, rtol=0)


@pytest.mark.parametrize("N", [1, 2, 3, 4])
def test_output_in_group_and_gauge_covariant(xp, N):
    shape = (3, 4, 3) if N < 4 else (3, 4)
    rng = RandomStreams(4, 2, xp)
    U = haar_random(rng, (len(shape), *shape), N)
    g = random_gauge_transformation(rng, shape, N)
    net = _net(N, shape, ["plaquette", "rectangle"])
    Up = net.forward(U)
    check_links(Up, N)
    Upg = net.forward(gauge_transform(U, g))
    np.testing.assert_allclose(to_numpy(Upg), to_numpy(gauge_transform(Up, g)), atol=1e-12,
                               rtol=0)
    # the attention actually differs from stout here
    stout = StoutSmearing(2, ["plaquette", "rectangle"], D=len(shape),
                          rho=0.0)
    stout.set_parameters(net.parameters().reshape(net.param_shape)[..., 0].reshape(-1))
    assert float(np.max(np.abs(to_numpy(stout.forward(U)) - to_numpy(Up)))) > 1e-3


@pytest.mark.parametrize("N,shape,loops", CASES)
def test_backward_links_random_direction_all_links(N, shape, loops):
    """Force at the thin links against a central difference along a random algebra direction on
    every link at once (fd_checks.random_direction_deviation: ~h^2, 3e-8 at h = 1e-4)."""
    U = links(NP, N, shape, batch=2, seed=5)
    net = _net(N, shape, loops)
    dev = random_direction_deviation(Through(net, Loss(NP, N, U)), U, NP, h=1e-4, seed=1)
    assert dev < 1e-6, dev


@pytest.mark.parametrize("N,shape,loops", CASES)
def test_backward_weights_each_and_random_direction(N, shape, loops):
    """dL/dtheta against central differences for every weight (rho and beta of every type and
    layer) one by one, and along one random direction of all of them."""
    U = links(NP, N, shape, batch=2, seed=6)
    net = _net(N, shape, loops)
    loss = Loss(NP, N, U)

    def value():
        return float(np.sum(to_numpy(loss.action(net.forward(U)))))

    _, grad = net.backward(loss.force(net.forward(U)))
    grad = to_numpy(grad)
    fd_check_params(net.parameters, net.set_parameters, grad, value, h=1e-6, tol=1e-7)
    theta0 = net.parameters().copy()
    d = np.random.default_rng(2).standard_normal(theta0.size)
    h = 1e-5
    vals = []
    for s in (h, -h):
        net.set_parameters(theta0 + s * d)
        vals.append(value())
    net.set_parameters(theta0)
    fd = (vals[0] - vals[1]) / (2 * h)
    assert abs(fd - grad @ d) < 1e-7 * (1 + abs(fd)), (fd, grad @ d)


@pytest.mark.parametrize("N,shape", [(1, (3, 4)), (2, (3, 2, 3)), (3, (2, 3, 2, 2))])
def test_same_on_numpy_and_array_api_strict(N, shape):
    outs = []
    for xp in (NP, namespace_by_name("array_api_strict")):
        U = links(xp, N, shape, seed=8, batch=2)
        net = _net(N, shape, ["plaquette", "rectangle"] if len(shape) < 4 else ["plaquette"])
        loss = Loss(xp, N, U)
        Up = net.forward(U)
        F, grad = net.backward(loss.force(Up))
        outs.append([to_numpy(Up), to_numpy(F), to_numpy(grad)])
    for a, b in zip(*outs):
        np.testing.assert_allclose(b, a, atol=1e-12, rtol=0)


def test_plugs_into_smeared_action(xp_cpu):
    """SmearedAction(GaugeAction, CASKSmearing): force by FD along a random direction; the
    parameter gradient of sum_b w_b S_b (the self-learning loss's gradient, w_b = S_b - S_ref,b)
    is one backward pass of the weighted force and equals the weighted per-config gradients."""
    xp = xp_cpu
    N, shape = 2, (4, 3)
    U = links(xp, N, shape, batch=2, seed=4)
    net = _net(N, shape, ["plaquette", "rectangle"])
    gauge = GaugeAction(2.0, N)
    act = SmearedAction(gauge, net)
    assert random_direction_deviation(act, U, xp, h=1e-4) < 1e-6

    def grad(V, w=None):
        Fp = gauge.force(net.forward(V))
        if w is not None:
            Fp = Fp * xp.reshape(xp.asarray(w, dtype=Fp.dtype), (-1,) + (1,) * (Fp.ndim - 1))
        return to_numpy(net.backward(Fp)[1])

    w = [0.7, -1.3]
    np.testing.assert_allclose(grad(U, w), w[0] * grad(U[0:1, ...]) + w[1] * grad(U[1:2, ...]),
                               atol=1e-10)


def test_refusals():
    U = links(NP, 2, (3, 3))
    with pytest.raises(ValueError, match="one rho per loop type"):
        cask_smear(U, [0.1, 0.2], 0.0, "plaquette")
    with pytest.raises(ValueError, match="layout"):
        cask_smear(U[0], 0.1, 0.0)
    net = CASKSmearing(1, "plaquette", D=2)
    with pytest.raises(RuntimeError):
        net.backward(U)
    with pytest.raises(ValueError, match="shape"):
        net.set_parameters(np.zeros(3))
    with pytest.raises(ValueError, match="D = 3"):
        CASKSmearing(1, "plaquette", D=3).forward(U)
