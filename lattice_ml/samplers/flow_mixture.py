"""Flow Metropolis alternated with HMC: the flow for global moves, HMC for local ones.

One update of every chain is one flow independence-Metropolis step
(:class:`~lattice_ml.samplers.flow_mcmc.FlowMetropolis`: a fresh proposal ``x' ~ q``, accepted
with probability ``min(1, w(x') / w(x))``, ``log w = -S - log q``) followed by ``n_hmc`` HMC
trajectories (:class:`~lattice_ml.samplers.hmc.HMC`) of the same action ``S``:

    K = K_flow K_hmc^n_hmc.

Each factor leaves ``p ∝ exp(-S)`` invariant, so their product does (the composed kernel is not
reversible, which an invariant Markov chain does not need). HMC moves the configuration away
from the flow's last proposal, so ``log w(x)`` of the chain is recomputed before every flow
step (one inverse pass of the flow, :meth:`FlowMetropolis.log_weight`): keeping the weight of
the configuration before the trajectories would bias the chain.

The use case is topological freezing (Kanwar et al., PRL 125 (2020) 121601, measured flow
Metropolis alone): the flow's independent proposals change the topological charge, which HMC
at weak coupling almost never does, and HMC decorrelates the short-distance modes between rare
flow acceptances (docs/gauge_flows_coupling.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..backend import namespace
from .flow_mcmc import FlowMetropolis

__all__ = ["FlowHMCMixture", "MixtureStep"]


@dataclass(frozen=True)
class MixtureStep:
    """What one update did, per chain (``[batch]`` arrays): ``flow_accepted`` and ``flow_log_w``
    (the proposal's log-weight) of the flow step, ``hmc_accepted`` (a tuple of ``n_hmc``
    boolean arrays, one per trajectory) and ``delta_h`` of the last trajectory (``None`` for
    ``n_hmc = 0``)."""

    flow_accepted: Any
    flow_log_w: Any
    hmc_accepted: tuple
    delta_h: Any


class FlowHMCMixture:
    """Alternate one flow-Metropolis step and ``n_hmc`` HMC trajectories (module docstring).

    Parameters
    ----------
    flow : a flow with ``sample(rng)`` and ``log_prob(x)`` (e.g.
        :class:`~lattice_ml.flows.u1_coupling.U1CouplingFlow`)
    action : the target action (``action(x)``; the HMC levels' own actions are separate)
    hmc : :class:`~lattice_ml.samplers.hmc.HMC` for ``action`` on the same field space
    n_hmc : trajectories per update (0: plain flow Metropolis with the weight recomputed)

    As the other samplers, the object holds only its configuration: fields and random streams
    are passed to :meth:`step` and returned.
    """

    def __init__(self, flow, action, hmc, n_hmc: int = 1):
        if isinstance(n_hmc, bool) or not isinstance(n_hmc, int) or n_hmc < 0:
            raise ValueError(f"n_hmc must be a non-negative integer, got {n_hmc!r}")
        self.flow_mh = FlowMetropolis(flow, action)
        self.hmc = hmc
        self.n_hmc = n_hmc

    def init(self, rng):
        """A flow sample per chain (a flow start; no cold start)."""
        return self.flow_mh.init(rng).x

    def step(self, x, rng):
        """One update of every chain; returns ``(x, MixtureStep)``."""
        x, info = self.flow_mh.step(x, rng)          # log w(x) recomputed: HMC moved x
        hmc_acc, dh = [], None
        for _ in range(self.n_hmc):
            x, h = self.hmc.step(x, rng)
            hmc_acc.append(h.accepted)
            dh = h.delta_h
        return x, MixtureStep(info.accepted, info.proposal_log_w, tuple(hmc_acc), dh)

    def run(self, rng, n_steps: int, observables: dict, x=None):
        """``n_steps`` updates from ``x`` (default: :meth:`init`); returns ``(x, history)``.

        ``history`` maps each observable name to ``n_steps`` arrays ``[batch]`` (measured after
        each update) and has ``"accepted"`` and ``"proposal_log_w"`` of the flow steps (so
        :meth:`FlowMetropolis.summary` applies) and ``"hmc_accepted"`` (per update, the
        fraction of accepted trajectories per chain)."""
        if not isinstance(n_steps, int) or n_steps < 1:
            raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
        if x is None:
            x = self.init(rng)
        hist = {k: [] for k in observables}
        hist["accepted"], hist["proposal_log_w"], hist["hmc_accepted"] = [], [], []
        for _ in range(n_steps):
            x, info = self.step(x, rng)
            hist["accepted"].append(info.flow_accepted)
            hist["proposal_log_w"].append(info.flow_log_w)
            if info.hmc_accepted:
                xp = namespace(info.hmc_accepted[0])
                acc = sum(xp.astype(a, xp.float64) for a in info.hmc_accepted)
                hist["hmc_accepted"].append(acc / len(info.hmc_accepted))
            for k, f in observables.items():
                hist[k].append(f(x))
        return x, hist

    @staticmethod
    def summary(history: dict) -> dict:
        """``{"acceptance", "ess"}`` of the flow steps (as :meth:`FlowMetropolis.summary`) and
        ``"hmc_acceptance"`` (``nan`` without trajectories)."""
        import numpy as np
        from ..backend import to_numpy

        out = FlowMetropolis.summary(history)
        h = history.get("hmc_accepted") or []
        out["hmc_acceptance"] = (float(np.mean([np.asarray(to_numpy(a), dtype=float)
                                                for a in h])) if h else float("nan"))
        return out
