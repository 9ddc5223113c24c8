"""``sampler.name = "slhmc"``: self-learning HMC in ``lattice-ml run`` (the ``[slhmc]`` table).

A run with fermions (:func:`lattice_ml.cli.jobs.fermion_parts`: the true pseudofermion and
gauge actions, the measurements) makes, per chain,

1. ``sampler.n_therm`` trajectories of pseudofermion HMC of the **true** action (the step count
   adapted as for ``hmc``);
2. ``slhmc.train_trajectories`` trajectories of the same HMC with online training
   (:func:`lattice_ml.samplers.slhmc.training_step`): before each, φ from the true heatbath,
   one Adam step on the loss ``slhmc.loss`` (``paper``: ½<|S_θ − S|²>, ``centered``: ½<(d −
   <d>)²> over the chains) with the learning rate decaying from ``slhmc.lr`` to lr/10
   (cosine), then the trajectory with the same φ;
3. ``sampler.n_samples × measure_every`` SLHMC trajectories with the weights fixed
   (:class:`lattice_ml.samplers.SelfLearningHMC`): MD of the effective action ``S_θ = S_g +
   S_f[φ, U_θ^NN[U]; slhmc.m_eff]``, Metropolis with the true one, so the chain is exact.

The effective fermion actions are those of ``theory.fermion`` / ``theory.nf`` at the mass
``slhmc.m_eff`` (:func:`lattice_ml.cli.jobs.fermion_actions`), each on the links smeared by one
shared network: :func:`lattice_ml.samplers.effective_network` (``network = "stout"``: one weight
per loop type and layer; ``plaquette,polyakov`` with 2 layers is the paper's 6 weights) or a
:class:`lattice_ml.smearing.CASKSmearing` (``"cask"``: ρ and an attention β per loop type and
layer), started at the identity (all weights 0).

State across updates (:class:`SLHMCState`): the updates done, the weights, the Adam state
(moments and step count) and the training history. The run loop checkpoints it as
``sampler_state`` beside the field and restores it on ``--resume``, so a run stopped in any
phase (thermalisation, training, measurement) continues bit-identically; an extended run keeps
the trained weights. The training history goes to ``training.npz`` (``loss``, ``mean``,
``spread`` of ``d = S_θ − S`` over the chains, ``acceptance`` of the true HMC, ``theta``
``[trajectory, n_parameters]``), and every measured SLHMC trajectory adds ``action_difference``
(``d`` at its start) and ``delta_h_difference`` (ΔH_true − ΔH_eff) to ``history.npz``.
"""

from __future__ import annotations

import time

import numpy as np

from ..fermions.smeared_fermion_action import SmearedFermionAction
from ..optim import Adam, cosine_decay
from ..samplers import LieGroupSpace, PseudofermionHMC, SelfLearningHMC
from ..samplers.slhmc import effective_network, network_parameter_names, slhmc_loop_types, \
    training_step
from ..smearing import CASKSmearing
from .jobs import TRAINING_HISTORY, Job, fermion_actions, fermion_levels, fermion_parts
from .measurements import gauge_measurements
from .rules import flow_loops

__all__ = ["slhmc_job", "SLHMCState", "PhasedSLHMC", "TRAINING_KEYS"]

TRAINING_KEYS = ("loss", "mean", "spread", "acceptance", "theta")
"""The per-trajectory records of the training phase (``training.npz``)."""

FIRST_LAST = 10
"""``loss_first`` / ``loss_last`` of the summary average the first / last ``min(10, n // 4)``
training trajectories (at least one) of ``n``."""


def _network(config: dict):
    """The trainable network of ``[slhmc]`` and its parameter names."""
    sl, shape = config["slhmc"], config["lattice"]["shape"]
    loops = flow_loops(config, "slhmc")
    if sl["network"] == "stout":
        net = effective_network(shape, sl["n_layers"], loops)
        return net, network_parameter_names(net)
    specs, labels = slhmc_loop_types(loops, shape)
    net = CASKSmearing(sl["n_layers"], specs, D=len(shape), rho=0.0, beta=0.0)
    names = [f"layer{layer}/{label}/{w}" for layer in range(sl["n_layers"]) for label in labels
             for w in ("rho", "beta")]
    return net, names


class SLHMCState:
    """The state of an SLHMC run that lives from one update to the next: ``updates`` done, the
    network's weights, the optimiser (Adam moments, step count) and the training records.
    :meth:`state` / :meth:`set_state` are the checkpoint's ``sampler_state``."""

    def __init__(self, network, optimizer):
        self.network, self.optimizer = network, optimizer
        self.updates = 0
        self.records: dict[str, list] = {k: [] for k in TRAINING_KEYS}
        self.train_seconds = 0.0

    def state(self) -> dict:
        n = len(self.records["loss"])
        P = self.network.n_parameters
        return {"updates": self.updates,
                "theta": np.array(self.network.parameters(), dtype=np.float64),
                "optimizer": self.optimizer.state_dict(),
                "training": {k: np.asarray(v, dtype=np.float64).reshape((n, P) if k == "theta"
                                                                         else (n,))
                             for k, v in self.records.items()},
                "train_seconds": self.train_seconds}

    def set_state(self, st: dict) -> None:
        self.updates = int(st["updates"])
        self.network.set_parameters(np.asarray(st["theta"], dtype=np.float64))
        self.optimizer.load_state_dict(st["optimizer"])
        self.records = {k: list(np.asarray(st["training"][k])) for k in TRAINING_KEYS}
        self.train_seconds = float(st["train_seconds"])

    def training_history(self) -> dict:
        return {k: np.asarray(v, dtype=np.float64) for k, v in self.records.items()}


class _Step:
    """The run loop's view of one update: ``delta_h``, ``accepted`` and, for a measured SLHMC
    trajectory, ``history`` (more per-chain entries of ``history.npz``)."""

    def __init__(self, delta_h, accepted, history=None):
        self.delta_h, self.accepted = delta_h, accepted
        if history is not None:
            self.history = history


class PhasedSLHMC:
    """One ``step(field, rng)`` for the three phases of the module docstring, chosen by the
    updates done (:class:`SLHMCState`, shared by :meth:`with_n_steps`)."""

    def __init__(self, hmc, slhmc, state: SLHMCState, n_therm: int, n_train: int,
                 centered: bool):
        self.hmc, self.slhmc, self.st = hmc, slhmc, state
        self.n_therm, self.n_train, self.centered = n_therm, n_train, centered

    def with_n_steps(self, n_steps: int) -> "PhasedSLHMC":
        return PhasedSLHMC(self.hmc.with_n_steps(n_steps), self.slhmc.with_n_steps(n_steps),
                           self.st, self.n_therm, self.n_train, self.centered)

    def step(self, field, rng):
        st, k = self.st, self.st.updates
        if k < self.n_therm:
            field, info = self.hmc.step(field, rng)
            out = _Step(info.delta_h, info.accepted)
        elif k < self.n_therm + self.n_train:
            t0 = time.perf_counter()
            field, rec = training_step(self.slhmc, self.hmc, st.network, field, rng,
                                       st.optimizer, self.centered)
            info = rec.pop("info")
            for key in TRAINING_KEYS:
                st.records[key].append(rec[key])
            st.train_seconds += time.perf_counter() - t0
            out = _Step(info.delta_h, info.accepted)
        else:
            field, info = self.slhmc.step(field, rng)
            out = _Step(info.delta_h, info.accepted, {
                "action_difference": info.action_difference,
                "delta_h_difference": info.delta_h - info.delta_h_effective})
        st.updates = k + 1
        return field, out


def _mean_of(values, first: bool):
    if not len(values):
        return None
    k = max(1, min(FIRST_LAST, len(values) // 4))
    part = values[:k] if first else values[-k:]
    return float(np.mean(part))


def slhmc_job(config: dict) -> Job:
    """Self-learning HMC of a gauge theory with fermions (module docstring)."""
    p = fermion_parts(config)
    th, sm, sl = config["theory"], config["sampler"], config["slhmc"]
    net, names = _network(config)
    effective = [SmearedFermionAction(a, net)
                 for a in fermion_actions(th, p.lat.dim, p.N, p.tol, mass=sl["m_eff"])]
    space = LieGroupSpace(p.N)
    hmc = PseudofermionHMC(fermion_levels(sm, p.fermions, p.gauge), space, tau=sm["tau"],
                           tau_jitter=sm["tau_jitter"])
    slhmc = SelfLearningHMC(fermion_levels(sm, effective, p.gauge), space,
                            [*p.fermions, p.gauge], tau=sm["tau"], tau_jitter=sm["tau_jitter"])
    n_train = sl["train_trajectories"]
    optimizer = Adam(cosine_decay(sl["lr"], max(n_train, 1), sl["lr"] / 10))
    state = SLHMCState(net, optimizer)
    sampler = PhasedSLHMC(hmc, slhmc, state, sm["n_therm"], n_train, sl["loss"] == "centered")

    def finish(arrays: dict) -> dict:
        """The ``slhmc`` summary entry (and the training history for ``training.npz``)."""
        rec = state.records
        info = {"network": sl["network"], "n_layers": sl["n_layers"],
                "loops": list(getattr(net, "labels", None) or
                              slhmc_loop_types(flow_loops(config, "slhmc"),
                                               p.lat.shape)[1]),
                "n_parameters": int(net.n_parameters), "m_eff": sl["m_eff"],
                "loss": sl["loss"], "lr": sl["lr"], "train_trajectories": n_train,
                "weights": dict(zip(names, map(float, net.parameters()))),
                "loss_first": _mean_of(rec["loss"], True),
                "loss_last": _mean_of(rec["loss"], False),
                "spread_first": _mean_of(rec["spread"], True),
                "spread_last": _mean_of(rec["spread"], False),
                "training_acceptance": (float(np.mean(rec["acceptance"]))
                                        if rec["acceptance"] else None),
                "train_seconds": state.train_seconds}
        if "action_difference" in arrays:
            d, dd = arrays["action_difference"], arrays["delta_h_difference"]
            info.update({"action_difference_mean": float(np.mean(d)),
                         "action_difference_std": float(np.std(d)),
                         "delta_h_difference_std": float(np.std(dd))})
        out = {"slhmc": info}
        if n_train:
            out[TRAINING_HISTORY] = state.training_history()
        return out

    return Job(p.lat, p.description, p.initial_field, sampler, p.measure, p.summarize, N=p.N,
               measure_gauge=gauge_measurements(config), frozen_signals=("plaquette",),
               extra={"fermions": p.fermions, "effective": effective, "network": net,
                      "tol": p.tol, "parameter_names": names},
               indexed_measure=p.indexed_measure, n_steps=sm["n_steps"],
               with_n_steps=sampler.with_n_steps, n_train=n_train, stateful=state,
               finish=finish)

