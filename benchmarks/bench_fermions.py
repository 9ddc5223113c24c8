"""Fermion operators and solvers on the array-API path: throughput against the measured memory
bandwidth, CG time to 1e-10, and mixed versus double precision.

    LATTICE_ML_KERNELS=off python benchmarks/bench_fermions.py [--backend numpy|cupy]
        [--shape 8 8 8 8] [--N 3] [--mass 0.2] [--spread 0.5] [--tol 1e-10]

Measured in one run on the same links (``random_near_identity`` with the given spread, fixed
seed; complex128 unless stated):

* operator application (array-API reference path: the dispatch mode is forced to ``off``):
  Wilson ``D psi`` (flops counted as 1320 per site for 4D SU(3)), the even/odd normal operator
  ``Dhat^dag Dhat`` and staggered ``D psi`` (570 flops per site: 8 SU(3) mat-vecs of 66 flops and
  7 colour-vector additions). "Effective" bytes per site are the standard minimal traffic:
  Wilson 8 links (8 x 144 B) + 8 neighbour spinors (8 x 192 B) + 1 output spinor (192 B) =
  2880 B; staggered 8 x 144 + 8 x 48 + 48 = 1584 B. GB/s = bytes / time; the fraction is of
  the triad (CPU) or copy (GPU) bandwidth measured in the same run (``harness``);
* CG on the even/odd normal operator ``Dhat^dag Dhat`` (Wilson) to relative residual ``tol``
  from a Gaussian source: time, iterations and the true residual of the returned solution;
* mixed precision ``cg_mixed`` (complex64 inner CG on complex64 links, complex128 defect
  correction) against double ``cg``: time, outer cycles, total inner iterations, and both true
  residuals (both must reach ``tol``);
* if Numba kernels are registered for the Dirac operators, the two solver rows again with the
  kernels on (``auto``), marked ``kernels = on``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

from lattice_ml.backend import RandomStreams, namespace_by_name, to_numpy  # noqa: E402
from lattice_ml.fermions import StaggeredDirac, WilsonDirac, cg, cg_mixed  # noqa: E402
from lattice_ml.groups import random_near_identity  # noqa: E402

WILSON_FLOPS = 1320
STAGGERED_FLOPS = 570
WILSON_BYTES = 8 * 144 + 8 * 192 + 192
STAGGERED_BYTES = 8 * 144 + 8 * 48 + 48


def _mode(mode: str):
    try:
        from lattice_ml.dispatch import kernel_mode
    except ImportError:  # pragma: no cover - older trees
        return contextlib.nullcontext()
    return kernel_mode(mode)


def _kernels_used(fn) -> list[str]:
    """Names of the kernels that ``fn()`` dispatched to (empty: reference path only)."""
    try:
        from lattice_ml.dispatch import trace
    except ImportError:  # pragma: no cover
        fn()
        return []
    with trace() as log:
        fn()
    return sorted({impl for _op, impl in log if impl != "reference"})


def _true_residual(A, x, b) -> float:
    r = to_numpy(b - A(x))
    return float(np.linalg.norm(r) / np.linalg.norm(to_numpy(b)))


def operator_rows(xp, U, mass, volume, bandwidth):
    rows = []
    rng = RandomStreams(1, 1, xp)
    W = WilsonDirac(U, mass, check=False)
    S = StaggeredDirac(U, mass, check=False)
    psi = rng.complex_normal((*W.sites, W.n_spin, W.N))
    chi = rng.complex_normal((*S.sites, 1, S.N))
    psi_e = W.even(psi)
    cases = [("wilson D", lambda: W.apply(psi), WILSON_FLOPS, WILSON_BYTES, 1.0),
             ("wilson eo normal Dhat^dag Dhat", lambda: W.normal_eo(psi_e), WILSON_FLOPS,
              WILSON_BYTES, 2.0),   # 4 half-lattice hops = 2 full-lattice hop equivalents
             ("staggered D", lambda: S.apply(chi), STAGGERED_FLOPS, STAGGERED_BYTES, 1.0)]
    for name, fn, flops, nbytes, hops in cases:
        t = harness.best_time(fn, xp=xp, repeat=3, min_time=0.3)
        gbs = hops * nbytes * volume / t / 1e9
        rows.append({"operator": name, "time_ms": 1e3 * t,
                     "gflops": hops * flops * volume / t / 1e9, "GB_s": gbs,
                     "fraction_of_bandwidth": gbs * 1e9 / bandwidth})
    return rows


def solver_rows(xp, U, mass, tol, kernels: str):
    rng = RandomStreams(2, 1, xp)
    W = WilsonDirac(U, mass, check=False)
    W32 = WilsonDirac(xp.astype(U, xp.complex64), mass, check=False)
    b = W.even(rng.complex_normal((*W.sites, W.n_spin, W.N)))
    W.normal_eo(b)                                   # warm-up (kernel compilation, caches)
    W32.normal_eo(xp.astype(b, xp.complex64))
    rows = []
    t0 = time.perf_counter()
    x, info = cg(W.normal_eo, b, tol=tol, maxiter=20000)
    t_double = time.perf_counter() - t0
    rows.append({"solver": "cg (complex128)", "kernels": kernels, "time_s": t_double,
                 "iterations": int(info.iterations[0]), "outer": "",
                 "true_residual": _true_residual(W.normal_eo, x, b)})
    t0 = time.perf_counter()
    x, minfo = cg_mixed(W.normal_eo, W32.normal_eo, b, tol=tol, inner_tol=1e-5)
    t_mixed = time.perf_counter() - t0
    rows.append({"solver": "cg_mixed (complex64 inner)", "kernels": kernels, "time_s": t_mixed,
                 "iterations": int(minfo.iterations[0]), "outer": int(np.max(minfo.outer_iterations)),
                 "true_residual": _true_residual(W.normal_eo, x, b),
                 "speedup_vs_double": t_double / t_mixed})
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    ap.add_argument("--shape", type=int, nargs="+", default=[8, 8, 8, 8])
    ap.add_argument("--N", type=int, default=3)
    ap.add_argument("--mass", type=float, default=0.2)
    ap.add_argument("--spread", type=float, default=0.5)
    ap.add_argument("--tol", type=float, default=1e-10)
    args = ap.parse_args(argv)

    xp = namespace_by_name(args.backend)
    D, N = len(args.shape), args.N
    volume = int(np.prod(args.shape))
    U = random_near_identity(RandomStreams(0, 1, xp), (D, *args.shape), N, args.spread)
    bw_name, bandwidth = harness.memory_bandwidth(args.backend)
    print(f"# SU({N}) on {args.shape}, {args.backend}; {bw_name} = {bandwidth / 1e9:.2f} GB/s")

    with _mode("off"):
        ops = operator_rows(xp, U, args.mass, volume, bandwidth)
        solvers = solver_rows(xp, U, args.mass, args.tol, "off")
    harness.print_table(ops, ["operator", "time_ms", "gflops", "GB_s", "fraction_of_bandwidth"])

    W = WilsonDirac(U, args.mass, check=False)
    probe = W.even(RandomStreams(3, 1, xp).complex_normal((*W.sites, W.n_spin, W.N)))
    with _mode("auto"):
        used = _kernels_used(lambda: W.normal_eo(probe))
        if used:
            solvers += solver_rows(xp, U, args.mass, args.tol, "on: " + ",".join(used))
    for r in solvers:
        assert r["true_residual"] <= args.tol * (1 + 1e-6), r
    harness.print_table(solvers, ["solver", "kernels", "time_s", "iterations", "outer",
                                  "true_residual", "speedup_vs_double"])
    print("# written", harness.record(f"fermions-su{N}", ops + solvers, args.backend, extra={
        "parameters": {"shape": args.shape, "N": N, "mass": args.mass, "spread": args.spread,
                       "tol": args.tol, "dtype": "complex128"},
        "bandwidth": {"kind": bw_name, "bytes_per_s": bandwidth},
        "kernels_available": used,
        "load_average_1_5_15min": list(os.getloadavg())}))


if __name__ == "__main__":
    main()
