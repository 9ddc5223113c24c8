"""``lattice-ml analyse DIR``: the observables of a finished run recomputed from its histories,
without rerunning it.

::

    lattice-ml analyse DIR [--discard N] [--bin B] [--S 1.5] [--json]

The run's ``DIR/config.toml`` says which observables it has and how they are derived (the same
job builder as ``run``), ``DIR/history.npz`` holds every measurement per chain. ``--discard N``
drops the first ``N`` measurements of every chain (a later thermalisation cut; the ``[measure]``
histories, taken every ``measure.every``-th measurement, lose the entries among those ``N``),
``--bin B`` averages ``B`` consecutive entries of every history before the Γ-method (a check of
the error against binning; the remainder at the end is dropped), ``--S`` is the Γ-method's
window parameter (Wolff's 1.5 by default; pyerrors uses 2.0). With ``discard = 0, bin = 1,
S = 1.5`` the observables are those of ``DIR/summary.json``.

Nothing in DIR is written or changed: the result is printed (the run's digest lines, or with
``--json`` one JSON object with the options, ``n_samples`` per chain after the cut and binning,
``acceptance`` and ``observables``). Exit codes: 0 ok; 2 a directory without a finished run's
histories, or options that leave too few measurements for the Γ-method.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

__all__ = ["add_parser", "analyse_run", "AnalysisError"]

EXIT_OK = 0
EXIT_USAGE = 2


class AnalysisError(ValueError):
    """A run directory or options that cannot be analysed (one-line message)."""


def _cut_and_bin(h: np.ndarray, discard: int, bin_size: int) -> np.ndarray:
    h = h[:, discard:]
    n = (h.shape[1] // bin_size) * bin_size
    h = h[:, :n]
    if bin_size == 1:
        return h
    return h.reshape(h.shape[0], n // bin_size, bin_size, *h.shape[2:]).mean(axis=2)


def analyse_run(out_dir, discard: int = 0, bin_size: int = 1, S: float = 1.5) -> dict:
    """The observables of the finished run in ``out_dir`` with a thermalisation cut of
    ``discard`` measurements, bins of ``bin_size`` and window parameter ``S``; see the module
    docstring. Raises :class:`AnalysisError`."""
    from .config import ConfigError, load_config
    from .jobs import build_job
    from .measurements import summary_entry
    from .output import CONFIG_NAME, HISTORY_NAME, SUMMARY_NAME
    from .rules import min_samples

    out = Path(out_dir)
    if not (isinstance(discard, int) and discard >= 0):
        raise AnalysisError(f"--discard must be an integer >= 0, got {discard!r}")
    if not (isinstance(bin_size, int) and bin_size >= 1):
        raise AnalysisError(f"--bin must be an integer >= 1, got {bin_size!r}")
    if not (math.isfinite(S) and S >= 0):
        raise AnalysisError(f"--S must be a number >= 0, got {S!r}")
    hist_path, cfg_path = out / HISTORY_NAME, out / CONFIG_NAME
    if not out.is_dir():
        raise AnalysisError(f"{out}: no such run directory")
    if not hist_path.is_file() or not cfg_path.is_file():
        missing = HISTORY_NAME if not hist_path.is_file() else CONFIG_NAME
        raise AnalysisError(f"{out} holds no finished run ({missing} is missing; an "
                            f"unfinished run continues with lattice-ml run --resume {out})")
    try:
        config = load_config(cfg_path)
    except ConfigError as exc:
        raise AnalysisError(f"{cfg_path}: {exc}") from exc
    config["run"]["backend"] = "numpy"     # the histories are host data; no device needed
    job = build_job(config)
    with np.load(hist_path) as f:
        arrays = {k: np.asarray(f[k]) for k in f.files}
    if not arrays:
        raise AnalysisError(f"{hist_path} holds no histories")

    n_full = max(a.shape[1] for a in arrays.values())
    every = config.get("measure", {}).get("every", 1)
    kept = {}
    for key, h in arrays.items():
        cut = discard if h.shape[1] == n_full else -(-discard // every)
        kept[key] = _cut_and_bin(h, cut, bin_size)
    n_left = min(a.shape[1] for a in kept.values())
    if n_left < min_samples():
        raise AnalysisError(
            f"--discard {discard} --bin {bin_size} leave {n_left} entries per chain of the "
            f"shortest history (of {n_full} measurements); the Γ-method needs {min_samples()}")
    observables = {k: v for k, v in job.summarize(kept, S=S).items() if v is not None}
    result = {"run": str(out), "discard": discard, "bin": bin_size, "S": S,
              "n_samples": int(kept[next(k for k in kept if arrays[k].shape[1] == n_full)]
                               .shape[1])}
    if "accepted" in kept:
        result["acceptance"] = float(np.mean(kept["accepted"]))
        # <exp(-dH)> = 1 is a check on the raw updates: bin exp(-dH), not dH
        boltzmann = _cut_and_bin(np.exp(-arrays["delta_h"]), discard, bin_size)
        observables["exp_minus_delta_h"] = summary_entry(boltzmann, S=S)
    result["observables"] = observables
    summary_file = out / SUMMARY_NAME
    if summary_file.is_file():   # the run's description, for the digest's head line
        try:
            head = json.loads(summary_file.read_text())
        except (OSError, ValueError):
            head = {}
        for k in ("theory", "lattice", "sampler"):
            if k in head:
                result.setdefault(k, head[k])
    return result


def add_parser(subparsers) -> None:
    """Add the ``analyse`` subcommand (sets ``handler``)."""
    p = subparsers.add_parser(
        "analyse", help="re-analyse a finished run from its histories (nothing is rerun)",
        description="Recompute the observables of the finished run in DIR from DIR/history.npz "
                    "with another thermalisation cut, binning or Γ-method window parameter. "
                    "Nothing in DIR is changed.")
    p.add_argument("dir", metavar="DIR", type=Path, help="the run's output directory")
    p.add_argument("--discard", type=int, default=0, metavar="N",
                   help="drop the first N measurements of every chain (default 0)")
    p.add_argument("--bin", dest="bin_size", type=int, default=1, metavar="B",
                   help="average B consecutive entries of every history first (default 1)")
    p.add_argument("--S", dest="S", type=float, default=1.5,
                   help="the Γ-method's window parameter (default 1.5; pyerrors uses 2.0)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=cmd_analyse)


def cmd_analyse(args: argparse.Namespace) -> int:
    from .main import digest

    try:
        res = analyse_run(args.dir, args.discard, args.bin_size, args.S)
    except AnalysisError as exc:
        print(f"lattice-ml: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        lines = digest(res)
        lines[0] += f"  [analyse: discard {res['discard']}, bin {res['bin']}, S {res['S']:g}]"
        print("\n".join(lines))
    return EXIT_OK
