"""Functions of two plaquettes sharing a link (lattice_ml.flows.loop_pairs) in the learned
gradient flow, and Lüscher's full NLO trivialising map (lattice_ml.flows.trivializing).

Oracles independent of the code under test: finite differences of the pair sums along every
generator at every link (gradient and group Laplacian), finite differences of the flow (vjp,
dense Jacobian of the discrete map, divergence of the vector field), the gauge transformation
of lattice_ml.groups, the force of the Wilson action (the continuity equation of the NLO map).
"""

import numpy as np
import pytest

from lattice_ml.backend import RandomStreams, namespace_by_name, to_numpy
from lattice_ml.flows.gradient_flow import GradientFlow, casimir
from lattice_ml.flows.loop_pairs import pair_field, pair_laplacian, pair_readings, pair_sums
from lattice_ml.flows.trivializing import (luscher_coefficients, luscher_flow,
                                           luscher_nlo_pairs)
from lattice_ml.gauge import GaugeAction
from lattice_ml.groups import (expm_algebra, gauge_transform, generators, haar_random,
                               random_gauge_transformation, unitarity_deviation)

from test_gradient_flow import _dense_logdet, _fd_divergence, check_vjp_against_fd

NP = namespace_by_name("numpy")
ALL = ("re_re", "im_im", "twice", "rect")
PAIRS = {1: ("re_re", "im_im"), 2: ("re_re", "twice"), 3: ("re_re", "im_im", "twice")}


def _pair_sum(V, name):
    return to_numpy(pair_sums(pair_readings(NP.asarray(V)), [name])[name])


@pytest.mark.parametrize("N", [1, 2, 3])
def test_gradient_and_laplacian_against_finite_differences(N):
    """On a random 3x3 lattice (batch 2): d/ds F(e^{s T_a} U_l) = -2 Re Tr(T_a G_l) for the
    field G of pair_field, and sum_{l, a} d^2/ds^2 F = sum_g L_fg F_g of pair_laplacian, for
    all four functions (fourth-order central differences)."""
    U = to_numpy(haar_random(RandomStreams(N, 2, NP), (2, 3, 3), N))
    T = to_numpy(generators(N, NP))
    h = 2e-3
    vals = {g: _pair_sum(U, g) for g in ALL}
    for name in ALL:
        if N == 2 and name == "im_im":
            continue                                # zero for SU(2) (refused as a term)
        G = to_numpy(pair_field(NP.asarray(U), pair_readings(NP.asarray(U)), {name: 1.0}))
        lap = 0.0
        for idx in np.ndindex(U.shape[1:-2]):
            for a in range(T.shape[0]):
                v = []
                for k in (-2, -1, 1, 2):
                    V = U.copy()
                    V[(slice(None),) + idx] = to_numpy(expm_algebra(NP.asarray(k * h * T[a]))) @ \
                        U[(slice(None),) + idx]
                    v.append(_pair_sum(V, name))
                d1 = (v[0] - 8 * v[1] + 8 * v[2] - v[3]) / (12 * h)
                lap = lap + (-v[0] + 16 * v[1] - 30 * vals[name] + 16 * v[2] - v[3]) / (12 * h * h)
                an = -2 * np.einsum("ij,bji->b", T[a], G[(slice(None),) + idx]).real
                np.testing.assert_allclose(an, d1, atol=1e-8)
        coef = pair_laplacian(name, N)
        want = sum(c * vals[g] for g, c in coef.items())
        np.testing.assert_allclose(lap, want, rtol=1e-6, atol=1e-6)
        # the non-trivial part: Delta g is not a multiple of g (rect: it is, -6C)
        other = want - coef[name] * vals[name]
        assert name == "rect" or np.max(np.abs(other)) > 1e-2, (name, other)


def test_names_and_refusals():
    f = GradientFlow((3, 4), 3, NP, loops=("plaquette", "plaquette_pair:re_re",
                                             ("plaquette_pair", "twice"), "rectangle"))
    assert f.loop_names == ["plaquette", "plaquette_pair:re_re", "plaquette_pair:twice",
                            "rectangle"]
    assert f.lengths == [4, 8, 8, 6] and f.n_parameters == 8
    with pytest.raises(ValueError, match="needs one of"):
        GradientFlow((4, 4), 3, NP, loops=("plaquette_pair",))
    with pytest.raises(ValueError, match="needs one of"):
        GradientFlow((4, 4), 3, NP, loops=("plaquette_pair:rect",))
    with pytest.raises(ValueError, match="re_re - im_im"):
        GradientFlow((4, 4), 1, NP, loops=("plaquette_pair:twice",))
    with pytest.raises(ValueError, match="zero"):
        GradientFlow((4, 4), 2, NP, loops=("plaquette_pair:im_im",))
    with pytest.raises(ValueError, match=">= 3"):
        GradientFlow((4, 2), 3, NP, loops=("plaquette_pair:re_re",))


def _loops(N):
    return ("plaquette", "rectangle") + tuple(f"plaquette_pair:{g}" for g in PAIRS[N])


def _theta(N, n):
    theta = np.random.default_rng(N + 7).normal(scale=0.1 / N, size=(n, 2))
    theta[0] = [0.5, 0.1]
    return theta


def _flow(xp, N, shape, theta, **kw):
    return GradientFlow(shape, N, xp, loops=_loops(N), n_t=np.shape(theta)[1],
                        theta=np.asarray(theta), **kw)


@pytest.mark.parametrize("N,shape", [(1, (3, 4)), (3, (3, 3)), (2, (3, 3, 3))])
def test_gauge_equivariance(N, shape):
    rng = RandomStreams(11, 2, NP)
    f = _flow(NP, N, shape, _theta(N, 2 + len(PAIRS[N])), n_steps=2)
    z = f.draw_latent(rng)
    g = random_gauge_transformation(rng, shape, N)
    U, lj = f.forward(z)
    Ug, ljg = f.forward(gauge_transform(z, g))
    np.testing.assert_allclose(to_numpy(Ug), to_numpy(gauge_transform(U, g)), atol=1e-12)
    np.testing.assert_allclose(to_numpy(ljg), to_numpy(lj), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("N,backend", [(1, "numpy"), (3, "array_api_strict")])
def test_inverse_to_round_off(N, backend):
    xp = namespace_by_name(backend)
    f = _flow(xp, N, (3, 3), _theta(N, 2 + len(PAIRS[N])), n_steps=3)
    z = f.draw_latent(RandomStreams(3, 2, xp))
    U, lj = f.forward(z)
    assert unitarity_deviation(U) < 1e-13
    z2, ld = f.inverse(U)
    np.testing.assert_allclose(to_numpy(z2), to_numpy(z), atol=1e-11)
    np.testing.assert_allclose(to_numpy(ld), -to_numpy(lj), rtol=1e-10)


@pytest.mark.parametrize("N", [1, 3])
def test_divergence_against_finite_differences_of_the_vector_field(N):
    """The closed-form divergence (pair_laplacian) against the central-difference divergence of
    the vector field at every link along every generator, pair terms only."""
    loops = tuple(f"plaquette_pair:{g}" for g in PAIRS[N])
    theta = np.random.default_rng(N).normal(scale=0.3, size=(len(loops), 1))
    f = GradientFlow((3, 3), N, NP, loops=loops, n_t=1, theta=theta, n_steps=1, scheme="euler")
    U = to_numpy(f.draw_latent(RandomStreams(2, 2, NP)))
    fd, div = _fd_divergence(f, U)
    np.testing.assert_allclose(fd, div, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("N,memory,backend", [
    (3, "states", "numpy"), (3, "stages", "array_api_strict"), (1, "constant", "numpy"),
    (2, "states", "numpy")])
def test_vjp_matches_finite_differences(N, memory, backend):
    """L = S(F(z)) + <gamma, logJ>: the vjp (links: every link along a random algebra
    direction; theta: a random direction) against central differences, with the pair terms."""
    xp = namespace_by_name(backend)
    theta = _theta(N, 2 + len(PAIRS[N]))
    f = _flow(xp, N, (3, 3), theta, n_steps=2, memory=memory)
    check_vjp_against_fd(f, theta, RandomStreams(3, 2, xp), xp)


@pytest.mark.slow
def test_inverse_vjp_matches_finite_differences():
    """The discrete inverse's vjp (forward KL, path gradients) with the pair terms:
    L(U) = S(z(U)) + <gamma, logdet(U)>, d/ds L(exp(s X) U) along a random direction moving
    every link, against inverse_vjp."""
    from lattice_ml.groups import random_algebra
    from test_gradient_flow import _pairing
    N = 3
    f = _flow(NP, N, (3, 3), _theta(N, 5), n_steps=4)
    rng = RandomStreams(5, 2, NP)
    act = GaugeAction(1.3, N)
    gam = NP.asarray(np.array([0.7, -0.4]))
    U, _ = f.forward(f.draw_latent(rng))

    def L(V):
        z, ld = f.inverse(V)
        return float(to_numpy(NP.sum(act.action(z)) + NP.sum(gam * ld)))

    z, _, cache = f.inverse_cache(U)
    gU, _ = f.inverse_vjp(cache, -act.force(z), gam)
    X = random_algebra(rng, (2, 3, 3), N)
    h = 1e-5
    fd = (L(expm_algebra(h * X) @ U) - L(expm_algebra(-h * X) @ U)) / (2 * h)
    assert abs(fd - _pairing(X, gU)) < 1e-7 * abs(fd), (fd, _pairing(X, gU))


@pytest.mark.slow
@pytest.mark.parametrize("N", [1, 2])
def test_logdet_converges_to_the_discrete_jacobian(N):
    """The integrated closed-form divergence with pair terms differs from log|det| of the dense
    Jacobian of the discrete map by O(eps^3) (rk3): halving eps divides it by about 8 (the
    ratio approaches 8 from above as eps falls: the O(eps^4) term)."""
    errs = []
    loops = ("plaquette",) + tuple(f"plaquette_pair:{g}" for g in PAIRS[N])
    # a pair function is of size N^2 (the plaquette's trace N): small coefficients
    theta = [[0.5, 0.2]] + [[0.1 / N, -0.05 / N]] * len(PAIRS[N])
    for n in ((16, 32, 64) if N == 1 else (8, 16, 32)):
        f = GradientFlow((3, 3), N, NP, loops=loops, n_t=2, theta=np.array(theta), n_steps=n)
        z = f.draw_latent(RandomStreams(5, 1, NP))
        _, lj = f.forward(z)
        errs.append(_dense_logdet(f, z) - float(to_numpy(lj)[0]))
    ratios = [errs[0] / errs[1], errs[1] / errs[2]]
    assert abs(ratios[1] / 8 - 1) < 0.1, (errs, ratios)
    assert abs(ratios[1] / 8 - 1) <= abs(ratios[0] / 8 - 1) + 1e-3, (errs, ratios)


# -- Lüscher's full NLO map --------------------------------------------------------------------
def _nlo_only_flow(beta, N, shape, with_pairs=True):
    """A flow whose vector field at t = 0 is the NLO part's ``Z = sum_f x_f grad F_f``
    (constant coefficients x_f, the t-derivative of S~^(2) / t)."""
    loops = ("plaquette",) + {1: ("plaquette:re_tr2",), 2: ("plaquette:re_tr_sq",)}.get(
        N, ("plaquette:re_tr2", "plaquette:re_tr_sq", "plaquette:abs_tr_sq"))
    if with_pairs:
        loops = loops + ("rectangle",) + tuple(f"plaquette_pair:{g}" for g in PAIRS[N]
                                               if not (N == 2 and g == "twice"))
    probe = GradientFlow(shape, N, NP, loops=loops, n_t=2)
    th = luscher_coefficients(GaugeAction(beta, N), probe.loop_names, probe.lengths, 2,
                              order=2)
    theta = 2.0 * th[:, 1:2]                  # x_f (the P1 coefficient is x_f / 2)
    theta[0] = 0.0                            # no LO part
    return GradientFlow(shape, N, NP, loops=loops, n_t=1, theta=theta, n_steps=1,
                        scheme="euler")


@pytest.mark.parametrize("N", [1, 2, 3])
def test_nlo_map_solves_the_continuity_equation(N):
    """At order beta^2 the continuity equation reads -Delta S~^(2) + t dS~^(1) . dS = const,
    i.e. div Z^(2) + |dS|^2 / (4C) is the same on every configuration (Z^(2) the NLO vector
    field per unit t, dS from the action's force): with the divergence by finite differences of
    the vector field, on four random configurations, the spread is at round-off; without the
    pair terms it is not."""
    beta, shape = 2.0, (3, 3)
    act = GaugeAction(beta, N)
    U = to_numpy(haar_random(RandomStreams(9, 4, NP), (2, *shape), N))
    F = to_numpy(act.force(NP.asarray(U)))
    # sum_{l, a} (d^a S)^2 = -2 sum_l Tr(F_l F_l)
    dS2 = -2 * np.einsum("...ij,...ji->...", F, F).real.reshape(F.shape[0], -1).sum(axis=1)
    spread = {}
    for with_pairs in (True, False):
        fd, _ = _fd_divergence(_nlo_only_flow(beta, N, shape, with_pairs), U)
        res = fd + dS2 / (4 * casimir(N))
        spread[with_pairs] = float(np.ptp(res) / np.max(np.abs(dS2 / (4 * casimir(N)))))
    assert spread[True] < 1e-8, spread
    assert spread[False] > 1e-2, spread


def test_nlo_pair_coefficients():
    """U(1): S~^(2) = -t (beta^2/30) sum_pairs (re_re + 4 im_im) (by hand: Delta re_re =
    -4 re_re + im_im, Delta im_im = -4 im_im + re_re, source -(beta^2/2) im_im); the
    coefficients enter theta as (x/2, x/2) and the terms are required."""
    x = luscher_nlo_pairs(2.0, 1)
    assert x == {"plaquette_pair:re_re": pytest.approx(4 / 30),
                 "plaquette_pair:im_im": pytest.approx(16 / 30)}
    names = ["plaquette", "plaquette:re_tr2", "plaquette_pair:re_re", "plaquette_pair:im_im"]
    th = luscher_coefficients(GaugeAction(2.0, 1), names, [4, 4, 8, 8], 2, order=2)
    np.testing.assert_allclose(th[2:], [[2 / 30, 2 / 30], [8 / 30, 8 / 30]])
    with pytest.raises(ValueError, match="two-plaquette"):
        luscher_coefficients(GaugeAction(2.0, 3), ["plaquette", "plaquette:re_tr2",
                                                   "plaquette:re_tr_sq", "plaquette:abs_tr_sq",
                                                   "plaquette_pair:re_re"], [4] * 4 + [8], 2,
                             order=2)


@pytest.mark.slow
def test_nlo_map_log_weights_fall_like_beta_cubed():
    """The spread of the log-weights log w = -S(F(z)) + log J of a map that is exact to order
    beta^k falls like beta^(k+1) at small beta: LO and the single-plaquette NLO projection
    like beta^2, the full NLO map like beta^3 (2D SU(3), 4x4, the same latent batch at
    beta = 0.6 and 0.3)."""
    N, shape = 3, (4, 4)
    z = GradientFlow(shape, N, NP).draw_latent(RandomStreams(4, 64, NP))
    loops_sp = ("plaquette", "plaquette:re_tr2", "plaquette:re_tr_sq", "plaquette:abs_tr_sq")
    loops_full = loops_sp + ("rectangle",) + tuple(f"plaquette_pair:{g}" for g in PAIRS[3])
    cases = {"lo": (loops_sp, 1), "sp": (loops_sp, 2), "full": (loops_full, 2)}
    slopes = {}
    for key, (loops, order) in cases.items():
        sd = []
        for beta in (0.6, 0.3):
            act = GaugeAction(beta, N)
            f = luscher_flow(act, shape, NP, loops=loops, n_t=2, n_steps=8, order=order)
            U, lj = f.forward(z)
            lw = -to_numpy(act.action(U)) + to_numpy(lj)
            sd.append(np.std(lw))
        slopes[key] = float(np.log2(sd[0] / sd[1]))
    assert abs(slopes["lo"] - 2) < 0.3 and abs(slopes["sp"] - 2) < 0.3, slopes
    assert abs(slopes["full"] - 3) < 0.3, slopes
