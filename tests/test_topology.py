"""Clover field strength and the 4D clover topological charge: an independent site-loop clover,
exact results on constant abelian fluxes (Q -> integer, with the lattice correction known in closed
form), and the symmetries: gauge invariance, odd under reflections and odd permutations of the
axes, even under charge conjugation, zero for fields that live in one plane."""

import itertools
import math

import numpy as np
import pytest

from lattice_ml.backend import RandomStreams, namespace_by_name, to_numpy
from lattice_ml.gauge.wilson_flow import (energy_density_clover, energy_density_plaquette,
                                          flow_generator, wilson_flow)
from lattice_ml.gauge.topology import (clover_field_strength, clover_field_strengths,
                                       clover_leaves, planes, topological_charge_clover,
                                       topological_charge_density_clover)
from lattice_ml.groups import (gauge_transform, haar_random, random_gauge_transformation,
                               random_near_identity)

NP = namespace_by_name("numpy")


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------
def naive_clover(U, x, mu, nu):
    """Q_{mu nu}(x) of one configuration ``U[D, *shape, N, N]`` by explicit index arithmetic,
    written from the four-leaf formula (module doc of lattice_ml.gauge.topology)."""
    D = U.shape[0]
    shape = U.shape[1:1 + D]

    def at(y, d):
        return U[(d, *[y[k] % shape[k] for k in range(D)])]

    def e(d, s=1):
        v = [0] * D
        v[d] = s
        return v

    def add(*vs):
        return [sum(c) for c in zip(*vs)]

    x = list(x)
    dag = lambda m: m.conj().T  # noqa: E731
    m, n = mu, nu
    q = at(x, m) @ at(add(x, e(m)), n) @ dag(at(add(x, e(n)), m)) @ dag(at(x, n))
    q += (at(x, n) @ dag(at(add(x, e(m, -1), e(n)), m)) @ dag(at(add(x, e(m, -1)), n))
          @ at(add(x, e(m, -1)), m))
    q += (dag(at(add(x, e(m, -1)), m)) @ dag(at(add(x, e(m, -1), e(n, -1)), n))
          @ at(add(x, e(m, -1), e(n, -1)), m) @ at(add(x, e(n, -1)), n))
    q += (dag(at(add(x, e(n, -1)), n)) @ at(add(x, e(n, -1)), m)
          @ at(add(x, e(m), e(n, -1)), n) @ dag(at(x, m)))
    return q


def constant_flux(shape, n01, n23):
    """Diagonal links ``[1, 4, *shape, N, N]`` (N = len(n01)) whose colour component k has the
    constant plaquette angle phi_k = 2 pi n01[k] / (L0 L1) in every (0,1) plaquette and
    phi'_k = 2 pi n23[k] / (L2 L3) in every (2,3) plaquette, and trivial plaquettes elsewhere
    (the standard twisted construction: a linear gauge potential plus a transition function in
    the last time slice). For SU(N) the quanta of each plane add up to zero."""
    L0, L1, L2, L3 = shape
    N = len(n01)
    x = np.indices(shape)
    theta = np.zeros((4, *shape, N))
    for k in range(N):
        phi = 2 * np.pi * n01[k] / (L0 * L1)
        theta[1, ..., k] = phi * x[0]
        theta[0, ..., k] = np.where(x[0] == L0 - 1, -phi * L0 * x[1], 0.0)
        phi2 = 2 * np.pi * n23[k] / (L2 * L3)
        theta[3, ..., k] = phi2 * x[2]
        theta[2, ..., k] = np.where(x[2] == L2 - 1, -phi2 * L2 * x[3], 0.0)
    U = np.zeros((1, 4, *shape, N, N), complex)
    for k in range(N):
        U[0, ..., k, k] = np.exp(1j * theta[..., k])
    return U


def reflect(U, axis):
    """The field reflected in ``axis`` (x_axis -> -x_axis): U'_axis(x) = U_axis(Rx - axis)^dag,
    U'_nu(x) = U_nu(Rx) for nu != axis. ``U`` host ``[batch, D, *shape, N, N]``."""
    ax = 2 + axis
    out = np.flip(U, axis=ax)
    out = np.roll(out, 1, axis=ax)                      # x -> -x mod L
    link = np.roll(out[:, axis], -1, axis=ax - 1)       # U_axis(R(x + axis_hat)) = U_axis(Rx - axis_hat)
    out = out.copy()
    out[:, axis] = np.conj(np.swapaxes(link, -1, -2))
    return out


def swap_axes(U, a, b):
    """The field with directions a and b exchanged (an odd permutation of the axes)."""
    out = np.swapaxes(U, 2 + a, 2 + b).copy()
    out[:, [a, b]] = out[:, [b, a]]
    return out


def random_field(xp, seed, shape, N, spread=0.5, batch=2):
    rng = RandomStreams(seed, batch, xp)
    return random_near_identity(rng, (len(shape), *shape), N, spread)


# ------------------------------------------------------------------------------------------
# clover field strength
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("N,shape", [(1, (3, 4)), (2, (3, 4, 3)), (3, (2, 3, 3, 4))])
def test_clover_matches_site_loop(xp, N, shape):
    rng = RandomStreams(4, 1, xp)
    D = len(shape)
    U = haar_random(rng, (D, *shape), N)
    host = to_numpy(U)[0]
    sites = list(itertools.product(*map(range, shape)))
    pick = [sites[i] for i in np.random.default_rng(0).choice(len(sites), 5, replace=False)]
    for mu in range(D):
        for nu in range(D):
            if mu == nu:
                continue
            Q = to_numpy(clover_leaves(U, mu, nu))[0]
            for x in pick:
                np.testing.assert_allclose(Q[x], naive_clover(host, x, mu, nu), atol=1e-12)


@pytest.mark.parametrize("N", [1, 2, 3])
def test_clover_field_strength_algebra(xp_cpu, N):
    """F is anti-hermitian, traceless for SU(N), antisymmetric in (mu, nu), and stacks in the
    order of planes()."""
    xp = xp_cpu
    U = random_field(xp, 5, (3, 2, 3, 2), N)
    Fs = to_numpy(clover_field_strengths(U))
    assert Fs.shape == (2, 6, 3, 2, 3, 2, N, N)
    for p, (mu, nu) in enumerate(planes(4)):
        F = to_numpy(clover_field_strength(U, mu, nu))
        np.testing.assert_array_equal(Fs[:, p], F)
        np.testing.assert_allclose(F, -np.conj(np.swapaxes(F, -1, -2)), atol=1e-15)
        np.testing.assert_allclose(to_numpy(clover_field_strength(U, nu, mu)), -F, atol=1e-14)
        if N > 1:
            np.testing.assert_allclose(np.trace(F, axis1=-2, axis2=-1), 0, atol=1e-14)
    with pytest.raises(ValueError, match="plane"):
        clover_field_strength(U, 1, 1)


# ------------------------------------------------------------------------------------------
# exact results on constant abelian fluxes
# ------------------------------------------------------------------------------------------
CASES = [  # (n01 per colour, n23 per colour, continuum charge sum_k n_k m_k)
    ((1,), (1,), 1),             # U(1)
    ((2,), (-1,), -2),           # U(1)
    ((1, -1), (1, -1), 2),       # SU(2), diag(1, -1) embedding
    ((1, 0, -1), (0, 1, -1), 1),  # SU(3): Q = 1 from abelian fluxes
    ((0, 1, -1), (1, 0, -1), 1),
    ((1, 0, -1), (0, -1, 1), -1),
]


@pytest.mark.parametrize("n01,n23,q", CASES)
@pytest.mark.parametrize("shape", [(4, 3, 3, 4), (6, 6, 6, 6)])
def test_constant_flux_charge_and_energy_exact(xp, n01, n23, q, shape):
    """Every plaquette of the (0,1) plane is diag(e^{i phi_k}), of the (2,3) plane
    diag(e^{i phi'_k}). The clover F is then exactly diag(i sin phi_k) (minus its trace/N for
    SU(N)), so Q = -(V/(4 pi^2)) Re Tr(F_01 F_23) = (V/(4 pi^2)) sum_k s_k s'_k, which tends to the
    integer sum_k n_k m_k as the fluxes per plaquette go to zero, and the energy densities are
    E_plaq = 2 sum_k (2 - cos phi_k - cos phi'_k), E_clover = sum_k (s_k^2 + s'_k^2)."""
    N = len(n01)
    host = constant_flux(shape, n01, n23)
    U = xp.asarray(host)
    V = math.prod(shape)
    phi = 2 * np.pi * np.array(n01) / (shape[0] * shape[1])
    phi2 = 2 * np.pi * np.array(n23) / (shape[2] * shape[3])
    s, s2 = np.sin(phi), np.sin(phi2)
    if N > 1:
        s, s2 = s - s.mean(), s2 - s2.mean()
    expected_q = V * np.sum(s * s2) / (4 * np.pi ** 2)
    Q = to_numpy(topological_charge_clover(U))[0]
    assert Q == pytest.approx(expected_q, abs=1e-12)
    # q(x) is uniform
    dens = to_numpy(topological_charge_density_clover(U))[0]
    np.testing.assert_allclose(dens, expected_q / V, atol=1e-14)
    # the lattice value is within O(phi^2) of the integer, and on the sign convention's side
    assert abs(Q - q) <= abs(q) * (np.max(np.abs(phi)) ** 2 + np.max(np.abs(phi2)) ** 2) / 6 + 1e-12
    # energy densities, exactly
    Ep = to_numpy(energy_density_plaquette(U))[0]
    Ec = to_numpy(energy_density_clover(U))[0]
    assert Ep == pytest.approx(2 * np.sum(2 - np.cos(phi) - np.cos(phi2)), abs=1e-12)
    assert Ec == pytest.approx(np.sum(s ** 2 + s2 ** 2), abs=1e-12)


def test_constant_flux_is_a_stationary_point_of_the_flow():
    """Uniform abelian fluxes solve the lattice field equations: Z = 0, so Q stays under flow."""
    U = NP.asarray(constant_flux((6, 6, 6, 6), (1, 0, -1), (0, 1, -1)))
    assert np.max(np.abs(to_numpy(flow_generator(U)))) < 1e-13
    res = wilson_flow(U, 0.5, 0.1, observables=["topological_charge"])
    Qt = to_numpy(res.observables["topological_charge"])[0]
    np.testing.assert_allclose(Qt, Qt[0], atol=1e-12)
    assert abs(Qt[0] - 1) < 0.011


# ------------------------------------------------------------------------------------------
# symmetries on generic fields
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("N", [1, 2, 3])
def test_charge_gauge_invariant(xp, N):
    U = random_field(xp, 6, (4, 3, 4, 3), N)
    g = random_gauge_transformation(RandomStreams(7, 2, xp), (4, 3, 4, 3), N)
    q, qg = (to_numpy(topological_charge_density_clover(V)) for V in (U, gauge_transform(U, g)))
    np.testing.assert_allclose(qg, q, atol=1e-13)
    assert np.max(np.abs(q.sum(axis=(1, 2, 3, 4)))) > 1e-3  # a generic field has Q != 0


@pytest.mark.parametrize("N", [1, 3])
@pytest.mark.parametrize("axis", [0, 2])
def test_charge_odd_under_reflection(N, axis):
    """Time reflection (axis 0) and a spatial reflection flip q: q'(x) = -q(Rx)."""
    host = to_numpy(random_field(NP, 8, (4, 3, 5, 3), N))
    ref = reflect(host, axis)
    q = to_numpy(topological_charge_density_clover(NP.asarray(host)))
    qr = to_numpy(topological_charge_density_clover(NP.asarray(ref)))
    expected = -np.roll(np.flip(q, axis=1 + axis), 1, axis=1 + axis)
    np.testing.assert_allclose(qr, expected, atol=1e-13)
    # the reflection is an involution on links and keeps plaquette energies
    np.testing.assert_allclose(reflect(ref, axis), host, atol=0)
    np.testing.assert_allclose(to_numpy(energy_density_clover(NP.asarray(ref))),
                               to_numpy(energy_density_clover(NP.asarray(host))), rtol=1e-13)


@pytest.mark.parametrize("a,b", [(0, 1), (1, 3)])
def test_charge_odd_under_axis_exchange_even_under_conjugation(a, b):
    host = to_numpy(random_field(NP, 9, (3, 3, 3, 3), 3))
    Q = to_numpy(topological_charge_clover(NP.asarray(host)))
    Qs = to_numpy(topological_charge_clover(NP.asarray(swap_axes(host, a, b))))
    Qc = to_numpy(topological_charge_clover(NP.asarray(np.conj(host))))
    np.testing.assert_allclose(Qs, -Q, atol=1e-13)
    np.testing.assert_allclose(Qc, Q, atol=1e-13)


@pytest.mark.parametrize("N", [1, 2, 3])
def test_charge_zero_for_fields_in_one_plane(xp_cpu, N):
    """U_0, U_1 arbitrary functions of (x0, x1), U_2 = U_3 = 1: only F_01 is non-zero."""
    xp = xp_cpu
    rng = RandomStreams(10, 2, xp)
    shape = (4, 3, 3, 2)
    U01 = to_numpy(haar_random(rng, (2, 4, 3), N))            # [batch, 2, L0, L1, N, N]
    host = np.zeros((2, 4, *shape, N, N), complex)
    host[...] = np.eye(N)
    host[:, :2] = U01[:, :, :, :, None, None]
    U = xp.asarray(host)
    np.testing.assert_allclose(to_numpy(topological_charge_density_clover(U)), 0, atol=1e-15)
    for mu, nu in planes(4):
        if (mu, nu) != (0, 1):
            np.testing.assert_allclose(to_numpy(clover_field_strength(U, mu, nu)), 0, atol=1e-15)


def test_charge_is_sum_of_density_and_translation_invariant():
    host = to_numpy(random_field(NP, 11, (4, 3, 3, 3), 2))
    U = NP.asarray(host)
    q = to_numpy(topological_charge_density_clover(U))
    np.testing.assert_allclose(to_numpy(topological_charge_clover(U)), q.sum(axis=(1, 2, 3, 4)),
                               rtol=1e-14)
    moved = np.roll(host, (1, 2), axis=(2, 4))
    np.testing.assert_allclose(to_numpy(topological_charge_density_clover(NP.asarray(moved))),
                               np.roll(q, (1, 2), axis=(1, 3)), atol=1e-14)


def test_charge_needs_four_dimensions():
    U = random_field(NP, 12, (3, 3, 3), 2, batch=1)
    with pytest.raises(ValueError, match="D = 4"):
        topological_charge_clover(U)
    with pytest.raises(ValueError, match="layout"):
        topological_charge_clover(NP.zeros((1, 4, 3, 3, 3, 2, 2), dtype=NP.complex128))
