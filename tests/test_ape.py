"""APE smearing and the maximal-trace projection onto SU(N)."""

import numpy as np
import pytest
import scipy.linalg
import scipy.optimize

from lattice_ml.backend import RandomStreams, to_numpy
from lattice_ml.gauge.action import GaugeAction
from lattice_ml.gauge.observables import average_plaquette
from lattice_ml.groups import (algebra_to_matrix, check_links, gauge_transform, haar_random,
                               random_gauge_transformation, random_near_identity)
from lattice_ml.smearing.ape import ape_smear, ape_staples, project_max_trace

SHAPES = {2: (4, 3), 3: (3, 4, 3), 4: (3, 2, 3, 2)}


def npy(x):
    return np.asarray(to_numpy(x))


def rough(xp, N, D, seed=1, batch=2):
    rng = RandomStreams(seed, batch, xp)
    return haar_random(rng, (D,) + SHAPES[D], N)


def ginibre(n, N, seed=0):
    r = np.random.default_rng(seed)
    return r.normal(size=(n, N, N)) + 1j * r.normal(size=(n, N, N))


def retr(W, M):
    """Re Tr(W^dag M) per matrix (host NumPy)."""
    return np.real(np.einsum("...ij,...ij->...", np.conj(W), M))


# ------------------------------------------------------------------------------------------
# the projection
# ------------------------------------------------------------------------------------------
def haar_host(n, N, seed):
    rng = RandomStreams(seed, 1)
    return npy(haar_random(rng, (n,), N))[0]


@pytest.mark.parametrize("N", [2, 3])
def test_projection_maximises_against_brute_force(N):
    """The projection beats a multi-start BFGS over the group and matches its best value."""
    M = ginibre(2, N, seed=N)
    # include matrices whose maximum has an obtuse angle: det phase near pi, one small sigma
    X, _, Yh = np.linalg.svd(ginibre(1, N, seed=10 + N)[0])
    sig = np.linspace(1.0, 2.0, N)
    sig[0] = 0.05
    M = np.concatenate([M, ((X * sig) @ Yh)[None] * np.exp(1j * 2.9 / N)])
    W = npy(project_max_trace(M))
    ours = retr(W, M)
    T = npy(algebra_to_matrix(np.eye(N * N - 1), N))  # generators [n_gen, N, N]
    rs = np.random.default_rng(5)
    for k in range(M.shape[0]):
        best = -np.inf
        for start in range(5):
            V = haar_host(1, N, 100 * k + start)[0]

            def f(x):
                return -retr(V @ scipy.linalg.expm(np.tensordot(x, T, 1)), M[k])

            res = scipy.optimize.minimize(f, 0.3 * rs.normal(size=N * N - 1), method="BFGS",
                                          options={"gtol": 1e-12})
            best = max(best, -res.fun)
        assert ours[k] >= best - 1e-12
        assert ours[k] == pytest.approx(best, abs=1e-8)


@pytest.mark.parametrize("N", [2, 3, 5])
def test_projection_beats_random_and_nearby_elements(xp_cpu, N):
    xp = xp_cpu
    M = ginibre(50, N, seed=3)
    W = npy(project_max_trace(xp.asarray(M)))
    ours = retr(W, M)
    # 200 Haar elements per matrix never do better
    R = haar_host(200, N, 7)
    assert np.all(retr(R[:, None], M[None]) <= ours[None] + 1e-12)
    # nearby elements W exp(eps X) are worse, by O(eps^2)
    rng = RandomStreams(2, 1)
    for eps in (1e-1, 1e-3):
        Z = npy(random_near_identity(rng, (50,), N, eps))[0]
        assert np.all(retr(W @ Z, M) <= ours + 1e-12)


@pytest.mark.parametrize("N", [2, 3, 4, 6])
def test_projection_stationarity_and_group(xp_cpu, N):
    """TA(W^dag M) = 0 at the maximum, and W in SU(N), for random complex matrices."""
    xp = xp_cpu
    M = ginibre(300, N, seed=N)
    W, info = project_max_trace(xp.asarray(M), return_info=True)
    assert info["residual"] <= 1e-12
    W = npy(W)
    K = np.conj(np.swapaxes(W, -1, -2)) @ M
    A = 0.5 * (K - np.conj(np.swapaxes(K, -1, -2)))
    A = A - np.trace(A, axis1=-2, axis2=-1)[:, None, None] / N * np.eye(N)
    assert np.abs(A).max() <= 1e-11 * np.abs(M).max()
    np.testing.assert_allclose(np.conj(np.swapaxes(W, -1, -2)) @ W,
                               np.broadcast_to(np.eye(N), W.shape), atol=1e-13)
    np.testing.assert_allclose(np.linalg.det(W), 1.0, atol=1e-13)


@pytest.mark.parametrize("N", [2, 3, 4])
def test_projection_exact_cases(xp_cpu, N):
    """M = V H with V in SU(N) and H positive definite has the maximiser V (any conditioning);
    the projection is invariant under M -> c M (c > 0) and idempotent on the group."""
    xp = xp_cpu
    V = haar_host(20, N, 11)
    r = np.random.default_rng(4)
    A = r.normal(size=(20, N, N)) + 1j * r.normal(size=(20, N, N))
    H = A @ np.conj(np.swapaxes(A, -1, -2)) + 1e-3 * np.eye(N)   # condition numbers up to ~1e4
    M = V @ H
    W = npy(project_max_trace(xp.asarray(M)))
    np.testing.assert_allclose(W, V, atol=1e-10)
    W2 = npy(project_max_trace(xp.asarray(3.7 * M)))
    np.testing.assert_allclose(W2, W, atol=1e-12)
    np.testing.assert_allclose(npy(project_max_trace(xp.asarray(V))), V, atol=1e-14)


def test_projection_u1(xp_cpu):
    z = ginibre(10, 1, seed=2)
    W = npy(project_max_trace(xp_cpu.asarray(z)))
    np.testing.assert_allclose(W, z / np.abs(z), rtol=1e-15)


# ------------------------------------------------------------------------------------------
# APE smearing
# ------------------------------------------------------------------------------------------
def test_staples_match_the_wilson_staple_sum(xp):
    """sum_nu (S^+ + S^-) = V_mu^dag with V_mu the Wilson staple sum of GaugeAction."""
    for N, D in [(1, 2), (2, 3), (3, 4)]:
        U = rough(xp, N, D)
        act = GaugeAction(1.0, N, "wilson")
        for mu in range(D):
            V = npy(act.staple_sum(U, mu))
            np.testing.assert_allclose(npy(ape_staples(U, mu)),
                                       np.conj(np.swapaxes(V, -1, -2)), atol=1e-13)


def _ape_one_link_by_hand(U, alpha, b, mu, x, spatial_only=False):
    """M for one link from explicit site arithmetic (independent of lattice_ml.gauge.paths)."""
    D = U.shape[1]
    L = U.shape[2:2 + D]

    def link(nu, y):
        return U[(b, nu) + tuple(int(c) % l for c, l in zip(y, L))]

    def e(nu):
        v = np.zeros(D, dtype=int)
        v[nu] = 1
        return v

    x = np.array(x)
    dirs = [nu for nu in range(1 if spatial_only else 0, D) if nu != mu]
    S = 0
    for nu in dirs:
        S = S + link(nu, x) @ link(mu, x + e(nu)) @ np.conj(link(nu, x + e(mu)).T)
        y = x - e(nu)
        S = S + np.conj(link(nu, y).T) @ link(mu, y) @ link(nu, y + e(mu))
    return (1 - alpha) * link(mu, x) + alpha / (2 * len(dirs)) * S


@pytest.mark.parametrize("N,D", [(1, 2), (1, 4), (2, 3), (3, 4), (3, 3)])
@pytest.mark.parametrize("spatial_only", [False, True])
def test_one_step_against_hand_computation(N, D, spatial_only):
    if spatial_only and D == 2:
        pytest.skip("spatial smearing needs D >= 3")
    import array_api_compat.numpy as xp

    U = rough(xp, N, D, seed=5)
    alpha = 0.37
    out = npy(ape_smear(U, alpha, spatial_only=spatial_only))
    Uh = npy(U)
    r = np.random.default_rng(8)
    for _ in range(6):
        b = int(r.integers(2))
        mu = int(r.integers(1 if spatial_only else 0, D))
        x = [int(r.integers(l)) for l in SHAPES[D]]
        M = _ape_one_link_by_hand(Uh, alpha, b, mu, x, spatial_only)
        if N == 1:
            want = M / abs(M)
        else:  # the projection itself is tested above
            want = npy(project_max_trace(M[None]))[0]
        np.testing.assert_allclose(out[(b, mu) + tuple(x)], want, atol=1e-13)
    if spatial_only:
        np.testing.assert_array_equal(out[:, 0], Uh[:, 0])


@pytest.mark.parametrize("N", [1, 2, 3, 4])
def test_output_in_group(xp, N):
    for D in (2, 3, 4):
        U = rough(xp, N, D)
        out = ape_smear(U, 0.6, n_steps=2)
        check_links(out, N=N)
        assert out.shape == U.shape and out.dtype == U.dtype


@pytest.mark.parametrize("N", [1, 2, 3])
@pytest.mark.parametrize("spatial_only", [False, True])
def test_gauge_covariance(xp, N, spatial_only):
    """smear(U^g) = smear(U)^g for the maximal-trace projection."""
    D = 4 if spatial_only else 3
    U = rough(xp, N, D, seed=2)
    g = random_gauge_transformation(RandomStreams(9, 2, xp), SHAPES[D], N)
    a = npy(ape_smear(gauge_transform(U, g), 0.5, n_steps=2, spatial_only=spatial_only))
    b = npy(gauge_transform(ape_smear(U, 0.5, n_steps=2, spatial_only=spatial_only), g))
    np.testing.assert_allclose(a, b, atol=1e-11)


def test_gram_schmidt_projection_is_not_covariant():
    """Documented limitation: Gram-Schmidt mixes rows after a left rotation (N >= 3)."""
    import array_api_compat.numpy as xp

    N, D = 3, 3
    U = rough(xp, N, D, seed=2)
    g = random_gauge_transformation(RandomStreams(9, 2, xp), SHAPES[D], N)
    a = npy(ape_smear(gauge_transform(U, g), 0.5, projection="gram_schmidt"))
    b = npy(gauge_transform(ape_smear(U, 0.5, projection="gram_schmidt"), g))
    assert np.abs(a - b).max() > 1e-3
    check_links(a)
    # SU(2): a real combination of SU(2) matrices is a multiple of one, so both projections agree
    U2 = rough(xp, 2, D, seed=2)
    np.testing.assert_allclose(npy(ape_smear(U2, 0.5, projection="gram_schmidt")),
                               npy(ape_smear(U2, 0.5)), atol=1e-13)


@pytest.mark.parametrize("N", [1, 2, 3])
def test_alpha_zero_is_identity(xp, N):
    U = rough(xp, N, 3)
    np.testing.assert_allclose(npy(ape_smear(U, 0.0, n_steps=3)), npy(U), atol=1e-14)
    np.testing.assert_array_equal(npy(ape_smear(U, 0.5, n_steps=0)), npy(U))


@pytest.mark.parametrize("N", [1, 2, 3, 4])
@pytest.mark.parametrize("start", ["haar", "spread1"])
def test_plaquette_increases(N, start):
    """On rough fields APE at alpha = 0.5 raises the average plaquette at each of 5 steps, in
    D = 2, 3, 4 (not a theorem: an empirical property of smearing rough fields, checked here on
    Haar-random fields and on exp(X) with unit-variance algebra coordinates)."""
    import array_api_compat.numpy as xp

    for D in (2, 3, 4):
        rng = RandomStreams(3, 2, xp)
        shape = (D,) + SHAPES[D]
        U = haar_random(rng, shape, N) if start == "haar" else random_near_identity(rng, shape,
                                                                                      N, 1.0)
        P = [npy(average_plaquette(U))]
        for _ in range(5):
            U = ape_smear(U, 0.5, check=False)
            P.append(npy(average_plaquette(U)))
        assert np.all(np.diff(np.array(P), axis=0) > 0), (D, np.array(P))


def test_spatial_only_leaves_time_links_and_ignores_them(xp):
    N, D = 3, 4
    U = rough(xp, N, D, seed=4)
    out = npy(ape_smear(U, 0.5, n_steps=2, spatial_only=True))
    Uh = npy(U)
    np.testing.assert_array_equal(out[:, 0], Uh[:, 0])
    assert np.abs(out[:, 1:] - Uh[:, 1:]).min() > 0
    # spatial smearing does not look at time links
    U2 = np.concatenate([npy(rough(xp, N, D, seed=6))[:, :1], Uh[:, 1:]], axis=1)
    out2 = npy(ape_smear(xp.asarray(U2), 0.5, n_steps=2, spatial_only=True))
    np.testing.assert_array_equal(out2[:, 1:], out[:, 1:])


def test_complex64(xp_cpu):
    U = rough(xp_cpu, 3, 3)
    U32 = xp_cpu.astype(U, xp_cpu.complex64)
    out = ape_smear(U32, 0.5, n_steps=2)
    assert out.dtype == xp_cpu.complex64
    check_links(out)
    np.testing.assert_allclose(npy(out), npy(ape_smear(U, 0.5, n_steps=2)), atol=2e-5)


def test_bad_inputs(xp_cpu):
    U = rough(xp_cpu, 3, 3)
    for alpha in (-0.1, 1.5, float("nan"), "a"):
        with pytest.raises(ValueError, match="alpha must be"):
            ape_smear(U, alpha)
    with pytest.raises(ValueError, match="layout"):
        ape_smear(U[0, ...], 0.5)
    with pytest.raises(ValueError, match="layout"):
        ape_smear(U[:, :2, ...], 0.5)     # D = 2 on three site axes
    with pytest.raises(ValueError, match="n_steps"):
        ape_smear(U, 0.5, n_steps=-1)
    with pytest.raises(ValueError, match="unknown projection"):
        ape_smear(U, 0.5, projection="svd")
    with pytest.raises(ValueError, match="spatial_only smearing needs D >= 3"):
        ape_smear(rough(xp_cpu, 3, 2), 0.5, spatial_only=True)
    with pytest.raises(ValueError, match="not unitary"):
        ape_smear(2.0 * U, 0.5)
