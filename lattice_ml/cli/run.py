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
checkpoint), ``segments`` (1 + the number of resumes that reached the run loop: a resumed run
rewrites the checkpoint before its first update, so a segment killed before its first periodic
checkpoint is counted too), ``field`` (host array in the field layout), ``rng`` (stream state),
``history`` (name -> host array ``[n_recorded, n_chains, ...]``, in the order of first
measurement), for flow Metropolis ``log_w`` (``[n_chains]``, the log-weight of the chains'
configurations, which the next update needs), and for a sampler that keeps a state across updates
(``Job.stateful``; self-learning HMC: the network's weights, the Adam moments and the training
records) ``sampler_state``.

A job with a training phase (``Job.n_train``, self-learning HMC) makes ``n_train`` more updates
between the thermalisation and the measurements; they are counted in ``total_updates`` and
checkpointed like every other update, so a run stopped during its training resumes there.
"""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import threading
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from .. import __version__
from ..backend import (CounterRandomStreams, RandomStreams, backend_name, namespace,
                       namespace_by_name, to_numpy)
from ..dispatch import ENV_VAR, current_mode, kernel_mode
from ..parallel import SERIAL
from .parallel import (NoDraws, announce, check_ranks, check_supported, decomposition,
                       gather_history, gather_states, own_chains, run_communicator,
                       site_decomposition)
from ..io.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ..groups import reunitarize, unitarity_deviation
from ..samplers.tuning import adapted_n_steps
from .config import ConfigError, load_config, parse_override
from .jobs import TRAINING_HISTORY, build_job
from .measurements import host, summary_entry
from .rules import flow_kind, read_start_links
from .output import (CHECKPOINT_NAME, CONFIG_NAME, CONFIGS_NAME, HISTORY_NAME, SUMMARY_NAME,
                     TRAINING_NAME, atomic_save_npz)
from .progress import Progress

__all__ = ["run_job", "RunError", "RunInterrupted", "ResumeError", "load_resume",
           "prepare_resume", "MUTABLE_ON_RESUME"]

MUTABLE_ON_RESUME = ("run.progress", "run.checkpoint_every", "run.checkpoint_seconds",
                     "run.keep_checkpoint")
"""Keys that ``--resume`` may change with ``--set``: they do not affect the results."""
EXTENDABLE = "sampler.n_samples"
"""The key that ``--resume`` may raise to extend a run (also a completed one with its final
checkpoint): the continuation is bit-identical to a run made with the larger value."""
REGRIDDABLE = "parallel.grid"
"""The key that ``--resume`` may change from one grid of ranks to another (the results are the
same bits on every grid); a run with a grid and one without draw different random numbers, so
that change is refused."""


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
    xp = namespace(field)  # a decomposed field: a global (reproducible) sum
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
    if "parallel" in c:  # any grid gives the same bits; none (or a checkpoint older than the
        # key) draws differently
        c["parallel"]["grid"] = "a grid of ranks" if c["parallel"].get("grid") else "no grid"
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


def load_resume(out_dir: str | Path, config: dict, extending: bool = False) -> dict:
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
    saved, wanted = _comparable(state["config"]), _comparable(config)
    from .config import _schema_defaults
    defaults = _comparable(_schema_defaults())
    for section, values in wanted.items():
        # a table added to the schema after the checkpoint was written (e.g. [slhmc]) that
        # this configuration leaves at its defaults changes nothing the run did
        if section not in saved and values == defaults.get(section):
            saved[section] = values
    if extending:
        n_old, n_new = saved["sampler"].pop("n_samples"), wanted["sampler"].pop("n_samples")
        if n_new < n_old:
            raise ResumeError(f"{EXTENDABLE} = {n_new} would shorten the run of checkpoint "
                              f"{path} ({n_old} measurements); an extension needs more")
    diff = _first_difference(saved, wanted)
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
    from .toml_writer import dump_toml
    from .output import atomic_write_text

    out = Path(directory)
    if not out.is_dir():
        raise ResumeError(f"cannot resume {out}: not a directory")
    keys = [".".join(parse_override(text)[0]) for text in overrides]
    extending = EXTENDABLE in keys
    if (out / SUMMARY_NAME).exists() and not extending:
        raise ResumeError(f"{out} holds a completed run ({SUMMARY_NAME}); nothing to resume (to "
                          f"extend it: --resume {out} --set {EXTENDABLE}=N with N larger)")
    if not (out / CONFIG_NAME).is_file():
        raise ResumeError(f"cannot resume {out}: it has no {CONFIG_NAME}")
    for key in keys:
        if key not in MUTABLE_ON_RESUME and key not in (EXTENDABLE, REGRIDDABLE):
            raise ConfigError(key, "cannot be changed when resuming (only "
                              + ", ".join((*MUTABLE_ON_RESUME, EXTENDABLE, REGRIDDABLE)) + ")",
                              "--set")
    # a new grid of ranks is applied to the base too: the saved one may not fit this launch
    regrid = [text for text, key in zip(overrides, keys) if key == REGRIDDABLE]
    base = load_config(out / CONFIG_NAME, regrid)
    config = load_config(out / CONFIG_NAME, overrides) if overrides else base
    check_ranks(config)  # this launch's ranks against the grid, before anything is written
    if extending and not (out / CHECKPOINT_NAME).exists():
        raise ResumeError(f"cannot extend {out}: it has no {CHECKPOINT_NAME} (the final state "
                          "of the chains); a run that may be extended needs "
                          "run.keep_checkpoint = true")
    state = load_resume(out, config, extending=extending)
    for p in out.glob(".*.tmp"):  # temporaries of a process killed while writing
        if any(p.name.startswith(f".{n}.") for n in (CHECKPOINT_NAME, HISTORY_NAME)):
            with contextlib.suppress(OSError):
                p.unlink()
    # an extension rewrites config.toml only with its summary (lattice_ml.cli.main), so that a
    # failed extension leaves the completed run's config and summary together
    if (config != base or regrid) and not extending:
        atomic_write_text(out / CONFIG_NAME, dump_toml(config))
    return config, out, state


# ------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------
ADAPT_WINDOW = 10
"""Thermalisation updates per step-count adaptation (:mod:`lattice_ml.samplers.tuning`)."""
ADAPT_FRACTION = 0.8
"""Adaptation stops after this fraction of ``sampler.n_therm``: the rest of the thermalisation
runs with the final step count, as the measurements do."""


def _field_layout(job, config: dict) -> tuple[int, tuple]:
    """``(site_axis, tails)`` of the field of ``job`` (:class:`~lattice_ml.parallel.
    DomainRandomStreams`): φ⁴ ``[batch, *sites]`` draws its start field and momenta with no
    trailing axes; links ``[batch, D, *sites, N, N]`` draw Haar links (``(N, N)``) and algebra
    momenta (``(n_generators,)``)."""
    if job.N is None:
        return 1, ((),)
    from ..groups import n_generators
    return 2, ((job.N, job.N), (n_generators(job.N),))


def _start_field(job, config: dict, rng, xp, block=None):
    """The initial field: ``job.initial_field`` (always drawn, so the random streams are the same
    for every kind of start), replaced by the links of ``run.start_file`` when one is given
    (:func:`lattice_ml.cli.rules.read_start_links`)."""
    field = job.initial_field(rng)
    if config["run"]["start_file"] and job.N is not None:
        if block is None:
            field = read_start_links(config, xp, field.shape[0])
        else:
            field = read_start_links(config, xp, block.n_chains)[block.start:block.stop]
    return field


_EXTENSIONS = {"hdf5": "h5", "nersc": "nersc", "ildg": "lime", "openqcd": "oqcd"}


def save_configuration(out_dir: Path, config: dict, field, update: int) -> list[Path]:
    """Write the chains' configurations after update ``update`` under ``out_dir/configs/``.

    ``output.format = "hdf5"``: one file ``cfg_<update>.h5`` with every chain (batch axis =
    chain; gauge links or φ⁴ fields), the update number as its trajectory; ``nersc``, ``ildg``,
    ``openqcd``: one file per chain, ``cfg_<update>_chain<b>.<ext>``, with the format's own
    checksum or plaquette header. Every file is written atomically and its name is a function of
    the update alone, so a resumed run rewrites what it repeats with identical files.
    """
    from ..io import write_gauge

    fmt = config["output"]["format"]
    folder = out_dir / CONFIGS_NAME
    folder.mkdir(exist_ok=True)
    ext = _EXTENSIONS[fmt]
    written = []
    try:
        if fmt == "hdf5":
            path = folder / f"cfg_{update:08d}.{ext}"
            write_gauge(path, field, "hdf5", trajectory=update,
                        metadata={"update": update, "seed": config["run"]["seed"],
                                  "theory": config["theory"]["name"]})
            written.append(path)
        else:
            for b in range(field.shape[0]):
                path = folder / f"cfg_{update:08d}_chain{b}.{ext}"
                write_gauge(path, field[b:b + 1], fmt)
                written.append(path)
    except (OSError, ValueError) as exc:
        raise RunError(f"cannot save the configuration of update {update} as {fmt}: {exc}"
                       ) from exc
    return written


def _flow_fix(config: dict) -> str:
    """The keys that make a flow a better proposal, by the kind of flow."""
    kind = flow_kind(config)
    if kind == "luscher":
        return ("Lüscher's map has no parameters: train a flow from it (flow.kind = 'gradient', "
                "flow.train_steps) or use sampler.name = 'hmc'")
    if kind == "gradient":
        return ("train the flow longer or give it more parameters (flow.train_steps, flow.loops, "
                "flow.n_t)")
    return "train the flow longer or larger (flow.train_steps, flow.n_layers)"


def _check_failure_rules(job, config: dict, arrays: dict, n_steps) -> None:
    """The failure rules of a finished run (SPEC section 4): acceptance of the measured updates
    below ``sampler.min_acceptance``, or a signal observable (``job.frozen_signals``) constant in
    Monte Carlo time on every chain."""
    sm = config["sampler"]
    if "accepted" in arrays:
        acc = float(np.mean(arrays["accepted"]))
        floor = sm["min_acceptance"]
        if acc < floor:
            if sm["name"] == "flow":
                fix = _flow_fix(config)
            elif sm["name"] == "slhmc":
                fix = (f"make the effective action closer to the true one: train longer "
                       f"(slhmc.train_trajectories = {config['slhmc']['train_trajectories']}), "
                       f"try slhmc.loss = 'centered', bring slhmc.m_eff "
                       f"({config['slhmc']['m_eff']:g}) closer to theory.mass, or raise "
                       f"sampler.n_steps (the run used {n_steps})")
            else:
                fix = (f"raise sampler.n_steps (the run used {n_steps}) or lower sampler.tau, or "
                       "give "
                       "the step adaptation a longer sampler.n_therm")
            raise RunError(f"the acceptance of the measured updates, {acc:.3f}, is below the "
                           f"floor sampler.min_acceptance = {floor:g}: {fix}")
    for name in job.frozen_signals:
        h = arrays.get(name)  # [chain, time]
        if h is not None and h.shape[1] > 1 and not np.any(np.ptp(h, axis=1) > 0):
            raise RunError(f"{name} never changed during the measurements on any chain: the "
                           "chains are frozen (check sampler.start, sampler.n_steps, "
                           "sampler.tau and the couplings)")


SMALL_RUN_WORK = 1e8
"""Below this many site-force evaluations a run takes the array-API reference everywhere (the
small-run rule, :func:`small_run_reason`)."""


def force_evaluations(config: dict) -> float:
    """Estimated site-force evaluations of the whole run: field sites (``n_chains`` × volume,
    × D for links) × updates (``n_therm + n_samples × measure_every``) × forces per update
    (HMC: ``n_steps × (fine_steps or 1)``, twice that for Omelyan; heatbath and flow
    Metropolis: one sweep or proposal)."""
    sm, shape = config["sampler"], config["lattice"]["shape"]
    sites = sm["n_chains"] * float(np.prod(shape))
    if config["theory"]["name"] != "phi4":
        sites *= len(shape)
    updates = sm["n_therm"] + sm["n_samples"] * sm["measure_every"]
    if sm["name"] == "slhmc":
        updates += config["slhmc"]["train_trajectories"]
    per_update = 1.0
    if "n_steps" in sm:
        per_update = sm["n_steps"] * max(1, sm.get("fine_steps", 0)) * (
            2 if sm.get("integrator") == "omelyan" else 1)
    return sites * updates * per_update


def small_run_reason(config: dict) -> str | None:
    """Why this run takes the array-API reference instead of the Numba kernels, or ``None``.

    The rule: with ``LATTICE_ML_KERNELS`` unset (and no :func:`lattice_ml.dispatch.kernel_mode`
    in force), a run of fewer than :data:`SMALL_RUN_WORK` site-force evaluations
    (:func:`force_evaluations`) uses the reference. The reference needs about 8 ns per φ⁴
    site-force evaluation (32×32 lattice, 16 chains), so such a run spends under a second in
    its forces, less than compiling one kernel costs (about 2 s for the φ⁴ force on a cold
    cache); on tiny fields Numba's parallel threads also cost more per call than they save
    (benchmarks/bench_cli.py). Any value of ``LATTICE_ML_KERNELS`` (``auto`` included) is
    obeyed instead. The choice is kept in the checkpoint, so a resumed or extended run makes
    the same one."""
    if os.environ.get(ENV_VAR, "").strip() or current_mode() != "auto":
        return None
    work = force_evaluations(config)
    if work >= SMALL_RUN_WORK:
        return None
    return (f"small run: about {work:.2g} site-force evaluations, fewer than "
            f"{SMALL_RUN_WORK:.0e}; compiling the kernels would cost more than they save "
            f"(set LATTICE_ML_KERNELS=auto to use them)")


def run_job(config: dict, out_dir: Path, progress: str = "auto", *, resume: dict | None = None,
            on_checkpoint: Callable[[int, Path], None] | None = None, comm=None) -> dict:
    """Run the job of a validated ``config``; write ``out_dir/history.npz``; return the summary.

    ``progress`` is the display mode (``auto``: only on a terminal, ``always``, ``never``).
    ``resume`` is a checkpoint state (:func:`load_resume`) to continue from. ``on_checkpoint(k,
    path)`` is called after every checkpoint write with the number of updates done (a hook for
    tests and monitoring). SIGINT and SIGTERM stop the run at the next update boundary after
    writing a checkpoint: :class:`RunInterrupted`. A run that breaks a failure rule raises
    :class:`RunError` naming the keys to change (and writes no history). A small run takes the
    array-API reference (:func:`small_run_reason`); the summary says which under ``kernels``.
    Under MPI (:mod:`lattice_ml.cli.parallel`) every rank runs its block of the chains; ``comm``
    (default: :func:`~lattice_ml.cli.parallel.run_communicator`) is given by the other ranks,
    which write nothing and return ``None``.
    """
    check_ranks(config)  # the launch's ranks against parallel.grid (not a rule of the file)
    if comm is None:
        comm = run_communicator(config)
    if resume is not None and "small_run_reason" in resume:
        reason = resume["small_run_reason"] or None
    else:
        reason = small_run_reason(config)
    with kernel_mode("off") if reason else contextlib.nullcontext():
        return _run_job(config, out_dir, progress, resume, on_checkpoint, reason, comm)


def _run_job(config: dict, out_dir: Path, progress: str, resume: dict | None,
             on_checkpoint: Callable[[int, Path], None] | None, reason: str | None,
             comm=SERIAL) -> dict:
    t_start = time.perf_counter()
    run, sm = config["run"], config["sampler"]
    xp = namespace_by_name(run["backend"])
    n_chains = sm["n_chains"]
    job = build_job(config)
    check_supported(config, job, comm)
    announce(comm, config, resume)
    # sites over ranks (parallel.grid): every rank holds every chain on its block of sites
    dec = site_decomposition(config, comm)
    chain_comm = comm if dec is None else SERIAL
    block = chain_comm.chains(n_chains)
    root = comm.is_root
    if dec is None:
        rng = RandomStreams(run["seed"], block.count, xp, dtype=run["dtype"],
                            first_chain=block.start)
    else:
        rng = dec.random(CounterRandomStreams(run["seed"], n_chains, xp, dtype=run["dtype"]),
                         *_field_layout(job, config))
    bars = Progress(None, "", progress)
    training = None
    if job.prepare is not None:
        job.description.update(job.prepare(bars))
        training = job.description.pop(TRAINING_HISTORY, None)
    n_therm, n_samples, every = sm["n_therm"], sm["n_samples"], sm["measure_every"]
    n_pre = n_therm + job.n_train          # updates before the first measured one
    total = n_pre + n_samples * every
    adapt = job.n_steps is not None and sm.get("adapt_steps", False)
    adapt_until = int(ADAPT_FRACTION * n_therm)
    reunit_every = run["reunitarize_every"] if job.N is not None else 0
    measure_every = config["measure"]["every"]
    save_every = config["output"]["save_every"]
    hist: dict[str, list] = {}
    state = {"n_steps": job.n_steps, "window": [], "max_dev": 0.0, "unstable": 0}
    if resume is None:
        field = _start_field(job, config, rng, xp, block)
        k0, elapsed0, segments = 0, 0.0, 1
    else:
        if dec is None:
            saved = resume["field"][block.slice]
            field = xp.asarray(saved, dtype=getattr(xp, saved.dtype.name))
        else:  # rank 0 alone holds the checkpoint's field (announce): each rank gets its block
            field = dec.scatter_from(resume["field"] if root else None,
                                     _field_layout(job, config)[0], xp)
        try:
            rng.set_state(own_chains(resume["rng"], block))
        except ValueError as exc:  # a checkpoint with a grid resumed without one, or vice versa
            raise ResumeError(f"the checkpoint's random streams do not fit this run ({exc}): "
                              f"a run with parallel.grid resumes with a grid (any), one without "
                              f"without") from None
        k0, elapsed0 = int(resume["next_update"]), float(resume["elapsed_s"])
        segments = int(resume.get("segments", 1)) + 1
        if not 0 <= k0 <= total or int(resume["total_updates"]) > total:
            raise ResumeError(f"checkpoint at update {k0} of {resume['total_updates']} does not "
                              f"fit this run of {total} updates")
        hist = {key: list(arr[:, block.slice]) for key, arr in resume["history"].items()}
        tuned = resume.get("tuning", {})
        state["n_steps"] = tuned.get("n_steps", job.n_steps)
        state["window"] = [np.asarray(w) for w in tuned.get("window", [])]
        state["max_dev"] = float(tuned.get("max_unitarity_deviation", 0.0))
        state["unstable"] = int(tuned.get("unstable", 0))
        if job.stateful is not None:
            if "sampler_state" not in resume:
                raise ResumeError("the checkpoint lacks the sampler's state (sampler_state)")
            job.stateful.set_state(resume["sampler_state"])
            if getattr(job.stateful, "updates", k0) != k0:
                raise ResumeError(f"the checkpoint's sampler state is at update "
                                  f"{job.stateful.updates}, its field at {k0}")
    sampler = job.sampler
    if state["n_steps"] != job.n_steps:
        sampler = job.with_n_steps(state["n_steps"])
    # a sampler whose update returns the log-weight of the chains' new state (flow Metropolis:
    # info.log_w) gets it back at the next update instead of recomputing it (for a gradient
    # flow an inverse pass costs ~9 forward passes); it is checkpointed with the field, so a
    # resumed run continues bit-identically. It is kept through a reunitarisation, which moves
    # the links by round-off (max |U^dag U - 1| ~ 1e-15) and log w by as little.
    log_w = None
    if resume is not None and resume.get("log_w") is not None:
        saved = resume["log_w"][block.slice]
        log_w = xp.asarray(saved, dtype=getattr(xp, saved.dtype.name))

    ck_path = Path(out_dir) / CHECKPOINT_NAME
    every_k, every_s = run.get("checkpoint_every", 0), run.get("checkpoint_seconds", 0.0)
    periodic = bool(every_k or every_s)
    keep = run.get("keep_checkpoint", False)
    last_save = [time.monotonic(), -1]  # time and update count of the last checkpoint

    def save(k: int) -> None:
        if last_save[1] == k:
            return
        ck = {"config": config, "next_update": k, "total_updates": total,
              "elapsed_s": elapsed0 + time.perf_counter() - t_start, "segments": segments,
              "field": comm.gather_chains(field) if dec is None else field.gather(root=0),
              "rng": gather_states(chain_comm, rng.state()),
              "history": {key: gather_history(chain_comm, v, block) for key, v in hist.items()},
              "small_run_reason": reason or "",
              "tuning": {"n_steps": state["n_steps"] or 0, "window": list(state["window"]),
                         "max_unitarity_deviation": state["max_dev"],
                         "unstable": state["unstable"]}}
        if state["n_steps"] is None:
            ck["tuning"].pop("n_steps")
        if log_w is not None:
            ck["log_w"] = comm.gather_chains(log_w)
        if not root:
            last_save[:] = [time.monotonic(), k]
            return
        if job.stateful is not None:
            ck["sampler_state"] = job.stateful.state()
        try:
            save_checkpoint(ck_path, ck, kind="run")
        except OSError as exc:
            raise RunError(f"cannot write the checkpoint {ck_path}: {exc}") from exc
        last_save[:] = [time.monotonic(), k]
        if on_checkpoint is not None:
            on_checkpoint(k, ck_path)

    stop = _StopFlag()
    # overflow in a diverging trajectory is caught below as a non-finite field, with a message
    # that says what to do; NumPy's floating-point warnings would only add noise
    with stop.installed(), bars(total - k0, sm["name"]) as bar, np.errstate(all="ignore"):
        if periodic and resume is None:
            save(0)
        elif resume is not None:
            # counted from its start: a resumed segment that dies before its first periodic
            # checkpoint is still one of the run's segments (and the next resume says so)
            save(k0)
        for k in range(k0, total):
            try:
                if log_w is None:
                    field, info = sampler.step(field, rng)
                else:
                    field, info = sampler.step(field, rng, log_w=log_w)
                log_w = getattr(info, "log_w", None)
            except ValueError as exc:
                off_group = "unitary" in str(exc) or "not in SU(" in str(exc)
                fix = (f" (run.reunitarize_every = {reunit_every})" if job.N is not None
                       and off_group else "")
                raise RunError(f"update {k + 1} failed: {exc}{fix}") from exc
            if not _finite(field, xp):
                raise RunError(f"the field holds NaN or inf after update {k + 1}: lower the step "
                               "size (raise sampler.n_steps or lower sampler.tau) or check the "
                               "couplings")
            if reunit_every and (k + 1) % reunit_every == 0:
                state["max_dev"] = max(state["max_dev"], unitarity_deviation(field))
                field = reunitarize(field)
            measuring = k >= n_pre
            accepted = getattr(info, "accepted", None)
            if accepted is not None and measuring:
                dh = host(info.delta_h)
                if not np.all(np.isfinite(dh)):
                    raise RunError(f"ΔH is not finite (NaN or inf) in update {k + 1} (a measured "
                                   "update): "
                                   "lower the step size (raise sampler.n_steps or lower "
                                   "sampler.tau)")
                hist.setdefault("delta_h", []).append(dh)
                hist.setdefault("accepted", []).append(host(accepted))
                for key, val in getattr(info, "history", {}).items():
                    hist.setdefault(key, []).append(host(val))
            elif adapt and k < adapt_until:
                state["window"].append(chain_comm.allgather_chains(host(info.delta_h)))
                if len(state["window"]) == ADAPT_WINDOW:
                    n_new, state["unstable"] = adapted_n_steps(
                        state["n_steps"], np.stack(state["window"]), sm["target_acceptance"],
                        state["unstable"])
                    state["window"] = []
                    if n_new != state["n_steps"]:
                        state["n_steps"] = n_new
                        sampler = job.with_n_steps(n_new)
            if measuring and (k - n_pre + 1) % every == 0:
                i_meas = (k - n_pre + 1) // every - 1
                # sites over ranks: rank 0 measures the field gathered to it (exact copies;
                # the others hold their blocks only) with the one-process code, alone, so with
                # streams that refuse a draw (NoDraws)
                seen = field if dec is None else field.gather(root=0)
                if dec is None or root:
                    draws = rng if dec is None else NoDraws()
                    measured = (job.measure(seen, draws, i_meas) if job.indexed_measure
                                else job.measure(seen, draws))
                    for key, val in measured.items():
                        hist.setdefault(key, []).append(host(val))
                    if job.measure_gauge is not None and i_meas % measure_every == 0:
                        for key, val in job.measure_gauge(job.to_field(seen)).items():
                            hist.setdefault(key, []).append(host(val))
                if save_every and (i_meas + 1) % save_every == 0:
                    full = comm.gather_chains(job.to_field(field)) if dec is None else seen
                    if root:
                        save_configuration(Path(out_dir), config, full, k + 1)
            shown = {"phase": "meas" if measuring else "therm" if k < n_therm else "train"}
            if accepted is not None:
                shown["acc"] = f"{float(np.mean(host(accepted))):.2f}"
            if state["n_steps"] is not None:
                shown["steps"] = state["n_steps"]
            bar.update(1, **shown)
            # under MPI rank 0's signal and clock decide for every rank (one collective)
            due_s = bool(every_s) and time.monotonic() - last_save[0] >= every_s
            signum, due_s = comm.bcast((stop.signum, due_s))
            if signum is not None:
                save(k + 1)
                raise RunInterrupted(signum, ck_path)
            if (every_k and (k + 1) % every_k == 0) or due_s:
                save(k + 1)
        if keep:
            save(total)

        # [time, chain, ...] -> [chain, time, ...], all chains on rank 0, gathered in the
        # memory layout of one process (NumPy's sums over a view depend on the layout)
        gathered = {k: gather_history(chain_comm, v, block) for k, v in hist.items()}
        arrays = {k: np.moveaxis(np.ascontiguousarray(v), 0, 1) for k, v in gathered.items()
                  if v is not None}
        deviation = None
        if job.N is not None:
            deviation = max(comm.allgather(float(unitarity_deviation(job.to_field(field)))))
            state["max_dev"] = max(comm.allgather(state["max_dev"]))
        if comm.size > 1:
            signum = comm.bcast(stop.signum)
            if signum is not None:
                save(total)
                raise RunInterrupted(signum, ck_path)
        if not root:
            return None
        _check_failure_rules(job, config, arrays, state["n_steps"])
        finished = job.finish(arrays) if job.finish is not None else {}
        training = finished.pop(TRAINING_HISTORY, training)
        atomic_save_npz(Path(out_dir) / HISTORY_NAME, **arrays)
        if training is not None:
            atomic_save_npz(Path(out_dir) / TRAINING_NAME, **training)
        observables = {k: v for k, v in job.summarize(arrays).items() if v is not None}
        if stop.signum is not None and comm.size == 1:
            save(total)
            raise RunInterrupted(stop.signum, ck_path)

    summary = {
        **job.description,
        **finished,
        "lattice": list(job.lattice.shape),
        "sampler": sm["name"],
        "backend": backend_name(xp),
        "dtype": str(run["dtype"]),
        "seed": run["seed"],
        "n_chains": n_chains,
        "n_therm": n_therm,
        "n_samples": n_samples,
        "parallel": decomposition(comm, n_chains, dec),
    }
    if run.get("start_file"):
        summary["start_file"] = run["start_file"]
    if state["n_steps"] is not None:
        summary["n_steps"] = state["n_steps"]
        summary["n_steps_adapted"] = bool(adapt)
    if job.N is not None:
        summary["reunitarize_every"] = reunit_every
        summary["max_unitarity_deviation"] = max(state["max_dev"], deviation)
    if "accepted" in arrays:
        dh = arrays["delta_h"]
        if "integrator" in sm:  # flow Metropolis has no integrator
            summary["integrator"] = sm["integrator"]
        summary["acceptance"] = float(np.mean(arrays["accepted"]))
        summary["mean_delta_h"] = float(np.mean(dh))
        observables["exp_minus_delta_h"] = summary_entry(np.exp(-dh))
    else:
        summary["acceptance"] = 1.0  # heatbath and over-relaxation accept every update
    summary["kernels"] = current_mode()
    if reason:
        summary["kernels_reason"] = reason
    summary.update({"elapsed_s": elapsed0 + time.perf_counter() - t_start,
                    "segments": segments, "version": __version__,
                    "observables": observables})
    return summary
