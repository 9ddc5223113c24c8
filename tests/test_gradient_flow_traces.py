"""Class functions of loops ("trace functions": Re Tr W^2, Re (Tr W)^2, |Tr W|^2) in the learned
gradient flow (lattice_ml.flows.loop_functions, lattice_ml.flows.gradient_flow).

Oracles independent of the code under test: a finite-difference group Laplacian and group
derivative on random SU(2), SU(3), U(1) elements; finite differences of the flow (vjp, dense
Jacobian of the discrete map); the gauge transformation of lattice_ml.groups.
"""

import numpy as np
import pytest

from lattice_ml.backend import RandomStreams, namespace_by_name, to_numpy
from lattice_ml.flows.gradient_flow import GradientFlow
from lattice_ml.flows.loop_functions import (FUNCTIONS, class_function,
                                             class_function_derivative, laplacian)
from lattice_ml.gauge import GaugeAction
from lattice_ml.groups import (expm_algebra, gauge_transform, generators, haar_random,
                               random_gauge_transformation, unitarity_deviation)

from test_gradient_flow import _dense_logdet, _fd_divergence, check_vjp_against_fd

NP = namespace_by_name("numpy")
QUADRATIC = ("re_tr2", "re_tr_sq", "abs_tr_sq")


def _fd_along(f, W, T, h):
    """(first, second) derivative of ``s -> f(exp(s T) W)`` at 0, fourth-order central."""
    E = [to_numpy(expm_algebra(NP.asarray(k * h * T))) for k in (-2, -1, 1, 2)]
    v = [f(NP.asarray(e @ W)) for e in E]
    v0 = f(NP.asarray(W))
    d1 = (v[0] - 8 * v[1] + 8 * v[2] - v[3]) / (12 * h)
    d2 = (-v[0] + 16 * v[1] - 30 * v0 + 16 * v[2] - v[3]) / (12 * h * h)
    return d1, d2


@pytest.mark.parametrize("N", [1, 2, 3])
@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_derivative_and_laplacian_against_finite_differences(N, name):
    """d/ds f(e^{sT_a} W) = Re Tr(T_a M) and sum_a d^2/ds^2 f(e^{sT_a} W) = (Delta f)(W) of
    laplacian(), on Haar-random elements."""
    W = to_numpy(haar_random(RandomStreams(N, 4, NP), (), N))
    T = to_numpy(generators(N, NP))
    h = 2e-3
    coef, const = laplacian(name, N)
    for b in range(W.shape[0]):
        lap = 0.0
        M = to_numpy(class_function_derivative(name, NP.asarray(W[b])))
        for a in range(T.shape[0]):
            d1, d2 = _fd_along(lambda X: float(to_numpy(class_function(name, X))), W[b], T[a], h)
            assert abs(d1 - np.trace(T[a] @ M).real) < 1e-8, (b, a, d1)
            lap += d2
        want = const + sum(c * float(to_numpy(class_function(g, NP.asarray(W[b]))))
                           for g, c in coef.items())
        assert abs(lap - want) < 1e-6 * (1 + abs(want)), (b, lap, want)
        if name != "re_tr":
            # the non-trivial part: Delta f is not a multiple of f
            assert abs(want - coef[name] * float(to_numpy(class_function(name,
                                                                         NP.asarray(W[b]))))) \
                > 1e-3 or N == 1


def test_names_and_refusals():
    f = GradientFlow((4, 4), 3, NP, loops=("plaquette", "plaquette:re_tr2",
                                             ("plaquette", "abs_tr_sq"), "rectangle:re_tr_sq"))
    assert f.loop_names == ["plaquette", "plaquette:re_tr2", "plaquette:abs_tr_sq",
                            "rectangle:re_tr_sq"]
    assert f.lengths == [4, 4, 4, 6] and f.n_parameters == 8
    with pytest.raises(ValueError, match="constant"):
        GradientFlow((4, 4), 1, NP, loops=("plaquette:abs_tr_sq",))
    with pytest.raises(ValueError, match="unknown loop function"):
        GradientFlow((4, 4), 3, NP, loops=("plaquette:tr3",))
    with pytest.raises(ValueError, match="twice"):
        GradientFlow((4, 4), 3, NP, loops=("plaquette:re_tr2", ("plaquette", "re_tr2")))


def _tf_flow(xp, N, shape, loops, theta, **kw):
    return GradientFlow(shape, N, xp, loops=loops, n_t=np.shape(theta)[1],
                        theta=np.asarray(theta), **kw)


def _loops_for(N):
    fs = ("re_tr2",) if N == 1 else QUADRATIC
    return ("plaquette",) + tuple(f"plaquette:{f}" for f in fs) + ("rectangle:re_tr2",)


def _theta(N, n):
    """Plaquette coefficient 0.5 and random class-function coefficients of the size that keeps
    the quadratic terms (|M| up to 2 N) comparable to it."""
    theta = np.random.default_rng(N).normal(scale=0.1 / N, size=(n, 2))
    theta[0] = [0.5, 0.1]
    return theta


@pytest.mark.parametrize("N,shape", [(1, (4, 4)), (2, (4, 3)), (3, (4, 4))])
def test_gauge_equivariance(xp_cpu, N, shape):
    xp = xp_cpu
    loops = _loops_for(N)
    rng = RandomStreams(11, 2, xp)
    f = _tf_flow(xp, N, shape, loops, _theta(N, len(loops)), n_steps=3)
    z = f.draw_latent(rng)
    g = random_gauge_transformation(rng, shape, N)
    U, lj = f.forward(z)
    Ug, ljg = f.forward(gauge_transform(z, g))
    np.testing.assert_allclose(to_numpy(Ug), to_numpy(gauge_transform(U, g)), atol=1e-12)
    np.testing.assert_allclose(to_numpy(ljg), to_numpy(lj), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("N,shape,backend", [(1, (4, 4), "numpy"), (2, (3, 3), "array_api_strict"),
                                             (3, (4, 3), "numpy")])
def test_inverse_to_round_off(N, shape, backend):
    xp = namespace_by_name(backend)
    loops = _loops_for(N)
    f = _tf_flow(xp, N, shape, loops, _theta(N, len(loops)), n_steps=6)
    z = f.draw_latent(RandomStreams(3, 2, xp))
    U, lj = f.forward(z)
    assert unitarity_deviation(U) < 1e-13
    z2, ld = f.inverse(U)
    np.testing.assert_allclose(to_numpy(z2), to_numpy(z), atol=1e-11)
    np.testing.assert_allclose(to_numpy(ld), -to_numpy(lj), rtol=1e-10)


@pytest.mark.parametrize("N,shape,loop", [(1, (3, 3), "plaquette"), (2, (2, 3), "plaquette"),
                                          (3, (2, 2), "plaquette"), (3, (3, 3), "rectangle")])
def test_divergence_against_finite_differences_of_the_vector_field(N, shape, loop):
    """The closed-form divergence (one Euler stage: dlogJ = eps div Z) against
    sum_{links, a} d^a Z^a by central differences of the vector field at every link along every
    generator, with every class function of the plaquette or of the 1x2 rectangle (6 links:
    the factor n of the divergence)."""
    fs = ("re_tr2", "re_tr_sq") if N == 1 else QUADRATIC
    loops = (loop,) + tuple(f"{loop}:{f}" for f in fs)
    theta = np.random.default_rng(N).normal(scale=0.3, size=(len(loops), 1))
    f = _tf_flow(NP, N, shape, loops, theta, n_steps=1, scheme="euler")
    U = to_numpy(f.draw_latent(RandomStreams(2, 1, NP)))
    fd, div = (float(v[0]) for v in _fd_divergence(f, U))
    assert abs(fd - div) < 1e-7 * (1 + abs(div)), (fd, div)


@pytest.mark.slow
@pytest.mark.parametrize("N,shape,loops", [
    (1, (3, 3), ("plaquette", "plaquette:re_tr_sq")),
    (3, (2, 2), ("plaquette:re_tr2", "plaquette:abs_tr_sq"))])
def test_logdet_converges_to_the_discrete_jacobian(N, shape, loops):
    """The integrated closed-form divergence differs from log|det| of the dense Jacobian of the
    discrete map by O(eps^3) (rk3): halving eps divides the difference by about 8 (from
    n = 16 on; at 8 steps the O(eps^4) term still shows: ratios 4-11 at n = 8/16)."""
    errs = []
    # a quadratic term moves a link about twice as fast as Re Tr W (U(1): cos 2 theta)
    theta = [[0.5, 0.2] if ":" not in t else [0.5 / N, 0.2 / N] for t in loops]
    for n in (16, 32, 64):
        f = _tf_flow(NP, N, shape, loops, theta, n_steps=n)
        z = f.draw_latent(RandomStreams(5, 1, NP))
        _, lj = f.forward(z)
        errs.append(_dense_logdet(f, z) - float(to_numpy(lj)[0]))
    ratios = [errs[0] / errs[1], errs[1] / errs[2]]
    assert abs(ratios[1] / 8 - 1) < 0.1, (errs, ratios)
    assert abs(ratios[1] / 8 - 1) <= abs(ratios[0] / 8 - 1) + 1e-3, (errs, ratios)


@pytest.mark.parametrize("N,shape,memory,scheme,backend", [
    (1, (4, 4), "states", "rk3", "numpy"), (1, (3, 3), "states", "rk3", "array_api_strict"),
    (2, (4, 3), "constant", "rk3", "numpy"), (3, (4, 4), "stages", "rk3", "numpy"),
    (3, (3, 3), "stages", "rk3", "array_api_strict"), (3, (3, 4), "states", "euler", "numpy"),
    (3, (3, 4), "rect", "rk3", "numpy"), (3, (3, 3), "rect", "rk3", "array_api_strict")])
def test_vjp_matches_finite_differences(N, shape, memory, scheme, backend):
    """L = S(F(z)) + <gamma, logJ>: the vjp against central differences along a random algebra
    direction moving every link, and along a random direction of theta (float64). ``rect``:
    memory ``stages`` with every class function of the 1x2 rectangle too."""
    xp = namespace_by_name(backend)
    loops = _loops_for(N)
    h = 1e-5
    if memory == "rect":
        # the theta direction has a large third derivative here: the central difference's
        # error falls as h^2 (7.3e-5, 1.8e-5, 4.6e-6 at h = 2e-5, 1e-5, 5e-6), so a smaller h
        memory, h = "stages", 2e-6
        loops = loops + tuple(f"rectangle:{f}" for f in QUADRATIC[1:])
    rng = RandomStreams(3, 2, xp)
    theta = _theta(N, len(loops))
    f = _tf_flow(xp, N, shape, loops, theta, n_steps=3, memory=memory, scheme=scheme)
    check_vjp_against_fd(f, theta, rng, xp, h=h)


# -- Lüscher's map at NLO (single-plaquette part) -------------------------------------------
def test_nlo_plaquette_coefficients():
    """The closed forms of the trivializing module docstring: SU(3) x = (-3/5, 2/5, -1/9)
    beta^2 / 192, U(1) x = -beta^2 / 16, in c_f(t) = x_f t = x_f (P0 + P1)/2."""
    from lattice_ml.flows.trivializing import luscher_coefficients, luscher_nlo_plaquette
    x = luscher_nlo_plaquette(4.0, 3)
    np.testing.assert_allclose([x["plaquette:re_tr2"], x["plaquette:re_tr_sq"],
                                x["plaquette:abs_tr_sq"]],
                               np.array([-3 / 5, 2 / 5, -1 / 9]) * 16 / 192, rtol=1e-12)
    assert luscher_nlo_plaquette(2.0, 1) == {"plaquette:re_tr2": pytest.approx(-0.25)}
    # SU(2): the three functions are one, (Tr P)^2 (its matrix L was singular): -beta^2 / 96
    assert luscher_nlo_plaquette(2.0, 2) == {"plaquette:re_tr_sq": pytest.approx(-4 / 96)}
    th = luscher_coefficients(GaugeAction(2.0, 1), ["plaquette", "plaquette:re_tr2"], [4, 4], 2,
                              order=2)
    np.testing.assert_allclose(th, [[1.0, 0.0], [-0.125, -0.125]])
    with pytest.raises(ValueError, match="needs the terms"):
        luscher_coefficients(GaugeAction(2.0, 3), ["plaquette"], [4], 2, order=2)
    with pytest.raises(ValueError, match="Wilson"):
        luscher_coefficients(GaugeAction(2.0, 3, "symanzik"), ["plaquette", "rectangle"],
                             [4, 6], 2, order=2)


@pytest.mark.parametrize("N,beta", [(1, 1.0), (2, 2.0), (3, 3.0)])
def test_nlo_plaquette_terms_are_optimal_along_their_line(N, beta):
    """An independent check of the NLO derivation: with LO fixed, the reverse KL along the line
    lambda * (NLO class-function coefficients) is lowest at lambda = 1 (same latent batch), and
    the ESS rises above LO's (measured: SU(3) beta 3, 4x4: 0.77 -> 0.88; U(1) beta 1: 0.35 ->
    0.58)."""
    from lattice_ml.flows import effective_sample_size
    from lattice_ml.flows.trivializing import luscher_flow
    act = GaugeAction(beta, N)
    loops = ("plaquette",) + tuple(f"plaquette:{f}" for f in
                                   {1: ("re_tr2",), 2: ("re_tr_sq",)}.get(N, QUADRATIC))
    f = luscher_flow(act, (4, 4), NP, loops=loops, n_t=2, n_steps=4, order=2)
    th = f.params_to_host()["theta"]
    z = f.draw_latent(RandomStreams(4, 256, NP))
    out = {}
    for lam in (0.0, 0.5, 1.0, 1.5):
        t = th.copy()
        t[1:] *= lam
        f.load_params({"theta": t})
        U, lj = f.forward(z)
        lw = -to_numpy(act.action(U)) + to_numpy(lj)
        out[lam] = (-float(np.mean(lw)), effective_sample_size(lw))
    assert out[1.0][0] < min(out[0.5][0], out[1.5][0]), out
    assert out[1.0][1] > out[0.0][1] + 0.05, out
