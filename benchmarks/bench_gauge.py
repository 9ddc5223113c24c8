"""Gauge-field throughput: Wilson/Symanzik staples+force, HMC trajectories, heatbath sweeps.

    python benchmarks/bench_gauge.py [--backend numpy|cupy] [--N 3] [--shape 8 8 8 8]
                                     [--batches 1 4] [--dtype complex128]

Figures per batch size, for the array-API path:

* force (``GaugeAction.force``): link-updates per second, and the effective bandwidth of the
  minimal traffic (read the D links of a site, write D algebra matrices: 2 D N^2 x itemsize
  bytes per site) as a fraction of the bandwidth measured in the same run (harness);
  GFLOP/s counted as 2 (D-1) staples x 2 matrix products + one product per link for the
  Wilson action (an SU(3) product counted as 198 flops, the usual convention);
* HMC: trajectories per second (Omelyan, ``--n-steps`` steps) and link-updates per second;
* heatbath: sweeps per second (one heatbath + one over-relaxation sweep), where implemented;
* the ratio Symanzik / Wilson force cost, measured in the same run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

from lattice_ml.backend import RandomStreams, namespace_by_name  # noqa: E402
from lattice_ml.gauge import GaugeAction  # noqa: E402
from lattice_ml.groups import random_near_identity  # noqa: E402
from lattice_ml.samplers import HMC, Level, LieGroupSpace  # noqa: E402


def matmul_flops(N: int) -> int:
    return 198 if N == 3 else N * N * (6 * N + 2 * (N - 1))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    ap.add_argument("--N", type=int, default=3)
    ap.add_argument("--shape", type=int, nargs="+", default=[8, 8, 8, 8])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--n-steps", type=int, default=6)
    ap.add_argument("--beta", type=float, default=6.0)
    args = ap.parse_args(argv)

    xp = namespace_by_name(args.backend)
    N, D = args.N, len(args.shape)
    wilson = GaugeAction(args.beta, N, "wilson")
    symanzik = GaugeAction(args.beta, N, "symanzik")
    bw_name, bw = harness.memory_bandwidth(args.backend)
    itemsize = 16
    volume = 1
    for L in args.shape:
        volume *= L
    flops_per_link = (2 * (D - 1) * 2 + 1) * matmul_flops(N)
    try:
        from lattice_ml.samplers.heatbath import Heatbath
    except ImportError:
        Heatbath = None
    rows = []
    for batch in args.batches:
        rng = RandomStreams(0, batch, xp)
        U = random_near_identity(rng, (D, *args.shape), N, 0.5)
        links = batch * D * volume
        t_w = harness.best_time(lambda: wilson.force(U), xp=xp, repeat=3)
        t_s = harness.best_time(lambda: symanzik.force(U), xp=xp, repeat=3)
        hmc = HMC([Level([wilson], args.n_steps, "omelyan")], LieGroupSpace(N), tau=1.0)
        state = {"U": U}

        def trajectory():
            state["U"], _ = hmc.step(state["U"], rng)

        t_traj = harness.best_time(trajectory, xp=xp, repeat=2, min_time=0.5)
        row = {
            "batch": batch,
            "wilson_force_s": t_w,
            "force_link_updates_per_s": links / t_w,
            "force_fraction_of_bandwidth": 2 * D * N * N * itemsize * batch * volume / t_w / bw,
            "force_GFLOPs": flops_per_link * links / t_w / 1e9,
            "symanzik_over_wilson_force": t_s / t_w,
            "trajectory_s": t_traj,
            "hmc_link_updates_per_s": links / t_traj,
        }
        if Heatbath is not None:
            hb = Heatbath(args.beta, N, n_or=1)
            hstate = {"U": U}

            def sweep():
                hstate["U"], _ = hb.step(hstate["U"], rng)

            t_sweep = harness.best_time(sweep, xp=xp, repeat=2, min_time=0.5)
            row["heatbath_or_sweep_s"] = t_sweep
            row["heatbath_link_updates_per_s"] = links / t_sweep
        rows.append(row)
    print(f"# {bw_name} = {bw / 1e9:.1f} GB/s; SU({N}) on {args.shape}, complex128, {args.backend}")
    harness.print_table(rows, ["batch", "force_link_updates_per_s", "force_fraction_of_bandwidth",
                               "force_GFLOPs", "symanzik_over_wilson_force", "trajectory_s",
                               "heatbath_or_sweep_s"])
    path = harness.record(f"gauge-su{N}", rows, args.backend, extra={
        "bandwidth": {"kind": bw_name, "bytes_per_s": bw},
        "parameters": {"shape": args.shape, "N": N, "beta": args.beta, "n_steps": args.n_steps,
                       "integrator": "omelyan", "flops_per_link": flops_per_link},
    })
    print(f"# written {path}")


if __name__ == "__main__":
    main()
