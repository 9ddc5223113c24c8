"""``mpiexec -n R lattice-ml run CONFIG``: the chains of a run split over MPI ranks.

Rank 0 is the command: it validates the configuration, owns the output directory and writes
every file (``config.toml``, checkpoints, ``history.npz``, saved configurations,
``summary.json``). When its run starts (:func:`announce`, from :func:`lattice_ml.cli.run.run_job`)
it broadcasts the configuration and the resume state; the other ranks wait for that in
:func:`main` and run the same job on their block of chains (:mod:`lattice_ml.parallel`): chain
``c`` uses random stream ``c`` on every split, so fields, ΔH and observables are those of a
one-process run. Histories, checkpoint fields and random-stream states are gathered to rank 0
in global chain order (exact copies); the checkpoint holds the whole ensemble, so a run resumes
on any rank count.

Failures end every rank: an error before the run starts is broadcast to the waiting ranks (they
exit with rank 0's code, silently: rank 0 printed the one-line error); an error during the run
on rank 0 is printed by the command and then ``MPI_Abort`` ends the others; an error on another
rank prints ``lattice-ml: error: rank R: ...`` and aborts all ranks.

The ``[parallel]`` table: ``chains = true`` (default) splits the chains when the command is
started by an MPI launcher; with ``chains = false`` or without a launcher the run is a plain
one-process run (rank 0 alone; other ranks exit).

Sites over ranks: ``grid = [g_0, ..., g_{D-1}]`` (product = the ranks, ``L_mu % g_mu == 0``)
splits the *sites* instead (:class:`~lattice_ml.parallel.Decomposition`); every rank holds every
chain on its block of sites. The run then draws from
:class:`~lattice_ml.backend.CounterRandomStreams` (numbers keyed on global coordinates, one
:class:`~lattice_ml.parallel.DomainRandomStreams` layout: the field's), so the start field, the
momenta and the Metropolis numbers are the same on every grid, one rank with ``grid = [1, ...,
1]`` included; the HMC steps act on :class:`~lattice_ml.parallel.DomainArray` blocks (forces
with halo exchange, actions and ΔH reproducible global sums); the field is gathered to rank 0
alone (exact copies) for the measurements, the checkpoints and the saved configurations, which
rank 0 makes and writes, and a resumed run's field is scattered from rank 0 in blocks: only rank
0 ever holds the whole field (memory O(V) there, O(V/R) on the others). So ``history.npz`` and the summary's physics are bit-identical on every grid; a
checkpoint holds the global field and resumes on any grid (``--resume DIR --set
parallel.grid=[...]``). Supported (:data:`GRID_SUPPORTED`, :func:`parallel_rules`; the rank
count, :func:`check_ranks`, only where a run starts or resumes): HMC for φ⁴
and for pure-gauge U(1)/SU(N) with the Wilson action, without ``fine_steps`` or a start file,
on NumPy (array-api-strict's operators refuse a decomposed operand; CuPy is untried).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from ..parallel import SERIAL, Communicator, launched_by_mpi, world

__all__ = ["main", "entered", "launched_by_mpi", "run_communicator", "announce", "decomposition",
           "check_supported", "gather_history", "gather_states", "own_chains", "grid_of",
           "parallel_rules", "check_ranks", "site_decomposition", "GRID_SUPPORTED", "NoDraws"]

GRID_SUPPORTED = ("sampler.name = 'hmc' with theory.name = 'phi4', or 'u1', 'su2', 'su3', 'suN' "
                  "with theory.action = 'wilson' and no fermions; sampler.fine_steps = 0; no "
                  "run.start_file; run.backend = 'numpy'")
"""What a run with ``parallel.grid`` supports (the rest is refused in one line naming the key)."""

_STATE = {"comm": None, "announced": False, "entered": False}


def entered() -> bool:
    """Whether :func:`main` is already running in this process (so that the command's own
    entry point, when it hands an MPI launch to :func:`main`, is not handed back)."""
    return _STATE["entered"]


def _comm() -> Communicator:
    if _STATE["comm"] is None:
        _STATE["comm"] = world() if launched_by_mpi() else SERIAL
    return _STATE["comm"]


def grid_of(config: dict) -> tuple[int, ...] | None:
    """``parallel.grid`` as a tuple, ``None`` when the sites are not split."""
    grid = config.get("parallel", {}).get("grid", [])
    return tuple(int(g) for g in grid) if grid else None


def _ranks() -> int:
    return _comm().size if launched_by_mpi() else 1


def parallel_rules(c: dict) -> None:
    """The ``[parallel]`` rules of the schema: a grid of one entry per direction that divides
    the lattice, and a job the decomposed run supports (:data:`GRID_SUPPORTED`). Raise
    :class:`~lattice_ml.cli.errors.ConfigError` naming the key. The number of ranks is not a
    property of the file (``lattice-ml analyse`` and ``config`` read a run made with ``grid =
    [2, 1]`` on one process): :func:`check_ranks` checks it where a run starts or resumes."""
    from .errors import ConfigError
    grid = grid_of(c)
    if grid is None:
        return
    shape = c["lattice"]["shape"]
    if len(grid) != len(shape):
        raise ConfigError("parallel.grid", f"{list(grid)} has {len(grid)} entries, the lattice "
                          f"{shape} has {len(shape)} directions: give one per direction")
    for mu, (L, g) in enumerate(zip(shape, grid)):
        if L % g:
            raise ConfigError("parallel.grid", f"entry [{mu}] = {g} does not divide "
                              f"lattice.shape[{mu}] = {L}: the blocks must be equal")
    th, sm = c["theory"], c["sampler"]
    why = None
    if sm["name"] != "hmc":
        why = ("sampler.name", f"{sm['name']!r}")
    elif th["name"] not in ("phi4", "u1", "su2", "su3", "suN"):
        why = ("theory.name", f"{th['name']!r}")
    elif th["name"] != "phi4" and th.get("action", "wilson") != "wilson":
        why = ("theory.action", f"{th['action']!r}")
    elif th.get("fermion", "none") != "none":
        why = ("theory.fermion", f"{th['fermion']!r}")
    elif sm.get("fine_steps", 0):
        why = ("sampler.fine_steps", f"{sm['fine_steps']}")
    elif c["run"].get("start_file"):
        why = ("run.start_file", "a start file")
    elif c["run"]["backend"] != "numpy":
        # array-api-strict's operators raise on a DomainArray operand instead of deferring to
        # it (a strict step size times a decomposed force); CuPy is untried
        why = ("run.backend", f"{c['run']['backend']!r}")
    if why is not None:
        raise ConfigError(why[0], f"{why[1]} is not supported with parallel.grid (supported: "
                          f"{GRID_SUPPORTED}); remove parallel.grid to run it on one process "
                          f"or split the chains")


def check_ranks(c: dict) -> None:
    """The rules of this launch, checked where a run starts or resumes (before anything is
    written): a grid whose product is the number of ranks, and no ``parallel.chains = false``
    with a grid over several ranks. :class:`~lattice_ml.cli.errors.ConfigError` naming the key."""
    from .errors import ConfigError
    grid = grid_of(c)
    if grid is None:
        return
    ranks, product = _ranks(), int(np.prod(grid))
    if product != ranks:
        how = (f"this launch has {ranks}" if launched_by_mpi()
               else "this is one process (no MPI launcher)")
        raise ConfigError("parallel.grid", f"{list(grid)} needs {product} MPI rank(s) "
                          f"(mpiexec -n {product} lattice-ml run ...), {how} (a resumed "
                          f"run may change it: --set parallel.grid=[...])")
    if not c["parallel"]["chains"] and ranks > 1:
        raise ConfigError("parallel.chains", "false runs on one process; a grid over several "
                          "ranks needs them (with a grid the ranks split the sites and every "
                          "rank holds every chain): remove the key or the grid")


class NoDraws:
    """The random streams a measurement of a run with ``parallel.grid`` is handed: rank 0
    measures alone, so a draw there would put its streams out of step with the other ranks'
    (and change the numbers of every later update). Any use raises ``RuntimeError`` in one
    line; the supported measurements draw nothing."""

    def __getattr__(self, name):
        raise RuntimeError(f"a measurement drew random numbers (rng.{name}) in a run with "
                           f"parallel.grid, where rank 0 measures alone: not supported")


def site_decomposition(config: dict, comm: Communicator):
    """The :class:`~lattice_ml.parallel.Decomposition` of a run with ``parallel.grid`` over
    ``comm`` (``None`` without a grid)."""
    grid = grid_of(config)
    if grid is None:
        return None
    from ..parallel import Decomposition
    return Decomposition(comm, config["lattice"]["shape"], grid)


def run_communicator(config: dict) -> Communicator:
    """The communicator a run of ``config`` splits its chains (or, with ``parallel.grid``, its
    sites) over: one rank unless launched by MPI with ``parallel.chains = true`` or a grid."""
    if not config.get("parallel", {}).get("chains", True) and grid_of(config) is None:
        return SERIAL
    return _comm() if launched_by_mpi() else SERIAL


def decomposition(comm: Communicator, n_chains: int, dec=None) -> dict:
    """The summary's record of the split: ranks and chains per rank, or with a site
    decomposition ``dec`` the grid of ranks and the block of sites of each rank."""
    if dec is not None:
        return {"ranks": comm.size, "grid": list(dec.dims), "block_shape": list(dec.local_shape),
                "chains_per_rank": [n_chains] * comm.size}
    return {"ranks": comm.size, "chains_per_rank": list(comm.chains(n_chains).counts)}


def check_supported(config: dict, job, comm: Communicator) -> None:
    """ConfigError for what stage 1 does not split over ranks."""
    if comm.size == 1 or grid_of(config) is not None:  # a grid: checked by parallel_rules
        return
    from .config import ConfigError
    n = config["sampler"]["n_chains"]
    if n < comm.size:
        raise ConfigError("sampler.n_chains", f"{n} chain(s) cannot be split over {comm.size} "
                          f"MPI ranks: every rank needs at least one chain (raise it or launch "
                          f"fewer ranks)")
    if job.stateful is not None or job.prepare is not None:
        raise ConfigError("sampler.name", f"{config['sampler']['name']!r} (with its training "
                          f"or sampler state) is not split over MPI ranks yet: run it on one "
                          f"rank or set parallel.chains = false")


def gather_history(comm: Communicator, values: list, block):
    """One history ``[n_recorded, n_local, ...]`` (a list of per-update host arrays) of every
    rank as ``[n_recorded, n_chains, ...]`` on rank 0 (``None`` elsewhere)."""
    local = np.asarray(values)
    if comm.size == 1:
        return local
    full = comm.gather_chains(np.moveaxis(local, 1, 0))
    return None if full is None else np.moveaxis(full, 0, 1)


def gather_states(comm: Communicator, state: dict) -> dict | None:
    """The :class:`~lattice_ml.backend.RandomStreams` states of all ranks as the state of one
    stream over all chains (rank 0; ``None`` elsewhere)."""
    if comm.size == 1:
        return state
    states = comm.gather(state)
    if states is None:
        return None
    return {**states[0], "first_chain": states[0]["first_chain"],
            "chains": [c for s in states for c in s["chains"]]}


def own_chains(state: dict, block) -> dict:
    """This rank's part of a stream state over all chains (a checkpoint's)."""
    if "chains" not in state:
        return state
    return {**state, "first_chain": state.get("first_chain", 0) + block.start,
            "chains": state["chains"][block.start:block.stop]}


def announce(comm: Communicator, config: dict, resume: dict | None) -> None:
    """Rank 0: hand the job to the waiting ranks (once per command); with ``parallel.grid``
    without the checkpoint's field, which :func:`~lattice_ml.cli.run.run_job` scatters in
    blocks (no rank but 0 holds the whole field)."""
    if comm.size > 1 and comm.is_root and not _STATE["announced"]:
        _STATE["announced"] = True
        if resume is not None and grid_of(config) is not None:  # the field: scattered in blocks
            resume = {k: v for k, v in resume.items() if k != "field"}
        comm.bcast(("run", config, resume))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point under ``mpiexec``: rank 0 runs the command, the others serve its run."""
    from .main import main as command
    _STATE["entered"] = True
    comm = _comm()
    if comm.size == 1:
        return command(argv)
    if comm.is_root:
        code = EXIT_FAILED
        try:
            code = command(argv)
        finally:
            if not _STATE["announced"]:
                comm.bcast(("stop", code))
            elif code not in (0, 130, 143):  # interrupted: every rank stopped at a checkpoint
                sys.stderr.flush()
                comm.abort(code)
        return code
    message = comm.bcast(None)
    if message[0] == "stop":
        return int(message[1])
    _, config, resume = message
    try:
        from .run import run_job
        run_job(config, Path("."), "never", resume=resume, comm=comm)  # writes nothing
    except KeyboardInterrupt as exc:  # a signal: rank 0 wrote the checkpoint and says so
        return int(getattr(exc, "exit_code", 130))
    except BaseException as exc:  # noqa: BLE001 - every failure ends all ranks, in one line
        print(f"lattice-ml: error: rank {comm.rank}: {type(exc).__name__}: {exc}",
              file=sys.stderr, flush=True)
        comm.abort(1)
        return 1
    return 0


EXIT_FAILED = 1

if __name__ == "__main__":  # pragma: no cover - python -m lattice_ml.cli.parallel run CONFIG
    from lattice_ml.cli.parallel import main as _main  # the module run.py sees, not __main__
    sys.exit(_main())
