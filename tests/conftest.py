"""Shared fixtures: every array test runs on NumPy and on array-api-strict, and on CuPy where a
GPU is usable (skipped cleanly otherwise)."""

import pytest

from lattice_ml.backend import namespace_by_name

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
