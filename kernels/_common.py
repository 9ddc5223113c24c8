"""What every kernel module shares: is CUDA usable (a GPU, or Numba's simulator), launch
geometry, and the array namespace of the arguments.

CUDA kernels take CuPy arrays without copies (Numba reads ``__cuda_array_interface__``); under
``NUMBA_ENABLE_CUDASIM=1`` they take NumPy arrays, which is how the test suite runs them on a CPU.
"""

from __future__ import annotations

import os

THREADS_PER_BLOCK = 128


def cuda_simulator() -> bool:
    """True when Numba's CUDA simulator is switched on (set before Numba is imported)."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"


def cuda_usable() -> bool:
    """True when CUDA kernels can run: a real GPU with a working driver, or the simulator."""
    try:
        from numba import cuda
    except ImportError:  # pragma: no cover - numba is a dependency
        return False
    try:
        return bool(cuda.is_available())
    except Exception:  # a broken driver is 'not usable', not an error at import
        return False


def blocks_for(n: int, threads: int = THREADS_PER_BLOCK) -> int:
    """Number of blocks covering ``n`` threads."""
    return max(1, (n + threads - 1) // threads)


def array_module(a):
    """``numpy`` or ``cupy``: the module that allocates outputs like ``a``."""
    mod = type(a).__module__
    if mod.startswith("cupy"):
        import cupy
        return cupy
    import numpy
    return numpy
