"""Chains over ranks: the communicator (mpi4py or one rank), the chain block of each rank, exact
gathers and order-fixed sums over chains (the specification: :mod:`lattice_ml.parallel`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..backend import asarray, device_of, namespace, to_numpy


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


