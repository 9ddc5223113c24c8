"""Gauge actions and forces: loop counting, an independent site-loop evaluation, gauge
invariance, force covariance, and the force against finite differences along every generator."""

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

from lattice_ml.backend import RandomStreams, namespace_by_name, to_numpy
from lattice_ml.gauge import GaugeAction, loop_shapes, loops_through_link
from lattice_ml.groups import (gauge_transform, haar_random, random_gauge_transformation,
                               random_near_identity)

sys.path.insert(0, str(Path(__file__).parent))
from fd_checks import assert_force_matches_fd  # noqa: E402

KINDS = ["wilson", "symanzik", "iwasaki", "dbw2"]


@pytest.mark.parametrize("D", [2, 3, 4])
def test_number_of_loops_through_a_link(D):
    for mu in range(D):
        assert len(loops_through_link(loop_shapes("plaquette", D), mu, D)) == 2 * (D - 1)
        assert len(loops_through_link(loop_shapes("rectangle", D), mu, D)) == 6 * (D - 1)


def naive_action(U, beta, N, c1):
    """Site loop over all plaquettes and 1x2 rectangles, index arithmetic written out."""
    D = U.shape[0]
    shape = U.shape[1:1 + D]

    def link(x, mu, sign):
        if sign > 0:
            return U[(mu, *x)], tuple((x[n] + (n == mu)) % shape[n] for n in range(D))
        y = tuple((x[n] - (n == mu)) % shape[n] for n in range(D))
        return U[(mu, *y)].conj().T, y

    def loop(x, steps):
        m = np.eye(N, dtype=complex)
        for mu, s in steps:
            l, x = link(x, mu, s)
            m = m @ l
        return np.trace(m).real

    c0 = 1 - 8 * c1
    S = 0.0
    for x in itertools.product(*map(range, shape)):
        for mu in range(D):
            for nu in range(mu + 1, D):
                S += c0 * loop(x, [(mu, 1), (nu, 1), (mu, -1), (nu, -1)])
                S += c1 * loop(x, [(mu, 1), (mu, 1), (nu, 1), (mu, -1), (mu, -1), (nu, -1)])
                S += c1 * loop(x, [(mu, 1), (nu, 1), (nu, 1), (mu, -1), (nu, -1), (nu, -1)])
    return -beta / N * S


@pytest.mark.parametrize("N", [1, 2, 3])
@pytest.mark.parametrize("kind", ["wilson", "iwasaki"])
@pytest.mark.parametrize("shape", [(3, 4), (3, 3, 4)])
def test_action_matches_site_loop(xp, N, kind, shape):
    rng = RandomStreams(1, 2, xp)
    U = haar_random(rng, (len(shape), *shape), N)
    act = GaugeAction(2.3, N, kind)
    S = to_numpy(act.action(U))
    host = to_numpy(U)
    for b in range(2):
        assert S[b] == pytest.approx(naive_action(host[b], 2.3, N, act.c1), rel=1e-11)


@pytest.mark.parametrize("kind", KINDS)
def test_unit_field_action(kind):
    xp = namespace_by_name("numpy")
    D, shape, beta = 4, (2, 3, 2, 4), 1.7
    V = int(np.prod(shape))
    U = xp.asarray(np.broadcast_to(np.eye(3), (1, D, *shape, 3, 3)).astype(np.complex128))
    act = GaugeAction(beta, 3, kind)
    expected = -beta * V * (act.c0 * D * (D - 1) / 2 + act.c1 * D * (D - 1))
    assert to_numpy(act.action(U))[0] == pytest.approx(expected, rel=1e-13)


@pytest.mark.parametrize("N", [1, 2, 3, 4])
@pytest.mark.parametrize("kind", ["wilson", "dbw2"])
def test_gauge_invariance_and_force_covariance(xp, N, kind):
    shape = (4, 3, 2) if N < 4 else (4, 3)
    rng = RandomStreams(2, 2, xp)
    U = haar_random(rng, (len(shape), *shape), N)
    g = random_gauge_transformation(rng, shape, N)
    act = GaugeAction(1.1, N, kind)
    Ug = gauge_transform(U, g)
    np.testing.assert_allclose(to_numpy(act.action(Ug)), to_numpy(act.action(U)), rtol=1e-11)
    F, Fg = act.force(U), act.force(Ug)
    gd = xp.conj(xp.permute_dims(g, (0, *range(1, g.ndim - 2), g.ndim - 1, g.ndim - 2)))
    expected = g[:, None, ...] @ F @ gd[:, None, ...]
    np.testing.assert_allclose(to_numpy(Fg), to_numpy(expected), atol=1e-11)


@pytest.mark.parametrize("N,shape", [(1, (3, 4)), (2, (3, 4)), (3, (3, 4)), (4, (3, 4)),
                                     (5, (3, 4)), (2, (2, 3, 3)), (3, (2, 2, 3, 3))])
@pytest.mark.parametrize("kind", ["wilson", "iwasaki"])
def test_force_is_minus_derivative_along_every_generator(xp_cpu, N, shape, kind):
    """-2 Re Tr(T_a F_mu(x)) = -d/ds S[exp(s T_a) U_mu(x)] at s = 0 (central differences, float64),
    for every generator a, at links of every direction."""
    xp = xp_cpu
    D = len(shape)
    rng = RandomStreams(3, 1, xp)
    # near the identity: a physically relevant regime with non-trivial staples
    U = random_near_identity(rng, (D, *shape), N, 0.6)
    assert_force_matches_fd(GaugeAction(1.3, N, kind), U, xp)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="unknown gauge action 'lüscher'"):
        GaugeAction(1.0, 3, "lüscher")
    with pytest.raises(ValueError, match="N must be"):
        GaugeAction(1.0, 0)
    act = GaugeAction(1.0, 3)
    with pytest.raises(ValueError, match=r"3x3 matrices"):
        act.action(np.zeros((1, 2, 4, 4, 2, 2), dtype=complex))
    with pytest.raises(ValueError, match="does not match"):
        act.action(np.zeros((1, 3, 4, 4, 3, 3), dtype=complex))
