"""Array namespaces, devices, dtypes and seeded random streams.

This is the only module of the library that imports NumPy or CuPy for array work on fields;
everything above it obtains its namespace with :func:`namespace` (``array_api_compat``) and
creates arrays with the helpers here, so the same code runs on NumPy, CuPy and
``array_api_strict`` arrays.

Random numbers
--------------
The array API has no random-number generator. :class:`RandomStreams` holds one NumPy
``Philox`` counter-based generator per chain of a batch, seeded from
``numpy.random.SeedSequence(seed, spawn_key=(chain,))``. Numbers are drawn on the host, chain
by chain, in a fixed order, and moved to the target namespace and device. Consequences, all
tested:

* the same seed gives bit-identical numbers on NumPy, CuPy and array-api-strict;
* chain ``b`` of a batch draws the same numbers whatever the batch size, so a run with 8 chains
  reproduces the first 4 chains of a run with 4 chains exactly;
* the full state is a small dict (:meth:`RandomStreams.state`) that checkpoints and restores
  exactly.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import array_api_compat
import numpy as np

__all__ = [
    "namespace",
    "namespace_by_name",
    "backend_name",
    "to_numpy",
    "asarray",
    "real_dtype",
    "complex_dtype",
    "device_of",
    "real_dtype_of",
    "complex_dtype_of",
    "make_complex",
    "RandomStreams",
]

_BACKENDS = ("numpy", "cupy", "array_api_strict")


def namespace(*arrays: Any):
    """Array-API namespace shared by ``arrays`` (NumPy and CuPy through ``array_api_compat``)."""
    return array_api_compat.array_namespace(*arrays)


def namespace_by_name(name: str):
    """Array-API namespace for ``"numpy"``, ``"cupy"`` or ``"array_api_strict"``.

    Raises ``ValueError`` for another name and ``ImportError`` (with the install hint) when the
    library is not installed or, for CuPy, when no GPU is usable.
    """
    if name == "numpy":
        import array_api_compat.numpy as xp

        return xp
    if name == "cupy":
        try:
            import cupy

            cupy.cuda.runtime.getDeviceCount()
            import array_api_compat.cupy as xp
        except Exception as exc:  # ImportError, CUDARuntimeError, ...
            raise ImportError(
                f"backend 'cupy' is not usable here ({exc}); install the GPU extra "
                "(pip install 'lattice-ml[gpu]') on a machine with an NVIDIA GPU"
            ) from exc
        return xp
    if name == "array_api_strict":
        import array_api_strict as xp

        return xp
    raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(_BACKENDS)}")


def backend_name(xp) -> str:
    """Short name (``numpy``, ``cupy``, ``array_api_strict`` or the module name) of a namespace."""
    if array_api_compat.is_numpy_namespace(xp):
        return "numpy"
    if array_api_compat.is_cupy_namespace(xp):
        return "cupy"
    name = getattr(xp, "__name__", str(xp))
    return "array_api_strict" if name.startswith("array_api_strict") else name


def to_numpy(x: Any) -> np.ndarray:
    """``x`` as a host NumPy array: ``x`` itself for NumPy input, a view of the same memory
    for a CPU DLPack producer (``numpy.from_dlpack``: a PyTorch CPU tensor, array-api-strict),
    a device-to-host copy for a CuPy array."""
    if isinstance(x, np.ndarray):
        return x
    if np.isscalar(x):
        return np.asarray(x)
    if array_api_compat.is_cupy_array(x):
        return x.get()
    return np.from_dlpack(x)


def real_dtype(xp, name: str = "float64"):
    """The real floating dtype ``name`` (``float32`` or ``float64``) of namespace ``xp``."""
    if name not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', not {name!r}")
    return getattr(xp, name)


def complex_dtype(xp, real):
    """The complex dtype whose real and imaginary parts have dtype ``real``."""
    return xp.complex64 if real == xp.float32 else xp.complex128


def device_of(x):
    """The device an array lives on (``array_api_compat.device``)."""
    return array_api_compat.device(x)


def real_dtype_of(xp, dtype):
    """float32 for float32/complex64, float64 for float64/complex128."""
    return xp.float32 if dtype in (xp.float32, xp.complex64) else xp.float64


def complex_dtype_of(xp, dtype):
    """complex64 for float32/complex64, complex128 for float64/complex128."""
    return xp.complex64 if dtype in (xp.float32, xp.complex64) else xp.complex128


def make_complex(xp, re, im, cdtype):
    """The complex array ``re + i im`` of dtype ``cdtype`` from real arrays."""
    return xp.astype(re, cdtype) + 1j * xp.astype(im, cdtype)


def asarray(x: Any, xp, dtype=None, device=None):
    """``x`` (host data or an array of another namespace) as an array of ``xp``."""
    if not isinstance(x, np.ndarray) and not np.isscalar(x) and not isinstance(x, (list, tuple)):
        x = to_numpy(x)
    return xp.asarray(x, dtype=dtype, device=device)


class RandomStreams:
    """One independent, reproducible random stream per chain of a batch.

    Parameters
    ----------
    seed : int
        Master seed (non-negative).
    n_chains : int
        Number of chains, the length of the leading batch axis of every array drawn.
    xp : namespace
        Array namespace of the arrays returned.
    dtype : str
        ``"float64"`` or ``"float32"``; complex draws use the matching complex dtype.
    device : optional
        Device of the arrays returned (default: the namespace's default device).
    first_chain : int
        Index of the first chain; chain ``b`` of this object uses the stream of chain
        ``first_chain + b``. Lets several processes share one master seed.

    All draws return arrays of shape ``(n_chains, *shape)``.
    """

    def __init__(self, seed: int, n_chains: int, xp=None, dtype: str = "float64", device=None,
                 first_chain: int = 0):
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, not {seed!r}")
        if not isinstance(n_chains, (int, np.integer)) or n_chains < 1:
            raise ValueError(f"n_chains must be a positive integer, not {n_chains!r}")
        self.seed = int(seed)
        self.n_chains = int(n_chains)
        self.first_chain = int(first_chain)
        self.xp = xp if xp is not None else namespace_by_name("numpy")
        self.dtype_name = dtype
        self.dtype = real_dtype(self.xp, dtype)
        self.device = device
        self._gens = [
            np.random.Generator(np.random.Philox(np.random.SeedSequence(self.seed, spawn_key=(c,))))
            for c in range(self.first_chain, self.first_chain + self.n_chains)
        ]

    # -- draws ---------------------------------------------------------------------------------
    def _collect(self, draw, shape: Sequence[int], dtype) -> Any:
        host = np.stack([draw(g, tuple(shape)) for g in self._gens])
        return self.xp.asarray(host, dtype=dtype, device=self.device)

    def normal(self, shape: Sequence[int] = ()) -> Any:
        """Standard normal numbers, mean 0 and variance 1."""
        return self._collect(lambda g, s: g.standard_normal(s), shape, self.dtype)

    def uniform(self, shape: Sequence[int] = ()) -> Any:
        """Uniform numbers in [0, 1)."""
        return self._collect(lambda g, s: g.random(s), shape, self.dtype)

    def complex_normal(self, shape: Sequence[int] = ()) -> Any:
        """Complex normal numbers z = (a + i b)/sqrt(2), a, b standard normal, so E|z|^2 = 1."""
        scale = 1.0 / math.sqrt(2.0)

        def draw(g, s):
            return scale * (g.standard_normal(s) + 1j * g.standard_normal(s))

        return self._collect(draw, shape, complex_dtype(self.xp, self.dtype))

    def integers(self, high: int, shape: Sequence[int] = ()) -> Any:
        """Integers uniform in [0, high)."""
        return self._collect(lambda g, s: g.integers(0, high, size=s), shape, self.xp.int64)

    # -- state ---------------------------------------------------------------------------------
    def state(self) -> dict:
        """Plain-dict state of every chain's stream (JSON-serialisable); see :meth:`set_state`."""
        return {
            "seed": self.seed,
            "first_chain": self.first_chain,
            "chains": [_jsonable(g.bit_generator.state) for g in self._gens],
        }

    def set_state(self, state: dict) -> None:
        """Restore a state returned by :meth:`state` (same number of chains)."""
        chains = state["chains"]
        if len(chains) != self.n_chains:
            raise ValueError(
                f"RNG state holds {len(chains)} chains, this stream has {self.n_chains}")
        for g, s in zip(self._gens, chains):
            g.bit_generator.state = _from_jsonable(s)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _from_jsonable(obj):
    if isinstance(obj, dict):
        if "__ndarray__" in obj:
            return np.asarray(obj["__ndarray__"], dtype=obj["dtype"])
        return {k: _from_jsonable(v) for k, v in obj.items()}
    return obj
