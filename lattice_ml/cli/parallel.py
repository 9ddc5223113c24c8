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
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from ..parallel import SERIAL, Communicator, launched_by_mpi, world

__all__ = ["main", "entered", "launched_by_mpi", "run_communicator", "announce", "decomposition", "check_supported",
           "gather_history", "gather_states", "own_chains"]

_STATE = {"comm": None, "announced": False, "entered": False}


def entered() -> bool:
    """Whether :func:`main` is already running in this process (so that the command's own
    entry point, when it hands an MPI launch to :func:`main`, is not handed back)."""
    return _STATE["entered"]


def _comm() -> Communicator:
    if _STATE["comm"] is None:
        _STATE["comm"] = world() if launched_by_mpi() else SERIAL
    return _STATE["comm"]


def run_communicator(config: dict) -> Communicator:
    """The communicator a run of ``config`` splits its chains over (one rank unless launched by
    MPI with ``parallel.chains = true``)."""
    if not config.get("parallel", {}).get("chains", True):
        return SERIAL
    return _comm() if launched_by_mpi() else SERIAL


def decomposition(comm: Communicator, n_chains: int) -> dict:
    """The summary's record of the split: ranks and chains per rank."""
    return {"ranks": comm.size, "chains_per_rank": list(comm.chains(n_chains).counts)}


def check_supported(config: dict, job, comm: Communicator) -> None:
    """ConfigError for what stage 1 does not split over ranks."""
    if comm.size == 1:
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
    """Rank 0: hand the job to the waiting ranks (once per command)."""
    if comm.size > 1 and comm.is_root and not _STATE["announced"]:
        _STATE["announced"] = True
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
