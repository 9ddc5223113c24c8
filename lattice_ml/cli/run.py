"""The job behind ``lattice-ml run``: build the theory and sampler from a validated config, run
the chains, write the histories, and return the summary.

Histories go to ``OUT/history.npz`` (written atomically before the summary): one array per
observable shaped ``[n_chains, n_samples]`` (``two_point`` is ``[n_chains, n_samples, T]``),
plus ``delta_h`` and ``accepted`` per measured trajectory. Every number of the summary can be
recomputed from it with :func:`lattice_ml.stats.gamma_method`, the chains taken as replicas.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np

from .. import __version__
from ..backend import RandomStreams, backend_name, namespace_by_name, to_numpy
from ..lattice import Lattice
from ..samplers import HMC, EuclideanSpace, Level
from ..scalar import (Phi4Action, abs_magnetization, binder_cumulant, magnetization, momentum_space_propagator, phi2,
                      second_moment_correlation_length, susceptibility, two_point_function)
from ..stats import WindowWarning, gamma_method
from .output import atomic_save_npz
from .progress import Progress

__all__ = ["run_job", "build_phi4", "phi4_summary"]


class RunError(RuntimeError):
    """A run that cannot go on (e.g. a field turned NaN)."""


def build_phi4(config: dict) -> tuple[Lattice, Phi4Action, HMC]:
    """Lattice, action and HMC sampler of a φ⁴ config."""
    lat = Lattice(config["lattice"]["shape"])
    th = config["theory"]
    if th["form"] == "standard":
        action = Phi4Action(lat, "standard", m2=th["m2"], lam=th["lam"])
    else:
        action = Phi4Action(lat, "hopping", beta=th["beta"], lam=th["lam"])
    sm = config["sampler"]
    if sm.get("fine_steps", 0):
        levels = [Level([action.part("kinetic")], sm["n_steps"], sm["integrator"]),
                  Level([action.part("local")], sm["fine_steps"], sm["integrator"])]
    else:
        levels = [Level([action], sm["n_steps"], sm["integrator"])]
    hmc = HMC(levels, EuclideanSpace(), tau=sm["tau"], tau_jitter=sm.get("tau_jitter", 0.0))
    return lat, action, hmc


def _measure_phi4(phi) -> dict:
    M = magnetization(phi)
    g0, g1 = momentum_space_propagator(phi)
    return {
        "phi2": phi2(phi),
        "magnetization": M,
        "abs_magnetization": abs_magnetization(phi),
        "m2": M * M,
        "m4": (M * M) ** 2,
        "g0": g0,
        "g1": g1,
        "two_point": two_point_function(phi),
    }


def _entry(data, f=None) -> dict | None:
    """Γ-method summary entry with the key names of SPEC section 4 (``mean``, ``error``,
    ``tau_int``, ``tau_int_error``, ...); a warning of the analysis (window at its limit,
    anticorrelated history) is kept in the entry under ``warning``. ``None`` when the derived
    quantity is undefined at the measured means (e.g. a correlation length with G(0) < G(p1))."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", WindowWarning)
        try:
            res = gamma_method(data, f=f)
        except ValueError:
            if f is None:
                raise
            return None
    d = res.to_dict()
    d["mean"] = d.pop("value")
    if caught:
        d["warning"] = "; ".join(str(w.message) for w in caught)
    return d


def phi4_summary(hist: dict, volume: int, L: int) -> dict:
    """Observables of SPEC section 4 with Γ-method errors from the histories (chains = replicas)."""
    obs = {key: _entry(hist[key]) for key in ("phi2", "abs_magnetization", "magnetization")}
    obs["susceptibility"] = _entry([hist["m2"], hist["abs_magnetization"]],
                                   f=lambda m: susceptibility(m[0], m[1], volume))
    obs["binder_cumulant"] = _entry([hist["m2"], hist["m4"]],
                                    f=lambda m: binder_cumulant(m[0], m[1]))
    obs["correlation_length"] = _entry(
        [hist["g0"], hist["g1"]], f=lambda m: second_moment_correlation_length(m[0], m[1], L))
    return {k: v for k, v in obs.items() if v is not None}


def run_job(config: dict, out_dir: Path, progress: str = "auto") -> dict:
    """Run the job of a validated ``config``; write ``out_dir/history.npz``; return the summary.

    ``progress`` is the display mode (``auto``: only on a terminal, ``always``, ``never``).
    """
    if config["theory"]["name"] != "phi4":  # the schema only lets implemented theories through
        raise RunError(f"theory {config['theory']['name']!r} has no runner")
    t_start = time.perf_counter()
    run = config["run"]
    sm = config["sampler"]
    xp = namespace_by_name(run["backend"])
    n_chains = sm["n_chains"]
    rng = RandomStreams(run["seed"], n_chains, xp, dtype=run["dtype"])
    lat, action, hmc = build_phi4(config)

    phi = rng.normal(lat.shape)  # drawn for both starts, so the streams do not depend on it
    if sm["start"] == "cold":
        phi = 0.0 * phi
    n_therm, n_samples, every = sm["n_therm"], sm["n_samples"], sm["measure_every"]
    total = n_therm + n_samples * every
    hist: dict[str, list] = {}
    n_acc = n_traj = 0
    # overflow in a diverging trajectory is caught below as a non-finite field, with a message
    # that says what to do; NumPy's floating-point warnings would only add noise
    with Progress(total, "hmc", progress) as bar, np.errstate(all="ignore"):
        for k in range(total):
            phi, info = hmc.step(phi, rng)
            acc = to_numpy(info.accepted)
            if not np.all(np.isfinite(to_numpy(xp.sum(phi, axis=tuple(range(1, phi.ndim)))))):
                raise RunError(f"the field holds NaN or inf after trajectory {k + 1} "
                               "(step size too large for these couplings?)")
            measuring = k >= n_therm
            if measuring:
                n_acc += int(acc.sum())
                n_traj += acc.size
                hist.setdefault("delta_h", []).append(to_numpy(info.delta_h).astype(np.float64))
                hist.setdefault("accepted", []).append(acc)
            if measuring and (k - n_therm + 1) % every == 0:
                for key, val in _measure_phi4(phi).items():
                    hist.setdefault(key, []).append(to_numpy(val).astype(np.float64))
            bar.update(1, phase="therm" if not measuring else "meas",
                       acc=f"{acc.mean():.2f}")

    # [time, chain, ...] -> [chain, time, ...]
    arrays = {k: np.moveaxis(np.asarray(v), 0, 1) for k, v in hist.items()}
    atomic_save_npz(Path(out_dir) / "history.npz", **arrays)

    observables = phi4_summary(arrays, lat.volume, lat.shape[0])
    dh = arrays["delta_h"]
    observables["exp_minus_delta_h"] = _entry(np.exp(-dh))
    th = config["theory"]
    return {
        "theory": "phi4",
        "form": th["form"],
        "couplings": {k: th[k] for k in ("m2", "beta", "lam") if k in th},
        "lattice": list(lat.shape),
        "sampler": sm["name"],
        "integrator": sm["integrator"],
        "backend": backend_name(xp),
        "dtype": str(run["dtype"]),
        "seed": run["seed"],
        "n_chains": n_chains,
        "n_therm": n_therm,
        "n_samples": n_samples,
        "acceptance": n_acc / max(n_traj, 1),
        "mean_delta_h": float(np.mean(dh)),
        "elapsed_s": time.perf_counter() - t_start,
        "version": __version__,
        "observables": observables,
    }
