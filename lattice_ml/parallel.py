"""Chains over processes: the communicator, which chains a rank holds, exact gathers and sums.

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
:class:`CartesianGrid`, :func:`local_sites`, :func:`halo_shift` and :func:`gather_sites` split
the sites of a periodic lattice in equal blocks over a grid of ranks and shift a decomposed
field exactly (the groundwork of domain decomposition; ``lattice.shift`` does not use them yet,
docs/parallel.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .backend import asarray, device_of, namespace, to_numpy

__all__ = ["Communicator", "ChainBlock", "CartesianGrid", "SERIAL", "world", "launched_by_mpi",
           "chain_blocks", "halo_shift", "gather_sites", "local_sites"]

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
    xp = namespace(field)
    if grid.size != comm.size:
        raise ValueError(f"grid of {grid.size} ranks on a communicator of {comm.size}")
    axis, n = site_axis + mu, grid.local_shape[mu]
    if step == 0:
        return field
    if abs(step) > n:
        raise ValueError(f"shift by {step} exceeds the local extent {n} in direction {mu}")
    out = xp.roll(field, -step, axis=axis)
    if grid.dims[mu] == 1:
        return out
    s = abs(step)
    idx = [slice(None)] * field.ndim
    # step > 0: the last s slices of out are the first s slices of the +mu neighbour
    idx[axis] = slice(0, s) if step > 0 else slice(n - s, n)
    send = np.asarray(to_numpy(field[tuple(idx)]))
    dest = grid.neighbour(comm.rank, mu, -1 if step > 0 else +1)
    source = grid.neighbour(comm.rank, mu, +1 if step > 0 else -1)
    recv = comm.comm.sendrecv(send, dest=dest, source=source)
    recv = _like(recv, field)
    keep = [slice(None)] * field.ndim
    keep[axis] = slice(0, n - s) if step > 0 else slice(s, n)
    parts = [out[tuple(keep)], recv] if step > 0 else [recv, out[tuple(keep)]]
    return xp.concat(parts, axis=axis)


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
