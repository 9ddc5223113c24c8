"""``lattice-ml convert`` and ``lattice-ml info``: gauge-configuration files on the command line.

::

    lattice-ml convert IN OUT [--from FMT] [--to FMT] [--precision 32|64] [--endian big|little]
                              [--storage 3x3|3x2] [--index I] [--no-check] [--overwrite]
    lattice-ml info FILE [--format FMT] [--index I] [--json]

Formats: nersc, ildg, openqcd, hdf5 (see docs/io.md). The input format is detected from the
content, the output format taken from ``--to`` or OUT's extension (``.nersc``, ``.lime`` /
``.ildg``, ``.openqcd`` / ``.oqcd``, ``.h5`` / ``.hdf5``). ``convert`` checks the input's
checksums, plaquette and link trace before writing (``--no-check`` skips that) and writes OUT
atomically, so a failed conversion leaves no partial file. ``info`` prints the header, the
plaquette and the status of every check; it exits with 2 when a check fails.

Exit codes as for the other commands: 0 ok; 1 the output could not be written; 2 bad input (a
missing, unreadable or corrupted file, a failed check, an unknown format, an existing OUT
without ``--overwrite``, options that do not fit the format).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

__all__ = ["add_parsers", "cmd_convert", "cmd_info"]

EXIT_OK = 0
EXIT_WRITE_FAILED = 1
EXIT_BAD_INPUT = 2

_FORMATS = ("nersc", "ildg", "openqcd", "hdf5")


def _error(message: str) -> None:
    print(f"lattice-ml: error: {message}", file=sys.stderr)


def add_parsers(subparsers) -> None:
    """Add the ``convert`` and ``info`` subcommands; each sets ``handler`` to its function."""
    conv = subparsers.add_parser(
        "convert", help="convert a gauge configuration between file formats",
        description="Convert a gauge configuration between NERSC, ILDG, openQCD and HDF5. The "
                    "input is checked (checksums, plaquette, link trace) and OUT is written "
                    "atomically.")
    conv.add_argument("input", metavar="IN", type=Path, help="input file")
    conv.add_argument("output", metavar="OUT", type=Path, help="output file")
    conv.add_argument("--from", dest="from_format", choices=_FORMATS,
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
                      help="hdf5 input: which configuration of the ensemble (needed when it "
                           "holds several and OUT holds one)")
    conv.add_argument("--no-check", dest="check", action="store_false",
                      help="do not verify the input's checksums, plaquette and link trace")
    conv.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    conv.set_defaults(handler=cmd_convert)

    info = subparsers.add_parser(
        "info", help="print a gauge file's header, plaquette and checksum status",
        description="Print the header of a gauge-configuration file, its plaquette and the "
                    "status of its checks; exit status 2 when a check fails.")
    info.add_argument("file", metavar="FILE", type=Path, help="gauge-configuration file")
    info.add_argument("--format", choices=_FORMATS,
                      help="file format (default: detected from the content)")
    info.add_argument("--index", type=int,
                      help="hdf5: inspect only this configuration (default: all)")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(handler=cmd_info)


def _read(path: Path, fmt, index, check: bool):
    """``(U_host, info)`` or an exit code after printing the error."""
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
        _error(str(exc))
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
    got = _read(args.input, args.from_format, args.index, args.check)
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
    return json.loads(json.dumps(obj, default=lambda o: o.item() if isinstance(o, np.generic)
                                 else str(o)))


def _unitarity(U: np.ndarray) -> tuple[float, float]:
    """max |U^dagger U - 1| and max |det U - 1| of host links."""
    N = U.shape[-1]
    dev = np.abs(np.conj(np.swapaxes(U, -1, -2)) @ U - np.eye(N)).max()
    ddev = np.abs(np.linalg.det(U) - 1.0).max() if N > 1 else 0.0
    return float(dev), float(ddev)


def _short(value, limit: int = 100) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def cmd_info(args: argparse.Namespace) -> int:
    got = _read(args.file, args.format, args.index, check=False)
    if isinstance(got, int):
        return got
    U, info = got
    from lattice_ml.io._common import plaquette_and_trace

    gauge = info.N > 0  # an HDF5 ensemble may hold scalar fields
    plaqs = [plaquette_and_trace(u) for u in U] if gauge else []
    unit, det_dev = _unitarity(U) if gauge else (None, None)
    failed = info.failed
    if args.json:
        out = {"file": str(args.file), "format": info.format, "lattice": list(info.lattice),
               "N": info.N, "n_configurations": info.n_configs, "precision": info.precision,
               "endian": info.endian, "storage": info.storage,
               "header": _jsonable(info.header),
               "plaquette": [p for p, _ in plaqs], "link_trace": [t for _, t in plaqs],
               "max_unitarity_deviation": unit, "max_det_deviation": det_dev,
               "checks": [{"name": c.name, "stored": c.stored, "computed": c.computed,
                           "ok": c.ok, "tolerance": c.tolerance} for c in info.checks],
               "ok": not failed}
        print(json.dumps(_jsonable(out), indent=2))
        return EXIT_BAD_INPUT if failed else EXIT_OK
    print(f"file:        {args.file}")
    print(f"format:      {info.format}")
    group = ("U(1)" if info.N == 1 else f"SU({info.N})") + " links" if gauge else "fields"
    print(f"lattice:     {'x'.join(map(str, info.lattice))} (L0 = time, library order), "
          f"{group}")
    storage = f", storage {info.storage}" if info.storage else ""
    print(f"data:        {info.precision}-bit, {info.endian} endian{storage}, "
          f"{info.n_configs} configuration{'s' if info.n_configs != 1 else ''}")
    print("header:")
    for key, value in info.header.items():
        if isinstance(value, dict) and key == "metadata":
            for k, v in value.items():
                print(f"  metadata.{k} = {_short(v)}")
        else:
            print(f"  {key} = {_short(value)}")
    if not gauge:
        pass
    elif len(plaqs) == 1:
        print(f"plaquette:   {plaqs[0][0]:.15f}   (<Re Tr U_p>/N, computed from the data)")
        print(f"link trace:  {plaqs[0][1]:.15f}   (<Re Tr U>/N)")
    else:
        p = np.array([q for q, _ in plaqs])
        print(f"plaquette:   mean {p.mean():.15f}, min {p.min():.15f}, max {p.max():.15f} over "
              f"{len(p)} configurations")
    if gauge:
        print(f"unitarity:   max |U^dag U - 1| = {unit:.2e}, max |det U - 1| = {det_dev:.2e}")
    print("checks:")
    for c in info.checks:
        print(f"  {c.describe()}")
    if failed:
        _error(f"{args.file}: {len(failed)} check{'s' if len(failed) > 1 else ''} failed: "
               + ", ".join(c.name for c in failed))
        return EXIT_BAD_INPUT
    return EXIT_OK
