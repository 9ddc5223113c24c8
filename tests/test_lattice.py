import itertools

import numpy as np
import pytest

from lattice_ml.backend import RandomStreams, to_numpy
from lattice_ml.lattice import Lattice, shift


@pytest.mark.parametrize("shape", [(4, 6), (4, 2, 6), (2, 4, 4, 6)])
def test_shift_matches_index_arithmetic(xp, shape):
    lat = Lattice(shape)
    f = RandomStreams(0, 2, xp).normal(shape)
    host = to_numpy(f)
    for mu in range(lat.dim):
        for step in (1, -1, 2):
            g = to_numpy(shift(f, mu, step))
            for x in itertools.islice(itertools.product(*map(range, shape)), 0, None, 7):
                y = list(x)
                y[mu] = (y[mu] + step) % shape[mu]
                assert g[(1, *x)] == host[(1, *y)]
        back = shift(shift(f, mu, 1), mu, -1)
        np.testing.assert_array_equal(to_numpy(back), host)


def test_shift_with_site_axis_and_internal_axes(xp):
    # links [batch, D, *sites, N, N]: sites start at axis 2
    U = RandomStreams(1, 1, xp).normal((2, 4, 6, 3, 3))
    out = to_numpy(shift(U, 1, 1, site_axis=2))
    np.testing.assert_array_equal(out[0, :, :, 2], to_numpy(U)[0, :, :, 3])


def test_antiperiodic_shift(xp):
    f = xp.ones((1, 4, 3), dtype=xp.float64)
    fwd = to_numpy(shift(f, 0, 1, antiperiodic=True))[0, :, 0]
    bwd = to_numpy(shift(f, 0, -1, antiperiodic=True))[0, :, 0]
    np.testing.assert_array_equal(fwd, [1, 1, 1, -1])
    np.testing.assert_array_equal(bwd, [-1, 1, 1, 1])
    # forward then backward is the identity; going once around the lattice gives -1
    g = RandomStreams(2, 1, xp).normal((4, 3))
    np.testing.assert_array_equal(to_numpy(shift(shift(g, 0, 1, antiperiodic=True), 0, -1,
                                                 antiperiodic=True)), to_numpy(g))
    np.testing.assert_array_equal(to_numpy(shift(g, 0, 4, antiperiodic=True)), -to_numpy(g))
    # the spatial direction stays periodic
    np.testing.assert_array_equal(to_numpy(shift(g, 1, 3)), to_numpy(g))


@pytest.mark.parametrize("shape", [(4, 4), (2, 4, 6), (4, 4, 4, 2)])
def test_checkerboards(xp, shape):
    lat = Lattice(shape)
    even = to_numpy(lat.even_mask(xp))
    odd = to_numpy(lat.odd_mask(xp))
    assert even.sum() == odd.sum() == lat.volume // 2
    assert not np.any(even & odd)
    par = to_numpy(lat.parity(xp))
    np.testing.assert_array_equal(np.flatnonzero(par.ravel() == 0), to_numpy(lat.even_indices(xp)))
    np.testing.assert_array_equal(np.flatnonzero(par.ravel() == 1), to_numpy(lat.odd_indices(xp)))
    # every nearest neighbour of an even site is odd
    m = xp.astype(lat.even_mask(xp), xp.float64)[None, ...]
    for mu in range(lat.dim):
        np.testing.assert_array_equal(to_numpy(shift(m, mu, 1))[0], odd.astype(float))


def test_momenta_and_laplacian(xp):
    lat = Lattice((4, 6))
    p0, p1 = lat.momenta(xp)
    assert to_numpy(p1)[0, 3] == pytest.approx(np.pi)
    phat2 = to_numpy(lat.phat_squared(xp))
    # phat^2 is the eigenvalue of minus the lattice Laplacian on the plane wave exp(i p.x)
    x = np.indices(lat.shape)
    n = (1, 2)
    wave = np.exp(1j * 2 * np.pi * (n[0] * x[0] / 4 + n[1] * x[1] / 6))
    lap = sum(np.roll(wave, -1, mu) + np.roll(wave, 1, mu) - 2 * wave for mu in range(2))
    np.testing.assert_allclose(-lap, phat2[n] * wave, atol=1e-12)


@pytest.mark.parametrize("shape", [(4,), (2, 2, 2, 2, 2), (4, 0), (4, 2.5), (4, True)])
def test_bad_shapes(shape):
    with pytest.raises(ValueError, match="lattice"):
        Lattice(shape)


def test_check_field_names_the_problem(xp):
    lat = Lattice((4, 4))
    with pytest.raises(ValueError, match=r"expected \[batch, 4, 4\]"):
        lat.check_field(xp.zeros((2, 4, 6)), name="phi")
