"""MPI driver (tests/test_mpi.py): sites over a Cartesian grid of ranks against one process.

Run as ``mpiexec -n R python tests/mpi/domains.py``. For every grid of R ranks over a 4x4x4x4
lattice (and over 8x4 in 2D) each rank takes its block of a field drawn whole (so it is keyed
on global coordinates), shifts it with ``halo_shift`` in every direction by -2, -1, +1, +2 and
compares with its block of ``lattice.shift`` of the whole field, bit for bit; links
``[batch, D, *sites, N, N]`` (site axis 2) and scalar fields ``[batch, *sites]``; then the
phi^4 nearest-neighbour term sum_x phi(x) sum_mu phi(x + mu) from the local blocks, summed
over the gathered sites, equals the one-process sum bit for bit. The gather to rank 0 alone and
the scatter from it (``gather_sites(root=0)``, ``scatter_sites``, ``Decomposition.scatter_from``,
``DomainArray.gather(root=0)``) give the field / the blocks on rank 0 and ``None`` / the blocks
elsewhere.
"""

import itertools

import numpy as np

from lattice_ml.backend import RandomStreams, namespace_by_name
from lattice_ml.lattice import shift
from lattice_ml.parallel import (CartesianGrid, Decomposition, DomainArray, gather_sites,
                                 halo_shift, local_sites, scatter_sites, world)


def grids(size, D):
    for dims in itertools.product(*[[d for d in (1, 2, 4) if d <= size]] * D):
        if int(np.prod(dims)) == size:
            yield dims


def main():
    comm = world()
    xp = namespace_by_name("numpy")
    rng = RandomStreams(5, 2, xp)
    checked = 0
    for shape, site_axis, extra in (((4, 4, 4, 4), 2, (4,)), ((8, 4), 1, ())):
        D = len(shape)
        lead = (D,) if site_axis == 2 else ()
        full = rng.normal(lead + shape + extra)
        for dims in grids(comm.size, D):
            grid = CartesianGrid(shape, dims)
            local = local_sites(grid, comm.rank, full, site_axis)
            assert np.array_equal(gather_sites(comm, grid, local, site_axis), full)
            # to and from rank 0 alone: the others get None / their block, never the field
            at_root = gather_sites(comm, grid, local, site_axis, root=0)
            assert (np.array_equal(at_root, full) if comm.is_root else at_root is None)
            block = scatter_sites(comm, grid, full if comm.is_root else None, site_axis)
            assert np.array_equal(block, local), dims
            dec = Decomposition(comm, shape, dims)
            f = dec.scatter_from(full if comm.is_root else None, site_axis, xp)
            assert isinstance(f, DomainArray) and np.array_equal(f.local, local)
            g = f.gather(root=0)
            assert np.array_equal(g, full) if comm.is_root else g is None
            for mu in range(D):
                for step in (-2, -1, 1, 2):
                    if abs(step) > grid.local_shape[mu]:  # (a block one site thick)
                        continue
                    got = halo_shift(comm, grid, local, mu, step, site_axis)
                    want = local_sites(grid, comm.rank, shift(full, mu, step, site_axis),
                                       site_axis)
                    assert np.array_equal(got, want), (dims, mu, step)
                    checked += 1
            if site_axis == 1:
                dens = local * sum(halo_shift(comm, grid, local, mu, 1) for mu in range(D))
                total = xp.sum(gather_sites(comm, grid, dens), axis=(1, 2))
                ref = xp.sum(full * sum(shift(full, mu, 1) for mu in range(D)), axis=(1, 2))
                assert np.array_equal(total, ref), dims
    counts = comm.gather(checked)
    if comm.is_root:
        print(f"ranks={comm.size} ok: {sum(counts)} halo shifts bit-identical")


if __name__ == "__main__":
    main()
