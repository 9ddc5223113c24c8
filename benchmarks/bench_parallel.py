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

Domain decomposition (``--domain``, issue 17 stage 2): the Wilson Dirac operator applied and
the SU(3) Wilson gauge force on ``--L``⁴ (one configuration) with the sites split over R ranks
(grid ``R x 1 x 1 x 1``, ``lattice_ml.parallel.Decomposition``): time per call (median of
``--calls``), the fraction of it spent in the shifts of split directions (local roll, packing,
exchange and assembly, timed around each) and in the ``sendrecv`` alone (max over ranks), the
halo bytes a rank sends per call, and, for context, the same operator on plain
NumPy arrays (reference code, and the Numba kernel) in the same run. The model puts the
measured compute time per site next to the halo traffic of a block of ``l^4`` sites split in
all four directions across nodes (8 face exchanges per split direction and call for Wilson,
``a`` latency and ``B`` bandwidth as above): ``efficiency = t_site l^4 / (t_site l^4 + n_msg a
+ bytes / B)``.

The command with sites over ranks (``--command``, ``[parallel] grid``): ``lattice-ml run`` of a
pure SU(3) HMC job on ``--L``⁴ (2 chains, ``--traj`` measured trajectories of length 0.5 in 8 Omelyan steps) as
a plain one-process run (no grid: the array-API reference by the small-run rule) and with
``grid = [R, 1, 1, 1]`` for each R of ``--ranks`` (R = 1: one process, else ``mpiexec -n R``):
the CPU seconds of all its processes per trajectory (``RUSAGE_CHILDREN``, start-up included)
and the run's own wall time per trajectory (``summary.json``), and whether the grid runs'
``history.npz`` are bit-identical to each other.

Run: ``python benchmarks/bench_parallel.py [--ranks 1 2] [--chains 8] [--L 16] [--traj 20]``;
``python benchmarks/bench_parallel.py --domain --ranks 1 2 --L 8``;
``python benchmarks/bench_parallel.py --command --ranks 1 2 --L 4 --traj 10``.
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


def domain_worker(args) -> None:
    import numpy as np

    import lattice_ml.parallel as par
    from lattice_ml.backend import CounterRandomStreams, namespace_by_name
    from lattice_ml.dispatch import kernel_mode
    from lattice_ml.fermions.wilson import WilsonDirac
    from lattice_ml.gauge.action import GaugeAction
    from lattice_ml.groups import haar_random

    comm = par.world()
    xp = namespace_by_name("numpy")
    shape = (args.L,) * 4
    dec = par.Decomposition(comm, shape, (comm.size, 1, 1, 1))
    U = haar_random(CounterRandomStreams(1, 1, xp), (4,) + shape, 3)
    psi = CounterRandomStreams(2, 1, xp).complex_normal(shape + (4, 3))
    Ud, psid = dec.scatter(U, 2), dec.scatter(psi, 1)
    stats = {"halo_s": 0.0, "halo_bytes": 0, "messages": 0, "sendrecv_s": 0.0}
    inner = par.namespace._halo_shift_axis   # the halo exchange the namespace's roll calls

    class Timed:                    # the mpi4py communicator, its sendrecv timed
        def __init__(self, c):
            self.c = c

        def sendrecv(self, *a, **kw):
            t = time.perf_counter()
            out = self.c.sendrecv(*a, **kw)
            stats["sendrecv_s"] += time.perf_counter() - t
            return out

        def __getattr__(self, name):
            return getattr(self.c, name)
    if comm.comm is not None:
        comm.comm = Timed(comm.comm)

    def timed(comm_, grid, field, mu, step, axis):
        t = time.perf_counter()
        out = inner(comm_, grid, field, mu, step, axis)
        stats["halo_s"] += time.perf_counter() - t
        if grid.dims[mu] > 1:
            stats["messages"] += 1
            stats["halo_bytes"] += field.nbytes // field.shape[axis] * abs(step)
        return out
    par.namespace._halo_shift_axis = timed
    gauge = GaugeAction(5.5, 3)
    D = WilsonDirac(Ud, 0.3, check=False)
    ops = {"wilson_apply": lambda: D.apply(psid), "gauge_force": lambda: gauge.force(Ud)}
    rows = []
    for name, fn in ops.items():
        fn()
        times, halo, sr, nbytes, msgs = [], [], [], 0, 0
        for _ in range(args.calls):
            for k in stats:
                stats[k] = 0 if k in ("halo_bytes", "messages") else 0.0
            comm.barrier()
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
            halo.append(stats["halo_s"])
            sr.append(stats["sendrecv_s"])
            nbytes, msgs = stats["halo_bytes"], stats["messages"]
        med = float(np.median(times))
        frac = float(np.median(np.array(halo) / np.array(times)))
        frac_sr = float(np.median(np.array(sr) / np.array(times)))
        allr = comm.gather((med, frac, frac_sr))
        if comm.is_root:
            rows.append({"op": name, "ranks": comm.size, "grid": list(dec.dims),
                         "s_per_call": max(m for m, _, _ in allr),
                         "shift_fraction": max(f for _, f, _ in allr),
                         "sendrecv_fraction": max(f for _, _, f in allr),
                         "halo_bytes_per_rank": nbytes, "messages_per_rank": msgs})
    if comm.is_root and comm.size == 1:
        plain = {"wilson_apply": lambda: WilsonDirac(U, 0.3, check=False).apply(psi),
                 "gauge_force": lambda: gauge.force(U)}
        for name, fn in plain.items():
            for mode in ("off", "cpu"):
                with kernel_mode(mode):
                    fn()
                    times = []
                    for _ in range(args.calls):
                        t = time.perf_counter()
                        fn()
                        times.append(time.perf_counter() - t)
                rows.append({"op": name, "ranks": 1, "grid": "plain NumPy",
                             "implementation": "reference" if mode == "off" else "kernel",
                             "s_per_call": float(np.median(times))})
    if comm.is_root:
        print(json.dumps(rows))


def domain(args) -> None:
    local = Path(sys.executable).parent / "mpiexec"
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1")
    rows = []
    for r in args.ranks:
        cmd = [str(local), "-n", str(r), sys.executable, __file__, "--worker", "--domain",
               "--L", str(args.L), "--calls", str(args.calls)]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
        rows.extend(json.loads(out.strip().splitlines()[-1]))
    for row in rows:
        print(row)
    one = {r["op"]: r for r in rows if r["ranks"] == 1 and r["grid"] != "plain NumPy"}
    V = args.L ** 4
    model = []
    for op, row in one.items():
        t_site = row["s_per_call"] / V
        # bytes per face site: Wilson 2 fermion fields (psi and U^dag psi: 192 B each) per
        # direction and sign; force: the measured bytes per exchanged site of the 2-rank run
        two = next((r for r in rows if r["op"] == op and r["ranks"] == 2), None)
        face_sites_2 = V // args.L                      # (L/2) x ... : one face of L^3 sites
        per_face_site = (two["halo_bytes_per_rank"] / max(two["messages_per_rank"], 1)
                         / face_sites_2) if two else 192.0
        msgs_per_dir = two["messages_per_rank"] if two else 8
        for l in (8, 16, 32):
            t_p = t_site * l ** 4
            n_msg = 4 * msgs_per_dir
            n_bytes = n_msg * l ** 3 * per_face_site
            t_c = n_msg * args.latency + n_bytes / args.bandwidth
            model.append({"op": op, "local_block": [l] * 4, "t_compute_s": t_p,
                          "messages": n_msg, "halo_bytes": n_bytes, "t_halo_s": t_c,
                          "efficiency": t_p / (t_p + t_c)})
    for m in model:
        print(m)
    path = harness.record("parallel-domain", rows, "numpy", {
        "lattice": [args.L] * 4, "calls": args.calls,
        "model": {"latency_s": args.latency, "bandwidth_B_per_s": args.bandwidth,
                  "rows": model}})
    print(path)


COMMAND_CONFIG = """
[lattice]
shape = [{L}, {L}, {L}, {L}]
[theory]
name = "su3"
[sampler]
n_chains = 2
n_therm = 0
n_samples = {traj}
n_steps = 8
tau = 0.5
adapt_steps = false
[run]
progress = "never"
"""


def command(args) -> None:
    import resource
    import tempfile

    import numpy as np

    exe = Path(sys.executable).with_name("lattice-ml")
    local = Path(sys.executable).parent / "mpiexec"
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1")
    env.pop("LATTICE_ML_KERNELS", None)
    rows, histories = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "su3.toml"
        cfg.write_text(COMMAND_CONFIG.format(L=args.L, traj=args.traj))
        runs = [("plain", 1, [])] + [(f"grid {r}x1x1x1", r, [f"parallel.grid=[{r}, 1, 1, 1]"])
                                     for r in args.ranks]
        for name, r, sets in runs:
            out = Path(tmp) / name.replace(" ", "_")
            cmd = [str(exe), "run", str(cfg), "--out", str(out)]
            for s_ in sets:
                cmd += ["--set", s_]
            if sets and r > 1:
                cmd = [str(local), "-n", str(r)] + cmd
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            summary = json.loads((out / "summary.json").read_text())
            if sets:
                histories[name] = dict(np.load(out / "history.npz"))
            rows.append({"run": name, "ranks": r, "kernels": summary["kernels"],
                         "cpu_s_per_trajectory_all_processes": cpu / args.traj,
                         "wall_s_per_trajectory_in_run": summary["elapsed_s"] / args.traj,
                         "parallel": summary["parallel"]})
            print(rows[-1], flush=True)
    grids = list(histories.values())
    identical = all(sorted(h) == sorted(grids[0]) and all(np.array_equal(h[k], grids[0][k])
                                                          for k in h) for h in grids[1:])
    plain = rows[0]["wall_s_per_trajectory_in_run"]
    for row in rows:
        row["wall_ratio_to_plain"] = row["wall_s_per_trajectory_in_run"] / plain
    print({"grid_histories_bit_identical": identical})
    path = harness.record("parallel-command", rows, "numpy", {
        "lattice": [args.L] * 4, "trajectories": args.traj,
        "grid_histories_bit_identical": identical})
    print(path)


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
    p.add_argument("--domain", action="store_true", help="domain decomposition (8^4 Wilson, "
                                                          "SU(3) force)")
    p.add_argument("--calls", type=int, default=5)
    p.add_argument("--command", action="store_true", help="lattice-ml run with [parallel] grid "
                                                           "(SU(3) HMC)")
    args = p.parse_args()
    if args.command:
        return command(args)
    if args.worker:
        return domain_worker(args) if args.domain else worker(args)
    if args.domain:
        return domain(args)
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
