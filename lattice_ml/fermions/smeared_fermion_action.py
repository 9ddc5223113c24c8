"""Pseudofermion actions on smeared links (``SmearedFermionAction``): a
:class:`lattice_ml.smearing.SmearedAction` (any action on smeared links) that also draws its
pseudofermions at the smeared links.

``SmearedFermionAction(fermion_action, smearing)`` is ``S(U) = S_f[U'(U), phi]`` with
``U' = smearing.forward(U)`` (e.g. :class:`lattice_ml.smearing.StoutSmearing`, weights fixed during
the trajectory). It forwards the pseudofermion heatbath to the smeared links,

    refresh(U, rng) = fermion_action.refresh(U', rng)      (phi = D[U']^dag eta, or r'(A[U']) eta),

so ``phi`` is distributed with the fermion determinant of the smeared operator, and the force is

    F(U) = smearing.backward(fermion_action.force(U'))[0]

in the convention of :meth:`lattice_ml.gauge.GaugeAction.force` (``F = -dS/dU`` as a Lie-algebra
field): the backward pass of a stout stack is the chain rule of ``U -> U'`` applied to any force
at the smeared links, so any fermion action with ``refresh/action/force`` works
(:class:`~lattice_ml.fermions.pseudofermion.WilsonPseudofermionAction`,
:class:`~lattice_ml.fermions.rhmc.StaggeredRationalAction`). It is
:class:`lattice_ml.smearing.SmearedAction` plus ``refresh`` (which ``SmearedAction`` lacks, so
:class:`~lattice_ml.samplers.PseudofermionHMC` would not find it), and ``phi`` /
``eta`` are exposed for convenience.
"""

from __future__ import annotations

from ..smearing.smeared_action import SmearedAction

__all__ = ["SmearedFermionAction"]


class SmearedFermionAction(SmearedAction):
    """``S(U) = fermion_action.action(smearing.forward(U))`` with ``refresh`` at the smeared links
    and the force through ``smearing.backward``."""

    def __repr__(self) -> str:
        return f"SmearedFermionAction({self.inner!r}, {type(self.smearing).__name__})"

    def refresh(self, U, rng):
        """Pseudofermion heatbath of the inner action at the smeared links; returns ``phi``."""
        return self.inner.refresh(self.smearing.forward(U), rng)

    @property
    def phi(self):
        return self.inner.phi

    @phi.setter
    def phi(self, value):
        self.inner.phi = value

    @property
    def eta(self):
        return self.inner.eta
