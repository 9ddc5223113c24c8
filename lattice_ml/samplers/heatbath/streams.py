"""Rejection sampling with fixed rounds and per-chain fallback streams (the scheme of the
module docstring of :mod:`lattice_ml.samplers.heatbath`, "Rejection loops").

The limit ``MAX_FALLBACK_ROUNDS`` is read from the package at call time, so that it can be
lowered there (``lattice_ml.samplers.heatbath.MAX_FALLBACK_ROUNDS``).
"""

from __future__ import annotations

import numpy as np

from ...backend import RandomStreams, to_numpy


# ------------------------------------------------------------------------------------------
# vectorised rejection sampling with per-chain fallback streams
# ------------------------------------------------------------------------------------------
def _draw_block(rng, rows: int, n: int, dtype):
    """One draw from the main streams: ``(seed_numbers [B], block [B, rows, n])``."""
    xp = rng.xp
    flat = rng.uniform((1 + rows * n,))
    seed_u = flat[:, 0]
    block = xp.reshape(flat[:, 1:], (flat.shape[0], rows, n))
    return seed_u, _below_one(xp, block, dtype)


def _below_one(xp, u, dtype):
    """``u`` as ``dtype``, kept below 1 (float64 draws rounded to float32 can reach 1.0)."""
    if u.dtype != dtype:
        u = xp.astype(u, dtype)
    return xp.clip(u, 0.0, 1.0 - xp.finfo(dtype).eps / 2)


class _Fallback:
    """Per-chain fallback streams of one call, created lazily (see module docstring)."""

    def __init__(self, rng, seed_u, dtype, device):
        self.rng, self.seed_u, self.dtype, self.device = rng, seed_u, dtype, device
        self._seeds = None
        self.streams: dict[int, RandomStreams] = {}    # or the main streams' own kind
        self.rounds = 0  # chain-rounds drawn from fallback streams

    def draw(self, pending_chains: np.ndarray, shape: tuple[int, ...]):
        """``[B, *shape]`` uniforms: pending chains from their own stream, 0.5 elsewhere."""
        xp = self.rng.xp
        if self._seeds is None:
            self._seeds = to_numpy(self.seed_u)
        blocks = []
        for b, pending in enumerate(pending_chains):
            if pending:
                if b not in self.streams:
                    self.streams[b] = type(self.rng)(
                        int(float(self._seeds[b]) * 2.0 ** 53), 1, xp, self.rng.dtype_name,
                        self.device, first_chain=self.rng.first_chain + b)
                blocks.append(self.streams[b].uniform(shape))
                self.rounds += 1
            else:
                blocks.append(xp.full((1,) + tuple(shape), 0.5, dtype=self.rng.dtype,
                                      device=self.device))
        return _below_one(xp, xp.concat(blocks, axis=0), self.dtype)


def _rejection(xp, propose, u, n_u: int, fallback: _Fallback):
    """Vectorised rejection sampling.

    ``u`` is ``[B, rounds * n_u, n]``; ``propose(ur)`` maps uniforms ``[B, R, n_u, n]`` to
    ``(value [B, R, n], accepted [B, R, n])`` (R proposal rounds at once). Every link keeps its
    first accepted proposal; links that accepted in none of the fixed rounds go on with
    fallback numbers, one round at a time, until all have. Returns ``(value, rounds_used)``
    (``rounds_used`` real, ``>= 1``).
    """
    from . import MAX_FALLBACK_ROUNDS  # read at call time (see the module docstring)
    B, rows, n = u.shape
    R = rows // n_u
    val, acc = propose(xp.reshape(u, (B, R, n_u, n)))
    # the first accepted round wins: select from the last round back to the first
    value, done = val[:, R - 1, :], acc[:, R - 1, :]
    used = xp.where(done, xp.full_like(value, float(R)), xp.zeros_like(value))
    for r in range(R - 2, -1, -1):
        a = acc[:, r, :]
        value = xp.where(a, val[:, r, :], value)
        used = xp.where(a, xp.full_like(value, float(r + 1)), used)
        done = xp.logical_or(done, a)
    r = R
    while True:
        pending = to_numpy(xp.any(xp.logical_not(done), axis=1))
        if not pending.any():
            break
        if r - R >= MAX_FALLBACK_ROUNDS:
            raise RuntimeError(
                f"heatbath: {int(pending.sum())} chain(s) accepted no proposal in {r} rounds; "
                "the links or the coupling are not finite")
        val, acc = propose(xp.reshape(fallback.draw(pending, (n_u, n)), (B, 1, n_u, n)))
        val, acc = val[:, 0, :], acc[:, 0, :]
        new = xp.logical_and(acc, xp.logical_not(done))
        value = xp.where(new, val, value)
        used = xp.where(new, xp.full_like(val, float(r + 1)), used)
        done = xp.logical_or(done, acc)
        r += 1
    return value, used


def _check_rounds(rounds) -> int:
    if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) or rounds < 1:
        raise ValueError(f"rounds must be a positive integer, not {rounds!r}")
    return int(rounds)
