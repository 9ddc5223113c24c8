"""The ``lattice-ml`` command.

::

    lattice-ml run [CONFIG.toml] [--out DIR] [--set KEY=VALUE ...] [--overwrite]
    lattice-ml run --resume DIR [--set run.progress=... ...] [--set sampler.n_samples=N]
    lattice-ml config [CONFIG.toml] [--set KEY=VALUE ...]
    lattice-ml convert IN OUT [--to FORMAT] [...]     (lattice_ml.cli.files)
    lattice-ml info FILE [--json]                     (lattice_ml.cli.files)
    lattice-ml analyse DIR [--discard N] [--bin B] [--S S] [--json]   (lattice_ml.cli.analyse)
    lattice-ml plot DIR [--to PLOTS] [--discard N] [--format png svg]  (lattice_ml.cli.plot)
    lattice-ml --version

Exit codes: 0 success; 1 the run failed (or its results could not be written); 2 bad usage: a
configuration error, an output directory that already holds a completed run, or bad arguments
(and for ``--resume``: a missing, corrupt or foreign checkpoint); 130 interrupted by Ctrl-C, 143
by SIGTERM (a checkpoint is written first; ``run --resume DIR`` continues). Errors are one line
on stderr, ``lattice-ml: error: <message>``, never a traceback for configuration errors
(``run --debug`` shows the traceback of a failed run).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Sequence

from lattice_ml import __version__
from lattice_ml.cli.config import ConfigError, load_config
from lattice_ml.cli.toml_writer import dump_toml
from lattice_ml.cli.output import (
    CHECKPOINT_NAME,
    CONFIG_NAME,
    SUMMARY_NAME,
    OutputError,
    RunLock,
    atomic_write_json,
    atomic_write_text,
    check_out_dir,
    discard_previous,
    prepare_out_dir,
    restore_previous,
    set_aside,
)

__all__ = ["main", "build_parser", "format_value_error", "digest"]

EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lattice-ml",
        description="Lattice field theory runs from a TOML configuration "
                    "(see docs/cli.md; `lattice-ml config` prints the default).",
    )
    parser.add_argument("--version", action="version", version=f"lattice-ml {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    set_help = ("override one key, e.g. --set sampler.n_samples=500 --set lattice.shape=[8,8] "
                "--set theory.form=standard (the value is TOML; a bare word is a string); "
                "repeatable")

    run = sub.add_parser("run", help="run one job and write DIR/summary.json",
                         description="Run one job. Without CONFIG the embedded default runs.")
    run.add_argument("config", nargs="?", metavar="CONFIG.toml",
                     help="configuration file (default: the embedded default)")
    run.add_argument("--out", "-o", metavar="DIR", type=Path,
                     help="output directory (default: ./lattice-ml-runs/<UTC timestamp>)")
    run.add_argument("--set", "-s", dest="overrides", action="append", default=[],
                     metavar="KEY=VALUE", help=set_help)
    run.add_argument("--overwrite", action="store_true",
                     help="replace the run in an output directory that already holds one "
                          "(it is kept in DIR/previous-run/ until the new run completes, and "
                          "put back if the new run fails)")
    run.add_argument("--debug", action="store_true",
                     help="print the full traceback when the run fails")
    run.add_argument("--resume", metavar="DIR", type=Path,
                     help="continue the unfinished run in DIR from DIR/checkpoint.ckpt, with "
                          "DIR/config.toml (--set may change only run.progress and the "
                          "checkpoint keys); the result is bit-identical to an uninterrupted run")

    cfg = sub.add_parser("config", help="print the resolved configuration as TOML",
                         description="Print the resolved configuration (the embedded default, "
                                     "or CONFIG merged over it, with --set applied) as TOML.")
    cfg.add_argument("config", nargs="?", metavar="CONFIG.toml",
                     help="configuration file (default: the embedded default)")
    cfg.add_argument("--set", "-s", dest="overrides", action="append", default=[],
                     metavar="KEY=VALUE", help=set_help)
    cfg.add_argument("--no-comments", dest="comments", action="store_false",
                     help="omit the one-line documentation after each key")
    from lattice_ml.cli.analyse import add_parser as add_analyse_parser
    from lattice_ml.cli.files import add_parsers as add_file_parsers
    from lattice_ml.cli.plot import add_parser as add_plot_parser

    add_file_parsers(sub)  # convert, info
    add_analyse_parser(sub)
    add_plot_parser(sub)
    return parser


def _error(message: str) -> None:
    print(f"lattice-ml: error: {message}", file=sys.stderr)


def format_value_error(mean: Any, error: Any) -> str:
    """``0.6977(11)``-style text for a mean and its error (two significant digits)."""
    try:
        m, e = float(mean), float(error)
    except (TypeError, ValueError):
        return f"{mean} +/- {error}"
    if not (math.isfinite(m) and math.isfinite(e)) or e <= 0:
        return f"{m:.6g} +/- {e:.2g}"
    digits = max(0, 1 - int(math.floor(math.log10(e))))
    if digits > 12:
        return f"{m:.6g} +/- {e:.2g}"
    err_units = round(e * 10 ** digits)
    if digits == 0:
        return f"{m:.0f}({err_units})"
    return f"{m:.{digits}f}({err_units})"


def digest(summary: dict, max_observables: int | None = None) -> list[str]:
    """The lines that summarise a run's ``summary.json``: a head line, then one line per
    observable (all of them, or the first ``max_observables``); an observable whose τ_int is
    large against its measurements per chain (fewer than 20 τ_int each) is flagged."""
    lattice = summary.get("lattice")
    shape = "x".join(str(n) for n in lattice) if isinstance(lattice, (list, tuple)) else "?"
    head = f"{summary.get('theory', '?')} on {shape}, {summary.get('sampler', '?')}"
    extras = []
    if "n_samples" in summary:
        extras.append(f"{summary['n_samples']} samples")
    if isinstance(summary.get("acceptance"), (int, float)):
        extras.append(f"acceptance {summary['acceptance']:.3f}")
    if isinstance(summary.get("elapsed_s"), (int, float)):
        extras.append(f"{summary['elapsed_s']:.1f} s")
    lines = [head + (": " + ", ".join(extras) if extras else "")]
    obs = summary.get("observables")
    n = summary.get("n_samples")
    if isinstance(obs, dict) and obs:
        for name, val in list(obs.items())[:max_observables]:
            mean = val.get("mean", val.get("value")) if isinstance(val, dict) else None
            if mean is not None:
                text = f"{name} = {format_value_error(mean, val.get('error'))}"
                tau = val.get("tau_int")
                if isinstance(tau, (int, float)):
                    text += f"  (tau_int {tau:.2g})"
                    if isinstance(n, int) and n < 20 * tau:
                        text += (f"  [only {n / tau:.0f} tau_int per chain: error and tau_int "
                                 "are unreliable; measure longer]")
            else:
                text = f"{name} = {val}"
            lines.append("  " + text)
    return lines


def _cmd_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as exc:
        _error(str(exc))
        return EXIT_USAGE
    sys.stdout.write(dump_toml(config, comments=args.comments))
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    """``lattice-ml run``: validate everything, lock the directory, run, write the summary last.

    Order of events: (1) the configuration passes the schema, its cross-key rules and the checks
    of the world outside it (start file, backend, kernel mode) -- nothing is written before;
    (2) the output directory is created and locked (:class:`~.output.RunLock`); a completed or
    unfinished run in it is refused, or with ``--overwrite`` moved into ``previous-run/``;
    (3) ``config.toml``, the run, ``history.npz``; (4) ``summary.json``, and only then is the
    earlier run deleted. A failed run leaves the earlier run as it was.
    """
    if args.resume is not None and (args.config or args.out or args.overwrite):
        _error("--resume DIR takes the configuration and the output directory from DIR: "
               "give no CONFIG.toml, --out or --overwrite")
        return EXIT_USAGE
    try:
        from lattice_ml.cli.run import run_job
        if args.resume is not None:
            from lattice_ml.cli.run import ResumeError, prepare_resume
        else:
            ResumeError, prepare_resume = OutputError, None
    except ImportError as exc:
        _error(f"running jobs is not available in this installation ({exc})")
        return EXIT_RUN_FAILED
    if args.resume is None:
        try:  # 1. everything that can be checked before touching the disk
            config = load_config(args.config, args.overrides)
            from lattice_ml.cli.parallel import check_ranks   # the launch's rank count, first
            check_ranks(config)
            out = prepare_out_dir(args.out)
        except (ConfigError, OutputError) as exc:
            _error(str(exc))
            return EXIT_USAGE
    else:
        out = Path(args.resume)
        if not out.is_dir():
            _error(f"cannot resume {out}: not a directory")
            return EXIT_USAGE
    try:
        with RunLock(out):
            return _run_locked(args, out, run_job, prepare_resume, ResumeError,
                               None if args.resume is not None else config)
    except OutputError as exc:
        _error(str(exc))
        return EXIT_USAGE


def _run_locked(args, out: Path, run_job, prepare_resume, ResumeError, config) -> int:
    resume, aside = None, None
    try:
        if config is None:
            config, out, resume = prepare_resume(out, args.overrides)
        else:
            check_out_dir(out, overwrite=args.overwrite)
            if args.overwrite:
                aside = set_aside(out)
            atomic_write_text(out / CONFIG_NAME, dump_toml(config))
    except (ConfigError, ResumeError, OutputError) as exc:
        _error(str(exc))
        return EXIT_USAGE
    except OSError as exc:
        _error(f"cannot write to the output directory: {exc}")
        return EXIT_RUN_FAILED

    def failed(code: int) -> int:
        if aside is not None:
            restore_previous(out, aside)
            print(f"lattice-ml: the earlier run in {out} is kept as it was", file=sys.stderr)
        return code

    try:
        if resume is None:
            summary = run_job(config, out, config["run"]["progress"])
        else:
            summary = run_job(config, out, config["run"]["progress"], resume=resume)
    except KeyboardInterrupt as exc:
        print(file=sys.stderr)
        saved = getattr(exc, "checkpoint", None)
        more = f"; continue with: lattice-ml run --resume {out}" if saved else ""
        kept = f"; the earlier run is in {aside}" if aside is not None else ""
        _error(f"interrupted; no {SUMMARY_NAME} was written in {out}{more}{kept}")
        if not saved:
            return failed(getattr(exc, "exit_code", EXIT_INTERRUPTED))
        return getattr(exc, "exit_code", EXIT_INTERRUPTED)
    except ConfigError as exc:
        _error(str(exc))
        return failed(EXIT_USAGE)
    except Exception as exc:  # noqa: BLE001 - report any failure of the run in one line
        if args.debug:
            traceback.print_exc()
        _error(f"run failed: {type(exc).__name__}: {exc}")
        return failed(EXIT_RUN_FAILED)
    if not isinstance(summary, dict):
        _error(f"run failed: run_job returned {type(summary).__name__}, not a dict")
        return failed(EXIT_RUN_FAILED)

    # 4. the summary, last: its presence marks a complete run
    summary.setdefault("version", __version__)
    summary.setdefault("config", config)
    path = out / SUMMARY_NAME
    try:
        atomic_write_json(path, summary)
    except (TypeError, ValueError, OSError) as exc:
        _error(f"run finished but its summary cannot be written: {exc}")
        return failed(EXIT_RUN_FAILED)
    if resume is not None:  # an extension's config.toml is written with its summary
        try:
            atomic_write_text(out / CONFIG_NAME, dump_toml(config))
        except OSError as exc:
            _error(f"the summary is written but {CONFIG_NAME} cannot be: {exc}")
            return EXIT_RUN_FAILED
    discard_previous(aside)
    if not config["run"].get("keep_checkpoint", True):  # complete: summary.json marks it
        try:
            (out / CHECKPOINT_NAME).unlink(missing_ok=True)
        except OSError:
            pass
    print(f"summary: {path}")
    for line in digest(summary):
        print(line)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lattice-ml``; returns the exit code (see the module docstring).

    Unless ``OMP_WAIT_POLICY`` is set, the command sets it to ``passive`` before any Numba
    kernel starts its OpenMP threads: idle threads then sleep instead of spinning, which on a
    machine with more busy processes than cores made the parallel kernels burn 5-14x the CPU
    time of the reference (benchmarks/bench_cli.py, docs/cli.md "Kernels")."""
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    from . import parallel as _parallel       # under mpiexec: rank 0 commands, the others serve
    if _parallel.launched_by_mpi() and not _parallel.entered():
        return _parallel.main(argv)
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help, --version, argparse errors
            code = exc.code
            return code if isinstance(code, int) else (0 if code is None else EXIT_USAGE)
        if args.command == "run":
            return _cmd_run(args)
        if args.command == "config":
            return _cmd_config(args)
        if getattr(args, "handler", None) is not None:  # convert, info, analyse, plot
            return args.handler(args)
        parser.print_usage(sys.stderr)  # pragma: no cover - argparse requires a command
        return EXIT_USAGE
    except KeyboardInterrupt:  # Ctrl-C before a run's own handler is installed (start-up)
        print(file=sys.stderr)
        _error("interrupted before the run started")
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
