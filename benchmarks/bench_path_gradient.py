"""Reverse KL against the path-gradient estimator for learned gradient flows: ESS after the same
number of training steps, and the training CPU time, in one run.

    OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/bench_path_gradient.py \\
        [--cases su3 u1] [--L 8] [--train-steps 60] [--batch 16] [--lr 0.005] [--ess-samples 1024]

Cases: 2D SU(3) at beta = 4 and 2D U(1) at beta = 2 (the tutorial point), Wilson action, L x L.
Both estimators start from Lüscher's leading-order map (plaquette and 1x2 loops, n_t = 2: 4
parameters, 8 RK3 steps, ``memory="stages"``) and train with Adam (cosine decay to lr/100),
the same seed (the same latent batches as long as the parameters agree); the ESS is that of
``--ess-samples`` fresh flow samples from one fixed seed, before and after training. Training
time is ``time.process_time`` (run with one thread). Writes
``benchmarks/results/path-gradient-numpy-*.json`` with the machine and the command.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import print_table, record  # noqa: E402

from lattice_ml.backend import RandomStreams, namespace_by_name, to_numpy  # noqa: E402
from lattice_ml.flows import FlowTrainer, effective_sample_size, luscher_flow  # noqa: E402
from lattice_ml.gauge import GaugeAction  # noqa: E402
from lattice_ml.optim import Adam, cosine_decay  # noqa: E402

CASES = {"su3": (3, 4.0), "u1": (1, 2.0)}


def ess(flow, action, n, xp, seed=12345, chunk=256):
    lw = []
    rng = RandomStreams(seed, chunk, xp)
    for _ in range(n // chunk):
        x, logq = flow.sample(rng)
        lw.append(np.asarray(to_numpy(-action.action(x) - logq), dtype=np.float64))
    return float(effective_sample_size(np.concatenate(lw)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", nargs="*", choices=sorted(CASES), default=["su3", "u1"])
    p.add_argument("--L", type=int, default=8)
    p.add_argument("--train-steps", type=int, default=60)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=0.005)
    p.add_argument("--ess-samples", type=int, default=1024)
    args = p.parse_args(argv)
    xp = namespace_by_name("numpy")
    rows = []
    for case in args.cases:
        N, beta = CASES[case]
        action = GaugeAction(beta, N)
        for mode in ("reverse_kl", "path_gradient"):
            flow = luscher_flow(action, (args.L, args.L), xp, loops=("plaquette", "rectangle"),
                                n_t=2, n_steps=8, memory="stages")
            ess0 = ess(flow, action, args.ess_samples, xp)
            tr = FlowTrainer(flow, action, Adam(cosine_decay(args.lr, args.train_steps,
                                                             args.lr / 100)),
                             batch_size=args.batch, seed=1, mode=mode, max_grad_norm=100.0)
            t0 = time.process_time()
            w0 = time.perf_counter()
            tr.train(args.train_steps)
            cpu = time.process_time() - t0
            wall = time.perf_counter() - w0
            gn = np.asarray(tr.history["grad_norm"])
            row = {"case": f"{case} {args.L}^2 beta={beta:g}", "mode": mode,
                   "steps": args.train_steps, "batch": args.batch, "lr": args.lr,
                   "ess_luscher": ess0, "ess_trained": ess(flow, action, args.ess_samples, xp),
                   "train_cpu_s": cpu, "train_wall_s": wall,
                   "cpu_s_per_step": cpu / max(args.train_steps, 1),
                   "grad_norm_last10": float(np.mean(gn[-10:])),
                   "grad_norm_cv_last10": float(np.std(gn[-10:]) / np.mean(gn[-10:])),
                   "theta": flow.params_to_host()["theta"].tolist()}
            rows.append(row)
            print_table([row], ["case", "mode", "ess_luscher", "ess_trained", "train_cpu_s",
                                "cpu_s_per_step"])
    print_table(rows, ["case", "mode", "steps", "ess_luscher", "ess_trained", "train_cpu_s",
                       "cpu_s_per_step", "grad_norm_last10"])
    path = record("path-gradient", rows, "numpy", {"ess_samples": args.ess_samples})
    print(path)


if __name__ == "__main__":
    main()
