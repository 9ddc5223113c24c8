"""Wilson and staggered dslash kernels (lattice_ml.kernels) against the array-API path and the
memory-bandwidth roofline, and a whole CG solve with and without kernels.

    python benchmarks/bench_kernels_dirac.py [--backend numpy|cupy] [--sizes 8 12 16] [--cg 8]

Per lattice L^4 and precision, for the hopping term on the full lattice (``wilson_hop``,
``staggered_hop``; batch 1; the time of one call, best of several):

* **byte model** (minimal traffic, perfect cache reuse of nothing but the site itself): per
  site, Wilson reads 8 links (18 reals each, 12 with two-row compression) and 8 neighbour
  spinors (24 reals) and writes 1 spinor (24 reals): ``(8*18 + 8*24 + 24) * r`` bytes with
  ``r`` = 4 (complex64) or 8 (complex128), i.e. 1440 / 2880 bytes (1248 compressed in float32);
  staggered: ``(8*18 + 8*6 + 6) * r`` = 792 / 1584 bytes. Links and neighbours are each counted
  once per use, as is customary (QUDA, Grid), so > 100 % of the bandwidth would mean cache reuse.
* **flop model**: 1320 flops per site for the Wilson hopping term with spin projection, 570 for
  staggered (MILC count). The kernels execute a few more (the H / H^dag sign and the time
  boundary factor as multiplications).
* GB/s and GFLOP/s from these models, the fraction of the memory bandwidth measured in the same
  run (CPU: parallel Numba triad; GPU: device-to-device copy; :mod:`harness`), and the speed-up
  over the array-API path (``kernel_mode("off")``: NumPy on the CPU, CuPy on the GPU) measured
  in the same run.
* ``core_ns_per_site`` (CPU): CPU seconds consumed by all threads per call
  (``time.process_time``) per site, i.e. the work itself whatever else runs on the machine;
  ``bytes / (core_ns_per_site / n_cores)`` is the bandwidth the kernel could draw if it had all
  cores to itself, which tells whether it is limited by memory or by its instruction stream.
* the even/odd form (``parity`` = 0: half the sites computed, the other half zeroed) is timed
  too; its byte model is half the full one plus the zeroed half spinors written.

Kernel-internal layouts (issue 19), measured against the interleaved kernel ``wilson_hop`` in
the same run (``vs_aos`` = its time / theirs), with the same byte and flop models:

* CPU: ``wilson_hop_lanes`` / ``wilson_hop_lanes_eo`` (:mod:`lattice_ml.kernels.wilson_simd`,
  several sites per SIMD vector, default lane split), on fields converted once;
  ``convert_seconds`` is one field's conversion there and back (once per solve).
* GPU: ``wilson_hop_soa`` / ``wilson_hop_soa_eo`` / ``wilson_hop_soa_12`` (float32 only, two-row
  links: 1248 bytes per site) (:mod:`lattice_ml.kernels.wilson_soa`, site index fastest).

``--threads 1 2`` repeats every row per Numba thread count (the triad too); ``--ops`` selects
rows by name, ``--ref-repeat 0`` skips the array-API timings.

CG: ``lattice_ml.fermions.cg`` on the Wilson normal operator ``D^dag D`` (m = 0.1, Haar links,
8^4 by default, batch 1, tol 1e-8) with kernels (auto) and without (off); iterations and
seconds per solve; on the CPU also the same solve in the lanes layout (``mode`` "lanes").

Operator layouts (CPU, ``--layout-sizes 12 16``): ``WilsonDirac(..., layout="lanes")`` against
the default ``layout="site"`` in the same run, both precisions: ``op_apply`` times ``apply`` (the
lanes operator converts the field to the lanes layout and back in every hop); ``op_cg`` a CG
solve of ``D^dag D`` (m = 0.1, tol 1e-8 in float64, 1e-5 in float32) with ``layout`` "site",
"lanes" (the solver-level hook: source and solution converted once per solve) and
"lanes_per_apply" (the same operator without the hook, converting per hop). ``vs_site`` = the
site row's time / this one.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# OpenMP threads that spin at barriers lose badly when the cores are shared with other
# processes (measured here: 8^4 Wilson dslash 13.9 ms spinning vs 2.95 ms passive, load ~7 on
# 2 cores); must be set before Numba's OpenMP layer starts
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

from lattice_ml.backend import RandomStreams, namespace_by_name  # noqa: E402
from lattice_ml.dispatch import kernel_mode, selected  # noqa: E402
from lattice_ml.fermions import WilsonDirac, cg  # noqa: E402
from lattice_ml.fermions.staggered import staggered_hop  # noqa: E402
from lattice_ml.fermions.wilson import compress_links, wilson_hop  # noqa: E402
from lattice_ml.groups import haar_random  # noqa: E402
from lattice_ml.kernels import wilson_simd, wilson_soa  # noqa: E402

WILSON_REALS = {"links": 8 * 18, "links12": 8 * 12, "spinors": 8 * 24, "out": 24}
STAGGERED_REALS = {"links": 8 * 18, "spinors": 8 * 6, "out": 6}
FLOPS = {"wilson": 1320, "staggered": 570}


def haar_links(L, real, xp):
    """Haar SU(3) links [1, 4, L, L, L, L, 3, 3] (drawn on the host, then moved)."""
    rng = RandomStreams(11, 1, namespace_by_name("numpy"), dtype=real)
    return xp.asarray(np.ascontiguousarray(haar_random(rng, (4, L, L, L, L), 3)))


def normal_field(L, spin, real, xp):
    rng = RandomStreams(12, 1, namespace_by_name("numpy"), dtype=real)
    return xp.asarray(np.ascontiguousarray(rng.complex_normal((L, L, L, L, spin, 3))))


def core_seconds(fn, n=3):
    """CPU seconds consumed per call by all threads of this process (``time.process_time``):
    the work itself, insensitive to other processes taking the cores (CPU only)."""
    fn()
    best = float("inf")
    for _ in range(3):
        t0 = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, (time.process_time() - t0) / n)
    return best


def measure(name, fn, xp, sites, nbytes, flops, bw, ref_time=None, repeat=5, min_time=0.2):
    t = harness.best_time(fn, xp=xp, repeat=repeat, min_time=min_time)
    row = {"op": name, "seconds": t, "GB/s": nbytes * sites / t / 1e9,
           "GFLOP/s": flops * sites / t / 1e9, "frac_bw": nbytes * sites / t / bw}
    if xp.__name__.endswith("numpy"):
        row["core_ns_per_site"] = core_seconds(fn) / sites * 1e9
    if ref_time is not None:
        row["speedup"] = ref_time / t
    return row


def _contiguous(a, backend):
    if backend == "cupy":
        import cupy
        return cupy.ascontiguousarray(a)
    return np.ascontiguousarray(a)


def dslash_rows(L, cdtype, xp, bw, backend, ref_repeat, ops=None):
    real = "float32" if cdtype == "complex64" else "float64"
    r = 4 if real == "float32" else 8
    V = L ** 4
    U = haar_links(L, real, xp)
    psi = normal_field(L, 4, real, xp)
    chi = normal_field(L, 1, real, xp)
    impl = {"wilson": selected("wilson_hop", U, psi, 1, True, None),
            "staggered": selected("staggered_hop", U, chi, True, None)}
    rows = []
    want = (lambda name: True) if not ops else (lambda name: name in ops)

    def ref(fn):
        if not ref_repeat:
            return None
        with kernel_mode("off"):
            return harness.best_time(fn, xp=xp, repeat=ref_repeat, min_time=0.0)

    w_bytes = (WILSON_REALS["links"] + WILSON_REALS["spinors"] + WILSON_REALS["out"]) * r
    # even/odd: half the sites computed (half the bytes and flops) + the other half zeroed
    eo_bytes = w_bytes / 2 + WILSON_REALS["out"] * r / 2
    c_bytes = (WILSON_REALS["links12"] + WILSON_REALS["spinors"] + WILSON_REALS["out"]) * r
    t_ref = t_ref_eo = None
    if want("wilson_hop") or want("wilson_hop_12"):
        t_ref = ref(lambda: wilson_hop(U, psi, 1, True, None))
    if want("wilson_hop"):
        rows.append(measure("wilson_hop", lambda: wilson_hop(U, psi, 1, True, None), xp, V,
                            w_bytes, FLOPS["wilson"], bw, t_ref))
        rows[-1]["reference_seconds"] = t_ref
    if want("wilson_hop_eo"):
        t_ref_eo = ref(lambda: wilson_hop(U, psi, 1, True, 0))
        rows.append(measure("wilson_hop_eo", lambda: wilson_hop(U, psi, 1, True, 0), xp, V,
                            eo_bytes, FLOPS["wilson"] / 2, bw, t_ref_eo))
        rows[-1]["reference_seconds"] = t_ref_eo
    if want("wilson_hop_12"):
        U12 = _contiguous(compress_links(U), backend)
        rows.append(measure("wilson_hop_12", lambda: wilson_hop(U12, psi, 1, True, None), xp,
                            V, c_bytes, FLOPS["wilson"], bw, t_ref))
    if want("staggered_hop"):
        s_bytes = sum(STAGGERED_REALS.values()) * r
        t_ref_s = ref(lambda: staggered_hop(U, chi, True, None))
        rows.append(measure("staggered_hop", lambda: staggered_hop(U, chi, True, None), xp, V,
                            s_bytes, FLOPS["staggered"], bw, t_ref_s))
        rows[-1]["reference_seconds"] = t_ref_s
    for row in rows:
        row.update({"L": L, "dtype": cdtype, "kernel": impl[row["op"].split("_")[0]]})
    rows += layout_rows(L, cdtype, xp, bw, backend, U, psi, rows, want,
                        {"full": w_bytes, "eo": eo_bytes, "12": c_bytes}, t_ref, t_ref_eo)
    return rows


def layout_rows(L, cdtype, xp, bw, backend, U, psi, aos_rows, want, nbytes, t_ref, t_ref_eo):
    """The Wilson hop in the kernel-internal layouts (lanes on the CPU, SoA on the GPU), on
    links and field converted once, with its time ratio to the interleaved row of the same run."""
    V = L ** 4
    sites = (L,) * 4
    aos = {row["op"]: row["seconds"] for row in aos_rows}
    rows = []
    if backend == "numpy":
        lanes = wilson_simd.default_lanes(sites, psi.dtype)
        Ul = wilson_simd.links_to_lanes(U, lanes)
        pl = wilson_simd.spinor_to_lanes(psi, lanes)
        t_conv = harness.best_time(
            lambda: wilson_simd.spinor_from_lanes(wilson_simd.spinor_to_lanes(psi, lanes)),
            repeat=3, min_time=0.0)
        cases = [("wilson_hop_lanes", "wilson_hop", None, nbytes["full"], 1, t_ref),
                 ("wilson_hop_lanes_eo", "wilson_hop_eo", 0, nbytes["eo"], 2, t_ref_eo)]
        for name, peer, parity, b, div, t_r in cases:
            if not want(name):
                continue
            rows.append(measure(name, lambda: wilson_simd.wilson_hop_lanes(Ul, pl, 1, True,
                                                                           parity),
                                xp, V, b, FLOPS["wilson"] / div, bw, t_r))
            rows[-1].update({"lanes": list(lanes), "convert_seconds": t_conv,
                             "kernel": "lattice_ml.kernels.wilson_simd"})
            if peer in aos:
                rows[-1]["vs_aos"] = aos[peer] / rows[-1]["seconds"]
    else:
        Us = wilson_soa.links_to_soa(U)
        ps = wilson_soa.spinor_to_soa(psi)
        cases = [("wilson_hop_soa", "wilson_hop", Us, None, nbytes["full"], 1, t_ref),
                 ("wilson_hop_soa_eo", "wilson_hop_eo", Us, 0, nbytes["eo"], 2, t_ref_eo)]
        if cdtype == "complex64":   # the 1248-byte row of the standard tables
            U12s = wilson_soa.links_to_soa(_contiguous(compress_links(U), backend))
            cases.append(("wilson_hop_soa_12", "wilson_hop_12", U12s, None, nbytes["12"], 1,
                          t_ref))
        for name, peer, links, parity, b, div, t_r in cases:
            if not want(name):
                continue
            # GPU calls take milliseconds: shorter rounds keep run.sh's bench step in budget
            rows.append(measure(name, lambda: wilson_soa.wilson_hop_soa(links, ps, sites, 1,
                                                                        True, parity),
                                xp, V, b, FLOPS["wilson"] / div, bw, t_r, repeat=3,
                                min_time=0.05))
            rows[-1]["kernel"] = "lattice_ml.kernels.wilson_soa"
            if peer in aos:
                rows[-1]["vs_aos"] = aos[peer] / rows[-1]["seconds"]
    for row in rows:
        row.update({"L": L, "dtype": cdtype})
    return rows


def cg_rows(L, xp, backend):
    U = haar_links(L, "float64", xp)
    b = normal_field(L, 4, "float64", xp)
    W = WilsonDirac(U, mass=0.1)
    rows = []
    for mode in ("auto", "off"):
        with kernel_mode(mode):
            W.normal(b)  # compile / warm up
            harness.synchronize(xp)
            t0 = time.perf_counter()
            x, info = cg(W.normal, b, tol=1e-8, maxiter=5000)
            harness.synchronize(xp)
            dt = time.perf_counter() - t0
        rows.append({"op": f"cg_wilson_normal_{L}^4", "mode": mode, "seconds": dt,
                     "iterations": int(np.max(np.asarray(info.iterations))),
                     "host_syncs": info.host_syncs, "check_every": "default"})
    rows[0]["speedup"] = rows[1]["seconds"] / rows[0]["seconds"]
    # the same solve reading its scalars back at every iteration (a host sync each): on a GPU
    # the ratio to the default row is what the buffered stopping rule saves
    with kernel_mode("auto"):
        harness.synchronize(xp)
        t0 = time.perf_counter()
        x, info = cg(W.normal, b, tol=1e-8, maxiter=5000, check_every=1)
        harness.synchronize(xp)
        dt = time.perf_counter() - t0
    rows.append({"op": f"cg_wilson_normal_{L}^4", "mode": "auto", "seconds": dt,
                 "iterations": int(np.max(np.asarray(info.iterations))),
                 "host_syncs": info.host_syncs, "check_every": 1,
                 "speedup": dt / rows[0]["seconds"]})
    if backend == "numpy":
        rows.append(cg_lanes_row(L, U, b, W, x, rows[0]["seconds"]))
    return rows


def cg_lanes_row(L, U, b, W, x_ref, t_aos):
    """The same CG solve with the operator in the lanes layout (:class:`wilson_simd.WilsonLanes`:
    links converted once, the source and the solution once per solve, inside the timing); CG
    runs on the real lanes arrays. ``vs_aos``: the interleaved solve's time / this one."""
    op = wilson_simd.WilsonLanes(U, W.mass, W.boundary == "antiperiodic")
    op.normal(op.to_lanes(b))   # compile / warm up
    t0 = time.perf_counter()
    xl, info = cg(op.normal, op.to_lanes(b), tol=1e-8, maxiter=5000)
    x = op.from_lanes(xl)
    dt = time.perf_counter() - t0
    dev = float(np.max(np.abs(x - x_ref)) / np.max(np.abs(x_ref)))
    return {"op": f"cg_wilson_normal_{L}^4", "mode": "lanes", "seconds": dt,
            "iterations": int(np.max(np.asarray(info.iterations))), "host_syncs": info.host_syncs,
            "check_every": "default", "vs_aos": t_aos / dt, "lanes": list(op.lanes),
            "max_rel_deviation_from_aos_solution": dev}


def operator_rows(L, cdtype):
    """``WilsonDirac.apply`` and a CG solve with ``layout="lanes"`` against ``layout="site"``
    (module docstring); NumPy, one call of each after a warm-up."""
    real = "float32" if cdtype == "complex64" else "float64"
    xp = namespace_by_name("numpy")
    U = haar_links(L, real, xp)
    b = normal_field(L, 4, real, xp)
    ops = {lay: WilsonDirac(U, mass=0.1, layout=lay) for lay in ("site", "lanes")}
    rows = []
    for lay, W in ops.items():
        W.apply(b)  # compile / warm up
        t = harness.best_time(lambda: W.apply(b), repeat=3, min_time=0.2)
        rows.append({"op": "op_apply", "L": L, "dtype": cdtype, "layout": lay, "seconds": t,
                     "core_ns_per_site": core_seconds(lambda: W.apply(b), n=2) / L ** 4 * 1e9})
    tol = 1e-5 if real == "float32" else 1e-8
    solves = [("site", ops["site"].normal), ("lanes", ops["lanes"].normal),
              ("lanes_per_apply", lambda v: ops["lanes"].normal(v))]   # a lambda has no hook
    x_ref = None
    for lay, A in solves:
        t0 = time.perf_counter()
        c0 = time.process_time()
        x, info = cg(A, b, tol=tol, maxiter=5000)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        x_ref = x if x_ref is None else x_ref
        rows.append({"op": "op_cg", "L": L, "dtype": cdtype, "layout": lay, "seconds": dt,
                     "core_seconds": dc, "tol": tol,
                     "iterations": int(np.max(np.asarray(info.iterations))),
                     "max_rel_deviation_from_site_solution":
                         float(np.max(np.abs(x - x_ref)) / np.max(np.abs(x_ref)))})
    for op in ("op_apply", "op_cg"):
        site = next(r["seconds"] for r in rows if r["op"] == op and r["layout"] == "site")
        for r in rows:
            if r["op"] == op:
                r["vs_site"] = site / r["seconds"]
    return rows


def _threads():
    import numba
    return numba.get_num_threads()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    ap.add_argument("--sizes", type=int, nargs="+", default=None,
                    help="lattice extents L (L^4); default 8 12 16 (CPU), 8 16 24 32 (GPU)")
    ap.add_argument("--dtypes", nargs="+", default=["complex64", "complex128"])
    ap.add_argument("--cg", type=int, default=8, help="CG lattice extent (0: skip)")
    ap.add_argument("--ref-repeat", type=int, default=2)
    ap.add_argument("--layout-sizes", type=int, nargs="*", default=[],
                    help="CPU: WilsonDirac layout='lanes' vs 'site' (apply, CG) at these L")
    ap.add_argument("--threads", type=int, nargs="+", default=None,
                    help="Numba thread counts, each measured in turn (default: all)")
    ap.add_argument("--ops", nargs="+", default=None,
                    help="only these rows (e.g. wilson_hop wilson_hop_lanes); default all")
    args = ap.parse_args(argv)
    import numba

    xp = namespace_by_name(args.backend)
    load_before = os.getloadavg()
    sizes = args.sizes or ([8, 12, 16] if args.backend == "numpy" else [8, 16, 24, 32])
    rows = []
    bandwidths = {}
    for threads in args.threads or [None]:
        if threads:
            numba.set_num_threads(threads)
        bw_name, bw = harness.memory_bandwidth(args.backend)
        bandwidths[str(_threads())] = bw
        print(f"# {_threads()} Numba threads, {bw_name}: {bw / 1e9:.2f} GB/s; load average "
              f"{os.getloadavg()}")
        for L in sizes:
            for cdtype in args.dtypes:
                for row in dslash_rows(L, cdtype, xp, bw, args.backend, args.ref_repeat,
                                       args.ops):
                    row["threads"] = _threads()
                    rows.append(row)
    harness.print_table(rows, ["op", "L", "dtype", "threads", "seconds", "GB/s", "GFLOP/s",
                               "frac_bw", "speedup", "vs_aos", "core_ns_per_site", "kernel"])
    cg_res = cg_rows(args.cg, xp, args.backend) if args.cg else []
    if cg_res:
        harness.print_table(cg_res, ["op", "mode", "check_every", "seconds", "iterations",
                                     "host_syncs", "speedup", "vs_aos"])
    op_res = []
    if args.backend == "numpy":
        for L in args.layout_sizes:
            for cdtype in args.dtypes:
                op_res += operator_rows(L, cdtype)
    if op_res:
        for r in op_res:
            r["threads"] = _threads()
        harness.print_table(op_res, ["op", "L", "dtype", "layout", "seconds", "iterations",
                                     "vs_site", "core_ns_per_site"])
    path = harness.record("kernels-dirac", rows + cg_res + op_res, args.backend,
                          {"bandwidth": {"name": bw_name, "bytes_per_second": bw,
                                         "per_thread_count": bandwidths},
                           "byte_model": {"wilson_reals_per_site": WILSON_REALS,
                                          "staggered_reals_per_site": STAGGERED_REALS},
                           "flops_per_site": FLOPS,
                           "load_average_before_after": [load_before, os.getloadavg()],
                           "numba_threads_used": _threads(),
                           "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")})
    print(f"# wrote {path}")


if __name__ == "__main__":
    main()
