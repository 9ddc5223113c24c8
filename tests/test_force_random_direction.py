"""Gauge-action forces against a central difference along a random Lie-algebra direction that
moves every link at once, with a relative metric (tests/fd_checks.py:
:func:`random_direction_deviation`): Wilson and the rectangle-improved actions, U(1) to SU(4),
D = 2, 3, 4, on NumPy and array-api-strict."""

import sys
from pathlib import Path

import pytest

from lattice_ml.backend import RandomStreams
from lattice_ml.gauge import GaugeAction
from lattice_ml.groups import random_near_identity

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fd_checks import assert_force_matches_random_direction  # noqa: E402

CASES = [(1, (4, 4)), (2, (4, 4, 4)), (3, (4, 4, 4, 4)), (4, (2, 2, 2, 4))]


@pytest.mark.parametrize("kind", ["wilson", "symanzik", "iwasaki", "dbw2"])
@pytest.mark.parametrize("N,shape", CASES)
def test_gauge_force_random_direction(xp_cpu, N, shape, kind):
    rng = RandomStreams(3, 2, xp_cpu)
    U = random_near_identity(rng, (len(shape), *shape), N, 0.5)
    assert_force_matches_random_direction(GaugeAction(1.3, N, kind), U, xp_cpu)
    # the part actions (the two time scales of a multi-level integrator) as well
    if kind != "wilson":
        for part in ("plaquette", "rectangle"):
            assert_force_matches_random_direction(GaugeAction(1.3, N, kind).part(part), U,
                                                  xp_cpu, seed=1)
