"""Slow validation tier (`pytest -m slow`): free fields in D = 3 and 4 against the exact
finite-volume propagator with every integrator configuration, at higher statistics."""

import numpy as np
import pytest

from lattice_ml.backend import RandomStreams, namespace_by_name, to_numpy
from lattice_ml.lattice import Lattice
from lattice_ml.samplers import HMC, EuclideanSpace, Level
from lattice_ml.scalar import Phi4Action, free_propagator, phi2, two_point_function
from lattice_ml.stats import gamma_method

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("shape", [(6, 4, 4), (4, 4, 4, 4)])
@pytest.mark.parametrize("form,couplings", [("standard", dict(m2=0.3)),
                                            ("hopping", dict(beta=0.9 / 8))])
@pytest.mark.parametrize("scheme,fine", [("leapfrog", 0), ("omelyan", 0), ("leapfrog", 3)])
def test_free_field_higher_dimensions(shape, form, couplings, scheme, fine):
    xp = namespace_by_name("numpy")
    lat = Lattice(shape)
    action = Phi4Action(lat, form, lam=0.0, **couplings)
    if fine:
        levels = [Level([action.part("kinetic")], 5, scheme),
                  Level([action.part("local")], fine, scheme)]
    else:
        levels = [Level([action], 8, scheme)]
    hmc = HMC(levels, EuclideanSpace(), tau=1.0, tau_jitter=0.3)
    rng = RandomStreams(21, 16, xp)
    phi = 0.0 * rng.normal(shape)
    for _ in range(100):
        phi, _ = hmc.step(phi, rng)
    p2, C = [], []
    for _ in range(1500):
        phi, _ = hmc.step(phi, rng)
        p2.append(to_numpy(phi2(phi)))
        C.append(to_numpy(two_point_function(phi)))
    G = to_numpy(free_propagator(lat, xp, form, **couplings))
    r = gamma_method(np.array(p2).T)
    assert abs(r.value - G.mean()) < 4 * r.error
    C = np.array(C).transpose(1, 2, 0)
    exact_C = np.real(np.fft.ifft(G[(slice(None),) + (0,) * (lat.dim - 1)]))
    for t in range(shape[0]):
        rt = gamma_method(C[:, t])
        assert abs(rt.value - exact_C[t]) < 4 * rt.error, (t, rt.value, rt.error, exact_C[t])
