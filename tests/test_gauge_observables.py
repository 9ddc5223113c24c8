"""Gauge observables: definitions, gauge invariance, centre symmetry, integer charge."""

import numpy as np
import pytest

from lattice_ml.backend import RandomStreams, namespace_by_name, to_numpy
from lattice_ml.gauge.observables import (average_plaquette, average_rectangle, creutz_ratio,
                                          plaquette_per_plane, polyakov_loop,
                                          topological_charge_2d, wilson_loop)
from lattice_ml.groups import (gauge_transform, haar_random, random_gauge_transformation,
                               random_near_identity)


def loop_value(U, x, steps):
    """Re Tr of a loop from site x, index arithmetic written out (one configuration)."""
    D = U.shape[0]
    shape = U.shape[1:1 + D]
    m = np.eye(U.shape[-1], dtype=complex)
    x = list(x)
    for mu, s in steps:
        if s > 0:
            m = m @ U[(mu, *x)]
            x[mu] = (x[mu] + 1) % shape[mu]
        else:
            x[mu] = (x[mu] - 1) % shape[mu]
            m = m @ U[(mu, *x)].conj().T
    return np.trace(m).real / U.shape[-1]


@pytest.mark.parametrize("N", [1, 2, 3])
def test_loops_match_site_loops(xp, N):
    rng = RandomStreams(1, 1, xp)
    shape = (4, 3, 5)
    U = random_near_identity(rng, (3, *shape), N, 0.8)
    host = to_numpy(U)[0]
    sites = list(np.ndindex(*shape))
    pp = to_numpy(plaquette_per_plane(U))[0]
    for k, (mu, nu) in enumerate([(0, 1), (0, 2), (1, 2)]):
        ref = np.mean([loop_value(host, x, [(mu, 1), (nu, 1), (mu, -1), (nu, -1)]) for x in sites])
        assert pp[k] == pytest.approx(ref, rel=1e-12)
    assert to_numpy(average_plaquette(U))[0] == pytest.approx(pp.mean(), rel=1e-14)
    # W(2, 3): 2 along a spatial axis, 3 along time (axis 0)
    ref = np.mean([loop_value(host, x, [(k, 1)] * 2 + [(0, 1)] * 3 + [(k, -1)] * 2 + [(0, -1)] * 3)
                   for k in (1, 2) for x in sites])
    assert to_numpy(wilson_loop(U, 2, 3))[0] == pytest.approx(ref, rel=1e-12)
    rect = np.mean([loop_value(host, x, [(mu, 1)] * a + [(nu, 1)] * b + [(mu, -1)] * a + [(nu, -1)] * b)
                    for mu, nu in [(0, 1), (0, 2), (1, 2)] for a, b in ((2, 1), (1, 2)) for x in sites])
    assert to_numpy(average_rectangle(U))[0] == pytest.approx(rect, rel=1e-12)


@pytest.mark.parametrize("N", [1, 2, 3])
def test_observables_are_gauge_invariant(xp, N):
    rng = RandomStreams(2, 2, xp)
    shape = (4, 4)
    U = haar_random(rng, (2, *shape), N)
    g = random_gauge_transformation(rng, shape, N)
    Ug = gauge_transform(U, g)
    for f in (average_plaquette, average_rectangle, lambda u: wilson_loop(u, 2, 2)):
        np.testing.assert_allclose(to_numpy(f(Ug)), to_numpy(f(U)), rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(to_numpy(polyakov_loop(Ug)), to_numpy(polyakov_loop(U)),
                               atol=1e-12)
    if N == 1:
        np.testing.assert_allclose(to_numpy(topological_charge_2d(Ug)),
                                   to_numpy(topological_charge_2d(U)), atol=1e-9)


@pytest.mark.parametrize("N", [1, 2, 3])
def test_polyakov_loop_centre_symmetry(N):
    """Multiplying all time links of one time slice by a centre element z multiplies L by z and
    leaves the plaquette unchanged; on the unit field L = 1."""
    xp = namespace_by_name("numpy")
    U = to_numpy(haar_random(RandomStreams(3, 2, xp), (2, 6, 4), N)).copy()
    z = np.exp(2j * np.pi / (N if N > 1 else 7))
    V = U.copy()
    V[:, 0, 2] *= z
    np.testing.assert_allclose(polyakov_loop(V), z * polyakov_loop(U), atol=1e-12)
    if N > 1:
        np.testing.assert_allclose(average_plaquette(V), average_plaquette(U), atol=1e-12)
    one = np.broadcast_to(np.eye(N), U.shape).astype(complex)
    np.testing.assert_allclose(polyakov_loop(one), 1.0)


def test_topological_charge_is_integer_and_flips_under_reflection():
    xp = namespace_by_name("numpy")
    U = to_numpy(haar_random(RandomStreams(4, 16, xp), (2, 6, 6), 1))
    Q = topological_charge_2d(U)
    np.testing.assert_allclose(Q, np.round(Q), atol=1e-10)
    assert np.any(np.round(Q) != 0)
    # complex conjugation (charge conjugation) maps every plaquette angle to minus itself
    np.testing.assert_allclose(topological_charge_2d(U.conj()), -Q, atol=1e-10)
    with pytest.raises(ValueError, match="2D U\\(1\\)"):
        topological_charge_2d(np.zeros((1, 2, 4, 4, 2, 2), dtype=complex))


def test_creutz_ratio_of_area_law():
    """For W(R,T) = exp(-sigma R T - p (R + T)) the Creutz ratio is sigma exactly."""
    sigma, p = 0.3, 0.1

    def W(r, t):
        return np.exp(-sigma * r * t - p * (r + t))
    assert creutz_ratio(W(3, 3), W(2, 2), W(3, 2), W(2, 3)) == pytest.approx(sigma)
