"""Dirac operators: gamma algebra, free-field momentum-space formulas, gamma_5- and
epsilon-hermiticity, adjoints, gauge covariance, boundary signs, even/odd determinant identities
and Schur solves against dense matrices built from the operators on tiny lattices."""

import itertools

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from lattice_ml.backend import RandomStreams, namespace_by_name, to_numpy
from lattice_ml.fermions import (StaggeredDirac, WilsonDirac, gamma5, gamma_matrices,
                                 kappa_from_mass, mass_from_kappa, n_spin, sigma_munu,
                                 staggered_epsilon, staggered_phases)
from lattice_ml.groups import gauge_transform, haar_random, identity, random_gauge_transformation

NP = namespace_by_name("numpy")


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------
def unit_links(xp, shape, N, batch=1):
    D = len(shape)
    return identity(N, (batch, D, *shape), xp)


def dense(apply, sites, s, N, xp):
    """Dense matrix of a linear operator on [*sites, s, N] (links of batch 1 broadcast over the
    basis vectors, which form the batch axis)."""
    n = int(np.prod(sites)) * s * N
    basis = xp.reshape(xp.eye(n, dtype=xp.complex128), (n, *sites, s, N))
    return to_numpy(xp.reshape(apply(basis), (n, n))).T


def match_spectra(a, b):
    """Max distance between two multisets of complex numbers under the optimal pairing."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    cost = np.abs(a[:, None] - b[None, :])
    r, c = linear_sum_assignment(cost)
    return cost[r, c].max()


def inner(x, y):
    """<x, y> = sum conj(x) y per batch entry (NumPy arrays)."""
    x, y = to_numpy(x), to_numpy(y)
    return np.sum(np.conj(x) * y, axis=tuple(range(1, x.ndim)))


def parity_host(sites):
    return np.indices(sites).sum(axis=0) % 2


# ------------------------------------------------------------------------------------------
# gamma matrices
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("D", [2, 3, 4])
def test_gamma_algebra(xp, D):
    g = to_numpy(gamma_matrices(D, xp))
    s = n_spin(D)
    assert g.shape == (D, s, s)
    for mu in range(D):
        assert np.allclose(g[mu], g[mu].conj().T, atol=0)
        for nu in range(D):
            assert np.allclose(g[mu] @ g[nu] + g[nu] @ g[mu], 2 * (mu == nu) * np.eye(s), atol=0)
    sig = to_numpy(sigma_munu(D, xp))
    for mu, nu in itertools.product(range(D), repeat=2):
        assert np.allclose(sig[mu, nu], sig[mu, nu].conj().T)
        assert np.allclose(sig[mu, nu], -sig[nu, mu])
    if D == 3:
        with pytest.raises(ValueError, match="gamma_5"):
            gamma5(3, xp)
        return
    g5 = to_numpy(gamma5(D, xp))
    assert np.allclose(g5, g5.conj().T) and np.allclose(g5 @ g5, np.eye(s))
    for mu in range(D):
        assert np.allclose(g5 @ g[mu] + g[mu] @ g5, 0)


def test_gamma_bases_as_stated():
    g2 = to_numpy(gamma_matrices(2, NP))
    assert np.array_equal(g2[0], [[0, 1], [1, 0]]) and np.array_equal(g2[1], [[0, -1j], [1j, 0]])
    assert np.array_equal(to_numpy(gamma5(2, NP)), np.diag([1, -1]))
    assert np.allclose(to_numpy(gamma5(2, NP)), -1j * g2[0] @ g2[1])
    g4 = to_numpy(gamma_matrices(4, NP))
    # DeGrand-Rossi: time gamma (our gamma_0 = Chroma gamma_4) couples upper and lower blocks
    assert np.array_equal(g4[0], np.block([[np.zeros((2, 2)), np.eye(2)],
                                           [np.eye(2), np.zeros((2, 2))]]))
    g5 = to_numpy(gamma5(4, NP))
    assert np.array_equal(g5, np.diag([1, 1, -1, -1]))
    assert np.allclose(g5, g4[1] @ g4[2] @ g4[3] @ g4[0])
    assert np.allclose(g5, -g4[0] @ g4[1] @ g4[2] @ g4[3])


def test_kappa_relation():
    assert kappa_from_mass(0.0, 4) == 0.125
    assert kappa_from_mass(0.1, 2) == pytest.approx(1 / 4.2)
    assert mass_from_kappa(kappa_from_mass(-0.3, 4), 4) == pytest.approx(-0.3)


# ------------------------------------------------------------------------------------------
# Wilson: free field
# ------------------------------------------------------------------------------------------
def wilson_momentum_matrix(p, m, g):
    D = len(p)
    return ((m + sum(1 - np.cos(q) for q in p)) * np.eye(g.shape[1])
            + 1j * sum(g[mu] * np.sin(p[mu]) for mu in range(D)))


@pytest.mark.parametrize("shape", [(4, 3), (6, 4, 3), (4, 3, 2, 3)])
@pytest.mark.parametrize("boundary", ["antiperiodic", "periodic"])
def test_wilson_free_plane_waves(xp, shape, boundary):
    """D psi = D(p) psi for psi = e^{ip.x} u, p_0 = (2n+1) pi / T (antiperiodic) or 2 pi n / T."""
    D, N, m = len(shape), 2, 0.37
    s = n_spin(D)
    W = WilsonDirac(unit_links(xp, shape, N), m, boundary=boundary)
    g = to_numpy(gamma_matrices(D, NP))
    hr = np.random.default_rng(3)
    x = np.indices(shape)
    worst = 0.0
    for _ in range(3):
        n = [hr.integers(0, L) for L in shape]
        p = [2 * np.pi * n[mu] / shape[mu] for mu in range(D)]
        if boundary == "antiperiodic":
            p[0] += np.pi / shape[0]
        u = hr.normal(size=(s, N)) + 1j * hr.normal(size=(s, N))
        phase = np.exp(1j * np.tensordot(np.array(p), x, axes=1))
        psi = phase[..., None, None] * u
        out = to_numpy(W.apply(xp.asarray(psi[None])))[0]
        want = phase[..., None, None] * (wilson_momentum_matrix(p, m, g) @ u)
        worst = max(worst, np.abs(out - want).max())
    assert worst < 1e-12


@pytest.mark.parametrize("shape", [(4, 4), (4, 2, 2, 2)])
def test_wilson_free_spectrum(shape):
    """Every eigenvalue of the dense free operator is an eigenvalue of some D(p), and vice versa."""
    D, m = len(shape), 0.1
    s = n_spin(D)
    W = WilsonDirac(unit_links(NP, shape, 1), m)
    M = dense(W.apply, shape, s, 1, NP)
    g = to_numpy(gamma_matrices(D, NP))
    want = []
    for n in itertools.product(*map(range, shape)):
        p = [2 * np.pi * n[mu] / shape[mu] + (np.pi / shape[0] if mu == 0 else 0.0)
             for mu in range(D)]
        want.extend(np.linalg.eigvals(wilson_momentum_matrix(p, m, g)))
    assert match_spectra(np.linalg.eigvals(M), want) < 1e-10


def test_wilson_antiperiodic_hop_across_time_boundary(xp):
    """A point source at t = T-1 reaches t = 0 with a factor -1 (antiperiodic) or +1 (periodic);
    spatial wrap-arounds never change sign."""
    shape, N = (4, 4), 1
    g = to_numpy(gamma_matrices(2, NP))
    u = np.array([[1.0 + 0.5j], [-0.3 + 0.2j]])
    for boundary, sign in [("antiperiodic", -1.0), ("periodic", 1.0)]:
        W = WilsonDirac(unit_links(xp, shape, N), 0.0, boundary=boundary)
        psi = np.zeros((1, *shape, 2, 1), complex)
        psi[0, 3, 3] = u
        out = to_numpy(W.apply(xp.asarray(psi)))[0]
        # backward hop in time: -1/2 (1 + g0) psi(x - 0) with psi(-1) = sign * psi(T-1)
        assert np.allclose(out[0, 3], -0.5 * sign * (np.eye(2) + g[0]) @ u, atol=1e-15)
        # forward hop in time from (2, 3), no wrap
        assert np.allclose(out[2, 3], -0.5 * (np.eye(2) - g[0]) @ u, atol=1e-15)
        # forward hop in space across the boundary from (3, 3) to (3, 0): no sign
        assert np.allclose(out[3, 0], -0.5 * (np.eye(2) + g[1]) @ u, atol=1e-15)
        # transport once around time: (forward time hop)^T = sign * 1 on every field
        fwd = W.xp.asarray(psi)
        from lattice_ml.lattice import shift
        for _ in range(shape[0]):
            fwd = shift(fwd, 0, +1, antiperiodic=(boundary == "antiperiodic"))
        assert np.allclose(to_numpy(fwd), sign * psi)


# ------------------------------------------------------------------------------------------
# Wilson: adjoint, gamma_5-hermiticity, covariance
# ------------------------------------------------------------------------------------------
CASES = [((4, 4), 1), ((4, 4), 2), ((4, 4), 3), ((2, 2, 2, 4), 1), ((2, 2, 2, 4), 3),
         ((4, 2, 2, 2), 2)]


@pytest.mark.parametrize("shape,N", CASES)
@pytest.mark.parametrize("csw", [0.0, 1.3])
def test_wilson_gamma5_hermiticity_and_adjoint(xp, shape, N, csw):
    D = len(shape)
    s = n_spin(D)
    rng = RandomStreams(11, 2, xp)
    U = haar_random(rng, (D, *shape), N)
    W = WilsonDirac(U, -0.2, csw=csw)
    x = rng.complex_normal((*shape, s, N))
    y = rng.complex_normal((*shape, s, N))
    lhs, rhs = inner(x, W.apply(y)), inner(W.apply_dagger(x), y)
    assert np.abs(lhs - rhs).max() < 1e-12 * np.abs(lhs).max()
    g5x = W.apply_gamma5(W.apply(W.apply_gamma5(x)))
    assert np.abs(to_numpy(g5x) - to_numpy(W.apply_dagger(x))).max() < 1e-13
    # hermitian normal operator, positive
    nn = inner(x, W.normal(x))
    assert np.abs(nn.imag).max() < 1e-12 * nn.real.max() and nn.real.min() > 0
    assert np.abs(to_numpy(W.local(x) - W.hopping(x)) - to_numpy(W.apply(x))).max() < 1e-14


@pytest.mark.parametrize("shape,N", [((4, 4), 2), ((2, 4, 2), 2), ((2, 2, 2, 2), 3)])
def test_wilson_dense_adjoint(xp, shape, N):
    D = len(shape)
    s = n_spin(D)
    U = haar_random(RandomStreams(5, 1, xp), (D, *shape), N)
    W = WilsonDirac(U, 0.05, csw=0.7)
    M = dense(W.apply, shape, s, N, xp)
    Md = dense(W.apply_dagger, shape, s, N, xp)
    assert np.abs(Md - M.conj().T).max() < 1e-13
    if D == 3:
        return  # no gamma_5 with two-component spinors in 3D
    G5 = np.kron(np.eye(int(np.prod(shape))), np.kron(to_numpy(gamma5(D, NP)), np.eye(N)))
    assert np.abs(G5 @ M @ G5 - M.conj().T).max() < 1e-13


@pytest.mark.parametrize("shape,N", [((4, 4), 1), ((4, 4), 3), ((2, 2, 2, 4), 2)])
@pytest.mark.parametrize("csw", [0.0, 1.0])
def test_wilson_gauge_covariance(xp, shape, N, csw):
    D = len(shape)
    rng = RandomStreams(7, 2, xp)
    U = haar_random(rng, (D, *shape), N)
    g = random_gauge_transformation(rng, shape, N)
    psi = rng.complex_normal((*shape, n_spin(D), N))
    gpsi = psi @ xp.matrix_transpose(g)
    lhs = WilsonDirac(gauge_transform(U, g), 0.3, csw=csw).apply(gpsi)
    rhs = WilsonDirac(U, 0.3, csw=csw).apply(psi) @ xp.matrix_transpose(g)
    assert np.abs(to_numpy(lhs) - to_numpy(rhs)).max() < 1e-13


def test_wilson_batch_entries_are_independent(xp):
    rng = RandomStreams(9, 3, xp)
    U = haar_random(rng, (2, 4, 4), 2)
    psi = rng.complex_normal((4, 4, 2, 2))
    out = to_numpy(WilsonDirac(U, 0.2, csw=0.5).apply(psi))
    for b in range(3):
        one = WilsonDirac(U[b:b + 1, ...], 0.2, csw=0.5).apply(psi[b:b + 1, ...])
        assert np.abs(to_numpy(one)[0] - out[b]).max() < 1e-15


# ------------------------------------------------------------------------------------------
# clover term
# ------------------------------------------------------------------------------------------
def test_clover_u1_2d_against_leaf_angles():
    """2D U(1): sigma_01 = -sigma_3 and F_01 = (i/4) sum_leaves sin(theta_leaf), so the clover
    term is (csw/8) sigma_3 sum_leaves sin(theta_leaf), with the leaf angles summed by hand."""
    shape, csw = (4, 6), 1.7
    rng = RandomStreams(2, 1, NP)
    U = haar_random(rng, (2, *shape), 1)
    th = np.angle(to_numpy(U)[0, :, :, :, 0, 0])  # [mu, x0, x1]
    T, L = shape

    def a(mu, x0, x1):
        return th[mu, x0 % T, x1 % L]

    S = np.zeros(shape)
    for x0, x1 in itertools.product(range(T), range(L)):
        for dx0, dx1 in itertools.product((0, -1), repeat=2):
            y0, y1 = x0 + dx0, x1 + dx1  # lower-left corner of the plaquette touching x
            S[x0, x1] += np.sin(a(0, y0, y1) + a(1, y0 + 1, y1) - a(0, y0, y1 + 1) - a(1, y0, y1))
    psi = to_numpy(rng.complex_normal((*shape, 2, 1)))
    W0 = WilsonDirac(U, 0.1)
    Wc = WilsonDirac(U, 0.1, csw=csw)
    diff = to_numpy(Wc.apply(NP.asarray(psi)) - W0.apply(NP.asarray(psi)))[0]
    sig3 = np.diag([1.0, -1.0])
    want = (csw / 8) * S[..., None, None] * (sig3 @ psi[0])
    assert np.abs(diff - want).max() < 1e-14


def test_clover_vanishes_on_free_field(xp):
    U = unit_links(xp, (2, 2, 2, 2), 3)
    psi = RandomStreams(1, 1, xp).complex_normal((2, 2, 2, 2, 4, 3))
    a = WilsonDirac(U, 0.1, csw=1.9).apply(psi)
    b = WilsonDirac(U, 0.1).apply(psi)
    assert np.abs(to_numpy(a) - to_numpy(b)).max() < 1e-15


# ------------------------------------------------------------------------------------------
# Wilson even/odd
# ------------------------------------------------------------------------------------------
def site_spin_colour_parity(shape, s, N):
    return np.repeat(parity_host(shape).reshape(-1), s * N)


@pytest.mark.parametrize("shape,N,csw", [((4, 4), 1, 0.0), ((4, 4), 2, 1.2), ((2, 2, 2, 2), 1, 0.0),
                                        ((2, 2, 2, 2), 2, 1.0), ((4, 2), 3, 0.8)])
def test_wilson_even_odd_determinant_and_schur(xp, shape, N, csw):
    D = len(shape)
    s = n_spin(D)
    U = haar_random(RandomStreams(4, 1, xp), (D, *shape), N)
    W = WilsonDirac(U, 0.15, csw=csw)
    M = dense(W.apply, shape, s, N, xp)
    par = site_spin_colour_parity(shape, s, N)
    e, o = par == 0, par == 1
    Mee, Meo, Moe, Moo = M[np.ix_(e, e)], M[np.ix_(e, o)], M[np.ix_(o, e)], M[np.ix_(o, o)]
    # hopping connects opposite parities only
    assert np.abs(Mee - np.diag(np.diag(Mee))).max() == 0 or csw > 0
    schur = Mee - Meo @ np.linalg.solve(Moo, Moe)
    Mhat = dense(W.apply_eo, shape, s, N, xp)
    assert np.abs(Mhat[np.ix_(o, o)]).max() == 0 and np.abs(Mhat[np.ix_(e, o)]).max() == 0
    assert np.abs(Mhat[np.ix_(e, e)] - schur).max() < 1e-13
    Mhat_d = dense(W.apply_eo_dagger, shape, s, N, xp)
    assert np.abs(Mhat_d[np.ix_(e, e)] - schur.conj().T).max() < 1e-13
    sign, logdet = np.linalg.slogdet(M)
    s_o, l_o = np.linalg.slogdet(Moo)
    s_h, l_h = np.linalg.slogdet(Mhat[np.ix_(e, e)])
    assert abs(logdet - (l_o + l_h)) < 1e-11
    assert abs(sign - s_o * s_h) < 1e-11


@pytest.mark.parametrize("shape,N,csw", [((4, 4), 2, 0.0), ((4, 4), 1, 1.5), ((2, 2, 2, 2), 3, 1.0)])
def test_wilson_schur_solve_reproduces_dense_solve(xp, shape, N, csw):
    D = len(shape)
    s = n_spin(D)
    rng = RandomStreams(8, 1, xp)
    U = haar_random(rng, (D, *shape), N)
    W = WilsonDirac(U, 0.2, csw=csw)
    eta = rng.complex_normal((*shape, s, N))
    M = dense(W.apply, shape, s, N, xp)
    want = np.linalg.solve(M, to_numpy(eta).reshape(-1))
    par = site_spin_colour_parity(shape, s, N)
    e = par == 0
    Mhat = dense(W.apply_eo, shape, s, N, xp)[np.ix_(e, e)]
    rhs = to_numpy(W.prepare_source(eta)).reshape(-1)
    assert np.abs(rhs[~e]).max() == 0
    psi_e = np.zeros_like(rhs)
    psi_e[e] = np.linalg.solve(Mhat, rhs[e])
    full = to_numpy(W.reconstruct(xp.asarray(psi_e.reshape(1, *shape, s, N)), eta)).reshape(-1)
    assert np.abs(full - want).max() < 1e-12 * np.abs(want).max()
    assert np.abs(M @ full - to_numpy(eta).reshape(-1)).max() < 1e-12


# ------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------
def test_wilson_bad_input(xp):
    rng = RandomStreams(1, 1, xp)
    U = haar_random(rng, (2, 4, 4), 2)
    W = WilsonDirac(U, 0.1)
    with pytest.raises(ValueError, match="boundary"):
        WilsonDirac(U, 0.1, boundary="twisted")
    with pytest.raises(ValueError, match="layout"):
        WilsonDirac(U[:, 0, ...], 0.1)
    with pytest.raises(ValueError, match="csw"):
        WilsonDirac(U, 0.1, csw=-1.0)
    with pytest.raises(ValueError, match="unitary"):
        WilsonDirac(2.0 * U, 0.1)
    with pytest.raises(ValueError, match="colours"):
        W.apply(rng.complex_normal((4, 4, 2, 3)))
    with pytest.raises(ValueError, match="spin"):
        W.apply(rng.complex_normal((4, 4, 4, 2)))
    with pytest.raises(ValueError, match="sites"):
        W.apply(rng.complex_normal((4, 2, 2, 2)))
    with pytest.raises(ValueError, match="layout"):
        W.apply(rng.complex_normal((4, 4, 2)))
    W2 = WilsonDirac(haar_random(RandomStreams(1, 2, xp), (2, 4, 4), 2), 0.1)
    with pytest.raises(ValueError, match="batch"):
        W2.apply(RandomStreams(1, 3, xp).complex_normal((4, 4, 2, 2)))
    W3 = WilsonDirac(haar_random(rng, (2, 3, 4), 1), 0.1)
    with pytest.raises(ValueError, match="even extents"):
        W3.apply_eo(rng.complex_normal((3, 4, 2, 1)))


# ------------------------------------------------------------------------------------------
# staggered
# ------------------------------------------------------------------------------------------
def test_staggered_phases_as_stated(xp):
    sites = (2, 4, 2, 2)
    eta = to_numpy(staggered_phases(sites, xp))
    x = np.indices(sites)
    assert np.all(eta[0] == 1)
    assert np.array_equal(eta[1], (-1.0) ** x[0])
    assert np.array_equal(eta[2], (-1.0) ** (x[0] + x[1]))
    assert np.array_equal(eta[3], (-1.0) ** (x[0] + x[1] + x[2]))
    assert np.array_equal(to_numpy(staggered_epsilon(sites, xp)), (-1.0) ** x.sum(axis=0))


def free_staggered_sin2(shape, boundary="antiperiodic"):
    """sum_mu sin^2 p_mu over the full Brillouin zone (antiperiodic p_0)."""
    out = []
    for n in itertools.product(*map(range, shape)):
        p = [2 * np.pi * n[mu] / shape[mu] for mu in range(len(shape))]
        if boundary == "antiperiodic":
            p[0] += np.pi / shape[0]
        out.append(sum(np.sin(q) ** 2 for q in p))
    return np.array(out)


@pytest.mark.parametrize("shape", [(4, 4), (6, 4), (4, 2, 2, 4)])
def test_staggered_free_spectrum(shape):
    """Free field: eigenvalues m +- i sqrt(sum_mu sin^2 p_mu). Each reduced-zone momentum carries
    2^D eigenvalues, half with each sign, and 2^D full-zone momenta share its sin^2 values, so
    the sorted |Im lambda| equal the sorted sqrt(sum sin^2 p) over the full zone."""
    m, N = 0.23, 1
    S = StaggeredDirac(unit_links(NP, shape, N), m)
    ev = np.linalg.eigvals(dense(S.apply, shape, 1, N, NP))
    assert np.abs(ev.real - m).max() < 1e-12
    want = np.sqrt(free_staggered_sin2(shape))
    assert np.abs(np.sort(np.abs(ev.imag)) - np.sort(want)).max() < 1e-12
    # +- pairs: the spectrum is symmetric about the real axis
    assert match_spectra(ev, ev.conj()) < 1e-12


@pytest.mark.parametrize("shape", [(4, 6), (4, 2, 6, 2)])
def test_staggered_free_normal_plane_waves(xp, shape):
    """D^dag D e^{ip.x} = (m^2 + sum_mu sin^2 p_mu) e^{ip.x} (free field, antiperiodic p_0)."""
    m, N = 0.4, 3
    S = StaggeredDirac(unit_links(xp, shape, N), m)
    hr = np.random.default_rng(1)
    x = np.indices(shape)
    for _ in range(3):
        p = [2 * np.pi * hr.integers(0, L) / L for L in shape]
        p[0] += np.pi / shape[0]
        c = hr.normal(size=(1, N)) + 1j * hr.normal(size=(1, N))
        phase = np.exp(1j * np.tensordot(np.array(p), x, axes=1))
        chi = phase[..., None, None] * c
        out = to_numpy(S.normal(xp.asarray(chi[None])))[0]
        lam = m * m + sum(np.sin(q) ** 2 for q in p)
        assert np.abs(out - lam * chi).max() < 1e-12


@pytest.mark.parametrize("shape,N", [((4, 4), 1), ((4, 4), 3), ((2, 2, 2, 4), 2), ((4, 2, 2, 2), 3)])
def test_staggered_antihermitian_and_epsilon_hermiticity(xp, shape, N):
    D = len(shape)
    rng = RandomStreams(21, 2, xp)
    U = haar_random(rng, (D, *shape), N)
    S = StaggeredDirac(U, 0.3)
    x = rng.complex_normal((*shape, 1, N))
    y = rng.complex_normal((*shape, 1, N))
    a, b = inner(x, S.hopping(y)), inner(S.hopping(x), y)
    assert np.abs(a + b).max() < 1e-12 * np.abs(a).max()
    a, b = inner(x, S.apply(y)), inner(S.apply_dagger(x), y)
    assert np.abs(a - b).max() < 1e-12 * np.abs(a).max()
    eDe = S.apply_epsilon(S.apply(S.apply_epsilon(x)))
    assert np.abs(to_numpy(eDe) - to_numpy(S.apply_dagger(x))).max() < 1e-14


@pytest.mark.parametrize("shape,N", [((4, 4), 2), ((2, 2, 2, 2), 3)])
def test_staggered_dense_adjoint(xp, shape, N):
    D = len(shape)
    U = haar_random(RandomStreams(3, 1, xp), (D, *shape), N)
    S = StaggeredDirac(U, 0.0)
    K = dense(S.apply, shape, 1, N, xp)
    assert np.abs(K + K.conj().T).max() < 1e-14
    S = StaggeredDirac(U, 0.2)
    M, Md = dense(S.apply, shape, 1, N, xp), dense(S.apply_dagger, shape, 1, N, xp)
    assert np.abs(Md - M.conj().T).max() < 1e-14
    E = np.kron(np.diag((-1.0) ** parity_host(shape).reshape(-1)), np.eye(N))
    assert np.abs(E @ M @ E - M.conj().T).max() < 1e-14


@pytest.mark.parametrize("shape,N", [((4, 4), 1), ((4, 4), 3), ((2, 2, 2, 4), 2)])
def test_staggered_gauge_covariance(xp, shape, N):
    D = len(shape)
    rng = RandomStreams(17, 2, xp)
    U = haar_random(rng, (D, *shape), N)
    g = random_gauge_transformation(rng, shape, N)
    chi = rng.complex_normal((*shape, 1, N))
    lhs = StaggeredDirac(gauge_transform(U, g), 0.1).apply(chi @ xp.matrix_transpose(g))
    rhs = StaggeredDirac(U, 0.1).apply(chi) @ xp.matrix_transpose(g)
    assert np.abs(to_numpy(lhs) - to_numpy(rhs)).max() < 1e-13


def test_staggered_hop_across_time_boundary(xp):
    shape = (4, 4)
    for boundary, sign in [("antiperiodic", -1.0), ("periodic", 1.0)]:
        S = StaggeredDirac(unit_links(xp, shape, 1), 0.0, boundary=boundary)
        chi = np.zeros((1, *shape, 1, 1), complex)
        chi[0, 3, 1] = 1.0
        out = to_numpy(S.apply(xp.asarray(chi)))[0, ..., 0, 0]
        # at (0, 1): -1/2 eta_0 chi(x - 0) with the wrap sign; at (2, 1): +1/2 eta_0 chi(x + 0)
        assert out[0, 1] == pytest.approx(-0.5 * sign) and out[2, 1] == pytest.approx(0.5)
        # spatial hops from (3, 1): eta_1(3, .) = -1, no wrap sign in space
        assert out[3, 0] == pytest.approx(-0.5) and out[3, 2] == pytest.approx(0.5)


@pytest.mark.parametrize("shape,N", [((4, 4), 1), ((4, 4), 2), ((2, 2, 2, 2), 3), ((4, 2), 3)])
def test_staggered_even_odd(xp, shape, N):
    """D^dag D is block diagonal in parity; apply_eo is its even block; det D = det(apply_eo);
    det(D^dag D) = det(ee block) det(oo block) = det(ee block)^2."""
    D, m = len(shape), 0.25
    U = haar_random(RandomStreams(6, 1, xp), (D, *shape), N)
    S = StaggeredDirac(U, m)
    M = dense(S.apply, shape, 1, N, xp)
    Nrm = dense(S.normal, shape, 1, N, xp)
    par = np.repeat(parity_host(shape).reshape(-1), N)
    e, o = par == 0, par == 1
    assert np.abs(Nrm - M.conj().T @ M).max() < 1e-13
    assert np.abs(Nrm[np.ix_(e, o)]).max() < 1e-14 and np.abs(Nrm[np.ix_(o, e)]).max() < 1e-14
    Mhat = dense(S.apply_eo, shape, 1, N, xp)
    assert np.abs(Mhat[np.ix_(o, o)]).max() == 0 and np.abs(Mhat[np.ix_(e, o)]).max() == 0
    assert np.abs(Mhat[np.ix_(e, e)] - Nrm[np.ix_(e, e)]).max() < 1e-13
    schur = M[np.ix_(e, e)] - M[np.ix_(e, o)] @ np.linalg.solve(M[np.ix_(o, o)], M[np.ix_(o, e)])
    assert np.abs(m * schur - Mhat[np.ix_(e, e)]).max() < 1e-13
    s_full, l_full = np.linalg.slogdet(M)
    s_h, l_h = np.linalg.slogdet(Mhat[np.ix_(e, e)])
    assert abs(l_full - l_h) < 1e-11 and abs(s_full - 1) < 1e-11 and abs(s_h - 1) < 1e-11
    l_nrm = np.linalg.slogdet(Nrm)[1]
    l_ee, l_oo = np.linalg.slogdet(Nrm[np.ix_(e, e)])[1], np.linalg.slogdet(Nrm[np.ix_(o, o)])[1]
    assert abs(l_nrm - (l_ee + l_oo)) < 1e-11 and abs(l_ee - l_oo) < 1e-11


@pytest.mark.parametrize("shape,N", [((4, 4), 2), ((2, 2, 2, 2), 3)])
def test_staggered_schur_solve_reproduces_dense_solve(xp, shape, N):
    D = len(shape)
    rng = RandomStreams(12, 1, xp)
    S = StaggeredDirac(haar_random(rng, (D, *shape), N), 0.15)
    eta = rng.complex_normal((*shape, 1, N))
    M = dense(S.apply, shape, 1, N, xp)
    want = np.linalg.solve(M, to_numpy(eta).reshape(-1))
    e = np.repeat(parity_host(shape).reshape(-1), N) == 0
    Mhat = dense(S.apply_eo, shape, 1, N, xp)[np.ix_(e, e)]
    rhs = to_numpy(S.prepare_source(eta)).reshape(-1)
    assert np.abs(rhs[~e]).max() == 0
    chi_e = np.zeros_like(rhs)
    chi_e[e] = np.linalg.solve(Mhat, rhs[e])
    full = to_numpy(S.reconstruct(xp.asarray(chi_e.reshape(1, *shape, 1, N)), eta)).reshape(-1)
    assert np.abs(full - want).max() < 1e-12 * np.abs(want).max()


def test_staggered_bad_input(xp):
    rng = RandomStreams(1, 1, xp)
    U = haar_random(rng, (2, 4, 4), 3)
    S = StaggeredDirac(U, 0.1)
    with pytest.raises(ValueError, match="boundary"):
        StaggeredDirac(U, 0.1, boundary="open")
    with pytest.raises(ValueError, match="spin"):
        S.apply(rng.complex_normal((4, 4, 2, 3)))
    with pytest.raises(ValueError, match="colours"):
        S.apply(rng.complex_normal((4, 4, 1, 2)))
    with pytest.raises(ValueError, match="layout"):
        S.apply(rng.complex_normal((4, 4, 3)))
    with pytest.raises(ValueError, match="m != 0"):
        StaggeredDirac(U, 0.0).reconstruct(rng.complex_normal((4, 4, 1, 3)),
                                           rng.complex_normal((4, 4, 1, 3)))
    with pytest.raises(ValueError, match="even extents"):
        StaggeredDirac(haar_random(rng, (2, 4, 3), 3), 0.1)


def test_docs_example_runs():
    import re
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "docs" / "fermions.md"
    if not path.exists():
        pytest.skip("docs not in this checkout")
    blocks = re.findall(r"```python\n(.*?)```", path.read_text(), re.S)
    assert blocks
    ns = {}
    for code in blocks:
        exec(compile(code, str(path), "exec"), ns)
