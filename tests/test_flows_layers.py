"""Flow layers: periodic convolutions, activations, affine couplings and whole flows.

Every vjp is checked against central finite differences in float64 (directional derivatives
along random directions, for inputs and every parameter), the convolution against
``scipy.ndimage.correlate`` with periodic wrapping, invertibility to round-off, and the
log-determinant against the log|det| of the dense Jacobian built from vjps and from finite
differences on 4x4 and 2x2x2 lattices."""

import math

import numpy as np
import pytest
import scipy.ndimage

from lattice_ml.backend import asarray, to_numpy
from lattice_ml.flows import (AffineCoupling, ConvNet, PeriodicConv, activation,
                              checkerboard_mask, make_phi4_flow, stripe_mask)
from lattice_ml.optim import flatten, unflatten

H = 1e-5
TOL = 1e-7


def host_normal(seed, shape):
    return np.random.default_rng(seed).standard_normal(shape)


def rel_dev(fd, an):
    return abs(fd - an) / max(abs(an), abs(fd), 1e-3)


def check_directional(f, point, grad, xp, seed, n_dirs=2):
    """max relative deviation of (f(p + h v) - f(p - h v)) / 2h from <grad, v> over random v."""
    worst = 0.0
    for k in range(n_dirs):
        v = host_normal(seed + 17 * k, tuple(point.shape))
        vx = asarray(v, xp, dtype=point.dtype)
        fd = (f(point + H * vx) - f(point - H * vx)) / (2 * H)
        an = float(np.sum(to_numpy(grad) * v))
        assert abs(an) > 1e-6, "degenerate check: analytic derivative is zero"
        worst = max(worst, rel_dev(fd, an))
    return worst


def check_params(f, params, grads, xp, seed):
    """Directional FD check for every leaf of a parameter set; f(params) -> float."""
    names, leaves, td = flatten(params)
    _, gleaves, _ = flatten(grads)
    worst = {}
    for i, (n, p, g) in enumerate(zip(names, leaves, gleaves)):
        def fi(q, i=i):
            new = list(leaves)
            new[i] = q
            return f(unflatten(td, new))
        worst[n] = check_directional(fi, p, g, xp, seed + i, n_dirs=1)
    return worst


# ------------------------------------------------------------------------------------------
# convolution
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,kernel", [((4, 5), 3), ((5, 4), 5), ((4, 4), 1),
                                          ((3, 4, 2), 3)])
def test_conv_matches_periodic_correlation(xp, shape, kernel):
    """y[b, x, o] = bias[o] + sum_{k,i} W[o,i,k] x[b, x + k - K//2, i] (scipy, mode='wrap')."""
    D = len(shape)
    conv = PeriodicConv(D, 2, 3, kernel)
    params = conv.init_params(xp, np.random.default_rng(0))
    x = host_normal(1, (2, *shape, 2))
    y = to_numpy(conv(params, asarray(x, xp)))
    W, b = to_numpy(params["weight"]), to_numpy(params["bias"])
    ref = np.zeros((2, *shape, 3))
    for bb in range(2):
        for o in range(3):
            ref[bb, ..., o] = b[o] + sum(
                scipy.ndimage.correlate(x[bb, ..., i], W[o, i], mode="wrap") for i in range(2))
    np.testing.assert_allclose(y, ref, atol=1e-13)


@pytest.mark.parametrize("shape,kernel,bias", [((4, 4), 3, True), ((4, 5), 5, True),
                                               ((3, 2, 4), 3, True), ((4, 4), 3, False)])
def test_conv_vjp_matches_finite_differences(xp, shape, kernel, bias):
    D = len(shape)
    conv = PeriodicConv(D, 2, 3, kernel, bias=bias)
    params = conv.init_params(xp, np.random.default_rng(2))
    x = asarray(host_normal(3, (2, *shape, 2)), xp)
    gy = asarray(host_normal(4, (2, *shape, 3)), xp)
    _, cache = conv.forward(params, x)
    gx, gp = conv.vjp(params, cache, gy)
    assert sorted(gp) == (["bias", "weight"] if bias else ["weight"])

    def f_x(xx):
        return float(xp.sum(conv(params, xx) * gy))

    assert check_directional(f_x, x, gx, xp, 5) < TOL
    worst = check_params(lambda p: float(xp.sum(conv(p, x) * gy)), params, gp, xp, 6)
    assert max(worst.values()) < TOL, worst


def test_conv_rejects_bad_arguments(xp):
    with pytest.raises(ValueError, match="odd"):
        PeriodicConv(2, 1, 1, 4)
    with pytest.raises(ValueError, match="c_in"):
        PeriodicConv(2, 0, 1, 3)
    conv = PeriodicConv(2, 2, 3, 3)
    params = conv.init_params(xp, np.random.default_rng(0))
    with pytest.raises(ValueError, match="input must have shape"):
        conv(params, xp.zeros((2, 4, 4, 1)))
    with pytest.raises(ValueError, match="weight has shape"):
        conv({"weight": xp.zeros((3, 2, 5, 5)), "bias": xp.zeros(3)}, xp.zeros((1, 4, 4, 2)))
    with pytest.raises(ValueError, match="exceeds the lattice extent"):
        PeriodicConv(2, 1, 1, 7)(PeriodicConv(2, 1, 1, 7).init_params(
            xp, np.random.default_rng(0)), xp.zeros((1, 2, 4, 1)))


# ------------------------------------------------------------------------------------------
# activations
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tanh", "leaky_relu", "softplus", "identity"])
def test_activation_vjp_matches_finite_differences(xp, name):
    act = activation(name)
    host = host_normal(7, (3, 5))
    host = np.where(np.abs(host) < 0.05, 0.3, host)      # keep away from the kink of leaky_relu
    x = asarray(host, xp)
    gy = asarray(host_normal(8, (3, 5)), xp)
    _, cache = act.forward(x)
    gx = act.vjp(cache, gy)
    assert check_directional(lambda z: float(xp.sum(act.forward(z)[0] * gy)), x, gx, xp, 9) < TOL


def test_activation_values(xp):
    x = asarray(np.array([-30.0, -1.0, 0.5, 40.0]), xp)
    np.testing.assert_allclose(to_numpy(activation("softplus").forward(x)[0]),
                               np.log1p(np.exp(np.array([-30.0, -1.0, 0.5, 40.0]))), rtol=1e-14)
    np.testing.assert_allclose(to_numpy(activation("leaky_relu").forward(x)[0]),
                               [-0.3, -0.01, 0.5, 40.0], rtol=1e-14)
    with pytest.raises(ValueError, match="unknown activation"):
        activation("relu6")


# ------------------------------------------------------------------------------------------
# masks and coupling layers
# ------------------------------------------------------------------------------------------
def test_masks(xp):
    m0 = to_numpy(checkerboard_mask((4, 3), 0, xp))
    m1 = to_numpy(checkerboard_mask((4, 3), 1, xp))
    np.testing.assert_array_equal(m0 + m1, np.ones((4, 3)))
    assert m0[0, 0] == 1 and m0[0, 1] == 0 and m0[1, 1] == 1
    s = to_numpy(stripe_mask((4, 2, 2), 0, 1, xp))
    assert s[1].min() == 1 and s[0].max() == 0 and s[3].min() == 1
    with pytest.raises(ValueError, match="parity"):
        checkerboard_mask((4, 4), 2, xp)


def make_coupling(xp, shape, mask_kind="checkerboard", seed=0):
    D = len(shape)
    m = checkerboard_mask(shape, 1, xp) if mask_kind == "checkerboard" else \
        stripe_mask(shape, D - 1, 0, xp)
    layer = AffineCoupling(m, ConvNet(D, [1, 3, 2], 3))
    return layer, layer.init_params(xp, np.random.default_rng(seed))


@pytest.mark.parametrize("shape,mask_kind", [((4, 4), "checkerboard"), ((4, 4), "stripes"),
                                             ((2, 4, 2), "checkerboard")])
def test_coupling_vjp_forward_and_inverse(xp, shape, mask_kind):
    layer, params = make_coupling(xp, shape, mask_kind)
    x = asarray(host_normal(10, (2, *shape)), xp)
    gy = asarray(host_normal(11, (2, *shape)), xp)
    gl = asarray(host_normal(12, (2,)), xp)

    def L(p, xx):
        y, ld, _ = layer.forward_cache(p, xx)
        return float(xp.sum(y * gy) + xp.sum(ld * gl))

    _, _, cache = layer.forward_cache(params, x)
    gx, gp = layer.vjp(params, cache, gy, gl)
    assert check_directional(lambda xx: L(params, xx), x, gx, xp, 13) < TOL
    worst = check_params(lambda p: L(p, x), params, gp, xp, 14)
    assert max(worst.values()) < TOL, worst
    gx2, none = layer.vjp(params, cache, gy, gl, need_params=False)
    assert none is None
    np.testing.assert_array_equal(to_numpy(gx2), to_numpy(gx))

    def Li(p, yy):
        xx, ld, _ = layer.inverse_cache(p, yy)
        return float(xp.sum(xx * gy) + xp.sum(ld * gl))

    _, _, icache = layer.inverse_cache(params, x)
    gyi, gpi = layer.inverse_vjp(params, icache, gy, gl)
    assert check_directional(lambda yy: Li(params, yy), x, gyi, xp, 15) < TOL
    worst = check_params(lambda p: Li(p, x), params, gpi, xp, 16)
    assert max(worst.values()) < TOL, worst


def test_coupling_keeps_frozen_sites(xp):
    layer, params = make_coupling(xp, (4, 4))
    x = asarray(host_normal(20, (3, 4, 4)), xp)
    y, _ = layer.forward(params, x, xp.zeros(3))
    m = to_numpy(layer.mask).astype(bool)
    np.testing.assert_array_equal(to_numpy(y)[:, m], to_numpy(x)[:, m])
    assert np.abs(to_numpy(y)[:, ~m] - to_numpy(x)[:, ~m]).max() > 1e-3


# ------------------------------------------------------------------------------------------
# whole flows
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,mask", [((4, 4), "checkerboard"), ((2, 2, 2), "stripes")])
def test_flow_is_invertible(xp, shape, mask):
    flow = make_phi4_flow(shape, xp, n_layers=4, hidden=(4,), mask=mask, seed=1)
    z = asarray(host_normal(21, (3, *shape)), xp)
    x, logJ = flow.forward(z)
    z2, logJi = flow.inverse(x)
    np.testing.assert_allclose(to_numpy(z2), to_numpy(z), atol=1e-13)
    np.testing.assert_allclose(to_numpy(logJi), -to_numpy(logJ), atol=1e-12)
    x2, _ = flow.forward(flow.inverse(x)[0])
    np.testing.assert_allclose(to_numpy(x2), to_numpy(x), atol=1e-13)
    assert np.abs(to_numpy(x) - to_numpy(z)).max() > 1e-2      # not the identity


@pytest.mark.parametrize("shape", [(4, 4), (2, 2, 2)])
def test_flow_logdet_equals_dense_jacobian(xp, shape):
    """logJ = log|det df/dz| with the dense Jacobian from V vjps (one batch of unit cotangents)
    and from central finite differences of the forward map."""
    V = math.prod(shape)
    flow = make_phi4_flow(shape, xp, n_layers=4, hidden=(4,), seed=2)
    z0 = host_normal(22, shape)
    zb = asarray(np.broadcast_to(z0, (V, *shape)).copy(), xp)
    x, logJ, caches = flow.forward_cache(zb)
    eye = asarray(np.eye(V).reshape(V, *shape), xp)
    gz, _ = flow.vjp(caches, eye, xp.zeros(V), need_params=False)
    J_vjp = to_numpy(gz).reshape(V, V)                    # row i = e_i^T J
    J_fd = np.zeros((V, V))
    for j in range(V):
        e = np.zeros(V)
        e[j] = H
        xp_, _ = flow.forward(asarray((z0.ravel() + e).reshape(1, *shape), xp))
        xm_, _ = flow.forward(asarray((z0.ravel() - e).reshape(1, *shape), xp))
        J_fd[:, j] = (to_numpy(xp_) - to_numpy(xm_)).ravel() / (2 * H)
    np.testing.assert_allclose(J_vjp, J_fd, atol=1e-8)
    sign, logdet = np.linalg.slogdet(J_vjp)
    assert sign != 0
    np.testing.assert_allclose(to_numpy(logJ), logdet, atol=1e-11)
    assert abs(logdet) > 1e-2


def test_flow_vjp_matches_finite_differences(xp):
    flow = make_phi4_flow((4, 4), xp, n_layers=3, hidden=(3,), seed=4)
    z = asarray(host_normal(30, (2, 4, 4)), xp)
    gx = asarray(host_normal(31, (2, 4, 4)), xp)
    gl = asarray(host_normal(32, (2,)), xp)

    def L(params, zz):
        old = flow.params
        flow.params = params
        try:
            x, logJ = flow.forward(zz)
        finally:
            flow.params = old
        return float(xp.sum(x * gx) + xp.sum(logJ * gl))

    _, _, caches = flow.forward_cache(z)
    gz, gp = flow.vjp(caches, gx, gl)
    assert check_directional(lambda zz: L(flow.params, zz), z, gz, xp, 33) < TOL
    worst = check_params(lambda p: L(p, z), flow.params, gp, xp, 34)
    assert len(worst) == 3 * 4 and max(worst.values()) < TOL, worst

    def Li(params, xx):
        old = flow.params
        flow.params = params
        try:
            zz, ld = flow.inverse(xx)
        finally:
            flow.params = old
        return float(xp.sum(zz * gx) + xp.sum(ld * gl))

    _, _, icaches = flow.inverse_cache(z)
    gxi, gpi = flow.inverse_vjp(icaches, gx, gl)
    assert check_directional(lambda xx: Li(flow.params, xx), z, gxi, xp, 35) < TOL
    worst = check_params(lambda p: Li(p, z), flow.params, gpi, xp, 36)
    assert max(worst.values()) < TOL, worst


def test_flow_log_prob_and_sample(xp):
    from lattice_ml.backend import RandomStreams
    from lattice_ml.flows import prior_log_prob

    flow = make_phi4_flow((4, 4), xp, n_layers=2, hidden=(3,), seed=5)
    rng = RandomStreams(3, 4, xp)
    x, logq = flow.sample(rng)
    np.testing.assert_allclose(to_numpy(flow.log_prob(x)), to_numpy(logq), atol=1e-11)
    z = asarray(np.zeros((1, 4, 4)), xp)
    assert float(prior_log_prob(z)[0]) == pytest.approx(-8 * math.log(2 * math.pi), rel=1e-14)


def test_flow_parameter_round_trip_and_errors(xp):
    flow = make_phi4_flow((4, 4), xp, n_layers=2, hidden=(3,), seed=6)
    other = make_phi4_flow((4, 4), xp, n_layers=2, hidden=(3,), seed=7)
    other.load_params(flow.params_to_host())
    z = asarray(host_normal(40, (2, 4, 4)), xp)
    np.testing.assert_array_equal(to_numpy(other.forward(z)[0]), to_numpy(flow.forward(z)[0]))
    assert flow.n_parameters == 2 * ((1 * 3 * 9 + 3) + (3 * 2 * 9 + 2))
    bad = flow.params_to_host()
    bad["layer0"]["conv0"]["bias"] = np.zeros(5)
    with pytest.raises(ValueError, match="layer0/conv0/bias"):
        other.load_params(bad)
    with pytest.raises(ValueError, match="shape"):
        flow.forward(xp.zeros((1, 4, 5)))
    with pytest.raises(ValueError, match="unknown mask"):
        make_phi4_flow((4, 4), xp, mask="diagonal")
