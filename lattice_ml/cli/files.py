"""``lattice-ml convert`` and ``lattice-ml info``: gauge-configuration files on the command line.

::

    lattice-ml convert IN OUT [--from FMT] [--to FMT] [--precision 32|64] [--endian big|little]
                              [--storage 3x3|3x2] [--index I] [--no-check] [--overwrite]
    lattice-ml info FILE [--format FMT] [--index I] [--json]

Formats: nersc, ildg, openqcd, hdf5, and for reading only checkpoint (the ``checkpoint.ckpt`` of
``lattice-ml run``; see docs/io.md). The input format is detected from the content, the output
format taken from ``--to`` or OUT's extension (``.nersc``, ``.lime`` / ``.ildg``, ``.openqcd`` /
``.oqcd``, ``.h5`` / ``.hdf5``). ``convert`` checks the input's checksums, plaquette and link
trace and that its links are in U(1)/SU(N) before writing (``--no-check`` skips that, but the
writers still refuse NaN/inf and links outside the group) and writes OUT atomically, so a
failed conversion leaves no partial file. ``info`` prints the header, the plaquette, the
largest deviations from the group (max |U^dag U - 1|, and max |det U - 1| for SU(N)) and the
status of every check; it exits with 2 when a check fails, i.e. where ``read_gauge`` would
refuse the file.

Exit codes as for the other commands: 0 ok; 1 the output could not be written; 2 bad input (a
missing, unreadable or corrupted file, a failed check, an unknown format, an existing OUT
without ``--overwrite``, options that do not fit the format); 141 (128 + SIGPIPE, what a shell
reports for a command killed by a closed pipe) when the reader of the output closed it early,
as in ``lattice-ml info --json FILE | head -c 10`` (the rest of the output is dropped quietly).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from pathlib import Path

import numpy as np

__all__ = ["add_parsers", "cmd_convert", "cmd_info"]

EXIT_OK = 0
EXIT_WRITE_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_BROKEN_PIPE = 141

_FORMATS = ("nersc", "ildg", "openqcd", "hdf5")  # lattice_ml.io.FORMATS (not imported: startup)
_READABLE = _FORMATS + ("checkpoint",)  # lattice_ml.io.READABLE_FORMATS


def _error(message: str) -> None:
    print(f"lattice-ml: error: {message}", file=sys.stderr)


def _for_command_line(message: str, flag: str) -> str:
    """A library message as the command line says it: the keyword argument ``format=`` that
    the message asks for is the flag ``flag`` here."""
    return message.replace("name it with format=",
                           f"pass {flag} ({', '.join(_READABLE)})")


def _quiet_on_closed_pipe(command):
    """``command(args)`` that ends with :data:`EXIT_BROKEN_PIPE` and no traceback when the
    reader of stdout closes it early (``| head``): the rest of the output goes to /dev/null."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            code = command(args)
            sys.stdout.flush()  # inside the try: a closed pipe shows up here at the latest
            return code
        except BrokenPipeError:
            # what is still buffered is flushed again at exit: send it to /dev/null
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            return EXIT_BROKEN_PIPE

    return run


def add_parsers(subparsers) -> None:
    """Add the ``convert`` and ``info`` subcommands; each sets ``handler`` to its function."""
    conv = subparsers.add_parser(
        "convert", help="convert a gauge configuration between file formats",
        description="Convert a gauge configuration between NERSC, ILDG, openQCD and HDF5 (or "
                    "write the links of a lattice-ml run checkpoint). The input is checked "
                    "(checksums, plaquette, link trace, links in the group) and OUT is written "
                    "atomically.")
    conv.add_argument("input", metavar="IN", type=Path, help="input file")
    conv.add_argument("output", metavar="OUT", type=Path, help="output file")
    conv.add_argument("--from", dest="from_format", choices=_READABLE,
                      help="input format (default: detected from the content)")
    conv.add_argument("--to", dest="to_format", choices=_FORMATS,
                      help="output format (default: from OUT's extension)")
    conv.add_argument("--precision", type=int, choices=(32, 64),
                      help="nersc/ildg: bits per real number (default 64)")
    conv.add_argument("--endian", choices=("big", "little"),
                      help="nersc: byte order (default big)")
    conv.add_argument("--storage", choices=("3x3", "3x2"),
                      help="nersc: whole matrices or the first two rows (default 3x3)")
    conv.add_argument("--index", type=int,
                      help="hdf5 or checkpoint input: which configuration (chain) to convert "
                           "(needed when it holds several and OUT holds one)")
    conv.add_argument("--no-check", dest="check", action="store_false",
                      help="do not verify the input's checksums, plaquette and link trace (the "
                           "writers still refuse NaN and links outside the group)")
    conv.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    conv.set_defaults(handler=_quiet_on_closed_pipe(cmd_convert))

    info = subparsers.add_parser(
        "info", help="print a gauge file's header, plaquette and checksum status",
        description="Print the header of a gauge-configuration file (or lattice-ml run "
                    "checkpoint), its plaquette, its deviation from the group and the status "
                    "of its checks; exit status 2 when a check fails.")
    info.add_argument("file", metavar="FILE", type=Path, help="gauge-configuration file")
    info.add_argument("--format", choices=_READABLE,
                      help="file format (default: detected from the content)")
    info.add_argument("--index", type=int,
                      help="hdf5 or checkpoint: inspect only this configuration (chain) "
                           "(default: all)")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(handler=_quiet_on_closed_pipe(cmd_info))


def _read(path: Path, fmt, index, check: bool, flag: str):
    """``(U_host, info)`` or an exit code after printing the error; ``flag`` is the option
    that names the input format (``--from`` or ``--format``)."""
    from lattice_ml.io import GaugeFileError, inspect_gauge

    try:
        U, info = inspect_gauge(path, fmt, index=index)
        if check:
            info.raise_on_failure()
    except FileNotFoundError:
        _error(f"no such file: {path}")
        return EXIT_BAD_INPUT
    except IsADirectoryError:
        _error(f"{path} is a directory, not a gauge file")
        return EXIT_BAD_INPUT
    except (GaugeFileError, ValueError, IndexError) as exc:
        _error(_for_command_line(str(exc), flag))
        return EXIT_BAD_INPUT
    except OSError as exc:
        _error(f"cannot read {path}: {exc.strerror or exc}")
        return EXIT_BAD_INPUT
    return U, info


def cmd_convert(args: argparse.Namespace) -> int:
    from lattice_ml.io import format_from_extension, write_gauge

    target = args.to_format or format_from_extension(args.output)
    if target is None:
        _error(f"cannot tell the output format from {args.output.name!r}; pass --to "
               f"({', '.join(_FORMATS)}) or use a .nersc, .lime, .openqcd or .h5 name")
        return EXIT_BAD_INPUT
    opts = {}
    allowed = {"nersc": ("precision", "endian", "storage"), "ildg": ("precision",),
               "openqcd": (), "hdf5": ()}[target]
    for name in ("precision", "endian", "storage"):
        value = getattr(args, name)
        if value is None:
            continue
        if name not in allowed:
            _error(f"--{name} does not apply to {target} output")
            return EXIT_BAD_INPUT
        opts[name] = value
    if args.output.exists() and not args.overwrite:
        _error(f"{args.output} exists; pass --overwrite to replace it")
        return EXIT_BAD_INPUT
    if args.output.is_dir():
        _error(f"{args.output} is a directory")
        return EXIT_BAD_INPUT
    got = _read(args.input, args.from_format, args.index, args.check, "--from")
    if isinstance(got, int):
        return got
    U, info = got
    if target != "hdf5" and U.shape[0] != 1:
        _error(f"{args.input} holds {U.shape[0]} configurations but {target} files hold one; "
               "choose one with --index")
        return EXIT_BAD_INPUT
    if target == "hdf5":
        opts["metadata"] = {"source": {"path": str(args.input), "format": info.format,
                                       "header": _jsonable(info.header)}}
        if isinstance(info.header.get("next_update"), int):  # a run checkpoint
            opts["trajectory"] = info.header["next_update"]
    try:
        written = write_gauge(args.output, U, target, **opts)
    except ValueError as exc:
        _error(f"cannot write {target}: {exc}")
        return EXIT_BAD_INPUT
    except OSError as exc:
        _error(f"cannot write {args.output}: {exc.strerror or exc}")
        return EXIT_WRITE_FAILED
    from lattice_ml.io._common import plaquette_and_trace

    lattice = "x".join(map(str, written.lattice))
    plaq = f"; plaquette {plaquette_and_trace(U[0])[0]:.12f}" if info.N > 0 else ""
    print(f"{args.input} ({info.format}) -> {args.output} ({target}, {lattice}, "
          f"{written.precision}-bit){plaq}")
    return EXIT_OK


def _jsonable(obj):
    """``obj`` as plain JSON values; NaN and infinities become None (strict JSON has none)."""
    text = json.dumps(obj, default=lambda o: o.item() if isinstance(o, np.generic) else str(o))
    return json.loads(text, parse_constant=lambda name: None)


def _short(value, limit: int = 100) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _theory_line(theory) -> str:
    """``u1, beta = 2.0, action = wilson`` from a config's ``[theory]`` table."""
    if not isinstance(theory, dict):
        return str(theory)
    rest = [f"{k} = {v}" for k, v in theory.items() if k != "name"]
    return ", ".join([str(theory.get("name", "?"))] + rest)


def cmd_info(args: argparse.Namespace) -> int:
    got = _read(args.file, args.format, args.index, False, "--format")
    if isinstance(got, int):
        return got
    U, info = got
    from lattice_ml.io._common import plaquette_and_trace

    gauge = info.N > 0  # an HDF5 ensemble or a checkpoint may hold scalar fields
    checkpoint = info.format == "checkpoint"
    plaqs = [plaquette_and_trace(u) for u in U] if gauge else []
    failed = info.failed
    if args.json:
        out = {"file": str(args.file), "format": info.format, "lattice": list(info.lattice),
               "N": info.N, "n_configurations": info.n_configs, "precision": info.precision,
               "endian": info.endian, "storage": info.storage,
               "header": _jsonable(info.header),
               "plaquette": [p for p, _ in plaqs], "link_trace": [t for _, t in plaqs],
               "max_unitarity_deviation": info.unitarity, "max_det_deviation": info.det_deviation,
               "checks": [{"name": c.name, "stored": c.stored, "computed": c.computed,
                           "ok": c.ok, "tolerance": c.tolerance} for c in info.checks],
               "ok": not failed}
        print(json.dumps(_jsonable(out), indent=2))
        return EXIT_BAD_INPUT if failed else EXIT_OK
    print(f"file:        {args.file}")
    print(f"format:      {info.format}" + (f" (kind {info.header['kind']})" if checkpoint else ""))
    group = ("U(1)" if info.N == 1 else f"SU({info.N})") + " links" if gauge else "fields"
    print(f"lattice:     {'x'.join(map(str, info.lattice))} (L0 = time, library order), "
          f"{group}")
    storage = f", storage {info.storage}" if info.storage else ""
    what = "chain" if checkpoint else "configuration"
    print(f"data:        {info.precision}-bit, {info.endian} endian{storage}, "
          f"{info.n_configs} {what}{'s' if info.n_configs != 1 else ''}")
    if checkpoint:
        print(f"update:      {info.header['next_update']} of {info.header['total_updates']} "
              "(next_update of total_updates)")
        print(f"theory:      {_theory_line(info.header['theory'])}")
    print("header:")
    for key, value in info.header.items():
        if isinstance(value, dict) and key == "metadata":
            for k, v in value.items():
                print(f"  metadata.{k} = {_short(v)}")
        else:
            print(f"  {key} = {_short(value)}")
    if not gauge:
        pass
    elif checkpoint:
        print("plaquette:   <Re Tr U_p>/N of each chain, computed from the data")
        for chain, (p, _) in zip(info.header["chains"], plaqs):
            print(f"  chain {chain}: {p:.15f}")
    elif len(plaqs) == 1:
        print(f"plaquette:   {plaqs[0][0]:.15f}   (<Re Tr U_p>/N, computed from the data)")
        print(f"link trace:  {plaqs[0][1]:.15f}   (<Re Tr U>/N)")
    else:
        p = np.array([q for q, _ in plaqs])
        print(f"plaquette:   mean {p.mean():.15f}, min {p.min():.15f}, max {p.max():.15f} over "
              f"{len(p)} configurations")
    if gauge:
        det = "" if info.det_deviation is None else f", max |det U - 1| = {info.det_deviation:.2e}"
        print(f"unitarity:   max |U^dag U - 1| = {info.unitarity:.2e}{det}")
    print("checks:")
    for c in info.checks:
        print(f"  {c.describe()}")
    if failed:
        _error(f"{args.file}: {len(failed)} check{'s' if len(failed) > 1 else ''} failed: "
               + ", ".join(c.name for c in failed))
        return EXIT_BAD_INPUT
    return EXIT_OK
