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

:class:`CounterRandomStreams` is the same interface computed on the arrays' own device (a GPU
run then moves no random numbers from the host): Philox4x32-10 written against the array API
(:func:`philox4x32`, integer operations only, checked against the Random123 known-answer
vectors), every number a pure function of (seed, chain, draw, element). Its numbers are
bit-identical on NumPy and array-api-strict, equal in distribution (not in value) to those of
:class:`RandomStreams`, independent of how chains are split (``first_chain``), and a sub-block
of a draw (``block=``, e.g. the local sites of a domain-decomposed lattice) is computed alone
with exactly the numbers of the whole draw. On CuPy the integer words are the same again; the
floating-point steps (``log``, ``cos``, ``sin`` of Box-Muller) may differ from NumPy's in the
last bit.
"""

from __future__ import annotations

import contextlib
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
    "CounterRandomStreams",
    "philox4x32",
    "count_host_transfers",
    "device_constant",
]

_BACKENDS = ("numpy", "cupy", "array_api_strict")


def namespace(*arrays: Any):
    """Array-API namespace shared by ``arrays`` (NumPy and CuPy through ``array_api_compat``);
    the namespace of a decomposed array (:class:`lattice_ml.parallel.DomainArray`, which takes
    ordinary operands along) if one of them is."""
    for a in arrays:
        ns = getattr(a, "__lattice_ml_namespace__", None)
        if ns is not None:
            return ns()
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
        if "chains" not in state:
            raise ValueError("not the state of RandomStreams (a CounterRandomStreams state?)")
        chains = state["chains"]
        if len(chains) != self.n_chains:
            raise ValueError(
                f"RNG state holds {len(chains)} chains, this stream has {self.n_chains}")
        for g, s in zip(self._gens, chains):
            g.bit_generator.state = _from_jsonable(s)


# ----------------------------------------------------------------------------------------------
# counter-based streams: drawn where the arrays live
# ----------------------------------------------------------------------------------------------
_PHILOX_M = (0xD2511F53, 0xCD9E8D57)
_PHILOX_W = (0x9E3779B9, 0xBB67AE85)
_MASK32 = 0xFFFFFFFF


def philox4x32(xp, counter, key, rounds: int = 10):
    """The Philox4x32 block cipher (Salmon, Moraes, Dror & Shaw, SC'11; Random123) on arrays.

    ``counter``: four arrays of ``uint64`` holding 32-bit words (broadcasting against each other),
    ``key``: two Python ints below 2**32. Returns the four output words (``uint64`` arrays of
    32-bit values). Each round multiplies two words by ``M = (0xD2511F53, 0xCD9E8D57)`` into
    64-bit products (exact in ``uint64``), and ``(c0, c1, c2, c3) <- (hi(M1 c2) ^ c1 ^ k0,
    lo(M1 c2), hi(M0 c0) ^ c3 ^ k1, lo(M0 c0))``; the key is bumped by the Weyl constants
    ``W = (0x9E3779B9, 0xBB67AE85)`` between rounds. Only integer operations: the words are the
    same on every backend (checked against the Random123 known-answer vectors)."""
    c0, c1, c2, c3 = counter
    k0, k1 = int(key[0]) & _MASK32, int(key[1]) & _MASK32
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + _PHILOX_W[0]) & _MASK32, (k1 + _PHILOX_W[1]) & _MASK32
        p0, p1 = c0 * _PHILOX_M[0], c2 * _PHILOX_M[1]
        c0, c1, c2, c3 = ((p1 >> 32) ^ c1 ^ k0, p1 & _MASK32, (p0 >> 32) ^ c3 ^ k1,
                          p0 & _MASK32)
    return c0, c1, c2, c3


class CounterRandomStreams:
    """Random streams per chain computed on the arrays' own device: a drop-in for
    :class:`RandomStreams` (same methods, shapes, dtypes and ``state``) whose numbers never pass
    through host memory, so that a CuPy run draws its momenta and pseudofermions on the GPU.

    Every number is a pure function of ``(seed, chain, draw, element)``: draw ``n`` (the ``n``-th
    call of any drawing method since the start) of global chain ``c = first_chain + b``, element
    ``j`` (C order over ``shape``), comes from the Philox4x32-10 block (:func:`philox4x32`) with
    key ``(seed mod 2^32, seed div 2^32)`` and counter ``(j div 2, n, c, 0)``: its four words
    make two 53-bit uniforms ``u = (a // 32 * 2^26 + b // 64) / 2^53``, and

    * ``uniform``: element ``j`` is the uniform ``j mod 2`` of block ``j div 2``;
    * ``normal``: the Box-Muller pair ``sqrt(-2 log(1 - u_0)) (cos, sin)(2 pi u_1)`` of block
      ``j div 2``, element ``j`` taking the cosine (even ``j``) or the sine (odd ``j``);
    * ``complex_normal``: ``(z_0 + i z_1) / sqrt(2)`` from block ``j`` (so ``E|z|^2 = 1``);
    * ``integers(high)``: ``floor(u high)`` (bias below ``high / 2^53``).

    So the numbers do not depend on how the chains are split over objects or processes
    (``first_chain``), nor on the batch size; ``float32`` draws are the ``float64`` ones rounded;
    and :meth:`normal` etc. with ``block=`` compute only a sub-block of the draw (e.g. the local
    sites of a domain-decomposed lattice) with exactly the numbers of the whole draw. The
    streams are independent of :class:`RandomStreams` (a different generator): equal in
    distribution, not in value. ``state()`` is the seed, the first chain and the draw count.
    """

    kind = "counter"

    def __init__(self, seed: int, n_chains: int, xp=None, dtype: str = "float64", device=None,
                 first_chain: int = 0):
        if not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2 ** 64:
            raise ValueError(f"seed must be an integer in [0, 2**64), not {seed!r}")
        if not isinstance(n_chains, (int, np.integer)) or n_chains < 1:
            raise ValueError(f"n_chains must be a positive integer, not {n_chains!r}")
        if not isinstance(first_chain, (int, np.integer)) or first_chain < 0 \
                or first_chain + n_chains > 2 ** 32:
            raise ValueError(f"first_chain must be a non-negative integer with first_chain + "
                             f"n_chains <= 2**32, not {first_chain!r}")
        self.seed, self.n_chains, self.first_chain = int(seed), int(n_chains), int(first_chain)
        self.xp = xp if xp is not None else namespace_by_name("numpy")
        self.dtype_name = dtype
        self.dtype = real_dtype(self.xp, dtype)
        self.device = device
        self.draws = 0

    # -- the words -----------------------------------------------------------------------------
    def _uniform_pairs(self, blocks):
        """The two float64 uniforms of Philox blocks ``blocks`` (a ``uint64`` array broadcasting
        against ``[n_chains, 1, ...]``) of the current draw, for every chain: ``[chains, ...]``."""
        xp = self.xp
        if self.draws >= 2 ** 32:
            raise RuntimeError("CounterRandomStreams: more than 2**32 draws")
        chains = xp.arange(self.first_chain, self.first_chain + self.n_chains, dtype=xp.uint64,
                           device=self.device)
        chains = xp.reshape(chains, (self.n_chains,) + (1,) * (blocks.ndim - 1))
        zero = xp.zeros_like(blocks)
        w = philox4x32(xp, (blocks + zero * chains, zero + self.draws, zero + chains, zero),
                       (self.seed & _MASK32, self.seed >> 32))
        scale = 1.0 / 2.0 ** 53
        u0 = xp.astype((w[0] >> 5) * (2 ** 26) + (w[1] >> 6), xp.float64) * scale
        u1 = xp.astype((w[2] >> 5) * (2 ** 26) + (w[3] >> 6), xp.float64) * scale
        self.draws += 1
        return u0, u1

    def _elements(self, shape, block):
        """Flat element indices ``j`` of the draw of ``shape`` (the sub-block ``block``, a tuple
        of slices, if given) as a ``uint64`` array ``[1, *sub_shape]``."""
        xp = self.xp
        shape = tuple(int(s) for s in shape)
        n = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if n > 2 ** 33:
            raise ValueError(f"CounterRandomStreams: a draw of {n} numbers is too large")
        if block is None:
            return xp.reshape(xp.arange(n, dtype=xp.uint64, device=self.device), (1, *shape))
        if len(block) != len(shape):
            raise ValueError(f"block {block!r} does not match the shape {shape}")
        j = xp.zeros((1,) * (len(shape) + 1), dtype=xp.uint64, device=self.device)
        stride = 1
        for axis in range(len(shape) - 1, -1, -1):
            idx = range(shape[axis])[block[axis]]
            a = xp.asarray(np.asarray(idx, dtype=np.uint64) * np.uint64(stride),
                           device=self.device)
            j = j + xp.reshape(a, (1,) + (1,) * axis + (len(idx),)
                               + (1,) * (len(shape) - axis - 1))
            stride *= shape[axis]
        return j

    def _paired(self, shape, block, pair):
        """Element ``j`` of the draw is ``pair(u_0, u_1)[j mod 2]`` of Philox block ``j div 2``:
        for a whole draw every block is computed once and its two values interleaved, for a
        sub-block each element's own block is computed."""
        xp = self.xp
        shape = tuple(int(s) for s in shape)
        if block is not None:
            j = self._elements(shape, block)
            even, odd = pair(*self._uniform_pairs(j >> 1))
            return xp.where((j & 1) == 0, even, odd)
        n = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if n > 2 ** 33:
            raise ValueError(f"CounterRandomStreams: a draw of {n} numbers is too large")
        nb = (n + 1) // 2
        blocks = xp.reshape(xp.arange(nb, dtype=xp.uint64, device=self.device), (1, nb))
        even, odd = pair(*self._uniform_pairs(blocks))
        both = xp.reshape(xp.stack([even, odd], axis=-1), (self.n_chains, 2 * nb))
        return xp.reshape(both[:, :n], (self.n_chains, *shape))

    # -- draws ---------------------------------------------------------------------------------
    def uniform(self, shape: Sequence[int] = (), block=None) -> Any:
        """Uniform numbers in [0, 1), ``[n_chains, *shape]`` (or the sub-block ``block``); in
        float32 the rounded float64 numbers, which can be 1.0 (as for :class:`RandomStreams`)."""
        return self.xp.astype(self._paired(shape, block, lambda u0, u1: (u0, u1)), self.dtype)

    def normal(self, shape: Sequence[int] = (), block=None) -> Any:
        """Standard normal numbers (Box-Muller), ``[n_chains, *shape]``."""
        xp = self.xp

        def box_muller(u0, u1):
            r = xp.sqrt(-2.0 * xp.log(1.0 - u0))
            phi = (2.0 * math.pi) * u1
            return r * xp.cos(phi), r * xp.sin(phi)

        return xp.astype(self._paired(shape, block, box_muller), self.dtype)

    def complex_normal(self, shape: Sequence[int] = (), block=None) -> Any:
        """Complex normal numbers ``(a + i b)/sqrt(2)``, ``a, b`` standard normal."""
        xp = self.xp
        if int(np.prod(tuple(int(s) for s in shape), dtype=np.int64)) > 2 ** 32:
            raise ValueError("CounterRandomStreams: a complex draw of more than 2**32 numbers")
        j = self._elements(shape, block)
        u0, u1 = self._uniform_pairs(j)
        r = xp.sqrt(-1.0 * xp.log(1.0 - u0))              # sqrt(-2 log) / sqrt(2)
        phi = (2.0 * math.pi) * u1
        cdt = complex_dtype(xp, self.dtype)
        return make_complex(xp, xp.astype(r * xp.cos(phi), self.dtype),
                            xp.astype(r * xp.sin(phi), self.dtype), cdt)

    def integers(self, high: int, shape: Sequence[int] = (), block=None) -> Any:
        """Integers uniform in [0, high)."""
        if not isinstance(high, (int, np.integer)) or not 1 <= high <= 2 ** 31:
            raise ValueError(f"high must be an integer in [1, 2**31], not {high!r}")
        xp = self.xp
        u = self._paired(shape, block, lambda u0, u1: (u0, u1))
        return xp.astype(xp.floor(u * int(high)), xp.int64)

    # -- state ---------------------------------------------------------------------------------
    def state(self) -> dict:
        """Plain-dict state (JSON-serialisable); see :meth:`set_state`."""
        return {"kind": self.kind, "seed": self.seed, "first_chain": self.first_chain,
                "n_chains": self.n_chains, "draws": self.draws}

    def set_state(self, state: dict) -> None:
        """Restore a state returned by :meth:`state` (same seed and chains)."""
        if state.get("kind") != self.kind:
            raise ValueError("not the state of CounterRandomStreams (a RandomStreams state?)")
        for key in ("seed", "first_chain", "n_chains"):
            if int(state[key]) != getattr(self, key):
                raise ValueError(f"RNG state has {key} {state[key]}, this stream "
                                 f"{getattr(self, key)}")
        self.draws = int(state["draws"])


_DEVICE_CONSTANTS: dict = {}
_DEVICE_CONSTANTS_MAX = 256


def device_constant(xp, host: np.ndarray, dtype=None, device=None):
    """The small host array ``host`` (gamma matrices, boundary signs) as an array of namespace
    ``xp`` with ``dtype`` on ``device``, copied there once and then reused: a Dirac operator
    applied thousands of times per trajectory would otherwise copy its constants to the GPU at
    every application (each copy a host-device synchronisation). Keyed by the values, dtype and
    shape of ``host`` and by the namespace, ``dtype`` and device, so a cached array is never
    a different constant; the cache holds at most 256 entries (then starts afresh). The result
    is shared: never write into it (NumPy results are read-only)."""
    host = np.asarray(host)
    # device None is the namespace's current device (on CuPy: the current GPU), named as such
    where = str(device) if device is not None else str(device_of(xp.empty((0,))))
    key = (host.tobytes(), host.shape, host.dtype.str, backend_name(xp), str(dtype), where)
    out = _DEVICE_CONSTANTS.get(key)
    if out is None:
        if len(_DEVICE_CONSTANTS) >= _DEVICE_CONSTANTS_MAX:
            _DEVICE_CONSTANTS.clear()
        out = xp.asarray(np.array(host), dtype=dtype, device=device)
        if isinstance(out, np.ndarray):
            out.setflags(write=False)            # shared: a write would change every user
        _DEVICE_CONSTANTS[key] = out
    return out


# ----------------------------------------------------------------------------------------------
# does it stay on the device?
# ----------------------------------------------------------------------------------------------
@contextlib.contextmanager
def count_host_transfers():
    """Count the traffic between the host and array-api-strict's non-CPU devices, the stand-in
    for a GPU that needs no GPU: ``with count_host_transfers() as n: ...`` fills the dict ``n``.

    * ``reads`` / ``read_bytes``: values that came back to the host: a Python scalar taken from
      a device array (``bool``, ``int``, ``float``, ``complex``, ``index``: on a GPU each one
      waits for the device) and DLPack exports to the host (:func:`to_numpy`);
    * ``writes`` / ``write_bytes``: host data (NumPy arrays, Python sequences) put on a non-CPU
      device by ``asarray``.

    Arrays on array-api-strict's CPU device and other libraries are not counted; Python scalars
    used as operands (``x * 0.5``) are kernel arguments, not transfers. The counting patches
    array-api-strict's array class and ``asarray`` for the duration of the block only (a
    testing and benchmarking aid; not thread-safe).
    """
    import array_api_strict as strict
    from array_api_strict._array_object import Array

    n = {"reads": 0, "read_bytes": 0, "writes": 0, "write_bytes": 0}

    def on_device(a) -> bool:
        return "CPU_DEVICE" not in str(a.device)

    def itemsize(a) -> int:
        return np.dtype(str(a.dtype).rsplit(".", 1)[-1]).itemsize

    def counted(name):
        orig = getattr(Array, name)

        def method(self, *args, **kwargs):
            if on_device(self):
                n["reads"] += 1
                n["read_bytes"] += itemsize(self) * (self.size if name == "__dlpack__" else 1)
            return orig(self, *args, **kwargs)
        return orig, method

    names = ("__bool__", "__int__", "__float__", "__complex__", "__index__", "__dlpack__")
    saved = {name: counted(name) for name in names}
    orig_asarray = strict.asarray

    def asarray(obj, *args, **kwargs):
        out = orig_asarray(obj, *args, **kwargs)
        if not isinstance(obj, Array) and on_device(out):
            n["writes"] += 1
            n["write_bytes"] += out.size * itemsize(out)
        return out

    try:
        for name, (_, method) in saved.items():
            setattr(Array, name, method)
        strict.asarray = asarray
        yield n
    finally:
        for name, (orig, _) in saved.items():
            setattr(Array, name, orig)
        strict.asarray = orig_asarray


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
