"""Sites over ranks: the Cartesian grid of ranks, a rank's block of a global field, the exact halo
shift of a block and the gather of all blocks (:mod:`lattice_ml.parallel`)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..backend import namespace, to_numpy
from .chains import Communicator, _like

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


def gather_sites(comm: Communicator, grid: CartesianGrid, local, site_axis: int = 1,
                 root: int | None = None):
    """The global field from the local blocks of all ranks (exact copies): on every rank, or
    with ``root`` on that rank alone (``None`` elsewhere: the others never hold more than their
    block). A sum over its sites is then the one-process sum, bit for bit."""
    if comm.comm is None:
        return local
    host = np.asarray(to_numpy(local))
    blocks = comm.allgather(host) if root is None else comm.gather(host, root=root)
    if blocks is None:
        return None
    return _like(_assemble(grid, blocks, site_axis), local)


def scatter_sites(comm: Communicator, grid: CartesianGrid, field, site_axis: int = 1,
                  root: int = 0) -> np.ndarray:
    """This rank's block (host NumPy) of the global ``field`` that rank ``root`` alone holds
    (``None`` elsewhere): one message per rank, no rank but ``root`` ever holds the field."""
    if comm.comm is None:
        return np.asarray(to_numpy(local_sites(grid, 0, field, site_axis)))
    blocks = None
    if comm.rank == root:
        host = np.asarray(to_numpy(field))
        blocks = [np.ascontiguousarray(local_sites(grid, r, host, site_axis))
                  for r in range(grid.size)]
    return comm.comm.scatter(blocks, root=root)


def _assemble(grid: CartesianGrid, blocks, site_axis: int) -> np.ndarray:
    full_shape = list(blocks[0].shape)
    for mu, L in enumerate(grid.shape):
        full_shape[site_axis + mu] = L
    full = np.empty(full_shape, dtype=blocks[0].dtype)
    for r, b in enumerate(blocks):
        idx = [slice(None)] * b.ndim
        for mu, (a, n) in enumerate(zip(grid.start(r), grid.local_shape)):
            idx[site_axis + mu] = slice(a, a + n)
        full[tuple(idx)] = b
    return full


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
