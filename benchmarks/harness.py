"""Benchmark harness: timing, the hardware's measured memory bandwidth, and a JSON record of
device, versions and command for every result.

Speed is never asserted in tests; it is measured here, as ratios taken in one run and as
fractions of a bandwidth measured in the same run:

* CPU: a STREAM-like triad ``a = b + s c`` in a parallel Numba loop (24 bytes per element moved,
  write-allocate not counted, as in STREAM);
* GPU: a device-to-device copy (``cupy`` ``a[...] = b``, 16 bytes per element in float64).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

RESULTS = Path(os.environ["LATTICE_ML_BENCH_RESULTS"]) if os.environ.get(
    "LATTICE_ML_BENCH_RESULTS") else Path(__file__).resolve().parent / "results"
"""Where the JSON records go (``LATTICE_ML_BENCH_RESULTS`` overrides it, e.g. for the GPU check
of benchmarks/gpu/run.sh, which keeps its records in its own folder)."""


def versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("lattice-ml", "numpy", "scipy", "array-api-compat", "numba", "cupy-cuda12x",
                "cupy", "numba-cuda"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info(backend: str) -> dict:
    info = {"host": socket.gethostname(), "cpu": cpu_name(), "cpu_count": os.cpu_count(),
            "backend": backend}
    if backend == "cupy":
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        info["gpu"] = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    try:
        import numba

        info["numba_threads"] = numba.config.NUMBA_NUM_THREADS
    except Exception:
        pass
    return info


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except Exception:
        return None


def synchronize(xp) -> None:
    """Wait for queued device work (no-op on the CPU)."""
    name = getattr(xp, "__name__", "")
    if "cupy" in name:
        import cupy

        cupy.cuda.Stream.null.synchronize()


def best_time(fn, xp=None, repeat: int = 5, min_time: float = 0.2) -> float:
    """Best (minimum) seconds per call of ``fn`` over ``repeat`` rounds of enough calls to take
    ``min_time`` each; one warm-up call first (compilation, caches)."""
    fn()
    synchronize(xp)
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        synchronize(xp)
        dt = time.perf_counter() - t0
        if dt >= min_time or n >= 1 << 20:
            break
        n *= 2
    best = dt / n
    for _ in range(repeat - 1):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        synchronize(xp)
        best = min(best, (time.perf_counter() - t0) / n)
    return best


def cpu_triad_bandwidth(n: int = 1 << 25) -> float:
    """Bytes per second of a parallel Numba triad a = b + s c on float64 arrays of ``n`` entries."""
    import numba

    @numba.njit(parallel=True, cache=False)
    def triad(a, b, c, s):
        for i in numba.prange(a.size):
            a[i] = b[i] + s * c[i]

    a = np.empty(n)
    b = np.random.default_rng(0).random(n)
    c = np.random.default_rng(1).random(n)
    t = best_time(lambda: triad(a, b, c, 1.5), repeat=5)
    return 3 * 8 * n / t


def gpu_copy_bandwidth(n: int = 1 << 27) -> float:
    """Bytes per second of a device-to-device copy of ``n`` float64 (read + write)."""
    import cupy

    a = cupy.empty(n)
    b = cupy.ones(n)

    def copy():
        a[...] = b

    return 2 * 8 * n / best_time(copy, xp=cupy)


def memory_bandwidth(backend: str) -> tuple[str, float]:
    if backend == "cupy":
        return "gpu_device_copy", gpu_copy_bandwidth()
    return "cpu_numba_triad", cpu_triad_bandwidth()


def record(name: str, results: list[dict], backend: str, extra: dict | None = None) -> Path:
    """Write a JSON record of ``results`` with device, versions, command and time stamp."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    doc = {
        "benchmark": name,
        "time_utc": stamp,
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "git_commit": git_commit(),
        "device": device_info(backend),
        "versions": versions(),
        **(extra or {}),
        "results": results,
    }
    path = RESULTS / f"{name}-{backend}-{stamp}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).rjust(w) for c, w in zip(columns, widths)))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
