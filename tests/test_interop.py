"""Zero-copy exchange with other array libraries through DLPack (and CUDA's array interface):
NumPy <-> PyTorch on the CPU (needs torch, the `interop` extra), NumPy/CuPy <-> PyTorch on a
GPU (skips without one); the array-API code runs on PyTorch tensors as they come."""

import numpy as np
import pytest

from lattice_ml.backend import RandomStreams, namespace_by_name, to_numpy
from lattice_ml.fermions import WilsonDirac
from lattice_ml.gauge import GaugeAction
from lattice_ml.gauge.observables import average_plaquette
from lattice_ml.groups import haar_random

torch = pytest.importorskip("torch", reason="PyTorch not installed (pip install '.[interop]')")

XP = namespace_by_name("numpy")


@pytest.fixture
def links():
    return haar_random(RandomStreams(3, 2, XP), (2, 4, 4), 3)      # [batch, D, *sites, 3, 3]


def _same_memory(t, a) -> bool:
    return t.data_ptr() == a.__array_interface__["data"][0]


def test_links_go_to_torch_and_back_without_a_copy(links):
    t = torch.from_dlpack(links)
    assert _same_memory(t, links) and t.shape == links.shape and t.dtype == torch.complex128
    back = np.from_dlpack(t)
    assert np.shares_memory(back, links)
    back_via_library = to_numpy(t)                 # the library's host view of a CPU tensor
    assert np.shares_memory(back_via_library, links)
    t[0, 0, 0, 0, 0, 0] = 7.0                      # one buffer: a write is seen on both sides
    assert links[0, 0, 0, 0, 0, 0] == 7.0


def test_library_functions_take_torch_tensors(links):
    """Through array-api-compat the same code runs on PyTorch CPU tensors and returns tensors;
    the numbers agree with NumPy to round-off (summation order)."""
    t = torch.from_dlpack(links)
    P = average_plaquette(t)
    assert isinstance(P, torch.Tensor)
    np.testing.assert_allclose(np.from_dlpack(P), average_plaquette(links), rtol=0, atol=1e-14)
    F = GaugeAction(3.0, 3).force(t)
    np.testing.assert_allclose(np.from_dlpack(F), GaugeAction(3.0, 3).force(links), rtol=0,
                               atol=1e-13)
    rng = RandomStreams(4, 2, XP)
    psi = rng.normal((4, 4, 2, 3)) + 1j * rng.normal((4, 4, 2, 3))
    r_np = WilsonDirac(links, 0.1).apply(psi)
    r_t = WilsonDirac(t, 0.1).apply(torch.from_dlpack(psi))
    assert isinstance(r_t, torch.Tensor)
    np.testing.assert_allclose(np.from_dlpack(r_t), r_np, rtol=0, atol=1e-13)


def test_a_torch_tensor_fed_to_numpy_code_is_not_copied():
    t = torch.randn(2, 8, 8, dtype=torch.float64)
    a = np.from_dlpack(t)
    assert _same_memory(t, a)
    a *= 2.0
    assert torch.equal(t, torch.from_dlpack(a))


cupy = None
try:  # GPU part: CuPy's device arrays and PyTorch CUDA tensors share memory both ways
    import cupy  # noqa: F811
    cupy.cuda.runtime.getDeviceCount()
except Exception:  # pragma: no cover - no GPU here
    cupy = None


@pytest.mark.skipif(cupy is None or not torch.cuda.is_available(), reason="needs CuPy and a GPU")
def test_cupy_and_torch_cuda_share_memory(links):  # pragma: no cover - GPU only
    xp = namespace_by_name("cupy")
    U = xp.asarray(links)
    t = torch.from_dlpack(U)
    assert t.is_cuda and t.data_ptr() == U.data.ptr
    back = xp.from_dlpack(t)
    assert back.data.ptr == U.data.ptr
    # the CUDA array interface, as Numba's CUDA kernels consume it
    assert U.__cuda_array_interface__["data"][0] == t.__cuda_array_interface__["data"][0]
    np.testing.assert_allclose(to_numpy(average_plaquette(t)), average_plaquette(links),
                               rtol=0, atol=1e-13)
