"""Flow-based independence Metropolis: a trained (or untrained) flow as the proposal.

Each chain ``b`` of a batch holds a configuration ``x_b`` and its log-weight ``log w(x_b) =
-S(x_b) - log q(x_b)`` (``q``: the flow density, :mod:`lattice_ml.flows.flow`). One update draws a
fresh proposal ``x'_b ~ q`` (independent of ``x_b``) and accepts it with probability

    min(1, [p(x') q(x)] / [p(x) q(x')]) = min(1, exp(log w(x') - log w(x)))

(Metropolis-Hastings with an independent proposal; Albergo, Kanwar & Shanahan, Phys. Rev. D 100
(2019) 034515). This leaves ``p ∝ exp(-S)`` invariant for *any* flow whose density is positive
everywhere, so estimates are exact whatever the training; a poor flow only lowers the acceptance
and lengthens the autocorrelations. The effective sample size per proposal,
``ESS = (Σ w)^2 / (N Σ w^2)``, measures the flow quality (1 for a perfect flow).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..backend import namespace
from ..stats import effective_sample_size
from .hmc import metropolis, select_chains

__all__ = ["FlowMetropolis", "FlowMCMCState", "FlowMCMCStep"]


@dataclass(frozen=True)
class FlowMCMCState:
    """The chains' configurations ``x[batch, *sites]`` and log-weights ``log_w[batch]``."""

    x: Any
    log_w: Any


@dataclass(frozen=True)
class FlowMCMCStep:
    """What one update did, per chain (``[batch]`` arrays): ``accepted``; ``delta_h = log w(x) -
    log w(x')`` (acceptance ``min(1, exp(-delta_h))``, as for HMC); the proposals'
    ``proposal_log_w``; and ``log_w``, the log-weight of the chains' new configurations (pass it
    back to the next :meth:`FlowMetropolis.step` to save the inverse pass)."""

    accepted: Any
    delta_h: Any
    proposal_log_w: Any
    log_w: Any


class FlowMetropolis:
    """Independence Metropolis with the flow ``flow`` as proposal for the action ``action``.

    Parameters
    ----------
    flow : :class:`~lattice_ml.flows.flow.Flow`
    action : object with ``action(x) -> [batch]`` (e.g. :class:`~lattice_ml.scalar.Phi4Action`)

    The random streams ``rng`` (:class:`~lattice_ml.backend.RandomStreams`, one stream per chain)
    are passed to every call: each update draws the latent field, then one uniform per chain.
    """

    def __init__(self, flow, action):
        self.flow = flow
        self.action = action

    def propose(self, rng) -> FlowMCMCState:
        """Fresh proposals ``x ~ q`` with their log-weights ``-S(x) - log q(x)``."""
        x, logq = self.flow.sample(rng)
        return FlowMCMCState(x, -self.action.action(x) - logq)

    def init(self, rng) -> FlowMCMCState:
        """Start every chain from a flow sample (a Markov chain has to start somewhere; the
        independence sampler needs no thermalisation beyond that)."""
        return self.propose(rng)

    def log_weight(self, x):
        """``log w(x) = -S(x) - log q(x)`` ``[batch]`` (one inverse pass of the flow)."""
        return -self.action.action(x) - self.flow.log_prob(x)

    def step(self, x, rng, log_w=None):
        """One update of every chain; returns ``(x, FlowMCMCStep)``, the interface of
        :meth:`lattice_ml.samplers.HMC.step`.

        ``log_w`` is the log-weight of ``x`` when the caller kept it (``info.log_w`` of the
        previous step); without it, it is recomputed (one inverse pass of the flow)."""
        if log_w is None:
            log_w = self.log_weight(x)
        prop = self.propose(rng)
        accepted = metropolis(prop.log_w - log_w, rng)
        xp = namespace(log_w)
        new_log_w = xp.where(accepted, prop.log_w, log_w)
        return (select_chains(accepted, prop.x, x),
                FlowMCMCStep(accepted, log_w - prop.log_w, prop.log_w, new_log_w))

    def run(self, rng, n_steps: int, observables: dict, state: FlowMCMCState | None = None):
        """``n_steps`` updates; returns ``(state, history)``.

        ``observables`` maps names to functions ``x -> [batch]``; ``history`` maps each name to a
        list of ``n_steps`` arrays ``[batch]`` (measured after each update), and has
        ``"accepted"`` (per update, ``[batch]`` booleans) and ``"proposal_log_w"``. Use
        :func:`summary` for the acceptance and the ESS.
        """
        if not isinstance(n_steps, int) or n_steps < 1:
            raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
        if state is None:
            state = self.init(rng)
        hist = {k: [] for k in observables}
        hist["accepted"], hist["proposal_log_w"] = [], []
        for _ in range(n_steps):
            x, info = self.step(state.x, rng, state.log_w)
            state = FlowMCMCState(x, info.log_w)
            hist["accepted"].append(info.accepted)
            hist["proposal_log_w"].append(info.proposal_log_w)
            for k, f in observables.items():
                hist[k].append(f(state.x))
        return state, hist

    @staticmethod
    def summary(history: dict) -> dict:
        """``{"acceptance": fraction of accepted proposals, "ess": ESS per proposal}`` over all
        chains and updates of a :meth:`run` history."""
        import numpy as np
        from ..backend import to_numpy

        acc = np.stack([to_numpy(a) for a in history["accepted"]]).astype(float)
        lw = np.stack([to_numpy(a) for a in history["proposal_log_w"]])
        return {"acceptance": float(acc.mean()), "ess": effective_sample_size(lw)}
