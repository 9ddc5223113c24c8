"""Step-count adaptation of HMC during thermalisation.

For a second-order symplectic integrator (leapfrog, Omelyan 2MN) with step size ε the energy
violation of a trajectory in equilibrium has ⟨ΔH⟩ ∝ V ε⁴, and ⟨exp(−ΔH)⟩ = 1 gives ⟨ΔH⟩ =
⟨ΔH²⟩/2 to leading order; the acceptance is then ⟨P_acc⟩ = erfc(√⟨ΔH⟩ / 2) (Gupta, Kilcup and
Sharpe, Phys. Rev. D 38 (1988) 1278; Creutz, Phys. Rev. D 38 (1988) 1228). A target acceptance
P therefore asks for ⟨ΔH⟩* = (2 erfc⁻¹(P))², and from a measured ⟨ΔH²⟩/2 = h at ``n`` steps the
step count that reaches it is n (h / ⟨ΔH⟩*)^(1/4).

:func:`adapted_n_steps` applies that rule to the ΔH of a window of trajectories, with the change
bounded to [×0.8, ×2] per window (far from equilibrium, e.g. from unit links, ΔH is systematic
and the leading-order relation overshoots), a dead band of ±10 % (no dithering on noise), and
a floor above the largest step count seen to be far off target (near the stability limit of
the integrator the ε⁴ law fails and a jump down would land beyond it).
Changing the integrator only during thermalisation keeps the measured chain an exact HMC
chain with fixed parameters.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erfcinv

__all__ = ["adapted_n_steps", "target_delta_h", "MAX_N_STEPS"]

MAX_N_STEPS = 4096
"""Upper bound of the adapted step count (a run that needs more has another problem)."""


def target_delta_h(acceptance: float) -> float:
    """⟨ΔH⟩ at which erfc(√⟨ΔH⟩ / 2) equals ``acceptance`` (0 < acceptance < 1)."""
    if not 0.0 < acceptance < 1.0:
        raise ValueError(f"target acceptance must be in (0, 1), got {acceptance}")
    return float((2.0 * erfcinv(acceptance)) ** 2)


def adapted_n_steps(n_steps: int, delta_h, target_acceptance: float,
                    unstable: int = 0) -> tuple[int, int]:
    """The step count for the next window, from the ΔH ``delta_h`` (any shape, host values)
    measured at ``n_steps`` steps, and the updated ``unstable`` bound.

    ``unstable`` is the largest step count seen to give ⟨ΔH²⟩/2 above 16 ⟨ΔH⟩* (near or beyond
    the integrator's stability limit, where the ε⁴ law does not hold); the result stays above
    it. Growth is bounded by ×2 and shrinking by ×0.8 per window, and a change within ±10 % is
    not made (no dithering on noise). Non-finite ΔH (a diverging trajectory) counts as a very
    large violation. Returns ``(n, unstable)`` with n in [1, :data:`MAX_N_STEPS`].
    """
    dh = np.asarray(delta_h, dtype=np.float64).ravel()
    if dh.size == 0:
        return int(n_steps), int(unstable)
    dh = np.where(np.isfinite(dh), dh, 1e6)
    h = 0.5 * float(np.mean(dh * dh))
    target = target_delta_h(target_acceptance)
    if h > 16.0 * target:
        unstable = max(int(unstable), int(n_steps))
    factor = min(max((max(h, 1e-12) / target) ** 0.25, 0.8), 2.0)
    if 0.9 <= factor <= 1.1:
        return int(n_steps), int(unstable)
    new = math.ceil(n_steps * factor) if factor > 1 else math.floor(n_steps * factor)
    new = max(new, unstable + 1, 1)
    return int(min(new, MAX_N_STEPS)), int(unstable)
