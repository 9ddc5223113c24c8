"""Host-device traffic of one HMC trajectory: what a GPU run would move between host and device.

    python benchmarks/bench_device_residency.py [--trajectories 3]

Counts, per trajectory and exactly, the values read back to the host (each Python scalar taken
from a device array is a synchronisation on a GPU) and the host data copied to the device, with
:func:`lattice_ml.backend.count_host_transfers` on array-api-strict's ``device1``, which behaves
like a GPU device here (it refuses conversion to NumPy and mixing with host arrays) and needs
no GPU. The counts are those of a CuPy run of the same code: both go through the same
array-API calls. Rows: three samplers (φ⁴ HMC 32², SU(3) Wilson-gauge HMC 4⁴, 2D U(1) with two
Wilson flavours by pseudofermion HMC on 16², CG solves), each with the host random streams
(:class:`~lattice_ml.backend.RandomStreams`: drawn on the host, copied over) and the counter
streams computed on the device (:class:`~lattice_ml.backend.CounterRandomStreams`), and for the
fermion run the solver's host reads at every iteration (``check_every = 1``) against the
default on a device (one read per 10 iterations).

Solver rows (``--solvers``, on by default): one solve of a 2D U(1) Wilson system (16², batch
2, masses 0.05 and 0.3, tol 1e-10) with ``cg`` (on ``D^dag D``), ``cgne``, ``bicgstab`` and
``fgmres`` on ``device1``, each with ``check_every = 1`` and with the device default: values
read back and host data written per solve, and reads per iteration.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

from lattice_ml.backend import (CounterRandomStreams, RandomStreams,  # noqa: E402
                                count_host_transfers, namespace_by_name)
from lattice_ml.fermions import WilsonPseudofermionAction  # noqa: E402
from lattice_ml.fermions.solvers import _common as solver_common  # noqa: E402
from lattice_ml.gauge import GaugeAction  # noqa: E402
from lattice_ml.groups import haar_random, identity_like  # noqa: E402
from lattice_ml.lattice import Lattice  # noqa: E402
from lattice_ml.samplers import (HMC, EuclideanSpace, Level, LieGroupSpace,  # noqa: E402
                                 PseudofermionHMC)
from lattice_ml.scalar import Phi4Action  # noqa: E402


def _setups(rng):
    phi4 = Phi4Action(Lattice((32, 32)), "standard", lam=1.0, m2=-1.0)
    yield ("phi4_hmc_32x32", HMC([Level([phi4], 8, "omelyan")], EuclideanSpace(), tau=1.0,
                                 tau_jitter=0.2), 0.5 * rng.normal((32, 32)))
    yield ("su3_hmc_4^4", HMC([Level([GaugeAction(6.0, 3)], 8, "omelyan")], LieGroupSpace(3),
                              tau=1.0, tau_jitter=0.2),
           identity_like(haar_random(rng, (4, 4, 4, 4, 4), 3)))
    ferm = WilsonPseudofermionAction(0.2, 1, tol=1e-10)
    yield ("u1_wilson_nf2_16x16",
           PseudofermionHMC([Level([ferm], 6, "omelyan"), Level([GaugeAction(2.0, 1)], 2,
                                                                "omelyan")],
                            LieGroupSpace(1), tau=1.0, tau_jitter=0.2),
           haar_random(rng, (2, 16, 16), 1))


def _run(streams, n_traj, check_every=None):
    import array_api_strict as strict
    device = strict.Device("device1")
    rows = []
    for name, sampler, field in _setups(streams(1, 2, strict, device=device)):
        if check_every is not None and "wilson" not in name:
            continue
        rng = streams(2, 2, strict, device=device)
        saved = solver_common.DEVICE_CHECK_EVERY
        if check_every is not None:
            solver_common.DEVICE_CHECK_EVERY = check_every
        try:
            with count_host_transfers() as n:
                for _ in range(n_traj):
                    field, _ = sampler.step(field, rng)
        finally:
            solver_common.DEVICE_CHECK_EVERY = saved
        rows.append({"sampler": name, "streams": streams.__name__,
                     "solver_check_every": check_every or solver_common.DEVICE_CHECK_EVERY,
                     "trajectories": n_traj,
                     **{k + "_per_trajectory": v / n_traj for k, v in n.items()}})
    return rows


def _solver_rows():
    import array_api_strict as strict
    from lattice_ml.fermions import WilsonDirac
    from lattice_ml.fermions.solvers import bicgstab, cg, cgne, fgmres
    device = strict.Device("device1")
    rng = CounterRandomStreams(5, 2, strict, device=device)
    U = haar_random(rng, (2, 16, 16), 1)
    m = strict.reshape(strict.asarray([0.05, 0.3], dtype=strict.float64, device=device),
                       (2, 1, 1, 1, 1))
    W = WilsonDirac(U, 0.0, check=False)

    def D(v):
        return W.apply(v) + m * v

    def Dd(v):
        return W.apply_dagger(v) + m * v

    b = rng.complex_normal((16, 16, 2, 1))
    solves = {"cg": lambda k: cg(lambda v: Dd(D(v)), b, tol=1e-10, check_every=k),
              "cgnr": lambda k: cgne(D, Dd, b, tol=1e-10, check_every=k),
              "bicgstab": lambda k: bicgstab(D, b, tol=1e-10, check_every=k),
              "fgmres": lambda k: fgmres(D, b, tol=1e-10, check_every=k)}
    rows = []
    for name, solve in solves.items():
        for k in (1, None):
            with count_host_transfers() as n:
                _, info = solve(k)
            its = int(np.max(info.iterations))
            rows.append({"solver": name, "check_every": k or solver_common.DEVICE_CHECK_EVERY,
                         "iterations": its, "matvecs": info.matvecs,
                         "host_syncs": info.host_syncs, **n,
                         "reads_per_iteration": n["reads"] / its})
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trajectories", type=int, default=3, help="0: no trajectory rows")
    ap.add_argument("--no-solvers", action="store_true", help="skip the solver rows")
    args = ap.parse_args(argv)
    namespace_by_name("array_api_strict")
    rows = []
    if args.trajectories:
        rows = (_run(RandomStreams, args.trajectories)
                + _run(CounterRandomStreams, args.trajectories)
                + _run(CounterRandomStreams, args.trajectories, check_every=1))
        harness.print_table(rows, ["sampler", "streams", "solver_check_every",
                                   "reads_per_trajectory", "read_bytes_per_trajectory",
                                   "writes_per_trajectory", "write_bytes_per_trajectory"])
    if not args.no_solvers:
        srows = _solver_rows()
        harness.print_table(srows, ["solver", "check_every", "iterations", "matvecs",
                                    "host_syncs", "reads", "writes", "reads_per_iteration"])
        rows += srows
    path = harness.record("device-residency", rows, "array_api_strict",
                          {"device": "array_api_strict.Device('device1') (GPU stand-in)",
                           "note": "exact counts of host<->device transfers; no timing"})
    print("# wrote", path)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
