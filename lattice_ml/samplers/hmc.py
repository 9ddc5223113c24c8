"""Hybrid Monte Carlo for any field, many chains at once on the batch axis.

One HMC update of every chain b of a batch (Duane, Kennedy, Pendleton & Roweth, 1987):

1. draw momenta p ~ exp(-K(p)) from the field space;
2. integrate the molecular dynamics of H = K(p) + S(field) for a time tau with the
   (possibly multi-level) integrator of :mod:`lattice_ml.samplers.integrators`;
3. accept the end point with probability min(1, exp(-dH_b)), chain by chain
   (:func:`metropolis`); a rejected chain keeps its old field. ``dH`` is that of the levels'
   action, or of a ``target`` action when one is given (the MD is then only the proposal).

dH is computed in the field's dtype; a non-finite dH is always rejected.

With a fixed trajectory length, HMC is not ergodic for modes whose frequency w has w tau close
to a multiple of pi (on a free field such a mode just changes sign each trajectory and its
variance never relaxes). ``tau_jitter = j`` draws each chain's length uniformly from
[tau (1 - j), tau (1 + j)] every trajectory (Mackenzie, Phys. Lett. B226 (1989) 369), which
removes the problem and keeps detailed balance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from ..backend import namespace
from .integrators import Level, integrate

__all__ = ["HMC", "HMCStep", "metropolis", "select_chains"]


def select_chains(accept, new, old):
    """Per-chain choice: ``new[b]`` where ``accept[b]`` is true, else ``old[b]``."""
    xp = namespace(new, old)
    mask = xp.reshape(accept, (accept.shape[0],) + (1,) * (new.ndim - 1))
    return xp.where(mask, new, old)


def metropolis(log_ratio, rng):
    """Accept chain b with probability min(1, exp(log_ratio[b])); returns a boolean ``[batch]``.

    Uses ``log u < log_ratio`` with u uniform in [0, 1) from ``rng`` (one draw per chain, always
    drawn so that the streams stay aligned); NaN ratios are rejected.
    """
    xp = namespace(log_ratio)
    u = rng.uniform(())
    return xp.log(u) < log_ratio  # False for NaN


@dataclass(frozen=True)
class HMCStep:
    """What one HMC update did, per chain: ``delta_h``, ``accepted`` (``[batch]`` arrays) and the
    number of force evaluations on each level."""

    delta_h: Any
    accepted: Any
    force_evaluations: tuple[int, ...]


class HMC:
    """HMC with a multi-level integrator.

    Parameters
    ----------
    levels : sequence of :class:`~lattice_ml.samplers.integrators.Level`
        The split of the action over time scales, outermost first. The Hamiltonian's action is
        the sum of the actions of all levels.
    space : field space
        Momentum distribution and field update (e.g.
        :class:`~lattice_ml.samplers.spaces.EuclideanSpace`).
    tau : float
        Trajectory length.
    tau_jitter : float
        Relative half-width j in [0, 1) of the uniform randomisation of each chain's trajectory
        length (0: fixed length).
    target : sequence of actions, optional
        The actions of the Hamiltonian in the Metropolis test (default: those of the levels).
        With other actions than the levels' the molecular dynamics of the levels is still a
        reversible, volume-preserving map, so it is an exact proposal for ``exp(-K -
        S_target)``: the chain samples the target action whatever the levels integrate
        (self-learning HMC, :mod:`lattice_ml.samplers.slhmc`); only the acceptance suffers when
        the two differ.

    The object holds only this configuration; the field and the random streams are passed to
    :meth:`step` and returned, so there is no hidden state.
    """

    def __init__(self, levels: Sequence[Level], space, tau: float = 1.0, tau_jitter: float = 0.0,
                 target: Sequence | None = None):
        if not levels:
            raise ValueError("HMC needs at least one integrator level")
        if not tau > 0:
            raise ValueError(f"trajectory length tau must be > 0, got {tau}")
        self.levels = tuple(levels)
        self.space = space
        if not 0.0 <= tau_jitter < 1.0:
            raise ValueError(f"tau_jitter must be in [0, 1), got {tau_jitter}")
        self.tau = float(tau)
        self.tau_jitter = float(tau_jitter)
        self.actions = tuple(a for lv in self.levels for a in lv.actions)
        if not self.actions:
            raise ValueError("HMC levels hold no action")
        self.target = None if target is None else tuple(target)
        if self.target is not None and not self.target:
            raise ValueError("the target of the Metropolis test holds no action")

    def with_n_steps(self, n_steps: int) -> "HMC":
        """The same HMC with ``n_steps`` steps on the outermost level (step size ``tau /
        n_steps``); the inner levels keep their steps per outer step. For step-size tuning."""
        outer = Level(self.levels[0].actions, int(n_steps), self.levels[0].integrator)
        return HMC((outer, *self.levels[1:]), self.space, self.tau, self.tau_jitter, self.target)

    def action(self, field):
        """Total action per chain, ``[batch]``: of the ``target`` if given, else of the
        levels."""
        total = None
        for a in self.actions if self.target is None else self.target:
            s = a.action(field)
            total = s if total is None else total + s
        return total

    def hamiltonian(self, field, p):
        """H = K(p) + S(field) per chain, ``[batch]`` (S: :meth:`action`, the Metropolis
        test's)."""
        return self.space.kinetic_energy(p) + self.action(field)

    def trajectory(self, field, p, tau=None):
        """Molecular-dynamics trajectory without accept/reject; returns ``(field, p, counts)``.

        ``tau`` (float or per-chain array) overrides the trajectory length.
        """
        counts = [0] * len(self.levels)
        tau = self.tau if tau is None else tau
        field, p = integrate(field, p, self.levels, self.space, tau, counts)
        return field, p, tuple(counts)

    def step(self, field, rng):
        """One HMC update of every chain; returns ``(field, HMCStep)``.

        The incoming field is validated by the space (``space.check``): a field with NaN, or
        links that are not in the group, raise ``ValueError`` naming the problem.
        """
        self.space.check(field)
        p = self.space.sample_momenta(field, rng)
        tau = self.tau
        if self.tau_jitter > 0:
            tau = self.tau * (1.0 + self.tau_jitter * (2.0 * rng.uniform(()) - 1.0))
        h0 = self.hamiltonian(field, p)
        new, p_new, counts = self.trajectory(field, p, tau)
        delta_h = self.hamiltonian(new, p_new) - h0
        accepted = metropolis(-delta_h, rng)
        return select_chains(accepted, new, field), HMCStep(delta_h, accepted, counts)
