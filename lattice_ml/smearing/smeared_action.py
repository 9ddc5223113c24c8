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

from ..backend import asarray, device_of, namespace

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

    def parameter_gradient(self, U, weights=None):
        """``sum_b w_b dS_b/dtheta``: the gradient of the action with respect to the smearing's
        parameters (flat, the layout of ``smearing.parameters()``), with per-configuration
        weights ``w`` (``[batch]`` real; default 1). The backward pass is linear in the force
        at the smeared links, so the weights scale that force: one forward and one backward
        pass for any weights (``w_b = S_b - S_ref,b`` is the gradient of ``(1/2) sum_b (S_b -
        S_ref,b)^2``, the self-learning loss of :mod:`lattice_ml.samplers.slhmc`)."""
        smeared = self.smearing.forward(U)
        force = self.inner.force(smeared)
        if weights is not None:
            xp = namespace(force)
            w = xp.astype(asarray(weights, xp, device=device_of(force)), force.dtype)
            force = force * xp.reshape(w, (force.shape[0],) + (1,) * (force.ndim - 1))
        _, grad = self.smearing.backward(force)
        return grad
