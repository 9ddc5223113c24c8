"""Numba kernels for the 4D SU(3) staple sums and gauge force (kernels/gauge.py): equal to the
array-API reference to round-off on Haar-random links (complex128 ~1e-12, complex64 ~1e-5),
chosen by the dispatch point (``trace``), the reference with mode ``off``, for array-api-strict
arrays and for what the kernels do not handle; the CUDA kernels through Numba's simulator (or
on a GPU) on a 2^4 lattice."""

import numpy as np
import pytest

from lattice_ml.backend import RandomStreams, namespace_by_name, to_numpy
from lattice_ml.dispatch import kernel_mode, selected, trace
from lattice_ml.gauge import GaugeAction
from lattice_ml.gauge.action import gauge_force, staple_field
from lattice_ml.groups import haar_random
from lattice_ml.kernels import gauge as kgauge
from lattice_ml.kernels._common import cuda_usable

NP = namespace_by_name("numpy")
TOL = {np.complex128: 1e-12, np.complex64: 2e-5}
# uneven extents: 2 (x + 2 mu = x), 3 and 4 in the same lattice
SHAPE = (4, 3, 2, 4)
CPU_STAPLES = "cpu:gauge_staples_su3_4d"
CPU_FORCE = "cpu:gauge_force_su3_4d"


def haar_links(shape=SHAPE, batch=2, dtype=np.complex128, seed=3, N=3):
    U = haar_random(RandomStreams(seed, batch, NP), (len(shape), *shape), N)
    return U.astype(dtype)


def rel_err(a, b):
    a, b = to_numpy(a), to_numpy(b)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.fixture(scope="module", params=[np.complex128, np.complex64], ids=["c128", "c64"])
def links(request):
    return haar_links(dtype=request.param)


@pytest.mark.parametrize("c_plaq, c_rect", [(1.0, None), (None, -0.331), (3.648, -0.331),
                                            (0.0, None)])
@pytest.mark.parametrize("mu", [None, 2])
def test_staples_equal_reference(links, c_plaq, c_rect, mu):
    with trace() as log:
        V = staple_field(links, c_plaq, c_rect, mu=mu)
    assert log == [("gauge_staples", CPU_STAPLES)]
    with kernel_mode("off"), trace() as log_ref:
        ref = staple_field(links, c_plaq, c_rect, mu=mu)
    assert log_ref == [("gauge_staples", "reference")]
    assert V.dtype == links.dtype and V.shape == ref.shape
    if c_plaq == 0.0:
        assert not np.any(V) and not np.any(ref)
    else:
        assert rel_err(V, ref) < TOL[links.dtype.type]


@pytest.mark.parametrize("kind", ["wilson", "symanzik", "iwasaki", "dbw2"])
def test_force_equals_reference(links, kind):
    act = GaugeAction(5.7, 3, kind)
    with trace() as log:
        F = act.force(links)
    assert log == [("gauge_force", CPU_FORCE)]
    with kernel_mode("off"):
        ref = act.force(links)
    assert F.dtype == links.dtype
    assert rel_err(F, ref) < TOL[links.dtype.type]
    # the parts of a multiple-time-scale split add up, each through the kernel
    if kind != "wilson":
        parts = act.part("plaquette").force(links) + act.part("rectangle").force(links)
        assert rel_err(parts, ref) < TOL[links.dtype.type]


def test_staple_sum_per_direction_goes_through_the_kernel():
    U = haar_links()
    act = GaugeAction(6.0, 3, "iwasaki")
    for mu in range(4):
        with trace() as log:
            V = act.staple_sum(U, mu)
        assert log == [("gauge_staples", CPU_STAPLES)]
        with kernel_mode("off"):
            assert rel_err(V, act.staple_sum(U, mu)) < 1e-12


def test_reference_paths():
    """Mode off, strict arrays, U(1)/SU(2), 3D links, and only-excluded loops take the
    reference (or its error)."""
    U = haar_links(batch=1)
    assert selected("gauge_force", U, 6.0, 1.0, None) == CPU_FORCE
    with kernel_mode("off"):
        assert selected("gauge_force", U, 6.0, 1.0, None) == "reference"
    with kernel_mode("cuda"):  # NumPy arrays never go to a CUDA kernel
        assert selected("gauge_force", U, 6.0, 1.0, None) == "reference"
    assert selected("gauge_force", haar_links(N=2), 6.0, 1.0, None) == "reference"
    assert selected("gauge_staples", haar_links((4, 4, 4)), 1.0, None) == "reference"
    assert selected("gauge_staples", U, None, None) == "reference"
    assert staple_field(U, None, None) is None
    with pytest.raises(ValueError, match="plaquette or rectangle"):
        gauge_force(U, 6.0, None, None)
    xps = pytest.importorskip("array_api_strict")
    Us = xps.asarray(U)
    with trace() as log:
        F = GaugeAction(6.0, 3, "symanzik").force(Us)
    assert log == [("gauge_force", "reference")]
    assert rel_err(F, GaugeAction(6.0, 3, "symanzik").force(U)) < 1e-12


def test_kernel_handles_strided_links():
    """A non-contiguous view (every other configuration) gives the same force."""
    U = haar_links(batch=4)
    view = U[::2]
    assert not view.flags.c_contiguous
    act = GaugeAction(5.0, 3, "symanzik")
    assert rel_err(act.force(view), act.force(np.ascontiguousarray(view))) == 0.0


# ------------------------------------------------------------------------------------------
# CUDA kernels: simulator on the CPU (tests/conftest.py), the device where there is a GPU
# ------------------------------------------------------------------------------------------
def _cuda_arrays(U):
    """CuPy arrays on a GPU, NumPy arrays under the simulator."""
    try:
        import cupy
        if cupy.cuda.runtime.getDeviceCount() > 0:
            return cupy.asarray(U)
    except Exception:
        pass
    return U


@pytest.mark.skipif(not cuda_usable(), reason="CUDA (or its simulator) is not usable here")
@pytest.mark.parametrize("dtype", [np.complex128, np.complex64], ids=["c128", "c64"])
def test_cuda_kernels_equal_reference(dtype):
    U = haar_links((2, 2, 2, 2), batch=1, dtype=dtype, seed=7)
    Ud = _cuda_arrays(U)
    with kernel_mode("off"):
        F_ref = gauge_force(U, 5.5, 3.648, -0.331)
        V_ref = staple_field(U, 1.0, None, mu=1)
    F = kgauge.gauge_force_cuda(Ud, 5.5, 3.648, -0.331)
    V = kgauge.staple_field_cuda(Ud, 1.0, None, mu=1)
    assert F.dtype == dtype and V.shape == V_ref.shape
    assert rel_err(F, F_ref) < TOL[dtype]
    assert rel_err(V, V_ref) < TOL[dtype]
