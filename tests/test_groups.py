"""U(1) and SU(N): generators, algebra, exp map, reunitarisation, Haar measure, gauge
transformations and link validation (lattice_ml.groups).

References for the exact values used:
* Gell-Mann structure constants f_123 = 1, f_147 = 1/2, f_458 = sqrt(3)/2 (any QFT text, e.g.
  Peskin & Schroeder app. A).
* Haar moments: for U in U(N) or SU(N) and k >= 1, E|Tr U|^(2k) = dim End_G(V^(x)k) =
  sum over partitions lambda of k with at most N rows of (dim Specht_lambda)^2 (Schur-Weyl
  duality; the SU(N) restriction keeps these irreducible and inequivalent at fixed k). This is
  the number of permutations of k with no increasing subsequence longer than N (Rains,
  Electron. J. Combin. 5 (1998) R12; = k! for k <= N, Diaconis & Shahshahani, J. Appl. Prob.
  31A (1994) 49). Hence E|Tr U|^2 = 1 (N >= 1), E|Tr U|^4 = 2 for every N >= 2 (SU(2) and
  SU(3) included). E[Tr U] = 0 for N >= 2. SU(N) differs from U(N) in E[(Tr U)^N] = 1: the
  only invariant in V^(x)N is Lambda^N V = det, trivial on SU(N) (for U(N) it is 0).
  Weingarten: E[|U_ij|^2] = 1/N.
"""

import math

import numpy as np
import pytest
import scipy.linalg

from lattice_ml import groups as G
from lattice_ml.backend import RandomStreams, to_numpy
from lattice_ml.lattice import shift

NS = [1, 2, 3, 4, 5]


def host(a):
    return np.asarray(to_numpy(a))


def expm_host(X):
    X = np.asarray(X, dtype=complex)
    flat = X.reshape(-1, *X.shape[-2:])
    return np.stack([scipy.linalg.expm(m) for m in flat]).reshape(X.shape)


def dag(a):
    return np.conj(np.swapaxes(a, -1, -2))


def unitarity_error(U):
    U = host(U)
    return np.abs(dag(U) @ U - np.eye(U.shape[-1])).max()


def det_error(U):
    U = host(U)
    return np.abs(np.linalg.det(U) - 1).max()


def random_coords(seed, shape, N, xp, scale=1.0, dtype="float64"):
    return scale * RandomStreams(seed, 2, xp, dtype=dtype).normal(
        tuple(shape) + (G.n_generators(N),))


# ------------------------------------------------------------------------------------------
# generators and algebra
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("N", NS)
def test_generators_normalisation_and_closure(xp, N):
    T = G.generators(N, xp)
    assert T.dtype == xp.complex128
    ng = G.n_generators(N)
    assert tuple(T.shape) == (ng, N, N) and ng == (1 if N == 1 else N * N - 1)
    Th = host(T)
    np.testing.assert_allclose(dag(Th), -Th, atol=0)                      # anti-hermitian
    if N > 1:
        np.testing.assert_allclose(np.trace(Th, axis1=-2, axis2=-1), 0, atol=1e-15)
    gram = np.einsum("aij,bji->ab", Th, Th)
    np.testing.assert_allclose(gram, -0.5 * np.eye(ng), atol=1e-15)      # Tr T_a T_b = -d/2
    # closure: [T_a, T_b] = sum_c f_abc T_c with real, totally antisymmetric f
    comm = Th[:, None] @ Th[None, :] - Th[None, :] @ Th[:, None]
    f_complex = -2 * np.einsum("cij,abji->abc", Th, comm)
    np.testing.assert_allclose(f_complex.imag, 0, atol=1e-15)
    f = f_complex.real
    np.testing.assert_allclose(np.einsum("abc,cij->abij", f, Th), comm, atol=1e-15)
    np.testing.assert_allclose(f, -np.swapaxes(f, 0, 1), atol=1e-15)
    np.testing.assert_allclose(f, -np.swapaxes(f, 1, 2), atol=1e-15)
    # same table through the namespace's own matmul and in complex64
    if ng > 1:
        comm_xp = host(T[0, ...] @ T[1, ...] - T[1, ...] @ T[0, ...])
        np.testing.assert_allclose(comm_xp, comm[0, 1], atol=1e-15)
    assert G.generators(N, xp, dtype=xp.complex64).dtype == xp.complex64


def test_generator_order_is_pauli_and_gell_mann(xp):
    s1 = np.array([[0, 1], [1, 0]]); s2 = np.array([[0, -1j], [1j, 0]])
    s3 = np.array([[1, 0], [0, -1]])
    np.testing.assert_allclose(host(G.generators(2, xp)), 0.5j * np.stack([s1, s2, s3]))
    lam = np.zeros((8, 3, 3), complex)
    lam[0][0, 1] = lam[0][1, 0] = 1
    lam[1][0, 1], lam[1][1, 0] = -1j, 1j
    lam[2][0, 0], lam[2][1, 1] = 1, -1
    lam[3][0, 2] = lam[3][2, 0] = 1
    lam[4][0, 2], lam[4][2, 0] = -1j, 1j
    lam[5][1, 2] = lam[5][2, 1] = 1
    lam[6][1, 2], lam[6][2, 1] = -1j, 1j
    lam[7] = np.diag([1, 1, -2]) / math.sqrt(3)
    T = host(G.generators(3, xp))
    np.testing.assert_allclose(T, 0.5j * lam, atol=1e-16)
    # [T_a, T_b] = -f_abc T_c with the Gell-Mann structure constants f
    f = -2 * np.einsum("cij,abji->abc", T, T[:, None] @ T[None, :] - T[None, :] @ T[:, None]).real
    assert f[0, 1, 2] == pytest.approx(-1.0)
    assert f[0, 3, 6] == pytest.approx(-0.5)
    assert f[3, 4, 7] == pytest.approx(-math.sqrt(3) / 2)
    np.testing.assert_allclose(host(G.generators(1, xp)), [[[1j / math.sqrt(2)]]])
    # SU(2): [T_a, T_b] = -eps_abc T_c
    T2 = host(G.generators(2, xp))
    np.testing.assert_allclose(T2[0] @ T2[1] - T2[1] @ T2[0], -T2[2], atol=1e-16)


@pytest.mark.parametrize("N", NS)
def test_algebra_coordinates_round_trip(xp, N):
    x = random_coords(1, (3, 4), N, xp)
    X = G.algebra_to_matrix(x, N)
    assert X.dtype == xp.complex128 and tuple(X.shape) == (2, 3, 4, N, N)
    Xh = host(X)
    np.testing.assert_allclose(Xh, np.einsum("...a,aij->...ij", host(x), host(G.generators(N, xp))),
                               atol=1e-15)
    np.testing.assert_array_equal(dag(Xh), -Xh)                         # exactly anti-hermitian
    if N > 1:
        np.testing.assert_allclose(np.trace(Xh, axis1=-2, axis2=-1), 0, atol=1e-14)
    y = G.matrix_to_algebra(X, N)
    assert y.dtype == xp.float64
    np.testing.assert_allclose(host(y), host(x), atol=1e-14)
    np.testing.assert_allclose(host(G.matrix_to_algebra(X)), host(x), atol=1e-14)   # N inferred
    # -Tr X^2 = sum x^2 / 2 (the HMC kinetic energy)
    np.testing.assert_allclose(-np.trace(Xh @ Xh, axis1=-2, axis2=-1).real,
                               0.5 * (host(x) ** 2).sum(-1), rtol=1e-13)
    # float32 coordinates -> complex64 matrices -> float32 coordinates
    x32 = random_coords(1, (5,), N, xp, dtype="float32")
    X32 = G.algebra_to_matrix(x32, N)
    assert X32.dtype == xp.complex64
    assert G.matrix_to_algebra(X32).dtype == xp.float32
    np.testing.assert_allclose(host(G.matrix_to_algebra(X32)), host(x32), atol=1e-6)
    with pytest.raises(ValueError, match="last axis"):
        G.algebra_to_matrix(x[..., :-1] if N > 1 else xp.concat([x, x], axis=-1), N)


@pytest.mark.parametrize("N", NS)
def test_traceless_antihermitian_projection(xp, N):
    M = RandomStreams(2, 2, xp).complex_normal((6, N, N))
    P = G.project_algebra(M)
    Ph, Mh = host(P), host(M)
    np.testing.assert_allclose(dag(Ph), -Ph, atol=0)
    if N > 1:
        np.testing.assert_allclose(np.trace(Ph, axis1=-2, axis2=-1), 0, atol=1e-15)
        expect = 0.5 * (Mh - dag(Mh))
        expect -= np.trace(expect, axis1=-2, axis2=-1)[..., None, None] * np.eye(N) / N
    else:
        expect = 1j * Mh.imag
    np.testing.assert_allclose(Ph, expect, atol=1e-15)
    np.testing.assert_allclose(host(G.project_algebra(P)), Ph, atol=1e-15)       # idempotent
    # sum_a T_a Re Tr(T_a M) = -TA(M)/2
    T = host(G.generators(N, xp))
    s = np.einsum("aij,...a->...ij", T, np.einsum("aij,...ji->...a", T, Mh).real)
    np.testing.assert_allclose(s, -0.5 * Ph, atol=1e-15)
    # the coordinates of a general M are those of TA(M)
    np.testing.assert_allclose(host(G.algebra_to_matrix(G.matrix_to_algebra(M), N)), Ph,
                               atol=1e-15)


def test_matrix_basics(xp):
    M = RandomStreams(3, 2, xp).complex_normal((4, 4, 4))
    Mh = host(M)
    np.testing.assert_array_equal(host(G.dagger(M)), dag(Mh))
    np.testing.assert_allclose(host(G.trace(M)), np.trace(Mh, axis1=-2, axis2=-1), atol=1e-15)
    for n in (1, 2, 3, 4):
        np.testing.assert_allclose(host(G.det(M[..., :n, :n])), np.linalg.det(Mh[..., :n, :n]),
                                   rtol=1e-13, atol=1e-14)
    one = G.identity_like(M)
    assert one.dtype == M.dtype and tuple(one.shape) == tuple(M.shape)
    np.testing.assert_array_equal(host(one), np.broadcast_to(np.eye(4), Mh.shape))
    np.testing.assert_array_equal(host(G.identity(3, (2, 5), xp, dtype=xp.complex64)),
                                  np.broadcast_to(np.eye(3), (2, 5, 3, 3)))


# ------------------------------------------------------------------------------------------
# exponential map
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("N", NS)
@pytest.mark.parametrize("scale", [1e-8, 1e-3, 0.3, 1.0, 10.0])
def test_expm_matches_scipy(xp, N, scale):
    X = G.algebra_to_matrix(random_coords(4, (40,), N, xp, scale), N)
    U = G.expm_algebra(X)
    assert U.dtype == xp.complex128
    ref = expm_host(host(X))
    np.testing.assert_allclose(host(U), ref, rtol=0, atol=1e-13)
    assert unitarity_error(U) < 1e-13
    if N > 1:
        assert det_error(U) < 1e-13
    if scale == 1e-8:
        # tiny arguments keep their relative precision: U - 1 = X + ... to 1e-13 of |X|
        np.testing.assert_allclose(host(U) - np.eye(N), ref - np.eye(N), rtol=0, atol=1e-21)


@pytest.mark.parametrize("N", [2, 3, 4, 5])
def test_expm_methods_agree(xp, N):
    for scale in (1e-6, 0.5, 4.0):
        X = G.algebra_to_matrix(random_coords(5, (30,), N, xp, scale), N)
        methods = {2: ["su2", "eigh", "taylor"], 3: ["su3", "eigh", "taylor"]}.get(
            N, ["eigh", "taylor"])
        out = [host(G.expm_algebra(X, m)) for m in methods]
        for o in out[1:]:
            np.testing.assert_allclose(o, out[0], rtol=0, atol=1e-13)
        np.testing.assert_allclose(host(G.expm_algebra(X)), out[0], rtol=0, atol=0)
    with pytest.raises(ValueError, match="N = 3"):
        G.expm_algebra(X, "su3") if N != 3 else G.expm_algebra(X[..., :2, :2], "su3")


def test_expm_su3_special_points(xp):
    """Degenerate spectra (c0 = +-c0_max), c0 = 0, zero, and around the series threshold."""
    T = host(G.generators(3, xp))
    mats = []
    for a in (0.0, 1e-12, 1e-8, 1e-4, 0.1, 0.2449, 0.245, 0.3, 1.0, 5.0, 20.0):
        mats += [a * T[7], -a * T[7], a * T[2], a * (T[2] + 0.3 * T[7] + 1e-9 * T[0])]
    X = xp.asarray(np.stack(mats))
    U = G.expm_algebra(X)
    assert not np.isnan(host(U)).any()
    ref = expm_host(np.stack(mats))
    np.testing.assert_allclose(host(U), ref, rtol=0, atol=1e-14 * 3)
    np.testing.assert_allclose(host(U), host(G.expm_algebra(X, "eigh")), rtol=0, atol=1e-13)
    np.testing.assert_array_equal(host(U)[0], np.eye(3))
    # random directions with |x| across the switch c1 = 0.02 (|x| = 2 sqrt(0.02) = 0.283)
    x = host(random_coords(6, (200,), 3, xp))
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    for r in (0.27, 0.2828, 0.2829, 0.3):
        Xr = G.algebra_to_matrix(xp.asarray(r * x), 3)
        np.testing.assert_allclose(host(G.expm_algebra(Xr)), expm_host(host(Xr)), rtol=0,
                                   atol=1e-15)


@pytest.mark.parametrize("N", NS)
def test_expm_group_laws(xp, N):
    X = G.algebra_to_matrix(random_coords(7, (20,), N, xp), N)
    E = G.expm_algebra
    one = np.eye(N)
    np.testing.assert_allclose(host(E(X) @ E(-X)), np.broadcast_to(one, X.shape), atol=1e-14)
    s, t = 0.37, 1.21
    np.testing.assert_allclose(host(E((s + t) * X)), host(E(s * X) @ E(t * X)), atol=1e-14)
    # a general matrix is exponentiated through TA(M): always a group element
    M = RandomStreams(8, 2, xp).complex_normal((20, N, N))
    np.testing.assert_allclose(host(E(M)), host(E(G.project_algebra(M))), atol=1e-14)
    assert unitarity_error(E(M)) < 1e-13
    if N > 1:
        assert det_error(E(M)) < 1e-13


@pytest.mark.parametrize("N", NS)
def test_expm_complex64(xp, N):
    x = random_coords(9, (200,), N, xp, dtype="float32")
    X = G.algebra_to_matrix(x, N)
    methods = ["auto", "eigh", "taylor"] if N > 1 else ["auto"]
    ref = expm_host(host(X))
    for m in methods:
        U = G.expm_algebra(X, m)
        assert U.dtype == xp.complex64
        np.testing.assert_allclose(host(U), ref, rtol=0, atol=1e-6)
        assert unitarity_error(U) < 2e-6


# ------------------------------------------------------------------------------------------
# reunitarisation
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("N", NS)
def test_reunitarize(xp, N):
    rng = RandomStreams(10, 2, xp)
    U = G.haar_random(rng, (50,), N)
    R = G.reunitarize(U)
    np.testing.assert_allclose(host(R), host(U), atol=1e-14)                      # idempotent
    Z = rng.complex_normal((50, N, N))
    dists = []
    for delta in (1e-3, 1e-5):
        V = G.reunitarize(U + delta * Z)
        assert unitarity_error(V) < 1e-14
        if N > 1:
            assert det_error(V) < 1e-14
        np.testing.assert_allclose(host(G.reunitarize(V)), host(V), atol=1e-14)
        d = np.abs(host(V) - host(U)).max()
        assert d < 3 * np.sqrt(N) * delta * np.abs(host(Z)).max()
        dists.append(d)
    assert dists[1] / dists[0] == pytest.approx(1e-2, rel=0.05)                  # O(delta)
    # far from the group (a Ginibre matrix) it still returns a group element
    W = G.reunitarize(Z)
    assert unitarity_error(W) < 1e-13
    if N > 1:
        assert det_error(W) < 1e-13
    # complex64 stays complex64
    W32 = G.reunitarize(xp.astype(U + 1e-3 * Z, xp.complex64))
    assert W32.dtype == xp.complex64 and unitarity_error(W32) < 2e-6


# ------------------------------------------------------------------------------------------
# Haar measure
# ------------------------------------------------------------------------------------------
def _assert_mean(samples, expect, label):
    samples = np.asarray(samples).ravel()
    mean = samples.mean()
    err = samples.std(ddof=1) / math.sqrt(samples.size)
    assert abs(mean - expect) < 5 * err + 1e-12, f"{label}: {mean} +- {err}, expected {expect}"


@pytest.mark.parametrize("N", NS)
def test_haar_moments(xp, N):
    rng = RandomStreams(11, 4, xp)
    U = G.haar_random(rng, (5000,), N)
    assert tuple(U.shape) == (4, 5000, N, N) and U.dtype == xp.complex128
    assert unitarity_error(U) < 1e-13
    Uh = host(U).reshape(-1, N, N)
    if N == 1:
        z = Uh[:, 0, 0]
        for k in (1, 2, 3):
            _assert_mean((z ** k).real, 0.0, f"Re E[U^{k}]")
            _assert_mean((z ** k).imag, 0.0, f"Im E[U^{k}]")
        np.testing.assert_allclose(np.abs(z), 1.0, atol=1e-15)
        return
    assert det_error(U) < 1e-13
    tr = np.trace(Uh, axis1=-2, axis2=-1)
    _assert_mean(tr.real, 0.0, "Re E[Tr U]")
    _assert_mean(tr.imag, 0.0, "Im E[Tr U]")
    _assert_mean(np.abs(tr) ** 2, 1.0, "E|Tr U|^2")
    _assert_mean(np.abs(tr) ** 4, 2.0, "E|Tr U|^4")
    _assert_mean((tr ** N).real, 1.0, "Re E[(Tr U)^N]")       # SU(N), not U(N): det fixed
    _assert_mean((tr ** N).imag, 0.0, "Im E[(Tr U)^N]")
    for i, j in ((0, 0), (0, N - 1), (N - 1, 1)):
        _assert_mean(np.abs(Uh[:, i, j]) ** 2, 1.0 / N, f"E|U_{i}{j}|^2")


def test_haar_reproducible_across_backends_and_batch(xp):
    a = host(G.haar_random(RandomStreams(12, 3, xp), (4, 2), 3))
    b = host(G.haar_random(RandomStreams(12, 3, None), (4, 2), 3))
    np.testing.assert_allclose(a, b, atol=1e-14)
    c = host(G.haar_random(RandomStreams(12, 1, xp), (4, 2), 3))
    np.testing.assert_allclose(a[:1], c, atol=1e-14)


@pytest.mark.parametrize("N", NS)
def test_random_near_identity(xp, N):
    for eps in (1e-6, 0.1):
        U = G.random_near_identity(RandomStreams(13, 2, xp), (30,), N, eps)
        assert tuple(U.shape) == (2, 30, N, N)
        assert unitarity_error(U) < 1e-14
        d = np.abs(host(U) - np.eye(N)).max()
        assert 0.01 * eps < d < 5 * eps


# ------------------------------------------------------------------------------------------
# gauge transformations
# ------------------------------------------------------------------------------------------
def _plaquettes(U):
    """Re Tr U_mu(x) U_nu(x+mu) U_mu(x+nu)^dag U_nu(x)^dag, mu < nu: list of [batch, *sites]."""
    D = U.shape[1]
    out = []
    for mu in range(D):
        for nu in range(mu + 1, D):
            Umu, Unu = U[:, mu, ...], U[:, nu, ...]
            loop = (Umu @ shift(Unu, mu, +1) @ G.dagger(shift(Umu, nu, +1)) @ G.dagger(Unu))
            out.append(host(G.trace(loop)).real)
    return out


@pytest.mark.parametrize("N", NS)
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 2), (2, 2, 2, 3)])
def test_gauge_transform(xp, N, shape):
    rng = RandomStreams(14, 2, xp)
    D = len(shape)
    U = G.haar_random(rng, (D, *shape), N)
    g1 = G.random_gauge_transformation(rng, shape, N)
    g2 = G.random_gauge_transformation(rng, shape, N)
    Ug = G.gauge_transform(U, g1)
    assert tuple(Ug.shape) == tuple(U.shape)
    G.check_links(Ug, N)
    # the convention, at every site by index arithmetic: g(x) U_mu(x) g(x+mu)^dag
    Uh, gh, Ugh = host(U), host(g1), host(Ug)
    for mu in range(D):
        gfwd = np.roll(gh, -1, axis=1 + mu)
        np.testing.assert_allclose(Ugh[:, mu], gh @ Uh[:, mu] @ dag(gfwd), atol=1e-14)
    # back with g^dagger, composition, identity
    np.testing.assert_allclose(host(G.gauge_transform(Ug, G.dagger(g1))), Uh, atol=1e-14)
    np.testing.assert_allclose(host(G.gauge_transform(Ug, g2)),
                               host(G.gauge_transform(U, g2 @ g1)), atol=1e-14)
    np.testing.assert_allclose(host(G.gauge_transform(U, G.identity_like(g1))), Uh, atol=1e-15)
    # closed loops are invariant
    for p, pg in zip(_plaquettes(U), _plaquettes(Ug)):
        np.testing.assert_allclose(pg, p, atol=1e-13)
    with pytest.raises(ValueError, match="does not fit"):
        G.gauge_transform(U, g1[:, :1, ...])


# ------------------------------------------------------------------------------------------
# link validation
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("N", [1, 2, 3])
def test_check_links(xp, N):
    rng = RandomStreams(15, 2, xp)
    for shape in [(4, 4), (2, 2, 3), (2, 2, 2, 2)]:
        U = G.haar_random(rng, (len(shape), *shape), N)
        assert G.check_links(U) is None
        assert G.check_links(U, N) is None
        G.check_links(xp.astype(U, xp.complex64), N)            # default tol 1e-5 for complex64
    U = G.haar_random(rng, (2, 4, 4), N)
    Uh = host(U)

    def bad(arr, match, **kw):
        with pytest.raises(ValueError, match=match):
            G.check_links(xp.asarray(arr), **kw)

    bad(Uh[:, 0], "layout")                                     # wrong ndim (no direction axis)
    bad(Uh[:, :1], "D must be 2, 3 or 4")                       # one direction
    bad(np.concatenate([Uh, Uh[:, :1]], axis=1), "3 .*2 site axes")   # D mismatch
    bad(np.concatenate([Uh, Uh[..., :1]], axis=-1), "square")
    bad(Uh.real.copy(), "complex dtype")
    nan = Uh.copy()
    nan[0, 0, 1, 2, 0, 0] = np.nan
    nan[1, 1, 0, 0, -1, -1] = np.inf
    bad(nan, "2 non-finite")
    bad(Uh * 1.001, r"not unitary: max \|U\^dagger U - 1\| = 0.002")
    bad(Uh, "N = 4 was expected", N=4)
    if N > 1:
        phase = np.exp(0.01j)
        bad(Uh * phase, rf"not in SU\({N}\): max \|det U - 1\| = 0.0{N}")
    # an explicit tolerance
    G.check_links(xp.asarray(Uh * (1 + 1e-9)), tol=1e-8)
    bad(Uh * (1 + 1e-9), "not unitary")
    with pytest.raises(ValueError, match="tolerance 1e-05"):
        G.check_links(xp.asarray((Uh * 1.0001).astype(np.complex64)))


@pytest.mark.parametrize("N", NS)
def test_unbatched_matrices(xp, N):
    """A single [N, N] matrix works everywhere a stack does."""
    X = 0.7 * G.generators(N, xp)[-1, ...]
    for m in (["auto", "eigh", "taylor"] if N > 1 else ["auto"]):
        U = G.expm_algebra(X, m)
        assert tuple(U.shape) == (N, N)
        np.testing.assert_allclose(host(U), scipy.linalg.expm(host(X)), atol=1e-14)
    np.testing.assert_allclose(host(G.reunitarize(U)), host(U), atol=1e-15)
    np.testing.assert_allclose(host(G.project_algebra(X)), host(X), atol=1e-16)
    x = G.matrix_to_algebra(X)
    assert tuple(x.shape) == (G.n_generators(N),)
    np.testing.assert_allclose(host(G.algebra_to_matrix(x, N)), host(X), atol=1e-16)


def test_unitarity_deviation_measures_the_distance_from_the_group():
    import numpy as np

    from lattice_ml.backend import RandomStreams, namespace_by_name
    from lattice_ml.groups import haar_random, reunitarize, unitarity_deviation

    xp = namespace_by_name("numpy")
    U = haar_random(RandomStreams(3, 2, xp), (2, 4, 4), 3)
    assert unitarity_deviation(U) < 1e-14
    # U (1 + e) has U^dag U - 1 = 2e + e^2 on the diagonal and det - 1 = (1 + e)^3 - 1
    e = 1e-3
    assert abs(unitarity_deviation(U * (1 + e)) - ((1 + e) ** 3 - 1)) < 1e-12
    assert unitarity_deviation(reunitarize(U * (1 + e))) < 1e-14
    V = U.copy()
    V[1, 0, 2, 3, 0, 1] = np.nan
    assert np.isnan(unitarity_deviation(V))


# ------------------------------------------------------------------------------------------
# SU(3) Cayley-Hamilton coefficients against a 60-digit reference
# ------------------------------------------------------------------------------------------
def _ch_reference(c0: float, c1: float):
    """f_j, df_j/dc1, df_j/dc0 of exp(iQ) = f0 + f1 Q + f2 Q^2 (Q^3 = c1 Q + c0) by the reduced
    Taylor series in 60-digit decimal arithmetic, summed to convergence (independent of the
    float64 code: no closed form, no truncation at a fixed length)."""
    from decimal import Decimal, localcontext
    with localcontext() as ctx:
        ctx.prec = 60
        c0, c1 = Decimal(float(c0)), Decimal(float(c1))
        zero, one = Decimal(0), Decimal(1)
        v, v0, v1 = [one, zero, zero], [zero] * 3, [zero] * 3
        sums = {k: [[zero] * 3, [zero] * 3] for k in ("f", "b1", "b2")}
        sums["f"][0][0] = one
        fact, n, quiet = Decimal(1), 0, 0
        while quiet < 4:
            n += 1
            a, b, d = v
            v0 = [d + c0 * v0[2], v0[0] + c1 * v0[2], v0[1]]
            v1 = [c0 * v1[2], v1[0] + d + c1 * v1[2], v1[1]]
            v = [c0 * d, a + c1 * d, b]
            fact *= n
            coeff = (1 if n % 4 in (0, 1) else -1) / fact
            big = Decimal(0)
            for key, vec in (("f", v), ("b1", v1), ("b2", v0)):
                for j in range(3):
                    sums[key][n % 2][j] += coeff * vec[j]
                    big = max(big, abs(coeff * vec[j]))
            quiet = quiet + 1 if big < Decimal("1e-40") else 0
        return [np.array([complex(float(s[0][j]), float(s[1][j])) for j in range(3)])
                for s in (sums["f"], sums["b1"], sums["b2"])]


def _ch_grid():
    """(c0, c1) on c1 in [1e-8, 15] (log grid, both sides of the switch) with c0/c0_max in
    [-1, 1], degenerate spectra (c0 = +-c0_max) and c0 = 0 included."""
    g = np.random.default_rng(11)
    c1 = np.logspace(-8, np.log10(15.0), 40)
    r = np.concatenate([[-1.0, -0.9999999, 0.0, 0.9999999, 1.0], g.uniform(-1, 1, 7)])
    c1 = np.concatenate([c1, [G._SU3_SERIES_C1 * (1 - 1e-12), G._SU3_SERIES_C1]])
    c1, r = np.meshgrid(c1, r, indexing="ij")
    return (r * 2 * (c1 / 3) ** 1.5).ravel(), c1.ravel()


def test_su3_ch_coefficients_against_a_60_digit_reference():
    """One switch (series below c1 = 3, Morningstar-Peardon above): every coefficient within
    1e-15 (f) and 4e-15 (b) of the 60-digit reference, relative to the largest of its three."""
    c0, c1 = _ch_grid()
    f, b1, b2 = G.su3_ch_coefficients(c0, c1, derivative=True)
    np.testing.assert_array_equal(np.stack(G.su3_ch_coefficients(c0, c1)), np.stack(f))
    worst = {"f": 0.0, "b": 0.0}
    for i in range(c0.size):
        ref = _ch_reference(c0[i], c1[i])
        for key, got, want in (("f", f, ref[0]), ("b", b1, ref[1]), ("b", b2, ref[2])):
            got = np.array([got[j][i] for j in range(3)])
            worst[key] = max(worst[key], np.max(np.abs(got - want)) / np.max(np.abs(want)))
    assert worst["f"] < 1e-15 and worst["b"] < 4e-15, worst


def test_su3_exp_coefficients_are_the_ch_coefficients_of_the_invariants(xp):
    """su3_exp_coefficients(Q) = su3_ch_coefficients(c0, c1) with c0 = det Q, c1 = Tr Q^2 / 2,
    and exp(iQ) from them is scipy's expm across the switch (|x| = 2 sqrt(3) for unit x)."""
    x = host(random_coords(12, (50,), 3, xp))
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    for r in (0.1, 3.46, 3.47, 6.0):
        X = G.algebra_to_matrix(xp.asarray(r * x), 3)
        Q = -1j * X
        c0, c1 = G.su3_invariants(Q)
        np.testing.assert_allclose(host(c0), np.real(np.linalg.det(host(Q))), atol=1e-13)
        f = G.su3_exp_coefficients(Q)
        for a, b in zip(f, G.su3_ch_coefficients(c0, c1)):
            np.testing.assert_array_equal(host(a), host(b))
        np.testing.assert_allclose(host(G.expm_algebra(X)), expm_host(host(X)), rtol=0,
                                   atol=2e-15 * max(1.0, r))


def test_numba_su3_coefficients_match_groups():
    """kernels/_su3.py (the Numba copy, compiled for CPU) gives the f_j and b_ij of
    groups.su3_ch_coefficients on both sides of the one switch, which it shares."""
    pytest.importorskip("numba")
    from lattice_ml.kernels import _su3
    assert (_su3.SERIES_C1, _su3.SERIES_TERMS) == (G._SU3_SERIES_C1, G._SU3_SERIES_TERMS)
    c0, c1 = _ch_grid()
    f, b1, b2 = G.su3_ch_coefficients(c0, c1, derivative=True)
    want = np.stack(list(f) + list(b1) + list(b2), axis=-1)
    got = np.array([list(_su3.exp_coefficients(a, b)) + list(_su3.b_coefficients(a, b))
                    for a, b in zip(c0, c1)])
    scale = np.maximum(np.abs(want[:, :3]).max(axis=1), np.abs(want[:, 3:]).max(axis=1))
    assert np.max(np.abs(got - want) / scale[:, None]) < 1e-15
