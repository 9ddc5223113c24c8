"""What ``lattice-ml run`` runs: one *job* per theory, built from a validated config.

A job knows its initial field, its Markov step (HMC or heatbath), what to measure on every
sampled configuration, and how to turn the histories into the observables of SPEC section 4.
The run loop (:mod:`lattice_ml.cli.run`) is the same for every theory.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..backend import namespace, to_numpy
from ..gauge import GaugeAction
from ..fermions import (StaggeredDirac, StaggeredRationalAction, WilsonDirac,
                        WilsonPseudofermionAction, chiral_condensate, pion_correlator,
                        staggered_root_powers)
from ..gauge.observables import average_plaquette, polyakov_loop, topological_charge_2d
from ..groups import haar_random, identity_like
from ..lattice import Lattice
from ..samplers import HMC, EuclideanSpace, Heatbath, LieGroupSpace, Level, PseudofermionHMC
from ..scalar import (Phi4Action, abs_magnetization, binder_cumulant, magnetization,
                      momentum_space_propagator, phi2, second_moment_correlation_length,
                      susceptibility, two_point_function)
from ..stats import WindowWarning, gamma_method
from .config import ConfigError

__all__ = ["build_job", "summary_entry", "Phi4Job", "Phi4FlowJob", "GaugeJob", "FermionJob",
           "SchwingerJob"]

GAUGE_N = {"u1": 1, "su2": 2, "su3": 3}


def summary_entry(data, f=None) -> dict | None:
    """Γ-method summary entry with the key names of SPEC section 4 (``mean``, ``error``,
    ``tau_int``, ``tau_int_error``, ...); a warning of the analysis (window at its limit,
    anticorrelated history) is kept in the entry under ``warning``. ``None`` when the derived
    quantity is undefined at the measured means (e.g. a correlation length with G(0) < G(p1))."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", WindowWarning)
        try:
            res = gamma_method(data, f=f)
        except ValueError:
            if f is None:
                raise
            return None
    d = res.to_dict()
    d["mean"] = d.pop("value")
    if caught:
        d["warning"] = "; ".join(str(w.message) for w in caught)
    return d


def _hmc_levels(sm: dict, whole, outer, inner) -> list[Level]:
    if sm["fine_steps"]:
        return [Level([outer], sm["n_steps"], sm["integrator"]),
                Level([inner], sm["fine_steps"], sm["integrator"])]
    return [Level([whole], sm["n_steps"], sm["integrator"])]


class Phi4Job:
    """Real φ⁴ theory sampled with HMC."""

    def __init__(self, config: dict):
        self.lattice = lat = Lattice(config["lattice"]["shape"])
        th, sm = config["theory"], config["sampler"]
        if th["form"] == "standard":
            self.action = Phi4Action(lat, "standard", m2=th["m2"], lam=th["lam"])
        else:
            self.action = Phi4Action(lat, "hopping", beta=th["beta"], lam=th["lam"])
        a = self.action
        self.sampler = HMC(_hmc_levels(sm, a, a.part("kinetic"), a.part("local")),
                           EuclideanSpace(), tau=sm["tau"], tau_jitter=sm["tau_jitter"])
        self.start = sm["start"]
        self.description = {"theory": "phi4", "form": th["form"],
                            "couplings": {k: th[k] for k in ("m2", "beta", "lam") if k in th}}

    def initial_field(self, rng):
        phi = rng.normal(self.lattice.shape)  # drawn for both starts: the streams stay aligned
        return 0.0 * phi if self.start == "cold" else phi

    def measure(self, phi, rng) -> dict:
        M = magnetization(phi)
        g0, g1 = momentum_space_propagator(phi)
        return {"phi2": phi2(phi), "magnetization": M, "abs_magnetization": abs_magnetization(phi),
                "m2": M * M, "m4": (M * M) ** 2, "g0": g0, "g1": g1,
                "two_point": two_point_function(phi)}

    def summarize(self, hist: dict) -> dict:
        V, L = self.lattice.volume, self.lattice.shape[0]
        obs = {key: summary_entry(hist[key])
               for key in ("phi2", "abs_magnetization", "magnetization")}
        obs["susceptibility"] = summary_entry([hist["m2"], hist["abs_magnetization"]],
                                              f=lambda m: susceptibility(m[0], m[1], V))
        obs["binder_cumulant"] = summary_entry([hist["m2"], hist["m4"]],
                                               f=lambda m: binder_cumulant(m[0], m[1]))
        obs["correlation_length"] = summary_entry(
            [hist["g0"], hist["g1"]], f=lambda m: second_moment_correlation_length(m[0], m[1], L))
        return obs


FLOW_SAMPLERS = ("flow", "flow_hmc")


class Phi4FlowJob(Phi4Job):
    """Real φ⁴ theory sampled with a normalizing flow trained when the job is built.

    ``sampler.name = "flow"``: independence Metropolis with the flow as proposal (the chain state
    is the field ``x``); ``"flow_hmc"``: HMC on the pulled-back action in the latent space (the
    chain state is the latent field ``z``; measurements use ``x = f(z)``). The flow (affine
    couplings, checkerboard masks, conditioners ``[1, channels × hidden_layers, 2]``; the ``[flow]``
    table) is trained
    by reverse KL with Adam and a cosine decay from ``lr`` to ``lr/100``, from its own random
    streams (seed ``run.seed + 1``), so training is reproducible and a resumed run retrains the
    same flow. ``description["flow"]`` reports the training and the ESS of 4096 fresh samples.
    """

    def __init__(self, config: dict):
        import time

        from ..backend import RandomStreams, namespace_by_name
        from ..flows import FlowTrainer, effective_sample_size, make_phi4_flow
        from ..optim import Adam, cosine_decay
        from ..samplers.flow_hmc import FlowHMC
        from ..samplers.flow_mcmc import FlowMetropolis

        super().__init__({**config, "sampler": {**config["sampler"], "integrator": "omelyan",
                                                "n_steps": 1, "tau": 1.0, "tau_jitter": 0.0,
                                                "fine_steps": 0}})
        sm, fl, run = config["sampler"], config["flow"], config["run"]
        if fl["kernel"] % 2 != 1:
            raise ConfigError("flow.kernel", f"the kernel size must be odd, got {fl['kernel']}")
        if fl["kernel"] // 2 > min(self.lattice.shape):
            raise ConfigError("flow.kernel", f"kernel {fl['kernel']} is wider than the "
                              f"lattice {list(self.lattice.shape)}")
        xp = namespace_by_name(run["backend"])
        dtype = run["dtype"]
        self.flow = make_phi4_flow(self.lattice.shape, xp, n_layers=fl["layers"],
                                   hidden=[fl["channels"]] * fl["hidden_layers"],
                                   kernel=fl["kernel"], seed=run["seed"],
                                   dtype=getattr(xp, dtype))
        t0 = time.perf_counter()
        info = {"layers": fl["layers"], "channels": fl["channels"],
                "hidden_layers": fl["hidden_layers"], "kernel": fl["kernel"],
                "n_parameters": self.flow.n_parameters, "train_steps": fl["train_steps"],
                "batch": fl["batch"], "lr": fl["lr"]}
        if fl["train_steps"]:
            trainer = FlowTrainer(
                self.flow, self.action,
                Adam(cosine_decay(fl["lr"], fl["train_steps"], fl["lr"] / 100)),
                batch_size=fl["batch"], seed=run["seed"] + 1,
                max_grad_norm=fl["clip"] or None, xp=xp, dtype=dtype)
            with np.errstate(all="ignore"):
                trainer.train(fl["train_steps"])
            info["final_loss"] = float(np.mean(trainer.history["loss"][-50:]))
            info["skipped_steps"] = trainer.skipped
        info["train_seconds"] = time.perf_counter() - t0
        lw = []
        rng = RandomStreams(run["seed"] + 2, 512, xp, dtype=dtype)
        with np.errstate(all="ignore"):
            for _ in range(8):
                x, logq = self.flow.sample(rng)
                lw.append(host(-self.action.action(x) - logq))
        lw = np.concatenate(lw)
        info["ess"] = effective_sample_size(np.where(np.isnan(lw), -np.inf, lw))
        info["ess_samples"] = int(lw.size)
        if sm["name"] == "flow":
            self._metropolis = FlowMetropolis(self.flow, self.action)
            self.sampler = _FieldStepper(self._metropolis)
            self.to_field = lambda phi: phi
        else:
            self.sampler = FlowHMC(self.flow, self.action, n_steps=sm["n_steps"], tau=sm["tau"],
                                   scheme=sm["integrator"], tau_jitter=sm["tau_jitter"])
            self.to_field = self.sampler.to_field
        self.description["flow"] = info
        self.description["ess"] = info["ess"]
        self.description["train_seconds"] = info["train_seconds"]

    def measure(self, field, rng) -> dict:
        return super().measure(self.to_field(field), rng)


class _FieldStepper:
    """``step(x, rng)`` of flow Metropolis for a run loop that holds fields only."""

    def __init__(self, metropolis):
        self.metropolis = metropolis

    def step(self, x, rng):
        return self.metropolis.field_step(x, rng)


class GaugeJob:
    """Pure U(1) or SU(N) gauge theory sampled with HMC or heatbath + over-relaxation."""

    def __init__(self, config: dict):
        self.lattice = Lattice(config["lattice"]["shape"])
        th, sm = config["theory"], config["sampler"]
        self.N = N = th.get("N", GAUGE_N.get(th["name"]))
        self.action = a = GaugeAction(th["beta"], N, th["action"])
        if sm["name"] == "heatbath":
            if th["action"] != "wilson":
                raise ConfigError("sampler.name", "the heatbath needs theory.action = 'wilson' "
                                  f"(rectangles couple links of one parity), not {th['action']!r}")
            self.sampler = Heatbath(th["beta"], N, n_or=sm["n_or"])
        else:
            if sm["fine_steps"] and a.c1 == 0.0:
                raise ConfigError("sampler.fine_steps", "two time scales split the improved "
                                  "action into rectangles (outer) and plaquettes (inner); the "
                                  "Wilson action has no rectangles: set fine_steps = 0")
            self.sampler = HMC(_hmc_levels(sm, a, a.part("rectangle") if a.c1 else a,
                                           a.part("plaquette")),
                               LieGroupSpace(N), tau=sm["tau"], tau_jitter=sm["tau_jitter"])
        self.start = sm["start"]
        self.description = {"theory": th["name"], "N": N, "action": th["action"],
                            "couplings": {"beta": th["beta"]}}

    def initial_field(self, rng):
        shape = (self.lattice.dim, *self.lattice.shape)
        hot = haar_random(rng, shape, self.N)  # drawn for both starts: the streams stay aligned
        return identity_like(hot) if self.start == "cold" else hot

    def measure(self, U, rng) -> dict:
        xp = namespace(U)
        out = {"plaquette": average_plaquette(U),
               "polyakov_loop": xp.abs(xp.real(polyakov_loop(U)))}
        if self.lattice.dim == 2 and self.N == 1:
            out["topological_charge"] = topological_charge_2d(U)
        return out

    def summarize(self, hist: dict) -> dict:
        obs = {"plaquette": summary_entry(hist["plaquette"]),
               "polyakov_loop": summary_entry(hist["polyakov_loop"])}
        if "topological_charge" in hist:
            V = self.lattice.volume
            obs["topological_susceptibility"] = summary_entry(hist["topological_charge"] ** 2 / V)
            obs["topological_charge"] = summary_entry(hist["topological_charge"])
        return obs


def fermion_actions(th: dict, D: int, N: int, tol: float) -> list:
    """The pseudofermion actions of ``theory.fermion`` (``"wilson"`` or ``"staggered"``).

    Wilson: ``det(D†D)^(nf/2)`` as ``nf/2`` two-flavour fields (``nf`` even), even/odd
    preconditioned (with clover: plus ``-2 sum_odd log|det A(x)|``). Staggered:
    ``det(D†D)^P``, ``P = nf / 2^(D/2 + 1)`` (one
    staggered field has ``2^(D/2)`` tastes and ``det D = det(D†D)^(1/2)``), as RHMC fields with
    the powers of :func:`lattice_ml.fermions.staggered_root_powers` (each < 1).
    """
    kind, nf, mass = th["fermion"], th["nf"], th["mass"]
    if kind == "wilson":
        if nf % 2:
            raise ConfigError("theory.nf", f"Wilson fermions are simulated in pairs (det D†D per "
                              f"pseudofermion field): nf must be even, got {nf}")
        csw = th["csw"]
        return [WilsonPseudofermionAction(mass, N, tol=tol, csw=csw, even_odd=True)
                for _ in range(nf // 2)]
    if D not in (2, 4):
        raise ConfigError("lattice.shape", "staggered flavours are counted in D = 2 or 4 "
                          f"(2^(D/2) tastes per field), not D = {D}")
    return [StaggeredRationalAction(mass, N, p, tol=tol) for p in staggered_root_powers(nf, D)]


class FermionJob(GaugeJob):
    """U(1) or SU(N) gauge theory with ``nf`` dynamical Wilson(-clover) or rooted staggered
    fermions: pseudofermion HMC / RHMC (fermion forces on the outer level, the gauge force on an
    inner level when ``fine_steps`` > 0). Measures the chiral condensate (stochastic, per flavour
    for Wilson, per staggered field for staggered) and the point-source pion correlator."""

    def __init__(self, config: dict):
        th, sm = config["theory"], config["sampler"]
        self.lattice = Lattice(config["lattice"]["shape"])
        if sm["name"] != "hmc":
            raise ConfigError("sampler.name", "theories with fermions need sampler.name = 'hmc'")
        self.N = N = 1 if th["name"] == "schwinger" else th.get("N", GAUGE_N.get(th["name"]))
        self.kind, self.mass, self.nf = th["fermion"], th["mass"], th["nf"]
        self.csw = th.get("csw", 0.0)
        self.n_noise = th["n_noise"]
        self.tol = tol = 1e-10 if config["run"]["dtype"] == "float64" else 1e-5
        self.fermions = fermion_actions(th, self.lattice.dim, N, tol)
        gauge = GaugeAction(th["beta"], N, th.get("action", "wilson"))
        if sm["fine_steps"]:
            levels = [Level(list(self.fermions), sm["n_steps"], sm["integrator"]),
                      Level([gauge], sm["fine_steps"], sm["integrator"])]
        else:
            levels = [Level([*self.fermions, gauge], sm["n_steps"], sm["integrator"])]
        self.sampler = PseudofermionHMC(levels, LieGroupSpace(N), tau=sm["tau"],
                                        tau_jitter=sm["tau_jitter"])
        self.start = sm["start"]
        couplings = {"beta": th["beta"], "mass": self.mass}
        if self.kind == "wilson":
            couplings["csw"] = self.csw
        self.description = {"theory": th["name"], "N": N, "action": th.get("action", "wilson"),
                            "fermion": self.kind, "nf": self.nf, "couplings": couplings}
        if self.kind == "staggered":
            self.description["rooting"] = [f.power for f in self.fermions]

    def dirac(self, U):
        if self.kind == "wilson":
            return WilsonDirac(U, self.mass, csw=self.csw, check=False)
        return StaggeredDirac(U, self.mass, check=False)

    def measure(self, U, rng) -> dict:
        out = super().measure(U, rng)
        dirac = self.dirac(U)
        out["chiral_condensate"] = chiral_condensate(dirac, rng, self.n_noise, tol=self.tol)
        out["pion_correlator"] = pion_correlator(dirac, tol=self.tol)
        return out

    def summarize(self, hist: dict) -> dict:
        obs = super().summarize(hist)
        obs["chiral_condensate"] = summary_entry(hist["chiral_condensate"])
        C = hist["pion_correlator"]  # [chain, time, T]
        t = C.shape[-1] // 4
        if t >= 1:
            obs["pion_mass"] = summary_entry(
                [C[..., t - 1], C[..., t], C[..., t + 1]],
                f=lambda m: float(np.arccosh((m[0] + m[2]) / (2.0 * m[1]))))
            if obs["pion_mass"] is not None:
                obs["pion_mass"]["t"] = t
        return obs


class SchwingerJob(FermionJob):
    """2D U(1) with ``nf`` Wilson or staggered fermions (the Schwinger model)."""

    def __init__(self, config: dict):
        shape = config["lattice"]["shape"]
        if len(shape) != 2:
            raise ConfigError("lattice.shape", "the Schwinger model is two-dimensional: give two "
                              f"extents, not {list(shape)}")
        super().__init__(config)


def build_job(config: dict):
    """The job of a validated config."""
    name = config["theory"]["name"]
    if config["sampler"]["name"] in FLOW_SAMPLERS:
        if name != "phi4":
            raise ConfigError("sampler.name", f"the flow samplers ({', '.join(FLOW_SAMPLERS)}) "
                              f"are implemented for theory.name = 'phi4' only, not {name!r}")
        return Phi4FlowJob(config)
    if name == "phi4":
        return Phi4Job(config)
    if name in ("u1", "su2", "su3", "suN"):
        if config["theory"].get("fermion", "none") != "none":
            return FermionJob(config)
        return GaugeJob(config)
    if name == "schwinger":
        return SchwingerJob(config)
    raise ConfigError("theory.name", f"theory {name!r} has no runner")


def host(x) -> np.ndarray:
    """A measurement as a float64 host array."""
    return to_numpy(x).astype(np.float64)
