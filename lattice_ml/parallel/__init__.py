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
global coordinates). The older helpers :func:`halo_shift`, :func:`local_sites`,
:func:`gather_sites` and :func:`scatter_sites` work on plain local arrays;
``DomainArray.gather(root=0)`` and ``Decomposition.scatter_from`` move the whole field to and
from one rank only (the command's measurements, checkpoints and resumes).
"""

from .chains import SERIAL, ChainBlock, Communicator, chain_blocks, launched_by_mpi, world
from .domain import Decomposition, DomainArray, DomainRandomStreams, is_decomposed
from .namespace import DomainNamespace
from .reproducible import reproducible_sum
from .sites import CartesianGrid, gather_sites, halo_shift, local_sites, scatter_sites

__all__ = ["Communicator", "ChainBlock", "CartesianGrid", "SERIAL", "world", "launched_by_mpi",
           "chain_blocks", "halo_shift", "gather_sites", "scatter_sites", "local_sites",
           "Decomposition",
           "DomainArray", "DomainNamespace", "DomainRandomStreams", "is_decomposed",
           "reproducible_sum"]
