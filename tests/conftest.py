"""Shared fixtures: every array test runs on NumPy and on array-api-strict, and on CuPy where a
GPU is usable (skipped cleanly otherwise)."""

import os
import time


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

# `lattice-ml run` takes the array-API reference for small runs when LATTICE_ML_KERNELS is unset
# (lattice_ml.cli.run.small_run_reason). The tests compare command runs with the library, bit for
# bit, at the library's per-call choice, so they run with the mode set; tests of the rule unset it.
os.environ.setdefault("LATTICE_ML_KERNELS", "auto")

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


# ------------------------------------------------------------------------------------------
# One summary line for the CuPy items skipped without a GPU (instead of one `-ra` line per test
# location, ~120 of them), and per-test CPU times for budgeting the slow tier on a shared machine
# (`--cpu-durations=N`: the N largest process CPU times of the test calls; unlike wall times
# they do not grow with the load of other processes).
# ------------------------------------------------------------------------------------------
_CPU_SECONDS: dict[str, float] = {}


def pytest_addoption(parser):
    parser.addoption("--cpu-durations", type=int, default=None, metavar="N",
                     help="show the N largest CPU times of test calls (0: all)")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    start = time.process_time()
    try:
        return (yield)
    finally:
        _CPU_SECONDS[item.nodeid] = time.process_time() - start


def _cupy_skip(report) -> bool:
    longrepr = getattr(report, "longrepr", None)
    return (isinstance(longrepr, tuple) and len(longrepr) == 3
            and str(longrepr[2]).startswith("Skipped: cupy not usable here"))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter, config):
    skipped = terminalreporter.stats.get("skipped", [])
    cupy = [r for r in skipped if _cupy_skip(r)]
    if cupy:   # hidden from the short summary (which the terminal reporter writes after us)
        terminalreporter.stats["skipped"] = [r for r in skipped if not _cupy_skip(r)]
    try:
        return (yield)
    finally:
        if cupy:
            terminalreporter.stats["skipped"] = skipped   # still counted in the last line
            reason = str(cupy[0].longrepr[2]).split(": ", 1)[1]
            terminalreporter.write_line(f"SKIPPED [{len(cupy)}] CuPy test items: {reason}")
        n = config.getoption("--cpu-durations")
        if n is not None and _CPU_SECONDS:
            ranked = sorted(_CPU_SECONDS.items(), key=lambda kv: -kv[1])
            terminalreporter.write_sep("=", f"CPU time of test calls (total "
                                            f"{sum(_CPU_SECONDS.values()):.1f} s)")
            for nodeid, sec in ranked[:n or None]:
                terminalreporter.write_line(f"{sec:9.2f}s cpu  {nodeid}")
