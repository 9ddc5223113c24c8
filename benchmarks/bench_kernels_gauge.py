"""Gauge kernels (4D SU(3)): staple sums, gauge force and stout smearing, Numba kernels against the
array-API path, as fractions of the memory bandwidth and of an SU(3)-product roof measured in
the same run; whole pure-gauge HMC trajectories with and without kernels.

    python benchmarks/bench_kernels_gauge.py [--backend numpy|cupy] [--sizes 8 12 16]
                                             [--hmc-size 8] [--no-reference-above 16]

Per lattice size L^4 (batch 1, complex128), for the Wilson (plaquette) and the Iwasaki
(plaquette + rectangle) action:

* ``staples`` (``staple_field``, every direction) and ``force`` (``GaugeAction.force``): kernel
  and array-API times, the speed-up, GFLOP/s and GB/s with two byte models:

  - *compulsory*: every link read once and every output written once,
    ``2 x 4 x 9 x 16`` bytes per site (complex128);
  - *link reads*: every 3x3 link matrix the kernel loads counted as a memory access (no cache
    reuse), plus the write: Wilson 18 loads per link (+1 for the force), Iwasaki 76 (+1).

  Flops count the kernel's 3x3 complex products at 198 real flops each (27 complex multiplies
  at 6 flops, 18 complex additions at 2): per link 12 (Wilson staples), 61 (Iwasaki staples),
  one more for the force; additions of staples and the projection are not counted.
  Bandwidth fractions are of the triad (CPU) or device copy (GPU) bandwidth of
  :mod:`harness`; ``roof_fraction`` is the fraction of the SU(3)-product rate measured in a
  register-only loop with the same helpers and threads (what limits a compute-bound kernel).
* stout (plaquette loops, rho = 0.1): forward (keeping the fields) and backward (with the kept
  fields, and recomputing them) per layer, the ratio backward / forward, and at the sizes where
  the reference runs, its times.
* HMC: one trajectory (Omelyan, 5 steps, tau = 1, Wilson beta = 6) at ``--hmc-size``^4 with
  kernels and with ``LATTICE_ML_KERNELS=off``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
import numpy as np  # noqa: E402

from lattice_ml.backend import RandomStreams, namespace_by_name  # noqa: E402
from lattice_ml.dispatch import kernel_mode, selected  # noqa: E402
from lattice_ml.gauge import GaugeAction  # noqa: E402
from lattice_ml.gauge.action import staple_field  # noqa: E402
from lattice_ml.groups import random_near_identity  # noqa: E402
from lattice_ml.samplers import HMC, Level, LieGroupSpace  # noqa: E402
from lattice_ml.smearing.stout import (stout_plaquette_layer,  # noqa: E402
                                       stout_plaquette_layer_backward)

SU3_PRODUCT_FLOPS = 198
ACTIONS = {"wilson": (1.0, None), "iwasaki": (1.0 - 8 * -0.331, -0.331)}
PRODUCTS_PER_LINK = {"wilson": 12, "iwasaki": 61}
LOADS_PER_LINK = {"wilson": 18, "iwasaki": 76}


def su3_product_roof(n_sites: int = 1 << 16, chain: int = 32) -> float:
    """Flops per second of SU(3) products kept in registers (4 independent product chains per
    site, ``prange`` over sites), with the kernels' own helpers and threads."""
    from numba import njit, prange

    from lattice_ml.kernels._su3 import load, mul, store

    @njit(parallel=True)
    def chains(U, O, n):
        for s in prange(n):
            a = load(U, 0, 0, s)
            b = load(U, 0, 1, s)
            c = load(U, 0, 2, s)
            d = load(U, 0, 3, s)
            for _ in range(n_chain):
                a = mul(a, b)
                c = mul(c, d)
                b = mul(b, c)
                d = mul(d, a)
            store(O, 0, 0, s, a)
            store(O, 0, 1, s, b)
            store(O, 0, 2, s, c)
            store(O, 0, 3, s, d)

    n_chain = chain
    U = (np.random.default_rng(0).standard_normal((1, 4, n_sites, 9)) / 3.0).astype(complex)
    O = np.empty_like(U)
    t = harness.best_time(lambda: chains(U, O, n_sites), repeat=3)
    return 4 * chain * n_sites * SU3_PRODUCT_FLOPS / t


def time_reference(fn, xp, budget: float) -> float:
    """Best of as many calls as fit in ``budget`` seconds (at least one; no warm-up needed)."""
    best, spent = float("inf"), 0.0
    while spent < budget or best == float("inf"):
        t0 = time.perf_counter()
        fn()
        harness.synchronize(xp)
        dt = time.perf_counter() - t0
        best, spent = min(best, dt), spent + dt
        if spent + dt > budget:
            break
    return best


def gauge_rows(xp, L, bw, roof, reference, budget):
    rng = RandomStreams(1, 1, xp)
    U = random_near_identity(rng, (4, L, L, L, L), 3, 0.5)
    V = L ** 4
    links = 4 * V
    rows = []
    for kind, (cp, cr) in ACTIONS.items():
        act = GaugeAction(6.0, 3, kind)
        for op, fn in (("staples", lambda: staple_field(U, cp, cr)),
                       ("force", lambda: act.force(U))):
            op_name = "gauge_staples" if op == "staples" else "gauge_force"
            impl = selected(op_name, U, cp, cr) if op == "staples" else \
                selected(op_name, U, act.beta, cp, cr)
            t = harness.best_time(fn, xp=xp, repeat=3, min_time=0.3)
            products = PRODUCTS_PER_LINK[kind] + (op == "force")
            loads = LOADS_PER_LINK[kind] + (op == "force")
            flops = links * products * SU3_PRODUCT_FLOPS
            compulsory = 2 * links * 9 * 16
            naive = (loads + 1) * links * 9 * 16
            row = {"L": L, "action": kind, "op": op, "kernel": impl, "kernel_ms": 1e3 * t,
                   "GFLOP/s": flops / t / 1e9,
                   "roof_fraction": flops / t / roof,
                   "GB/s_compulsory": compulsory / t / 1e9,
                   "triad_fraction_compulsory": compulsory / t / bw,
                   "GB/s_link_reads": naive / t / 1e9,
                   "triad_fraction_link_reads": naive / t / bw,
                   "flops_per_compulsory_byte": flops / compulsory}
            if reference:
                with kernel_mode("off"):
                    tr = time_reference(fn, xp, budget)
                row["reference_ms"] = 1e3 * tr
                row["speedup"] = tr / t
            rows.append(row)
    return rows


def stout_row(xp, L, reference, budget):
    rng = RandomStreams(2, 1, xp)
    U = random_near_identity(rng, (4, L, L, L, L), 3, 0.5)
    rho = xp.full((1, 1, 1, 1, 1, 1), 0.1)
    F = GaugeAction(6.0, 3, "wilson").force(U)
    fields = stout_plaquette_layer(U, rho, True)[1:]
    t_f = harness.best_time(lambda: stout_plaquette_layer(U, rho, True), xp=xp, repeat=3)
    t_f0 = harness.best_time(lambda: stout_plaquette_layer(U, rho, False), xp=xp, repeat=3)
    t_b = harness.best_time(lambda: stout_plaquette_layer_backward(U, rho, F, fields), xp=xp,
                            repeat=3)
    t_b0 = harness.best_time(lambda: stout_plaquette_layer_backward(U, rho, F, None), xp=xp,
                             repeat=3)
    row = {"L": L, "kernel": selected("stout_plaquette_backward", U, rho, F, fields),
           "forward_keep_ms": 1e3 * t_f, "forward_ms": 1e3 * t_f0,
           "backward_kept_ms": 1e3 * t_b, "backward_recompute_ms": 1e3 * t_b0,
           "ratio_kept": t_b / t_f, "ratio_recompute": t_b0 / t_f0}
    if reference:
        with kernel_mode("off"):
            fields_ref = stout_plaquette_layer(U, rho, True)[1:]
            tr_f = time_reference(lambda: stout_plaquette_layer(U, rho, True), xp, budget)
            tr_b = time_reference(lambda: stout_plaquette_layer_backward(U, rho, F, fields_ref),
                                  xp, budget)
        row.update({"reference_forward_ms": 1e3 * tr_f, "reference_backward_ms": 1e3 * tr_b,
                    "reference_ratio": tr_b / tr_f, "speedup_forward": tr_f / t_f,
                    "speedup_backward": tr_b / t_b})
    return row


def hmc_row(xp, L, n_steps=5):
    rng = RandomStreams(3, 1, xp)
    U0 = random_near_identity(rng, (4, L, L, L, L), 3, 0.3)
    hmc = HMC([Level([GaugeAction(6.0, 3, "wilson")], n_steps, "omelyan")], LieGroupSpace(3),
              tau=1.0)
    row = {"L": L, "integrator": f"omelyan x {n_steps}"}
    for mode in ("auto", "off"):
        with kernel_mode(mode):
            hmc.step(U0, rng)                       # warm-up (compilation)
            t = min(_timed(lambda: hmc.step(U0, rng), xp) for _ in range(2))
        row[f"trajectory_s_{'kernels' if mode == 'auto' else 'reference'}"] = t
    row["speedup"] = row["trajectory_s_reference"] / row["trajectory_s_kernels"]
    return row


def _timed(fn, xp):
    t0 = time.perf_counter()
    fn()
    harness.synchronize(xp)
    return time.perf_counter() - t0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 12, 16])
    ap.add_argument("--hmc-size", type=int, default=8)
    ap.add_argument("--reference-budget", type=float, default=4.0,
                    help="seconds per reference timing (best of the calls that fit)")
    ap.add_argument("--stout-reference-up-to", type=int, default=12)
    args = ap.parse_args(argv)
    xp = namespace_by_name(args.backend)

    bw_name, bw = harness.memory_bandwidth(args.backend)
    roof = su3_product_roof() if args.backend == "numpy" else float("nan")
    print(f"# {bw_name}: {bw / 1e9:.2f} GB/s; SU(3)-product roof {roof / 1e9:.2f} GFLOP/s")
    gauge, stout = [], []
    for L in args.sizes:
        gauge += gauge_rows(xp, L, bw, roof, True, args.reference_budget)
        stout.append(stout_row(xp, L, L <= args.stout_reference_up_to, args.reference_budget))
    hmc = [hmc_row(xp, args.hmc_size)]
    harness.print_table(gauge, ["L", "action", "op", "kernel_ms", "reference_ms", "speedup",
                                "GFLOP/s", "roof_fraction", "GB/s_compulsory",
                                "triad_fraction_compulsory", "GB/s_link_reads",
                                "triad_fraction_link_reads"])
    harness.print_table(stout, ["L", "forward_keep_ms", "backward_kept_ms", "ratio_kept",
                                "forward_ms", "backward_recompute_ms", "ratio_recompute",
                                "speedup_forward", "speedup_backward", "reference_ratio"])
    harness.print_table(hmc, ["L", "integrator", "trajectory_s_kernels",
                              "trajectory_s_reference", "speedup"])
    path = harness.record("kernels-gauge-su3", gauge + stout + hmc, args.backend, extra={
        "bandwidth": {"name": bw_name, "bytes_per_s": bw},
        "su3_product_roof_flops_per_s": roof,
        "byte_models": {"compulsory": "2 x 4 x 9 x 16 B per site (read links, write output)",
                        "link_reads": "(loads per link + 1 write) x 144 B per link; loads: "
                                      "wilson 18, iwasaki 76, +1 for the force"},
        "flop_model": "198 flops per 3x3 complex product; products per link: wilson 12, "
                      "iwasaki 61, +1 for the force",
        "load_average_1_5_15_min": list(os.getloadavg()),
        "parameters": vars(args)})
    print("# written", path)


if __name__ == "__main__":
    main()
