"""Self-learning HMC against HMC on the reference point of Nagai & Tomiya (arXiv:2103.11965).

    python benchmarks/bench_slhmc.py [--chains 8] [--therm 20] [--train 40] [--samples 40]
                                     [--lr 0.002] [--centered] [--n-steps 6] [--sources 2]

SU(2), 4^4, beta = 2.7, staggered fermions at m = 0.3, antiperiodic in time, with the UNROOTED
four-taste weight det D_st (:class:`lattice_ml.fermions.StaggeredPseudofermionAction`, even/odd
CG; the only weight that reproduces the published numbers). The effective action has m_h = 0.4
and a 2-layer stout network with 6 weights (plaquette, temporal and spatial Polyakov loops per
layer; :func:`lattice_ml.samplers.effective_network`).

One run, in this order and from one set of random streams: ``--therm`` HMC trajectories of the
true action from unit links; ``--train`` HMC trajectories with online training (Adam, cosine
decay from ``--lr`` to lr/10); ``--samples`` measured HMC trajectories; then, from the same
configurations, ``--samples`` measured SLHMC trajectories with the weights fixed (and, for
comparison, ``--samples`` SLHMC trajectories of the untrained network, rho = 0). Measured per
trajectory: plaquette, Polyakov loop in the source's normalisation |(1/N_s) sum_x Tr P| (no 1/N)
and the library's |Re L| = |(1/N_s) sum_x Tr P| / N, the condensate (1/V) Tr D^-1 (stochastic,
``--sources`` Z2 sources, all tastes, colour traced), acceptance, CPU time per trajectory
(process time), tau_int of the plaquette (Γ-method) and the cost per independent sample
(CPU s per trajectory x 2 tau_int). Published: plaquette 0.7025(1) (HMC) / 0.7023(2) (SLHMC),
Polyakov loop 0.82(1) / 0.83(1), condensate 0.4245(5) / 0.4241(5).
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
from lattice_ml.samplers import (Level, LieGroupSpace, PseudofermionHMC,  # noqa: E402
                                 SelfLearningHMC, effective_network, network_parameter_names,
                                 train_effective_action)
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


def _chain(sampler, U, rng, n, sources):
    hist, acc = {}, []
    t0 = time.process_time()
    cpu_md = 0.0
    for k in range(n):
        t = time.process_time()
        U, info = sampler.step(U, rng)
        cpu_md += time.process_time() - t
        acc.append(to_numpy(info.accepted).astype(float))
        if (k + 1) % 10 == 0:
            U = reunitarize(U)
        for key, v in _measure(U, rng, sources).items():
            hist.setdefault(key, []).append(v)
    out = {"acceptance": float(np.mean(acc)), "trajectories_per_chain": n,
           "cpu_s_per_trajectory": cpu_md / n, "cpu_s_total": time.process_time() - t0}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for key, v in hist.items():
            res = gamma_method(np.array(v).T)
            out[key] = {"mean": res.value, "error": res.error, "tau_int": res.tau_int}
    out["warnings"] = sorted({str(w.message)[:80] for w in caught})
    tau = max(out["plaquette"]["tau_int"], 0.5)
    out["cpu_s_per_independent_sample"] = out["cpu_s_per_trajectory"] * 2 * tau
    return U, out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chains", type=int, default=8)
    ap.add_argument("--therm", type=int, default=20)
    ap.add_argument("--train", type=int, default=40)
    ap.add_argument("--samples", type=int, default=40)
    ap.add_argument("--lr", type=float, default=0.002)
    ap.add_argument("--centered", action="store_true")
    ap.add_argument("--n-steps", type=int, default=6)
    ap.add_argument("--sources", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
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
    for _ in range(args.therm):
        U, _ = hmc.step(U, rng)
    therm_cpu = time.process_time() - t0
    t0 = time.process_time()
    opt = Adam(cosine_decay(args.lr, max(args.train, 1), args.lr / 10))
    U, th = train_effective_action(slhmc, hmc, net, U, rng, args.train, opt,
                                   centered=args.centered)
    train = {"trajectories": args.train, "lr": args.lr, "centered": args.centered,
             "cpu_s": time.process_time() - t0,
             "loss_first5": float(np.mean(th["loss"][:5])) if args.train else None,
             "loss_last10": float(np.mean(th["loss"][-10:])) if args.train else None,
             "spread_first5": float(np.mean(th["spread"][:5])) if args.train else None,
             "spread_last10": float(np.mean(th["spread"][-10:])) if args.train else None,
             "mean_d_last10": float(np.mean(th["mean"][-10:])) if args.train else None,
             "theta": dict(zip(network_parameter_names(net), map(float, net.parameters())))}
    theta = np.array(net.parameters()).copy()
    U_start = U
    rows = []
    U, res = _chain(hmc, U_start, rng, args.samples, args.sources)
    rows.append({"sampler": "hmc", **res})
    for name, weights in (("slhmc", theta), ("slhmc_untrained", np.zeros_like(theta))):
        net.set_parameters(weights)
        # spread of S_theta - S on the HMC ensemble's last configurations, fresh phi
        slhmc.refresh(U, rng)
        d = to_numpy(slhmc.action_difference(U))
        _, res = _chain(slhmc, U_start, rng, args.samples, args.sources)
        rows.append({"sampler": name, "spread_S_theta_minus_S": float(np.std(d)),
                     "mean_S_theta_minus_S": float(np.mean(d)), **res})
    for r in rows:
        print(r["sampler"], {k: (v if not isinstance(v, dict) else
                                 f"{v['mean']:.4f}({v['error']:.4f}) tau {v['tau_int']:.1f}")
                             for k, v in r.items() if k != "sampler"})
    print("training", train)
    path = harness.record("slhmc", rows, "numpy",
                          {"setup": {"shape": SHAPE, "N": N, "beta": BETA, "mass": MASS,
                                     "m_h": M_H, "weight": "det D_st (unrooted, 4 tastes)",
                                     "chains": args.chains, "therm": args.therm,
                                     "n_steps": args.n_steps, "sources": args.sources,
                                     "therm_cpu_s": therm_cpu},
                           "training": train, "published": PUBLISHED})
    print("wrote", path)


if __name__ == "__main__":
    main()
