"""One source, two targets: the SU(3) helpers and per-link bodies of the gauge and stout kernels
are plain Python functions compiled with ``numba.njit`` where they are defined (decorator
:func:`device`, on-disk cache) and recompiled for CUDA by :func:`cuda_namespace`.

* CPU: helpers are ``njit(cache=True)`` functions; the drivers (``cpu_*``) are
  ``njit(parallel=True, cache=True)`` loops over the links (``prange``).
* CUDA: :func:`cuda_namespace` clones every helper's Python function into one namespace (so that
  the clones call each other) and compiles it with ``numba.cuda.jit(device=True)``; the drivers
  (``cuda_*``, plain functions in the template modules, one thread per link) become CUDA kernels.
  Under ``NUMBA_ENABLE_CUDASIM=1`` Numba's simulator runs them as Python.

A *template module* is any module with at least one :func:`device` function: it registers itself
by being imported, so this module imports none of its clients. The namespace is built from the
template modules imported so far (and rebuilt when another one has been imported since).

Numba's cache is keyed on each function's own source file; after editing a helper module,
remove ``kernels/__pycache__/*.nbi`` / ``*.nbc`` so that callers in other modules recompile.
The recipe for a new kernel is in ``docs/kernels.md`` ("Writing a kernel").
"""

from __future__ import annotations

import functools
import math
import sys
import types

from numba import njit

__all__ = ["device", "cpu_driver", "cuda_namespace"]

_DEVICE_FUNCTIONS: dict[str, list] = {}


def _njit(fn, **options):
    """``njit`` with Numba's on-disk cache, or without it where no cache directory is writable
    (Numba then refuses ``cache=True`` when the function is decorated)."""
    try:
        return njit(cache=True, error_model="numpy", **options)(fn)
    except RuntimeError:
        return njit(error_model="numpy", **options)(fn)


def device(fn):
    """Compile ``fn`` for the CPU (``njit``, cached) and remember it for the CUDA build."""
    _DEVICE_FUNCTIONS.setdefault(fn.__module__, []).append(fn)
    return _njit(fn)


def cpu_driver(fn):
    """A parallel CPU driver (``njit(parallel=True)``, cached)."""
    return _njit(fn, parallel=True)


def cuda_namespace() -> types.SimpleNamespace:
    """Every helper of the template modules imported so far as a CUDA device function, and every
    ``cuda_*`` driver of those modules as a CUDA kernel (compiled lazily, on the first launch)."""
    return _cuda_namespace(tuple(_DEVICE_FUNCTIONS))


@functools.lru_cache(maxsize=None)
def _cuda_namespace(module_names: tuple[str, ...]) -> types.SimpleNamespace:
    from numba import cuda

    ns: dict = {"math": math, "cuda": cuda}
    mods = [sys.modules[name] for name in module_names]
    for mod in mods:
        ns.update({k: v for k, v in vars(mod).items() if k.isupper()})   # constants

    def clone(fn):
        c = types.FunctionType(fn.__code__, ns, fn.__name__, fn.__defaults__, fn.__closure__)
        c.__doc__ = fn.__doc__
        return c

    for mod in mods:
        for fn in _DEVICE_FUNCTIONS.get(mod.__name__, ()):
            ns[fn.__name__] = cuda.jit(device=True)(clone(fn))
        for name, fn in vars(mod).items():
            if name.startswith("cuda_") and isinstance(fn, types.FunctionType):
                ns[name] = cuda.jit(clone(fn))
    return types.SimpleNamespace(**ns)
