"""Review fixes in the Krylov solvers: BiCGStab with shadow restarts gives every batch entry the
result it has alone, for every ``check_every`` (shadow vectors numbered per entry); FGMRES with a
preconditioner in another precision than ``b`` (complex64 in complex128 and the reverse) works
in the precision of ``b``. NumPy and array-api-strict."""

import numpy as np

from lattice_ml.backend import to_numpy
from lattice_ml.fermions.solvers import bicgstab, fgmres


def dense_op(xp, M, dtype=None):
    Md = xp.asarray(M) if dtype is None else xp.asarray(M, dtype=dtype)
    return lambda v: (Md @ v[..., None])[..., 0]


def test_bicgstab_shadow_restarts_batch_equals_alone(xp_cpu):
    """Three non-normal 60x60 systems with ``restart_tol = 0.05`` (every entry restarts with
    fresh shadow vectors, at different iterations): the batch gives each entry exactly the
    iterations, restarts and iterate of its solve alone, with ``check_every`` 1 and 4. Before
    the shadows were numbered per entry, one shared counter made entry 0 take 35 iterations in
    the batch against 39 alone."""
    xp = xp_cpu
    n = 60
    rng = np.random.default_rng(25)
    N = np.stack([np.eye(n) + rad * (rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n)))
                  / np.sqrt(2 * n) for rad in (0.7, 0.8, 0.9)])
    b_h = rng.normal(size=(3, n)) + 1j * rng.normal(size=(3, n))
    runs = {}
    for every in (1, 4):
        x, info = bicgstab(dense_op(xp, N), xp.asarray(b_h), tol=1e-11, restart_tol=0.05,
                           check_every=every)
        assert info.all_converged and np.all(info.restarts > 0), info.restarts
        runs[every] = (to_numpy(x), info.iterations.tolist(), info.restarts.tolist())
        for e in range(3):
            xe, ie = bicgstab(dense_op(xp, N[e:e + 1]), xp.asarray(b_h[e:e + 1]), tol=1e-11,
                              restart_tol=0.05, check_every=every)
            assert (ie.iterations[0], ie.restarts[0]) == (info.iterations[e], info.restarts[e])
            np.testing.assert_array_equal(to_numpy(xe)[0], to_numpy(x)[e])
    np.testing.assert_array_equal(runs[1][0], runs[4][0])
    assert runs[1][1:] == runs[4][1:]
    x_ex = np.linalg.solve(N, b_h[..., None])[..., 0]
    np.testing.assert_allclose(runs[1][0], x_ex, rtol=0, atol=1e-9 * np.abs(x_ex).max())


def test_fgmres_preconditioner_in_another_precision(xp_cpu):
    """An approximate inverse applied in complex64 inside a complex128 solve takes the steps of
    the same map in complex128 (13 here; the coefficients were rounded to complex64 before, which
    cost a restart and 4 steps) and returns complex128; a complex128 preconditioner in a complex64
    solve returns complex64 (it returned complex128)."""
    xp = xp_cpu
    n = 80
    rng = np.random.default_rng(3)
    A_h = np.eye(n) * 2 + (rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n))) / np.sqrt(2 * n)
    M_h = np.linalg.inv(A_h + 0.3 * rng.normal(size=(n, n)) / np.sqrt(n))
    b_h = rng.normal(size=(2, n)) + 1j * rng.normal(size=(2, n))

    def solve(bdt, mdt, tol):
        Mm = xp.asarray(M_h, dtype=mdt)
        M = lambda v: (Mm @ xp.astype(v, mdt)[..., None])[..., 0]  # noqa: E731
        b = xp.asarray(b_h, dtype=bdt)
        x, info = fgmres(dense_op(xp, A_h, bdt), b, M=M, tol=tol)
        assert x.dtype == bdt
        r = np.linalg.norm(to_numpy(b - dense_op(xp, A_h, bdt)(x)), axis=1)
        assert np.all(r <= tol * np.linalg.norm(b_h, axis=1) * 1.01), r
        return info

    ref = solve(xp.complex128, xp.complex128, 1e-10)
    low = solve(xp.complex128, xp.complex64, 1e-10)
    assert low.restarts.tolist() == [0, 0]
    assert np.all(low.iterations <= ref.iterations), (low.iterations, ref.iterations)
    single = solve(xp.complex64, xp.complex128, 1e-5)
    assert single.all_converged
