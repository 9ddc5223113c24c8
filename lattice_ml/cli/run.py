"""The run loop of ``lattice-ml run``: build the job of a validated config
(:mod:`lattice_ml.cli.jobs`), run the chains, write the histories, and return the summary.

Histories go to ``OUT/history.npz`` (written atomically before the summary): one array per
observable shaped ``[n_chains, n_samples]`` (``two_point`` is ``[n_chains, n_samples, T]``),
plus, for HMC, ``delta_h`` and ``accepted`` per measured trajectory. Every number of the summary can be
recomputed from it with :func:`lattice_ml.stats.gamma_method`, the chains taken as replicas.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .. import __version__
from ..backend import RandomStreams, backend_name, namespace_by_name, to_numpy
from .jobs import build_job, host, summary_entry
from .output import atomic_save_npz
from .progress import Progress

__all__ = ["run_job", "RunError"]


class RunError(RuntimeError):
    """A run that cannot go on (e.g. a field turned NaN)."""


def _finite(field, xp) -> bool:
    total = xp.sum(xp.abs(field), axis=tuple(range(1, field.ndim)))
    return bool(np.all(np.isfinite(to_numpy(total))))


def run_job(config: dict, out_dir: Path, progress: str = "auto") -> dict:
    """Run the job of a validated ``config``; write ``out_dir/history.npz``; return the summary.

    ``progress`` is the display mode (``auto``: only on a terminal, ``always``, ``never``).
    """
    t_start = time.perf_counter()
    run, sm = config["run"], config["sampler"]
    xp = namespace_by_name(run["backend"])
    n_chains = sm["n_chains"]
    rng = RandomStreams(run["seed"], n_chains, xp, dtype=run["dtype"])
    job = build_job(config)
    field = job.initial_field(rng)

    n_therm, n_samples, every = sm["n_therm"], sm["n_samples"], sm["measure_every"]
    total = n_therm + n_samples * every
    hist: dict[str, list] = {}
    # overflow in a diverging trajectory is caught below as a non-finite field, with a message
    # that says what to do; NumPy's floating-point warnings would only add noise
    with Progress(total, sm["name"], progress) as bar, np.errstate(all="ignore"):
        for k in range(total):
            field, info = job.sampler.step(field, rng)
            if not _finite(field, xp):
                raise RunError(f"the field holds NaN or inf after update {k + 1} "
                               "(step size too large for these couplings?)")
            measuring = k >= n_therm
            accepted = getattr(info, "accepted", None)
            if measuring and accepted is not None:
                hist.setdefault("delta_h", []).append(host(info.delta_h))
                hist.setdefault("accepted", []).append(host(accepted))
            if measuring and (k - n_therm + 1) % every == 0:
                for key, val in job.measure(field, rng).items():
                    hist.setdefault(key, []).append(host(val))
            shown = {"phase": "meas" if measuring else "therm"}
            if accepted is not None:
                shown["acc"] = f"{float(np.mean(host(accepted))):.2f}"
            bar.update(1, **shown)

    # [time, chain, ...] -> [chain, time, ...]
    arrays = {k: np.moveaxis(np.asarray(v), 0, 1) for k, v in hist.items()}
    atomic_save_npz(Path(out_dir) / "history.npz", **arrays)

    observables = {k: v for k, v in job.summarize(arrays).items() if v is not None}
    summary = {
        **job.description,
        "lattice": list(job.lattice.shape),
        "sampler": sm["name"],
        "backend": backend_name(xp),
        "dtype": str(run["dtype"]),
        "seed": run["seed"],
        "n_chains": n_chains,
        "n_therm": n_therm,
        "n_samples": n_samples,
    }
    if "accepted" in arrays:
        dh = arrays["delta_h"]
        summary["integrator"] = sm["integrator"]
        summary["acceptance"] = float(np.mean(arrays["accepted"]))
        summary["mean_delta_h"] = float(np.mean(dh))
        observables["exp_minus_delta_h"] = summary_entry(np.exp(-dh))
    else:
        summary["acceptance"] = 1.0  # heatbath and over-relaxation accept every update
    summary.update({"elapsed_s": time.perf_counter() - t_start, "version": __version__,
                    "observables": observables})
    return summary
