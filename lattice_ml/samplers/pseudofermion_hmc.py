"""HMC with pseudofermions: every fermion action is refreshed before each trajectory.

A pseudofermion action (e.g. :class:`lattice_ml.fermions.WilsonPseudofermionAction` or
:class:`lattice_ml.fermions.rhmc.StaggeredRationalAction`) holds a field phi drawn from its
heatbath at the start of every trajectory (``refresh(U, rng)``) and then acts like any other
action on an integrator level. This wrapper adds that refresh to :class:`HMC`; it knows nothing
else about fermions.
"""

from __future__ import annotations

from typing import Sequence

from .hmc import HMC

__all__ = ["PseudofermionHMC"]


class PseudofermionHMC:
    """HMC with pseudofermions: before every :meth:`step` each fermion action is refreshed
    (``refresh(U, rng)``, in the order given, drawing from the same per-chain streams), then
    :class:`lattice_ml.samplers.HMC` draws momenta, integrates and accepts.

    Parameters
    ----------
    levels : sequence of :class:`lattice_ml.samplers.Level`
        Outermost first; put the fermion actions on an outer level and the gauge action on an
        inner one for multiple time scales. Every action in ``fermion_actions`` must appear on
        some level (otherwise it would be refreshed but not integrated).
    space : field space (``LieGroupSpace(N)``)
    tau, tau_jitter : as for :class:`~lattice_ml.samplers.HMC`
    fermion_actions : sequence of objects with ``refresh(U, rng)``; default: every action on the
        levels that has a ``refresh`` method.
    """

    def __init__(self, levels: Sequence, space, tau: float = 1.0, tau_jitter: float = 0.0,
                 fermion_actions: Sequence | None = None):
        self.hmc = HMC(levels, space, tau=tau, tau_jitter=tau_jitter)
        if fermion_actions is None:
            fermion_actions = [a for a in self.hmc.actions if hasattr(a, "refresh")]
        fermion_actions = tuple(fermion_actions)
        for fa in fermion_actions:
            if not any(fa is a for a in self.hmc.actions):
                raise ValueError(f"fermion action {fa!r} is not on any integrator level")
        self.fermion_actions = fermion_actions

    def with_n_steps(self, n_steps: int) -> "PseudofermionHMC":
        """The same sampler with ``n_steps`` steps on the outermost level (see
        :meth:`lattice_ml.samplers.HMC.with_n_steps`)."""
        hmc = self.hmc.with_n_steps(n_steps)
        return PseudofermionHMC(hmc.levels, hmc.space, hmc.tau, hmc.tau_jitter,
                                self.fermion_actions)

    @property
    def levels(self):
        return self.hmc.levels

    @property
    def space(self):
        return self.hmc.space

    def action(self, field):
        return self.hmc.action(field)

    def hamiltonian(self, field, p):
        return self.hmc.hamiltonian(field, p)

    def trajectory(self, field, p, tau=None):
        return self.hmc.trajectory(field, p, tau)

    def refresh(self, field, rng):
        """Refresh every pseudofermion field (heatbath at fixed links)."""
        for fa in self.fermion_actions:
            fa.refresh(field, rng)

    def step(self, field, rng):
        """Pseudofermion refresh, then one HMC update; returns ``(field, HMCStep)``."""
        self.hmc.space.check(field)
        self.refresh(field, rng)
        return self.hmc.step(field, rng)
