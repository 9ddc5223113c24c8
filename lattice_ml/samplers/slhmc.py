"""Self-learning HMC (SLHMC; Nagai, Tanaka, Tomiya, arXiv:2103.11965): molecular dynamics driven
by a trained effective action, Metropolis test with the true one.

Algorithm
---------
The true action is ``S[U, phi] = S_g[U] + S_f[phi, U; m]`` (gauge action and pseudofermion
actions on the thin links at the mass m). The *effective action* keeps the gauge action and puts
the fermion action on links smeared by a trainable gauge-covariant network, possibly at another
mass ``m_h``:

    S_theta[U, phi] = S_g[U] + S_f[phi, U_theta^NN[U]; m_h].

One SLHMC update of every chain (:meth:`SelfLearningHMC.step`):

1. draw the pseudofermions from the **true** action's heatbath, ``phi ~ exp(-S_f[phi, U; m])``
   (``refresh`` of the true fermion actions), and hand each field to its effective action;
2. draw momenta ``p``; integrate the molecular dynamics of ``H_theta = K(p) + S_theta[U, phi]``
   with the usual integrators (:mod:`lattice_ml.samplers.integrators`): a reversible,
   volume-preserving map ``(U, p) -> (U', p')`` for any theta;
3. accept with probability ``min(1, exp(-dH))``, ``dH = H[U', p'] - H[U, p]`` of the **true**
   Hamiltonian ``H = K + S`` (:class:`~lattice_ml.samplers.hmc.HMC` with ``target``).

Step 1 is a Gibbs update of ``phi`` in ``exp(-S_g - S_f)``, steps 2-3 a Metropolis update of
``(U, p)`` at fixed ``phi`` with a reversible, volume-preserving proposal: both leave
``exp(-S_g[U]) det(...)[U; m]`` invariant, so the chain is exact whatever the network (trained,
untrained, or any weights) and ``m_h``; they only set the acceptance. The cost per MD step is
that of the effective action (a solve at ``m_h`` on smeared links plus the network's forward and
backward pass); the true action is solved twice per trajectory (``H`` at both ends).

Network
-------
:func:`effective_network` is a :class:`~lattice_ml.smearing.StoutSmearing` stack whose generator
in layer ``l`` is, for the loop names ``("plaquette", "polyakov")`` of the paper,

    Omega_mu^(l) = rho_plaq^(l) O_mu^plaq + rho_poly,t^(l) O_0^poly (mu = 0, time)
                                          + rho_poly,s^(l) O_i^poly (mu = i, space),

with ``O^plaq`` the plaquette staples and ``O_mu^poly`` the staple of the loop winding once round
the lattice along mu through ``U_mu(x)`` (:func:`~lattice_ml.smearing.polyakov_loops`): three
weights per layer, six for two layers. ``"rectangle"`` and ``"chair"`` add one weight per layer
each. Every weight is a scalar; the layout is ``theta[layer, type]`` flattened
(:func:`network_parameter_names`).

Training (:func:`train_effective_action`)
-----------------------------------------
During a prior HMC run of the true action, at every trajectory: draw ``phi`` from the true
heatbath, evaluate ``d = S_theta[U, phi] - S[U, phi]`` per chain, take one Adam step on

    L_theta = (1/2) <|S_theta[U, phi] - S[U, phi]|^2>      (mean over the chains),

``dL/dtheta = <d dS_theta/dtheta>`` from the hand-written stout backward pass
(:meth:`lattice_ml.smearing.SmearedAction.parameter_gradient`, one forward and one backward
pass), then run the HMC trajectory of the true action with the same ``phi``. Afterwards SLHMC
runs with theta fixed. ``std(d)`` over configurations, the *true-vs-effective spread*, is what
sets the acceptance: ``dH_true - dH_theta = d(U') - d(U)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..backend import device_of, namespace, real_dtype_of, to_numpy
from ..smearing import StoutSmearing, polyakov_loops
from .hmc import HMC, metropolis, select_chains

__all__ = ["SelfLearningHMC", "SLHMCStep", "effective_network", "network_parameter_names",
           "slhmc_loop_types", "train_effective_action", "training_step", "SLHMC_LOOPS"]

SLHMC_LOOPS = ("plaquette", "rectangle", "chair", "polyakov")
"""Loop names of :func:`effective_network` (``polyakov``: a temporal and a spatial weight)."""


def slhmc_loop_types(loops: Sequence[str], shape: Sequence[int]) -> tuple[list, list[str]]:
    """``(specs, labels)``: the loop types of :class:`~lattice_ml.smearing.StoutSmearing` for the
    loop names ``loops`` on a lattice of extents ``shape`` (time = axis 0). ``"polyakov"`` gives
    two types, the temporal loop through the links of direction 0 (``polyakov_t``) and the
    spatial loops through those of directions 1..D-1 (``polyakov_s``), so that one isotropic
    weight per type is ``rho_poly,t`` and ``rho_poly,s``."""
    shape = [int(L) for L in shape]
    D = len(shape)
    specs, labels = [], []
    for name in loops:
        if name not in SLHMC_LOOPS:
            raise ValueError(f"unknown loop name {name!r}; choose from {', '.join(SLHMC_LOOPS)}")
        if name in labels or (name == "polyakov" and "polyakov_t" in labels):
            raise ValueError(f"loop name {name!r} given twice")
        if name == "polyakov":
            specs.append(polyakov_loops(shape[0], D, 0))
            labels.append("polyakov_t")
            specs.append({mu: ([((mu, 1),) * shape[mu]] if mu > 0 else []) for mu in range(D)})
            labels.append("polyakov_s")
        else:
            specs.append(name)
            labels.append(name)
    if not specs:
        raise ValueError("the network needs at least one loop type")
    return specs, labels


def effective_network(shape: Sequence[int], n_layers: int = 2,
                      loops: Sequence[str] = ("plaquette", "polyakov"), rho=0.0,
                      method: str = "auto") -> StoutSmearing:
    """The trainable gauge-covariant network of the effective action: ``n_layers`` stout layers
    with one scalar weight per loop type of :func:`slhmc_loop_types` (module docstring; 6
    weights for 2 layers of plaquette + Polyakov loops). ``rho``: initial value of every weight
    (0: the identity map) or a flat array. The loop labels are the attribute ``labels``."""
    specs, labels = slhmc_loop_types(loops, shape)
    net = StoutSmearing(n_layers, specs, D=len(shape), directions="isotropic", rho=rho,
                        method=method)
    net.labels = tuple(labels)
    return net


def network_parameter_names(net: StoutSmearing) -> list[str]:
    """``"layer<l>/<label>"`` for every weight of :func:`effective_network`, in parameter order."""
    return [f"layer{layer}/{label}" for layer in range(net.n_layers) for label in net.labels]


@dataclass(frozen=True)
class SLHMCStep:
    """What one SLHMC update did, per chain (``[batch]`` arrays): ``delta_h`` (of the true
    Hamiltonian, the Metropolis test's), ``accepted``, ``force_evaluations`` per level (as
    :class:`~lattice_ml.samplers.HMCStep`), and the diagnostics of the proposal:
    ``delta_h_effective`` (``dH`` of the effective Hamiltonian ``K + S_theta`` that the
    molecular dynamics conserves) and ``action_difference`` (``S_theta - S`` at the start of the
    trajectory, at the refreshed pseudofermions). ``delta_h - delta_h_effective = d(U') - d(U)``
    with ``d = S - S_theta``: the part of ``dH`` that the network does not capture."""

    delta_h: Any
    accepted: Any
    force_evaluations: tuple[int, ...]
    delta_h_effective: Any
    action_difference: Any


class SelfLearningHMC:
    """SLHMC: the molecular dynamics of the effective action on ``levels``, the Metropolis test
    with the actions of ``target`` (module docstring).

    Parameters
    ----------
    levels : sequence of :class:`~lattice_ml.samplers.Level`
        The effective action split over time scales (e.g. the effective fermion actions,
        :class:`~lattice_ml.fermions.SmearedFermionAction`, outer and the gauge action inner).
    space : field space (``LieGroupSpace(N)``)
    target : sequence of actions: the true action (gauge and true pseudofermion actions).
    tau, tau_jitter : as for :class:`~lattice_ml.samplers.HMC`.

    Pseudofermions: the k-th action with ``refresh`` in ``target`` is refreshed at every step
    and its field is given (``phi``) to the k-th action with ``refresh`` on the levels; the
    counts must agree. The effective fermion actions are never refreshed themselves.
    """

    def __init__(self, levels: Sequence, space, target: Sequence, tau: float = 1.0,
                 tau_jitter: float = 0.0):
        self.hmc = HMC(levels, space, tau=tau, tau_jitter=tau_jitter, target=target)
        self.true_fermions = tuple(a for a in self.hmc.target if hasattr(a, "refresh"))
        self.effective_fermions = tuple(a for a in self.hmc.actions if hasattr(a, "refresh"))
        if len(self.true_fermions) != len(self.effective_fermions):
            raise ValueError(f"{len(self.true_fermions)} pseudofermion action(s) in the target, "
                             f"{len(self.effective_fermions)} on the levels: each true field "
                             "needs one effective action to drive the molecular dynamics")
        for t, e in zip(self.true_fermions, self.effective_fermions):
            if t is e:
                raise ValueError(f"{t!r} is both a true and an effective action; the effective "
                                 "one must be its own object (it holds a copy of phi)")

    def with_n_steps(self, n_steps: int) -> "SelfLearningHMC":
        """The same sampler with ``n_steps`` outer steps of the effective molecular dynamics."""
        hmc = self.hmc.with_n_steps(n_steps)
        return SelfLearningHMC(hmc.levels, hmc.space, self.hmc.target, hmc.tau, hmc.tau_jitter)

    @property
    def levels(self):
        return self.hmc.levels

    @property
    def space(self):
        return self.hmc.space

    @property
    def target(self):
        return self.hmc.target

    def refresh(self, field, rng):
        """Pseudofermions from the true heatbath, shared with the effective actions."""
        for t, e in zip(self.true_fermions, self.effective_fermions):
            t.refresh(field, rng)
            e.phi = t.phi

    def action_difference(self, field):
        """``S_theta[U, phi] - S[U, phi]`` per chain ``[batch]`` at the current pseudofermions
        (actions that are both on the levels and in the target cancel and are skipped)."""
        def total(actions, others):
            out = None
            for a in actions:
                if any(a is o for o in others):
                    continue
                s = a.action(field)
                out = s if out is None else out + s
            return out

        eff = total(self.hmc.actions, self.hmc.target)
        true = total(self.hmc.target, self.hmc.actions)
        if eff is None or true is None:
            xp = namespace(field)
            zero = xp.zeros((field.shape[0],), dtype=real_dtype_of(xp, field.dtype),
                            device=device_of(field))
            eff = zero if eff is None else eff
            true = zero if true is None else true
        return eff - true

    def loss_and_gradient(self, field, centered: bool = False):
        """``(loss, d, grad)`` at the current pseudofermions: ``d = S_theta - S`` per chain
        (:meth:`action_difference`), the self-learning loss ``(1/2) <d^2>`` over the chains
        (``centered``: ``(1/2) <(d - <d>)^2>``) and its gradient with respect to the weights of
        the effective actions' smearing (flat host float64 array, summed over the effective
        fermion actions: ``<w dS_theta/dtheta>`` with ``w = d`` or ``d - <d>``, one forward
        and one backward pass each, :meth:`lattice_ml.smearing.SmearedAction.parameter_gradient`).
        ``loss`` is a float, ``d`` a ``[batch]`` host array."""
        d = self.action_difference(field)
        d_host = to_numpy(d).astype(np.float64)
        n = d_host.size
        if centered and n < 2:
            raise ValueError("the centered loss needs at least two chains")
        r = d_host - np.mean(d_host) if centered else d_host
        w = (d - float(np.mean(d_host))) / n if centered else d / n
        grad = None
        for e in self.effective_fermions:
            if not hasattr(e, "parameter_gradient"):
                raise TypeError(f"{e!r} has no parameter_gradient: the effective fermion actions "
                                "must be actions on smeared links (SmearedFermionAction)")
            g = to_numpy(e.parameter_gradient(field, weights=w)).astype(np.float64)
            grad = g if grad is None else grad + g
        return 0.5 * float(np.mean(r ** 2)), d_host, grad

    def _actions(self, field):
        """``(S_target, S_theta - S)`` per chain: every action evaluated once (those both on
        the levels and in the target enter the first sum only)."""
        target, eff_only, true_only = None, None, None
        for a in self.hmc.target:
            s = a.action(field)
            target = s if target is None else target + s
            if not any(a is o for o in self.hmc.actions):
                true_only = s if true_only is None else true_only + s
        for a in self.hmc.actions:
            if not any(a is o for o in self.hmc.target):
                s = a.action(field)
                eff_only = s if eff_only is None else eff_only + s
        zero = 0.0 * target
        d = (zero if eff_only is None else eff_only) - (zero if true_only is None else true_only)
        return target, d

    def step(self, field, rng):
        """True pseudofermion refresh, effective MD, true Metropolis test; returns ``(field,
        SLHMCStep)`` with the true ``delta_h``. The random numbers are those of
        :meth:`lattice_ml.samplers.HMC.step` after the refresh (momenta, trajectory length,
        Metropolis); besides the true action at both ends the effective fermion actions are
        evaluated there too (one solve at ``m_h`` each), for the diagnostics of
        :class:`SLHMCStep`."""
        hmc = self.hmc
        hmc.space.check(field)
        self.refresh(field, rng)
        p = hmc.space.sample_momenta(field, rng)
        tau = hmc.tau
        if hmc.tau_jitter > 0:
            tau = hmc.tau * (1.0 + hmc.tau_jitter * (2.0 * rng.uniform(()) - 1.0))
        k0 = hmc.space.kinetic_energy(p)
        s0, d0 = self._actions(field)
        new, p_new, counts = hmc.trajectory(field, p, tau)
        k1 = hmc.space.kinetic_energy(p_new)
        s1, d1 = self._actions(new)
        delta_h = (k1 + s1) - (k0 + s0)
        accepted = metropolis(-delta_h, rng)
        info = SLHMCStep(delta_h, accepted, counts, delta_h + (d1 - d0), d0)
        return select_chains(accepted, new, field), info


def training_step(slhmc: SelfLearningHMC, sampler, network, field, rng, optimizer,
                  centered: bool = False):
    """One trajectory of the online training (module docstring): true heatbath for ``phi``,
    the loss and its gradient at the current weights, one optimiser step (skipped when the loss
    or the gradient is not finite), then one HMC trajectory of the true action with the same
    ``phi``. Returns ``(field, record)``; ``record`` holds ``loss`` (at the weights before the
    step), ``mean``/``spread`` (mean and standard deviation of ``d = S_theta - S`` over the
    chains), ``acceptance`` (of the true HMC), ``theta`` (the weights after the step, a host
    array) and ``info`` (the HMC step). Arguments as for :func:`train_effective_action`."""
    slhmc.space.check(field)
    slhmc.refresh(field, rng)
    loss, d_host, grad = slhmc.loss_and_gradient(field, centered)
    theta = np.asarray(network.parameters(), dtype=np.float64).copy()
    if grad is not None and math.isfinite(loss) and np.all(np.isfinite(grad)):
        theta = np.asarray(optimizer.step(theta, grad), dtype=np.float64)
        network.set_parameters(theta)
    field, info = sampler.hmc.step(field, rng)
    return field, {"loss": loss, "mean": float(np.mean(d_host)),
                   "spread": float(np.std(d_host)),
                   "acceptance": float(np.mean(to_numpy(info.accepted))),
                   "theta": theta.copy(), "info": info}


def _check_training(slhmc: SelfLearningHMC, sampler, network) -> None:
    acts = [a for lv in sampler.hmc.levels for a in lv.actions]
    for t in slhmc.true_fermions:
        if not any(t is a for a in acts):
            raise ValueError(f"the true fermion action {t!r} of the SLHMC sampler is not on the "
                             "levels of the training sampler")
    for e in slhmc.effective_fermions:
        if getattr(e, "smearing", None) is not network:
            raise ValueError(f"the effective action {e!r} is not smeared by the network being "
                             "trained")


def train_effective_action(slhmc: SelfLearningHMC, sampler, network, field, rng,
                           n_trajectories: int, optimizer, centered: bool = False,
                           callback: Callable | None = None):
    """Online training of ``network`` during ``n_trajectories`` HMC trajectories of the true
    action (module docstring; each one is :func:`training_step`); returns ``(field, history)``.

    Parameters
    ----------
    slhmc : the :class:`SelfLearningHMC` whose effective fermion actions use ``network``.
    sampler : the HMC of the true action, an object with ``hmc.step(field, rng)`` whose levels
        hold the true fermion actions of ``slhmc`` (e.g.
        :class:`~lattice_ml.samplers.PseudofermionHMC`); its trajectories use the
        pseudofermions drawn for the loss, so each trajectory refreshes once.
    network : the trainable smearing (``parameters()``, ``set_parameters()``), e.g.
        :func:`effective_network`; its parameters are a host array and stay one.
    field, rng : start links and random streams (advanced).
    optimizer : a :mod:`lattice_ml.optim` optimiser (e.g. ``Adam(lr)``); one step per
        trajectory.
    centered : False (default): the loss of the paper, ``(1/2) <d^2>``; True: ``(1/2) <(d -
        <d>)^2>`` over the chains of each trajectory (the gradient ``<(d - <d>)
        dS_theta/dtheta>``), which leaves the mean of ``d`` alone and trains only the spread,
        the part that enters the acceptance (a constant in ``S_theta`` moves no trajectory and
        the Metropolis test does not see it). Needs at least two chains.
    callback : ``callback(t, record)`` after each trajectory.

    ``history``: per trajectory ``loss`` (the loss at the weights before the step),
    ``mean``/``spread`` (mean and standard deviation of ``d`` over the chains), ``acceptance``
    (of the true HMC) and ``theta`` (the weights after the step).
    """
    _check_training(slhmc, sampler, network)
    hist: dict[str, list] = {"loss": [], "mean": [], "spread": [], "acceptance": [], "theta": []}
    for t in range(int(n_trajectories)):
        field, rec = training_step(slhmc, sampler, network, field, rng, optimizer, centered)
        rec.pop("info")
        for k, v in rec.items():
            hist[k].append(v)
        if callback is not None:
            callback(t, rec)
    return field, hist
