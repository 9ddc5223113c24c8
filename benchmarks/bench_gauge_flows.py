"""Gradient flows for gauge fields: ESS against parameters and training time, step-size
dependence, flow MCMC against HMC.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_gauge_flows.py su3_2d [--L 16] [--beta 4 5 6]
        [--train-steps 100] [--batch 16] [--ess-samples 512] [--loops small|large|traces]
        [--no-baselines] [--no-identity] [--nlo]
    OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/bench_gauge_flows.py step
        [--L 16] [--batch 8] [--loops small] [--n-t 2] [--repeat 3] [--memory states|stages]
    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_gauge_flows.py u1_2d [--L 8] [--beta 2]
    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_gauge_flows.py stepsize [--L 8] [--beta 4]
    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_gauge_flows.py su3_4d [--L 4] [--beta 6]
    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_gauge_flows.py freezing [--L 16] [--beta 6]
        [--hmc-updates 2000] [--hmc-steps 10] [--train-steps 100] [--mcmc-updates 300]

``su3_2d``: 2D SU(3), Wilson action (the table of Bacchio, Kessel, Schaefer & Vaitl, PRD 107
(2023) L051504): for each beta the ESS of the identity map, of Lüscher's leading-order map
(zero parameters) and of the learned gradient flow started there and trained by reverse KL with
Adam for ``--train-steps`` steps, with parameters, training wall time and the step-size check of
:meth:`GradientFlow.step_size_check`. ``--loops small``: plaquette, 1x2 rectangle, 2x2 square,
1x3 rectangle (n_t = 2: 8 parameters); ``large``: also both Polyakov loops and the 2x3 rectangle
(n_t = 3: 21 parameters); ``traces``: plaquette, its class functions Re Tr P^2, Re (Tr P)^2,
|Tr P|^2 (:mod:`lattice_ml.flows.loop_functions`) and the 1x2 rectangle (n_t = 2: 10
parameters); ``small_traces``: ``small`` and the three plaquette class functions (14);
``traces_rect``: ``traces`` and the three class functions of the 1x2 rectangle (16);
``nlo``: the eight functions of Lüscher's NLO map (plaquette, its three class functions, the
1x2 rectangle, the plaquette pairs ``re_re``, ``im_im``, ``twice``: 16); ``nlo7``: ``nlo``
without ``Re Tr P^2`` (dependent for SU(3): 14); ``--order 2`` starts the learned flow at the
NLO map (``--train-steps 0``: the ESS and KL of that map alone); ``--n-t`` overrides the number of time basis functions. Training time is reported as CPU
seconds (``time.process_time``) and wall seconds; the ESS of fresh samples with the bootstrap
spread of its estimate (``*_err``). ``--no-baselines`` / ``--no-identity`` skip the ESS of the
identity and of Lüscher's LO map; ``--nlo`` adds that of LO + the NLO single-plaquette class
functions (zero parameters, :func:`lattice_ml.flows.trivializing.luscher_nlo_plaquette`).

``su3_eval --records R.json ... --n-steps 16 [--eval-L 16]``: the trained flows of ``su3_2d``
records integrated with another number of steps (on another lattice with ``--eval-L``) (ESS with its spread, density error): training at a
coarse step and sampling at a fine one, where the density error of the training step is
above 0.01.

``su3_train --L-train 8 --eval-L 8 16 --eval-n-steps 8 16 --train-steps 600 --batch 16
--batch-late 64 --batch-late-from 450 --cosine --lr 0.005 --check-every 100``: a longer
training recipe (cosine learning rate, a larger batch late) at ``--L-train``, the trained
coefficients (volume independent) evaluated on every ``--eval-L`` with every
``--eval-n-steps``: ESS with its spread, the KL divergence against the exact ``log Z = V log
c_0`` (character expansion) and the density error; training stops if the KL of the last 20
steps falls below -0.1 (the optimiser exploiting the integration error). ``--init-record``
starts from a record's theta.

``step``: CPU seconds (``time.process_time``, run it with one thread) of one reverse-KL training
step of :class:`FlowTrainer` with a learned gradient flow (2D SU(3), beta 4), with the array-API
reference (``kernel_mode("off")``) and with the Numba kernels of ``kernels/gauge_flow.py``, in
one run; the ratio, and the largest difference of the two gradients.

``u1_2d``: the same for 2D U(1) (tutorial point L = 8, beta = 2), with flow-Metropolis
acceptance, plaquette and chi_t against the exact values.

``stepsize``: ESS, acceptance and the plaquette of flow Metropolis at n_steps = 2, 4, 8, 16 with
the same parameters: the integration error against the statistical error.

``su3_4d``: 4D SU(3) (L^4, beta = 6): the heatbath plaquette on the same volume
(``--reference-sweeps``), leading order and a learned flow (``--loops4d plc``: plaquette,
rectangle, chair; ``plc_traces``: with the plaquette's class functions) trained with the recipe
of ``su3_train``; ESS, reverse KL of fresh samples, flow-Metropolis acceptance and plaquette.

``freezing``: 2D U(1) at weak coupling (L = 16, beta = 6, exact chi_t = 0.0046668): tau_int of
the topological charge and the CPU cost per independent sample of Q for HMC against flow
Metropolis with a learned gradient flow, in one run (topological freezing).

Writes ``benchmarks/results/gauge-flows-<what>-numpy-*.json``; machine and command are recorded.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import namedtuple
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from harness import print_table, record  # noqa: E402

from lattice_ml.backend import RandomStreams, namespace_by_name, to_numpy  # noqa: E402
from lattice_ml.flows import FlowTrainer, effective_sample_size  # noqa: E402
from lattice_ml.flows.trivializing import luscher_flow  # noqa: E402
from lattice_ml.gauge import GaugeAction  # noqa: E402
from lattice_ml.gauge.observables import average_plaquette, topological_charge_2d  # noqa: E402
from lattice_ml.optim import Adam  # noqa: E402
from lattice_ml.samplers.flow_mcmc import FlowMetropolis  # noqa: E402
from lattice_ml.stats import gamma_method  # noqa: E402

XP = namespace_by_name("numpy")
SQUARE_2x2 = [(0, 1), (0, 1), (1, 1), (1, 1), (0, -1), (0, -1), (1, -1), (1, -1)]
RECT_1x3 = [(0, 1), (0, 1), (0, 1), (1, 1), (0, -1), (0, -1), (0, -1), (1, -1)]
RECT_2x3 = [(0, 1), (0, 1), (0, 1), (1, 1), (1, 1), (0, -1), (0, -1), (0, -1), (1, -1), (1, -1)]
LOOP_SETS = {"small": (("plaquette", "rectangle", SQUARE_2x2, RECT_1x3), 2),
             "large": (("plaquette", "rectangle", SQUARE_2x2, RECT_1x3, RECT_2x3, "polyakov"), 3),
             "plaquette": (("plaquette",), 1),
             # the plaquette's class functions (lattice_ml.flows.loop_functions)
             "traces": (("plaquette", "plaquette:re_tr2", "plaquette:re_tr_sq",
                         "plaquette:abs_tr_sq", "rectangle"), 2),
             "small_traces": (("plaquette", "rectangle", SQUARE_2x2, RECT_1x3,
                               "plaquette:re_tr2", "plaquette:re_tr_sq",
                               "plaquette:abs_tr_sq"), 2),
             # traces and the rectangle's class functions (16)
             "traces_rect": (("plaquette", "plaquette:re_tr2", "plaquette:re_tr_sq",
                              "plaquette:abs_tr_sq", "rectangle", "rectangle:re_tr2",
                              "rectangle:re_tr_sq", "rectangle:abs_tr_sq"), 2),
             # the eight functions of Lüscher's NLO map in 2D (lattice_ml.flows.loop_pairs)
             "nlo": (("plaquette", "plaquette:re_tr2", "plaquette:re_tr_sq",
                      "plaquette:abs_tr_sq", "rectangle", "plaquette_pair:re_re",
                      "plaquette_pair:im_im", "plaquette_pair:twice"), 2),
             # the same without Re Tr P^2 = Re (Tr P)^2 - 2 Re Tr P (SU(3)): 7 x 2 = 14
             "nlo7": (("plaquette", "plaquette:re_tr_sq", "plaquette:abs_tr_sq", "rectangle",
                       "plaquette_pair:re_re", "plaquette_pair:im_im",
                       "plaquette_pair:twice"), 2)}


def make_flow(action, shape, loops, n_t, n_steps, order=1, memory="states"):
    """A gradient flow on ``loops`` at Lüscher's map of ``order``; for ``order=2`` without the
    term ``plaquette:re_tr2`` (SU(3)) its NLO coefficient is folded into ``plaquette:re_tr_sq``
    and ``plaquette`` by ``Re Tr P^2 = Re (Tr P)^2 - 2 Re Tr P`` (Cayley-Hamilton)."""
    loops = tuple(loops)
    fold = order == 2 and action.N == 3 and "plaquette:re_tr2" not in loops
    full = loops + ("plaquette:re_tr2",) if fold else loops
    flow = luscher_flow(action, shape, XP, loops=full, n_t=n_t, n_steps=n_steps, order=order,
                        memory=memory)
    if not fold:
        return flow
    th = flow.params_to_host()["theta"]
    names = list(flow.loop_names)
    i2, isq, i1 = (names.index(n) for n in ("plaquette:re_tr2", "plaquette:re_tr_sq",
                                            "plaquette"))
    th[isq] += th[i2]
    th[i1] -= 2.0 * th[i2]
    out = luscher_flow(action, shape, XP, loops=loops, n_t=n_t, n_steps=n_steps,
                       memory=memory)
    out.load_params({"theta": np.delete(th, i2, axis=0)})
    return out


def ess_of(flow, action, n, seed, chunk=128):
    lw = []
    rng = RandomStreams(seed, min(chunk, n), XP)
    while sum(map(len, lw)) < n:
        U, logq = flow.sample(rng)
        lw.append(to_numpy(-action.action(U) - logq))
    lw = np.concatenate(lw)[:n]
    return effective_sample_size(lw), lw


def ess_spread(lw, n_boot=200, seed=0):
    """Bootstrap standard deviation of the ESS estimate of the log-weights ``lw``."""
    g = np.random.default_rng(seed)
    return float(np.std([effective_sample_size(lw[g.integers(0, len(lw), len(lw))])
                         for _ in range(n_boot)], ddof=1))


def train(flow, action, steps, batch, lr, seed):
    """``(wall s, history, CPU s)`` of ``steps`` reverse-KL steps."""
    tr = FlowTrainer(flow, action, Adam(lr), batch_size=batch, seed=seed, max_grad_norm=10.0)
    t0, c0 = time.perf_counter(), time.process_time()
    for k in range(steps):
        rec = tr.step()
        if k % max(1, steps // 10) == 0:
            print(f"    step {k:4d}  loss {rec['loss']:.3f}  ess {rec['ess']:.3f}", flush=True)
    return time.perf_counter() - t0, tr.history, time.process_time() - c0


def _loops(args):
    loops, n_t = LOOP_SETS[args.loops]
    return loops, (args.n_t or n_t)


def step(args):
    """One training step, reference against kernels (module docstring)."""
    from lattice_ml.dispatch import kernel_mode
    loops, n_t = _loops(args)
    action = GaugeAction(args.beta[0] if args.beta else 4.0, 3)
    L = args.L
    row = {"L": L, "batch": args.batch, "loops": args.loops, "n_t": n_t, "memory": args.memory}
    grads = {}
    for mode in ("off", "auto", "off", "auto"):
        flow = luscher_flow(action, (L, L), XP, loops=loops, n_t=n_t, n_steps=args.n_steps,
                            memory=args.memory)
        row["parameters"] = flow.n_parameters
        with kernel_mode(mode):
            tr = FlowTrainer(flow, action, Adam(args.lr), batch_size=args.batch, seed=3)
            z = flow.draw_latent(RandomStreams(7, args.batch, XP))
            tr.step()                                   # compilation, caches
            times = []
            for _ in range(args.repeat):
                c0 = time.process_time()
                tr.step()
                times.append(time.process_time() - c0)
            U, logJ, cache = flow.forward_cache(z)
            gz, gp = flow.vjp(cache, -action.force(U), -XP.ones_like(logJ))
        key = "reference" if mode == "off" else "kernels"
        row[f"step_cpu_s_{key}"] = min(times + [row.get(f"step_cpu_s_{key}", math.inf)])
        grads[key] = (to_numpy(gz), to_numpy(gp["theta"]))
    row["speedup"] = row["step_cpu_s_reference"] / row["step_cpu_s_kernels"]
    row["max_grad_difference"] = float(max(
        np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b))))
        for a, b in zip(grads["kernels"], grads["reference"])))
    print_table([row], ["L", "batch", "parameters", "step_cpu_s_reference", "step_cpu_s_kernels",
                        "speedup", "max_grad_difference"])
    import os
    print(record("gauge-flows-step", [row], "numpy",
                 {"threads": {v: os.environ.get(v) for v in ("OPENBLAS_NUM_THREADS",
                                                             "NUMBA_NUM_THREADS")},
                  "n_steps": args.n_steps}))


def run_table(N, L, betas, args, name):
    loops, n_t = _loops(args)
    rows = []
    for beta in betas:
        action = GaugeAction(beta, N)
        ident = luscher_flow(action, (L, L), XP, n_steps=args.n_steps)
        ident.load_params({"theta": np.zeros((1, 1))})
        lo = luscher_flow(action, (L, L), XP, n_steps=args.n_steps)
        learned = make_flow(action, (L, L), loops, n_t, args.n_steps, args.order, args.memory)
        log_z = L * L * sun_log_c0(beta, N)
        row = {"beta": beta, "L": L, "loops": list(learned.loop_names), "n_steps": args.n_steps,
               "init_order": args.order}
        row["ess_identity"] = float("nan")
        if args.baselines and args.identity:
            row["ess_identity"], _ = ess_of(ident, action, args.ess_samples, 1)
        if args.baselines:
            t0 = time.perf_counter()
            row["ess_luscher_lo"], lw = ess_of(lo, action, args.ess_samples, 2)
            row["ess_luscher_lo_err"] = ess_spread(lw)
            row["kl_luscher_lo"] = float(-np.mean(lw) + log_z)
            row["sample_s_per_cfg"] = (time.perf_counter() - t0) / args.ess_samples
        else:
            row["ess_luscher_lo"] = float("nan")
        if args.nlo:
            nlo = luscher_flow(action, (L, L), XP, loops=LOOP_SETS["traces"][0][:4], n_t=2,
                               n_steps=args.n_steps, order=2)
            row["ess_luscher_nlo_plaquette"], lw = ess_of(nlo, action, args.ess_samples, 6)
            row["ess_luscher_nlo_plaquette_err"] = ess_spread(lw)
            print(f"beta {beta}: Lüscher LO + NLO single-plaquette part "
                  f"{row['ess_luscher_nlo_plaquette']:.3f}", flush=True)
        if args.train_steps == 0:
            # no training: the map the learned flow starts from (--order)
            row["ess_init"], lw = ess_of(learned, action, args.ess_samples, 4)
            row["ess_init_err"] = ess_spread(lw)
            row["kl_init"] = float(-np.mean(lw) + log_z)
            z = learned.draw_latent(RandomStreams(5, 64, XP))
            row["step_check_rms"] = learned.step_size_check(action, z)["rms"]
            row["parameters"] = learned.n_parameters
            row["theta"] = learned.params_to_host()["theta"].tolist()
            rows.append(row)
            print_table([row], ["beta", "ess_luscher_lo", "kl_luscher_lo", "init_order",
                                "parameters", "ess_init", "ess_init_err", "kl_init",
                                "step_check_rms"])
            continue
        print(f"beta {beta}: identity {row['ess_identity']:.3f}  Lüscher LO "
              f"{row['ess_luscher_lo']:.3f}; training {learned.n_parameters} parameters",
              flush=True)
        wall, hist, cpu = train(learned, action, args.train_steps, args.batch, args.lr, 3)
        row["parameters"] = learned.n_parameters
        row["train_steps"] = args.train_steps
        row["train_batch"] = args.batch
        row["train_s"] = wall
        row["train_cpu_s"] = cpu
        row["ess_learned"], lw = ess_of(learned, action, args.ess_samples, 4)
        row["ess_learned_err"] = ess_spread(lw)
        row["kl_learned"] = float(-np.mean(lw) + log_z)
        row["loss_last10"] = float(np.mean(hist["loss"][-10:])) if args.train_steps else None
        z = learned.draw_latent(RandomStreams(5, 64, XP))
        row["step_check_rms"] = learned.step_size_check(action, z)["rms"]
        row["theta"] = learned.params_to_host()["theta"].tolist()
        rows.append(row)
        print_table([row], ["beta", "ess_identity", "ess_luscher_lo", "parameters",
                            "ess_learned", "ess_learned_err", "train_s", "train_cpu_s",
                            "step_check_rms"])
    return rows


def su3_2d(args):
    rows = run_table(3, args.L, args.beta or [4.0, 5.0, 6.0], args, "su3_2d")
    path = record("gauge-flows-su3-2d", rows, "numpy",
                  {"loops": args.loops, "n_steps": args.n_steps, "lr": args.lr,
                   "init_order": args.order,
                   "published_ess_16x16": {"luscher_nl_8": [0.42, 0.04, 0.01],
                                           "gradient_flow_14": [0.91, 0.65, 0.26],
                                           "gradient_flow_420": [0.98, 0.88, 0.70]}})
    print(path)


def su3_eval(args):
    """The trained flows of ``su3_2d`` records (``--records``) integrated with ``--n-steps``:
    ESS of fresh samples with its spread and the density error."""
    import json
    rows = []
    for path in args.records:
        doc = json.loads(Path(path).read_text())
        loops, n_t = LOOP_SETS[doc["loops"]]
        for r in doc["results"]:
            r.setdefault("L", r.get("L_train"))            # su3_train records
            r.setdefault("n_steps", r.get("train_n_steps"))
            action = GaugeAction(r["beta"], 3)
            L = (args.eval_L or [r["L"]])[0]         # the coefficients are volume independent
            flow = luscher_flow(action, (L, L), XP, loops=loops,
                                n_t=np.shape(r["theta"])[1], n_steps=args.n_steps)
            flow.load_params({"theta": np.asarray(r["theta"])})
            row = {"record": Path(path).name, "loops": doc["loops"], "beta": r["beta"],
                   "L": L, "trained_L": r["L"], "parameters": flow.n_parameters,
                   "trained_n_steps": r["n_steps"],
                   "n_steps": args.n_steps}
            row["ess"], lw = ess_of(flow, action, args.ess_samples, 14)
            row["ess_err"] = ess_spread(lw)
            row["kl"] = float(-np.mean(lw) + L * L * sun_log_c0(r["beta"], 3))
            z = flow.draw_latent(RandomStreams(5, 64, XP))
            row["step_check_rms"] = flow.step_size_check(action, z)["rms"]
            rows.append(row)
            print_table([row], ["loops", "beta", "L", "parameters", "n_steps", "ess", "ess_err",
                                "kl", "step_check_rms"])
    print(record("gauge-flows-su3-2d-eval", rows, "numpy", {"n_steps": args.n_steps}))


def sun_log_c0(beta, N, points=96):
    """``log c_0 = log int dU exp((beta/N) Re Tr U)`` (Haar measure) by Weyl integration over the
    eigenphases: ``log Z = V log c_0`` of 2D SU(N) on a torus of V plaquettes (Wilson action
    ``S = -(beta/N) sum Re Tr P``), up to the corrections ``V <P>^V`` of ``gauge_exact``."""
    grid = 2 * np.pi * np.arange(points) / points
    thetas = np.meshgrid(*([grid] * (N - 1)), indexing="ij")
    phases = [*thetas, -sum(thetas)]
    z = [np.exp(1j * t) for t in phases]
    vdm = np.ones_like(phases[-1])
    for i in range(N):
        for j in range(i + 1, N):
            vdm = vdm * np.abs(z[i] - z[j]) ** 2
    re_tr = sum(np.cos(t) for t in phases)
    return float(beta + np.log(np.sum(vdm * np.exp(beta / N * (re_tr - N))) / np.sum(vdm)))


def _schedule(args, steps):
    from lattice_ml.optim import constant, cosine_decay
    return cosine_decay(args.lr, steps, args.lr_min) if args.cosine else constant(args.lr)


TrainResult = namedtuple("TrainResult", "loss cpu wall late checks stopped")


def train_recipe(flow, action, args, log_z):
    """``--train-steps`` reverse-KL steps with the recipe of ``su3_train`` (cosine lr with
    ``--cosine``, batch ``--batch-late`` from ``--batch-late-from``); the KL divergence printed is
    the mean loss of the last 20 steps plus the exact ``log_z`` (not printed if None). Returns ``(losses, CPU s, wall
    s, first step of the late batch)``."""
    opt = Adam(_schedule(args, args.train_steps))
    late = args.batch_late_from if args.batch_late else args.train_steps
    trainers = [FlowTrainer(flow, action, opt, batch_size=args.batch, seed=3, max_grad_norm=10.0)]
    if args.batch_late:
        trainers.append(FlowTrainer(flow, action, opt, batch_size=args.batch_late, seed=13,
                                    max_grad_norm=10.0))
    loss, cpu0, t0 = [], time.process_time(), time.perf_counter()
    checks, stopped = [], None
    for k in range(args.train_steps):
        rec = trainers[int(k >= late)].step()
        loss.append(rec["loss"])
        if k % max(1, args.train_steps // 20) == 0 or k == args.train_steps - 1:
            kl = "" if log_z is None else f"KL {np.mean(loss[-20:]) + log_z:.4f}  "
            print(f"    step {k:5d}  lr {rec['lr']:.4f}  loss {np.mean(loss[-20:]):.3f}  {kl}"
                  f"cpu {time.process_time() - cpu0:.0f} s", flush=True)
        if args.check_every and (k + 1) % args.check_every == 0:
            c = flow.step_size_check(action, flow.draw_latent(RandomStreams(5 + k, 16, XP)))
            checks.append((k + 1, c["rms"]))
            print(f"    step {k + 1:5d}  density error {c['rms']:.2e}", flush=True)
        if time.process_time() - cpu0 > args.max_train_cpu:
            print(f"    stopped at step {k + 1}: --max-train-cpu {args.max_train_cpu}")
            break
        if log_z is not None and k >= 20 and np.mean(loss[-20:]) + log_z < -0.1:
            # KL >= 0 for the exact density: the optimiser exploits the integration error
            print(f"    stopped at step {k + 1}: KL {np.mean(loss[-20:]) + log_z:.3f} < 0")
            stopped = "negative KL"
            break
    return TrainResult(loss, time.process_time() - cpu0, time.perf_counter() - t0, late,
                       checks, stopped)


def su3_train(args):
    """A longer training recipe for 2D SU(3) (module docstring): train at ``--L-train`` with a
    cosine learning rate and a larger batch late, optionally from the theta of a record
    (``--init-record``), and evaluate the trained coefficients at every ``--eval-L`` (the
    coefficients are volume independent) with every ``--eval-n-steps``: ESS with its spread,
    the KL divergence against the exact ``log Z``, and the density error."""
    import json
    loops, n_t = _loops(args)
    beta = (args.beta or [4.0])[0]
    action = GaugeAction(beta, 3)
    Lt = args.L_train or args.L
    flow = make_flow(action, (Lt, Lt), loops, n_t, args.n_steps, args.order, args.memory)
    if args.init_record:
        doc = json.loads(Path(args.init_record).read_text())
        flow.load_params({"theta": np.asarray(doc["results"][args.init_index]["theta"])})
    log_c0 = sun_log_c0(beta, 3)
    res = train_recipe(flow, action, args, Lt * Lt * log_c0)
    loss = res.loss
    row = {"beta": beta, "L_train": Lt, "init_order": args.order,
           "loops": list(flow.loop_names), "parameters":
           flow.n_parameters, "n_t": n_t, "train_n_steps": args.n_steps,
           "train_steps": len(loss), "batch": args.batch, "batch_late": args.batch_late,
           "batch_late_from": res.late, "lr": args.lr, "cosine": args.cosine, "lr_min": args.lr_min,
           "init_record": Path(args.init_record).name if args.init_record else None,
           "train_cpu_s": res.cpu, "train_s": res.wall, "stopped": res.stopped,
           "density_error_during_training": res.checks,
           "train_kl_last50": float(np.mean(loss[-50:]) + Lt * Lt * log_c0),
           "loss_per_10_steps": [float(np.mean(loss[i:i + 10])) for i in range(0, len(loss), 10)],
           "theta": flow.params_to_host()["theta"].tolist(), "eval": []}
    for L in args.eval_L or [args.L]:
        for n in args.eval_n_steps or [args.n_steps]:
            ev = luscher_flow(action, (L, L), XP, loops=loops, n_t=n_t, n_steps=n)
            ev.load_params(flow.params_to_host())
            c0 = time.process_time()
            ess, lw = ess_of(ev, action, args.ess_samples, 4)
            e = {"L": L, "n_steps": n, "ess": ess, "ess_err": ess_spread(lw),
                 "kl": float(-np.mean(lw) + L * L * log_c0), "log_z": L * L * log_c0,
                 "sample_cpu_s": time.process_time() - c0,
                 "step_check_rms": ev.step_size_check(
                     action, ev.draw_latent(RandomStreams(5, 64, XP)))["rms"]}
            row["eval"].append(e)
            print_table([e], ["L", "n_steps", "ess", "ess_err", "kl", "step_check_rms",
                              "sample_cpu_s"])
    print(record("gauge-flows-su3-train", [row], "numpy",
                 {"loops": args.loops, "published_ess_16x16": {
                     "gradient_flow_14": [0.91, 0.65, 0.26],
                     "gradient_flow_420": [0.98, 0.88, 0.70]}}))


def u1_2d(args):
    from gauge_exact import u1_plaquette, u1_topological_susceptibility
    rows = run_table(1, args.L, args.beta or [2.0], args, "u1_2d")
    for row in rows:
        beta, L = row["beta"], row["L"]
        action = GaugeAction(beta, 1)
        loops, n_t = LOOP_SETS[args.loops]
        flow = luscher_flow(action, (L, L), XP, loops=loops, n_t=n_t, n_steps=args.n_steps)
        flow.load_params({"theta": np.array(row["theta"])})
        sampler = FlowMetropolis(flow, action)
        obs = {"plaquette": average_plaquette, "Q2": lambda U: topological_charge_2d(U) ** 2}
        _, hist = sampler.run(RandomStreams(6, 16, XP), args.mcmc_updates, obs)
        row.update(sampler.summary(hist))
        for k, exact in (("plaquette", u1_plaquette(beta, L * L)),
                         ("Q2", L * L * u1_topological_susceptibility(beta, L * L))):
            r = gamma_method(np.stack([to_numpy(h) for h in hist[k]], axis=1)[:, 10:])
            row[k] = r.value
            row[k + "_error"] = r.error
            row[k + "_exact"] = exact
            row[k + "_tau_int"] = r.tau_int
        print_table([row], ["beta", "acceptance", "ess", "plaquette", "plaquette_error",
                            "plaquette_exact", "Q2", "Q2_error", "Q2_exact"])
    print(record("gauge-flows-u1-2d", rows, "numpy", {"loops": args.loops,
                                                      "n_steps": args.n_steps}))


def stepsize(args):
    beta, L = args.beta[0] if args.beta else 4.0, args.L
    action = GaugeAction(beta, 3)
    rows = []
    for n in (2, 4, 8, 16):
        flow = luscher_flow(action, (L, L), XP, n_steps=n)
        sampler = FlowMetropolis(flow, action)
        _, hist = sampler.run(RandomStreams(7, 16, XP), args.mcmc_updates,
                              {"plaquette": average_plaquette})
        r = gamma_method(np.stack([to_numpy(h) for h in hist["plaquette"]], axis=1)[:, 10:])
        z = flow.draw_latent(RandomStreams(5, 64, XP))
        rows.append({"n_steps": n, **sampler.summary(hist), "plaquette": r.value,
                     "error": r.error, "step_check_rms": flow.step_size_check(action, z)["rms"]})
        print_table(rows[-1:], ["n_steps", "acceptance", "ess", "plaquette", "error",
                                "step_check_rms"])
    print(record("gauge-flows-stepsize", rows, "numpy", {"beta": beta, "L": L, "N": 3}))


LOOP_SETS_4D = {"plc": (("plaquette", "rectangle", "chair"), 2),
                "plc_traces": (("plaquette", "plaquette:re_tr2", "plaquette:re_tr_sq",
                                "plaquette:abs_tr_sq", "rectangle", "chair"), 2)}


def _heatbath_plaquette(action, shape, sweeps, chains=4, n_therm=50, seed=21):
    """The plaquette of ``shape`` by heatbath + 2 over-relaxation sweeps (exact in distribution
    on that volume): Gamma-method value, error, tau_int and CPU seconds."""
    from lattice_ml.groups import haar_random, identity_like
    from lattice_ml.samplers.heatbath import Heatbath
    hb = Heatbath(action.beta, action.N, n_or=2)
    rng = RandomStreams(seed, chains, XP)
    U = identity_like(haar_random(rng, (len(shape), *shape), action.N))
    hist, c0 = [], time.process_time()
    for k in range(n_therm + sweeps):
        U, _ = hb.step(U, rng)
        if k >= n_therm:
            hist.append(to_numpy(average_plaquette(U)))
    r = gamma_method(np.array(hist).T)
    return {"flow": "heatbath reference", "sweeps": sweeps, "chains": chains,
            "plaquette": r.value, "error": r.error, "tau_int": r.tau_int,
            "cpu_s": time.process_time() - c0}


def su3_4d(args):
    """4D SU(3), Wilson action, on L^4: the plaquette by heatbath (``--reference-sweeps``, the
    reference on this volume), Lüscher's LO map and a learned flow (``--loops4d``: plaquette,
    rectangle, chair; ``plc_traces`` adds the plaquette's class functions; n_t = 2) trained with
    the recipe of ``su3_train``: ESS of fresh samples, flow-Metropolis acceptance and plaquette
    (8 chains, ``--mcmc-updates``, first 5 discarded) against the heatbath value, density
    error."""
    L, beta = args.L, (args.beta or [6.0])[0]
    action = GaugeAction(beta, 3)
    shape = (L,) * 4
    rows, ref = [], None
    if args.reference_sweeps:
        ref = _heatbath_plaquette(action, shape, args.reference_sweeps)
        rows.append(ref)
        print_table(rows[-1:], ["flow", "plaquette", "error", "tau_int", "cpu_s"])
    loops, n_t = LOOP_SETS_4D[args.loops4d]
    for name, lp, nt, steps in (("luscher_lo", ("plaquette",), 1, 0),
                                ("learned", loops, n_t, args.train_steps)):
        flow = luscher_flow(action, shape, XP, loops=lp, n_t=nt, n_steps=args.n_steps,
                            memory=args.memory)
        row = {"flow": name, "loops": list(flow.loop_names), "parameters": flow.n_parameters,
               "train_steps": steps, "batch": args.batch, "batch_late": args.batch_late,
               "n_steps": args.n_steps}
        if steps:
            res = train_recipe(flow, action, args, None)
            loss, row["train_cpu_s"], row["train_s"] = res.loss, res.cpu, res.wall
            row["density_error_during_training"] = res.checks
            row["loss_last50"] = float(np.mean(loss[-50:]))
            row["loss_per_10_steps"] = [float(np.mean(loss[i:i + 10]))
                                        for i in range(0, len(loss), 10)]
            row["theta"] = flow.params_to_host()["theta"].tolist()
        row["ess"], lw = ess_of(flow, action, args.ess_samples, 4, chunk=32)
        row["ess_err"] = ess_spread(lw)
        row["loss_fresh"] = float(-np.mean(lw))
        sampler = FlowMetropolis(flow, action)
        c0 = time.process_time()
        _, hist = sampler.run(RandomStreams(6, 8, XP), args.mcmc_updates,
                              {"plaquette": average_plaquette})
        row["mcmc_cpu_s"] = time.process_time() - c0
        r = gamma_method(np.stack([to_numpy(h) for h in hist["plaquette"]], axis=1)[:, 5:])
        row.update(acceptance=sampler.summary(hist)["acceptance"], plaquette=r.value,
                   error=r.error, tau_int=r.tau_int, step_check_rms=flow.step_size_check(
                       action, flow.draw_latent(RandomStreams(5, 16, XP)))["rms"])
        if ref is not None:
            row["deviation_sigma"] = (r.value - ref["plaquette"]) / math.hypot(r.error,
                                                                                ref["error"])
        rows.append(row)
        print_table(rows[-1:], ["flow", "parameters", "ess", "ess_err", "loss_fresh",
                                "acceptance", "plaquette", "error", "step_check_rms"])
    print(record("gauge-flows-su3-4d", rows, "numpy", {"beta": beta, "L": L,
                                                       "n_steps": args.n_steps,
                                                       "loops4d": args.loops4d}))


def _charge_tau(q_hist):
    """Gamma-method analysis of the topological charge, q_hist [chain, time]: <Q^2> and tau_int(Q)."""
    q = np.asarray(q_hist, dtype=float)
    rq = gamma_method(q)
    rq2 = gamma_method(q ** 2)
    return {"Q2": rq2.value, "Q2_error": rq2.error, "tau_int_Q": rq.tau_int,
            "tau_int_Q_error": rq.tau_int_error, "tau_int_Q2": rq2.tau_int}


def freezing(args):
    """2D U(1) at weak coupling (default L = 16, beta = 6; exact chi_t = 0.0046668): tau_int of Q
    and the CPU cost per independent sample of Q for HMC and for flow Metropolis with a learned
    gradient flow (trained here; the training cost is reported separately), same machine, same
    run. Cost per independent sample = 2 tau_int x CPU seconds per update per chain."""
    from gauge_exact import u1_plaquette, u1_topological_susceptibility

    L, beta = args.L, (args.beta or [6.0])[0]
    V = L * L
    action = GaugeAction(beta, 1)
    exact_q2 = V * u1_topological_susceptibility(beta, V)
    exact_p = u1_plaquette(beta, V)
    n_chains, rows = 16, []

    cols = ["sampler", "acceptance", "plaquette", "Q2", "Q2_error", "tau_int_Q",
            "tau_int_Q_error", "cpu_s_per_update", "cpu_s_per_independent_Q"]
    extra = {"beta": beta, "L": L, "exact_Q2": exact_q2, "exact_plaquette": exact_p,
             "n_steps": args.n_steps, "loops": args.loops, "lr": args.lr}
    if "hmc" in args.samplers:
        rows.append(_freezing_hmc(action, L, n_chains, args))
        print_table(rows[-1:], cols)
    if "flow" in args.samplers:
        rows.append(_freezing_flow(action, L, n_chains, args))
        print_table(rows[-1:], cols + ["ess", "train_cpu_s"])
    print(record("gauge-flows-freezing", rows, "numpy", extra))


def _freezing_hmc(action, L, n_chains, args):
    """HMC: tau = 1 (jitter 0.2), Omelyan with --hmc-steps steps, from a cold start."""
    from lattice_ml.groups import random_near_identity
    from lattice_ml.samplers.hmc import HMC
    from lattice_ml.samplers.integrators import Level
    from lattice_ml.samplers.spaces import LieGroupSpace

    rng = RandomStreams(11, n_chains, XP)
    hmc = HMC([Level([action], args.hmc_steps, "omelyan")], LieGroupSpace(1), tau=1.0,
              tau_jitter=0.2)
    U = random_near_identity(rng, (2, L, L), 1, 0.0)
    for _ in range(args.n_therm):
        U, _ = hmc.step(U, rng)
    q, plaq, acc = [], [], []
    t0 = time.process_time()
    for _ in range(args.hmc_updates):
        U, info = hmc.step(U, rng)
        q.append(to_numpy(topological_charge_2d(U)))
        plaq.append(to_numpy(average_plaquette(U)))
        acc.append(to_numpy(info.accepted))
    cpu = (time.process_time() - t0) / (args.hmc_updates * n_chains)
    row = {"sampler": "hmc", "updates": args.hmc_updates, "chains": n_chains,
           "md_steps": args.hmc_steps, "acceptance": float(np.mean(acc)),
           "cpu_s_per_update": cpu, "plaquette": gamma_method(np.array(plaq).T).value,
           **_charge_tau(np.array(q).T)}
    row["cpu_s_per_independent_Q"] = 2 * row["tau_int_Q"] * cpu
    return row


def _freezing_flow(action, L, n_chains, args):
    """Flow Metropolis with a learned gradient flow started at Lüscher's leading order."""
    loops, n_t = LOOP_SETS[args.loops]
    flow = luscher_flow(action, (L, L), XP, loops=loops, n_t=n_t, n_steps=args.n_steps)
    t0 = time.process_time()
    train(flow, action, args.train_steps, args.batch, args.lr, 3)
    train_cpu = time.process_time() - t0
    sampler = FlowMetropolis(flow, action)
    obs = {"plaquette": average_plaquette, "Q": topological_charge_2d}
    t0 = time.process_time()
    _, hist = sampler.run(RandomStreams(6, n_chains, XP), args.mcmc_updates, obs)
    cpu = (time.process_time() - t0) / (args.mcmc_updates * n_chains)
    z = flow.draw_latent(RandomStreams(5, 64, XP))
    qh = np.stack([to_numpy(h) for h in hist["Q"]], axis=1)[:, 10:]
    ph = np.stack([to_numpy(h) for h in hist["plaquette"]], axis=1)[:, 10:]
    row = {"sampler": "flow", "updates": args.mcmc_updates, "chains": n_chains,
           "parameters": flow.n_parameters, "train_steps": args.train_steps,
           "train_cpu_s": train_cpu, **sampler.summary(hist), "cpu_s_per_update": cpu,
           "plaquette": gamma_method(ph).value, "step_check_rms":
           flow.step_size_check(action, z)["rms"], **_charge_tau(qh),
           "theta": flow.params_to_host()["theta"].tolist()}
    row["cpu_s_per_independent_Q"] = 2 * row["tau_int_Q"] * cpu
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", choices=["su3_2d", "su3_eval", "su3_train", "u1_2d", "stepsize",
                                   "su3_4d", "freezing", "step"])
    p.add_argument("--L", type=int, default=16)
    p.add_argument("--beta", type=float, nargs="*")
    p.add_argument("--n-steps", type=int, default=8)
    p.add_argument("--train-steps", type=int, default=100)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--ess-samples", type=int, default=512)
    p.add_argument("--mcmc-updates", type=int, default=300)
    p.add_argument("--loops", choices=sorted(LOOP_SETS), default="small")
    p.add_argument("--n-t", type=int, default=None)
    p.add_argument("--no-baselines", dest="baselines", action="store_false",
                   help="su3_2d: skip the ESS of the identity and of Lüscher's map")
    p.add_argument("--no-identity", dest="identity", action="store_false",
                   help="su3_2d: skip the ESS of the identity map")
    p.add_argument("--records", nargs="*", default=[],
                   help="su3_eval: JSON records of su3_2d runs")
    p.add_argument("--nlo", action="store_true",
                   help="su3_2d: also the ESS of Lüscher's map with the NLO single-plaquette "
                        "class functions (zero parameters)")
    p.add_argument("--order", type=int, choices=[1, 2], default=1,
                   help="su3_2d, su3_train: start the learned flow at Lüscher's map of this "
                        "order (2: NLO, needs --loops nlo or nlo7 for the full map; "
                        "su3_2d with --train-steps 0: the ESS and KL of that map)")
    p.add_argument("--memory", choices=["states", "stages", "constant"], default="states",
                   help="GradientFlow memory of the learned flows (stages: fastest training)")
    p.add_argument("--L-train", type=int, default=None, help="su3_train: training lattice")
    p.add_argument("--eval-L", type=int, nargs="*", help="su3_train: evaluation lattices")
    p.add_argument("--eval-n-steps", type=int, nargs="*", help="su3_train: evaluation steps")
    p.add_argument("--cosine", action="store_true", help="su3_train: cosine decay of the lr")
    p.add_argument("--lr-min", type=float, default=0.0)
    p.add_argument("--batch-late", type=int, default=0,
                   help="su3_train: batch from --batch-late-from on (0: keep --batch)")
    p.add_argument("--batch-late-from", type=int, default=0)
    p.add_argument("--init-record", default=None, help="su3_train: start from a record's theta")
    p.add_argument("--init-index", type=int, default=0)
    p.add_argument("--max-train-cpu", type=float, default=math.inf)
    p.add_argument("--check-every", type=int, default=0,
                   help="su3_train, su3_4d: density error every so many training steps")
    p.add_argument("--loops4d", choices=sorted(LOOP_SETS_4D), default="plc")
    p.add_argument("--reference-sweeps", type=int, default=0,
                   help="su3_4d: heatbath sweeps for the reference plaquette (0: none)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--hmc-updates", type=int, default=2000)
    p.add_argument("--hmc-steps", type=int, default=10)
    p.add_argument("--n-therm", type=int, default=200)
    p.add_argument("--samplers", nargs="*", default=["hmc", "flow"])
    args = p.parse_args(argv)
    {"su3_2d": su3_2d, "u1_2d": u1_2d, "stepsize": stepsize, "su3_4d": su3_4d,
     "freezing": freezing, "step": step, "su3_eval": su3_eval,
     "su3_train": su3_train}[args.what](args)


if __name__ == "__main__":
    main()
