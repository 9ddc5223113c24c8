"""Wall time of whole ``lattice-ml run`` commands: compilation of the Numba kernels, their on-disk
cache, and the small-run rule of the command.

    python benchmarks/bench_cli.py [--cases tiny default] [--settings ...] [--repeat 1]

Each case is one ``lattice-ml run`` in a fresh process (console script, run from a temporary
directory so that the installed package, with its kernels, is imported), timed from the start
of the process to its exit, under these settings:

* ``kernels, cold cache``: ``LATTICE_ML_KERNELS=auto`` (the kernels wherever they accept the
  call), with the on-disk Numba cache of the φ⁴ kernel removed first: the run compiles it;
* ``kernels, warm cache``: the same again, the kernel loaded from the cache of the previous run;
* ``reference``: ``LATTICE_ML_KERNELS=off``, the array-API reference everywhere;
* ``command default``: ``LATTICE_ML_KERNELS`` unset, so the command's small-run rule decides
  (``summary.json`` records the choice under ``kernels``).

The record (``benchmarks/results/cli-numpy-*.json``) holds the machine, the versions, the exact
commands and, per run, the wall time, the CPU time of the process (user + system, all threads),
the run's own ``elapsed_s`` and the kernel mode it used.
The machine's load is recorded too (``os.getloadavg`` before each run): on a shared machine
wall times of runs that use Numba's parallel threads depend on it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

CASES = {
    "tiny": ["--set", "lattice.shape=[8,8]", "--set", "sampler.n_samples=100"],
    "default": [],
}
"""``lattice-ml run`` arguments of each case: an 8x8 φ⁴ run of 100 measurements (16 chains, 500
thermalisation updates) and the embedded default (32x32 φ⁴, 16 chains, 500 + 5000 updates)."""

SETTINGS = [
    ("kernels, cold cache", {"LATTICE_ML_KERNELS": "auto"}, True),
    ("kernels, warm cache", {"LATTICE_ML_KERNELS": "auto"}, False),
    ("reference", {"LATTICE_ML_KERNELS": "off"}, False),
    ("command default", {"LATTICE_ML_KERNELS": None}, False),
]


def kernel_cache_files() -> list[Path]:
    """Numba cache files of the φ⁴ CPU kernel (``kernels/__pycache__/phi4._force_cpu-*``)."""
    out = subprocess.run([sys.executable, "-c", "import lattice_ml.kernels as k; print(k.__file__)"],
                         capture_output=True, text=True, cwd=tempfile.gettempdir(), check=True)
    cache = Path(out.stdout.strip()).parent / "__pycache__"
    return sorted(cache.glob("phi4._force_cpu-*"))


def run_once(args: list[str], env_over: dict, workdir: Path) -> dict:
    env = dict(os.environ)
    for k, v in env_over.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    out = workdir / "run"
    shutil.rmtree(out, ignore_errors=True)
    exe = shutil.which("lattice-ml") or str(Path(sys.executable).parent / "lattice-ml")
    cmd = [exe, "run", "--out", str(out), "--set", "run.progress=never", *args]
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr}")
    s = json.loads((out / "summary.json").read_text())
    return {"wall_s": wall, "cpu_s": cpu, "elapsed_s": s["elapsed_s"], "kernels": s.get("kernels"),
            "kernels_reason": s.get("kernels_reason"), "acceptance": s["acceptance"],
            "load_1min": load, "command": " ".join(["lattice-ml", *cmd[1:]]),
            "env": {k: v for k, v in env_over.items()}}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--settings", nargs="+", default=[label for label, _, _ in SETTINGS],
                    choices=[label for label, _, _ in SETTINGS], metavar="SETTING",
                    help="a subset of: " + "; ".join(label for label, _, _ in SETTINGS))
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for case in a.cases:
            for label, env_over, cold in SETTINGS:
                if label not in a.settings:
                    continue
                for _ in range(a.repeat):
                    if cold:
                        for f in kernel_cache_files():
                            f.unlink()
                    r = run_once(CASES[case], env_over, work)
                    r.update(case=case, setting=label)
                    rows.append(r)
                    print(f"{case:8s} {label:22s} wall {r['wall_s']:7.2f} s  cpu "
                          f"{r['cpu_s']:7.2f} s  run {r['elapsed_s']:7.2f} s  "
                          f"kernels={r['kernels']}  "
                          f"load {r['load_1min']:.1f}", flush=True)
    harness.print_table(rows, ["case", "setting", "wall_s", "cpu_s", "elapsed_s", "kernels",
                               "load_1min"])
    path = harness.record("cli", rows, "numpy")
    print(f"record: {path}")


if __name__ == "__main__":
    main()
