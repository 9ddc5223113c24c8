"""Stout smearing cost: forward and backward per layer, their ratio, and the memory kept.

    python benchmarks/bench_stout.py [--backend numpy|cupy] [--N 3] [--shape 8 8 8 8]
                                     [--layers 1 3] [--loops plaquette rectangle]

For each loop set and number of layers, measured in one run on the same links:

* forward time per layer (``StoutSmearing.forward``), backward time per layer
  (``StoutSmearing.backward`` given a force at the output), and the ratio backward/forward for
  both ``keep="all"`` (store staples and exponentials) and ``keep="links"`` (recompute);
* the memory the backward keeps, in link-field units and bytes (``memory_fields``).
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
from lattice_ml.smearing import StoutSmearing  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    ap.add_argument("--N", type=int, default=3)
    ap.add_argument("--shape", type=int, nargs="+", default=[8, 8, 8, 8])
    ap.add_argument("--layers", type=int, nargs="+", default=[1, 3])
    ap.add_argument("--batch", type=int, default=1)
    args = ap.parse_args(argv)

    xp = namespace_by_name(args.backend)
    D, N = len(args.shape), args.N
    rng = RandomStreams(0, args.batch, xp)
    U = random_near_identity(rng, (D, *args.shape), N, 0.5)
    force = GaugeAction(6.0, N).force(U)
    link_bytes = args.batch * D * N * N * 16
    for L in args.shape:
        link_bytes *= L
    rows = []
    for loops in (["plaquette"], ["plaquette", "rectangle"]):
        for n_layers in args.layers:
            row = {"loops": "+".join(loops), "layers": n_layers}
            for keep in ("all", "links"):
                net = StoutSmearing(n_layers, loops, D=D, rho=0.05, keep=keep)
                t_f = harness.best_time(lambda: net.forward(U), xp=xp, repeat=3)
                net.forward(U)
                t_b = harness.best_time(lambda: net.backward(force), xp=xp, repeat=3)
                row[f"forward_per_layer_s_{keep}"] = t_f / n_layers
                row[f"backward_per_layer_s_{keep}"] = t_b / n_layers
                row[f"ratio_{keep}"] = t_b / t_f
                row[f"memory_fields_{keep}"] = net.memory_fields()
                row[f"memory_MB_{keep}"] = net.memory_fields() * link_bytes / 1e6
            rows.append(row)
    print(f"# SU({N}) on {args.shape}, batch {args.batch}, complex128, {args.backend}")
    harness.print_table(rows, ["loops", "layers", "forward_per_layer_s_all", "ratio_all",
                               "ratio_links", "memory_fields_all", "memory_MB_all",
                               "memory_fields_links"])
    print("# written", harness.record(f"stout-su{N}", rows, args.backend, extra={
        "parameters": {"shape": args.shape, "N": N, "batch": args.batch}}))


if __name__ == "__main__":
    main()
