"""Krylov solvers (lattice_ml.fermions.solvers): CG, CGNR/CGNE, BiCGStab, multi-shift CG and
mixed-precision CG, batch-aware, on NumPy and array-api-strict (and CuPy where usable).

The operators are built here with known spectra: dense batched hermitian positive-definite
matrices ``Q diag(lambda) Q^H`` with a chosen condition number per batch entry, and the 2D lattice
Laplacian plus mass (eigenvalues ``m^2 + phat^2`` known exactly), applied with
``lattice_ml.lattice.shift``. Host NumPy is used only for building operators and for reference
solutions.
"""

import math

import numpy as np
import pytest

from lattice_ml.backend import to_numpy
from lattice_ml.fermions.solvers import (SolverError, bicgstab, cg, cg_mixed, cgne, multishift_cg,
                                        norm2, vdot)
from lattice_ml.lattice import shift


# ----------------------------------------------------------------------------------------------
# operators
# ----------------------------------------------------------------------------------------------
def hpd_matrices(n, kappas, seed=0, spacing="linear"):
    """Batch of complex hermitian positive-definite n x n matrices, entry b with eigenvalues in
    [1, kappas[b]] (linear or geometric spacing), random unitary eigenvectors."""
    rng = np.random.default_rng(seed)
    out = []
    for kappa in kappas:
        z = rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n))
        q, _ = np.linalg.qr(z)
        if spacing == "linear":
            lam = np.linspace(1.0, kappa, n)
        else:
            lam = np.geomspace(1.0, kappa, n)
        out.append((q * lam) @ q.conj().T)
    return np.stack(out)


def dense_op(xp, M_host, dtype=None):
    M = xp.asarray(M_host if dtype is None else M_host.astype(dtype))

    def A(x):
        return xp.matmul(M, x[..., None])[..., 0]

    return A


def laplacian_op(xp, masses, D=2, antiperiodic=False):
    """A phi = (m_b^2 + 2D) phi - sum_mu [phi(x+mu) + phi(x-mu)] on [batch, *sites, ...] fields;
    masses per batch entry."""
    m2_host = np.asarray(masses, dtype=np.float64) ** 2

    def A(phi):
        m2 = xp.asarray(m2_host, dtype=xp.float32 if phi.dtype in (xp.float32, xp.complex64)
                        else xp.float64)
        m2 = xp.reshape(m2, (m2.shape[0],) + (1,) * (phi.ndim - 1))
        out = (m2 + 2.0 * D) * phi
        for mu in range(D):
            out = out - shift(phi, mu, +1) - shift(phi, mu, -1)
        return out

    return A


def convection_diffusion_ops(xp, L, masses, seed, c_max=0.8):
    """Non-normal 2D convection-diffusion operator with site-dependent convection c_mu(x):
    A phi(x) = (4 + m_b^2) phi(x) - sum_mu [(1 - c_mu(x)) phi(x + mu) + (1 + c_mu(x)) phi(x - mu)],
    and its adjoint. Returns (A, A_dagger, host coefficients)."""
    rng = np.random.default_rng(seed)
    nb = len(masses)
    c_h = rng.uniform(-c_max, c_max, size=(2, nb, L, L))
    m2_h = (np.asarray(masses) ** 2)[:, None, None]

    def coeffs(phi):
        c = xp.asarray(c_h, dtype=xp.float64)
        m2 = xp.asarray(m2_h, dtype=xp.float64)
        return c, m2

    def A(phi):
        c, m2 = coeffs(phi)
        out = (4.0 + m2) * phi
        for mu in range(2):
            out = out - (1.0 - c[mu, ...]) * shift(phi, mu, +1) - (1.0 + c[mu, ...]) * shift(phi, mu, -1)
        return out

    def A_dag(phi):
        c, m2 = coeffs(phi)
        out = (4.0 + m2) * phi
        for mu in range(2):
            out = out - shift((1.0 - c[mu, ...]) * phi, mu, -1) - shift((1.0 + c[mu, ...]) * phi, mu, +1)
        return out

    return A, A_dag


def dense_of(A, xp, nb, shape, dtype=complex):
    """Dense [batch, n, n] matrices of a batched operator on fields [batch, *shape]."""
    n = int(np.prod(shape))
    cols = []
    for j in range(n):
        e = np.zeros((nb, n), dtype=dtype)
        e[:, j] = 1.0
        cols.append(to_numpy(A(xp.asarray(e.reshape((nb,) + tuple(shape))))).reshape(nb, n))
    return np.stack(cols, axis=-1)


def random_complex(shape, seed):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape) + 1j * rng.normal(size=shape)


def cg_bound(kappa, tol):
    """Smallest k with 2 sqrt(kappa) q^k <= tol, q = (sqrt(kappa)-1)/(sqrt(kappa)+1): the
    Chebyshev bound on ||r_k|| / ||r_0|| for CG (from ||e_k||_A <= 2 q^k ||e_0||_A)."""
    s = math.sqrt(kappa)
    q = (s - 1.0) / (s + 1.0)
    return math.ceil(math.log(tol / (2.0 * s)) / math.log(q))


def true_rel(A, x, b):
    return np.sqrt(to_numpy(norm2(b - A(x))) / to_numpy(norm2(b)))


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def test_vdot_norm2_per_entry(xp):
    a_h = random_complex((3, 4, 5), 1)
    b_h = random_complex((3, 4, 5), 2)
    a, b = xp.asarray(a_h), xp.asarray(b_h)
    np.testing.assert_allclose(to_numpy(vdot(a, b)),
                               [np.vdot(a_h[i], b_h[i]) for i in range(3)], rtol=1e-13)
    np.testing.assert_allclose(to_numpy(norm2(a)),
                               [np.vdot(a_h[i], a_h[i]).real for i in range(3)], rtol=1e-13)
    r = xp.asarray(a_h.real)
    np.testing.assert_allclose(to_numpy(norm2(r)), (a_h.real ** 2).sum(axis=(1, 2)), rtol=1e-13)


# ----------------------------------------------------------------------------------------------
# CG
# ----------------------------------------------------------------------------------------------
def test_cg_dense_batch_converges(xp):
    kappas = [10.0, 100.0, 1000.0]
    M = hpd_matrices(60, kappas, seed=3)
    A = dense_op(xp, M)
    b_h = random_complex((3, 60), 4)
    b = xp.asarray(b_h)
    tol = 1e-10
    x, info = cg(A, b, tol=tol)
    assert info.all_converged
    assert x.dtype == b.dtype and tuple(x.shape) == (3, 60)
    rel = true_rel(A, x, b)
    np.testing.assert_allclose(info.residual, rel, rtol=1e-6)
    assert np.all(rel <= tol * (1 + 1e-12))
    # different condition numbers -> different iteration counts, in order
    assert info.iterations[0] < info.iterations[1] < info.iterations[2]
    assert info.history.shape == (int(info.iterations.max()), 3)
    # each entry's history ends where it stopped and stays frozen after that
    for e in range(3):
        h = info.history[:, e]
        k = info.iterations[e]
        assert h[k - 1] <= tol and np.all(h[k - 1:] == h[k - 1])
        assert np.all(h[: k - 1] > tol)
    # solution error bounded by kappa * residual
    x_ex = np.linalg.solve(M, b_h[..., None])[..., 0]
    err = np.linalg.norm(to_numpy(x) - x_ex, axis=1) / np.linalg.norm(x_ex, axis=1)
    assert np.all(err <= np.asarray(kappas) * tol * 1.01)


def test_cg_batch_entries_independent(xp):
    """A batch solve equals single-entry solves: same iteration counts, same iterates."""
    kappas = [50.0, 5.0, 500.0, 20.0]
    M = hpd_matrices(40, kappas, seed=5, spacing="geometric")
    b_h = random_complex((4, 40), 6)
    x, info = cg(dense_op(xp, M), xp.asarray(b_h), tol=1e-11)
    xh = to_numpy(x)
    for e in range(4):
        xe, ie = cg(dense_op(xp, M[e:e + 1]), xp.asarray(b_h[e:e + 1]), tol=1e-11)
        assert ie.iterations[0] == info.iterations[e]
        k = ie.iterations[0]
        np.testing.assert_allclose(info.history[:k, e], ie.history[:, 0], rtol=1e-9, atol=0)
        np.testing.assert_allclose(xh[e], to_numpy(xe)[0], rtol=0,
                                   atol=1e-13 * np.linalg.norm(xh[e]))


def test_cg_warm_start_and_zero_rhs(xp_cpu):
    xp = xp_cpu
    M = hpd_matrices(30, [100.0, 100.0, 100.0], seed=7)
    A = dense_op(xp, M)
    b_h = random_complex((3, 30), 8)
    b_h[2] = 0.0
    x_ex = np.linalg.solve(M, b_h[..., None])[..., 0]
    _, cold = cg(A, xp.asarray(b_h), tol=1e-10)
    assert cold.iterations[2] == 0 and cold.converged[2]
    # warm start close to the solution needs fewer iterations; x0 exact needs none
    x0_h = x_ex + 1e-6 * random_complex((3, 30), 9)
    x0_h[1] = x_ex[1]
    x, warm = cg(A, xp.asarray(b_h), x0=xp.asarray(x0_h), tol=1e-10)
    assert warm.all_converged
    assert warm.iterations[0] < cold.iterations[0]
    assert warm.iterations[1] == 0
    assert warm.iterations[2] == 0 and np.all(to_numpy(x)[2] == 0)  # b = 0 -> x = 0 exactly
    r2 = to_numpy(norm2(xp.asarray(b_h) - A(x)))
    assert np.all(np.sqrt(r2[:2] / (np.abs(b_h[:2]) ** 2).sum(axis=1)) <= 1e-10)
    np.testing.assert_array_equal(warm.residual[2], 0.0)


def test_cg_laplacian_fermion_layout_matches_fourier(xp):
    """(m_b^2 - Laplacian) x = b on [batch, L, L, spin, colour] complex fields, checked against the
    exact Fourier-space solution; the iteration counts obey the CG bound for kappa."""
    L = 16
    masses = [0.3, 1.0]
    A = laplacian_op(xp, masses)
    b_h = random_complex((2, L, L, 2, 3), 10)
    tol = 1e-10
    x, info = cg(A, xp.asarray(b_h), tol=tol)
    assert info.all_converged
    p = 2 * np.pi * np.arange(L) / L
    phat2 = (4 * np.sin(p[:, None] / 2) ** 2 + 4 * np.sin(p[None, :] / 2) ** 2)
    for e, m in enumerate(masses):
        bt = np.fft.fft2(b_h[e], axes=(0, 1))
        xe = np.fft.ifft2(bt / (m ** 2 + phat2)[:, :, None, None], axes=(0, 1))
        kappa = (m ** 2 + 8.0) / m ** 2
        err = np.linalg.norm(to_numpy(x)[e] - xe) / np.linalg.norm(xe)
        assert err <= kappa * tol
        assert info.iterations[e] <= cg_bound(kappa, tol)
    assert info.iterations[0] > info.iterations[1]


@pytest.mark.parametrize("kappa", [30.0, 300.0])
def test_cg_iterations_consistent_with_bound(kappa):
    """Uniform spectrum in [1, kappa] (n larger than the bound): the iteration count is below the
    Chebyshev bound and not far below it (the bound is nearly sharp for a uniform spectrum)."""
    import array_api_compat.numpy as xp

    n = 400
    M = hpd_matrices(n, [kappa], seed=11)
    b = xp.asarray(random_complex((1, n), 12))
    tol = 1e-10
    _, info = cg(dense_op(xp, M), b, tol=tol)
    bound = cg_bound(kappa, tol)
    assert bound < n
    k = int(info.iterations[0])
    assert 0.5 * bound <= k <= bound, (k, bound)


def test_cg_laplacian_bound_2d():
    """2D Laplacian + m^2 on 32 x 32, kappa = (m^2 + 8)/m^2: iterations within the bound, and
    more for the lighter mass. (The spectrum m^2 + phat^2 is highly degenerate, so CG converges
    well below the bound here; the near-sharpness is tested on a uniform spectrum above.)"""
    import array_api_compat.numpy as xp

    L = 32
    masses = [0.2, 0.5, 2.0]
    b = xp.asarray(np.random.default_rng(13).normal(size=(3, L, L)))
    tol = 1e-10
    _, info = cg(laplacian_op(xp, masses), b, tol=tol)
    assert info.all_converged
    for e, m in enumerate(masses):
        kappa = (m ** 2 + 8.0) / m ** 2
        assert info.iterations[e] <= cg_bound(kappa, tol)
    assert info.iterations[0] > info.iterations[1] > info.iterations[2]


def test_cg_nonconvergence_names_entry(xp_cpu):
    xp = xp_cpu
    M = hpd_matrices(50, [1.2, 1000.0, 1.3], seed=14)
    A = dense_op(xp, M)
    b = xp.asarray(random_complex((3, 50), 15))
    with pytest.raises(SolverError, match=r"batch entry 1 did not converge in 15 iterations") as ei:
        cg(A, b, tol=1e-10, maxiter=15)
    assert ei.value.entries == [1]
    assert ei.value.info is not None and ei.value.info.converged.tolist() == [True, False, True]
    x, info = cg(A, b, tol=1e-10, maxiter=15, raise_on_failure=False)
    assert info.converged.tolist() == [True, False, True]
    assert info.iterations[1] == 15
    assert info.residual[1] > 1e-10 and np.all(info.residual[[0, 2]] <= 1e-10)


def test_cg_nan_rhs_and_breakdown(xp_cpu):
    xp = xp_cpu
    M = hpd_matrices(20, [10.0, 10.0], seed=16)
    A = dense_op(xp, M)
    b_h = random_complex((2, 20), 17)
    b_bad = b_h.copy()
    b_bad[1, 3] = np.nan
    with pytest.raises(ValueError, match=r"non-finite.*entry 1"):
        cg(A, xp.asarray(b_bad))
    # indefinite operator in entry 1 -> p^H A p <= 0 at some iteration
    M2 = M.copy()
    M2[1] = np.diag(np.linspace(-1.0, 1.0, 20) + 0.01)
    with pytest.raises(SolverError, match=r"breakdown in batch entry 1 at iteration \d+"):
        cg(dense_op(xp, M2), xp.asarray(b_h), tol=1e-12)
    x, info = cg(dense_op(xp, M2), xp.asarray(b_h), tol=1e-12, raise_on_failure=False)
    assert info.converged.tolist() == [True, False]
    assert 1 in info.breakdown
    # an operator returning NaN breaks down with a named entry
    def A_nan(v):
        y = A(v)
        mask = xp.asarray(np.array([False, True])[:, None])
        return xp.where(mask, xp.full_like(y, float("nan")), y)
    with pytest.raises(SolverError, match=r"entry 1 at iteration 1: non-finite"):
        cg(A_nan, xp.asarray(b_h))


def test_cg_real_and_single_precision(xp_cpu):
    xp = xp_cpu
    L = 8
    A = laplacian_op(xp, [0.5, 0.7])
    b = xp.asarray(np.random.default_rng(18).normal(size=(2, L, L)))
    x, info = cg(A, b, tol=1e-12)
    assert x.dtype == xp.float64 and info.all_converged
    b32 = xp.astype(b, xp.float32)
    x32, info32 = cg(A, b32, tol=1e-5)
    assert x32.dtype == xp.float32 and info32.all_converged
    assert np.all(info32.residual <= 1e-5)


# ----------------------------------------------------------------------------------------------
# CGNR / CGNE
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["cgnr", "cgne"])
def test_cgne_solves_nonhermitian_system(xp, method):
    L = 8
    A, A_dag = convection_diffusion_ops(xp, L, [0.3, 1.0], seed=20)
    b_h = random_complex((2, L, L), 21)
    b = xp.asarray(b_h)
    # the adjoint is the adjoint
    u = xp.asarray(random_complex((2, L, L), 22))
    np.testing.assert_allclose(to_numpy(vdot(u, A(b))), to_numpy(vdot(A_dag(u), b)), rtol=1e-12)
    tol = 1e-10
    x, info = cgne(A, A_dag, b, tol=tol, method=method)
    assert info.all_converged and info.method == method
    assert np.all(true_rel(A, x, b) <= tol)
    np.testing.assert_allclose(info.residual, true_rel(A, x, b), rtol=1e-6)
    assert info.matvecs == 2 * int(info.iterations.max()) + 2 + 2 * int(info.restarts.sum() > 0)
    Md = dense_of(A, xp, 2, (L, L))
    x_ex = np.linalg.solve(Md, b_h.reshape(2, -1, 1))[..., 0]
    np.testing.assert_allclose(to_numpy(x).reshape(2, -1), x_ex, atol=1e-7 * np.abs(x_ex).max())
    # residual history is that of the original system (monotone for CGNR)
    if method == "cgnr":
        h = info.history[:, 0]
        assert np.all(np.diff(h[: info.iterations[0]]) <= 1e-14)


# ----------------------------------------------------------------------------------------------
# BiCGStab
# ----------------------------------------------------------------------------------------------
def test_bicgstab_convection_diffusion(xp):
    L = 8
    masses = [0.2, 0.6, 1.5]
    A, _ = convection_diffusion_ops(xp, L, masses, seed=23)
    b_h = random_complex((3, L, L), 24)
    b = xp.asarray(b_h)
    tol = 1e-10
    x, info = bicgstab(A, b, tol=tol)
    assert info.all_converged
    rel = true_rel(A, x, b)
    assert np.all(rel <= tol)
    np.testing.assert_allclose(info.residual, rel, rtol=1e-6)
    Md = dense_of(A, xp, 3, (L, L))
    # non-normal: A A^H != A^H A
    assert np.linalg.norm(Md[0] @ Md[0].conj().T - Md[0].conj().T @ Md[0]) > 1e-2
    x_ex = np.linalg.solve(Md, b_h.reshape(3, -1, 1))[..., 0]
    err = np.linalg.norm(to_numpy(x).reshape(3, -1) - x_ex, axis=1) / np.linalg.norm(x_ex, axis=1)
    assert np.all(err <= 1e-7)
    # lighter mass, more iterations; fewer than CGNR needs
    assert info.iterations[0] > info.iterations[2]
    _, A_dag = convection_diffusion_ops(xp, L, masses, seed=23)
    _, info_nr = cgne(A, A_dag, b, tol=tol)
    assert info.matvecs < info_nr.matvecs


def test_bicgstab_dense_batch_independent(xp_cpu):
    xp = xp_cpu
    n = 60
    rng = np.random.default_rng(25)
    radii = [0.3, 0.6, 0.9]
    N = np.stack([np.eye(n) + rad * (rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n)))
                  / np.sqrt(2 * n) for rad in radii])
    b_h = random_complex((3, n), 26)
    x, info = bicgstab(dense_op(xp, N), xp.asarray(b_h), tol=1e-11)
    assert info.all_converged
    assert info.iterations[0] < info.iterations[1] < info.iterations[2]
    x_ex = np.linalg.solve(N, b_h[..., None])[..., 0]
    np.testing.assert_allclose(to_numpy(x), x_ex, atol=1e-9 * np.abs(x_ex).max())
    for e in range(3):
        xe, ie = bicgstab(dense_op(xp, N[e:e + 1]), xp.asarray(b_h[e:e + 1]), tol=1e-11)
        assert ie.iterations[0] == info.iterations[e]
        np.testing.assert_allclose(to_numpy(xe)[0], to_numpy(x)[e], rtol=0,
                                   atol=1e-13 * np.linalg.norm(x_ex[e]))


def test_bicgstab_failures(xp_cpu):
    xp = xp_cpu
    n = 6
    # entry 1 is real skew-symmetric: <b, A b> = 0 -> breakdown at the first iteration
    S = np.zeros((n, n))
    S[np.triu_indices(n, 1)] = np.arange(1, n * (n - 1) // 2 + 1)
    S = S - S.T
    M = np.stack([np.eye(n) + 0.1 * S, S]).astype(np.float64)
    b = xp.asarray(np.random.default_rng(27).normal(size=(2, n)))
    with pytest.raises(SolverError, match=r"breakdown in batch entry 1 at iteration 1: <rhat, A p>"):
        bicgstab(dense_op(xp, M), b, shadow="residual")
    x, info = bicgstab(dense_op(xp, M), b, raise_on_failure=False, shadow="residual")
    assert info.converged.tolist() == [True, False] and 1 in info.breakdown
    bad = xp.asarray(np.array([[1.0, np.inf, 0, 0, 0, 0], [1.0, 0, 0, 0, 0, 0]]))
    with pytest.raises(ValueError, match="entry 0"):
        bicgstab(dense_op(xp, M), bad)
    N = np.stack([np.eye(n), np.eye(n) + 3.0 * S])
    with pytest.raises(SolverError, match=r"batch entry 1 did not converge in 2 iterations"):
        bicgstab(dense_op(xp, N), b, maxiter=2, tol=1e-3)


@pytest.mark.parametrize("N,shape", [(1, (4, 4)), (3, (4, 4, 4, 4))])
def test_bicgstab_free_wilson_point_source(xp, N, shape):
    """The classical shadow rhat = r_0 breaks down exactly (rho = 0 at iteration 2: the Wilson
    projectors (1 - g)(1 + g) = 0 leave r_1 without a component at the source): a breakdown
    without shadow restarts, a restart from the true residual with them (the default); the
    default random shadow converges without restarts."""
    from lattice_ml.fermions import WilsonDirac, point_source
    D = len(shape)
    host = np.zeros((1, D, *shape, N, N), dtype=np.complex128) + np.eye(N)
    W = WilsonDirac(xp.asarray(host), 0.1)
    eta = point_source(W, 0, 0)
    with pytest.raises(SolverError, match=r"iteration 2: rho = <rhat, r> = 0\.000e\+00"):
        bicgstab(W.apply, eta, tol=1e-10, shadow="residual", shadow_restarts=0)
    x, info = bicgstab(W.apply, eta, tol=1e-10, shadow="residual")
    assert info.all_converged and info.residual[0] <= 1e-10 and info.restarts[0] >= 1
    x, info = bicgstab(W.apply, eta, tol=1e-10)
    assert info.restarts[0] == 0
    assert info.all_converged and info.residual[0] <= 1e-10
    r = to_numpy(eta - W.apply(x))
    assert np.linalg.norm(r) <= 1e-10 * np.linalg.norm(to_numpy(eta))
    with pytest.raises(ValueError, match="shadow"):
        bicgstab(W.apply, eta, shadow="zero")


def test_bicgstab_restarts_when_the_shadow_is_orthogonal_to_the_residual(xp_cpu):
    """A right-hand side orthogonal (to rounding) to the first random shadow vector: rho' =
    <rhat, r_0> is rounding noise (a cosine of 1e-16, not an exact breakdown), so with
    restart_tol = 1e-12 the entry restarts with the next shadow vector and converges;
    a second entry with a generic right-hand side is untouched by the restart. (This small
    system also converges without the restart; where it matters, a near-critical 8^4 clover
    solve stuck at 1e-2, see the docstring of bicgstab.)"""
    xp = xp_cpu
    n = 60
    rng = np.random.default_rng(5)
    M = np.eye(n) * 3 + rng.normal(size=(n, n)) / np.sqrt(n) * 1.5
    # the first shadow vector of bicgstab (default_rng([2718, 0]), module docstring)
    g = np.random.default_rng([2718, 0])
    rhat = g.standard_normal(n) + 1j * g.standard_normal(n)
    z = rng.normal(size=n) + 1j * rng.normal(size=n)
    b_orth = z - (np.vdot(rhat, z) / np.vdot(rhat, rhat)) * rhat
    assert abs(np.vdot(rhat, b_orth)) < 1e-13 * np.linalg.norm(rhat) * np.linalg.norm(b_orth)
    b = xp.asarray(np.stack([b_orth, z]))
    A = dense_op(xp, np.stack([M, M]).astype(complex))
    x, info = bicgstab(A, b, tol=1e-12, restart_tol=1e-12)
    assert info.all_converged and info.restarts.tolist() == [1, 0]
    _, default = bicgstab(A, b, tol=1e-12)                  # default: restarts only at breakdown
    assert default.restarts.tolist() == [0, 0]
    x_ref = np.linalg.solve(M, np.stack([b_orth, z]).T).T
    np.testing.assert_allclose(to_numpy(x), x_ref, rtol=0, atol=1e-10 * np.abs(x_ref).max())
    _, alone = bicgstab(dense_op(xp, M[None].astype(complex)), b[1:, ...], tol=1e-12,
                        restart_tol=1e-12)
    assert alone.iterations[0] == info.iterations[1]


# ----------------------------------------------------------------------------------------------
# multi-shift CG
# ----------------------------------------------------------------------------------------------
def test_multishift_equals_separate_cg(xp):
    M = hpd_matrices(80, [10.0, 300.0], seed=30)
    A = dense_op(xp, M)
    b_h = random_complex((2, 80), 31)
    b = xp.asarray(b_h)
    shifts = [0.0, 0.05, 0.5, 5.0, 50.0]
    tol = 1e-10
    xs, info = multishift_cg(A, b, shifts, tol=tol)
    assert tuple(xs.shape) == (5, 2, 80) and xs.dtype == b.dtype
    assert info.all_converged and np.all(info.residual <= tol)
    assert np.all(info.refine_iterations == 0)
    total_separate = 0
    for k, s in enumerate(shifts):
        xk, ik = cg(lambda v: A(v) + s * v, b, tol=tol)
        total_separate += ik.matvecs
        x_ex = np.linalg.solve(M + s * np.eye(80), b_h[..., None])[..., 0]
        kappa = (np.array([10.0, 300.0]) + s) / (1.0 + s)
        for e in range(2):
            ref = np.linalg.norm(x_ex[e])
            assert np.linalg.norm(to_numpy(xs)[k, e] - to_numpy(xk)[e]) <= 2 * kappa[e] * tol * ref
            assert np.linalg.norm(to_numpy(xs)[k, e] - x_ex[e]) <= kappa[e] * tol * ref
        if s == 0.0:  # the seed system is plain CG: same iteration count
            np.testing.assert_array_equal(info.iterations[k], ik.iterations)
    # larger shifts converge (and are frozen) earlier; one operator application per iteration
    assert np.all(np.diff(info.iterations, axis=0) <= 0)
    assert info.iterations[-1, 1] < info.iterations[0, 1]
    assert info.matvecs == int(info.iterations.max()) + len(shifts)
    assert info.matvecs < total_separate / 2
    # history: shift k frozen after its own iteration count
    k_last = info.iterations[-1, 1]
    assert info.history[k_last - 1, -1, 1] <= tol
    assert np.all(info.history[k_last - 1:, -1, 1] == info.history[k_last - 1, -1, 1])


def test_multishift_lattice_field_and_tolerances(xp_cpu):
    xp = xp_cpu
    L = 8
    A = laplacian_op(xp, [0.0, 0.0])         # massless: the shifts provide the mass
    b = xp.asarray(random_complex((2, L, L, 2, 3), 32))
    shifts = [0.01, 0.1, 1.0]
    tols = [1e-10, 1e-8, 1e-6]
    xs, info = multishift_cg(A, b, shifts, tol=tols)
    for k, s in enumerate(shifts):
        rel = true_rel(lambda v: A(v) + s * v, xs[k, ...], b)
        assert np.all(rel <= tols[k])
        np.testing.assert_allclose(info.residual[k], rel, rtol=1e-6)
    with pytest.raises(SolverError, match=r"did not converge in 5 iterations for \(shift 0.01, entry 0"):
        multishift_cg(A, b, shifts, maxiter=5, refine=False)
    with pytest.raises(ValueError, match="shifts"):
        multishift_cg(A, b, [])


# ----------------------------------------------------------------------------------------------
# mixed precision
# ----------------------------------------------------------------------------------------------
class Counted:
    """Operator wrapper recording the dtype of every input."""

    def __init__(self, A):
        self.A = A
        self.dtypes = []

    def __call__(self, v):
        self.dtypes.append(v.dtype)
        return self.A(v)


def test_cg_mixed_reaches_float64_accuracy(xp):
    L = 16
    masses = [0.1, 0.4]
    b = xp.asarray(random_complex((2, L, L, 2, 3), 40))
    hi = Counted(laplacian_op(xp, masses))
    lo = Counted(laplacian_op(xp, masses))
    x, info = cg_mixed(hi, lo, b, tol=1e-10, inner_tol=1e-5)
    assert info.all_converged and x.dtype == xp.complex128
    assert all(d == xp.complex128 for d in hi.dtypes)
    assert all(d == xp.complex64 for d in lo.dtypes)
    assert info.inner_dtype == "complex64"
    rel = true_rel(laplacian_op(xp, masses), x, b)
    assert np.all(rel <= 1e-10)
    np.testing.assert_allclose(info.residual, rel, rtol=1e-6)
    assert info.high_matvecs == len(hi.dtypes) and info.low_matvecs == len(lo.dtypes)
    # history: the true residual drops by about inner_tol per cycle
    assert np.all(info.history[1, :] <= 1e-4)
    _, ref = cg(laplacian_op(xp, masses), b, tol=1e-10)
    assert info.high_matvecs <= 4 < ref.matvecs
    assert np.all(info.outer_iterations >= 2)


def test_cg_mixed_real_dense_and_failure(xp_cpu):
    xp = xp_cpu
    M = hpd_matrices(50, [100.0, 1000.0], seed=41)
    b = xp.asarray(random_complex((2, 50), 42))
    lo = Counted(dense_op(xp, M, np.complex64))
    x, info = cg_mixed(dense_op(xp, M), lo, b, tol=1e-11)
    assert info.all_converged and np.all(true_rel(dense_op(xp, M), x, b) <= 1e-11)
    assert all(d == xp.complex64 for d in lo.dtypes)
    # real fields: float32 inner solves
    L = 8
    br = xp.asarray(np.random.default_rng(43).normal(size=(2, L, L)))
    lo_r = Counted(laplacian_op(xp, [0.5, 0.5]))
    xr, ir = cg_mixed(laplacian_op(xp, [0.5, 0.5]), lo_r, br)
    assert xr.dtype == xp.float64 and all(d == xp.float32 for d in lo_r.dtypes) and ir.all_converged
    # a low-precision operator 2.5x too small overshoots: the residual grows -> stagnation error
    bad_lo = lambda v: 0.4 * lo_r.A(v)  # noqa: E731
    with pytest.raises(SolverError, match=r"batch entry 0 stagnated in outer cycle 1"):
        cg_mixed(laplacian_op(xp, [0.5, 0.5]), bad_lo, br)


# ----------------------------------------------------------------------------------------------
# on the Wilson operator (lattice_ml.fermions.wilson)
# ----------------------------------------------------------------------------------------------
def test_solvers_on_wilson_operator(xp_cpu):
    """2D SU(2) Wilson operator on random links, batch of 2 configurations: BiCGStab on D,
    CGNR, CG on D^dag D, even/odd Schur CGNR, multi-shift and mixed precision all give the same
    solution of D psi = eta to the tolerance."""
    wilson = pytest.importorskip("lattice_ml.fermions.wilson")
    from lattice_ml.backend import RandomStreams
    from lattice_ml.groups import haar_random

    xp = xp_cpu
    rng = RandomStreams(seed=50, n_chains=2, xp=xp)
    U = haar_random(rng, (2, 8, 8), 2)
    W = wilson.WilsonDirac(U, mass=0.3)
    eta = rng.complex_normal((8, 8, 2, 2))
    tol = 1e-10
    psi, ib = bicgstab(W.apply, eta, tol=tol)
    assert np.all(true_rel(W.apply, psi, eta) <= tol)
    psi_nr, inr = cgne(W.apply, W.apply_dagger, eta, tol=tol)
    assert np.all(true_rel(W.apply, psi_nr, eta) <= tol)
    psi_cg, icg = cg(W.normal, W.apply_dagger(eta), tol=tol)
    scale = np.abs(to_numpy(psi)).max()
    for other in (psi_nr, psi_cg):
        assert np.abs(to_numpy(other) - to_numpy(psi)).max() <= 1e-7 * scale
    # even/odd: Schur system on the even sites, then reconstruct
    chi_e, ieo = cgne(W.apply_eo, W.apply_eo_dagger, W.prepare_source(eta), tol=tol)
    psi_eo = W.reconstruct(chi_e, eta)
    assert np.all(true_rel(W.apply, psi_eo, eta) <= 1e-8)
    assert np.all(ieo.iterations < inr.iterations)
    # multi-shift on D^dag D
    xs, ims = multishift_cg(W.normal, W.apply_dagger(eta), [0.0, 0.1, 1.0], tol=tol)
    assert np.abs(to_numpy(xs[0, ...]) - to_numpy(psi)).max() <= 1e-7 * scale
    # mixed precision: the inner operator on complex64 links
    W32 = wilson.WilsonDirac(xp.astype(U, xp.complex64), mass=0.3, check=False)
    lo = Counted(W32.normal)
    psi_mx, imx = cg_mixed(W.normal, lo, W.apply_dagger(eta), tol=tol)
    assert all(d == xp.complex64 for d in lo.dtypes)
    assert np.abs(to_numpy(psi_mx) - to_numpy(psi)).max() <= 1e-7 * scale
    assert imx.high_matvecs < icg.matvecs
