"""Fermionic observables: point-source pion correlators against dense inverses and the free
momentum-space propagator, gauge invariance, effective masses of exact cosh correlators, and the
stochastic chiral condensate against the exact (1/V) Re Tr D^{-1} (z-scores, 1/sqrt(n))."""

import numpy as np
import pytest

from lattice_ml.backend import RandomStreams, namespace_by_name, to_numpy
from lattice_ml.fermions import StaggeredDirac, WilsonDirac, gamma_matrices
from lattice_ml.fermions.observables import (_estimates, chiral_condensate, effective_mass,
                                             pion_correlator, point_source)
from lattice_ml.groups import (gauge_transform, haar_random, identity, random_gauge_transformation,
                               random_near_identity)

NP = namespace_by_name("numpy")


def dense(op, sites, s, N, xp):
    """Dense matrix of ``op`` on [*sites, s, N] (links of batch 1; basis vectors as the batch)."""
    n = int(np.prod(sites)) * s * N
    basis = xp.reshape(xp.eye(n, dtype=xp.complex128), (n, *sites, s, N))
    return to_numpy(xp.reshape(op(basis), (n, n))).T


def dense_pion(M, sites, s, N, x0):
    """C(t) from the dense inverse: columns of M^{-1} at the source site, |.|^2 summed."""
    Minv = np.linalg.inv(M).reshape(*sites, s, N, *sites, s, N)
    S = Minv[(Ellipsis,) + tuple(x0) + (slice(None), slice(None))]      # [*sites, s, N, s, N]
    dens = np.sum(np.abs(S) ** 2, axis=(-4, -3, -2, -1))
    C = dens.sum(axis=tuple(range(1, len(sites))))
    return np.roll(C, -x0[0])


def free_wilson_pion_fft(sites, m):
    """Free Wilson C(t) from S(x) = (1/V) sum_p e^{ipx} D(p)^{-1}, antiperiodic p_0."""
    g = to_numpy(gamma_matrices(len(sites), NP))
    s = g.shape[-1]
    ps = [2 * np.pi * (np.arange(L) + (0.5 if mu == 0 else 0.0)) / L for mu, L in enumerate(sites)]
    P = np.meshgrid(*ps, indexing="ij")
    Dp = np.zeros((*sites, s, s), dtype=complex)
    Dp += (m + sum(1 - np.cos(p) for p in P))[..., None, None] * np.eye(s)
    for mu, p in enumerate(P):
        Dp += 1j * np.sin(p)[..., None, None] * g[mu]
    Sp = np.linalg.inv(Dp)
    axes = tuple(range(len(sites)))
    Sx = np.fft.ifftn(Sp, axes=axes)          # (1/V) sum_p e^{+ipx} S(p) with shifted p_0 ...
    # ... the half-integer p_0 = 2 pi (n + 1/2)/T gives an extra factor e^{i pi x_0 / T}
    T = sites[0]
    phase = np.exp(1j * np.pi * np.arange(T) / T).reshape((T,) + (1,) * (len(sites) + 1))
    Sx = Sx * phase
    dens = np.sum(np.abs(Sx) ** 2, axis=(-2, -1))
    return dens.sum(axis=tuple(range(1, len(sites))))


def links(xp, kind, sites, N, batch=1, seed=3):
    D = len(sites)
    if kind == "free":
        return identity(N, (batch, D, *sites), xp)
    rng = RandomStreams(seed=seed, n_chains=batch, xp=xp)
    if kind == "rough":
        return haar_random(rng, (D, *sites), N)
    return random_near_identity(rng, (D, *sites), N, 0.5)


# ------------------------------------------------------------------------------------------
# pion correlator
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sites,m", [((6, 4), 0.3), ((8, 4), 0.1)])
def test_free_wilson_pion_against_dense_and_fft(xp_cpu, sites, m):
    xp = xp_cpu
    U = links(xp, "free", sites, 1)
    W = WilsonDirac(U, mass=m)
    C = to_numpy(pion_correlator(W))
    assert C.shape == (1, sites[0]) and np.all(C > 0)
    Cd = dense_pion(dense(W.apply, sites, 2, 1, xp), sites, 2, 1, (0, 0))
    np.testing.assert_allclose(C[0], Cd, rtol=1e-9)
    np.testing.assert_allclose(Cd, free_wilson_pion_fft(sites, m), rtol=1e-10)
    # time reflection: C(t) = C(T - t)
    np.testing.assert_allclose(C[0, 1:], C[0, 1:][::-1], rtol=1e-9)
    # translation invariance of the free field: any source gives the same C(t)
    C2 = to_numpy(pion_correlator(W, source=(3, 1)))
    np.testing.assert_allclose(C2, C, rtol=1e-9)


@pytest.mark.parametrize("N,csw,source", [(1, 0.0, (0, 0)), (2, 1.0, (2, 1)), (3, 0.0, (5, 2))])
def test_wilson_pion_against_dense_inverse(xp_cpu, N, csw, source):
    xp = xp_cpu
    sites, m = (6, 4), 0.2
    U = links(xp, "rough", sites, N, batch=2)
    W = WilsonDirac(U, mass=m, csw=csw)
    C = to_numpy(pion_correlator(W, source=source, solver="bicgstab" if N == 2 else "cgne"))
    assert C.shape == (2, 6)
    for b in range(2):
        Wb = WilsonDirac(U[b:b + 1, ...], mass=m, csw=csw)
        Cd = dense_pion(dense(Wb.apply, sites, 2, N, xp), sites, 2, N, source)
        np.testing.assert_allclose(C[b], Cd, rtol=1e-9)


@pytest.mark.parametrize("kind,N", [("free", 1), ("rough", 1), ("rough", 2)])
def test_staggered_pion_against_dense_inverse(xp_cpu, kind, N):
    xp = xp_cpu
    sites, m = (8, 4), 0.15
    U = links(xp, kind, sites, N, batch=2)
    S = StaggeredDirac(U, mass=m)
    C = to_numpy(pion_correlator(S))
    assert C.shape == (2, 8) and np.all(C >= 0)
    if kind == "rough":        # (the free staggered propagator vanishes at t = T/2 on 8 x 4)
        assert np.all(C > 0)
    for b in range(2):
        Sb = StaggeredDirac(U[b:b + 1, ...], mass=m)
        M = dense(Sb.apply, sites, 1, N, xp)
        Cd = dense_pion(M, sites, 1, N, (0, 0))
        np.testing.assert_allclose(C[b], Cd, rtol=1e-9, atol=1e-14 * Cd.max())   # round-off
        # the Goldstone pion with the explicit eps(x) of the operator and G(0,x) from the dense
        # inverse (fermion-loop sign taken out, as for Wilson): eps(x) Tr[G(x,0) G(0,x)]
        # summed over space equals sum |G(x,0)|^2 -- the eps factors cancel
        Minv = np.linalg.inv(M).reshape(*sites, N, *sites, N)
        eps = (-1.0) ** np.indices(sites).sum(axis=0)
        G_x0 = Minv[:, :, :, 0, 0, :]                 # G(x, 0)  [*sites, N, N]
        G_0x = Minv[0, 0, :, :, :, :]                 # G(0, x)  [N, *sites, N]
        tr = np.einsum("xyab,bxya->xy", G_x0, G_0x)
        np.testing.assert_allclose((eps * tr).sum(axis=1), Cd, rtol=1e-10, atol=1e-14 * Cd.max())
    if kind == "free":
        np.testing.assert_allclose(C[:, 1:], C[:, 1:][:, ::-1], rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("which,N", [("wilson", 1), ("wilson", 2), ("staggered", 2)])
def test_pion_gauge_invariance(xp_cpu, which, N):
    xp = xp_cpu
    sites = (6, 4)
    U = links(xp, "rough", sites, N, batch=2, seed=5)
    g = random_gauge_transformation(RandomStreams(seed=9, n_chains=2, xp=xp), sites, N)
    Ug = gauge_transform(U, g)
    make = (lambda V: WilsonDirac(V, mass=0.25, csw=1.0)) if which == "wilson" else \
        (lambda V: StaggeredDirac(V, mass=0.2))
    C = to_numpy(pion_correlator(make(U)))
    Cg = to_numpy(pion_correlator(make(Ug)))
    np.testing.assert_allclose(Cg, C, rtol=1e-9)


def test_point_source_layout():
    W = WilsonDirac(links(NP, "free", (4, 6), 2, batch=3), mass=0.1)
    eta = to_numpy(point_source(W, 1, 0, (5, -1)))
    assert eta.shape == (3, 4, 6, 2, 2)
    nz = np.argwhere(eta != 0)
    assert len(nz) == 3 and np.all(nz[:, 1:] == [1, 5, 1, 0])


# ------------------------------------------------------------------------------------------
# effective mass
# ------------------------------------------------------------------------------------------
def test_effective_mass_of_exact_cosh(xp_cpu):
    xp = xp_cpu
    T = 16
    t = np.arange(T)
    masses = np.array([0.2, 0.7, 1.3])
    C = 2.5 * np.cosh(masses[:, None] * (t - T / 2))
    me = to_numpy(effective_mass(xp.asarray(C)))
    assert me.shape == (3, T - 1)                                   # t = 1 .. T-1
    np.testing.assert_allclose(me, np.repeat(masses[:, None], T - 1, axis=1), rtol=1e-10)
    # log form: exact for a pure exponential, biased by the backward part for a cosh
    E = 0.3 * np.exp(-masses[:, None] * t)
    ml = to_numpy(effective_mass(xp.asarray(E), kind="log"))
    assert ml.shape == (3, T - 1)
    np.testing.assert_allclose(ml, np.repeat(masses[:, None], T - 1, axis=1), rtol=1e-12)
    mlc = to_numpy(effective_mass(xp.asarray(C), kind="log"))
    assert np.all((mlc[:, : T // 2] < masses[:, None]) & (mlc[:, : T // 2] > 0))
    with pytest.raises(ValueError):
        effective_mass(xp.asarray(C), kind="plateau")


def test_free_wilson_effective_mass_is_a_plateau():
    """Free Wilson pion on a long lattice: the cosh effective mass settles at 2 E(p=0) with
    cosh E = 1 + m^2 / (2 (1 + m)) (two free quarks at rest, lattice dispersion)."""
    sites, m = (48, 4), 0.5
    W = WilsonDirac(links(NP, "free", sites, 1), mass=m)
    me = to_numpy(effective_mass(pion_correlator(W)))[0]
    E = np.arccosh(1 + m * m / (2 * (1 + m)))
    # finite spatial size adds momenta; the lightest state is two quarks at rest
    np.testing.assert_allclose(me[11:19], 2 * E, rtol=1e-3)     # t = 12 .. 19


# ------------------------------------------------------------------------------------------
# chiral condensate
# ------------------------------------------------------------------------------------------
def exact_condensate(dirac, xp, s):
    out = []
    for b in range(dirac.U.shape[0]):
        op = type(dirac)(dirac.U[b:b + 1, ...], mass=dirac.mass)
        M = dense(op.apply, dirac.sites, s, dirac.N, xp)
        out.append(np.trace(np.linalg.inv(M)) / np.prod(dirac.sites))
    return np.array(out)


@pytest.mark.parametrize("which,N,noise", [("wilson", 1, "z2"), ("wilson", 2, "gaussian"),
                                           ("staggered", 1, "z2"), ("staggered", 2, "gaussian")])
def test_condensate_matches_exact_trace(xp_cpu, which, N, noise):
    xp = xp_cpu
    sites = (4, 4)
    U = links(xp, "rough", sites, N, batch=2, seed=21)
    op = WilsonDirac(U, mass=0.3) if which == "wilson" else StaggeredDirac(U, mass=0.2)
    s = 2 if which == "wilson" else 1
    exact = exact_condensate(op, xp, s)
    assert np.all(np.abs(exact.imag) < 1e-12 * np.abs(exact.real))      # Tr D^{-1} is real
    n = 200 if xp is NP else 40          # array-api-strict: the same test, fewer sources
    rng = RandomStreams(seed=4, n_chains=2, xp=xp)
    est, samples = chiral_condensate(op, rng, n, noise=noise, return_samples=True)
    est, samples = to_numpy(est), to_numpy(samples)
    assert est.shape == (2,) and samples.shape == (n, 2)
    err = samples.std(axis=0, ddof=1) / np.sqrt(n)
    z = (est - exact.real) / err
    assert np.all(np.abs(z) < 4), (est, exact, err)
    assert np.all(err < 0.2 * np.abs(exact.real))                      # a real measurement


def test_condensate_noise_average_converges_as_inverse_sqrt_n():
    """16 independent noise sequences on one configuration: the deviations from the exact trace
    have chi^2/dof ~ 1 with the error sigma/sqrt(n) for n = 16 and n = 256."""
    B, sites = 16, (4, 4)
    U1 = links(NP, "rough", sites, 1, batch=1, seed=8)
    U = NP.concat([U1] * B, axis=0)
    W = WilsonDirac(U, mass=0.3)
    exact = exact_condensate(WilsonDirac(U1, mass=0.3), NP, 2)[0].real
    rms = {}
    for n, seed in [(16, 1), (256, 2)]:
        est, samples = chiral_condensate(W, RandomStreams(seed=seed, n_chains=B, xp=NP), n,
                                         return_samples=True)
        sigma = np.sqrt(np.mean(np.var(samples, axis=0, ddof=1)))        # single-source spread
        chi2 = np.sum((est - exact) ** 2) / (sigma ** 2 / n)
        assert 0.2 < chi2 / B < 2.5, (n, chi2 / B)
        rms[n] = np.sqrt(np.mean((est - exact) ** 2))
    assert 0.1 < rms[256] / rms[16] < 0.5                                 # ~ 1/4


def test_condensate_gauge_invariance(xp_cpu):
    xp = xp_cpu
    sites, N = (4, 4), 2
    U = links(xp, "rough", sites, N, batch=2, seed=13)
    g = random_gauge_transformation(RandomStreams(seed=14, n_chains=2, xp=xp), sites, N)
    Ug = gauge_transform(U, g)
    for make, s in [(lambda V: WilsonDirac(V, mass=0.3), 2), (lambda V: StaggeredDirac(V, 0.2), 1)]:
        np.testing.assert_allclose(exact_condensate(make(Ug), xp, s),
                                   exact_condensate(make(U), xp, s), rtol=1e-10)
        # the estimator with the noise rotated along: eta' = g eta gives the same number
        eta = RandomStreams(seed=15, n_chains=2, xp=xp).complex_normal((*sites, s, N))
        eta_g = xp.matmul(eta, xp.matrix_transpose(g))          # (g eta)(x), spin along
        a = to_numpy(_estimates(make(U), eta, "cgne", 1e-12))
        b = to_numpy(_estimates(make(Ug), eta_g, "cgne", 1e-12))
        np.testing.assert_allclose(b, a, rtol=1e-9)


def test_condensate_bad_input():
    W = WilsonDirac(links(NP, "free", (4, 4), 1, batch=2), mass=0.3)
    with pytest.raises(ValueError, match="chains"):
        chiral_condensate(W, RandomStreams(seed=1, n_chains=3, xp=NP), 4)
    with pytest.raises(ValueError, match="n_sources"):
        chiral_condensate(W, RandomStreams(seed=1, n_chains=2, xp=NP), 0)
    with pytest.raises(ValueError, match="noise"):
        chiral_condensate(W, RandomStreams(seed=1, n_chains=2, xp=NP), 2, noise="z3")
    with pytest.raises(ValueError, match="solver"):
        pion_correlator(W, solver="lu")
