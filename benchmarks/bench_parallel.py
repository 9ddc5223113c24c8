"""Scaling of chains over MPI ranks (lattice_ml.parallel; issue 17, stage 1).

φ⁴ HMC (2D, ``--L``², standard form, 10 Omelyan steps per trajectory) with the chains split
over ``R`` ranks launched by ``mpiexec -n R`` (each rank one thread: ``NUMBA_NUM_THREADS =
OMP_NUM_THREADS = 1``, so that R ranks use R cores):

* strong scaling: ``--chains`` chains in all, R = 1, 2, ...: wall time per trajectory, speed-up
  and efficiency against R = 1 measured in the same run;
* weak scaling: ``--chains`` chains per rank;
* the fraction of each trajectory a rank spends in the collectives (the gather of ΔH and
  acceptance to rank 0 and the exact mean of |M| over all chains, every trajectory: what a run
  of the command does) against its compute, timed around the calls on every rank (max over
  ranks);
* a model of how far the same split would scale across nodes: per trajectory a rank computes
  ``t_p = t_1 / R`` (measured t_1 per chain times its chains) and the collectives cost ``t_c(R) =
  a log2(R) + b R n_bytes`` (a gather of ``R`` blocks of ``n_bytes``; ``a`` and ``b`` are
  inter-node latency and inverse bandwidth, given as ``--latency`` and ``--bandwidth``, not
  measured here: one machine has no network), so the efficiency is ``t_p / (t_p + t_c)``; the
  on-node collective time measured at R = 2 is recorded next to it.

Domain decomposition (halo exchange behind ``shift``) is not implemented, so there is no halo
fraction to measure yet.

Run: ``python benchmarks/bench_parallel.py [--ranks 1 2] [--chains 8] [--L 16] [--traj 20]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402


def worker(args) -> None:
    import numpy as np

    from lattice_ml.backend import RandomStreams, namespace_by_name
    from lattice_ml.lattice import Lattice
    from lattice_ml.parallel import world
    from lattice_ml.samplers import HMC, EuclideanSpace, Level
    from lattice_ml.scalar import Phi4Action, magnetization

    comm = world()
    xp = namespace_by_name("numpy")
    n_chains = args.chains * (comm.size if args.mode == "weak" else 1)
    block = comm.chains(n_chains)
    rng = RandomStreams(1, block.count, xp, first_chain=block.start)
    action = Phi4Action(Lattice((args.L, args.L)), "standard", m2=-1.0, lam=1.5)
    hmc = HMC([Level([action], 10, "omelyan")], EuclideanSpace(), tau=1.0)
    phi = rng.normal((args.L, args.L))
    phi, _ = hmc.step(phi, rng)  # compile and warm up
    comm.barrier()
    t_comm = 0.0
    t0 = time.perf_counter()
    for _ in range(args.traj):
        phi, info = hmc.step(phi, rng)
        t1 = time.perf_counter()
        comm.gather_chains(info.delta_h)
        comm.gather_chains(info.accepted)
        comm.sum_chains(xp.abs(magnetization(phi)), mean=True)
        t_comm += time.perf_counter() - t1
    comm.barrier()
    wall = time.perf_counter() - t0
    walls = comm.gather(wall)
    comms = comm.gather(t_comm)
    if comm.is_root:
        n_bytes = int(np.asarray(info.delta_h).nbytes * 2 + 8 * block.count)
        print(json.dumps({"mode": args.mode, "ranks": comm.size, "chains": n_chains,
                          "s_per_trajectory": max(walls) / args.traj,
                          "comm_fraction": max(c / w for c, w in zip(comms, walls)),
                          "comm_s_per_trajectory": max(comms) / args.traj,
                          "bytes_per_rank_per_trajectory": n_bytes}))


def launch(args, ranks: int, mode: str) -> dict:
    local = Path(sys.executable).parent / "mpiexec"
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1")
    cmd = [str(local), "-n", str(ranks), sys.executable, __file__, "--worker", "--mode", mode,
           "--chains", str(args.chains), "--L", str(args.L), "--traj", str(args.traj)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--chains", type=int, default=8)
    p.add_argument("--L", type=int, default=16)
    p.add_argument("--traj", type=int, default=20)
    p.add_argument("--latency", type=float, default=2e-6, help="inter-node latency a (s)")
    p.add_argument("--bandwidth", type=float, default=10e9, help="inter-node bandwidth (B/s)")
    p.add_argument("--mode", default="strong")
    p.add_argument("--worker", action="store_true")
    args = p.parse_args()
    if args.worker:
        return worker(args)
    rows = []
    for mode in ("strong", "weak"):
        base = None
        for r in args.ranks:
            row = launch(args, r, mode)
            base = base or row
            ideal = base["s_per_trajectory"] * (1.0 / r if mode == "strong" else 1.0)
            row["speedup" if mode == "strong" else "weak_efficiency"] = (
                base["s_per_trajectory"] / row["s_per_trajectory"] if mode == "strong"
                else ideal / row["s_per_trajectory"])
            if mode == "strong":
                row["efficiency"] = row["speedup"] / r
            rows.append(row)
            print(row, flush=True)
    strong1 = next(r for r in rows if r["mode"] == "strong" and r["ranks"] == 1)
    t_chain = strong1["s_per_trajectory"] / strong1["chains"]
    model = []
    for R in (2, 8, 64, 512, 4096):
        for per_rank in (1, args.chains):
            t_p = t_chain * per_rank
            t_c = args.latency * math.log2(R) + R * 24 * per_rank / args.bandwidth
            model.append({"ranks": R, "chains_per_rank": per_rank, "t_compute_s": t_p,
                          "t_collectives_s": t_c, "efficiency": t_p / (t_p + t_c)})
    for m in model:
        print(m)
    path = harness.record("parallel", rows, "numpy", {
        "lattice": [args.L, args.L], "trajectories": args.traj,
        "model": {"latency_s": args.latency, "bandwidth_B_per_s": args.bandwidth,
                  "s_per_chain_trajectory": t_chain, "rows": model}})
    print(path)


if __name__ == "__main__":
    main()
