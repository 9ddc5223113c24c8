"""The ``lattice-ml`` command.

::

    lattice-ml run [CONFIG.toml] [--out DIR] [--set KEY=VALUE ...] [--overwrite]
    lattice-ml run --resume DIR [--set run.progress=... ...]
    lattice-ml config [CONFIG.toml] [--set KEY=VALUE ...]
    lattice-ml convert IN OUT [--to FORMAT] [...]     (lattice_ml.cli.files)
    lattice-ml info FILE [--json]                     (lattice_ml.cli.files)
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
import sys
import traceback
from pathlib import Path
from typing import Any, Sequence

from lattice_ml import __version__
from lattice_ml.cli.config import ConfigError, dump_toml, load_config
from lattice_ml.cli.output import (
    CHECKPOINT_NAME,
    CONFIG_NAME,
    SUMMARY_NAME,
    OutputError,
    atomic_write_json,
    atomic_write_text,
    prepare_out_dir,
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
                     help="reuse an output directory that already holds a summary.json "
                          "(the old summary is deleted before the run starts)")
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
    from lattice_ml.cli.files import add_parsers as add_file_parsers

    add_file_parsers(sub)  # convert, info
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


def digest(summary: dict, max_observables: int = 4) -> list[str]:
    """One or two lines that summarise a run's ``summary.json``."""
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
    if isinstance(obs, dict) and obs:
        parts = []
        for name, val in list(obs.items())[:max_observables]:
            mean = val.get("mean", val.get("value")) if isinstance(val, dict) else None
            if mean is not None:
                text = f"{name} = {format_value_error(mean, val.get('error'))}"
                if isinstance(val.get("tau_int"), (int, float)):
                    text += f" (tau_int {val['tau_int']:.2g})"
            else:
                text = f"{name} = {val}"
            parts.append(text)
        lines.append("  " + "; ".join(parts))
    return lines


def _cmd_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as exc:
        _error(str(exc))
        return EXIT_USAGE
    sys.stdout.write(dump_toml(config, comments=args.comments))
    return EXIT_OK


def _resume(args: argparse.Namespace):
    """``(config, out, state)`` of ``run --resume DIR``, or the exit code of a refusal."""
    if args.config or args.out or args.overwrite:
        _error("--resume DIR takes the configuration and the output directory from DIR: "
               "give no CONFIG.toml, --out or --overwrite")
        return EXIT_USAGE
    try:
        from lattice_ml.cli.run import ResumeError, prepare_resume
    except ImportError as exc:
        _error(f"running jobs is not available in this installation ({exc})")
        return EXIT_RUN_FAILED
    try:
        return prepare_resume(args.resume, args.overrides)
    except (ConfigError, ResumeError) as exc:
        _error(str(exc))
        return EXIT_USAGE
    except OSError as exc:
        _error(f"cannot resume {args.resume}: {exc}")
        return EXIT_RUN_FAILED


def _cmd_run(args: argparse.Namespace) -> int:
    resume = None
    if args.resume is not None:
        got = _resume(args)
        if isinstance(got, int):
            return got
        config, out, resume = got
    else:
        # 1. everything that can be checked before touching the disk
        try:
            config = load_config(args.config, args.overrides)
        except ConfigError as exc:
            _error(str(exc))
            return EXIT_USAGE
    try:
        from lattice_ml.cli.run import run_job
    except ImportError as exc:
        _error(f"running jobs is not available in this installation ({exc})")
        return EXIT_RUN_FAILED

    # 2. the output directory (an old summary.json is deleted first with --overwrite)
    try:
        if resume is None:
            out = prepare_out_dir(args.out, overwrite=args.overwrite)
            atomic_write_text(out / CONFIG_NAME, dump_toml(config))
    except OutputError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except OSError as exc:
        _error(f"cannot write to the output directory: {exc}")
        return EXIT_RUN_FAILED

    # 3. the run; `progress` is the display mode ("auto", "always", "never") for
    #    lattice_ml.cli.progress.Progress(total, label, mode)
    try:
        if resume is None:
            summary = run_job(config, out, config["run"]["progress"])
        else:
            summary = run_job(config, out, config["run"]["progress"], resume=resume)
    except KeyboardInterrupt as exc:
        print(file=sys.stderr)
        saved = getattr(exc, "checkpoint", None)
        more = f"; continue with: lattice-ml run --resume {out}" if saved else ""
        _error(f"interrupted; no {SUMMARY_NAME} was written in {out}{more}")
        return getattr(exc, "exit_code", EXIT_INTERRUPTED)
    except ConfigError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - report any failure of the run in one line
        if args.debug:
            traceback.print_exc()
        _error(f"run failed: {type(exc).__name__}: {exc}")
        return EXIT_RUN_FAILED
    if not isinstance(summary, dict):
        _error(f"run failed: run_job returned {type(summary).__name__}, not a dict")
        return EXIT_RUN_FAILED

    # 4. the summary, last: its presence marks a complete run
    summary.setdefault("version", __version__)
    summary.setdefault("config", config)
    path = out / SUMMARY_NAME
    try:
        atomic_write_json(path, summary)
    except (TypeError, ValueError, OSError) as exc:
        _error(f"run finished but its summary cannot be written: {exc}")
        return EXIT_RUN_FAILED
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
    """Entry point of ``lattice-ml``; returns the exit code (see the module docstring)."""
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
    if getattr(args, "handler", None) is not None:  # convert, info (lattice_ml.cli.files)
        return args.handler(args)
    parser.print_usage(sys.stderr)  # pragma: no cover - argparse requires a command
    return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
