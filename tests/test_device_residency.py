"""An HMC trajectory stays on the device: host<->device traffic counted exactly on
array-api-strict's ``device1`` (a stand-in for a GPU: it refuses conversion to NumPy and mixing
with host arrays) by :func:`lattice_ml.backend.count_host_transfers`.

With the counter random streams nothing is copied to the device during a φ⁴ or gauge
trajectory, and the only values read back are the input check's scalars; with fermions the
solvers read their scalars once per ``DEVICE_CHECK_EVERY`` iterations and upload three tiny
masks per solve, and the Dirac operator's constants are not copied again at every application.
"""

import numpy as np
import pytest

from lattice_ml.backend import (CounterRandomStreams, RandomStreams, count_host_transfers,
                                to_numpy)
from lattice_ml.fermions import WilsonPseudofermionAction
from lattice_ml.fermions.solvers import _common as solver_common
from lattice_ml.gauge import GaugeAction
from lattice_ml.groups import haar_random, identity_like
from lattice_ml.lattice import Lattice
from lattice_ml.samplers import HMC, EuclideanSpace, Level, LieGroupSpace, PseudofermionHMC
from lattice_ml.scalar import Phi4Action

strict = pytest.importorskip("array_api_strict")
DEVICE = strict.Device("device1")


def test_the_counter_sees_reads_and_writes():
    with count_host_transfers() as n:
        a = strict.asarray(np.ones(10), device=DEVICE)      # a write of 80 bytes
        float(a[0])                                          # a read of one float64
        to_numpy(a)                                          # a read of the array
        strict.asarray(np.ones(3))                           # the CPU device: not counted
    assert n == {"reads": 2, "read_bytes": 88, "writes": 1, "write_bytes": 80}
    # the patch is gone after the block
    with count_host_transfers() as m:
        pass
    float(a[0])
    assert m["reads"] == 0


@pytest.mark.parametrize("streams,writes", [(CounterRandomStreams, 0), (RandomStreams, 3)])
def test_phi4_and_gauge_trajectories_stay_on_the_device(streams, writes):
    rng = streams(1, 2, strict, device=DEVICE)
    phi4 = Phi4Action(Lattice((8, 8)), "standard", lam=1.0, m2=-1.0)
    hmc = HMC([Level([phi4], 4, "omelyan")], EuclideanSpace(), tau=1.0, tau_jitter=0.2)
    phi = rng.normal((8, 8))
    with count_host_transfers() as n:
        phi, info = hmc.step(phi, rng)
    # one read: the input check (no NaN); host streams copy momenta, tau jitter and the
    # Metropolis uniforms
    assert n["reads"] == 1 and n["writes"] == writes
    assert "device1" in str(phi.device) and "device1" in str(info.delta_h.device)
    U = identity_like(haar_random(rng, (4, 4, 4, 4, 4), 3))
    hmc = HMC([Level([GaugeAction(6.0, 3)], 4, "omelyan")], LieGroupSpace(3), tau=1.0,
              tau_jitter=0.2)
    with count_host_transfers() as n:
        U, info = hmc.step(U, rng)
    assert n["reads"] == 1 and n["writes"] == writes   # the link check, one transfer


def test_fermion_trajectory_reads_once_per_check_interval(monkeypatch):
    """2D U(1), two Wilson flavours: CG's scalars come back once per DEVICE_CHECK_EVERY
    iterations (so 1/10 of the reads of a read per iteration, give or take the per-solve start
    and end), and what goes to the device is a few masks per solve, not the Dirac operator's
    constants at every application (that was 5181 copies per trajectory)."""
    def trajectory(check_every):
        monkeypatch.setattr(solver_common, "DEVICE_CHECK_EVERY", check_every)
        rng = CounterRandomStreams(3, 2, strict, device=DEVICE)
        U = haar_random(rng, (2, 6, 6), 1)
        ferm = WilsonPseudofermionAction(0.2, 1, tol=1e-10)
        hmc = PseudofermionHMC([Level([ferm], 3, "omelyan"), Level([GaugeAction(2.0, 1)], 2,
                                                                   "omelyan")],
                               LieGroupSpace(1), tau=1.0, tau_jitter=0.2)
        with count_host_transfers() as n:
            U, info = hmc.step(U, rng)
        return n, to_numpy(U)

    every, U10 = trajectory(10)
    each, U1 = trajectory(1)
    np.testing.assert_array_equal(U10, U1)                # the same trajectory
    assert every["reads"] < 0.3 * each["reads"], (every, each)
    # three masks per solve in both; the first application of the Dirac operator in this
    # process also puts its constants (gamma matrices, two boundary-sign vectors) on the device
    # once (backend.device_constant), whichever trajectory comes first
    assert 0 <= every["writes"] - each["writes"] <= 3 and every["write_bytes"] < 1024


def test_device_constants_are_shared_read_only():
    """The Dirac operator's constants are cached per namespace, dtype and device: the same
    object comes back, and on NumPy it cannot be written (a write would change every later
    operator)."""
    from lattice_ml.backend import namespace_by_name
    from lattice_ml.fermions.gamma import gamma_matrices
    xp = namespace_by_name("numpy")
    g = gamma_matrices(4, xp)
    assert gamma_matrices(4, xp) is g
    with pytest.raises(ValueError, match="read-only"):
        g[0] = 0
    assert gamma_matrices(4, xp, dtype=xp.complex64) is not g
    on_device = gamma_matrices(4, strict, device=DEVICE)
    assert "device1" in str(on_device.device)
    assert gamma_matrices(4, strict) is not on_device      # the CPU device is another key
