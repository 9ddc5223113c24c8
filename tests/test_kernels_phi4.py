"""Numba kernels of the φ⁴ force (lattice_ml.kernels.phi4) against the array-API reference:
CPU njit and CUDA (Numba's simulator without a GPU), both forms, kinetic/local parts, D = 2, 3, 4,
batches, both precisions; Phi4Action.force dispatches to the kernel for NumPy arrays and to the
reference when kernels are off."""

import numpy as np
import pytest

from lattice_ml import dispatch
from lattice_ml.backend import RandomStreams, namespace_by_name
from lattice_ml.dispatch import kernel_mode, trace
from lattice_ml.kernels import phi4 as kphi
from lattice_ml.kernels._common import cuda_simulator, cuda_usable
from lattice_ml.lattice import Lattice
from lattice_ml.scalar import Phi4Action
from lattice_ml.scalar.phi4 import phi4_force

NP = namespace_by_name("numpy")
FORMS = [("standard", -0.7), ("hopping", 0.3)]   # (form, m2 or beta)
PARTS = [(True, True), (True, False), (False, True)]
SHAPES = [(4, 6), (2, 3, 4), (4, 2, 3, 2)]        # extents 2 (both neighbours equal) and odd
TOL = {"float32": 20 * np.finfo(np.float32).eps, "float64": 20 * np.finfo(np.float64).eps}


def field(shape, dtype, batch=2, seed=3):
    return np.ascontiguousarray(RandomStreams(seed, batch, NP, dtype=dtype).normal(shape))


def assert_close(got, want, tol):
    assert got.dtype == want.dtype and got.shape == want.shape
    scale = float(np.max(np.abs(want)))
    assert scale > 0.1
    assert float(np.max(np.abs(got - want))) <= tol * scale


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cpu_kernel_equals_reference(dtype):
    for shape in SHAPES:
        phi = field(shape, dtype)
        for form, c in FORMS:
            for kin, loc in PARTS:
                want = phi4_force.reference(phi, form, kin, loc, c, 1.3)
                assert_close(kphi.phi4_force_cpu(phi, form, kin, loc, c, 1.3), want, TOL[dtype])


@pytest.mark.skipif(not cuda_usable(), reason="no CUDA GPU and no CUDA simulator")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cuda_kernel_equals_reference(dtype):
    for shape in [(4, 2), (2, 2, 3, 2)]:
        phi = field(shape, dtype)
        dev = phi
        if not cuda_simulator():
            dev = pytest.importorskip("cupy").asarray(phi)
        for (form, c), (kin, loc) in zip(FORMS, [(True, True), (False, True)]):
            got = kphi.phi4_force_cuda(dev, form, kin, loc, c, 1.3)
            got = got if isinstance(got, np.ndarray) else got.get()
            assert_close(got, phi4_force.reference(phi, form, kin, loc, c, 1.3), TOL[dtype])


def test_action_force_dispatches_to_the_kernel(monkeypatch):
    shape = (4, 2, 3, 2)
    action = Phi4Action(Lattice(shape), "standard", m2=-0.7, lam=0.9)
    phi = field(shape, "float64")
    with trace() as log:
        fast = action.force(phi)
    assert log == [("phi4_force", "cpu:phi4_force")]
    monkeypatch.setenv(dispatch.ENV_VAR, "off")
    with trace() as log:
        slow = action.force(phi)
    assert log == [("phi4_force", "reference")]
    assert_close(fast, slow, TOL["float64"])
    with kernel_mode("auto"):  # a non-contiguous field takes the reference
        assert dispatch.selected("phi4_force", phi[:, ::-1], "standard", True, True, -0.7,
                                 0.9) == "reference"


def test_per_chain_couplings_take_the_reference():
    phi = field((4, 4), "float64")
    c = np.array([0.5, 0.7]).reshape(2, 1, 1)
    with trace() as log:
        got = phi4_force(phi, "standard", True, True, c, 0.5)
    assert log == [("phi4_force", "reference")]
    with kernel_mode("off"):
        np.testing.assert_array_equal(got, phi4_force(phi, "standard", True, True, c, 0.5))
