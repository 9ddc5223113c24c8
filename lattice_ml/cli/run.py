"""The run loop of ``lattice-ml run``: build the job of a validated config
(:mod:`lattice_ml.cli.jobs`), run the chains, write checkpoints and the histories, and return the
summary.

Histories go to ``OUT/history.npz`` (written atomically before the summary): one array per
observable shaped ``[n_chains, n_samples]`` (``two_point`` is ``[n_chains, n_samples, T]``),
plus, for HMC, ``delta_h`` and ``accepted`` per measured trajectory. Every number of the summary can be
recomputed from it with :func:`lattice_ml.stats.gamma_method`, the chains taken as replicas.

Checkpoints and resume
----------------------
The whole state of a run between two updates is the field, the per-chain random streams
(:meth:`lattice_ml.backend.RandomStreams.state`), the number of updates done and the histories
recorded so far: the samplers keep no other state from one update to the next (HMC draws its
momenta, trajectory lengths and Metropolis numbers, the heatbath its proposals and the
pseudofermion HMC its pseudofermions from the streams at every update; solvers start from zero).
:func:`run_job` writes that state to ``OUT/checkpoint.ckpt`` (:mod:`lattice_ml.io.checkpoint`,
kind ``"run"``) every ``run.checkpoint_every`` updates and/or ``run.checkpoint_seconds`` seconds,
once before the first update, and when SIGINT or SIGTERM stops the run; :func:`load_resume`
reads it back and ``run_job(..., resume=state)`` continues from it. A run stopped anywhere and
resumed therefore makes exactly the same updates and measurements as an uninterrupted one:
``history.npz`` is bit-identical and so is every observable of the summary (only ``elapsed_s``
differs).

Checkpoint state (keys of the tree): ``config`` (the resolved configuration), ``next_update``
(updates done), ``total_updates``, ``elapsed_s`` (wall time of all segments up to this
checkpoint), ``segments`` (1 + number of resumes), ``field`` (host array in the field layout),
``rng`` (stream state) and ``history`` (name -> host array ``[n_recorded, n_chains, ...]``, in the
order of first measurement).
"""

from __future__ import annotations

import contextlib
import copy
import signal
import threading
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from .. import __version__
from ..backend import RandomStreams, backend_name, namespace_by_name, to_numpy
from ..io.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import ConfigError, load_config, parse_override
from .jobs import build_job, host, summary_entry
from .output import CHECKPOINT_NAME, CONFIG_NAME, HISTORY_NAME, SUMMARY_NAME, atomic_save_npz
from .progress import Progress

__all__ = ["run_job", "RunError", "RunInterrupted", "ResumeError", "load_resume",
           "prepare_resume", "MUTABLE_ON_RESUME"]

MUTABLE_ON_RESUME = ("run.progress", "run.checkpoint_every", "run.checkpoint_seconds",
                     "run.keep_checkpoint")
"""Keys that ``--resume`` may change with ``--set``: they do not affect the results."""


class RunError(RuntimeError):
    """A run that cannot go on (e.g. a field turned NaN)."""


class RunInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the run after a checkpoint was written.

    ``exit_code`` is 128 + the signal number (130 for SIGINT, 143 for SIGTERM); ``checkpoint``
    the path of the checkpoint written.
    """

    def __init__(self, signum: int, checkpoint: Path):
        super().__init__(f"stopped by signal {signum}; checkpoint {checkpoint}")
        self.signum, self.checkpoint, self.exit_code = signum, checkpoint, 128 + signum


class ResumeError(ValueError):
    """A run directory that cannot be resumed (no, corrupt or foreign checkpoint, completed run)."""


def _finite(field, xp) -> bool:
    total = xp.sum(xp.abs(field), axis=tuple(range(1, field.ndim)))
    return bool(np.all(np.isfinite(to_numpy(total))))


# ------------------------------------------------------------------------------------------
# signals: stop at the next update boundary
# ------------------------------------------------------------------------------------------
class _StopFlag:
    """Defers SIGINT and SIGTERM to the next update boundary (main thread only); a second
    SIGINT interrupts at once."""

    def __init__(self):
        self.signum: int | None = None

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)


# ------------------------------------------------------------------------------------------
# resume
# ------------------------------------------------------------------------------------------
def _comparable(config: dict) -> dict:
    c = copy.deepcopy(config)
    for dotted in MUTABLE_ON_RESUME:
        section, key = dotted.split(".")
        c.get(section, {}).pop(key, None)
    return c


def _first_difference(a, b, where: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            if k not in a or k not in b:
                return f"{where}{k} (only in {'the checkpoint' if k in a else 'config.toml'})"
            found = _first_difference(a[k], b[k], f"{where}{k}.")
            if found:
                return found
        return None
    if a != b or type(a) is not type(b):
        return f"{where[:-1]} ({a!r} in the checkpoint, {b!r} in config.toml)"
    return None


def load_resume(out_dir: str | Path, config: dict) -> dict:
    """The checkpoint state of ``out_dir`` for resuming ``config``; :class:`ResumeError` when
    the checkpoint is missing, corrupt, of another kind or from another configuration (keys of
    :data:`MUTABLE_ON_RESUME` may differ)."""
    path = Path(out_dir) / CHECKPOINT_NAME
    if not path.exists():
        raise ResumeError(f"no checkpoint {path} to resume from (the run was started with "
                          "run.checkpoint_every = 0 and run.checkpoint_seconds = 0, or stopped "
                          "before its first update)")
    try:
        ck = load_checkpoint(path, kind="run")
    except CheckpointError as exc:
        raise ResumeError(f"cannot resume: {exc}") from None
    state = ck.state
    written = {k: ck.versions.get(k) for k in ("lattice_ml", "numpy")}
    if written != {"lattice_ml": __version__, "numpy": np.__version__}:
        warnings.warn(f"{path} was written by lattice_ml {written['lattice_ml']} with NumPy "
                      f"{written['numpy']}, this is {__version__} with {np.__version__}: the "
                      "continuation is bit-identical only for the same versions", RuntimeWarning,
                      stacklevel=2)
    missing = {"config", "next_update", "total_updates", "elapsed_s", "field", "rng",
               "history"} - set(state)
    if missing:
        raise ResumeError(f"checkpoint {path} lacks {sorted(missing)}")
    diff = _first_difference(_comparable(state["config"]), _comparable(config))
    if diff:
        raise ResumeError(f"checkpoint {path} belongs to another configuration: {diff}")
    return state


def prepare_resume(directory: str | Path, overrides=()) -> tuple[dict, Path, dict]:
    """``(config, out_dir, state)`` for ``lattice-ml run --resume DIR [--set KEY=VALUE ...]``.

    The configuration is ``DIR/config.toml`` with the overrides, which may only touch
    :data:`MUTABLE_ON_RESUME`; ``config.toml`` is rewritten when they change it. Raises
    :class:`ResumeError` (or :class:`~lattice_ml.cli.config.ConfigError`) for a directory
    without ``config.toml``, one that holds a completed run (``summary.json``), a forbidden
    override, and every problem of :func:`load_resume`.
    """
    from .config import dump_toml
    from .output import atomic_write_text

    out = Path(directory)
    if not out.is_dir():
        raise ResumeError(f"cannot resume {out}: not a directory")
    if (out / SUMMARY_NAME).exists():
        raise ResumeError(f"{out} holds a completed run ({SUMMARY_NAME}); nothing to resume")
    if not (out / CONFIG_NAME).is_file():
        raise ResumeError(f"cannot resume {out}: it has no {CONFIG_NAME}")
    for text in overrides:
        key = ".".join(parse_override(text)[0])
        if key not in MUTABLE_ON_RESUME:
            raise ConfigError(key, "cannot be changed when resuming (only "
                              + ", ".join(MUTABLE_ON_RESUME) + ")", "--set")
    base = load_config(out / CONFIG_NAME, [])
    config = load_config(out / CONFIG_NAME, overrides) if overrides else base
    state = load_resume(out, config)
    for p in out.glob(".*.tmp"):  # temporaries of a process killed while writing
        if any(p.name.startswith(f".{n}.") for n in (CHECKPOINT_NAME, HISTORY_NAME)):
            with contextlib.suppress(OSError):
                p.unlink()
    if config != base:
        atomic_write_text(out / CONFIG_NAME, dump_toml(config))
    return config, out, state


# ------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------
def _start_field(job, config: dict, rng, xp):
    """The initial field: ``job.initial_field`` (always drawn, so the random streams are the same
    for every kind of start), replaced by the links of ``run.start_file`` when one is given.

    A file with one configuration starts every chain from it; one with ``n_chains``
    configurations (an HDF5 ensemble) gives one to each chain. Links in the group only to 32-bit
    precision (|U^dag U - 1|, |det U - 1| <= 1e-5: a 32-bit file read in float64) are
    reunitarised; links further off are a :class:`ConfigError`.
    """
    field = job.initial_field(rng)
    path = config["run"].get("start_file", "")
    if not path:
        return field
    if not hasattr(job, "N"):
        raise ConfigError("run.start_file", f"theory {config['theory']['name']!r} has no gauge "
                          "links; a start file is for gauge theories")
    from ..groups import check_links, reunitarize
    from ..io import read_gauge

    cdtype = "complex128" if config["run"]["dtype"] == "float64" else "complex64"
    try:
        U = read_gauge(path, xp=xp, dtype=cdtype)
    except (ValueError, OSError) as exc:
        raise ConfigError("run.start_file", f"cannot start from {path}: {exc}") from None
    want, got = tuple(field.shape[1:]), tuple(U.shape[1:])
    if got != want:
        raise ConfigError("run.start_file", f"{path} holds links [D, *sites, N, N] = {list(got)}; "
                          f"this run needs {list(want)} (lattice.shape, N = {job.N})")
    n_chains = field.shape[0]
    if U.shape[0] == 1:
        U = xp.concat([U] * n_chains, axis=0)
    elif U.shape[0] != n_chains:
        raise ConfigError("run.start_file", f"{path} holds {U.shape[0]} configurations; give "
                          f"one, or one per chain (sampler.n_chains = {n_chains})")
    try:
        check_links(U, job.N)
    except ValueError:
        # rounding of a 32-bit file read at 64 bits is repaired; anything larger is refused
        try:
            check_links(U, job.N, tol=1e-5, name=f"the links of {path}")
        except ValueError as exc:
            raise ConfigError("run.start_file", f"cannot start from {path}: {exc}") from None
        U = reunitarize(U)
    return U


def run_job(config: dict, out_dir: Path, progress: str = "auto", *, resume: dict | None = None,
            on_checkpoint: Callable[[int, Path], None] | None = None) -> dict:
    """Run the job of a validated ``config``; write ``out_dir/history.npz``; return the summary.

    ``progress`` is the display mode (``auto``: only on a terminal, ``always``, ``never``).
    ``resume`` is a checkpoint state (:func:`load_resume`) to continue from. ``on_checkpoint(k,
    path)`` is called after every checkpoint write with the number of updates done (a hook for
    tests and monitoring). SIGINT and SIGTERM stop the run at the next update boundary after
    writing a checkpoint: :class:`RunInterrupted`.
    """
    t_start = time.perf_counter()
    run, sm = config["run"], config["sampler"]
    xp = namespace_by_name(run["backend"])
    n_chains = sm["n_chains"]
    rng = RandomStreams(run["seed"], n_chains, xp, dtype=run["dtype"])
    job = build_job(config)
    n_therm, n_samples, every = sm["n_therm"], sm["n_samples"], sm["measure_every"]
    total = n_therm + n_samples * every
    hist: dict[str, list] = {}
    if resume is None:
        field = _start_field(job, config, rng, xp)
        k0, elapsed0, segments = 0, 0.0, 1
    else:
        saved = resume["field"]
        field = xp.asarray(saved, dtype=getattr(xp, saved.dtype.name))
        rng.set_state(resume["rng"])
        k0, elapsed0 = int(resume["next_update"]), float(resume["elapsed_s"])
        segments = int(resume.get("segments", 1)) + 1
        if not 0 <= k0 <= total or int(resume["total_updates"]) != total:
            raise ResumeError(f"checkpoint at update {k0} of {resume['total_updates']} does not "
                              f"fit this run of {total} updates")
        hist = {key: list(arr) for key, arr in resume["history"].items()}

    ck_path = Path(out_dir) / CHECKPOINT_NAME
    every_k, every_s = run.get("checkpoint_every", 0), run.get("checkpoint_seconds", 0.0)
    periodic = bool(every_k or every_s)
    keep = run.get("keep_checkpoint", False)
    last_save = [time.monotonic(), -1]  # time and update count of the last checkpoint

    def save(k: int) -> None:
        if last_save[1] == k:
            return
        state = {"config": config, "next_update": k, "total_updates": total,
                 "elapsed_s": elapsed0 + time.perf_counter() - t_start, "segments": segments,
                 "field": field, "rng": rng.state(),
                 "history": {key: np.asarray(v) for key, v in hist.items()}}
        try:
            save_checkpoint(ck_path, state, kind="run")
        except OSError as exc:
            raise RunError(f"cannot write the checkpoint {ck_path}: {exc}") from exc
        last_save[:] = [time.monotonic(), k]
        if on_checkpoint is not None:
            on_checkpoint(k, ck_path)

    stop = _StopFlag()
    # overflow in a diverging trajectory is caught below as a non-finite field, with a message
    # that says what to do; NumPy's floating-point warnings would only add noise
    with stop.installed(), Progress(total - k0, sm["name"], progress) as bar, \
            np.errstate(all="ignore"):
        if periodic and resume is None:
            save(0)
        for k in range(k0, total):
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
            if stop.signum is not None:
                save(k + 1)
                raise RunInterrupted(stop.signum, ck_path)
            if (every_k and (k + 1) % every_k == 0) or (
                    every_s and time.monotonic() - last_save[0] >= every_s):
                save(k + 1)
        if keep:
            save(total)

        # [time, chain, ...] -> [chain, time, ...]
        arrays = {k: np.moveaxis(np.asarray(v), 0, 1) for k, v in hist.items()}
        atomic_save_npz(Path(out_dir) / HISTORY_NAME, **arrays)
        observables = {k: v for k, v in job.summarize(arrays).items() if v is not None}
        if stop.signum is not None:
            save(total)
            raise RunInterrupted(stop.signum, ck_path)

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
    if run.get("start_file"):
        summary["start_file"] = run["start_file"]
    if "accepted" in arrays:
        dh = arrays["delta_h"]
        if "integrator" in sm:  # flow Metropolis has no integrator
            summary["integrator"] = sm["integrator"]
        summary["acceptance"] = float(np.mean(arrays["accepted"]))
        summary["mean_delta_h"] = float(np.mean(dh))
        observables["exp_minus_delta_h"] = summary_entry(np.exp(-dh))
    else:
        summary["acceptance"] = 1.0  # heatbath and over-relaxation accept every update
    summary.update({"elapsed_s": elapsed0 + time.perf_counter() - t_start,
                    "segments": segments, "version": __version__,
                    "observables": observables})
    return summary
