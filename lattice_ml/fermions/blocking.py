"""Blocks of lattice sites for the multigrid and the Schwarz smoother: a field
``[batch, *sites, spin, colour]`` cut into blocks of ``block`` sites (every extent divisible),
coarse site ``y`` holding the block ``B(y)``. Blocked layout ``[batch, *coarse_sites, block dof]``
with the block's dof site-major (``prod(block) * spin * colour``); the split view
``[batch, c_0, b_0, ..., c_{D-1}, b_{D-1}, spin, colour]`` (``x_mu = c_mu b + b_mu``) is a pure
reshape, which per-block reductions and per-block scalars use without a copy."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..backend import namespace

__all__ = ["Blocking"]


class Blocking:
    """Cut ``sites`` into blocks of ``block`` sites; fields ``[batch, *sites, s, N]`` <->
    blocked ``[batch, *coarse_sites, prod(block) * s * N]`` (the block's dof, site-major)."""

    def __init__(self, sites: Sequence[int], block: Sequence[int], n_spin: int, N: int):
        self.sites, self.block = tuple(sites), tuple(int(b) for b in block)
        if len(self.block) != len(self.sites):
            raise ValueError(f"block {self.block} must have one extent per direction of the "
                             f"lattice {self.sites}")
        for L, b in zip(self.sites, self.block):
            if b < 1 or L % b:
                raise ValueError(f"block {self.block} does not tile the lattice {self.sites}")
        self.D = len(self.sites)
        self.coarse = tuple(L // b for L, b in zip(self.sites, self.block))
        self.n_spin, self.N = n_spin, N
        self.block_dof = math.prod(self.block) * n_spin * N

    def to_blocks(self, phi):
        xp = namespace(phi)
        B, D = phi.shape[0], self.D
        sh = [B]
        for c, b in zip(self.coarse, self.block):
            sh += [c, b]
        z = xp.reshape(phi, tuple(sh) + (self.n_spin * self.N,))
        perm = (0,) + tuple(1 + 2 * k for k in range(D)) + tuple(2 + 2 * k for k in range(D)) \
            + (2 * D + 1,)
        return xp.reshape(xp.permute_dims(z, perm), (B,) + self.coarse + (self.block_dof,))

    def from_blocks(self, z):
        xp = namespace(z)
        B, D = z.shape[0], self.D
        z = xp.reshape(z, (B,) + self.coarse + self.block + (self.n_spin * self.N,))
        perm = [0]
        for k in range(D):
            perm += [1 + k, 1 + D + k]
        perm.append(2 * D + 1)
        z = xp.permute_dims(z, tuple(perm))
        return xp.reshape(z, (B,) + self.sites + (self.n_spin, self.N))

    # -- the split view: per-block sums and per-block scalars without a copy -------------------
    def split(self, phi):
        """``[batch, *sites, s, N]`` -> ``[batch, c_0, b_0, ..., c_{D-1}, b_{D-1}, s, N]``."""
        xp = namespace(phi)
        sh = [phi.shape[0]]
        for c, b in zip(self.coarse, self.block):
            sh += [c, b]
        return xp.reshape(phi, tuple(sh) + tuple(phi.shape[-2:]))

    def block_sum(self, z):
        """Sum of a split field over each block's sites, spin and colour:
        ``[batch, c_0, 1, ..., c_{D-1}, 1, 1, 1]`` (broadcasts against the split view)."""
        xp = namespace(z)
        axes = tuple(2 + 2 * k for k in range(self.D)) + (2 * self.D + 1, 2 * self.D + 2)
        return xp.sum(z, axis=axes, keepdims=True)

    def block_coordinate(self, mu: int):
        """Host ``[*sites]`` array: the position ``x_mu mod block_mu`` inside the block."""
        grid = np.indices(self.sites)[mu]
        return grid % self.block[mu]

    def block_colour(self):
        """Host ``[*sites]`` array: the colour ``sum_mu floor(x_mu / block_mu) mod 2`` of the
        block a site belongs to (a checkerboard of blocks)."""
        grid = np.indices(self.sites)
        return sum(grid[mu] // self.block[mu] for mu in range(self.D)) % 2
