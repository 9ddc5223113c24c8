"""The Schwarz alternating procedure (SAP; Luescher, Comput. Phys. Commun. 156 (2004) 209), the
smoother of DD-alphaAMG: block solves of the Wilson(-clover) operator with Dirichlet boundaries,
multiplicative over a two-colour checkerboard of blocks.

Blocks, colours, block operators
--------------------------------
The lattice is cut into blocks of ``block`` sites (:class:`lattice_ml.fermions.blocking.Blocking`);
block ``y`` (coarse coordinates) has the colour ``c(y) = sum_mu y_mu mod 2``. Every coarse extent
must be even, so that two blocks of one colour never touch (with a coarse extent 2 both
neighbours of a block in that direction are the same block of the other colour). With ``I_B``
the injection of the dof of block ``B``, the Dirichlet block operator is

    D_B = I_B^T D I_B,

``D`` with every hop that leaves the block dropped (the fermion time boundary lies between
blocks, so no block sees it). Blocks of one colour do not couple, so with ``Pi_c`` the mask of
colour ``c``

    D_c = Pi_c D Pi_c = sum_{B of colour c} I_B D_B I_B^T

is block diagonal: one application of ``D`` to a field supported on colour ``c``, masked to
``c``, applies every ``D_B`` of that colour at once (:meth:`SchwarzSmoother.block_operator`).
This costs one full ``D`` (twice the arithmetic of the blocks of one colour alone) and reuses the
operator's own kernel.

Procedure
---------
``S(r)``, an approximation to ``D^-1 r`` from ``x = 0``, is ``n_cycles`` cycles of::

    for c in (0, 1):   x <- x + K_c (r - D x),      K_c ~ sum_{B of colour c} I_B D_B^-1 I_B^T.

With exact block solves the error ``e = D^-1 r - x`` of one cycle is multiplied by the
two-colour Schwarz product ``E = (1 - K_1 D)(1 - K_0 D)``, so ``S = (1 - E^{n_cycles}) D^-1``.
Block solvers (``block_solver``):

* ``"mr"``: ``n_mr`` minimal-residual steps on every block of colour ``c`` at once, from
  ``y = 0``, with a step length per block and batch entry::

      q = D_c rho,   omega_B = <q, rho>_B / <q, q>_B,   y <- y + omega rho,   rho <- rho - omega q

  (``<., .>_B`` summed over the block's sites, spin and colour; the split view of
  :class:`Blocking`, no copy). ``S`` is then not exactly linear in ``r``, which :func:`fgmres`
  allows. Cost per cycle ``2 (n_mr + 1)`` applications of ``D`` (the residual update is one
  ``D``), one less for the last colour of the last cycle.
* ``"exact"``: dense block inverses (``n_b = prod(block) * spin * colour``), built once from
  ``2 n_b`` applications of ``D`` (:meth:`SchwarzSmoother.dense_blocks`), kept per colour
  ``[batch, n_blocks / 2, n_b, n_b]`` and applied to the blocks of one colour only (gathered
  with ``take``): one batched matrix-vector product per colour; small blocks only.

Masks and per-block scalars are gauge invariant and ``D`` is covariant, so ``S`` is gauge
covariant: ``S[U^g](g r) = g S[U](r)``. Layouts: fields ``[batch, *sites, spin, colour]``
(batch-aware like the solvers: per-block step lengths carry the batch axis); colour masks
``[1, *sites, 1, 1]``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..backend import real_dtype_of
from .blocking import Blocking

__all__ = ["SchwarzSmoother"]


class SchwarzSmoother:
    """SAP for the Wilson operator ``W`` (module docstring); ``smoother(r) -> y ~ D^-1 r``.

    Parameters
    ----------
    W : :class:`lattice_ml.fermions.WilsonDirac`
    block : sequence of int
        Block extents; they tile the lattice and every coarse extent is even.
    n_cycles : int
        SAP cycles (both colours each).
    n_mr : int
        Minimal-residual steps per block solve (``block_solver="mr"``).
    block_solver : ``"mr"`` or ``"exact"``

    ``applications`` counts the applications of ``D`` per call (excluding the setup).
    """

    def __init__(self, W, block: Sequence[int], *, n_cycles: int = 1, n_mr: int = 4,
                 block_solver: str = "mr"):
        if block_solver not in ("mr", "exact"):
            raise ValueError(f"block_solver must be 'mr' or 'exact', not {block_solver!r}")
        if int(n_cycles) < 1 or int(n_mr) < 1:
            raise ValueError(f"n_cycles and n_mr must be >= 1, got {n_cycles}, {n_mr}")
        self.W, self.xp = W, W.xp
        self.blocking = bl = Blocking(W.sites, block, W.n_spin, W.N)
        if any(c % 2 for c in bl.coarse):
            raise ValueError(f"SAP needs an even number of blocks in every direction (a "
                             f"checkerboard of blocks); block {bl.block} on the lattice "
                             f"{bl.sites} gives {bl.coarse}")
        self.n_cycles, self.n_mr, self.block_solver = int(n_cycles), int(n_mr), block_solver
        colour = bl.block_colour()
        rdt = real_dtype_of(self.xp, W.dtype)
        self.masks = [self.xp.asarray((colour == c).astype(np.float64).reshape(
            (1,) + W.sites + (1, 1)), dtype=rdt, device=W.device) for c in (0, 1)]
        per_colour = 1 if block_solver == "exact" else self.n_mr
        self.applications = self.n_cycles * 2 * (per_colour + 1) - 1
        self._inv = None
        if block_solver == "exact":
            self._exact_setup()

    # -- block operators ---------------------------------------------------------------------
    def block_operator(self, psi, colour: int):
        """``D_c psi = Pi_c D Pi_c psi``: every Dirichlet block operator of that colour."""
        m = self.masks[colour]
        return m * self.W.apply(m * psi)

    def dense_blocks(self):
        """``D_B`` of every block ``[batch, *coarse_sites, n_b, n_b]`` (index: the blocked dof,
        site-major), column ``k`` from the unit vector at local dof ``k`` of every block."""
        xp, bl, W = self.xp, self.blocking, self.W
        n_b = bl.block_dof
        chunk = 16 if W.U.shape[0] == 1 else 1        # columns as one batch of fields
        cols = []
        for k0 in range(0, n_b, chunk):
            ks = range(k0, min(k0 + chunk, n_b))
            e = np.zeros((len(ks),) + bl.coarse + (n_b,), dtype=complex)
            for i, k in enumerate(ks):
                e[i, ..., k] = 1.0
            f = bl.from_blocks(xp.asarray(e, dtype=W.dtype, device=W.device))
            z = bl.to_blocks(self.block_operator(f, 0) + self.block_operator(f, 1))
            cols += [z[i:i + 1, ...] for i in range(len(ks))] if chunk > 1 else [z]
        return xp.stack(cols, axis=-1)

    def _exact_setup(self):
        """Inverses of the blocks of each colour ``[batch, n_blocks / 2, n_b, n_b]`` and the
        permutation that puts a colour's blocks first (array-API ``take``, no scatter)."""
        xp, bl, W = self.xp, self.blocking, self.W
        n_blk = int(np.prod(bl.coarse))
        colour = np.indices(bl.coarse).sum(axis=0).reshape(-1) % 2
        blocks = self.dense_blocks()
        blocks = xp.reshape(blocks, (blocks.shape[0], n_blk) + tuple(blocks.shape[-2:]))
        self._inv, self._perm, self._unperm = [], [], []
        for c in (0, 1):
            first = np.concatenate([np.flatnonzero(colour == c), np.flatnonzero(colour != c)])
            idx = xp.asarray(first, dtype=xp.int64, device=W.device)
            self._perm.append(idx)
            self._unperm.append(xp.asarray(np.argsort(first), dtype=xp.int64, device=W.device))
            self._inv.append(xp.linalg.inv(xp.take(blocks, idx[:n_blk // 2], axis=1)))

    def _exact_solve(self, rho, colour: int):
        xp, bl = self.xp, self.blocking
        z = bl.to_blocks(rho)
        B, n_b = z.shape[0], bl.block_dof
        z = xp.reshape(z, (B, -1, n_b))
        half = z.shape[1] // 2
        zc = xp.take(z, self._perm[colour][:half], axis=1)
        y = (self._inv[colour] @ zc[..., None])[..., 0]
        y = xp.concat([y, xp.zeros_like(y)], axis=1)
        y = xp.reshape(xp.take(y, self._unperm[colour], axis=1), (y.shape[0],) + bl.coarse
                       + (n_b,))
        return bl.from_blocks(y)

    # -- block solves --------------------------------------------------------------------------
    def block_solve(self, r, colour: int):
        """``y ~ sum_B I_B D_B^-1 I_B^T r`` over the blocks of ``colour`` (``r`` is masked to
        them first); supported on those blocks."""
        xp, bl = self.xp, self.blocking
        m = self.masks[colour]
        rho = m * r
        if self._inv is not None:
            return self._exact_solve(rho, colour)
        shape = tuple(rho.shape)
        y = xp.zeros_like(rho)
        for _ in range(self.n_mr):
            qs = bl.split(self.block_operator(rho, colour))
            rs = bl.split(rho)
            qq = bl.block_sum(xp.real(qs) ** 2 + xp.imag(qs) ** 2)
            qr = bl.block_sum(xp.conj(qs) * rs)
            om = qr / xp.astype(xp.where(qq > 0, qq, xp.ones_like(qq)), qr.dtype)
            y = y + xp.reshape(om * rs, shape)
            rho = rho - xp.reshape(om * qs, shape)
        return y

    def __call__(self, r):
        """``n_cycles`` SAP cycles on ``D x = r`` from ``x = 0``."""
        x, res = None, r
        for cycle in range(self.n_cycles):
            for c in (0, 1):
                y = self.block_solve(res, c)
                x = y if x is None else x + y
                if cycle < self.n_cycles - 1 or c == 0:
                    res = res - self.W.apply(y)
        return x

