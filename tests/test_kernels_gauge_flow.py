"""Numba kernels of the gradient flows' vector field (kernels/gauge_flow.py): stout_generator and
stout_generator_pullback equal to the array-API reference to float64 round-off for several loop
sets (plaquette, rectangle, chair, Polyakov lines, a custom 2x2 square), U(1), SU(2), SU(3),
D = 2 and 4, batch > 1, scalar and per-direction weights, staples kept or recomputed; the kernel
pull-back against central finite differences in a random direction moving every link and for
every weight; what the kernels refuse (array-api-strict, complex64, per-site weights) takes the
reference; a gradient-flow training gradient is the same with and without kernels."""

import numpy as np
import pytest

from lattice_ml.backend import RandomStreams, namespace_by_name
from lattice_ml.dispatch import kernel_mode, selected, trace
from lattice_ml.groups import expm_algebra, haar_random, random_algebra
from lattice_ml.smearing.loop_sets import custom_loops, polyakov_loops
from lattice_ml.smearing.stout import stout_generator, stout_generator_pullback

NP = namespace_by_name("numpy")
GEN = "cpu:stout_generator_loops"
PULL = "cpu:stout_generator_pullback_loops"
SQUARE_2x2 = [(0, 1), (0, 1), (1, 1), (1, 1), (0, -1), (0, -1), (1, -1), (1, -1)]

CASES = [  # N, shape, loops
    (3, (4, 3), ["plaquette", "rectangle", polyakov_loops(4, 2, 0), polyakov_loops(3, 2, 1)]),
    (3, (4, 4), ["plaquette", custom_loops([SQUARE_2x2], 2)]),
    (1, (3, 4), ["plaquette", "rectangle"]),
    (2, (2, 3, 2, 3), ["plaquette", "chair", "rectangle"]),
    (3, (2, 2, 3, 2), ["plaquette", "chair"]),
]


def fields(N, shape, batch=2, seed=1):
    D = len(shape)
    U = haar_random(RandomStreams(seed, batch, NP), (D, *shape), N)
    K = random_algebra(RandomStreams(seed + 1, batch, NP), (D, *shape), N)
    return U, K


def weights(n, D, per_direction=True):
    rho = [np.asarray(0.05 * (k + 1)) for k in range(n)]
    if per_direction:
        rho[0] = np.linspace(0.1, 0.3, D)
    return rho


@pytest.mark.parametrize("N,shape,loops", CASES)
def test_kernels_equal_the_reference(N, shape, loops):
    D = len(shape)
    U, K = fields(N, shape)
    rho = weights(len(loops), D)
    with trace() as log:
        Q1, S1 = stout_generator(U, rho, loops)
        G1, g1 = stout_generator_pullback(U, rho, K, loops, S1)
        G2, g2 = stout_generator_pullback(U, rho, K, loops)          # staples recomputed
        Q2, _ = stout_generator(U, rho, loops, S1)                   # staples reused
    assert [impl for _, impl in log] == [GEN, PULL, PULL, GEN]
    Q0, S0 = stout_generator.reference(U, rho, loops)
    G0, g0 = stout_generator_pullback.reference(U, rho, K, loops)
    scale = float(np.max(np.abs(G0)))
    assert scale > 0.1
    for a in (Q1, Q2):
        assert np.max(np.abs(a - Q0)) < 1e-14
    for G in (G1, G2):
        assert np.max(np.abs(G - G0)) < 1e-13 * scale
    for mu in range(D):
        for k in range(len(loops)):
            assert (S1[mu][k] is None) == (S0[mu][k] is None)
            if S0[mu][k] is not None:
                assert np.max(np.abs(S1[mu][k] - S0[mu][k])) < 1e-13
    for g in (g1, g2):
        for a, b in zip(g, g0):
            assert np.shape(a) == np.shape(b)
            assert np.max(np.abs(a - b)) < 1e-12 * (1 + np.max(np.abs(b)))
    # the reference reads the kernel's packed staples, the kernel the reference's lists
    Gx, _ = stout_generator_pullback.reference(U, rho, K, loops, S1)
    assert np.max(np.abs(Gx - G0)) < 1e-13 * scale
    Gy, _ = stout_generator_pullback(U, rho, K, loops, S0)
    assert np.max(np.abs(Gy - G0)) < 1e-13 * scale


def _loss(U, rho, K, loops):
    Q, _ = stout_generator(U, rho, loops)
    return -2.0 * float(np.sum(np.real(np.trace(Q @ K, axis1=-2, axis2=-1))))


@pytest.mark.parametrize("N,shape,loops", [CASES[0], CASES[2], CASES[3]])
def test_kernel_pullback_matches_finite_differences(N, shape, loops):
    """L = -2 sum Re Tr(Q K): dL/ds along exp(s X) on every link is sum_a x_a (dL/ds_a) =
    -2 Re sum Tr(X G); and dL/drho_k for every weight."""
    D = len(shape)
    U, K = fields(N, shape, seed=3)
    rho = weights(len(loops), D, per_direction=False)
    with trace() as log:
        G, g = stout_generator_pullback(U, rho, K, loops)
    assert log[-1][1] == PULL
    X = random_algebra(RandomStreams(7, U.shape[0], NP), (D, *shape), N)
    h = 1e-4
    fd = (_loss(expm_algebra(h * X) @ U, rho, K, loops)
          - _loss(expm_algebra(-h * X) @ U, rho, K, loops)) / (2 * h)
    pred = -2.0 * float(np.sum(np.real(np.trace(X @ G, axis1=-2, axis2=-1))))
    assert abs(pred) > 1e-2
    assert abs(fd - pred) < 1e-6 * abs(pred)
    for k in range(len(loops)):
        up = [np.asarray(r + (h if i == k else 0.0)) for i, r in enumerate(rho)]
        dn = [np.asarray(r - (h if i == k else 0.0)) for i, r in enumerate(rho)]
        fdk = (_loss(U, up, K, loops) - _loss(U, dn, K, loops)) / (2 * h)
        assert abs(fdk - float(g[k])) < 1e-7 * (1 + abs(fdk))


def test_what_the_kernels_refuse_takes_the_reference():
    import array_api_strict as xps
    N, shape, loops = CASES[0]
    U, K = fields(N, shape)
    rho = weights(len(loops), 2)
    assert selected("stout_generator", U, rho, loops) == GEN
    assert selected("stout_generator_pullback", U, rho, K, loops) == PULL
    # complex64 links, a per-site weight, strict arrays, kernels off
    assert selected("stout_generator", U.astype(np.complex64), rho, loops) == "reference"
    site = [np.full((2, *shape), 0.1)] + rho[1:]
    assert selected("stout_generator", U, site, loops) == "reference"
    Us, Ks = xps.asarray(U), xps.asarray(K)
    assert selected("stout_generator", Us, [0.1] * len(loops), loops) == "reference"
    assert selected("stout_generator_pullback", Us, [0.1] * len(loops), Ks, loops) == "reference"
    with kernel_mode("off"):
        assert selected("stout_generator", U, rho, loops) == "reference"
    # a loop set not closed on the lattice: the reference raises its error
    with pytest.raises(ValueError, match="not closed"):
        stout_generator(U, [0.1], [polyakov_loops(3, 2, 0)])
    # strict arrays give the NumPy result through the reference
    Qs, _ = stout_generator(Us, [xps.asarray(float(r)) for r in weights(len(loops), 2, False)],
                            loops)
    Qn, _ = stout_generator(U, weights(len(loops), 2, False), loops)
    assert np.max(np.abs(np.asarray(Qs) - Qn)) < 1e-14


def test_gradient_flow_gradients_are_the_same_with_and_without_kernels():
    from lattice_ml.flows.gradient_flow import GradientFlow
    shape = (4, 4)
    flow = GradientFlow(shape, 3, NP, loops=("plaquette", "rectangle", "polyakov"), n_t=2,
                        n_steps=2, theta=0.3 * np.random.default_rng(0).standard_normal((4, 2)))
    z, gU = fields(3, shape, batch=2, seed=11)
    glogJ = np.array([0.7, -1.3])
    out = {}
    for mode in ("auto", "off"):
        with kernel_mode(mode), trace() as log:
            U, logJ, cache = flow.forward_cache(z)
            gz, gp = flow.vjp(cache, gU, glogJ)
        assert (PULL in {i for _, i in log}) == (mode == "auto")
        out[mode] = (U, logJ, gz, gp["theta"])
    for a, b in zip(out["auto"], out["off"]):
        assert np.max(np.abs(a - b)) < 1e-12 * (1 + np.max(np.abs(b)))


@pytest.mark.parametrize("backend", ["numpy", "array_api_strict"])
def test_stage_memory_gradients_equal_stored_state_ones(backend):
    """memory="stages" keeps every stage for the backward pass: the same vjp as "states"."""
    from lattice_ml.flows.gradient_flow import GradientFlow
    xp = namespace_by_name(backend)
    theta = 0.3 * np.random.default_rng(1).standard_normal((2, 2))
    z, gU = fields(2, (4, 3), batch=2, seed=5)
    z, gU = xp.asarray(z), xp.asarray(gU)
    glogJ = xp.asarray(np.array([0.4, -0.9]))
    out = []
    for memory in ("states", "stages"):
        flow = GradientFlow((4, 3), 2, xp, loops=("plaquette", "rectangle"), n_t=2, n_steps=3,
                            theta=theta, memory=memory)
        U, logJ, cache = flow.forward_cache(z)
        assert (cache["stages"] is not None) == (memory == "stages")
        gz, gp = flow.vjp(cache, gU, glogJ)
        out.append([np.asarray(a) for a in (U, logJ, gz, gp["theta"])])
    for a, b in zip(*out):
        assert np.max(np.abs(a - b)) < 1e-13 * (1 + np.max(np.abs(b)))


def test_contractible_su3_loops_run_loop_by_loop():
    """The loop table holds each contractible loop once per site (n paths per class), winding
    loops stay in the path table."""
    from lattice_ml.kernels.gauge_flow import _tables
    from lattice_ml.smearing.loop_sets import resolve_loops
    N, shape, loops = CASES[0]
    paths, ltab = _tables(tuple(resolve_loops(loops, 2)), shape, True)
    # plaquette: 1 loop per site, rectangles 2 (1x2 and 2x1); Polyakov lines: path table
    assert sorted(ltab[0].tolist()) == [0, 1, 1]
    assert set(paths[0].tolist()) == {2, 3}
