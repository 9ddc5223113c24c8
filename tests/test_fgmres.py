"""Flexible GMRES (lattice_ml.fermions.solvers.fgmres): dense non-normal systems against
numpy.linalg.solve, batch independence, restarts, lucky breakdown, convergence to tolerance with
any fixed preconditioner (random dense, random PTC network, exact inverse) and with one that
changes from call to call, failures; on NumPy and array-api-strict (CuPy where usable)."""

import numpy as np
import pytest

from lattice_ml.backend import RandomStreams, to_numpy
from lattice_ml.fermions import WilsonDirac
from lattice_ml.fermions.ptc import PTCNetwork
from lattice_ml.fermions.solvers import SolverError, bicgstab, fgmres
from lattice_ml.groups import haar_random


def dense_nonnormal(n, nb, shift, seed, complex_=True):
    rng = np.random.default_rng(seed)
    M = rng.normal(size=(nb, n, n))
    if complex_:
        M = M + 1j * rng.normal(size=(nb, n, n))
    return M / np.sqrt(n) + shift * np.eye(n)


def op(xp, M_host):
    M = xp.asarray(M_host)
    return lambda v: (M @ v[..., None])[..., 0]


def rhs(shape, seed, complex_=True):
    rng = np.random.default_rng(seed)
    b = rng.normal(size=shape)
    return b + 1j * rng.normal(size=shape) if complex_ else b


def true_rel(A, x, b):
    r = to_numpy(b - A(x)).reshape(b.shape[0], -1)
    return np.linalg.norm(r, axis=1) / np.linalg.norm(to_numpy(b).reshape(b.shape[0], -1), axis=1)


@pytest.mark.parametrize("complex_", [True, False])
def test_dense_batch_against_solve(xp, complex_):
    """Shifted random non-normal matrices (eigenvalues in discs around 1.5 of radius ~1), GMRES(8)
    with restarts: true residual <= tol and the solution of numpy.linalg.solve."""
    n, nb = 40, 3
    M = dense_nonnormal(n, nb, 1.5, 1, complex_)
    b_h = rhs((nb, n), 2, complex_)
    A = op(xp, M)
    x, info = fgmres(A, xp.asarray(b_h), restart=8, tol=1e-10)
    assert info.all_converged and np.all(info.residual <= 1e-10)
    assert np.all(true_rel(A, x, xp.asarray(b_h)) <= 1e-10)
    assert np.all(info.restarts >= 1)                        # 8 < the steps it needs
    x_ex = np.linalg.solve(M, b_h[..., None])[..., 0]
    np.testing.assert_allclose(to_numpy(x), x_ex, atol=1e-8)
    assert (to_numpy(x).dtype.kind == "c") == complex_


def test_batch_entries_independent(xp_cpu):
    """A batch solve gives each entry the iterations and iterates of its own solve."""
    xp = xp_cpu
    n, nb = 30, 3
    M = np.stack([dense_nonnormal(n, 1, s, 3 + k)[0] for k, s in enumerate((1.2, 2.0, 4.0))])
    b_h = rhs((nb, n), 4)
    x, info = fgmres(op(xp, M), xp.asarray(b_h), restart=10, tol=1e-10)
    assert len(set(info.iterations.tolist())) > 1              # entries really differ
    for e in range(nb):
        xe, ie = fgmres(op(xp, M[e:e + 1]), xp.asarray(b_h[e:e + 1]), restart=10, tol=1e-10)
        assert int(ie.iterations[0]) == int(info.iterations[e])
        np.testing.assert_allclose(to_numpy(xe)[0], to_numpy(x)[e], atol=1e-13)


def test_full_gmres_steps_and_lucky_breakdown(xp_cpu):
    """Unrestarted GMRES on an n x n system needs at most n steps; on a matrix with k distinct
    eigenvalues (diagonalisable) the Krylov space is exhausted after k steps (lucky breakdown)."""
    xp = xp_cpu
    n = 24
    M = dense_nonnormal(n, 1, 2.0, 5)
    x, info = fgmres(op(xp, M), xp.asarray(rhs((1, n), 6)), restart=n, tol=1e-12)
    assert info.all_converged and int(info.iterations[0]) <= n
    rng = np.random.default_rng(7)
    S = rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n))
    lam = np.repeat([1.0, 2.0 + 1j, -3.0], n // 3)
    A3 = (S * lam) @ np.linalg.inv(S)
    x, info = fgmres(op(xp, A3[None]), xp.asarray(rhs((1, n), 8)), restart=n, tol=1e-10)
    assert info.all_converged and int(info.iterations[0]) == 3
    x, info = fgmres(lambda v: v, xp.asarray(rhs((2, 5), 9)))         # A = 1: one step
    assert info.iterations.tolist() == [1, 1] and np.all(info.residual < 1e-15)


def _wilson(xp, sites=(4, 4), mass=0.1, N=1, batch=1, seed=1):
    U = haar_random(RandomStreams(seed=seed, n_chains=batch, xp=xp), (2,) + sites, N)
    return U, WilsonDirac(U, mass=mass)


@pytest.mark.parametrize("kind", ["dense", "ptc", "exact", "changing"])
def test_any_preconditioner_solves_to_tolerance(xp, kind):
    """2D U(1) Wilson on 4x4 (n = 32 unknowns): with a random dense M, an untrained PTC network
    with random weights of order one, the exact inverse, or a preconditioner that changes at every
    call (two BiCGStab steps from a random start), FGMRES reaches the tolerance on the true
    residual. Correctness never depends on M being good; with restart >= n a fixed nonsingular M
    must converge within n steps."""
    U, W = _wilson(xp)
    n = 4 * 4 * 2
    b = RandomStreams(seed=3, n_chains=2, xp=xp).complex_normal((4, 4, 2, 1))
    if kind == "dense":
        R = np.random.default_rng(10).normal(size=(n, n)) + 1j * np.random.default_rng(11).normal(
            size=(n, n))
        Rd = xp.asarray(R)

        def M(v):
            return xp.reshape(Rd @ xp.reshape(v, (v.shape[0], n, 1)), v.shape)
    elif kind == "ptc":
        M = PTCNetwork.build(2, [1, 2, 1], hops=2, xp=xp, identity=0.0, scale=1.0,
                             seed=12).operator(U)
    elif kind == "exact":
        e = np.eye(n, dtype=complex)
        Dd = np.stack([to_numpy(W.apply(xp.asarray(e[j].reshape(1, 4, 4, 2, 1)))).reshape(n)
                       for j in range(n)], axis=-1)
        Di = xp.asarray(np.linalg.inv(Dd))

        def M(v):
            return xp.reshape(Di @ xp.reshape(v, (v.shape[0], n, 1)), v.shape)
    else:
        calls = [0]

        def M(v):
            calls[0] += 1
            x0 = RandomStreams(seed=100 + calls[0], n_chains=2, xp=xp).complex_normal(
                (4, 4, 2, 1))
            x, _ = bicgstab(W.apply, v, x0=x0, maxiter=2, raise_on_failure=False)
            return x
    x, info = fgmres(W.apply, b, M=M, restart=n + 4, tol=1e-10)
    assert info.all_converged and np.all(true_rel(W.apply, x, b) <= 1e-10)
    assert info.precond_calls == int(info.iterations.max())
    if kind in ("dense", "ptc"):
        assert np.all(info.iterations <= n)
    if kind == "exact":
        assert info.iterations.tolist() == [1, 1]


def test_wilson_su2_batch_against_bicgstab(xp_cpu):
    """Two 2D SU(2) configurations at once, GMRES(16) with restarts, against BiCGStab."""
    xp = xp_cpu
    U, W = _wilson(xp, sites=(8, 8), mass=0.2, N=2, batch=2, seed=4)
    b = RandomStreams(seed=5, n_chains=2, xp=xp).complex_normal((8, 8, 2, 2))
    x, info = fgmres(W.apply, b, restart=16, tol=1e-10)
    y, _ = bicgstab(W.apply, b, tol=1e-11)
    assert info.all_converged and np.all(info.restarts >= 1)
    np.testing.assert_allclose(to_numpy(x), to_numpy(y), atol=1e-8)
    assert info.matvecs == int(info.iterations.max()) + int(info.restarts.max()) + 1


def test_failures(xp_cpu):
    xp = xp_cpu
    n = 20
    M = dense_nonnormal(n, 2, 0.0, 13)                     # indefinite: GMRES(2) stagnates
    b = xp.asarray(rhs((2, n), 14))
    with pytest.raises(SolverError, match="did not converge in 30 iterations") as ei:
        fgmres(op(xp, M), b, restart=2, maxiter=30)
    assert ei.value.entries == [0, 1]
    x, info = fgmres(op(xp, M), b, restart=2, maxiter=30, raise_on_failure=False)
    assert not info.converged.any() and info.iterations.tolist() == [30, 30]

    def bad_M(v):
        return v * float("nan")

    with pytest.raises(SolverError, match="non-finite"):
        fgmres(op(xp, dense_nonnormal(n, 2, 2.0, 15)), b, M=bad_M)
    with pytest.raises(ValueError, match="restart"):
        fgmres(op(xp, M), b, restart=0)
    bb = xp.asarray(np.where(np.arange(n) == 3, np.nan, 1.0)[None, :].repeat(2, 0))
    with pytest.raises(ValueError, match="non-finite"):
        fgmres(op(xp, M), bb)
    # b = 0 in one entry: x = 0 there, no iterations
    b0 = xp.asarray(np.stack([rhs((n,), 16), np.zeros(n)]))
    x, info = fgmres(op(xp, dense_nonnormal(n, 2, 2.0, 17)), b0)
    assert info.iterations[1] == 0 and np.all(to_numpy(x)[1] == 0) and info.all_converged


def test_trained_high_mode_preconditioner_cuts_iterations(xp_cpu):
    """A 1 -> 2 -> 1, 1-hop PTC network trained for 100 Adam steps on C = <|M D v - v|^2/|v|^2>
    (8x8 U(1), m = 0.1) needs fewer than half the GMRES(20) steps of no preconditioner."""
    from lattice_ml.fermions.ptc import train_preconditioner
    xp = xp_cpu
    U, W = _wilson(xp, sites=(8, 8), mass=0.1)
    b = RandomStreams(seed=2, n_chains=2, xp=xp).complex_normal((8, 8, 2, 1))
    _, plain = fgmres(W.apply, b, restart=20, tol=1e-10)
    net = PTCNetwork.build(2, [1, 2, 1], hops=1, xp=xp, identity=1 / 2.1, scale=1e-3)
    rec = train_preconditioner(net, U, W.apply, steps=100, lr=0.02)
    x, info = fgmres(W.apply, b, M=net.operator(U), restart=20, tol=1e-10)
    assert info.all_converged and rec.cost[-10:].mean() < 0.2 * rec.cost[0]
    assert np.all(info.iterations < 0.5 * plain.iterations), (info.iterations, plain.iterations)
