"""Slow physics validation: 4D plaquettes against published values (not a timed test).

    python benchmarks/validate_4d.py [--shape 8 8 8 8] [--sweeps 400] [--chains 4]

SU(3), Wilson action, beta = 6.0, heatbath + over-relaxation, compared with
<P> = 0.593678(24) on 16^4 (Boyd, Engels, Karsch, Laermann, Legeland, Lütgemeier, Petersson,
Nucl. Phys. B469 (1996) 419, hep-lat/9602007). SU(2) at beta = 2.3 is run with heatbath and with
HMC and the two independent algorithms are compared with each other. Writes a JSON record to
benchmarks/results/ (device, versions, command) and prints a table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

from lattice_ml.backend import RandomStreams, namespace_by_name, to_numpy  # noqa: E402
from lattice_ml.gauge import GaugeAction  # noqa: E402
from lattice_ml.gauge.observables import average_plaquette  # noqa: E402
from lattice_ml.groups import haar_random, identity_like  # noqa: E402
from lattice_ml.samplers import HMC, Level, LieGroupSpace  # noqa: E402
from lattice_ml.samplers.heatbath import Heatbath  # noqa: E402
from lattice_ml.stats import gamma_method  # noqa: E402

REFERENCES = {("su3", 6.0): (0.593678, 0.000024, "16^4, Boyd et al., NPB 469 (1996) 419")}


def run(sampler, N, shape, chains, n_therm, n_meas, seed, xp, U=None):
    rng = RandomStreams(seed, chains, xp)
    if U is None:
        U = identity_like(haar_random(rng, (len(shape), *shape), N))
    hist = []
    t0 = time.perf_counter()
    for k in range(n_therm + n_meas):
        U, _ = sampler.step(U, rng)
        if k >= n_therm:
            hist.append(to_numpy(average_plaquette(U)))
    res = gamma_method(np.array(hist).T)
    return res, time.perf_counter() - t0, U


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs="+", default=[8, 8, 8, 8])
    ap.add_argument("--sweeps", type=int, default=300)
    ap.add_argument("--therm", type=int, default=100)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--only", choices=["su2", "su3"], default=None)
    args = ap.parse_args(argv)
    xp = namespace_by_name("numpy")
    shape = tuple(args.shape)
    rows = []
    cases = [
        ("su3", 3, 6.0, "heatbath", Heatbath(6.0, 3, n_or=2)),
        ("su2", 2, 2.3, "heatbath", Heatbath(2.3, 2, n_or=2)),
        ("su2", 2, 2.3, "hmc", HMC([Level([GaugeAction(2.3, 2)], 10, "omelyan")],
                                   LieGroupSpace(2), tau=1.0, tau_jitter=0.1)),
    ]
    # HMC thermalises slowly from a cold start: it starts from the heatbath's last configuration
    last = {}
    for name, N, beta, algo, sampler in cases:
        if args.only and name != args.only:
            continue
        start = last.get(name) if algo == "hmc" else None
        res, secs, last[name] = run(sampler, N, shape, args.chains, args.therm, args.sweeps, 11,
                                    xp, U=start)
        row = {"theory": name, "beta": beta, "algorithm": algo, "shape": list(shape),
               "plaquette": res.value, "error": res.error, "tau_int": res.tau_int,
               "seconds": secs}
        ref = REFERENCES.get((name, beta))
        if ref:
            row.update(reference=ref[0], reference_error=ref[1], reference_source=ref[2],
                       deviation_sigma=(res.value - ref[0]) / np.hypot(res.error, ref[1]))
        rows.append(row)
        print(row, flush=True)
    su2 = [r for r in rows if r["theory"] == "su2"]
    if len(su2) == 2:
        hb, hmc = su2
        z = (hb["plaquette"] - hmc["plaquette"]) / np.hypot(hb["error"], hmc["error"])
        print(f"SU(2) beta=2.3 heatbath vs HMC: {z:+.2f} sigma")
    harness.print_table(rows, ["theory", "beta", "algorithm", "plaquette", "error", "tau_int",
                               "deviation_sigma", "seconds"])
    print("# written", harness.record("validate-4d", rows, "numpy"))


if __name__ == "__main__":
    main()
