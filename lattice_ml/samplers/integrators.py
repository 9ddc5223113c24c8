"""Symplectic, reversible molecular-dynamics integrators with multiple time scales.

A trajectory of length ``tau`` is described by a list of :class:`Level` objects, outermost first.
Level k holds the actions whose forces kick the momenta on that level, a number of steps and an
integrator. One step of an integrator (its *scheme*, :data:`SCHEMES`) is a symmetric sequence of
kicks ``P(c eps)``: p -> p + c eps F_k and drifts ``Q(c eps)``. On the innermost level a drift moves the field (through the
:mod:`~lattice_ml.samplers.spaces` hook); on any other level a drift of length h is a whole
trajectory of length h of the next level (Sexton & Weingarten, Nucl. Phys. B380 (1992) 665).

Integrators (eps = step size of the level):

* ``leapfrog``: P(eps/2) Q(eps) P(eps/2); energy violation dH = O(eps^2) per trajectory.
* ``omelyan`` (2MN, Omelyan, Mryglod & Folk, Comput. Phys. Commun. 151 (2003) 272):
  P(lam eps) Q(eps/2) P((1 - 2 lam) eps) Q(eps/2) P(lam eps), lam = 0.1931833275037836;
  also O(eps^2) but with a much smaller coefficient, at two force evaluations per step.

Kicks that follow each other at the same field (end of one step, start of the next) are merged,
so a leapfrog trajectory of n steps costs n + 1 force evaluations on its level. Every sequence is
symmetric, hence the integrator is exactly reversible: integrating with -p retraces the path.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

from ..backend import namespace

__all__ = ["Level", "OMELYAN_LAMBDA", "SCHEMES", "integrate"]

OMELYAN_LAMBDA = 0.1931833275037836

SCHEMES: dict[str, tuple[tuple[str, float], ...]] = {
    "leapfrog": (("P", 0.5), ("Q", 1.0), ("P", 0.5)),
    "omelyan": (("P", OMELYAN_LAMBDA), ("Q", 0.5), ("P", 1.0 - 2.0 * OMELYAN_LAMBDA), ("Q", 0.5),
                ("P", OMELYAN_LAMBDA)),
}


@dataclass(frozen=True, init=False)
class Level:
    """One time scale: ``actions`` (objects with ``force(field)``) integrated with ``n_steps``
    steps of the ``integrator`` (a name in :data:`SCHEMES`: ``"leapfrog"`` or ``"omelyan"``) per
    unit of the enclosing level's drift. ``integrator`` is the word of the command line
    (``sampler.integrator``); the keyword ``scheme=`` of earlier versions still works, with a
    ``DeprecationWarning``."""

    actions: Sequence = ()
    n_steps: int = 1
    integrator: str = "leapfrog"

    def __init__(self, actions: Sequence = (), n_steps: int = 1, integrator: str = "leapfrog",
                 *, scheme: str | None = None):
        if scheme is not None:
            warnings.warn("Level(scheme=...) is now Level(integrator=...)", DeprecationWarning,
                          stacklevel=2)
            integrator = scheme
        if integrator not in SCHEMES:
            raise ValueError(f"unknown integrator {integrator!r}; choose one of "
                             f"{sorted(SCHEMES)}")
        if not isinstance(n_steps, int) or n_steps < 1:
            raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
        object.__setattr__(self, "actions", tuple(actions))
        object.__setattr__(self, "n_steps", n_steps)
        object.__setattr__(self, "integrator", integrator)

    @property
    def scheme(self) -> str:
        """The ``integrator`` under its name of earlier versions."""
        return self.integrator

    def force(self, field):
        total = None
        for action in self.actions:
            f = action.force(field)
            total = f if total is None else total + f
        return total


def _operations(integrator: str, n_steps: int) -> list[tuple[str, float]]:
    ops: list[tuple[str, float]] = []
    for _ in range(n_steps):
        for kind, c in SCHEMES[integrator]:
            if kind == "P" and ops and ops[-1][0] == "P":
                ops[-1] = ("P", ops[-1][1] + c)
            else:
                ops.append((kind, c))
    return ops


def integrate(field, p, levels: Sequence[Level], space, tau: float, counts: list | None = None):
    """Integrate Hamilton's equations for a time ``tau``; returns ``(field, p)``.

    Parameters
    ----------
    field, p : arrays with the batch axis first, in the layouts the ``space`` defines.
    levels : sequence of :class:`Level`, outermost (cheapest force, largest step) first.
    space : a field space (see :mod:`lattice_ml.samplers.spaces`).
    tau : float or array ``[batch]``
        Trajectory length, common to all chains or one per chain (per-chain lengths keep the
        chains independent of each other when the length is randomised).
    counts : optional list, one int per level, incremented by the number of force evaluations.
    """
    if not levels:
        raise ValueError("integrate needs at least one level")
    ops = [_operations(lv.integrator, lv.n_steps) for lv in levels]
    if not isinstance(tau, (int, float)):
        xp = namespace(p)
        tau = xp.reshape(tau, (p.shape[0],) + (1,) * (p.ndim - 1))

    def run(k, field, p, h):
        level = levels[k]
        eps = h / level.n_steps
        for kind, c in ops[k]:
            if kind == "P":
                if level.actions:
                    p = p + (c * eps) * level.force(field)
                    if counts is not None:
                        counts[k] += 1
            elif k + 1 == len(levels):
                field = space.drift(field, p, c * eps)
            else:
                field, p = run(k + 1, field, p, c * eps)
        return field, p

    return run(0, field, p, tau)
