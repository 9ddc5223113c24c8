"""Property-based checks (hypothesis) of the φ⁴ actions over random shapes and couplings."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from lattice_ml.backend import RandomStreams, namespace_by_name, to_numpy
from lattice_ml.lattice import Lattice, shift
from lattice_ml.scalar import Phi4Action

xp = namespace_by_name("numpy")
shapes = st.lists(st.integers(1, 5), min_size=2, max_size=4)
couplings = st.floats(-3, 3, allow_nan=False)
positive = st.floats(0, 3, allow_nan=False)


def make(form, c, lam, shape):
    lat = Lattice(shape)
    kw = dict(m2=c) if form == "standard" else dict(beta=c)
    return lat, Phi4Action(lat, form, lam=lam, **kw)


@settings(max_examples=40, deadline=None)
@given(shape=shapes, form=st.sampled_from(["standard", "hopping"]), c=couplings, lam=positive,
       seed=st.integers(0, 2**31))
def test_directional_derivative_matches_force(shape, form, c, lam, seed):
    """dS/ds along a random direction v at s = 0 equals -<F, v> (central difference, float64)."""
    lat, action = make(form, c, lam, shape)
    rng = RandomStreams(seed, 2, xp)
    phi, v = rng.normal(lat.shape), rng.normal(lat.shape)
    h = 1e-4
    fd = to_numpy(action.action(phi + h * v) - action.action(phi - h * v)) / (2 * h)
    exact = -np.sum(to_numpy(action.force(phi) * v), axis=tuple(range(1, lat.dim + 1)))
    scale = 1 + np.abs(exact) + np.abs(to_numpy(action.action(phi)))
    np.testing.assert_allclose(fd, exact, atol=1e-6 * scale.max(), rtol=1e-6)


@settings(max_examples=30, deadline=None)
@given(shape=shapes, form=st.sampled_from(["standard", "hopping"]), c=couplings, lam=positive,
       seed=st.integers(0, 2**31), mu=st.integers(0, 3), step=st.integers(-3, 3))
def test_symmetries(shape, form, c, lam, seed, mu, step):
    """The action is invariant under lattice translations and under phi -> -phi."""
    lat, action = make(form, c, lam, shape)
    mu = mu % lat.dim
    phi = RandomStreams(seed, 2, xp).normal(lat.shape)
    S = to_numpy(action.action(phi))
    np.testing.assert_allclose(to_numpy(action.action(shift(phi, mu, step))), S, rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_allclose(to_numpy(action.action(-phi)), S, rtol=1e-12, atol=1e-12)
