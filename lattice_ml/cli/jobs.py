"""What ``lattice-ml run`` runs: one plain :class:`Job` record per configuration.

A job is built by the small builder of its theory (:data:`BUILDERS`) from a configuration that
has passed :func:`lattice_ml.cli.config.validate_config`, so a builder checks nothing: every
cross-key rule lives in the schema (:mod:`lattice_ml.cli.rules`). The record says what the run
loop (:mod:`lattice_ml.cli.run`) needs and nothing else: the initial field, a sampler with one
``step(field, rng) -> (field, info)``, the measurements, how the histories become the
observables of SPEC section 4, and the few facts the loop acts on (links to reunitarise, a step
count to adapt, a flow to train first).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..backend import namespace
from ..fermions import (StaggeredDirac, StaggeredPseudofermionAction, StaggeredRationalAction,
                        WilsonDirac, WilsonPseudofermionAction, chiral_condensate,
                        pion_correlator)
from ..gauge import GaugeAction
from ..gauge.observables import average_plaquette, polyakov_loop, topological_charge_2d
from ..groups import haar_random, identity_like
from ..lattice import Lattice
from ..samplers import HMC, EuclideanSpace, Heatbath, LieGroupSpace, Level, PseudofermionHMC
from ..scalar import (Phi4Action, abs_magnetization, binder_cumulant, magnetization,
                      momentum_space_propagator, phi2, second_moment_correlation_length,
                      susceptibility, two_point_function)
from .measurements import (_ama_measure, _ama_summary, gauge_measurements, host,
                           pion_mass_entry, summarize_gauge_measurements, summary_entry)
from .rules import flow_kind, flow_loops, gauge_N, has_fermions

__all__ = ["Job", "build_job", "BUILDERS", "fermion_actions", "FLOW_SAMPLERS"]

FLOW_SAMPLERS = ("flow", "flow_hmc")


def _identity(field):
    return field


@dataclass
class Job:
    """Everything the run loop needs to know about one run; built by :func:`build_job`.

    lattice : the :class:`~lattice_ml.lattice.Lattice`
    description : summary entries that describe the run (theory, couplings, ...)
    initial_field : ``rng -> field`` (draws the same numbers for every kind of start)
    sampler : object with ``step(field, rng) -> (field, info)``; ``info`` has ``accepted`` and
        ``delta_h`` (``[batch]``) for Metropolis samplers, neither for the heatbath
    measure : ``(field, rng) -> {name: [batch] or [batch, T] array}``, after every
        ``sampler.measure_every`` measured updates
    summarize : ``({name: [chain, time, ...] host array}, S=1.5) -> {name: summary entry}``
        (``S``: the Γ-method's window parameter; ``lattice-ml analyse --S`` changes it)
    N : colours of the gauge links (1 for U(1)); ``None`` for a scalar field
    n_steps : outer integration steps of a sampler whose step count may be adapted
        (``None``: nothing to adapt)
    with_n_steps : ``n -> sampler`` with ``n`` outer steps (with ``n_steps``)
    measure_gauge : ``links -> {name: [batch] array}``, the ``[measure]`` observables (``None``:
        none asked for), every ``measure.every`` measurements
    prepare : ``progress -> dict`` run once before the first update (flow training); its
        result is added to ``description``
    to_field : chain state -> the physical field (the flow's map for flow HMC; else identity)
    frozen_signals : observables whose zero variance over every chain and measurement means
        the chains never moved (the run then fails)
    indexed_measure : ``measure`` takes the measurement's index ``i`` (0, 1, ...) as a third
        argument (the AMA condensate solves exactly on ``i % measure.every == 0``, the
        ``[measure]`` schedule); its ``measure.*`` entries are returned on those only
    n_train : updates of a training phase between the thermalisation and the measurements
        (self-learning HMC), part of the run: it makes ``n_therm + n_train + n_samples ×
        measure_every`` updates
    stateful : an object with ``state() -> dict`` and ``set_state(dict)``, the sampler's state
        across updates (SLHMC: weights, optimiser, training records); checkpointed as
        ``sampler_state`` and restored on resume (``None``: the sampler keeps none)
    finish : ``arrays -> dict`` of summary items at the end of the run (``arrays``: the
        histories ``[chain, time, ...]``); a :data:`TRAINING_HISTORY` item goes to
        ``training.npz``
    """

    lattice: Lattice
    description: dict
    initial_field: Callable
    sampler: Any
    measure: Callable
    summarize: Callable
    N: int | None = None
    n_steps: int | None = None
    with_n_steps: Callable | None = None
    measure_gauge: Callable | None = None
    prepare: Callable | None = None
    to_field: Callable = _identity
    frozen_signals: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)
    indexed_measure: bool = False
    n_train: int = 0
    stateful: Any = None
    finish: Callable | None = None



def _hmc_levels(sm: dict, whole, outer, inner) -> list[Level]:
    if sm["fine_steps"]:
        return [Level([outer], sm["n_steps"], sm["integrator"]),
                Level([inner], sm["fine_steps"], sm["integrator"])]
    return [Level([whole], sm["n_steps"], sm["integrator"])]


def _adaptable(sampler, sm: dict) -> dict:
    """The ``n_steps`` / ``with_n_steps`` items of a job whose sampler integrates."""
    return {"n_steps": sm["n_steps"], "with_n_steps": sampler.with_n_steps}


# ------------------------------------------------------------------------------------------
# φ⁴
# ------------------------------------------------------------------------------------------
def _phi4_parts(config: dict):
    lat = Lattice(config["lattice"]["shape"])
    th, sm = config["theory"], config["sampler"]
    if th["form"] == "standard":
        action = Phi4Action(lat, "standard", m2=th["m2"], lam=th["lam"])
    else:
        action = Phi4Action(lat, "hopping", beta=th["beta"], lam=th["lam"])
    cold = sm["start"] == "cold"

    def initial_field(rng):
        phi = rng.normal(lat.shape)  # drawn for both starts: the streams stay aligned
        return 0.0 * phi if cold else phi

    def measure(phi, rng) -> dict:
        M = magnetization(phi)
        g0, g1 = momentum_space_propagator(phi)
        return {"phi2": phi2(phi), "magnetization": M, "abs_magnetization": abs_magnetization(phi),
                "m2": M * M, "m4": (M * M) ** 2, "g0": g0, "g1": g1,
                "two_point": two_point_function(phi)}

    def summarize(hist: dict, S: float = 1.5) -> dict:
        V, L = lat.volume, lat.shape[0]
        obs = {key: summary_entry(hist[key], S=S)
               for key in ("phi2", "abs_magnetization", "magnetization")}
        obs["susceptibility"] = summary_entry([hist["m2"], hist["abs_magnetization"]],
                                              f=lambda m: susceptibility(m[0], m[1], V), S=S)
        obs["binder_cumulant"] = summary_entry([hist["m2"], hist["m4"]],
                                               f=lambda m: binder_cumulant(m[0], m[1]), S=S)
        obs["correlation_length"] = summary_entry(
            [hist["g0"], hist["g1"]], f=lambda m: second_moment_correlation_length(m[0], m[1], L),
            S=S)
        return obs

    description = {"theory": "phi4", "form": th["form"],
                   "couplings": {k: th[k] for k in ("m2", "beta", "lam") if k in th}}
    return lat, action, description, initial_field, measure, summarize


def phi4_job(config: dict) -> Job:
    """Real φ⁴ theory sampled with HMC (``fine_steps``: the local potential on the inner level)."""
    lat, a, description, initial_field, measure, summarize = _phi4_parts(config)
    sm = config["sampler"]
    sampler = HMC(_hmc_levels(sm, a, a.part("kinetic"), a.part("local")), EuclideanSpace(),
                  tau=sm["tau"], tau_jitter=sm["tau_jitter"])
    return Job(lat, description, initial_field, sampler, measure, summarize,
               frozen_signals=("phi2",), **_adaptable(sampler, sm))


def phi4_flow_job(config: dict) -> Job:
    """Real φ⁴ theory sampled with a normalizing flow, trained in ``Job.prepare``.

    ``sampler.name = "flow"``: independence Metropolis with the flow as proposal (the chain state
    is the field ``x``); ``"flow_hmc"``: HMC on the pulled-back action in the latent space (the
    chain state is the latent field ``z``; measurements use ``x = f(z)``). The flow (affine
    couplings, checkerboard masks, conditioners ``[1, channels × hidden_layers, 2]``; the
    ``[flow]`` table) is trained by ``flow.loss`` (reverse KL or path gradient) with Adam and a
    cosine decay from ``lr`` to ``lr/100``, from its own random streams (seed ``run.seed + 1``),
    so training is reproducible and a resumed run retrains the same flow. ``description["flow"]`` reports the training and
    the ESS of 4096 fresh samples.
    """
    from ..backend import namespace_by_name
    from ..flows import make_phi4_flow

    lat, action, description, initial_field, measure, summarize = _phi4_parts(config)
    sm, fl, run = config["sampler"], config["flow"], config["run"]
    xp = namespace_by_name(run["backend"])
    flow = make_phi4_flow(lat.shape, xp, n_layers=fl["n_layers"],
                          hidden=[fl["channels"]] * fl["hidden_layers"], kernel=fl["kernel"],
                          seed=run["seed"], dtype=getattr(xp, run["dtype"]))
    sampler, to_field, extra = _flow_sampler(flow, action, sm)

    def prepare(progress) -> dict:
        return _train_flow(flow, action, fl, run, xp, progress, _coupling_info(fl))

    return Job(lat, description, initial_field, sampler,
               lambda z, rng: measure(to_field(z), rng), summarize, prepare=prepare,
               to_field=to_field, frozen_signals=("phi2",), **extra)


def _coupling_info(fl: dict) -> dict:
    return {"kind": "coupling", "n_layers": fl["n_layers"], "channels": fl["channels"],
            "hidden_layers": fl["hidden_layers"], "kernel": fl["kernel"]}


def _flow_sampler(flow, action, sm: dict):
    """``(sampler, to_field, extra job items)`` of ``sampler.name = flow | flow_hmc``."""
    from ..samplers.flow_hmc import FlowHMC
    from ..samplers.flow_mcmc import FlowMetropolis

    if sm["name"] == "flow":
        return FlowMetropolis(flow, action), _identity, {}
    sampler = FlowHMC(flow, action, n_steps=sm["n_steps"], tau=sm["tau"],
                      scheme=sm["integrator"], tau_jitter=sm["tau_jitter"])
    return sampler, sampler.to_field, _adaptable(sampler, sm)


def gauge_flow_job(config: dict) -> Job:
    """Pure U(1) or SU(N) gauge theory sampled with a flow for gauge fields (``[flow] kind``):

    * ``gradient``: the learned gradient flow of a loop action
      (:class:`~lattice_ml.flows.GradientFlow`, loops ``flow.loops``, ``flow.n_t`` Legendre
      polynomials, ``flow.n_steps`` RK3 steps, ``flow.memory``), started at Lüscher's
      leading-order map and trained by ``flow.loss`` (reverse KL or path gradient);
    * ``luscher``: Lüscher's leading-order trivialising map (:func:`~lattice_ml.flows.luscher_flow`,
      no parameters, no training);
    * ``coupling``: the U(1) plaquette coupling flow in 2D
      (:func:`~lattice_ml.flows.u1_coupling.make_u1_coupling_flow`).

    For the gradient and Lüscher maps the density error is checked after training
    (:meth:`~lattice_ml.flows.GradientFlow.step_size_check` on 64 latent fields): above
    ``flow.max_density_error`` the run fails before sampling. The chains are links (``flow``)
    or latent links (``flow_hmc``, measured through the flow); they start from a flow sample
    (``flow``) or from Haar-random latent links (``flow_hmc``), whatever ``sampler.start``.
    """
    from ..backend import namespace_by_name
    from ..flows import luscher_flow

    lat, N, initial_field, measure, summarize = _gauge_parts(config)
    th, sm, fl, run = config["theory"], config["sampler"], config["flow"], config["run"]
    xp = namespace_by_name(run["backend"])
    dtype = getattr(xp, run["dtype"])
    action = GaugeAction(th["beta"], N, th["action"])
    kind = flow_kind(config)
    if kind == "coupling":
        from ..flows.u1_coupling import make_u1_coupling_flow
        flow = make_u1_coupling_flow(lat.shape, xp, n_layers=fl["n_layers"],
                                     hidden=[fl["channels"]] * fl["hidden_layers"],
                                     kernel=fl["kernel"], seed=run["seed"], dtype=dtype)
        info = _coupling_info(fl)
    else:
        loops = flow_loops(config) if kind == "gradient" else \
            (("plaquette", "rectangle") if action.c1 else ("plaquette",))
        n_t = fl["n_t"] if kind == "gradient" else 1
        flow = luscher_flow(action, lat.shape, xp, loops=loops, n_t=n_t, n_steps=fl["n_steps"],
                            memory=fl["memory"], dtype=dtype)
        info = {"kind": kind, "loops": list(flow.loop_names), "n_t": n_t,
                "n_steps": fl["n_steps"], "memory": fl["memory"]}
    sampler, to_field, extra = _flow_sampler(flow, action, sm)
    train = dict(fl, train_steps=0) if kind == "luscher" else fl

    def prepare(progress) -> dict:
        out = _train_flow(flow, action, train, run, xp, progress, info, ess_samples=256)
        if kind != "coupling":
            from ..backend import RandomStreams
            z = flow.draw_latent(RandomStreams(run["seed"] + 3, 64, xp, dtype=run["dtype"]))
            check = flow.step_size_check(action, z)
            out["flow"]["density_error"] = check["rms"]
            if not check["rms"] <= fl["max_density_error"]:
                raise FlowTrainingError(
                    f"the flow's density error (rms change of log w when the step is halved) "
                    f"is {check['rms']:.3g} > flow.max_density_error = "
                    f"{fl['max_density_error']:g}: increase flow.n_steps (now {fl['n_steps']})")
        return out

    def flow_start(rng):
        # an independence sampler started at the ordered (cold) links would sit at the weight's
        # maximum: the chains start from a flow sample (flow) or Haar latent links (flow_hmc)
        return flow.sample(rng)[0] if sm["name"] == "flow" else flow.draw_latent(rng)

    description = {"theory": th["name"], "N": N, "action": th["action"],
                   "couplings": {"beta": th["beta"]}}
    return Job(lat, description, flow_start, sampler,
               lambda z, rng: measure(to_field(z), rng), summarize, N=N, prepare=prepare,
               to_field=to_field, measure_gauge=gauge_measurements(config),
               frozen_signals=("plaquette",), **extra)


def _train_flow(flow, action, fl: dict, run: dict, xp, progress, info: dict,
                ess_samples: int = 4096) -> dict:
    """Training of ``flow`` in place (``flow.loss``: the :class:`~lattice_ml.flows.FlowTrainer`
    mode, reverse KL or path gradient), with a progress line; the ``flow`` summary items
    (``info`` describes the architecture; ``loss`` the estimator) with the ESS of
    ``ess_samples`` fresh samples.
    A loss that is not finite at the end fails the run (:class:`FlowTrainingError`)."""
    from ..backend import RandomStreams
    from ..flows import FlowTrainer, effective_sample_size
    from ..optim import Adam, cosine_decay

    t0 = time.perf_counter()
    info = dict(info, n_parameters=flow.n_parameters, train_steps=fl["train_steps"],
                batch_size=fl["batch_size"], lr=fl["lr"])
    if fl["train_steps"]:
        info["loss"] = fl["loss"]
        trainer = FlowTrainer(flow, action, Adam(cosine_decay(fl["lr"], fl["train_steps"],
                                                              fl["lr"] / 100)),
                              batch_size=fl["batch_size"], seed=run["seed"] + 1,
                              mode=fl["loss"],
                              max_grad_norm=fl["max_grad_norm"] or None, xp=xp, dtype=run["dtype"])
        with progress(fl["train_steps"], "train") as bar, np.errstate(all="ignore"):
            trainer.train(fl["train_steps"], callback=lambda tr, rec: bar.update(
                1, loss=f"{rec['loss']:.4g}", ess=f"{rec['ess']:.2f}"))
        loss = float(np.mean(trainer.history["loss"][-50:]))
        if not math.isfinite(loss):
            raise FlowTrainingError(
                f"the flow's training loss is not finite ({loss}) after {fl['train_steps']} "
                f"steps ({trainer.skipped} skipped): lower flow.lr (now {fl['lr']:g}) or set "
                f"flow.max_grad_norm (now {fl['max_grad_norm']:g})")
        info["final_loss"] = loss
        info["skipped_steps"] = trainer.skipped
        training = {k: np.asarray(v, dtype=np.float64) for k, v in trainer.history.items()}
    info["train_seconds"] = time.perf_counter() - t0
    lw = []
    chunk = min(512, ess_samples)
    rng = RandomStreams(run["seed"] + 2, chunk, xp, dtype=run["dtype"])
    with np.errstate(all="ignore"):
        for _ in range(ess_samples // chunk):
            x, logq = flow.sample(rng)
            lw.append(host(-action.action(x) - logq))
    lw = np.concatenate(lw)
    info["ess"] = effective_sample_size(np.where(np.isnan(lw), -np.inf, lw))
    info["ess_samples"] = int(lw.size)
    out = {"flow": info, "ess": info["ess"], "train_seconds": info["train_seconds"]}
    if fl["train_steps"]:
        out[TRAINING_HISTORY] = training    # the run loop writes it to training.npz
    return out


TRAINING_HISTORY = "training_history"
"""Key of the training history (name -> ``[step]`` array) in the result of a job's ``prepare``;
the run loop takes it out of the description and writes it to ``training.npz``."""


class FlowTrainingError(RuntimeError):
    """The flow's training diverged (non-finite loss)."""


# ------------------------------------------------------------------------------------------
# gauge theories
# ------------------------------------------------------------------------------------------
def _gauge_parts(config: dict):
    """Lattice, N, initial field, measurement and summary of the pure-gauge observables."""
    lat = Lattice(config["lattice"]["shape"])
    N = gauge_N(config)
    cold = config["sampler"]["start"] == "cold"
    two_d_u1 = lat.dim == 2 and N == 1

    def initial_field(rng):
        hot = haar_random(rng, (lat.dim, *lat.shape), N)  # drawn for both starts
        return identity_like(hot) if cold else hot

    def measure(U, rng) -> dict:
        xp = namespace(U)
        out = {"plaquette": average_plaquette(U),
               "polyakov_loop": xp.abs(xp.real(polyakov_loop(U)))}
        if two_d_u1:
            out["topological_charge"] = topological_charge_2d(U)
        return out

    def summarize(hist: dict, S: float = 1.5) -> dict:
        obs = {"plaquette": summary_entry(hist["plaquette"], S=S),
               "polyakov_loop": summary_entry(hist["polyakov_loop"], S=S)}
        if "topological_charge" in hist:
            obs["topological_susceptibility"] = summary_entry(
                hist["topological_charge"] ** 2 / lat.volume, S=S)
            obs["topological_charge"] = summary_entry(hist["topological_charge"], S=S)
        obs.update(summarize_gauge_measurements(hist, config, lat, S))
        return obs

    return lat, N, initial_field, measure, summarize


def gauge_job(config: dict) -> Job:
    """Pure U(1) or SU(N) gauge theory: HMC (Wilson or improved action; with ``fine_steps`` the
    rectangles outer and the plaquettes inner) or heatbath + over-relaxation (Wilson action)."""
    lat, N, initial_field, measure, summarize = _gauge_parts(config)
    th, sm = config["theory"], config["sampler"]
    a = GaugeAction(th["beta"], N, th["action"])
    extra: dict = {}
    if sm["name"] == "heatbath":
        sampler = Heatbath(th["beta"], N, n_or=sm["n_or"])
    else:
        sampler = HMC(_hmc_levels(sm, a, a.part("rectangle") if a.c1 else a, a.part("plaquette")),
                      LieGroupSpace(N), tau=sm["tau"], tau_jitter=sm["tau_jitter"])
        extra = _adaptable(sampler, sm)
    description = {"theory": th["name"], "N": N, "action": th["action"],
                   "couplings": {"beta": th["beta"]}}
    return Job(lat, description, initial_field, sampler, measure, summarize, N=N,
               measure_gauge=gauge_measurements(config), frozen_signals=("plaquette",), **extra)


def fermion_actions(th: dict, D: int, N: int, tol: float, mass: float | None = None) -> list:
    """The pseudofermion actions of ``theory.fermion`` (``"wilson"`` or ``"staggered"``) at
    ``theory.mass`` (or at ``mass``: the effective actions of self-learning HMC).

    Wilson: ``det(D†D)^(nf/2)`` as ``nf/2`` two-flavour fields (``nf`` even), even/odd
    preconditioned (with clover: plus ``-2 sum_odd log|det A(x)|``). Staggered: one field has
    ``2^(D/2)`` tastes and ``det D = det(D†D)^(1/2)``, so ``nf`` flavours are ``det D^(nf /
    2^(D/2))`` (:func:`staggered_weight`): ``nf // 2^(D/2)`` unrooted fields of ``det D``
    (:class:`~lattice_ml.fermions.StaggeredPseudofermionAction`, even/odd CG, no rational
    approximation; 4D ``nf = 4``, 2D ``nf = 2``) and, for the remainder ``r = nf mod 2^(D/2)``,
    one rooted RHMC field of ``det(D†D)^(r / 2^(D/2+1))`` (4D ``nf = 2``: ``det D^(1/2)``).
    """
    kind, nf = th["fermion"], th["nf"]
    mass = th["mass"] if mass is None else mass
    if kind == "wilson":
        return [WilsonPseudofermionAction(mass, N, tol=tol, csw=th["csw"], even_odd=True)
                for _ in range(nf // 2)]
    tastes = 2 ** (D // 2)
    fields = [StaggeredPseudofermionAction(mass, N, tol=tol) for _ in range(nf // tastes)]
    if nf % tastes:
        fields.append(StaggeredRationalAction(mass, N, (nf % tastes) / (2 * tastes), tol=tol))
    return fields


def staggered_weight(nf: int, D: int, fermions) -> dict:
    """The ``staggered`` summary entry: what ``nf`` staggered flavours mean in ``D``
    dimensions (``2^(D/2)`` tastes per field, the power of ``det D``) and how the fields of
    :func:`fermion_actions` simulate it."""
    tastes = 2 ** (D // 2)
    return {"tastes_per_field": tastes, "power_of_det_D": nf / tastes,
            "weight": f"det D^({nf}/{tastes}) = det(D†D)^({nf}/{2 * tastes})",
            "fields": ["det D (unrooted, CG)" if isinstance(f, StaggeredPseudofermionAction)
                       else f"det(D†D)^{f.power:g} (RHMC)" for f in fermions]}


def fermion_levels(sm: dict, fermions, gauge) -> list[Level]:
    """The levels of a pseudofermion HMC: the fermion actions outer and the gauge action inner
    with ``fine_steps`` > 0, else all on one level."""
    if sm["fine_steps"]:
        return [Level(list(fermions), sm["n_steps"], sm["integrator"]),
                Level([gauge], sm["fine_steps"], sm["integrator"])]
    return [Level([*fermions, gauge], sm["n_steps"], sm["integrator"])]


@dataclass
class FermionParts:
    """The pieces of a run with dynamical fermions that every sampler of it shares
    (:func:`fermion_parts`): the true pseudofermion actions and gauge action, the measurements
    (gauge observables, condensate, pion correlator) and their summary."""

    lat: Lattice
    N: int
    initial_field: Callable
    measure: Callable
    summarize: Callable
    description: dict
    fermions: list
    gauge: Any
    tol: float
    indexed_measure: bool


def fermion_parts(config: dict) -> FermionParts:
    """The :class:`FermionParts` of a validated configuration with fermions."""
    lat, N, initial_field, gauge_measure, gauge_summarize = _gauge_parts(config)
    th = config["theory"]
    kind, mass, csw = th["fermion"], th["mass"], th.get("csw", 0.0)
    tol = 1e-10 if config["run"]["dtype"] == "float64" else 1e-5
    fermions = fermion_actions(th, lat.dim, N, tol)
    gauge = GaugeAction(th["beta"], N, th.get("action", "wilson"))

    def dirac(U):
        if kind == "wilson":
            return WilsonDirac(U, mass, csw=csw, check=False)
        return StaggeredDirac(U, mass, check=False)

    m = config["measure"]
    ama_on = m["ama_sloppy"] or m["ama_regression"]

    def measure(U, rng, i_meas=0) -> dict:
        out = gauge_measure(U, rng)
        D = dirac(U)
        if ama_on:
            out.update(_ama_measure(U, D, rng, th["n_sources"], m, tol, i_meas % m["every"] == 0))
        else:
            out["chiral_condensate"] = chiral_condensate(D, rng, th["n_sources"], tol=tol)
        out["pion_correlator"] = pion_correlator(D, tol=tol)
        return out

    def summarize(hist: dict, S: float = 1.5) -> dict:
        obs = gauge_summarize(hist, S)
        if ama_on:
            obs.update(_ama_summary(hist, m, S))
        else:
            obs["chiral_condensate"] = summary_entry(hist["chiral_condensate"], S=S)
        obs["pion_mass"] = pion_mass_entry(hist["pion_correlator"], S)
        return obs

    couplings = {"beta": th["beta"], "mass": mass}
    if kind == "wilson":
        couplings["csw"] = csw
    description = {"theory": th["name"], "N": N, "action": th.get("action", "wilson"),
                   "fermion": kind, "nf": th["nf"], "couplings": couplings}
    if kind == "staggered":
        description["rooting"] = [f.power for f in fermions]
        description["staggered"] = staggered_weight(th["nf"], lat.dim, fermions)
    return FermionParts(lat, N, initial_field, measure, summarize, description, fermions, gauge,
                        tol, ama_on)


def fermion_job(config: dict) -> Job:
    """U(1) or SU(N) gauge theory (the Schwinger model: 2D U(1)) with ``nf`` dynamical Wilson
    (-clover) or staggered fermions: pseudofermion HMC / RHMC (fermion forces on the outer
    level, the gauge force on an inner level when ``fine_steps`` > 0). Measures the chiral
    condensate (stochastic, ``n_sources`` sources) and the point-source pion correlator, whose
    mass is fitted in the summary."""
    p = fermion_parts(config)
    sm = config["sampler"]
    sampler = PseudofermionHMC(fermion_levels(sm, p.fermions, p.gauge), LieGroupSpace(p.N),
                               tau=sm["tau"], tau_jitter=sm["tau_jitter"])
    return Job(p.lat, p.description, p.initial_field, sampler, p.measure, p.summarize, N=p.N,
               measure_gauge=gauge_measurements(config), frozen_signals=("plaquette",),
               extra={"fermions": p.fermions, "tol": p.tol}, indexed_measure=p.indexed_measure,
               **_adaptable(sampler, sm))


# ------------------------------------------------------------------------------------------
BUILDERS: dict[str, Callable[[dict], Job]] = {
    "phi4": phi4_job, "u1": gauge_job, "su2": gauge_job, "su3": gauge_job, "suN": gauge_job,
    "schwinger": fermion_job,
}
"""Builder of each ``theory.name`` (φ⁴ with a flow sampler: :func:`phi4_flow_job`; a gauge
theory with ``fermion != "none"``: :func:`fermion_job`, or with ``sampler.name = "slhmc"``
:func:`lattice_ml.cli.slhmc.slhmc_job`)."""


def build_job(config: dict) -> Job:
    """The :class:`Job` of a validated configuration."""
    name = config["theory"]["name"]
    if config["sampler"]["name"] == "slhmc":
        from .slhmc import slhmc_job

        return slhmc_job(config)
    if config["sampler"]["name"] in FLOW_SAMPLERS:
        return phi4_flow_job(config) if name == "phi4" else gauge_flow_job(config)
    if has_fermions(config):
        return fermion_job(config)
    return BUILDERS[name](config)
