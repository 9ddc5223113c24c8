"""The one dispatch point between the array-API reference code and the Numba kernels.

A hot function of the library is written once against the array API and marked with
:func:`dispatchable`::

    @dispatchable("wilson_hop")
    def wilson_hop(U, psi, ...):
        ...  # array-API reference

Calling it runs a registered kernel when one accepts the arguments and kernels are enabled, and
the reference otherwise; the caller never knows which ran. Kernels live in ``kernels/``
(installed as ``lattice_ml.kernels``) and register themselves with :func:`register`; they are
imported lazily on the first dispatch, so importing the library never compiles anything.

Which implementation runs is decided per call:

1. the mode: ``LATTICE_ML_KERNELS`` in the environment (``auto`` (default), ``off``, ``cpu``
   (only ``njit`` kernels), ``cuda`` (only CUDA kernels)), or a :func:`kernel_mode` context,
   which wins over the environment;
2. the array type of the arguments: NumPy arrays can go to a ``cpu`` kernel, CuPy arrays to a
   ``cuda`` kernel; anything else (array-api-strict, a mix of devices) takes the reference;
3. the kernel's own ``accepts(*args, **kwargs)`` (dtype, N, dimension, layout, options).

:func:`trace` records which implementation ran, for tests and benchmarks.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import threading
import warnings
from dataclasses import dataclass
from typing import Callable

__all__ = ["dispatchable", "register", "kernel_mode", "current_mode", "trace", "selected",
           "registered", "MODES", "ENV_VAR"]

ENV_VAR = "LATTICE_ML_KERNELS"
MODES = ("auto", "off", "cpu", "cuda")
# modules of lattice_ml.kernels that register kernels when imported
_KERNEL_MODULES = ("lattice_ml.kernels.registry",)


@dataclass(frozen=True)
class _Kernel:
    op: str
    target: str                      # "cpu" (NumPy arrays, njit) or "cuda" (CuPy arrays)
    fn: Callable
    accepts: Callable[..., bool]
    name: str


_registry: dict[str, list[_Kernel]] = {}
_loaded = False
_lock = threading.Lock()
_local = threading.local()


def register(op: str, target: str, accepts: Callable[..., bool] | None = None,
             name: str | None = None):
    """Decorator: register ``fn`` as a kernel for ``op`` on ``target`` (``"cpu"`` or ``"cuda"``).

    ``fn`` takes exactly the arguments of the reference function and returns what it returns
    (same layout, dtype and array type). ``accepts(*args, **kwargs)`` says whether the kernel
    handles these arguments; without it the kernel accepts every call of its array type.
    """
    if target not in ("cpu", "cuda"):
        raise ValueError(f"kernel target must be 'cpu' or 'cuda', got {target!r}")

    def deco(fn):
        k = _Kernel(op, target, fn, accepts or (lambda *a, **kw: True),
                    name or f"{target}:{getattr(fn, '__name__', op)}")
        _registry.setdefault(op, []).append(k)
        return fn
    return deco


def _load_kernels() -> None:
    global _loaded
    if _loaded:
        return
    with _lock:
        if _loaded:
            return
        for mod in _KERNEL_MODULES:
            try:
                importlib.import_module(mod)
            except ModuleNotFoundError as exc:
                # no registry, or lattice_ml imported from a source tree that was never
                # installed (kernels/ maps in as lattice_ml.kernels only on install): the
                # reference runs everywhere; anything else missing is a bug
                if exc.name not in (mod, "lattice_ml.kernels"):
                    raise
                if exc.name == "lattice_ml.kernels":
                    warnings.warn("lattice_ml.kernels is not importable (a source tree that "
                                  "was not installed?): every call takes the array-API "
                                  "reference; `pip install -e .` maps kernels/ in",
                                  UserWarning, stacklevel=3)
        _loaded = True


def current_mode() -> str:
    """The kernel mode in force: the innermost :func:`kernel_mode`, else the environment."""
    stack = getattr(_local, "modes", None)
    if stack:
        return stack[-1]
    mode = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise ValueError(f"{ENV_VAR}={mode!r} is not one of {', '.join(MODES)}")
    return mode


@contextlib.contextmanager
def kernel_mode(mode: str):
    """Context in which dispatch uses ``mode`` (``auto``, ``off``, ``cpu``, ``cuda``)."""
    if mode not in MODES:
        raise ValueError(f"kernel mode {mode!r} is not one of {', '.join(MODES)}")
    stack = getattr(_local, "modes", None)
    if stack is None:
        stack = _local.modes = []
    stack.append(mode)
    try:
        yield
    finally:
        stack.pop()


@contextlib.contextmanager
def trace():
    """Context yielding a list that receives ``(op, implementation)`` for every dispatched
    call; ``implementation`` is a kernel's name or ``"reference"``."""
    log: list[tuple[str, str]] = []
    stack = getattr(_local, "traces", None)
    if stack is None:
        stack = _local.traces = []
    stack.append(log)
    try:
        yield log
    finally:
        stack.pop()


def _array_target(args, kwargs) -> str | None:
    """``"cpu"`` if every array argument is a NumPy array, ``"cuda"`` if every one is a CuPy
    array, ``None`` otherwise (strict arrays, decomposed arrays, mixed types, no arrays)."""
    kinds = set()
    for a in (*args, *kwargs.values()):
        if getattr(a, "__lattice_ml_domain__", False):
            return None  # a decomposed array (lattice_ml.parallel): the reference, never a kernel
        mod = type(a).__module__
        if not hasattr(a, "shape") or not hasattr(a, "dtype"):
            continue
        if mod == "numpy":
            if type(a).__name__ != "ndarray":
                continue  # a NumPy scalar (np.float64(6.0)) is a number, not an array
            kinds.add("cpu")
        elif mod.startswith("cupy"):
            kinds.add("cuda")
        else:
            return None
    return kinds.pop() if len(kinds) == 1 else None


def _choose(op: str, args, kwargs) -> _Kernel | None:
    mode = current_mode()
    if mode == "off":
        return None
    target = _array_target(args, kwargs)
    if target is None or (mode != "auto" and mode != target):
        return None
    _load_kernels()
    for k in _registry.get(op, ()):
        if k.target == target and k.accepts(*args, **kwargs):
            return k
    return None


def selected(op: str, *args, **kwargs) -> str:
    """Name of the implementation a call of ``op`` with these arguments would run."""
    k = _choose(op, args, kwargs)
    return "reference" if k is None else k.name


def registered(op: str | None = None) -> dict[str, list[str]]:
    """The registered kernels, ``{op: [name, ...]}`` (loading the kernel modules)."""
    _load_kernels()
    ops = [op] if op is not None else sorted(_registry)
    return {o: [k.name for k in _registry.get(o, ())] for o in ops}


def dispatchable(op: str):
    """Decorator marking an array-API function as the reference of ``op``.

    The wrapped function dispatches as described in the module docstring; the reference stays
    reachable as ``wrapped.reference``.
    """
    def deco(ref):
        @functools.wraps(ref)
        def wrapper(*args, **kwargs):
            k = _choose(op, args, kwargs)
            for log in getattr(_local, "traces", ()) or ():
                log.append((op, "reference" if k is None else k.name))
            if k is None:
                return ref(*args, **kwargs)
            return k.fn(*args, **kwargs)
        wrapper.reference = ref
        wrapper.op = op
        return wrapper
    return deco
