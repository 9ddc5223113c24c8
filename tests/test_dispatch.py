"""The dispatch point: mode switch, array-type routing, accepts(), trace."""

import numpy as np
import pytest

from lattice_ml import dispatch
from lattice_ml.dispatch import dispatchable, kernel_mode, register, selected, trace


@dispatchable("_test_double")
def double(x, factor=2):
    return factor * x


@register("_test_double", "cpu", accepts=lambda x, factor=2: x.dtype == np.float64,
          name="cpu:test_double")
def _double_kernel(x, factor=2):
    return np.multiply(x, factor) + 0.0


def test_numpy_float64_goes_to_the_kernel():
    x = np.ones(3)
    with trace() as log:
        np.testing.assert_array_equal(double(x), 2 * x)
    assert log == [("_test_double", "cpu:test_double")]


def test_accepts_and_mode_off_take_the_reference(monkeypatch):
    assert selected("_test_double", np.ones(3, dtype=np.float32)) == "reference"
    with kernel_mode("off"):
        assert selected("_test_double", np.ones(3)) == "reference"
    with kernel_mode("cuda"):
        assert selected("_test_double", np.ones(3)) == "reference"
    monkeypatch.setenv(dispatch.ENV_VAR, "off")
    assert selected("_test_double", np.ones(3)) == "reference"
    with kernel_mode("auto"):  # the context wins over the environment
        assert selected("_test_double", np.ones(3)) == "cpu:test_double"


def test_strict_arrays_take_the_reference():
    xps = pytest.importorskip("array_api_strict")
    x = xps.ones(3, dtype=xps.float64)
    with trace() as log:
        double(x)
    assert log == [("_test_double", "reference")]


def test_bad_mode_is_named(monkeypatch):
    monkeypatch.setenv(dispatch.ENV_VAR, "fast")
    with pytest.raises(ValueError, match="LATTICE_ML_KERNELS='fast'"):
        dispatch.current_mode()
    with pytest.raises(ValueError, match="kernel mode"):
        with kernel_mode("gpu"):
            pass


class _FakeCupyArray:
    """Stands for a CuPy array in the routing test (only the module name matters)."""
    __module__ = "cupy._core.core"
    shape, dtype = (3,), "float64"


def test_numpy_scalars_do_not_decide_the_target():
    assert dispatch._array_target((np.ones(3), np.float64(2.0)), {}) == "cpu"
    assert dispatch._array_target((_FakeCupyArray(), np.float64(6.0)), {}) == "cuda"
    assert dispatch._array_target((_FakeCupyArray(), np.ones(3)), {}) is None
