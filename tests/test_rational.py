"""Rational approximations (Remez): error within the stated bound by dense sampling,
equioscillation, optimality certificate, convergence with the degree against Zolotarev's closed
form, and r(A) b through one multi-shift solve against dense eigendecompositions (a random
hermitian matrix and the staggered D^dag D on a tiny 2D lattice)."""

import math

import numpy as np
import pytest
from scipy import special

from lattice_ml.backend import RandomStreams, namespace_by_name, to_numpy
from lattice_ml.fermions import StaggeredDirac
from lattice_ml.fermions.rational import RationalApproximation, remez, zolotarev_inverse_sqrt
from lattice_ml.fermions.solvers import multishift_cg
from lattice_ml.groups import random_near_identity

CASES = [(-0.5, 1e-2, 1.0, 4), (-0.5, 1e-4, 10.0, 10), (0.5, 1e-4, 1.0, 8),
         (-0.25, 1e-6, 50.0, 16), (0.25, 1e-4, 10.0, 10), (-0.125, 1e-6, 50.0, 16),
         (0.125, 1e-5, 4.0, 12), (-0.5, 1e-5, 60.0, 20)]


def dense_points(lo, hi, n=400_001):
    """Logarithmic and linear dense grids over [lo, hi] together."""
    return np.concatenate([np.geomspace(lo, hi, n), np.linspace(lo, hi, n)])


@pytest.mark.parametrize("power,lo,hi,degree", CASES)
def test_error_within_bound_by_dense_sampling(power, lo, hi, degree):
    r = remez(power, lo, hi, degree)
    assert isinstance(r, RationalApproximation)
    assert r.degree == degree and r.residues.shape == (degree,) and r.poles.shape == (degree,)
    assert np.all(r.shifts > 0) and np.all(r.poles < 0)
    if power < 0:                       # x^p with p < 0 is a Stieltjes function: residues > 0
        assert np.all(r.residues > 0)
    x = dense_points(lo, hi)
    sampled = np.max(np.abs(r(x) / x ** power - 1.0))
    assert sampled <= r.error
    # the optimality certificate (de la Vallee Poussin): levelled error <= optimum <= error,
    # tight to 1e-5 relative or float64 round-off of the error evaluation (~1e-14 absolute)
    assert r.levelled_error <= r.error <= r.levelled_error * (1 + 1e-5) + 5e-14
    # the bound is attained: the dense maximum is the claimed error up to the same
    assert sampled >= r.error * (1 - 1e-5) - 5e-14
    # scalar evaluation and the product/partial-fraction consistency
    assert isinstance(r(0.5 * (lo + hi)), float)
    assert abs(r(lo) / lo ** power - 1.0) <= r.error


@pytest.mark.parametrize("power,lo,hi,degree", CASES[:6])
def test_equioscillation(power, lo, hi, degree):
    r = remez(power, lo, hi, degree)
    xr = r.reference
    assert xr.shape == (2 * degree + 2,)
    assert np.all(np.diff(xr) > 0) and xr[0] == lo and xr[-1] == hi
    e = r.relative_error(xr)
    s = np.sign(e)
    assert np.all(s[1:] == -s[:-1])                          # alternating signs
    assert np.all(np.abs(e) >= r.levelled_error * (1 - 1e-6))
    assert np.all(np.abs(e) <= r.error)


def test_error_decreases_with_degree_like_zolotarev():
    """For x^(-1/2) the optimal error is Zolotarev's, ~ 4 q^(2n+1) with the nome
    q = exp(-pi K(k)/K(k')), k^2 = lo/hi: geometric convergence with ratio q^2 per degree."""
    for lo, hi in [(1e-2, 1.0), (1e-4, 1.0), (1e-6, 3.0)]:
        ratio = lo / hi
        q = math.exp(-math.pi * special.ellipk(ratio) / special.ellipkm1(ratio))
        errs = np.array([remez(-0.5, lo, hi, n).error for n in range(2, 10)])
        assert np.all(np.diff(errs) < 0)
        # asymptotic in n: the corrections fall off quickly
        np.testing.assert_allclose(errs[1:] / errs[:-1], q ** 2, rtol=0.02)
        np.testing.assert_allclose(errs[3:] / errs[2:-1], q ** 2, rtol=1e-3)
        n = np.arange(2, 10)
        np.testing.assert_allclose(errs, 4 * q ** (2 * n + 1), rtol=0.03)
    for power in (-0.25, 0.25, 0.125):
        errs = np.array([remez(power, 1e-4, 1.0, n).error for n in range(2, 10)])
        assert np.all(np.diff(errs) < 0)
        rates = errs[1:] / errs[:-1]
        assert np.all(rates < 0.25) and np.ptp(rates) < 0.1 * rates.mean()


@pytest.mark.parametrize("lo,hi,degree", [(1e-2, 1.0, 3), (1e-4, 1.0, 6), (1e-4, 10.0, 10),
                                          (1e-5, 2.0, 8)])
def test_inverse_sqrt_equals_zolotarev(lo, hi, degree):
    """Remez for x^(-1/2) reproduces Zolotarev's closed-form optimum (nodes from elliptic
    functions, error levelled by sampling)."""
    r = remez(-0.5, lo, hi, degree)
    zeros, poles, C, err_z = zolotarev_inverse_sqrt(lo, hi, degree)
    assert r.levelled_error <= err_z * (1 + 1e-7)           # nothing beats the optimum
    np.testing.assert_allclose(r.error, err_z, rtol=1e-5)
    np.testing.assert_allclose(r.shifts, poles, rtol=1e-5)
    # the partial fractions of Zolotarev's product form
    x = np.geomspace(lo, hi, 2001)
    rz = C * np.prod((x[:, None] + zeros) / (x[:, None] + poles), axis=1)
    np.testing.assert_allclose(r(x), rz, rtol=10 * err_z)


def test_bad_arguments():
    for args in [(0.0, 1e-2, 1.0, 4), (1.0, 1e-2, 1.0, 4), (-1.5, 1e-2, 1.0, 4),
                 (-0.5, 0.0, 1.0, 4), (-0.5, 1.0, 0.5, 4), (-0.5, 1e-2, 1.0, 0),
                 (-0.5, 1e-2, 1.0, 2.5), (float("nan"), 1e-2, 1.0, 3)]:
        with pytest.raises(ValueError):
            remez(*args)
    with pytest.raises(RuntimeError, match="float64"):
        remez(-0.5, 1e-2, 1.0, 16)                           # error would be ~1e-17


# ------------------------------------------------------------------------------------------
# r(A) b
# ------------------------------------------------------------------------------------------
def random_hpd(rng, n, eigenvalues):
    q, _ = np.linalg.qr(rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n)))
    return (q * eigenvalues) @ q.conj().T


def matrix_power_apply(M, b, p):
    """M^p b for hermitian M (batched [batch, n, n], b [batch, n]) by eigendecomposition."""
    w, V = np.linalg.eigh(M)
    return np.einsum("bij,bj->bi", V * w[:, None, :] ** p, np.einsum("bji,bj->bi", V.conj(), b))


@pytest.mark.parametrize("power", [-0.5, -0.25, 0.25, 0.5])
def test_apply_dense_hermitian_matrix(xp_cpu, power):
    xp = xp_cpu
    lo, hi, n = 1e-3, 5.0, 40
    r = remez(power, lo, hi, 10)
    g = np.random.default_rng(7)
    ev = [np.geomspace(lo, hi, n), g.uniform(lo, hi, n)]
    M = np.stack([random_hpd(g, n, e) for e in ev])
    b = g.standard_normal((2, n)) + 1j * g.standard_normal((2, n))
    Mx, bx = xp.asarray(M), xp.asarray(b)

    def A(v):
        return xp.matmul(Mx, v[..., None])[..., 0]

    tol = 1e-12
    y, info = r.apply(A, bx, tol=tol, return_info=True)
    assert info.all_converged and info.residual.shape == (10, 2)
    y = to_numpy(y)
    exact = matrix_power_apply(M, b, power)
    err = np.linalg.norm(y - exact, axis=1)
    # |r(l) - l^p| <= eps l^p eigenvalue by eigenvalue, plus the residuals of the shifted solves
    solver = tol * np.linalg.norm(b, axis=1) * np.sum(np.abs(r.residues) / (lo + r.shifts))
    bound = r.error * np.linalg.norm(exact, axis=1) + solver
    assert np.all(err <= bound)
    assert np.all(err >= 0.05 * r.error * np.linalg.norm(exact, axis=1))   # not trivially small


def test_apply_bound_is_attained_on_the_reference():
    """Eigenvalues on the alternation points: every component is off by exactly +-E."""
    r = remez(-0.5, 1e-3, 1.0, 6)
    lam = r.reference
    g = np.random.default_rng(3)
    M = random_hpd(g, lam.size, lam)[None]
    b = (g.standard_normal(lam.size) + 1j * g.standard_normal(lam.size))[None]
    xp = namespace_by_name("numpy")
    y = r.apply(lambda v: np.matmul(M, v[..., None])[..., 0], xp.asarray(b), tol=1e-13)
    exact = matrix_power_apply(M, b, -0.5)
    rel = np.linalg.norm(y - exact) / np.linalg.norm(exact)
    np.testing.assert_allclose(rel, r.levelled_error, rtol=1e-3)


def staggered_dense_normal(S, sites, N, xp):
    n = int(np.prod(sites)) * N
    basis = xp.reshape(xp.eye(n, dtype=xp.complex128), (n, *sites, 1, N))
    return to_numpy(xp.reshape(S.normal(basis), (n, n))).T


@pytest.mark.parametrize("N", [1, 2])
def test_apply_staggered_normal_operator_powers_compose(xp_cpu, N):
    """(D^dag D)^(-1/4) applied twice equals (D^dag D)^(-1/2) and the dense power, within the
    bounds; spectrum of D^dag D = m^2 - K^2 inside [m^2, m^2 + D^2] (||K|| <= D)."""
    xp = xp_cpu
    sites, m = (4, 6), 0.2
    rng = RandomStreams(seed=11, n_chains=1, xp=xp)
    U = random_near_identity(rng, (2, *sites), N, 0.6)
    S = StaggeredDirac(U, mass=m)
    lo, hi = m * m, m * m + 4.0
    r4 = remez(-0.25, lo, hi, 12)
    r2 = remez(-0.5, lo, hi, 12)
    b = rng.complex_normal((*sites, 1, N))
    tol = 1e-12
    y4 = r4.apply(S.normal, r4.apply(S.normal, b, tol=tol), tol=tol)
    y2 = r2.apply(S.normal, b, tol=tol)
    M = staggered_dense_normal(S, sites, N, xp)
    w = np.linalg.eigvalsh(M)
    assert w.min() >= lo * (1 - 1e-12) and w.max() <= hi
    bh = to_numpy(b).reshape(1, -1)
    exact = matrix_power_apply(M[None], bh, -0.5)
    ne = np.linalg.norm(exact)
    y4h, y2h = to_numpy(y4).reshape(1, -1), to_numpy(y2).reshape(1, -1)
    nb = np.linalg.norm(bh)
    s4 = tol * nb * np.sum(r4.residues / (lo + r4.shifts))          # solver slack, one apply
    s2 = tol * nb * np.sum(r2.residues / (lo + r2.shifts))
    e4, e2 = r4.error, r2.error
    # r4(A)^2 = A^(-1/2)(1 + e)^2 per eigenvalue; the inner solve error is amplified by r4(A)
    bound4 = (2 * e4 + e4 ** 2) * ne + s4 * (1 + lo ** -0.25 * (1 + e4)) + 1e-12 * ne
    assert np.linalg.norm(y4h - exact) <= bound4
    assert np.linalg.norm(y2h - exact) <= e2 * ne + s2
    assert np.linalg.norm(y4h - y2h) <= bound4 + e2 * ne + s2


def test_apply_uses_one_multishift_solve():
    calls = []

    def counting_solver(A, b, shifts, **kw):
        calls.append(len(shifts))
        return multishift_cg(A, b, shifts, **kw)

    xp = namespace_by_name("numpy")
    r = remez(-0.5, 0.1, 2.0, 5)
    b = xp.asarray(np.ones((3, 4), dtype=np.complex128))
    y = r.apply(lambda v: 0.7 * v, b, solver=counting_solver)
    assert calls == [5]
    np.testing.assert_allclose(to_numpy(y), r(0.7) * np.ones((3, 4)), rtol=1e-12)


def test_remez_at_round_off_names_the_cause_and_a_working_degree():
    """Degree 14 for x^(-1/4) on [0.04, 4.04]: the minimax error would be ~1e-17, below the
    float64 resolution (~1e-15) of r/x^p - 1, so the error's signs on the reference are rounding
    noise. The error says so and names the highest lower degree that works."""
    from lattice_ml.fermions.rational import RemezRoundoffError
    with pytest.raises(RemezRoundoffError, match="reaches float64 round-off") as info:
        remez(-0.25, 0.04, 4.04, 14)
    err = info.value
    assert err.levelled_error < 100 * err.roundoff and err.roundoff < 1e-14
    assert err.degree_ok is not None and err.degree_ok < 14
    assert f"degree {err.degree_ok} works" in str(err)
    ok = remez(-0.25, 0.04, 4.04, err.degree_ok)        # the suggested degree does work ...
    assert ok.error == err.error_ok and ok.error < 1e-12   # ... with an error near round-off
    assert isinstance(err, RuntimeError)
