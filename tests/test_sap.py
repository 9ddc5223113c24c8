"""Schwarz alternating procedure (lattice_ml.fermions.sap): the Dirichlet block operators equal
the dense restriction of D to each block and act only within blocks, SAP with exact block
solves equals the two-colour Schwarz product formula computed densely, gauge covariance, batch
entries smoothed independently, FGMRES with the multigrid and a SAP smoother (and SAP-smoothed
near-null vectors) reaching 1e-10 on the true residual; NumPy and array-api-strict (CuPy where
usable)."""

import numpy as np
import pytest

from lattice_ml.backend import RandomStreams, to_numpy
from lattice_ml.fermions import WilsonDirac
from lattice_ml.fermions.multigrid import TwoLevelMultigrid
from lattice_ml.fermions.sap import SchwarzSmoother
from lattice_ml.fermions.solvers import fgmres
from lattice_ml.groups import gauge_transform, haar_random, random_gauge_transformation

# (D, N, sites, block, csw, batch)
CASES = [(2, 1, (4, 4), (2, 2), 0.0, 1), (2, 2, (4, 8), (2, 2), 1.0, 2),
         (4, 3, (2, 2, 2, 4), (1, 1, 1, 2), 1.0, 1)]


def wilson(xp, D, N, sites, csw, batch=1, mass=0.1, seed=1):
    U = haar_random(RandomStreams(seed=seed, n_chains=batch, xp=xp), (D,) + tuple(sites), N)
    return WilsonDirac(U, mass=mass, csw=csw)


def dense(f, xp, shape, batch):
    """[batch, n, n] of a (linear) map on fields [batch, *shape]."""
    n = int(np.prod(shape))
    e = np.eye(n, dtype=complex)
    if batch == 1:                                   # all columns as one batch of fields
        return to_numpy(f(xp.asarray(e.reshape((n,) + shape)))).reshape(1, n, n).swapaxes(1, 2)
    cols = [to_numpy(f(xp.asarray(np.broadcast_to(e[j].reshape((1,) + shape),
                                                  (batch,) + shape)))).reshape(batch, -1)
            for j in range(n)]
    return np.stack(cols, axis=-1)


def block_indices(sap, W):
    """``[n_blocks, n_b]`` full-lattice indices of every block's dof in the blocked order, and
    the colour of each block."""
    bl = sap.blocking
    idx = np.arange(int(np.prod(W.sites)) * W.n_spin * W.N).reshape(
        (1,) + tuple(W.sites) + (W.n_spin, W.N))
    I = bl.to_blocks(idx).reshape(-1, bl.block_dof)
    colour = np.indices(bl.coarse).sum(axis=0).reshape(-1) % 2
    return I, colour


@pytest.mark.parametrize("D,N,sites,block,csw,batch", CASES)
def test_block_operators_are_dense_restrictions(xp, D, N, sites, block, csw, batch):
    """dense_blocks() is D[I_B, I_B] of the dense D for every block; the block operator of a
    field supported on one block, and its MR block solve, vanish outside that block."""
    W = wilson(xp, D, N, sites, csw, batch=batch)
    sap = SchwarzSmoother(W, block, n_mr=3)
    fs = tuple(sites) + (W.n_spin, N)
    Dd = dense(W.apply, xp, fs, batch)
    I, colour = block_indices(sap, W)
    Db = to_numpy(sap.dense_blocks()).reshape((batch, len(I)) + (I.shape[1],) * 2)
    for b in range(batch):
        for k, Ik in enumerate(I):
            np.testing.assert_allclose(Db[b, k], Dd[b][np.ix_(Ik, Ik)], atol=1e-13)
    # a random field on one block of each colour: D_c and the block solve stay on it
    rng = np.random.default_rng(5)
    for k in (0, int(np.argmax(colour == 1))):
        v = np.zeros((batch, Dd.shape[-1]), dtype=complex)
        v[:, I[k]] = rng.standard_normal((batch, I.shape[1])) + 1j * rng.standard_normal(
            (batch, I.shape[1]))
        f = xp.asarray(v.reshape((batch,) + fs))
        outside = np.ones(Dd.shape[-1], dtype=bool)
        outside[I[k]] = False
        for out in (sap.block_operator(f, int(colour[k])), sap.block_solve(f, int(colour[k]))):
            o = to_numpy(out).reshape(batch, -1)
            assert np.abs(o[:, outside]).max() == 0.0
            assert np.abs(o[:, I[k]]).max() > 0.1
        # and the block of the other colour sees nothing of it
        assert np.abs(to_numpy(sap.block_operator(f, 1 - int(colour[k])))).max() == 0.0


@pytest.mark.parametrize("n_cycles", [1, 2])
@pytest.mark.parametrize("D,N,sites,block,csw,batch", CASES[:2])
def test_exact_sap_is_the_schwarz_product(xp, D, N, sites, block, csw, batch, n_cycles):
    """With exact block solves S = (1 - E^n) D^-1, E = (1 - K_1 D)(1 - K_0 D),
    K_c = sum_{B of colour c} I_B D_B^-1 I_B^T, all from the dense D."""
    W = wilson(xp, D, N, sites, csw, batch=batch, mass=0.05)
    sap = SchwarzSmoother(W, block, n_cycles=n_cycles, block_solver="exact")
    fs = tuple(sites) + (W.n_spin, N)
    Dd = dense(W.apply, xp, fs, batch)
    Sd = dense(sap, xp, fs, batch)
    I, colour = block_indices(sap, W)
    n = Dd.shape[-1]
    for b in range(batch):
        K = [np.zeros((n, n), dtype=complex) for _ in (0, 1)]
        for Ik, c in zip(I, colour):
            K[c][np.ix_(Ik, Ik)] = np.linalg.inv(Dd[b][np.ix_(Ik, Ik)])
        one = np.eye(n)
        E = (one - K[1] @ Dd[b]) @ (one - K[0] @ Dd[b])
        want = (one - np.linalg.matrix_power(E, n_cycles)) @ np.linalg.inv(Dd[b])
        np.testing.assert_allclose(Sd[b], want, atol=1e-11)
        assert np.linalg.norm(E, 2) > 0.05           # a non-trivial error propagator
    assert sap.applications == 4 * n_cycles - 1


@pytest.mark.parametrize("solver", ["mr", "exact"])
@pytest.mark.parametrize("D,N,sites,block,csw,batch", [CASES[1], CASES[2]])
def test_sap_gauge_covariant(xp, D, N, sites, block, csw, batch, solver):
    """S[U^g](g r) = g S[U](r) to round-off (MR block solves are nonlinear in r: covariant too)."""
    W = wilson(xp, D, N, sites, csw, batch=batch)
    g = random_gauge_transformation(RandomStreams(seed=9, n_chains=batch, xp=xp), sites, N)
    Wg = WilsonDirac(gauge_transform(W.U, g), mass=W.mass, csw=csw)
    r = RandomStreams(seed=4, n_chains=batch, xp=xp).complex_normal(tuple(sites) + (W.n_spin, N))

    def gmul(phi):
        return xp.matrix_transpose(g @ xp.matrix_transpose(phi))

    kw = dict(n_cycles=2, n_mr=3, block_solver=solver)
    out = SchwarzSmoother(W, block, **kw)(r)
    out_g = SchwarzSmoother(Wg, block, **kw)(gmul(r))
    err = np.abs(to_numpy(out_g) - to_numpy(gmul(out))).max()
    assert err < 1e-12 * np.abs(to_numpy(out)).max(), err


def test_mr_sap_batch_entries_and_cycles(xp):
    """Each batch entry is smoothed as on its own (per-block step lengths per entry), and more
    cycles reduce the residual r - D S r."""
    W = wilson(xp, 2, 1, (8, 8), 0.0, mass=0.05, seed=2)
    r = RandomStreams(seed=4, n_chains=3, xp=xp).complex_normal((8, 8, 2, 1))
    sap = SchwarzSmoother(W, (2, 4), n_mr=3)
    both = to_numpy(sap(r))
    for k in range(3):
        np.testing.assert_allclose(both[k:k + 1], to_numpy(sap(r[k:k + 1, ...])), atol=1e-13)
    res = []
    for n in (1, 2, 4):
        y = SchwarzSmoother(W, (2, 4), n_cycles=n, n_mr=3)(r)
        res.append(float(np.linalg.norm(to_numpy(r - W.apply(y)))))
    assert res[0] < 0.7 * float(np.linalg.norm(to_numpy(r))) and res[2] < res[1] < res[0], res


@pytest.mark.parametrize("null_solver", ["bicgstab", "sap"])
def test_multigrid_with_sap_in_fgmres(xp, null_solver):
    """16x16 U(1) Haar links at m = -0.08 (the multigrid test's system): FGMRES with the
    two-level multigrid and a SAP smoother reaches 1e-10 on the true residual in under a
    third of the unpreconditioned GMRES(30) steps, also with SAP-smoothed near-null vectors."""
    W = wilson(xp, 2, 1, (16, 16), 0.0, mass=-0.08, seed=3)
    b = RandomStreams(seed=4, n_chains=2, xp=xp).complex_normal((16, 16, 2, 1))
    _, plain = fgmres(W.apply, b, restart=30)
    mg = TwoLevelMultigrid(W, (4, 4), n_vec=4, smoother="sap", sap_cycles=1, sap_mr=3,
                           null_solver=null_solver)
    assert isinstance(mg.smoother, SchwarzSmoother)
    x, info = fgmres(W.apply, b, M=mg, restart=30)
    r = to_numpy(b - W.apply(x)).reshape(2, -1)
    assert np.all(np.linalg.norm(r, axis=1) <= 1e-10 * np.linalg.norm(
        to_numpy(b).reshape(2, -1), axis=1))
    assert np.all(info.iterations * 3 < plain.iterations), (info.iterations, plain.iterations)


def test_sap_errors(xp_cpu):
    W = wilson(xp_cpu, 2, 1, (4, 6), 0.0)
    with pytest.raises(ValueError, match="even number of blocks"):
        SchwarzSmoother(W, (2, 2))                   # 2 x 3 blocks
    with pytest.raises(ValueError, match="tile"):
        SchwarzSmoother(W, (3, 3))
    with pytest.raises(ValueError, match="block_solver"):
        SchwarzSmoother(W, (2, 3), block_solver="lu")
    with pytest.raises(ValueError, match="n_cycles"):
        SchwarzSmoother(W, (2, 3), n_cycles=0)
    with pytest.raises(ValueError, match="null_solver"):
        TwoLevelMultigrid(W, (2, 3), n_vec=1, null_solver="sap")
    with pytest.raises(ValueError, match="smoother"):
        TwoLevelMultigrid(W, (2, 3), n_vec=1, smoother="jacobi")
