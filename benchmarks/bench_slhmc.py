"""Self-learning HMC against HMC on the reference point of Nagai & Tomiya (arXiv:2103.11965).

    python benchmarks/bench_slhmc.py [--chains 4] [--therm 100] [--train 100] [--samples 300]
                                     [--samples-extra 200] [--lr 0.002] [--n-steps 6]
                                     [--sources 2] [--variants paper,centered,untrained]

SU(2), 4^4, beta = 2.7, staggered fermions at m = 0.3, antiperiodic in time, with the UNROOTED
four-taste weight det D_st (:class:`lattice_ml.fermions.StaggeredPseudofermionAction`, even/odd
CG; the only weight that reproduces the published numbers). The effective action has m_h = 0.4
and a 2-layer stout network with 6 weights (plaquette, temporal and spatial Polyakov loops per
layer; :func:`lattice_ml.samplers.effective_network`).

One run, in this order and from one set of random streams: ``--therm`` HMC trajectories of the
true action from unit links; ``--train`` HMC trajectories with online training of the paper's
loss (Adam, cosine decay from ``--lr`` to lr/10); ``--samples`` measured HMC trajectories; then,
from the same configurations, ``--samples`` measured SLHMC trajectories with the weights fixed;
then (``--variants``) the network trained again from those configurations with the centered
loss and ``--samples-extra`` SLHMC trajectories with it, and ``--samples-extra`` SLHMC
trajectories of the untrained network (rho = 0). For every SLHMC chain: the spread (std over
chains and trajectories) of d = S_theta - S at the start of each trajectory and of
dH_true - dH_eff (:class:`lattice_ml.samplers.slhmc.SLHMCStep`), and on the start
configurations the part of the spread of d that is pseudofermion noise at fixed U (8 heatbath
draws per chain: the within-configuration std against the std of the per-configuration
means). Measured per
trajectory: plaquette, Polyakov loop in the source's normalisation |(1/N_s) sum_x Tr P| (no 1/N)
and the library's |Re L| = |(1/N_s) sum_x Tr P| / N, the condensate (1/V) Tr D^-1 (stochastic,
``--sources`` Z2 sources, all tastes, colour traced), acceptance, CPU time per trajectory
(process time), tau_int of the plaquette (Γ-method) and the cost per independent sample
(CPU s per trajectory x 2 tau_int, for the plaquette and for the slowest observable). Published: plaquette 0.7025(1) (HMC) / 0.7023(2) (SLHMC),
Polyakov loop 0.82(1) / 0.83(1), condensate 0.4245(5) / 0.4241(5).

``--networks stout:2,cask:1,...`` compares networks instead (record ``slhmc-networks``): after the
thermalisation and ``--train`` trajectories of online training of the default stout network
(which only moves the chains on), each network ``kind:layers`` (``stout``:
:func:`~lattice_ml.samplers.effective_network`, one weight per loop type and layer;
``cask``: :class:`~lattice_ml.smearing.CASKSmearing`, a weight rho and an attention beta per loop
type and layer, so ``cask:1`` has the parameter count of ``stout:2``) is trained from the same
configurations with ``--loss`` for ``--train`` trajectories, then runs ``--samples`` SLHMC
trajectories with its weights fixed, from the same configurations.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

from lattice_ml.backend import RandomStreams, namespace_by_name, to_numpy  # noqa: E402
from lattice_ml.fermions import StaggeredDirac, StaggeredPseudofermionAction  # noqa: E402
from lattice_ml.fermions import chiral_condensate  # noqa: E402
from lattice_ml.fermions.smeared_fermion_action import SmearedFermionAction  # noqa: E402
from lattice_ml.gauge import GaugeAction  # noqa: E402
from lattice_ml.gauge.observables import average_plaquette, polyakov_loop  # noqa: E402
from lattice_ml.groups import identity_like, haar_random, reunitarize  # noqa: E402
from lattice_ml.optim import Adam, cosine_decay  # noqa: E402
from lattice_ml.smearing import CASKSmearing  # noqa: E402
from lattice_ml.samplers import (Level, LieGroupSpace, PseudofermionHMC,  # noqa: E402
                                 SelfLearningHMC, effective_network, network_parameter_names,
                                 train_effective_action)
from lattice_ml.samplers.slhmc import slhmc_loop_types  # noqa: E402
from lattice_ml.samplers.slhmc import SLHMCStep  # noqa: E402
from lattice_ml.stats import gamma_method  # noqa: E402

SHAPE, N, BETA, MASS, M_H = (4, 4, 4, 4), 2, 2.7, 0.3, 0.4
PUBLISHED = {"hmc": {"plaquette": "0.7025(1)", "polyakov_loop_source": "0.82(1)",
                     "chiral_condensate": "0.4245(5)"},
             "slhmc": {"plaquette": "0.7023(2)", "polyakov_loop_source": "0.83(1)",
                       "chiral_condensate": "0.4241(5)"}}


def _measure(U, rng, sources):
    P = to_numpy(polyakov_loop(U))                      # (1/N_s) sum Tr P / N, complex
    cond = chiral_condensate(StaggeredDirac(U, MASS, check=False), rng, sources, tol=1e-10)
    return {"plaquette": to_numpy(average_plaquette(U)),
            "polyakov_loop_source": N * np.abs(P), "polyakov_loop_library": np.abs(P.real),
            "chiral_condensate": to_numpy(cond)}


def _chain(sampler, U, rng, n, sources, label=""):
    hist, acc, diag = {}, [], {"d": [], "dh_diff": [], "dh": []}
    t0 = time.process_time()
    cpu_md = 0.0
    for k in range(n):
        t = time.process_time()
        U, info = sampler.step(U, rng)
        cpu_md += time.process_time() - t
        acc.append(to_numpy(info.accepted).astype(float))
        diag["dh"].append(to_numpy(info.delta_h))
        if isinstance(info, SLHMCStep):
            diag["d"].append(to_numpy(info.action_difference))
            diag["dh_diff"].append(to_numpy(info.delta_h - info.delta_h_effective))
        if (k + 1) % 10 == 0:
            U = reunitarize(U)
        for key, v in _measure(U, rng, sources).items():
            hist.setdefault(key, []).append(v)
        if (k + 1) % 50 == 0:
            print(f"  {label} {k + 1}/{n} acc {np.mean(acc):.3f} plaq "
                  f"{np.mean(hist['plaquette']):.4f} cpu {time.process_time() - t0:.0f} s",
                  flush=True)
    out = {"acceptance": float(np.mean(acc)), "trajectories_per_chain": n,
           "cpu_s_per_trajectory": cpu_md / n, "cpu_s_total": time.process_time() - t0,
           "mean_delta_h": float(np.mean(diag["dh"])),
           "mean_exp_minus_delta_h": float(np.mean(np.exp(-np.array(diag["dh"])))),
           "std_delta_h": float(np.std(diag["dh"]))}
    if diag["d"]:
        out["spread_S_theta_minus_S_run"] = float(np.std(diag["d"]))
        out["mean_S_theta_minus_S_run"] = float(np.mean(diag["d"]))
        out["std_dH_true_minus_dH_eff"] = float(np.std(diag["dh_diff"]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for key, v in hist.items():
            res = gamma_method(np.array(v).T)
            out[key] = {"mean": res.value, "error": res.error, "tau_int": res.tau_int,
                        "tau_int_error": getattr(res, "tau_int_error", None)}
    out["warnings"] = sorted({str(w.message)[:80] for w in caught})
    tau = max(out["plaquette"]["tau_int"], 0.5)
    out["cpu_s_per_independent_sample"] = out["cpu_s_per_trajectory"] * 2 * tau
    slow = max(max(out[key]["tau_int"], 0.5) for key in hist)
    out["cpu_s_per_independent_sample_slowest"] = out["cpu_s_per_trajectory"] * 2 * slow
    return U, out


def _noise_split(slhmc, U, rng, draws=8):
    """The spread of d = S_theta - S on the configurations U: within a configuration (over
    ``draws`` heatbath draws of phi; pseudofermion noise) and between configurations (the std of
    the per-configuration means)."""
    d = []
    for _ in range(draws):
        slhmc.refresh(U, rng)
        d.append(to_numpy(slhmc.action_difference(U)))
    d = np.array(d)                                   # [draw, chain]
    return {"mean": float(np.mean(d)), "std_total": float(np.std(d)),
            "std_within_configuration": float(np.sqrt(np.mean(np.var(d, axis=0, ddof=1)))),
            "std_between_configurations": float(np.std(np.mean(d, axis=0), ddof=1)),
            "draws": draws}


def _network(kind, layers):
    """``(network, parameter names)`` of ``--networks`` entry ``kind:layers`` (module docstring)."""
    if kind == "stout":
        net = effective_network(SHAPE, layers)
        return net, network_parameter_names(net)
    if kind != "cask":
        raise SystemExit(f"--networks: unknown network kind {kind!r} (stout or cask)")
    specs, labels = slhmc_loop_types(("plaquette", "polyakov"), SHAPE)
    net = CASKSmearing(layers, specs, D=len(SHAPE), rho=0.0, beta=0.0)
    return net, [f"layer{k}/{label}/{w}" for k in range(layers) for label in labels
                 for w in ("rho", "beta")]


def _compare_networks(args, networks, U, rng, hmc, gauge, true):
    """Every network of ``--networks`` trained from ``U`` and run with fixed weights from ``U``."""
    rows, trainings = [], {}
    for entry in networks:
        kind, _, layers = entry.partition(":")
        net, names = _network(kind, int(layers or 1))
        eff = SmearedFermionAction(StaggeredPseudofermionAction(M_H, N, tol=1e-10), net)
        slhmc = SelfLearningHMC([Level([eff, gauge], args.n_steps, "omelyan")], LieGroupSpace(N),
                                [gauge, true], tau=1.0, tau_jitter=0.1)
        _, tr = _train(slhmc, hmc, net, U, rng, args.train, args.lr, args.loss == "centered",
                       names)
        trainings[entry] = tr
        split = _noise_split(slhmc, U, rng)
        _, res = _chain(slhmc, U, rng, args.samples, args.sources, entry)
        rows.append({"sampler": f"slhmc {entry}", "network": kind, "layers": int(layers or 1),
                     "parameters": int(net.n_parameters), "loss": args.loss,
                     "d_on_start_configurations": split, **res})
        print(entry, "done: acceptance", res["acceptance"], "spread",
              res["spread_S_theta_minus_S_run"], flush=True)
    return rows, trainings


def _train(slhmc, hmc, net, U, rng, n, lr, centered, names=None):
    t0 = time.process_time()
    net.set_parameters(np.zeros(len(net.parameters())))
    opt = Adam(cosine_decay(lr, max(n, 1), lr / 10))
    U, th = train_effective_action(slhmc, hmc, net, U, rng, n, opt, centered=centered)
    rec = {"trajectories": n, "lr": lr, "centered": centered, "cpu_s": time.process_time() - t0}
    if n:
        for key in ("loss", "spread", "mean"):
            rec[f"{key}_first10"] = float(np.mean(th[key][:10]))
            rec[f"{key}_last10"] = float(np.mean(th[key][-10:]))
        rec["training_acceptance"] = float(np.mean(th["acceptance"]))
    names = names if names is not None else network_parameter_names(net)
    rec["theta"] = dict(zip(names, map(float, net.parameters())))
    print("  trained", {k: v for k, v in rec.items() if k != "theta"}, flush=True)
    return U, rec


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--therm", type=int, default=100)
    ap.add_argument("--train", type=int, default=100)
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--samples-extra", type=int, default=200)
    ap.add_argument("--variants", default="paper,centered,untrained")
    ap.add_argument("--lr", type=float, default=0.002)
    ap.add_argument("--n-steps", type=int, default=6)
    ap.add_argument("--sources", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--networks", default="",
                    help="compare networks kind:layers, e.g. stout:2,cask:1 (module docstring)")
    ap.add_argument("--loss", choices=("paper", "centered"), default="centered",
                    help="the training loss of --networks")
    args = ap.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    xp = namespace_by_name("numpy")
    rng = RandomStreams(args.seed, args.chains, xp)
    U = identity_like(haar_random(rng, (4, *SHAPE), N))
    gauge = GaugeAction(BETA, N)
    true = StaggeredPseudofermionAction(MASS, N, tol=1e-10)
    hmc = PseudofermionHMC([Level([true, gauge], args.n_steps, "omelyan")], LieGroupSpace(N),
                           tau=1.0, tau_jitter=0.1)
    net = effective_network(SHAPE, 2)
    eff = SmearedFermionAction(StaggeredPseudofermionAction(M_H, N, tol=1e-10), net)
    slhmc = SelfLearningHMC([Level([eff, gauge], args.n_steps, "omelyan")], LieGroupSpace(N),
                            [gauge, true], tau=1.0, tau_jitter=0.1)
    t0 = time.process_time()
    therm_plaq = []
    for k in range(args.therm):
        U, _ = hmc.step(U, rng)
        if (k + 1) % 10 == 0:
            U = reunitarize(U)
        therm_plaq.append(float(np.mean(to_numpy(average_plaquette(U)))))
    therm_cpu = time.process_time() - t0
    print(f"thermalised: {args.therm} trajectories, {therm_cpu:.0f} s CPU, plaquette of the "
          f"last 20 {np.mean(therm_plaq[-20:]):.4f}", flush=True)
    U, train = _train(slhmc, hmc, net, U, rng, args.train, args.lr, False)
    trainings = {"paper": train}
    setup = {"shape": SHAPE, "N": N, "beta": BETA, "mass": MASS, "m_h": M_H,
             "weight": "det D_st (unrooted, 4 tastes)", "boundary": "antiperiodic in time",
             "chains": args.chains, "therm": args.therm, "n_steps": args.n_steps,
             "sources": args.sources, "therm_cpu_s": therm_cpu,
             "therm_plaquette_last20": float(np.mean(therm_plaq[-20:]))}
    if args.networks:
        rows, tr = _compare_networks(args, args.networks.split(","), U, rng, hmc, gauge, true)
        path = harness.record("slhmc-networks", rows, "numpy",
                              {"setup": setup, "training": tr, "published": PUBLISHED})
        print("wrote", path)
        return
    theta = np.array(net.parameters()).copy()
    U_start = U
    rows = []
    U_hmc, res = _chain(hmc, U_start, rng, args.samples, args.sources, "hmc")
    rows.append({"sampler": "hmc", **res})
    print("hmc done", flush=True)
    runs = [("slhmc", theta, args.samples, U_start)]
    if "centered" in variants:
        _, tc = _train(slhmc, hmc, net, U_start, rng, args.train, args.lr, True)
        trainings["centered"] = tc
        runs.append(("slhmc_centered", np.array(net.parameters()).copy(), args.samples_extra,
                     U_start))
    if "untrained" in variants:
        runs.append(("slhmc_untrained", np.zeros_like(theta), args.samples_extra, U_start))
    for name, weights, n, U0 in runs:
        net.set_parameters(weights)
        split = _noise_split(slhmc, U_hmc, rng)
        _, res = _chain(slhmc, U0, rng, n, args.sources, name)
        rows.append({"sampler": name, "d_on_hmc_configurations": split, **res})
        print(name, "done", flush=True)
    for r in rows:
        print(r["sampler"], {k: (v if not isinstance(v, dict) or "mean" not in v or "error"
                                 not in v else
                                 f"{v['mean']:.4f}({v['error']:.4f}) tau {v['tau_int']:.1f}")
                             for k, v in r.items() if k != "sampler"})
    path = harness.record("slhmc", rows, "numpy",
                          {"setup": setup, "training": trainings, "published": PUBLISHED})
    print("wrote", path)


if __name__ == "__main__":
    main()
