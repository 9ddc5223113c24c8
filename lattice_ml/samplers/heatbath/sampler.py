"""The sampler object: :class:`Heatbath` (one heatbath sweep, ``n_or`` over-relaxation sweeps,
reunitarisation) and its record :class:`HeatbathStep`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...groups import reunitarize
from . import DEFAULT_ROUNDS
from .links import _check_beta, _overrelax_flat
from .streams import _check_rounds
from .sweeps import _heatbath_sweep, _prepare, _sweep


# ------------------------------------------------------------------------------------------
# the sampler object
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HeatbathStep:
    """What one :meth:`Heatbath.step` did.

    ``mean_rounds``: ``[batch]``, the average number of rejection rounds until a link (for
    N >= 3: an SU(2) subgroup element) was accepted in the heatbath sweep (>= 1; the
    acceptance of heatbath and over-relaxation is 1 by construction). ``fallback_rounds``: the
    number of (chain, round) pairs drawn from the fallback streams. ``n_or``: over-relaxation
    sweeps done. There is deliberately no ``accepted``/``delta_h``: run loops treat such a
    sampler as always accepting.
    """

    mean_rounds: Any
    fallback_rounds: int
    n_or: int


class Heatbath:
    """Heatbath + over-relaxation updates of a gauge field with the Wilson action.

    One :meth:`step` is one heatbath sweep followed by ``n_or`` over-relaxation sweeps, then
    (``reunitarize=True``) one reunitarisation of every link. Used like ``HMC.step``:
    ``U, info = Heatbath(beta, N, n_or=4).step(U, rng)``.

    Parameters
    ----------
    beta : float >= 0
    N : int
        1 for U(1), N >= 2 for SU(N); checked against the links.
    n_or : int >= 0
        Over-relaxation sweeps per heatbath sweep.
    rounds : int
        Fixed rejection rounds per link and half-sweep (see module docstring).
    reunitarize : bool
        Reunitarise at the end of every step (recommended; costs well under a sweep).
    """

    def __init__(self, beta: float, N: int, n_or: int = 1, rounds: int = DEFAULT_ROUNDS,
                 reunitarize: bool = True):
        if isinstance(N, bool) or not isinstance(N, (int, np.integer)) or N < 1:
            raise ValueError(f"N must be a positive integer (1 for U(1)), not {N!r}")
        if isinstance(n_or, bool) or not isinstance(n_or, (int, np.integer)) or n_or < 0:
            raise ValueError(f"n_or must be a non-negative integer, not {n_or!r}")
        self.beta = _check_beta(beta)
        self.N = int(N)
        self.n_or = int(n_or)
        self.rounds = _check_rounds(rounds)
        self.reunitarize = bool(reunitarize)

    def __repr__(self) -> str:
        return (f"Heatbath(beta={self.beta}, N={self.N}, n_or={self.n_or}, rounds={self.rounds}, "
                f"reunitarize={self.reunitarize})")

    def step(self, U, rng):
        """One heatbath sweep and ``n_or`` over-relaxation sweeps; returns ``(U, HeatbathStep)``."""
        shape = _prepare(U, None, self.N)
        U, mean_rounds, fb = _heatbath_sweep(U, self.beta, rng, shape, self.rounds)
        for _ in range(self.n_or):
            U = _sweep(U, shape, lambda Uc, Vc: _overrelax_flat(Uc, Vc))
        if self.reunitarize:
            U = reunitarize(U)
        return U, HeatbathStep(mean_rounds, fb, self.n_or)
