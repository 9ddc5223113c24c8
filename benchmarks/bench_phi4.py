"""φ⁴ force and HMC throughput versus batch size, and the force's fraction of memory bandwidth.

    python benchmarks/bench_phi4.py [--backend numpy|cupy] [--shape 64 64] [--batches 1 4 16 64]

Figures per batch size:

* force: site-updates per second (batch V / time of one ``Phi4Action.force``) and the effective
  bandwidth of the minimal traffic (read phi, write F: 2 x itemsize bytes per site) as a fraction
  of the bandwidth measured in the same run (see ``harness.memory_bandwidth``);
* HMC: site-updates per second of whole trajectories (batch V / time per trajectory, Omelyan,
  ``--n-steps`` steps, accept/reject and random numbers included);
* the speed-up of batching: throughput relative to batch 1, measured in the same run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

from lattice_ml.backend import RandomStreams, namespace_by_name  # noqa: E402
from lattice_ml.lattice import Lattice  # noqa: E402
from lattice_ml.samplers import HMC, EuclideanSpace, Level  # noqa: E402
from lattice_ml.scalar import Phi4Action  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    ap.add_argument("--shape", type=int, nargs="+", default=[64, 64])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    ap.add_argument("--n-steps", type=int, default=8)
    args = ap.parse_args(argv)

    xp = namespace_by_name(args.backend)
    lat = Lattice(args.shape)
    action = Phi4Action(lat, "hopping", beta=0.6, lam=1.0)
    hmc = HMC([Level([action], args.n_steps, "omelyan")], EuclideanSpace(), tau=1.0)
    bw_name, bw = harness.memory_bandwidth(args.backend)
    itemsize = 4 if args.dtype == "float32" else 8
    rows = []
    for batch in args.batches:
        rng = RandomStreams(0, batch, xp, dtype=args.dtype)
        phi = rng.normal(lat.shape)
        t_force = harness.best_time(lambda: action.force(phi), xp=xp)
        state = {"phi": phi}

        def trajectory():
            state["phi"], _ = hmc.step(state["phi"], rng)

        t_traj = harness.best_time(trajectory, xp=xp, repeat=3, min_time=0.3)
        sites = batch * lat.volume
        force_bw = 2 * itemsize * sites / t_force
        rows.append({
            "batch": batch,
            "force_s": t_force,
            "force_site_updates_per_s": sites / t_force,
            "force_eff_bandwidth_GBs": force_bw / 1e9,
            "force_fraction_of_bandwidth": force_bw / bw,
            "trajectory_s": t_traj,
            "hmc_site_updates_per_s": sites / t_traj,
        })
    base_f = rows[0]["force_site_updates_per_s"]
    base_h = rows[0]["hmc_site_updates_per_s"]
    for r in rows:
        r["force_speedup_vs_batch1"] = r["force_site_updates_per_s"] / base_f
        r["hmc_speedup_vs_batch1"] = r["hmc_site_updates_per_s"] / base_h
    print(f"# {bw_name} = {bw / 1e9:.1f} GB/s; lattice {args.shape}, {args.dtype}, {args.backend}")
    harness.print_table(rows, ["batch", "force_site_updates_per_s", "force_fraction_of_bandwidth",
                               "hmc_site_updates_per_s", "hmc_speedup_vs_batch1"])
    path = harness.record("phi4", rows, args.backend, extra={
        "bandwidth": {"kind": bw_name, "bytes_per_s": bw},
        "parameters": {"shape": args.shape, "dtype": args.dtype, "n_steps": args.n_steps,
                       "integrator": "omelyan", "action": repr(action)},
    })
    print(f"# written {path}")


if __name__ == "__main__":
    main()
