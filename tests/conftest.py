"""Shared fixtures: every array test runs on NumPy and on array-api-strict, and on CuPy where a
GPU is usable (skipped cleanly otherwise)."""

import os


def _gpu_present() -> bool:
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


# Without a GPU the CUDA kernels run in Numba's CUDA simulator (it must be switched on before
# numba.cuda is first imported); with one they run on the device.
if not _gpu_present():
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import pytest  # noqa: E402

from lattice_ml.backend import namespace_by_name  # noqa: E402

BACKENDS = ["numpy", "array_api_strict", "cupy"]


def _namespace_or_skip(name):
    try:
        return namespace_by_name(name)
    except ImportError as exc:
        pytest.skip(f"{name} not usable here: {exc}")


@pytest.fixture(params=BACKENDS)
def xp(request):
    """Array namespace under test."""
    return _namespace_or_skip(request.param)


@pytest.fixture(params=["numpy", "array_api_strict"])
def xp_cpu(request):
    """CPU namespaces only (for statistically heavy tests where CuPy adds nothing)."""
    return _namespace_or_skip(request.param)
