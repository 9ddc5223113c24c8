"""Gauge-equivariant coupling flows for 2D U(1) (lattice_ml.flows.u1_coupling).

Checks: plaquette angles against the library's plaquettes; the NCP mixture is a circle
diffeomorphism with the stated derivative and inverse; gauge equivariance F(g.U) = g.F(U) and
invariance of logJ to round-off; invertibility to round-off; logJ against log|det| of the dense
Jacobian in Lie-algebra coordinates on 4x4 (built from vjps and from central finite
differences); every vjp (input links, all parameters, the NCP mixture; of the forward map and
of the inverse, inverse_vjp) against float64 central finite differences along random directions
over all links / all entries; the NCP mixture finite and accurate in float32 at large |s|; flow
independence
Metropolis with a barely trained flow against the exact 2D plaquette and topological
susceptibility (character expansion, tests/gauge_exact.py) within 4 sigma (Gamma method).
Runs on NumPy and array-api-strict."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from lattice_ml.backend import RandomStreams, asarray, namespace_by_name, to_numpy
from lattice_ml.flows.u1_coupling import (DEFAULT_SCHEDULE, TUTORIAL_SCHEDULE, NCPMixture,
                                          U1CouplingFlow, make_u1_coupling_flow,
                                          u1_plaquette_angles, wrap_angle)
from lattice_ml.gauge import GaugeAction
from lattice_ml.gauge.action import plaquette_field
from lattice_ml.gauge.observables import average_plaquette, topological_charge_2d
from lattice_ml.groups import (algebra_to_matrix, expm_algebra, gauge_transform,
                               matrix_to_algebra, random_gauge_transformation)
from lattice_ml.optim import Adam, flatten, unflatten
from lattice_ml.samplers.flow_mcmc import FlowMetropolis
from lattice_ml.stats import gamma_method

sys.path.insert(0, str(Path(__file__).parent))
from gauge_exact import u1_plaquette, u1_topological_susceptibility  # noqa: E402

H = 1e-5          # central differences: truncation ~ H^2 * f''' ~ 1e-10, round-off ~ eps/H
TOL = 1e-7


def host_normal(seed, shape):
    return np.random.default_rng(seed).standard_normal(shape)


def rel_dev(fd, an):
    return abs(fd - an) / max(abs(an), abs(fd), 1e-3)


def perturb_links(z, v, eps, xp):
    """``exp(eps V) z`` link by link, V the algebra field with coordinates ``v[..., 1]``."""
    X = algebra_to_matrix(asarray(eps * v, xp, dtype=xp.float64), 1)
    return expm_algebra(X) @ z


# both directions within the first two layers, all eight (mu, off) within eight
MIXED = ((0, 0), (1, 0), (0, 3), (1, 3), (0, 2), (1, 2), (0, 1), (1, 1))


def small_flow(xp, shape=(4, 8), n_layers=4, n_mix=2, seed=3, final_scale=1.0, hidden=(4,)):
    return make_u1_coupling_flow(shape, xp, n_layers=n_layers, hidden=hidden, n_mix=n_mix,
                                 seed=seed, final_scale=final_scale, schedule=MIXED)


# ------------------------------------------------------------------------------------------
# building blocks
# ------------------------------------------------------------------------------------------
def test_plaquette_angles_match_plaquette_field(xp):
    flow = small_flow(xp)
    U = flow.draw_latent(RandomStreams(0, 2, xp))
    u = U[..., 0, 0]
    theta = xp.atan2(xp.imag(u), xp.real(u))
    P = to_numpy(u1_plaquette_angles(theta))
    ref = to_numpy(plaquette_field(U, 0, 1))[..., 0, 0]
    np.testing.assert_allclose(np.exp(1j * P), ref, atol=1e-13)
    assert P.min() >= -math.pi and P.max() < math.pi
    w = to_numpy(wrap_angle(asarray(np.array([-7.0, -math.pi, 0.5, math.pi, 9.0]), xp)))
    np.testing.assert_allclose(w, [-7.0 + 2 * math.pi, -math.pi, 0.5, -math.pi,
                                   9.0 - 2 * math.pi], atol=1e-14)


def test_ncp_mixture_is_a_circle_diffeomorphism(xp):
    """h(-pi) = -pi, h(0) = 0, h(pi) = pi, h' > 0 equal to the FD slope, and the inverse."""
    mix = NCPMixture()
    s = asarray(2.0 * host_normal(1, (5, 1, 3)), xp)
    grid = np.linspace(-math.pi, math.pi, 401)
    P = asarray(np.broadcast_to(grid, (5, 401)).copy(), xp)
    h, logdh, _ = mix.forward(P, s)
    h, logdh = to_numpy(h), to_numpy(logdh)
    np.testing.assert_allclose(h[:, [0, 200, 400]], np.broadcast_to([-math.pi, 0, math.pi],
                                                                     (5, 3)), atol=1e-14)
    assert np.all(np.diff(h, axis=1) > 0)
    hp, hm = (to_numpy(mix.forward(P + d, s)[0]) for d in (H, -H))
    np.testing.assert_allclose(np.log((hp - hm) / (2 * H))[:, 1:-1], logdh[:, 1:-1], atol=1e-8)
    y = asarray(np.broadcast_to(grid[:-1], (5, 400)).copy(), xp)
    x = mix.inverse(y, s)
    np.testing.assert_allclose(to_numpy(mix.forward(x, s)[0]), to_numpy(y), atol=1e-13)


def test_ncp_mixture_float32_at_large_s(xp):
    """log h' and its vjp stay finite and float32-accurate where the components are sharp
    (|s| up to 12, P at 0 and near pi): cosh s - sinh s cos P would cancel to 0 at P = 0."""
    mix = NCPMixture()
    s64 = np.array([[12.0, -12.0, 9.0], [10.0, 0.3, -11.0]])[:, None, :]
    P64 = np.broadcast_to(np.array([0.0, 1e-3, 1.0, math.pi - 1e-3], dtype=np.float32),
                          (2, 4)).astype(np.float64)        # the float32 inputs, exactly
    ref = [to_numpy(a) for a in mix.forward(asarray(P64, xp), asarray(s64, xp))[:2]]
    out = mix.forward(asarray(P64, xp, dtype=xp.float32), asarray(s64, xp, dtype=xp.float32))
    for a, b in zip(out[:2], ref):
        assert a.dtype == xp.float32
        np.testing.assert_allclose(to_numpy(a), b, rtol=1e-5, atol=1e-5)
    g = mix.vjp(out[2], xp.ones((2, 4), dtype=xp.float32), xp.ones((2, 4), dtype=xp.float32))
    assert all(np.all(np.isfinite(to_numpy(a))) for a in g)


def test_ncp_mixture_inverse_with_sharp_components(xp):
    """The inverse where components bend sharply (|s| up to 12, mixed signs: Newton steps in
    P overshoot there, the solve in z = ln tan(|P|/2) does not) to round-off in float64 and
    float32 over the whole circle including -pi: the root to a few ulps of P, i.e.
    ``|h(x) - y| <= 16 eps pi (1 + h'(x))`` (h' up to e^12 / 3 here)."""
    mix = NCPMixture()
    s64 = np.array([[12.0, -12.0, 9.0], [10.0, 0.3, -11.0], [-6.8, 0.5, 0.2]])[:, None, :]
    grid = np.linspace(-math.pi, math.pi, 801)[:-1]
    for dtype in (xp.float64, xp.float32):
        eps = float(np.finfo(np.float64 if dtype == xp.float64 else np.float32).eps)
        y, s = asarray(np.broadcast_to(grid, (3, 800)).copy(), xp, dtype=dtype), \
            asarray(s64, xp, dtype=dtype)
        x = mix.inverse(y, s)
        assert x.dtype == dtype
        x, y64 = to_numpy(x).astype(np.float64), to_numpy(y).astype(np.float64)
        nz = np.abs(y64) > 1e-12                          # the grid point at 0 is 4e-16
        assert np.all(np.abs(x) <= math.pi * (1 + 4 * eps))
        assert np.all(np.sign(x[nz]) == np.sign(y64[nz])) and np.all(np.abs(x[~nz]) < 1e-12)
        h, hp = (to_numpy(a) for a in mix.value(asarray(x, xp), asarray(s64, xp)))
        assert np.all(np.abs(h - y64) <= 16 * eps * math.pi * (1 + hp))


def test_ncp_mixture_vjp_matches_finite_differences(xp):
    mix = NCPMixture()
    P = asarray(np.random.default_rng(2).uniform(-math.pi, math.pi, (3, 4, 4)), xp)
    s = asarray(1.5 * host_normal(3, (3, 4, 4, 3)), xp)
    gh, gl = (asarray(host_normal(k, (3, 4, 4)), xp) for k in (4, 5))
    _, _, cache = mix.forward(P, s)
    gP, gs = mix.vjp(cache, gh, gl)

    def f(PP, ss):
        h, lh, _ = mix.forward(PP, ss)
        return float(xp.sum(h * gh + lh * gl))

    for k, (point, grad, which) in enumerate(((P, gP, 0), (s, gs, 1))):
        v = host_normal(10 + k, tuple(point.shape))
        vx = asarray(v, xp)
        args_p = (P + H * vx, s) if which == 0 else (P, s + H * vx)
        args_m = (P - H * vx, s) if which == 0 else (P, s - H * vx)
        fd = (f(*args_p) - f(*args_m)) / (2 * H)
        an = float(np.sum(to_numpy(grad) * v))
        assert rel_dev(fd, an) < TOL, (which, fd, an)


# ------------------------------------------------------------------------------------------
# symmetries and invertibility
# ------------------------------------------------------------------------------------------
def test_gauge_equivariance(xp):
    flow = small_flow(xp, n_layers=8, final_scale=2.0)
    rng = RandomStreams(4, 3, xp)
    z = flow.draw_latent(rng)
    g = random_gauge_transformation(rng, flow.shape, 1)
    U, logJ = flow.forward(z)
    Ug, logJg = flow.forward(gauge_transform(z, g))
    np.testing.assert_allclose(to_numpy(Ug), to_numpy(gauge_transform(U, g)), atol=1e-12)
    np.testing.assert_allclose(to_numpy(logJg), to_numpy(logJ), atol=1e-12)
    assert float(xp.max(xp.abs(logJ))) > 0.1        # the flow is far from the identity
    # and the density is gauge invariant
    np.testing.assert_allclose(to_numpy(flow.log_prob(gauge_transform(U, g))),
                               to_numpy(-logJ), atol=1e-11)


@pytest.mark.parametrize("n_mix,final_scale", [(1, 1.0), (3, 3.0)])
def test_invertibility(xp, n_mix, final_scale):
    flow = small_flow(xp, n_layers=8, n_mix=n_mix, final_scale=final_scale)
    z = flow.draw_latent(RandomStreams(5, 4, xp))
    U, logJ = flow.forward(z)
    z2, ld = flow.inverse(U)
    assert float(xp.max(xp.abs(U - z))) > 0.1
    np.testing.assert_allclose(to_numpy(z2), to_numpy(z), atol=1e-12)
    np.testing.assert_allclose(to_numpy(ld), -to_numpy(logJ), atol=1e-11)
    assert np.all(np.abs(np.abs(to_numpy(U)) - 1) < 1e-14)


def test_float32_round_trip(xp):
    flow = make_u1_coupling_flow((4, 4), xp, n_layers=4, hidden=(4,), seed=1,
                                 dtype=xp.float32)
    z = flow.draw_latent(RandomStreams(6, 3, xp, dtype="float32"))
    U, logJ = flow.forward(z)
    assert U.dtype == xp.complex64 and logJ.dtype == xp.float32
    z2, ld = flow.inverse(U)
    np.testing.assert_allclose(to_numpy(z2), to_numpy(z), atol=2e-5)
    np.testing.assert_allclose(to_numpy(ld), -to_numpy(logJ), atol=2e-4)


# ------------------------------------------------------------------------------------------
# log-determinant against the dense Jacobian
# ------------------------------------------------------------------------------------------
def test_logdet_matches_dense_jacobian(xp):
    """On 4x4 (32 links, all 8 (mu, off) layers): J[i, j] = da'_i/da_j in algebra coordinates,
    from 32 vjps (rows) and from central differences (columns)."""
    flow = make_u1_coupling_flow((4, 4), xp, n_layers=8, hidden=(4,), n_mix=2, seed=7,
                                 final_scale=2.0)
    z = flow.draw_latent(RandomStreams(8, 1, xp))
    U, logJ, cache = flow.forward_cache(z)
    n = 32
    T0 = 1j / math.sqrt(2.0)
    J_vjp = np.zeros((n, n))
    for i in range(n):
        gU = np.zeros(n, complex)
        gU[i] = T0                                        # dL/da'_i = 1
        gz, gp = flow.vjp(cache, asarray(gU.reshape(U.shape), xp), xp.zeros((1,)),
                          need_params=False)
        assert gp is None
        J_vjp[i] = to_numpy(matrix_to_algebra(gz)).reshape(n)
    h = 1e-6
    J_fd = np.zeros((n, n))
    Uh = to_numpy(U)
    for j in range(n):
        v = np.zeros((1, n, 1))
        v[0, j, 0] = 1.0
        v = v.reshape(tuple(z.shape[:-2]) + (1,))
        Up = to_numpy(flow.forward(perturb_links(z, v, h, xp))[0])
        Um = to_numpy(flow.forward(perturb_links(z, v, -h, xp))[0])
        # angle difference -> algebra coordinate a = sqrt(2) theta
        J_fd[:, j] = math.sqrt(2.0) * np.angle((Up / Um).reshape(n)) / (2 * h)
    assert np.all(np.abs(to_numpy(U) - Uh) == 0)
    np.testing.assert_allclose(J_vjp, J_fd, atol=1e-7)
    ld = float(to_numpy(logJ)[0])
    sign, ld_vjp = np.linalg.slogdet(J_vjp)
    _, ld_fd = np.linalg.slogdet(J_fd)
    assert sign > 0
    assert abs(ld) > 0.1                               # not trivially the identity
    assert abs(ld_vjp - ld) < 1e-11, (ld_vjp, ld)
    assert abs(ld_fd - ld) < 1e-7, (ld_fd, ld)


# ------------------------------------------------------------------------------------------
# vector-Jacobian products
# ------------------------------------------------------------------------------------------
def _objective(xp, C, c):
    """L(U, logJ) = sum Re(conj(C) U) + sum_b c_b logJ_b and its link cotangent."""
    def value(U, logJ):
        return float(xp.sum(xp.real(xp.conj(C) * U)) + xp.sum(c * logJ))

    def cotangent(U):
        # dL/dtheta = Re(conj(C) i U) = -Im(conj(C) U); G = (i/2) dL/dtheta
        d = -xp.imag(xp.conj(C) * U)
        return 0.5j * xp.astype(d, xp.complex128)
    return value, cotangent


def test_vjp_input_matches_finite_differences(xp):
    """All links perturbed at once along random algebra directions, two cotangents: a generic
    L = sum Re(conj(C) U) + sum c logJ, and the reverse-KL objective sum_b [S(U_b) - logJ_b]
    with gU = -force (the convention of GaugeAction.force)."""
    flow = small_flow(xp, n_layers=8, final_scale=2.0)
    z = flow.draw_latent(RandomStreams(9, 3, xp))
    U, logJ, cache = flow.forward_cache(z)
    C = asarray(host_normal(10, tuple(U.shape)) + 1j * host_normal(11, tuple(U.shape)), xp)
    c = asarray(host_normal(12, (3,)), xp)
    value, cotangent = _objective(xp, C, c)
    action = GaugeAction(1.3, 1)
    cases = [(lambda UU, lj: value(UU, lj), cotangent(U), c),
             (lambda UU, lj: float(xp.sum(action.action(UU) - lj)), -action.force(U),
              xp.full((3,), -1.0, dtype=xp.float64))]
    for k, (f, gU, glogJ) in enumerate(cases):
        gz, gp = flow.vjp(cache, gU, glogJ)
        gz2, gp2 = flow.vjp(cache, gU, glogJ, need_params=False)
        assert gp2 is None
        np.testing.assert_allclose(to_numpy(gz2), to_numpy(gz), atol=1e-14)
        coords = to_numpy(matrix_to_algebra(gz))
        for d in range(2):
            v = host_normal(20 + 3 * k + d, tuple(z.shape[:-2]) + (1,))
            fp = f(*flow.forward(perturb_links(z, v, H, xp)))
            fm = f(*flow.forward(perturb_links(z, v, -H, xp)))
            fd = (fp - fm) / (2 * H)
            an = float(np.sum(coords * v))
            assert abs(an) > 1e-3
            assert rel_dev(fd, an) < TOL, (k, d, fd, an)


def test_vjp_parameters_match_finite_differences(xp):
    """Every parameter array (all layers, all convolutions, weights and biases) along a random
    direction, for the reverse-KL loss mean_b [S(U_b) - logJ_b] at fixed latent links."""
    flow = small_flow(xp, n_layers=4, final_scale=2.0)
    z = flow.draw_latent(RandomStreams(13, 3, xp))
    action = GaugeAction(1.7, 1)
    B = 3
    U, logJ, cache = flow.forward_cache(z)
    _, grads = flow.vjp(cache, -action.force(U) * (1.0 / B), xp.full((B,), -1.0 / B,
                                                                     dtype=xp.float64))
    names, leaves, td = flatten(flow.params)
    gnames, gleaves, _ = flatten(grads)
    assert gnames == names
    params0 = flow.params

    def loss(params):
        flow.params = params
        UU, lj = flow.forward(z)
        flow.params = params0
        return float(xp.mean(action.action(UU) - lj))

    for i, (name, p, g) in enumerate(zip(names, leaves, gleaves)):
        assert tuple(g.shape) == tuple(p.shape), name
        v = host_normal(100 + i, tuple(p.shape))
        vx = asarray(v, xp)
        vals = []
        for eps in (H, -H):
            new = list(leaves)
            new[i] = p + eps * vx
            vals.append(loss(unflatten(td, new)))
        fd = (vals[0] - vals[1]) / (2 * H)
        an = float(np.sum(to_numpy(g) * v))
        assert abs(an) > 1e-6, name
        assert rel_dev(fd, an) < TOL, (name, fd, an)


def _inverse_case(xp, seed, n_layers=8):
    """A flow far from the identity and links ``U = f(z)`` (the inverse's input)."""
    flow = small_flow(xp, n_layers=n_layers, final_scale=2.0)
    U, _ = flow.forward(flow.draw_latent(RandomStreams(seed, 3, xp)))
    return flow, U


def test_inverse_vjp_input_matches_finite_differences(xp):
    """inverse_vjp (the link derivative of the path-gradient estimator) along random algebra
    directions moving all links at once, for a generic L = sum Re(conj(C) z) + sum c logdet_inv
    and for log q(U) + S(U) summed over the batch (gz = 0, glogdet = 1, gU += -force)."""
    flow, U = _inverse_case(xp, 31)
    z, ld, caches = flow.inverse_cache(U)
    z1, ld1 = flow.inverse(U)
    np.testing.assert_allclose(to_numpy(z), to_numpy(z1), atol=0)
    np.testing.assert_allclose(to_numpy(ld), to_numpy(ld1), atol=0)
    C = asarray(host_normal(32, tuple(z.shape)) + 1j * host_normal(33, tuple(z.shape)), xp)
    c = asarray(host_normal(34, (3,)), xp)
    value, cotangent = _objective(xp, C, c)
    action = GaugeAction(1.3, 1)
    ones = xp.ones((3,), dtype=xp.float64)

    def logq_plus_s(UU):
        zz, ldd = flow.inverse(UU)
        return float(xp.sum(ldd + action.action(UU)))

    cases = [(lambda UU: value(*flow.inverse(UU)), cotangent(z), c, None),
             (logq_plus_s, xp.zeros_like(z), ones, -action.force(U))]
    for k, (f, gz, glog, extra) in enumerate(cases):
        gU, gp = flow.inverse_vjp(caches, gz, glog)
        gU2, gp2 = flow.inverse_vjp(caches, gz, glog, need_params=False)
        assert gp2 is None and sorted(gp) == sorted(flow.params)
        np.testing.assert_allclose(to_numpy(gU2), to_numpy(gU), atol=1e-14)
        if extra is not None:
            gU = gU + extra
        coords = to_numpy(matrix_to_algebra(gU))
        for d in range(2):
            v = host_normal(40 + 3 * k + d, tuple(U.shape[:-2]) + (1,))
            fd = (f(perturb_links(U, v, H, xp)) - f(perturb_links(U, v, -H, xp))) / (2 * H)
            an = float(np.sum(coords * v))
            assert abs(an) > 1e-3
            assert rel_dev(fd, an) < TOL, (k, d, fd, an)


def test_inverse_vjp_accepts_the_forward_caches(xp):
    """At U = f(z) the inverse's intermediates are the forward's (the frozen plaquettes, hence
    the conditioner, and the pre-image P are the same), so inverse_vjp takes the caches of
    forward_cache (the path gradient needs no Newton solve); same cotangents to round-off."""
    flow = small_flow(xp, n_layers=8, final_scale=2.0)
    z = flow.draw_latent(RandomStreams(39, 3, xp))
    U, _, fcaches = flow.forward_cache(z)
    _, _, icaches = flow.inverse_cache(U)
    C = asarray(host_normal(40, tuple(z.shape)) + 1j * host_normal(41, tuple(z.shape)), xp)
    gz = _objective(xp, C, None)[1](z)
    glog = asarray(host_normal(42, (3,)), xp)
    a, ga = flow.inverse_vjp(icaches, gz, glog)
    b, gb = flow.inverse_vjp(fcaches, gz, glog)
    assert float(xp.max(xp.abs(a))) > 0.1
    np.testing.assert_allclose(to_numpy(b), to_numpy(a), atol=1e-10)
    for x, y in zip(flatten(ga)[1], flatten(gb)[1]):
        np.testing.assert_allclose(to_numpy(y), to_numpy(x), atol=1e-10)


def test_inverse_vjp_parameters_match_finite_differences(xp):
    """Every parameter array along a random direction for mean_b log q(U_b) at fixed links U
    (the forward-KL loss up to its sign) and for a generic objective of (z, logdet_inv)."""
    flow, U = _inverse_case(xp, 35, n_layers=4)
    B = 3
    z, _, caches = flow.inverse_cache(U)
    C = asarray(host_normal(36, tuple(z.shape)) + 1j * host_normal(37, tuple(z.shape)), xp)
    c = asarray(host_normal(38, (B,)), xp)
    value, cotangent = _objective(xp, C, c)
    names, leaves, td = flatten(flow.params)
    params0 = flow.params

    def at(params, f):
        flow.params = params
        out = f(*flow.inverse(U))
        flow.params = params0
        return out

    cases = [(lambda zz, ldd: float(xp.mean(ldd)), xp.zeros_like(z),
              xp.full((B,), 1.0 / B, dtype=xp.float64)),
             (value, cotangent(z), c)]
    for k, (f, gz, glog) in enumerate(cases):
        _, grads = flow.inverse_vjp(caches, gz, glog)
        gnames, gleaves, _ = flatten(grads)
        assert gnames == names
        for i, (name, p, g) in enumerate(zip(names, leaves, gleaves)):
            assert tuple(g.shape) == tuple(p.shape), name
            v = host_normal(200 + 50 * k + i, tuple(p.shape))
            vals = []
            for eps in (H, -H):
                new = list(leaves)
                new[i] = p + eps * asarray(v, xp)
                vals.append(at(unflatten(td, new), f))
            fd = (vals[0] - vals[1]) / (2 * H)
            an = float(np.sum(to_numpy(g) * v))
            assert abs(an) > 1e-6, (k, name)
            assert rel_dev(fd, an) < TOL, (k, name, fd, an)


# ------------------------------------------------------------------------------------------
# interface
# ------------------------------------------------------------------------------------------
def test_interface(xp):
    flow = make_u1_coupling_flow((8, 8), xp, seed=0)
    # 16 x (conv 2->8, 8->8, 8->7 (six NCP components and t), kernel 3)
    per_layer = (8 * 2 * 9 + 8) + (8 * 8 * 9 + 8) + (7 * 8 * 9 + 7)
    assert flow.n_parameters == 16 * per_layer == 19952
    assert [(la.mu, la.off) for la in flow.layers] == 2 * list(DEFAULT_SCHEDULE)
    assert DEFAULT_SCHEDULE == ((0, 0), (0, 3), (0, 2), (0, 1), (1, 0), (1, 3), (1, 2), (1, 1))
    tut = make_u1_coupling_flow((8, 8), xp, n_mix=2, schedule=TUTORIAL_SCHEDULE)
    assert [(la.mu, la.off) for la in tut.layers] == [(i % 2, (i // 2) % 4) for i in range(16)]
    assert tut.n_parameters == 16 * ((8 * 2 * 9 + 8) + (8 * 8 * 9 + 8) + (3 * 8 * 9 + 3)) == 15280
    assert flow.N == 1 and flow.shape == (8, 8)
    rng = RandomStreams(0, 2, xp)
    z = flow.draw_latent(rng)
    assert tuple(z.shape) == (2, 2, 8, 8, 1, 1) and z.dtype == xp.complex128
    np.testing.assert_array_equal(to_numpy(flow.prior_log_prob(z)), np.zeros(2))
    U, logq = flow.sample(RandomStreams(1, 2, xp))
    np.testing.assert_allclose(to_numpy(flow.log_prob(U)), to_numpy(logq), atol=1e-10)
    host = flow.params_to_host()
    other = make_u1_coupling_flow((8, 8), xp, seed=1)
    other.load_params(host)
    np.testing.assert_allclose(to_numpy(other.forward(z)[0]), to_numpy(flow.forward(z)[0]),
                               atol=0)
    host["layer0"]["conv0"]["bias"] = np.zeros(3)
    with pytest.raises(ValueError, match="shape"):
        other.load_params(host)
    with pytest.raises(ValueError, match="multiple of 4"):
        make_u1_coupling_flow((8, 6), xp, n_layers=1)
    with pytest.raises(ValueError, match="links of shape"):
        flow.forward(xp.ones((1, 2, 4, 4, 1, 1), dtype=xp.complex128))
    assert isinstance(flow, U1CouplingFlow)


# ------------------------------------------------------------------------------------------
# exactness of flow Metropolis
# ------------------------------------------------------------------------------------------
def test_flow_metropolis_reproduces_exact_2d_u1():
    """4x4 torus, beta = 1: a flow trained for 100 reverse-KL steps as the proposal; plaquette
    and chi_t = <Q^2>/V (geometric charge) against the character expansion within 4 sigma.
    Statistical check on NumPy only (array-api-strict is slow; every exact property above runs
    on both)."""
    xp = namespace_by_name("numpy")
    L, beta = 4, 1.0
    V = L * L
    flow = make_u1_coupling_flow((L, L), xp, n_layers=8, hidden=(8,), n_mix=3, seed=1,
                                 schedule=MIXED)
    action = GaugeAction(beta, 1)
    opt = Adam(1e-2)
    rng = RandomStreams(5, 32, xp)
    for _ in range(100):
        z = flow.draw_latent(rng)
        U, logJ, cache = flow.forward_cache(z)
        _, grads = flow.vjp(cache, -action.force(U) * (1.0 / 32),
                            xp.full((32,), -1.0 / 32, dtype=xp.float64))
        flow.params = opt.step(flow.params, grads)
    sampler = FlowMetropolis(flow, action)
    _, hist = sampler.run(RandomStreams(3, 64, xp), 150, {"P": average_plaquette,
                                                          "Q": topological_charge_2d})
    acc = sampler.summary(hist)["acceptance"]
    assert 0.4 < acc < 0.95, acc
    P = np.stack([to_numpy(a) for a in hist["P"]], axis=1)[:, 10:]
    Q = np.stack([to_numpy(a) for a in hist["Q"]], axis=1)[:, 10:]
    np.testing.assert_allclose(Q, np.round(Q), atol=1e-10)      # integer charges
    rp = gamma_method(P)
    rq = gamma_method(np.round(Q) ** 2 / V)
    exact_p = u1_plaquette(beta, V)
    exact_chi = u1_topological_susceptibility(beta, V)
    assert abs(rp.value - exact_p) < 4 * rp.error, (rp.value, rp.error, exact_p)
    assert abs(rq.value - exact_chi) < 4 * rq.error, (rq.value, rq.error, exact_chi)
    assert rp.error < 0.005 and rq.error < 0.002
    assert rp.tau_int < 5 and rq.tau_int < 5        # chains long against tau_int
