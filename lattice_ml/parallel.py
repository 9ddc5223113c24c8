"""Chains and sites over processes: the communicator, chain blocks, exact gathers and sums, and
domain decomposition (decomposed arrays with halo exchange and reproducible global sums).

The batch axis of every field (independent chains, right-hand sides, training samples) is split
over the ``size`` ranks of a communicator in contiguous blocks, in global chain order::

    n = n_chains // size,  r = n_chains % size
    rank k holds chains [start_k, start_k + n_k),  n_k = n + (k < r),  start_k = sum_{j<k} n_j

so rank 0 holds the first chains, any number of chains splits over any number of ranks (uneven
splits give the first ``r`` ranks one chain more), and every rank holds at least one chain
(``n_chains >= size``). A rank draws the random numbers of its chains with
``RandomStreams(seed, n_k, first_chain=start_k)`` (:mod:`lattice_ml.backend`): chain ``c`` draws
the same numbers whatever the split, so the fields of chain ``c`` are bit-identical to those of a
one-process run.

Reductions
----------
Nothing is summed across ranks in floating point. :meth:`Communicator.gather_chains` and
:meth:`Communicator.allgather_chains` concatenate the per-chain arrays of all ranks in global
chain order (an exact copy); a sum or mean over chains is then the one-process reduction of the
same full array (:meth:`Communicator.sum_chains`: ``xp.sum`` of the gathered ``[n_chains, ...]``
array), hence bit-identical to one process. A quantity that is itself a sum over chains inside a
kernel (the parameter gradient of a flow: a contraction over the batch axis) cannot be gathered
per chain cheaply; :meth:`Communicator.ordered_sum` reduces it from fixed chunks (micro-batches):
each rank computes the partial sums of the chunks it holds, and all ranks add all chunks' partial
sums left to right in global chunk order. A one-process run that computes the same chunks and
adds them with the same :meth:`~Communicator.ordered_sum` is bit-identical for every rank count
whose split keeps chunks whole (:meth:`Communicator.chunks`). It differs from the plain
one-batch contraction (one ``einsum``/``matmul`` over all ``B`` entries) by round-off only: the
order of the additions over the batch axis differs, a relative difference of order ``B`` times
the unit round-off at most (``tests/mpi/chains.py`` checks ``1e-13`` in float64).

Communicators
-------------
:class:`Communicator` wraps an ``mpi4py`` communicator (``Communicator(MPI.COMM_WORLD)``) or
none (``Communicator()`` or :data:`SERIAL`: one rank, every collective the identity), so the
library never needs ``mpi4py``; it is passed explicitly, there is no hidden global state.
:func:`world` returns the world communicator when the process was started by an MPI launcher
(``mpiexec``) and mpi4py is installed, and :data:`SERIAL` otherwise. Arrays travel as host NumPy
arrays (pickled by ``mpi4py``: exact) and come back in the namespace and on the device of the
local array.

Sites
-----
:class:`Decomposition` (on :class:`CartesianGrid`) splits the sites of a lattice
``(L_0, ..., L_{D-1})`` in equal blocks over a row-major grid of ranks ``(d_0, ..., d_{D-1})``,
``L_mu % d_mu == 0``: rank ``r`` at grid coordinates ``c = unravel(r, d)`` holds the sites
``x_mu in [c_mu l_mu, (c_mu + 1) l_mu)``, ``l_mu = L_mu / d_mu``. A field on it is a
:class:`DomainArray`: the block (array of NumPy, CuPy or array-api-strict) in the layout of the
whole field (``[batch, *sites, ...]``, links ``[batch, D, *sites, N, N]``), the
decomposition, and the first site axis; its ``shape`` is the global one. Its namespace
(:class:`DomainNamespace`, returned by ``__array_namespace__`` and by
``backend.namespace``) runs the operators of the library unchanged:

* ``roll(f, -s, axis=site_axis + mu)`` (``lattice.shift(f, mu, s)``: ``out(x) = f(x + s
  mu_hat)``) is the local roll with the ``|s|`` slices that leave the block replaced by those
  of the neighbouring rank in direction ``mu`` (one ``sendrecv`` per at most ``l_mu`` sites;
  exact copies);
* elementwise operations and ``matmul`` act on the blocks (ordinary operands broadcast as
  global arrays: axes of the lattice's extent are cut to the block);
* ``sum``/``mean`` over all site axes are global and reproducible (:func:`reproducible_sum`:
  binned summation, the same bits on every grid of ranks, within half an ulp plus
  ``count 2^-106 max|x|`` of the exact sum); ``max``/``min``/``any``/``all`` are global;
* whatever cannot be decomposed (flat site indices, Fourier transforms, reshapes that merge
  sites, partial site reductions) raises ``NotImplementedError`` naming the function.

So a result is bit-identical on every grid of ranks (one rank included) and agrees with the
plain one-process code to round-off (docs/parallel.md). :class:`DomainRandomStreams` draws
fields as blocks of :class:`~lattice_ml.backend.CounterRandomStreams` draws (numbers keyed on
global coordinates). The older helpers :func:`halo_shift`, :func:`local_sites` and
:func:`gather_sites` work on plain local arrays.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .backend import asarray, backend_name, device_of, make_complex, namespace, to_numpy

__all__ = ["Communicator", "ChainBlock", "CartesianGrid", "SERIAL", "world", "launched_by_mpi",
           "chain_blocks", "halo_shift", "gather_sites", "local_sites", "Decomposition",
           "DomainArray", "DomainNamespace", "DomainRandomStreams", "is_decomposed",
           "reproducible_sum"]

# variables an MPI launcher (MPICH/Hydra, Open MPI, Intel MPI, Slurm's PMI) sets in every rank
_LAUNCHER_VARIABLES = ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK",
                       "MPI_LOCALNRANKS")


def chain_blocks(n_chains: int, size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` of the contiguous chain blocks of ranks ``0 .. size-1``."""
    if not isinstance(n_chains, (int, np.integer)) or n_chains < 1:
        raise ValueError(f"n_chains must be a positive integer, not {n_chains!r}")
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"the number of ranks must be a positive integer, not {size!r}")
    if n_chains < size:
        raise ValueError(f"{n_chains} chain(s) cannot be split over {size} ranks: every rank "
                         f"needs at least one chain")
    n, r = divmod(int(n_chains), int(size))
    blocks, start = [], 0
    for k in range(size):
        stop = start + n + (1 if k < r else 0)
        blocks.append((start, stop))
        start = stop
    return blocks


@dataclass(frozen=True)
class ChainBlock:
    """The chains ``[start, stop)`` of one rank out of ``n_chains``; ``counts`` of all ranks."""

    start: int
    stop: int
    n_chains: int
    counts: tuple[int, ...]

    @property
    def count(self) -> int:
        return self.stop - self.start

    @property
    def slice(self) -> slice:
        return slice(self.start, self.stop)


class Communicator:
    """The ranks that share a run, and the exact collectives on chain-split arrays.

    ``Communicator(comm)`` wraps an ``mpi4py`` intracommunicator; ``Communicator()`` is one rank
    (every collective returns its input), so code written against it runs without MPI.
    """

    def __init__(self, comm=None):
        self.comm = comm
        self.rank = 0 if comm is None else int(comm.Get_rank())
        self.size = 1 if comm is None else int(comm.Get_size())

    def __repr__(self) -> str:
        kind = "serial" if self.comm is None else "mpi"
        return f"Communicator({kind}, rank={self.rank}, size={self.size})"

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    # -- plain collectives on Python objects ----------------------------------------------------
    def bcast(self, obj: Any, root: int = 0) -> Any:
        """``obj`` of rank ``root`` on every rank."""
        return obj if self.comm is None else self.comm.bcast(obj, root=root)

    def allgather(self, obj: Any) -> list:
        """``[obj of rank 0, obj of rank 1, ...]`` on every rank."""
        return [obj] if self.comm is None else self.comm.allgather(obj)

    def gather(self, obj: Any, root: int = 0) -> list | None:
        """``[obj of rank 0, ...]`` on ``root``, ``None`` elsewhere."""
        return [obj] if self.comm is None else self.comm.gather(obj, root=root)

    def barrier(self) -> None:
        if self.comm is not None:
            self.comm.Barrier()

    def abort(self, code: int = 1) -> None:
        """End every rank (``MPI_Abort``); a no-op on one rank, where the caller exits itself."""
        if self.comm is not None and self.size > 1:
            self.comm.Abort(code)

    # -- chains ---------------------------------------------------------------------------------
    def chains(self, n_chains: int) -> ChainBlock:
        """The contiguous block of the ``n_chains`` global chains this rank holds."""
        blocks = chain_blocks(n_chains, self.size)
        start, stop = blocks[self.rank]
        return ChainBlock(start, stop, int(n_chains), tuple(b - a for a, b in blocks))

    def chunks(self, n_chunks: int) -> ChainBlock:
        """The block of ``n_chunks`` fixed chunks (micro-batches) this rank holds
        (:meth:`ordered_sum`); the same split as :meth:`chains`."""
        return self.chains(n_chunks)

    def gather_chains(self, local, root: int = 0):
        """Per-chain arrays ``[n_local, ...]`` of all ranks concatenated in global chain order
        ``[n_chains, ...]`` on ``root`` (``None`` elsewhere); namespace and device of ``local``."""
        if self.comm is None:
            return local
        parts = self.comm.gather(np.asarray(to_numpy(local)), root=root)
        if parts is None:
            return None
        return _like(np.concatenate(parts, axis=0), local)

    def allgather_chains(self, local):
        """As :meth:`gather_chains`, on every rank."""
        if self.comm is None:
            return local
        parts = self.comm.allgather(np.asarray(to_numpy(local)))
        return _like(np.concatenate(parts, axis=0), local)

    def sum_chains(self, local, mean: bool = False):
        """Sum (or mean) over the global chain axis of per-chain values ``[n_local, ...]``, on
        every rank: ``xp.sum`` of the gathered full array, bit-identical to one process."""
        full = self.allgather_chains(local)
        xp = namespace(full)
        return xp.mean(full, axis=0) if mean else xp.sum(full, axis=0)

    def ordered_sum(self, local_parts: Sequence):
        """Sum of the partial results of all chunks, added left to right in global chunk order.

        ``local_parts`` lists this rank's chunk results in order (arrays, floats, or nested
        dicts of arrays with the same structure); every rank gets
        ``((p_0 + p_1) + p_2) + ...`` over all chunks of all ranks, the same bits as one process
        adding the same chunks in the same order.
        """
        local_parts = list(local_parts)
        if not local_parts and self.comm is None:
            raise ValueError("ordered_sum of no parts")
        template = local_parts[0] if local_parts else None
        if self.comm is None:
            parts = local_parts
        else:
            gathered = self.comm.allgather([_to_host(p) for p in local_parts])
            parts = [p for rank_parts in gathered for p in rank_parts]
            if not parts:
                raise ValueError("ordered_sum of no parts")
            if template is None:
                template = parts[0]
            parts = [_from_host(p, template) for p in parts]
        total = parts[0]
        for p in parts[1:]:
            total = _add(total, p)
        return total


SERIAL = Communicator()
"""One rank, no MPI: every collective is the identity."""


def launched_by_mpi() -> bool:
    """Whether an MPI launcher (``mpiexec``, ``srun``) started this process."""
    return any(v in os.environ for v in _LAUNCHER_VARIABLES)


def world() -> Communicator:
    """The world communicator of an MPI launch; :data:`SERIAL` when not launched by MPI.

    Raises ``RuntimeError`` when launched on several ranks without ``mpi4py`` installed (each
    rank would otherwise run the whole job alone).
    """
    if not launched_by_mpi():
        return SERIAL
    try:
        from mpi4py import MPI
    except ImportError as exc:
        size = os.environ.get("PMI_SIZE") or os.environ.get("OMPI_COMM_WORLD_SIZE") or "1"
        if size.strip() == "1":
            return SERIAL
        raise RuntimeError("started by an MPI launcher but mpi4py is not installed "
                           "(pip install 'lattice_ml[mpi]')") from exc
    return Communicator(MPI.COMM_WORLD)


def _like(host: np.ndarray, like):
    """``host`` in the namespace, dtype and device of the array ``like``."""
    if isinstance(like, np.ndarray):
        return host
    xp = namespace(like)
    return asarray(host, xp, dtype=like.dtype, device=device_of(like))


def _to_host(p):
    if isinstance(p, dict):
        return {k: _to_host(v) for k, v in p.items()}
    if isinstance(p, (int, float, complex, np.generic)):
        return p
    return np.asarray(to_numpy(p))


def _from_host(p, like):
    if isinstance(p, dict):
        return {k: _from_host(v, like[k]) for k, v in p.items()}
    if isinstance(p, np.ndarray) and not isinstance(like, (int, float, complex, np.generic)):
        return _like(p, like)
    return p


def _add(a, b):
    if isinstance(a, dict):
        if set(a) != set(b):
            raise ValueError("ordered_sum parts differ in structure")
        return {k: _add(a[k], b[k]) for k in a}
    return a + b


# ----------------------------------------------------------------------------------------------
# sites over ranks (groundwork of domain decomposition: the geometry and an exact halo shift)
# ----------------------------------------------------------------------------------------------
class CartesianGrid:
    """The lattice ``shape`` split in equal blocks over a grid of ``dims`` ranks, row-major
    (rank ``r`` has grid coordinates ``np.unravel_index(r, dims)``); ``L_mu % dims_mu == 0``."""

    def __init__(self, shape: Sequence[int], dims: Sequence[int]):
        self.shape, self.dims = tuple(int(v) for v in shape), tuple(int(v) for v in dims)
        if len(self.dims) != len(self.shape) or any(d < 1 for d in self.dims):
            raise ValueError(f"a grid of ranks {self.dims} for a lattice {self.shape}: one "
                             f"positive count per direction")
        if any(L % d for L, d in zip(self.shape, self.dims)):
            raise ValueError(f"lattice {self.shape} does not split evenly over {self.dims} ranks")
        self.local_shape = tuple(L // d for L, d in zip(self.shape, self.dims))
        self.size = int(np.prod(self.dims))

    def coords(self, rank: int) -> tuple[int, ...]:
        return tuple(int(c) for c in np.unravel_index(rank, self.dims))

    def rank_at(self, coords: Sequence[int]) -> int:
        return int(np.ravel_multi_index(tuple(c % d for c, d in zip(coords, self.dims)),
                                        self.dims))

    def start(self, rank: int) -> tuple[int, ...]:
        """Global coordinates of the first site of ``rank``'s block."""
        return tuple(c * n for c, n in zip(self.coords(rank), self.local_shape))

    def neighbour(self, rank: int, mu: int, step: int) -> int:
        """The rank whose block holds the sites ``step`` blocks away in direction ``mu``."""
        c = list(self.coords(rank))
        c[mu] += step
        return self.rank_at(c)


def local_sites(grid: CartesianGrid, rank: int, field, site_axis: int = 1):
    """``rank``'s block of a global field (site axes from ``site_axis``)."""
    idx = [slice(None)] * field.ndim
    for mu, (a, n) in enumerate(zip(grid.start(rank), grid.local_shape)):
        idx[site_axis + mu] = slice(a, a + n)
    return field[tuple(idx)]


def halo_shift(comm: Communicator, grid: CartesianGrid, field, mu: int, step: int = 1,
               site_axis: int = 1):
    """``out(x) = field(x + step mu_hat)`` on the local block of a decomposed periodic field:
    the local roll, with the ``|step|`` slices that leave the block replaced by those of the
    neighbouring rank (one exchange; exact copies, so bit-identical to ``shift`` on the whole
    field). ``|step| <=`` the local extent."""
    if grid.size != comm.size:
        raise ValueError(f"grid of {grid.size} ranks on a communicator of {comm.size}")
    axis, n = site_axis + mu, grid.local_shape[mu]
    if step == 0:
        return field
    if abs(step) > n:
        raise ValueError(f"shift by {step} exceeds the local extent {n} in direction {mu}")
    return _halo_shift_axis(comm, grid, field, mu, step, axis)


def gather_sites(comm: Communicator, grid: CartesianGrid, local, site_axis: int = 1):
    """The global field from the local blocks of all ranks, on every rank (exact copies); a sum
    over its sites is then the one-process sum, bit for bit."""
    if comm.comm is None:
        return local
    blocks = comm.allgather(np.asarray(to_numpy(local)))
    full_shape = list(blocks[0].shape)
    for mu, L in enumerate(grid.shape):
        full_shape[site_axis + mu] = L
    full = np.empty(full_shape, dtype=blocks[0].dtype)
    for r, b in enumerate(blocks):
        idx = [slice(None)] * b.ndim
        for mu, (a, n) in enumerate(zip(grid.start(r), grid.local_shape)):
            idx[site_axis + mu] = slice(a, a + n)
        full[tuple(idx)] = b
    return _like(full, local)


# ----------------------------------------------------------------------------------------------
# domain decomposition: a decomposed array type whose namespace exchanges halos and sums
# reproducibly (docs/parallel.md, "Sites over ranks")
# ----------------------------------------------------------------------------------------------
class Decomposition:
    """The sites of a lattice ``shape`` over the ranks of ``comm`` on the grid ``dims``: this
    rank's block starts at ``start`` and has the extents ``local_shape``."""

    def __init__(self, comm: Communicator, shape: Sequence[int], dims: Sequence[int]):
        self.comm, self.grid = comm, CartesianGrid(shape, dims)
        if self.grid.size != comm.size:
            raise ValueError(f"a grid of {self.grid.size} ranks {self.grid.dims} on a "
                             f"communicator of {comm.size}")
        self.shape, self.dims, self.local_shape = self.grid.shape, self.grid.dims, \
            self.grid.local_shape
        self.start = self.grid.start(comm.rank)
        self.D = len(self.shape)

    def __repr__(self) -> str:
        return f"Decomposition(shape={self.shape}, dims={self.dims}, rank={self.comm.rank})"

    def block(self, ndim: int, site_axis: int) -> tuple:
        """Slices selecting this rank's block out of a global array (site axes from
        ``site_axis``)."""
        idx = [slice(None)] * ndim
        for mu, (a, n) in enumerate(zip(self.start, self.local_shape)):
            idx[site_axis + mu] = slice(a, a + n)
        return tuple(idx)

    def scatter(self, field, site_axis: int = 1) -> "DomainArray":
        """This rank's block of the global array ``field`` as a :class:`DomainArray`."""
        if isinstance(field, DomainArray):
            raise TypeError("scatter: the field is decomposed already")
        if tuple(field.shape[site_axis:site_axis + self.D]) != self.shape:
            raise ValueError(f"scatter: axes {site_axis}..{site_axis + self.D - 1} of shape "
                             f"{tuple(field.shape)} are not the lattice {self.shape}")
        return DomainArray(field[self.block(field.ndim, site_axis)], self, site_axis)

    def random(self, rng, site_axis: int) -> "DomainRandomStreams":
        """``rng`` (a :class:`~lattice_ml.backend.CounterRandomStreams`) drawing fields with
        site axes from ``site_axis`` as this rank's block (:class:`DomainRandomStreams`)."""
        return DomainRandomStreams(rng, self, site_axis)


def _refuse(name: str, why: str):
    raise NotImplementedError(f"{name} on a decomposed array: {why} (docs/parallel.md)")


class DomainArray:
    """The local block of a field whose sites are split over ranks (:class:`Decomposition`).

    ``shape`` is the **global** shape (so operators check and build layouts as on one
    process), ``local`` the block of this rank (a NumPy, CuPy or array-api-strict array),
    ``site_axis`` the first of the D site axes. Arithmetic, ``@`` and indexing of non-site axes
    act on the block; its namespace (``__array_namespace__``, :class:`DomainNamespace`) turns
    ``roll`` along site axes into halo exchange and reductions over all site axes into
    reproducible global sums.
    """

    __slots__ = ("local", "dec", "site_axis")
    __lattice_ml_domain__ = True
    __array_ufunc__ = None       # NumPy scalars and arrays defer to the reflected operators

    def __init__(self, local, dec: Decomposition, site_axis: int):
        if isinstance(local, DomainArray):
            raise TypeError("DomainArray of a DomainArray")
        site_axis = int(site_axis)
        if not 0 <= site_axis <= local.ndim - dec.D:
            raise ValueError(f"site axes {site_axis}..{site_axis + dec.D - 1} outside an array "
                             f"of {local.ndim} axes")
        if tuple(local.shape[site_axis:site_axis + dec.D]) != dec.local_shape:
            raise ValueError(f"local block of shape {tuple(local.shape)}: axes from {site_axis} "
                             f"are not the block {dec.local_shape}")
        self.local, self.dec, self.site_axis = local, dec, site_axis

    # -- array attributes ------------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        s = list(self.local.shape)
        s[self.site_axis:self.site_axis + self.dec.D] = self.dec.shape
        return tuple(s)

    @property
    def ndim(self) -> int:
        return self.local.ndim

    @property
    def dtype(self):
        return self.local.dtype

    @property
    def device(self):
        return device_of(self.local)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def mT(self):
        return self.__array_namespace__().matrix_transpose(self)

    def __array_namespace__(self, api_version=None):
        return _domain_namespace(namespace(self.local), self.dec)

    __lattice_ml_namespace__ = __array_namespace__

    def __repr__(self) -> str:
        return (f"DomainArray(shape={self.shape}, local={tuple(self.local.shape)}, "
                f"site_axis={self.site_axis}, dtype={self.dtype}, rank={self.dec.comm.rank})")

    def gather(self):
        """The global array on every rank (exact copies; O(V) memory and traffic)."""
        return gather_sites(self.dec.comm, self.dec.grid, self.local, self.site_axis)

    def _site_axes(self) -> tuple[int, ...]:
        return tuple(range(self.site_axis, self.site_axis + self.dec.D))

    # -- conversions that have no decomposed meaning -------------------------------------------
    def __array__(self, *args, **kwargs):
        _refuse("__array__", "a decomposed array has no host copy; use .gather()")

    def __dlpack__(self, *args, **kwargs):
        _refuse("__dlpack__", "a decomposed array has no single buffer; use .gather()")

    def __bool__(self):
        _refuse("bool()", "the truth value of a field")

    def __float__(self):
        _refuse("float()", "a field is not a scalar")

    def __int__(self):
        _refuse("int()", "a field is not a scalar")

    def __complex__(self):
        _refuse("complex()", "a field is not a scalar")

    def __iter__(self):
        _refuse("iteration", "iterate over a non-site axis by indexing")

    def __len__(self) -> int:
        return self.shape[0]

    def __setitem__(self, key, value):
        _refuse("__setitem__", "write a new array (xp.where, xp.stack) instead")

    def __dlpack_device__(self):
        _refuse("__dlpack_device__", "a decomposed array has no single buffer; use .gather()")

    def to_device(self, device, stream=None):
        return DomainArray(self.local.to_device(device), self.dec, self.site_axis)

    # -- indexing of non-site axes ---------------------------------------------------------------
    def __getitem__(self, key):
        if not isinstance(key, tuple):
            key = (key,)
        n_ell = sum(k is Ellipsis for k in key)
        if n_ell > 1:
            raise IndexError("an index can only have a single ellipsis")
        consumed = sum(k is not None and k is not Ellipsis for k in key)
        if n_ell:
            i = key.index(Ellipsis)
            key = key[:i] + (slice(None),) * (self.ndim - consumed) + key[i + 1:]
        else:
            key = key + (slice(None),) * (self.ndim - consumed)
        sites = set(self._site_axes())
        axis, out_axis, new_site = 0, 0, None
        for k in key:
            if k is None:
                out_axis += 1
                continue
            if axis in sites:
                if not (isinstance(k, slice) and k == slice(None)):
                    _refuse("indexing", f"axis {axis} is a site axis (only ':' is allowed)")
                if axis == self.site_axis:
                    new_site = out_axis
                out_axis += 1
            elif isinstance(k, slice):
                out_axis += 1
            elif not isinstance(k, (int, np.integer)) or isinstance(k, bool):
                _refuse("indexing", f"index {type(k).__name__} of axis {axis} (integers, slices, "
                                    f"None and ... only)")
            axis += 1
        return DomainArray(self.local[key], self.dec, new_site)

    # -- arithmetic --------------------------------------------------------------------------------
    def _binary(op, reflected=False):
        def method(self, other):
            if reflected:
                return _elementwise(lambda a, b: op(b, a), "operator")(self, other)
            return _elementwise(op, "operator")(self, other)
        return method

    import operator as _op
    __add__, __radd__ = _binary(_op.add), _binary(_op.add, True)
    __sub__, __rsub__ = _binary(_op.sub), _binary(_op.sub, True)
    __mul__, __rmul__ = _binary(_op.mul), _binary(_op.mul, True)
    __truediv__, __rtruediv__ = _binary(_op.truediv), _binary(_op.truediv, True)
    __floordiv__, __rfloordiv__ = _binary(_op.floordiv), _binary(_op.floordiv, True)
    __mod__, __rmod__ = _binary(_op.mod), _binary(_op.mod, True)
    __pow__, __rpow__ = _binary(_op.pow), _binary(_op.pow, True)
    __matmul__, __rmatmul__ = _binary(_op.matmul), _binary(_op.matmul, True)
    __and__, __rand__ = _binary(_op.and_), _binary(_op.and_, True)
    __or__, __ror__ = _binary(_op.or_), _binary(_op.or_, True)
    __xor__, __rxor__ = _binary(_op.xor), _binary(_op.xor, True)
    __lt__, __le__ = _binary(_op.lt), _binary(_op.le)
    __gt__, __ge__ = _binary(_op.gt), _binary(_op.ge)
    __eq__, __ne__ = _binary(_op.eq), _binary(_op.ne)
    __hash__ = None

    def __neg__(self):
        return DomainArray(-self.local, self.dec, self.site_axis)

    def __pos__(self):
        return self

    def __abs__(self):
        return DomainArray(abs(self.local), self.dec, self.site_axis)

    def __invert__(self):
        return DomainArray(~self.local, self.dec, self.site_axis)

    del _binary, _op


def is_decomposed(x) -> bool:
    """Whether ``x`` is a :class:`DomainArray`."""
    return isinstance(x, DomainArray)


# -- the rules that map global arguments to local blocks -----------------------------------------
def _operands(args, kwargs):
    doms = [a for a in (*args, *kwargs.values()) if isinstance(a, DomainArray)]
    for a in (*args, *kwargs.values()):
        if isinstance(a, (list, tuple)):
            doms.extend(b for b in a if isinstance(b, DomainArray))
    return doms


def _one_decomposition(name, doms) -> Decomposition:
    dec = doms[0].dec
    for d in doms[1:]:
        if d.dec is not dec and (d.dec.shape, d.dec.dims) != (dec.shape, dec.dims):
            _refuse(name, "arrays of different decompositions")
    return dec


def _localize(name, a, dec: Decomposition, right: int):
    """The local block of a non-decomposed operand ``a`` that broadcasts against decomposed
    arrays whose first site axis is ``right`` axes from the end: size-1 axes broadcast, axes of
    the global extent are cut to this rank's block."""
    if isinstance(a, (DomainArray, type)) or not isinstance(getattr(a, "ndim", None), int):
        return a
    idx, cut = [slice(None)] * a.ndim, False
    for mu in range(dec.D):
        ax = a.ndim - right + mu
        if ax < 0:
            continue
        n = a.shape[ax]
        if n == dec.shape[mu] and n != 1:
            idx[ax] = slice(dec.start[mu], dec.start[mu] + dec.local_shape[mu])
            cut = True
        elif n != 1:
            _refuse(name, f"an operand of shape {tuple(a.shape)} does not broadcast against "
                          f"the lattice {dec.shape}")
    return a[tuple(idx)] if cut else a


def _elementwise(fn, name):
    """Elementwise functions (and ``@``): broadcast right-aligned; every decomposed operand
    must have its site axes at the same distance from the end."""
    def wrapped(*args, **kwargs):
        doms = _operands(args, kwargs)
        if not doms:
            return fn(*args, **kwargs)
        dec = _one_decomposition(name, doms)
        rights = {d.ndim - d.site_axis for d in doms}
        if len(rights) != 1:
            _refuse(name, "decomposed operands whose site axes do not line up")
        right = rights.pop()

        def loc(a):
            return a.local if isinstance(a, DomainArray) else _localize(name, a, dec, right)
        out = fn(*[loc(a) for a in args], **{k: loc(v) for k, v in kwargs.items()})
        return _wrap(out, dec, lambda r: r.ndim - right, name)
    wrapped.__name__ = getattr(fn, "__name__", name)
    return wrapped


def _leading(fn, name):
    """Functions of the trailing (matrix) axes (``linalg``, ``matrix_transpose``): the leading
    axes, the sites among them, stay where they are."""
    def wrapped(*args, **kwargs):
        doms = _operands(args, kwargs)
        if not doms:
            return fn(*args, **kwargs)
        dec = _one_decomposition(name, doms)
        site = doms[0].site_axis
        for a in (*args, *kwargs.values()):
            if hasattr(a, "shape") and not isinstance(a, DomainArray) and a.ndim > 2:
                _refuse(name, "a non-decomposed operand with leading axes")
        out = fn(*[a.local if isinstance(a, DomainArray) else a for a in args],
                 **{k: v.local if isinstance(v, DomainArray) else v for k, v in kwargs.items()})
        return _wrap(out, dec, lambda r: site, name)
    wrapped.__name__ = getattr(fn, "__name__", name)
    return wrapped


def _wrap(out, dec, site_of, name):
    if isinstance(out, tuple):
        return type(out)(*[_wrap(o, dec, site_of, name) for o in out]) \
            if hasattr(out, "_fields") else tuple(_wrap(o, dec, site_of, name) for o in out)
    if not hasattr(out, "shape") or not hasattr(out, "ndim"):
        return out
    site = site_of(out)
    if site < 0 or site + dec.D > out.ndim \
            or tuple(out.shape[site:site + dec.D]) != dec.local_shape:
        _refuse(name, "the result has lost the site axes")
    return DomainArray(out, dec, site)


def _axes_of(axis, ndim) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    return tuple(sorted(int(a) % ndim for a in axes))


# -- reproducible sums ---------------------------------------------------------------------------
def _pieces(count: int) -> tuple[int, int]:
    """``(W, K)`` for a sum of ``count`` numbers: each number is cut into K integers of at most
    W bits on fixed binary boundaries, so that ``count * 2^W <= 2^52`` (every partial sum of
    the integers is exact in float64) and ``K W >= 106``."""
    b = max(1, int(math.ceil(math.log2(max(count, 2)))))
    W = 52 - b
    if W < 8:
        raise ValueError(f"reproducible sum of {count} numbers: at most 2^44 per sum")
    return W, -(-106 // W)


def reproducible_sum(comm: Communicator, x, count: int):
    """``sum_j x[..., j]`` over the last axis of the local arrays ``x`` of all ranks (``count``
    numbers in all), the same bits for any split of the numbers over ranks and any order.

    Binned summation (Demmel & Nguyen, IEEE TC 64 (2015) 2060; ReproBLAS): one exact global
    ``M = max |x|`` (per output), ``2^(e-1) <= M < 2^e``; every number is cut into K integers
    ``n_k = round(r_k 2^(W(k+1)-e))`` (rounded to nearest even as ``(y + 1.5 2^52) - 1.5 2^52``), ``r_{k+1} = r_k - n_k 2^(e-W(k+1))``, all exact; the
    integers of piece k are summed exactly (:func:`_pieces`: ``count 2^W <= 2^52``), the ranks'
    partial sums added exactly, and the K totals ``S_k 2^(e-W(k+1))`` rounded once
    (``math.fsum``). The error is at most half an ulp of the result plus
    ``count 2^(e-KW-1) <= count 2^-106 M`` (the dropped remainders; ``e`` is raised to at
    least ``KW - 1074``, so that the last boundary is the smallest subnormal, the scales
    applied in two exact steps). Non-finite numbers give the plain sum's inf/nan. Real floating input
    (float32 summed in float64 and rounded at the end); complex: real and imaginary parts."""
    xp = namespace(x)
    if xp.isdtype(x.dtype, "complex floating"):
        re = reproducible_sum(comm, xp.real(x), count)
        im = reproducible_sum(comm, xp.imag(x), count)
        return make_complex(xp, re, im, x.dtype)
    out_dtype = x.dtype
    x = xp.astype(x, xp.float64)
    W, K = _pieces(count)
    out_shape = tuple(x.shape[:-1])
    m_local = to_numpy(xp.max(xp.abs(x), axis=-1)) if x.shape[-1] else np.zeros(out_shape)
    m = np.asarray(m_local, dtype=np.float64)
    if comm.comm is not None:
        m = np.max(np.stack(comm.allgather(m)), axis=0)
    finite = np.isfinite(m)
    e = np.frexp(np.where(finite, m, 1.0))[1].astype(np.int64)  # M < 2^e
    # below M = 2^(KW - 1074) the last boundary is the smallest subnormal: nothing is dropped
    e = np.maximum(e, K * W - 1074)
    dev = device_of(x)
    sums = np.zeros((K,) + out_shape)
    r = x if np.all(finite) else xp.where(xp.isfinite(x), x, xp.zeros_like(x))
    magic = 1.5 * 2.0 ** 52        # (y + magic) - magic rounds |y| <= 2^51 to an integer

    def power(t):                  # 2^t, |t| <= 1074, as a per-output column
        return xp.asarray(np.ldexp(1.0, t)[..., None], dtype=xp.float64, device=dev)

    for k in range(K):
        t = W * (k + 1) - e        # scale by 2^t; in two exact steps where 2^t would overflow
        if np.all(np.abs(t) <= 1022):
            n = (r * power(t) + magic) - magic
            r = r - n * power(-t)
        else:
            t1 = t // 2
            n = ((r * power(t1)) * power(t - t1) + magic) - magic
            r = r - (n * power(-t1)) * power(t1 - t)
        sums[k] = to_numpy(xp.sum(n, axis=-1))
    if comm.comm is not None:
        sums = np.sum(np.stack(comm.allgather(sums)), axis=0)   # integers < 2^52: exact
    scaled = [np.ldexp(sums[k], e - W * (k + 1)) for k in range(K)]
    flat = np.array([math.fsum(v) for v in zip(*[s.reshape(-1) for s in scaled])],
                    dtype=np.float64).reshape(out_shape)
    # non-finite input: the global max says so; the plain sums of the partials give inf/nan
    if not np.all(finite):
        plain = to_numpy(xp.sum(x, axis=-1))
        if comm.comm is not None:
            plain = np.sum(np.stack(comm.allgather(np.asarray(plain))), axis=0)
        flat = np.where(finite, flat, plain)
    return xp.asarray(flat, dtype=out_dtype, device=dev)


# -- the namespace -------------------------------------------------------------------------------
_ELEMENTWISE = frozenset("""abs acos acosh add asin asinh atan atan2 atanh bitwise_and
bitwise_invert bitwise_left_shift bitwise_or bitwise_right_shift bitwise_xor ceil clip conj
copysign cos cosh divide equal exp expm1 floor floor_divide greater greater_equal hypot imag
isfinite isinf isnan less less_equal log log1p log2 log10 logaddexp logical_and logical_not
logical_or logical_xor maximum minimum multiply negative nextafter not_equal positive pow real
reciprocal remainder round sign signbit sin sinh square sqrt subtract tan tanh trunc where
astype zeros_like ones_like empty_like full_like matmul""".split())
_LEADING = frozenset("matrix_transpose".split())
_REFUSED = {
    "reshape": None, "argmax": "an index over sites", "argmin": "an index over sites",
    "argsort": "an order over sites", "sort": "an order over sites", "nonzero": "flat site "
    "indices", "take": "flat site indices", "take_along_axis": "site indices",
    "searchsorted": "site indices", "cumulative_sum": "a running sum over sites",
    "cumulative_prod": "a running product over sites", "unique_all": "site indices",
    "unique_counts": "site indices", "unique_inverse": "site indices",
    "unique_values": "values over sites", "tile": "repeating sites", "repeat": "repeating "
    "sites", "flip": "a reflection of the sites", "tensordot": "contractions of axes",
    "einsum": "contractions of axes", "vecdot": "contractions of axes", "diff": "differences",
    "prod": "a product over sites (no reproducible global product)", "std": "use sum and mean",
    "var": "use sum and mean", "count_nonzero": "use sum(astype(x != 0, int64))"}


class _Sub:
    """A sub-namespace (``linalg``, ``fft``) of a :class:`DomainNamespace`."""

    def __init__(self, parent, name):
        self._parent, self._name = parent, name
        self._local = getattr(parent.local, name)

    def __getattr__(self, attr):
        fn = getattr(self._local, attr)
        label = f"{self._name}.{attr}"
        if self._name == "fft" or attr in ("vector_norm", "vecdot", "tensordot"):
            def refused(*args, **kwargs):
                if _operands(args, kwargs):
                    _refuse(label, "not decomposed (Fourier transforms and contractions over "
                                   "site axes); for norms use sum")
                return fn(*args, **kwargs)
            return refused
        return _elementwise(fn, label) if attr == "matmul" else _leading(fn, label)


class DomainNamespace:
    """The array namespace of :class:`DomainArray` over the local namespace ``local``.

    Elementwise functions and ``matmul`` act on the blocks (non-decomposed operands broadcast
    as global arrays: axes of the global lattice extent are cut to the block); ``linalg`` and
    ``matrix_transpose`` act on trailing matrix axes; indexing, ``stack``, ``concat``,
    ``moveaxis``, ``permute_dims``, ``expand_dims``, ``squeeze`` and ``reshape`` of non-site
    axes act locally; ``roll`` along site axes is a halo exchange; ``sum``, ``mean``, ``max``,
    ``min``, ``any``, ``all`` over all site axes are global (``sum``/``mean`` reproducible:
    :func:`reproducible_sum`). Everything else of the local namespace that takes no decomposed
    array passes through (creation functions make ordinary, global arrays); what cannot be
    decomposed raises ``NotImplementedError`` naming the function.
    """

    def __init__(self, local, dec: Decomposition):
        self.local, self.dec = local, dec
        self.__name__ = f"lattice_ml.parallel.DomainNamespace[{backend_name(local)}]"

    def __repr__(self) -> str:
        return f"<{self.__name__} {self.dec!r}>"

    def __getattr__(self, name):
        attr = getattr(self.local, name)
        if name in ("linalg", "fft"):
            sub = _Sub(self, name)
            setattr(self, name, sub)
            return sub
        if not callable(attr) or isinstance(attr, type) or name.startswith("_"):
            return attr
        if name in _ELEMENTWISE:
            fn = _elementwise(attr, name)
        elif name in _LEADING:
            fn = _leading(attr, name)
        elif name in _REFUSED:
            why = _REFUSED[name]

            def fn(*args, _attr=attr, _name=name, _why=why, **kwargs):
                if _operands(args, kwargs):
                    _refuse(_name, _why)
                return _attr(*args, **kwargs)
        else:
            def fn(*args, _attr=attr, _name=name, **kwargs):
                if _operands(args, kwargs):
                    _refuse(_name, "not a decomposed operation")
                return _attr(*args, **kwargs)
        setattr(self, name, fn)
        return fn

    # -- arrays ----------------------------------------------------------------------------------
    def asarray(self, obj, dtype=None, device=None, copy=None):
        if isinstance(obj, DomainArray):
            out = obj.local if dtype is None else self.local.astype(obj.local, dtype)
            return DomainArray(out, obj.dec, obj.site_axis)
        return self.local.asarray(obj, dtype=dtype, device=device, copy=copy)

    def isdtype(self, dtype, kind):
        return self.local.isdtype(dtype, kind)

    def sites(self, host, dtype=None, device=None):
        """This rank's block of the host array ``host`` ``[*sites, ...]`` of the global lattice
        (parity masks, momenta: ``lattice.Lattice`` builds them so) as a :class:`DomainArray`
        with site axis 0."""
        host = np.asarray(host)
        block = host[self.dec.block(host.ndim, 0)]
        return DomainArray(self.local.asarray(np.ascontiguousarray(block), dtype=dtype,
                                              device=device), self.dec, 0)

    # -- shifts ----------------------------------------------------------------------------------
    def roll(self, x, shift, axis=None):
        """``xp.roll``: along site axes a halo exchange with the neighbouring ranks."""
        if not isinstance(x, DomainArray):
            return self.local.roll(x, shift, axis=axis)
        if axis is None:
            _refuse("roll", "roll without an axis flattens the sites")
        axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
        shifts = (shift,) * len(axes) if isinstance(shift, (int, np.integer)) else tuple(shift)
        if len(shifts) != len(axes):
            raise ValueError("roll: shift and axis differ in length")
        out = x.local
        sites = x._site_axes()
        for s, a in zip(shifts, axes):
            a = int(a) % x.ndim
            if a in sites:
                out = _halo_roll(x.dec, out, a - x.site_axis, -int(s), a)
            else:
                out = self.local.roll(out, int(s), axis=a)
        return DomainArray(out, x.dec, x.site_axis)

    # -- reductions ------------------------------------------------------------------------------
    def _reduce(self, name, x, axis, keepdims):
        """``(global?, local axes)``; refuses partial reductions over the sites."""
        axes = _axes_of(axis, x.ndim)
        sites = set(x._site_axes())
        hit = sites.intersection(axes)
        if hit and hit != sites:
            _refuse(name, "a reduction over some but not all site axes")
        return bool(hit), axes

    def _local_reduce(self, fn, x, axes, keepdims, **kw):
        out = fn(x.local, axis=axes, keepdims=keepdims, **kw)
        site = x.site_axis if keepdims else x.site_axis - sum(a < x.site_axis for a in axes)
        return DomainArray(out, x.dec, site)

    def sum(self, x, axis=None, dtype=None, keepdims=False):
        """Over all site axes: the reproducible global sum (:func:`reproducible_sum`), the same
        bits on any grid of ranks; integers summed exactly."""
        if not isinstance(x, DomainArray):
            return self.local.sum(x, axis=axis, dtype=dtype, keepdims=keepdims)
        glob, axes = self._reduce("sum", x, axis, keepdims)
        if not glob:
            return self._local_reduce(self.local.sum, x, axes, keepdims, dtype=dtype)
        xp = self.local
        v = x.local if dtype is None else xp.astype(x.local, dtype)
        count = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
        if xp.isdtype(v.dtype, ("real floating", "complex floating")):
            flat = _move_to_end(xp, v, axes)
            out = reproducible_sum(x.dec.comm, flat, count)
        else:
            part = xp.sum(v, axis=axes)
            out = _like(np.sum(np.stack(x.dec.comm.allgather(np.asarray(to_numpy(part)))),
                               axis=0), part)
        return _keep(xp, out, axes, x.ndim) if keepdims else out

    def mean(self, x, axis=None, keepdims=False):
        if not isinstance(x, DomainArray):
            return self.local.mean(x, axis=axis, keepdims=keepdims)
        glob, axes = self._reduce("mean", x, axis, keepdims)
        if not glob:
            return self._local_reduce(self.local.mean, x, axes, keepdims)
        count = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
        return self.sum(x, axis=axes, keepdims=keepdims) / count

    def _extreme(self, name, x, axis, keepdims, combine):
        fn = getattr(self.local, name)
        if not isinstance(x, DomainArray):
            return fn(x, axis=axis, keepdims=keepdims)
        glob, axes = self._reduce(name, x, axis, keepdims)
        if not glob:
            return self._local_reduce(fn, x, axes, keepdims)
        part = fn(x.local, axis=axes, keepdims=keepdims)
        host = combine(np.stack(x.dec.comm.allgather(np.asarray(to_numpy(part)))), axis=0)
        return _like(np.asarray(host), part)

    def max(self, x, axis=None, keepdims=False):
        return self._extreme("max", x, axis, keepdims, np.max)

    def min(self, x, axis=None, keepdims=False):
        return self._extreme("min", x, axis, keepdims, np.min)

    def any(self, x, axis=None, keepdims=False):
        return self._extreme("any", x, axis, keepdims, np.any)

    def all(self, x, axis=None, keepdims=False):
        return self._extreme("all", x, axis, keepdims, np.all)

    # -- axes ------------------------------------------------------------------------------------
    def stack(self, arrays, axis=0):
        arrays = list(arrays)
        doms = [a for a in arrays if isinstance(a, DomainArray)]
        if not doms:
            return self.local.stack(arrays, axis=axis)
        x, dec = doms[0], _one_decomposition("stack", doms)
        ndim = x.ndim + 1
        a = int(axis) % ndim
        if x.site_axis < a <= x.site_axis + dec.D - 1:
            _refuse("stack", "a new axis between the site axes")
        right = x.ndim - x.site_axis
        if any(d.ndim - d.site_axis != right for d in doms):
            _refuse("stack", "decomposed arrays whose site axes do not line up")
        loc = [d.local if isinstance(d, DomainArray) else _localize("stack", d, dec, right)
               for d in arrays]
        return DomainArray(self.local.stack(loc, axis=a), dec,
                           x.site_axis + (1 if a <= x.site_axis else 0))

    def concat(self, arrays, axis=0):
        arrays = list(arrays)
        doms = [a for a in arrays if isinstance(a, DomainArray)]
        if not doms:
            return self.local.concat(arrays, axis=axis)
        x, dec = doms[0], _one_decomposition("concat", doms)
        if axis is None:
            _refuse("concat", "concatenation without an axis flattens the sites")
        a = int(axis) % x.ndim
        if a in x._site_axes():
            _refuse("concat", f"axis {a} is a site axis")
        right = x.ndim - x.site_axis
        if any(d.ndim - d.site_axis != right for d in doms):
            _refuse("concat", "decomposed arrays whose site axes do not line up")
        loc = [d.local if isinstance(d, DomainArray) else _localize("concat", d, dec, right)
               for d in arrays]
        return DomainArray(self.local.concat(loc, axis=a), dec, x.site_axis)

    def permute_dims(self, x, axes):
        if not isinstance(x, DomainArray):
            return self.local.permute_dims(x, axes)
        axes = tuple(int(a) % x.ndim for a in axes)
        sites = x._site_axes()
        pos = [axes.index(s) for s in sites]
        if pos != list(range(pos[0], pos[0] + len(pos))):
            _refuse("permute_dims", "the site axes must stay together and in order")
        return DomainArray(self.local.permute_dims(x.local, axes), x.dec, pos[0])

    def moveaxis(self, x, source, destination):
        if not isinstance(x, DomainArray):
            return self.local.moveaxis(x, source, destination)
        src = _axes_of(source, x.ndim) if not isinstance(source, (int, np.integer)) \
            else (int(source) % x.ndim,)
        if isinstance(source, (int, np.integer)):
            dst = (int(destination) % x.ndim,)
        else:
            dst = tuple(int(d) % x.ndim for d in destination)
            src = tuple(int(s) % x.ndim for s in source)
        order = [n for n in range(x.ndim) if n not in src]
        for d, s in sorted(zip(dst, src)):
            order.insert(d, s)
        return self.permute_dims(x, order)

    def expand_dims(self, x, axis=0):
        if not isinstance(x, DomainArray):
            return self.local.expand_dims(x, axis=axis)
        a = int(axis) % (x.ndim + 1)
        if x.site_axis < a < x.site_axis + x.dec.D:
            _refuse("expand_dims", "a new axis between the site axes")
        return DomainArray(self.local.expand_dims(x.local, axis=a), x.dec,
                           x.site_axis + (1 if a <= x.site_axis else 0))

    def squeeze(self, x, axis):
        if not isinstance(x, DomainArray):
            return self.local.squeeze(x, axis=axis)
        axes = _axes_of(axis, x.ndim)
        if set(axes) & set(x._site_axes()):
            _refuse("squeeze", "a site axis")
        return DomainArray(self.local.squeeze(x.local, axis=axes), x.dec,
                           x.site_axis - sum(a < x.site_axis for a in axes))

    def reshape(self, x, shape, copy=None):
        """Reshapes of the axes before the site axes and of those after them, separately (the
        site axes stay one contiguous block of the lattice's extents); merging or splitting
        sites is refused."""
        if not isinstance(x, DomainArray):
            return self.local.reshape(x, shape)
        D, old = x.dec.D, x.shape
        shape = [int(s) for s in shape]
        if shape.count(-1) == 1:
            known = int(np.prod([s for s in shape if s != -1], dtype=np.int64))
            shape[shape.index(-1)] = x.size // known if known else 0
        pre = int(np.prod(old[:x.site_axis], dtype=np.int64))
        post = int(np.prod(old[x.site_axis + D:], dtype=np.int64))
        for p in range(len(shape) - D + 1):
            if tuple(shape[p:p + D]) == x.dec.shape \
                    and int(np.prod(shape[:p], dtype=np.int64)) == pre \
                    and int(np.prod(shape[p + D:], dtype=np.int64)) == post:
                local = tuple(shape[:p]) + x.dec.local_shape + tuple(shape[p + D:])
                return DomainArray(self.local.reshape(x.local, local), x.dec, p)
        _refuse("reshape", f"{old} -> {tuple(shape)} does not keep the site axes as one block")

    def broadcast_to(self, x, shape):
        if not isinstance(x, DomainArray):
            return self.local.broadcast_to(x, shape)
        shape = tuple(int(s) for s in shape)
        right = x.ndim - x.site_axis
        site = len(shape) - right
        if site < 0 or shape[site:site + x.dec.D] != x.dec.shape:
            _refuse("broadcast_to", f"{x.shape} -> {shape} moves the site axes")
        local = list(shape)
        local[site:site + x.dec.D] = x.dec.local_shape
        return DomainArray(self.local.broadcast_to(x.local, tuple(local)), x.dec, site)


def _move_to_end(xp, v, axes):
    """``v`` with the ``axes`` moved to the end and merged into one."""
    rest = [a for a in range(v.ndim) if a not in axes]
    v = xp.permute_dims(v, tuple(rest) + tuple(axes))
    return xp.reshape(v, tuple(v.shape[:len(rest)]) + (-1,))


def _keep(xp, out, axes, ndim):
    shape, it = [], iter(out.shape)
    for a in range(ndim):
        shape.append(1 if a in axes else next(it))
    return xp.reshape(out, tuple(shape))


def _halo_roll(dec: Decomposition, local, mu: int, step: int, axis: int):
    """``out(x) = local(x + step mu_hat)`` along array ``axis`` (direction ``mu``) of a block:
    the local roll with the ``|step|`` slices that leave the block replaced by the neighbours'
    (one ``sendrecv`` per at most ``n_mu`` sites; exact copies)."""
    n, out = dec.local_shape[mu], local
    while step:
        s = max(-n, min(n, step))
        out = _halo_shift_axis(dec.comm, dec.grid, out, mu, s, axis)
        step -= s
    return out


def _halo_shift_axis(comm, grid, field, mu, step, axis):
    xp = namespace(field)
    n = grid.local_shape[mu]
    out = xp.roll(field, -step, axis=axis)
    if grid.dims[mu] == 1:
        return out
    s = abs(step)
    idx = [slice(None)] * field.ndim
    idx[axis] = slice(0, s) if step > 0 else slice(n - s, n)
    send = np.asarray(to_numpy(field[tuple(idx)]))
    dest = grid.neighbour(comm.rank, mu, -1 if step > 0 else +1)
    source = grid.neighbour(comm.rank, mu, +1 if step > 0 else -1)
    recv = _like(comm.comm.sendrecv(send, dest=dest, source=source), field)
    if s == n:
        return recv
    keep = [slice(None)] * field.ndim
    keep[axis] = slice(0, n - s) if step > 0 else slice(s, n)
    parts = [out[tuple(keep)], recv] if step > 0 else [recv, out[tuple(keep)]]
    return xp.concat(parts, axis=axis)


_NAMESPACES: dict = {}


def _domain_namespace(local, dec: Decomposition) -> DomainNamespace:
    key = (id(local), id(dec))
    ns = _NAMESPACES.get(key)
    if ns is None or ns.dec is not dec or ns.local is not local:
        if len(_NAMESPACES) > 64:
            _NAMESPACES.clear()
        ns = _NAMESPACES[key] = DomainNamespace(local, dec)
    return ns


class DomainRandomStreams:
    """A :class:`~lattice_ml.backend.CounterRandomStreams` whose draws with the lattice's
    sites at axis ``site_axis`` of ``[n_chains, *shape]`` come out as this rank's block
    (:class:`DomainArray`) with exactly the numbers of the global draw (``block=``); other
    draws (``uniform(())`` of a Metropolis step) are drawn whole. Every rank draws the same
    sequence of draws, so the streams stay in step."""

    def __init__(self, rng, dec: Decomposition, site_axis: int):
        if getattr(rng, "kind", None) != "counter":
            raise TypeError("DomainRandomStreams needs CounterRandomStreams (numbers keyed on "
                            "global coordinates)")
        self.rng, self.dec, self.site_axis = rng, dec, int(site_axis)

    def __getattr__(self, name):
        return getattr(self.rng, name)

    def _draw(self, method, shape, *args):
        shape = tuple(int(s) for s in shape)
        a = self.site_axis - 1
        if shape[a:a + self.dec.D] != self.dec.shape:
            return getattr(self.rng, method)(*args, shape)
        block = self.dec.block(len(shape), a)
        local = getattr(self.rng, method)(*args, shape, block=block)
        return DomainArray(local, self.dec, self.site_axis)

    def normal(self, shape=()):
        return self._draw("normal", shape)

    def uniform(self, shape=()):
        return self._draw("uniform", shape)

    def complex_normal(self, shape=()):
        return self._draw("complex_normal", shape)

    def integers(self, high, shape=()):
        return self._draw("integers", shape, high)
