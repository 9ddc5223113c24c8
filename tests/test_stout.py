"""Stout smearing: forward properties (group, covariance, rho = 0, small-rho limit, sign) and the
hand-written backward pass against central finite differences along every generator and for every
weight, for U(1), SU(2), SU(3), SU(4) with several layers and loop types."""

import numpy as np
import pytest

from lattice_ml.backend import RandomStreams, namespace_by_name, to_numpy
from lattice_ml.gauge import GaugeAction
from lattice_ml.groups import (algebra_to_matrix, check_links, expm_algebra, gauge_transform,
                               generators, haar_random, project_algebra,
                               random_gauge_transformation, random_near_identity, trace)
from lattice_ml.smearing import (StoutSmearing, custom_loops, direction_weights, expm_pullback,
                                 polyakov_loops, restrict_loops, resolve_loops, stout_backward,
                                 stout_smear, su3_b_coefficients)

NP = namespace_by_name("numpy")


def links(xp, N, shape, eps=0.7, seed=1, batch=1):
    rng = RandomStreams(seed, batch, xp)
    return random_near_identity(rng, (len(shape), *shape), N, eps)


# ------------------------------------------------------------------------------------------
# a scalar of the smeared links and its force: Wilson/improved action + random linear term
# ------------------------------------------------------------------------------------------
class Loss:
    """L(U') = S_gauge(U') + sum Re Tr(W U'); force F' = -dL/dU' (algebra field)."""

    def __init__(self, xp, N, U, beta=1.7, kind="iwasaki", seed=9):
        self.xp = xp
        self.act = GaugeAction(beta, N, kind)
        g = np.random.default_rng(seed)
        host = g.standard_normal(U.shape) + 1j * g.standard_normal(U.shape)
        self.W = xp.asarray(host, dtype=U.dtype)

    def value(self, Up):
        xp = self.xp
        lin = xp.sum(xp.real(trace(Up @ self.W)))
        return float(xp.sum(self.act.action(Up))) + float(lin)

    def force(self, Up):
        # d/ds Re Tr(W exp(sX) U') = Re Tr(X U' W) = 2 Re Tr(X TA(U' W) / 2)
        return self.act.force(Up) + 0.5 * project_algebra(Up @ self.W)


def fd_check_links(xp, U, smear, backward_force, loss, h=1e-5, sites=None, tol=1e-7):
    """Compare -2 Re Tr(T_a F) with -dL/ds_a (central differences), every generator, at one
    link of every direction. Returns the largest absolute deviation seen."""
    N = U.shape[-1]
    D = U.shape[1]
    T = to_numpy(generators(N, xp, dtype=U.dtype))
    F = to_numpy(backward_force)
    host = to_numpy(U)
    shape = U.shape[2:2 + D]
    worst = 0.0
    for mu in range(D):
        x = tuple(int(v) for v in np.random.default_rng(100 + mu).integers(0, shape))
        idx = (0, mu, *x)
        for a in range(T.shape[0]):
            vals = []
            for s in (h, -h):
                V = host.copy()
                V[idx] = to_numpy(expm_algebra(xp.asarray(s * T[a]))) @ host[idx]
                vals.append(loss.value(smear(xp.asarray(V))))
            dL = (vals[0] - vals[1]) / (2 * h)
            coord = -2 * np.trace(T[a] @ F[idx]).real
            dev = abs(coord + dL)
            worst = max(worst, dev / (1 + abs(dL)))
            assert dev <= tol * (1 + abs(dL)), (mu, x, a, coord, -dL)
    return worst


def fd_check_params(get, set_, grad, value, h=1e-6, entries=None, tol=1e-7):
    theta0 = np.array(get(), dtype=float)
    grad = np.asarray(grad)
    idxs = range(theta0.size) if entries is None else entries
    worst = 0.0
    for i in idxs:
        vals = []
        for s in (h, -h):
            th = theta0.copy()
            th[i] += s
            set_(th)
            vals.append(value())
        set_(theta0)
        d = (vals[0] - vals[1]) / (2 * h)
        worst = max(worst, abs(grad[i] - d) / (1 + abs(d)))
        assert grad[i] == pytest.approx(d, abs=tol * (1 + abs(d))), (i, grad[i], d)
    return worst


# ------------------------------------------------------------------------------------------
# forward properties
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("N", [1, 2, 3, 4])
def test_output_in_group_and_gauge_covariant(xp, N):
    shape = (3, 4, 3) if N < 4 else (3, 4)
    rng = RandomStreams(4, 2, xp)
    U = haar_random(rng, (len(shape), *shape), N)
    g = random_gauge_transformation(rng, shape, N)
    D = len(shape)
    loops = ["plaquette", "rectangle"]
    rho = [xp.asarray(direction_weights(D, 0.12, 0.08)), -0.02]
    Up = stout_smear(U, rho, loops)
    check_links(Up, N)
    Upg = stout_smear(gauge_transform(U, g), rho, loops)
    np.testing.assert_allclose(to_numpy(Upg), to_numpy(gauge_transform(Up, g)), atol=1e-12)


def test_rho_zero_is_identity(xp):
    U = links(xp, 3, (3, 3, 2))
    Up = stout_smear(U, 0.0, "plaquette")
    np.testing.assert_array_equal(to_numpy(Up), to_numpy(U))
    Up = stout_smear(U, [0.0, 0.0], ["plaquette", "rectangle"])
    np.testing.assert_array_equal(to_numpy(Up), to_numpy(U))


@pytest.mark.parametrize("N", [1, 2, 3])
def test_small_rho_limit_and_sign(N):
    """U' = U - rho TA(U V) U + O(rho^2), and Re Tr(U' V) (V = staple sum) grows with rho:
    smearing moves each link towards its staples, and lowers the Wilson action."""
    xp = NP
    U = links(xp, N, (4, 3, 3), eps=0.9)
    D = U.shape[1]
    act = GaugeAction(1.0, N, "wilson")
    V = xp.stack([act.staple_sum(U, mu) for mu in range(D)], axis=1)
    first = -project_algebra(U @ V) @ U
    errs = []
    for rho in (1e-3, 5e-4):
        Up = stout_smear(U, rho, "plaquette")
        errs.append(float(xp.max(xp.abs((Up - U) / rho - first))))
    assert errs[1] < 0.6 * errs[0] and errs[0] < 1e-2   # O(rho)
    before = to_numpy(xp.real(trace(U @ V)))
    after = to_numpy(xp.real(trace(stout_smear(U, 1e-3, "plaquette") @ V)))
    assert np.all(after >= before - 1e-15)
    assert to_numpy(act.action(stout_smear(U, 0.02, "plaquette")))[0] < to_numpy(act.action(U))[0]


def test_plaquette_stout_is_a_wilson_flow_euler_step():
    xp = NP
    N, beta, rho = 3, 2.0, 0.03
    U = links(xp, N, (3, 3, 3))
    F = GaugeAction(beta, N).force(U)
    expected = expm_algebra((2 * N / beta) * rho * F) @ U
    np.testing.assert_allclose(to_numpy(stout_smear(U, rho, "plaquette")), to_numpy(expected),
                               atol=1e-14)


def test_loop_helpers():
    D = 4
    plaq = resolve_loops("plaquette", D)[0]
    assert [len(p) for p in plaq[0]] == [4] * 6 and [len(m) for m in plaq] == [6] * D
    # 48 chairs per site in 4D, 6 links each: 48 * 6 / 4 = 72 through every link
    assert [len(m) for m in resolve_loops("chair", D)[0]] == [72] * D
    sp = restrict_loops("plaquette", D, range(1, D))
    assert sp[0] == [] and len(sp[1]) == 4
    assert all(m != 0 for p in sp[2] for m, _ in p)
    cl = custom_loops([((0, 1), (1, 1), (0, -1), (1, -1))], D)
    assert sorted(cl[2]) == sorted(resolve_loops("plaquette", D)[0][2])
    pl = polyakov_loops(3, D)
    assert pl[0] == [((0, 1),) * 3] and pl[1] == []
    with pytest.raises(ValueError, match="not closed"):
        stout_smear(links(NP, 2, (4, 3)), 0.1, {0: [((0, 1),) * 3]})
    with pytest.raises(ValueError, match="must start"):
        resolve_loops({1: [((0, 1), (1, 1), (0, -1), (1, -1))]}, 2)
    with pytest.raises(ValueError, match="one weight per loop type"):
        stout_smear(links(NP, 2, (3, 3)), 0.1, ["plaquette", "rectangle"])


def test_spatial_smearing_leaves_time_links():
    U = links(NP, 3, (3, 3, 3))
    Up = stout_smear(U, 0.1, restrict_loops("plaquette", 3, (1, 2)))
    np.testing.assert_array_equal(to_numpy(Up[:, 0]), to_numpy(U[:, 0]))
    assert float(NP.max(NP.abs(Up[:, 1] - U[:, 1]))) > 1e-3


# ------------------------------------------------------------------------------------------
# exp derivative
# ------------------------------------------------------------------------------------------
def _fd_pullback(xp, X, B, N, h=1e-3):
    """Five-point central differences (truncation O(h^4) ~ 1e-12, round-off ~ 1e-13)."""
    T = generators(N, xp, dtype=X.dtype)
    out = []
    for a in range(T.shape[0]):
        def e(s):
            return expm_algebra(X + s * T[a, ...])
        d = (8 * (e(h) - e(-h)) - (e(2 * h) - e(-2 * h))) / (12 * h)
        out.append(float(xp.real(trace(d @ B))))
    return np.array(out), T


@pytest.mark.parametrize("N,methods", [(1, ["u1", "block"]), (2, ["su2", "eigh", "block"]),
                                       (3, ["su3", "eigh", "block"]), (4, ["eigh", "block"])])
@pytest.mark.parametrize("scale", [0.0, 1e-7, 0.02, 0.2, 1.0, 4.0])
def test_exp_pullback_against_fd(xp, N, methods, scale):
    """Re Tr(d exp_X[T_a] B) = Re Tr(T_a Lambda) for every generator; near 0 and large X."""
    if N >= 4 and not hasattr(xp, "linalg"):
        pytest.skip("no linalg")
    g = np.random.default_rng(int(scale * 100) + N)
    X = algebra_to_matrix(xp.asarray(scale * g.standard_normal(max(N * N - 1, 1))), N)
    B = xp.asarray(g.standard_normal((N, N)) + 1j * g.standard_normal((N, N)))
    fd, T = _fd_pullback(xp, X, B, N)
    for m in methods:
        Lam = expm_pullback(X, B, method=m)
        an = np.array([float(xp.real(trace(T[a, ...] @ Lam))) for a in range(T.shape[0])])
        np.testing.assert_allclose(an, fd, atol=1e-10, rtol=1e-10, err_msg=m)


def test_su3_b_coefficients_series_and_closed_form_agree():
    """Around the switch c1 = 0.5 and at degenerate spectra (c0 = +-c0_max) the Taylor series and
    MP's closed form give the same f_j, b1j, b2j; the series is exact near Q = 0."""
    from lattice_ml.groups import _su3_closed as _b_closed, _su3_series as _b_series
    xp = NP
    for c1 in (0.02, 0.1, 0.5, 1.0, 2.0):
        for r in (0.0, 0.4, 1.0, -0.7, -1.0):
            c0 = xp.asarray([r * 2 * (c1 / 3) ** 1.5])
            c1a = xp.asarray([c1])
            s = _b_series(xp, c0, c1a, xp.complex128)
            c = _b_closed(xp, c0, c1a, xp.complex128)
            tol = 2e-12 if c1 < 0.5 else 2e-15
            for a, b in zip(s, c):
                for j in range(3):
                    assert abs(complex(a[j][0] - b[j][0])) < tol, (c1, r, j)
    f, b1, b2 = su3_b_coefficients(xp.asarray([0.0]), xp.asarray([0.0]))
    # exp(iQ) = 1 + iQ - Q^2/2 + ... : df0/dc1 = -1/2 ... via Q^2 -> c1 Q^... checked by FD above
    assert abs(complex(f[0][0]) - 1) < 1e-16 and abs(complex(f[1][0]) - 1j) < 1e-16


# ------------------------------------------------------------------------------------------
# backward pass against finite differences
# ------------------------------------------------------------------------------------------
CASES = [  # N, shape, loop set, n_layers
    (1, (3, 4), ["plaquette", "rectangle"], 3),
    (2, (3, 3, 2), ["plaquette", "rectangle"], 2),
    (3, (3, 3, 2), ["plaquette", "rectangle"], 2),
    (3, (2, 2, 3, 3), ["plaquette"], 1),
    (4, (3, 4), ["plaquette", "rectangle"], 2),
]


def _network_fd(xp, N, shape, loops, n_layers, directions):
    D = len(shape)
    U = links(xp, N, shape)
    net = StoutSmearing(n_layers, loops, D=D, directions=directions, keep="all")
    g = np.random.default_rng(3)
    net.set_parameters(0.05 + 0.1 * g.random(net.n_parameters)
                       * np.where(np.arange(net.n_parameters) % 2, -0.5, 1.0))
    loss = Loss(xp, N, U)
    Up = net.forward(U)
    F, grad = net.backward(loss.force(Up))
    grad = to_numpy(grad)
    w_links = fd_check_links(xp, U, net.forward, F, loss)
    w_par = fd_check_params(net.parameters, net.set_parameters, grad,
                            lambda: loss.value(net.forward(U)))
    return w_links, w_par


@pytest.mark.parametrize("N,shape,loops,n_layers,directions",
                         [c + (d,) for c, d in zip(CASES, ["anisotropic", "isotropic"] * 3)])
def test_network_backward_against_fd(N, shape, loops, n_layers, directions):
    """Fast tier, NumPy: every generator at one link per direction, every weight."""
    _network_fd(NP, N, shape, loops, n_layers, directions)


@pytest.mark.slow
@pytest.mark.parametrize("N,shape,loops,n_layers", CASES)
@pytest.mark.parametrize("directions", ["isotropic", "anisotropic", "per_direction"])
def test_network_backward_against_fd_all(xp_cpu, N, shape, loops, n_layers, directions):
    _network_fd(xp_cpu, N, shape, loops, n_layers, directions)


@pytest.mark.parametrize("N,shape", [(1, (3, 4)), (2, (3, 2, 3)), (3, (2, 3, 2, 2)), (4, (3, 3))])
def test_network_same_on_numpy_and_array_api_strict(N, shape):
    """Forward and backward under array-api-strict equal the NumPy results (per-site weights,
    anisotropic, plaquette + rectangle, 2 layers); with the FD tests on NumPy this proves the
    strict path right."""
    xps = [NP, namespace_by_name("array_api_strict")]
    outs = []
    for xp in xps:
        U = links(xp, N, shape, seed=8)
        net = StoutSmearing(2, ["plaquette", "rectangle"], D=len(shape), directions="anisotropic",
                            site_shape=shape, keep="links")
        g = np.random.default_rng(4)
        net.set_parameters(xp.asarray(0.1 * g.random(net.n_parameters) - 0.02))
        loss = Loss(xp, N, U)
        Up = net.forward(U)
        F, grad = net.backward(loss.force(Up))
        outs.append([to_numpy(Up), to_numpy(F), to_numpy(grad)])
    for a, b in zip(*outs):
        np.testing.assert_allclose(b, a, atol=1e-12, rtol=0)


@pytest.mark.parametrize("N", [1, 2, 3])
def test_per_site_weights_and_function_api(N):
    """stout_smear / stout_backward with [D, *sites] weights (plaquette) and a [D] rectangle
    weight, keep="links" (recompute) and without context give the same answer; FD checks."""
    xp = NP
    shape = (3, 2, 3)
    D = len(shape)
    U = links(xp, N, shape, seed=5)
    g = np.random.default_rng(7)
    r_p = 0.1 * g.random((D, *shape))
    r_r = np.array([-0.01, -0.02, 0.015])
    loops = ["plaquette", "rectangle"]
    loss = Loss(xp, N, U, kind="wilson")
    Up, ctx = stout_smear(U, [xp.asarray(r_p), xp.asarray(r_r)], loops, keep="links")
    Fp = loss.force(Up)
    F, (gp, gr) = stout_backward(U, [xp.asarray(r_p), xp.asarray(r_r)], Fp, loops, context=ctx)
    F2, (gp2, gr2) = stout_backward(U, [xp.asarray(r_p), xp.asarray(r_r)], Fp, loops)
    np.testing.assert_array_equal(to_numpy(F), to_numpy(F2))
    assert gp.shape == (D, *shape) and gr.shape == (D,)
    fd_check_links(xp, U, lambda V: stout_smear(V, [xp.asarray(r_p), xp.asarray(r_r)], loops), F,
                   loss)
    flat = np.concatenate([r_p.ravel(), r_r])
    grad = np.concatenate([to_numpy(gp).ravel(), to_numpy(gr)])
    state = {"t": flat.copy()}

    def value():
        t = state["t"]
        rho = [xp.asarray(t[:r_p.size].reshape(r_p.shape)), xp.asarray(t[r_p.size:])]
        return loss.value(stout_smear(U, rho, loops))

    entries = list(np.random.default_rng(1).choice(r_p.size, 12, replace=False)) + \
        [r_p.size, r_p.size + 1, r_p.size + 2]
    fd_check_params(lambda: state["t"], lambda t: state.__setitem__("t", t), grad, value,
                    entries=entries)


@pytest.mark.parametrize("N", [2, 3])
def test_chair_polyakov_and_spatial_loops_backward(N):
    xp = NP
    shape = (3, 3, 2)
    D = 3
    U = links(xp, N, shape, seed=11)
    loops = ["chair", polyakov_loops(shape[0], D), restrict_loops("plaquette", D, (1, 2))]
    rho = [0.03, 0.07, xp.asarray([0.0, 0.1, 0.12])]
    loss = Loss(xp, N, U)
    Up = stout_smear(U, rho, loops)
    F, grads = stout_backward(U, rho, loss.force(Up), loops)
    fd_check_links(xp, U, lambda V: stout_smear(V, rho, loops), F, loss)
    for k, (r, gk) in enumerate(zip(rho, grads)):
        if k == 2:
            continue
        h = 1e-6
        vals = []
        for s in (h, -h):
            rr = list(rho)
            rr[k] = r + s
            vals.append(loss.value(stout_smear(U, rr, loops)))
        d = (vals[0] - vals[1]) / (2 * h)
        assert float(gk) == pytest.approx(d, abs=1e-7 * (1 + abs(d)))


@pytest.mark.parametrize("N,scale", [(3, 1e-4), (3, 2.5), (2, 2.5)])
def test_backward_small_and_large_Q(N, scale):
    """The exp-derivative branches near Q = 0 (series) and for large Q (closed form) through a
    whole stout layer: the smeared links of a near-unit field have tiny Q; large rho on a rough
    field gives |Q| of order 1 or more."""
    xp = NP
    shape = (3, 3, 2)
    eps, rho = (scale, 0.1) if scale < 1 else (1.5, scale)
    U = links(xp, N, shape, eps=eps, seed=2)
    loss = Loss(xp, N, U, beta=1.0)
    Up = stout_smear(U, rho, "plaquette")
    F, _ = stout_backward(U, rho, loss.force(Up), "plaquette")
    fd_check_links(xp, U, lambda V: stout_smear(V, rho, "plaquette"), F, loss,
                   h=1e-5)


def test_docs_example_runs():
    import re
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "docs" / "smearing.md"
    if not path.exists():
        pytest.skip("docs not in this checkout")
    ns = {}
    for code in re.findall(r"```python\n(.*?)```", path.read_text(), re.S):
        exec(compile(code, str(path), "exec"), ns)
    assert ns["grad"].shape == (8,)


@pytest.mark.slow
@pytest.mark.parametrize("N,shape", [(1, (3, 4)), (2, (3, 3, 2)), (3, (3, 3, 2)), (4, (3, 4))])
def test_three_layers_five_point_fd(N, shape):
    """Three anisotropic plaquette + rectangle layers against five-point differences (h = 1e-3,
    truncation O(h^4)): links to 1e-9, weights to 1e-8 (relative)."""
    xp = NP
    D = len(shape)
    U = links(xp, N, shape)
    net = StoutSmearing(3, ["plaquette", "rectangle"], D=D, directions="anisotropic")
    net.set_parameters(np.array([0.08, 0.06, -0.01, -0.012] * 3))
    loss = Loss(xp, N, U)
    F, grad = net.backward(loss.force(net.forward(U)))
    F, grad = to_numpy(F), to_numpy(grad)
    T = to_numpy(generators(N, xp))
    host = to_numpy(U)
    h = 1e-3

    def five(f):
        return (8 * (f(h) - f(-h)) - (f(2 * h) - f(-2 * h))) / (12 * h)

    for mu in range(D):
        idx = (0, mu) + (1,) * D
        for a in range(T.shape[0]):
            def L(s):
                V = host.copy()
                V[idx] = to_numpy(expm_algebra(xp.asarray(s * T[a]))) @ host[idx]
                return loss.value(net.forward(xp.asarray(V)))
            d = five(L)
            assert -2 * np.trace(T[a] @ F[idx]).real == pytest.approx(-d, abs=1e-9 * (1 + abs(d)))
    theta = np.array(net.parameters())
    for i in range(theta.size):
        def Lp(s):
            t = theta.copy()
            t[i] += s
            net.set_parameters(t)
            return loss.value(net.forward(U))
        d = five(Lp)
        assert grad[i] == pytest.approx(d, abs=1e-8 * (1 + abs(d)))
