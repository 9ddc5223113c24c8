"""Actions evaluated on smeared links, with their forces through the smearing's backward pass.

``SmearedAction(action, smearing)`` is the action ``S(U) = action(smearing(U))``. Its force, in
the convention of :meth:`lattice_ml.gauge.GaugeAction.force` (``F = -dS/dU`` as a Lie-algebra
field), is the smearing's backward pass applied to the inner action's force at the smeared links:

    F(U) = smearing.backward(action.force(U'))[0],   U' = smearing.forward(U).

So HMC, its integrators and its multiple time scales take a smeared action like any other.
Pseudofermion actions on smeared links are its subclass
:class:`lattice_ml.fermions.smeared_fermion_action.SmearedFermionAction`, which adds the
pseudofermion heatbath (``refresh``) at the smeared links. ``smearing`` is any object with
``forward(U) -> U'`` and ``backward(F') -> (F, grad)``, e.g.
:class:`lattice_ml.smearing.StoutSmearing` (whose weights stay fixed here; training them is the
caller's business, with ``grad``).
"""

from __future__ import annotations

__all__ = ["SmearedAction"]


class SmearedAction:
    """``S(U) = action(smearing(U))`` with the force through the smearing's backward pass."""

    def __init__(self, action, smearing):
        self.inner = action
        self.smearing = smearing

    def __repr__(self) -> str:
        return f"SmearedAction({self.inner!r}, {type(self.smearing).__name__})"

    def action(self, U):
        """S per configuration, ``[batch]``."""
        return self.inner.action(self.smearing.forward(U))

    def force(self, U):
        """``F = -dS/dU`` ``[batch, D, *sites, N, N]`` (one forward and one backward pass)."""
        smeared = self.smearing.forward(U)
        force, _ = self.smearing.backward(self.inner.force(smeared))
        return force
