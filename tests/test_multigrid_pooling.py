"""Learned multigrid layers (lattice_ml.fermions.pooling): the block transporter against link
products, gauge covariance of pooling and unpooling (the coarse field transforms at the reference
sites) to round-off, R P = 1 after orthonormalisation and D~ = R D P with the learned transfer,
hand-written gradients of the pooling cost and of the coarse stencil network against central
differences along random directions of all weights (float64), training, and both learned layers
in the two-level preconditioner in FGMRES; NumPy and array-api-strict."""

import numpy as np
import pytest

from fd_checks import complex_direction_deviation
from lattice_ml.backend import RandomStreams, to_numpy
from lattice_ml.fermions import WilsonDirac
from lattice_ml.fermions.multigrid import TwoLevelMultigrid, near_null_vectors
from lattice_ml.fermions.pooling import (CoarseStencilNetwork, GaugePooling, block_transport,
                                         coarse_correction_cost, train_coarse_correction,
                                         train_pooling)
from lattice_ml.fermions.solvers import fgmres
from lattice_ml.groups import gauge_transform, haar_random, random_gauge_transformation

CASES = [(2, 1, (4, 6), (2, 3), 4), (2, 2, (4, 4), (2, 2), 2), (4, 3, (2, 2, 2, 4), (1, 2, 2, 2), 4)]


def links(xp, D, N, sites, seed=1, batch=1):
    return haar_random(RandomStreams(seed=seed, n_chains=batch, xp=xp), (D,) + tuple(sites), N)


def cfield(xp, shape, seed, batch):
    return RandomStreams(seed=seed, n_chains=batch, xp=xp).complex_normal(shape)


@pytest.mark.parametrize("D,N,sites,block,n_c", CASES)
def test_block_transport_is_the_link_product(xp_cpu, D, N, sites, block, n_c):
    """Q(x) = product of the links along the in-block path from the reference site, built on
    the host site by site; unitary; the identity at the reference sites."""
    xp = xp_cpu
    U = links(xp, D, N, sites)
    pool = GaugePooling(U, block, n_c)
    Q = to_numpy(block_transport(U, pool.blocking))[0]
    Uh = to_numpy(U)[0]
    for x in np.ndindex(*sites):
        ref = [(c // b) * b for c, b in zip(x, block)]
        cur, M = list(ref), np.eye(N)
        for mu in range(D):
            while cur[mu] < x[mu]:
                M = M @ Uh[(mu,) + tuple(cur)]
                cur[mu] += 1
        np.testing.assert_allclose(Q[x], M, atol=1e-14)


@pytest.mark.parametrize("D,N,sites,block,n_c", CASES)
def test_pooling_gauge_covariance_and_orthonormality(xp_cpu, D, N, sites, block, n_c):
    """U -> g U g(x+mu)^dag, phi -> g phi: (R phi)(y) -> g(r(y)) (R phi)(y) and
    P (g(r) c) = g P c, to round-off, with the same random weights; after orthonormalise
    R P = 1 and P = R^dag (dense, on the tiny lattice)."""
    xp = xp_cpu
    U = links(xp, D, N, sites, batch=2)
    g = random_gauge_transformation(RandomStreams(seed=9, n_chains=2, xp=xp), sites, N)
    pool = GaugePooling(U, block, n_c)
    pool.init_random(seed=3)
    Wt = pool.weights
    pool_g = GaugePooling(gauge_transform(U, g), block, n_c, weights=Wt)
    s = pool.n_spin
    phi = cfield(xp, tuple(sites) + (s, N), 5, 2)
    gphi = xp.matrix_transpose(g @ xp.matrix_transpose(phi))
    c = to_numpy(pool.restrict(phi)).reshape((2,) + pool.blocking.coarse + (n_c, N))
    c_g = to_numpy(pool_g.restrict(gphi)).reshape(c.shape)
    gh = to_numpy(g)
    sl = (slice(None),) + tuple(slice(None, None, b) for b in block)
    g_ref = gh[sl]                                          # [2, *coarse, N, N]
    want = np.einsum("...ab,...kb->...ka", g_ref, c)
    assert np.max(np.abs(c_g - want)) < 1e-12 * max(1.0, np.abs(c).max())
    assert np.abs(c).max() > 0.1
    cc = cfield(xp, pool.blocking.coarse + (n_c * N,), 6, 2)
    gcc = xp.asarray(np.einsum("...ab,...kb->...ka", g_ref, to_numpy(cc).reshape(c.shape))
                     .reshape(to_numpy(cc).shape))
    np.testing.assert_allclose(to_numpy(pool_g.prolong(gcc)),
                               to_numpy(xp.matrix_transpose(g @ xp.matrix_transpose(
                                   pool.prolong(cc)))), atol=1e-12)
    np.testing.assert_allclose(to_numpy(pool.restrict(pool.prolong(cc))), to_numpy(cc),
                               atol=1e-13)
    # <R phi, c> = <phi, P c>
    lhs = np.vdot(to_numpy(pool.restrict(phi)), to_numpy(cc))
    rhs = np.vdot(to_numpy(phi), to_numpy(pool.prolong(cc)))
    assert abs(lhs - rhs) < 1e-12 * abs(lhs)


@pytest.mark.parametrize("D,N,sites,block,n_c", CASES)
def test_pooling_cost_gradient_fd(xp_cpu, D, N, sites, block, n_c):
    """The pooling cost's weight gradient against a central difference along one random complex
    direction of all weights (non-orthonormal random weights, three vectors, float64)."""
    xp = xp_cpu
    U = links(xp, D, N, sites)
    pool = GaugePooling(U, block, n_c)
    rng = np.random.default_rng(2)
    sh = pool.weight_shape()
    W0 = (rng.standard_normal(sh) + 1j * rng.standard_normal(sh)) * 0.5 * to_numpy(pool.mask)
    v = cfield(xp, tuple(sites) + (pool.n_spin, N), 7, 3)
    pool.set_weights(xp.asarray(W0))
    _, G = pool.cost(v)

    def cost(ps):
        pool.set_weights(xp.asarray(ps[0]))
        return pool.cost(v, need_grad=False)[0]
    dev = complex_direction_deviation(cost, [W0], [to_numpy(G)])
    assert dev < 1e-7, dev


@pytest.mark.parametrize("n_layers", [1, 2])
def test_coarse_network_gradient_fd(xp_cpu, n_layers):
    """Weight and input gradients of the coarse stencil network (2D and 4D coarse lattices,
    weights of batch 1 shared by a batch of 3) against central differences along random
    directions of all weights of all layers and all input entries."""
    xp = xp_cpu
    for D, coarse, n in ((2, (2, 3), 3), (4, (2, 1, 2, 2), 2)):
        rng = np.random.default_rng(4 + D)
        sh = (1,) + coarse + (n, n)
        host = [[rng.standard_normal(sh) + 1j * rng.standard_normal(sh)
                 for _ in range(1 + 2 * D)] for _ in range(n_layers)]
        net = CoarseStencilNetwork([[xp.asarray(a) for a in w] for w in host])
        c = cfield(xp, coarse + (n,), 8, 3)
        target = cfield(xp, coarse + (n,), 9, 3)

        def C_of(out):
            return float(np.sum(np.abs(to_numpy(out - target)) ** 2))
        out, ins = net.forward(c)
        grads, gin = net.backward(ins, 2 * (out - target), need_input=True)
        flat_h = [a for w in host for a in w]

        def cost(ps):
            k, ws = 0, []
            for w in host:
                ws.append([xp.asarray(p) for p in ps[k:k + len(w)]])
                k += len(w)
            return C_of(CoarseStencilNetwork(ws)(c))
        dev = complex_direction_deviation(cost, flat_h, [to_numpy(a) for w in grads for a in w])
        assert dev < 1e-7, dev
        dev_in = complex_direction_deviation(lambda ps: C_of(net(xp.asarray(ps[0]))),
                                             [to_numpy(c)], [to_numpy(gin)], seed=3)
        assert dev_in < 1e-7, dev_in


def test_learned_transfer_and_coarse_correction_in_fgmres(xp_cpu):
    """16x16 U(1) at m = -0.08 (the system of test_multigrid): pooling trained from random
    weights on 8 near-null vectors into 8 channels (4 per chirality) lowers its cost below a
    tenth, gives D~ = R D P (random coarse fields) and a two-level preconditioner reaching 1e-10
    in under a third of the unpreconditioned GMRES(30) steps; the coarse stencil network
    trained on that D~ lowers its cost and, in place of the direct coarse solve, still reaches
    1e-10 (correctness never depends on training) in fewer steps than the smoother alone; as the
    preconditioner of an inexact coarse FGMRES it cuts the coarse steps."""
    xp = xp_cpu
    U = links(xp, 2, 1, (16, 16), seed=3)
    W = WilsonDirac(U, mass=-0.08)
    vecs = near_null_vectors(W, 8, n_iter=3, inner_iter=20)
    pool = GaugePooling(U, (4, 4), 8)
    pool.init_random(seed=1)
    rec = train_pooling(pool, vecs, steps=150, lr=0.05)
    assert rec.extra["final_cost"] < 0.1 * rec.cost[0], (rec.cost[0], rec.extra)
    mg = TwoLevelMultigrid(W, (4, 4), transfer=pool)
    c = cfield(xp, mg.blocking.coarse + (mg.n_c,), 5, 2)
    p = mg.prolong(c)
    np.testing.assert_allclose(to_numpy(mg.restrict(p)), to_numpy(c), atol=1e-13)
    np.testing.assert_allclose(to_numpy(mg.coarse_op.apply(c)), to_numpy(mg.restrict(W.apply(p))),
                               atol=1e-12)
    b = cfield(xp, (16, 16, 2, 1), 4, 1)
    _, plain = fgmres(W.apply, b, restart=30)
    x, info = fgmres(W.apply, b, M=mg, restart=30)
    assert info.all_converged and info.iterations[0] * 3 < plain.iterations[0]
    net = CoarseStencilNetwork.from_coarse_operator(mg.coarse_op, n_layers=2)
    c0, _ = coarse_correction_cost(net, mg.coarse_op.apply, c, need_grad=False)
    rc = train_coarse_correction(net, mg.coarse_op.apply, steps=60, lr=0.01)
    c1, _ = coarse_correction_cost(net, mg.coarse_op.apply, c, need_grad=False)
    assert c1 < 0.8 * c0 and rc.cost[-1] < rc.cost[0], (c0, c1)
    mg.set_coarse_solver(net)
    x, learned = fgmres(W.apply, b, M=mg, restart=30)
    r = to_numpy(b - W.apply(x))
    assert learned.all_converged and np.linalg.norm(r) <= 1e-10 * np.linalg.norm(to_numpy(b))
    smooth_only = lambda v: mg.smoother(v)  # noqa: E731
    _, sm = fgmres(W.apply, b, M=smooth_only, restart=30)
    assert learned.iterations[0] < sm.iterations[0], (learned.iterations, sm.iterations)
    # the trained network as the preconditioner of the coarse FGMRES: fewer coarse steps
    coarse_its = []
    for pre in (None, net):
        mg.set_coarse_solver("gmres", precond=pre)
        mg.coarse_iterations = 0
        _, inf = fgmres(W.apply, b, M=mg, restart=30)
        assert inf.all_converged
        coarse_its.append(mg.coarse_iterations)
    assert coarse_its[1] < coarse_its[0], coarse_its


def test_pooling_errors(xp_cpu):
    xp = xp_cpu
    U = links(xp, 2, 1, (4, 4))
    with pytest.raises(ValueError, match="even"):
        GaugePooling(U, (2, 2), 3)
    with pytest.raises(ValueError, match="n_c = 10 exceeds"):
        GaugePooling(U, (2, 2), 10)
    pool = GaugePooling(U, (2, 2), 2)
    with pytest.raises(ValueError, match="weights have shape"):
        pool.set_weights(xp.zeros((1, 2, 2, 8, 3), dtype=xp.complex128))
    W = WilsonDirac(U, mass=0.1)
    pool.init_random()
    with pytest.raises(ValueError, match="transfer"):
        TwoLevelMultigrid(W, (2, 2), transfer=pool, n_adapt=1)
    with pytest.raises(ValueError, match="coarse_solver"):
        TwoLevelMultigrid(W, (2, 2), n_vec=1, coarse_solver="lu")
