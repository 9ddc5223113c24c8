"""NERSC gauge-configuration files (4D SU(3)): read and write, 3x3 and 3x2 storage, 32/64 bit,
big- and little-endian, with checksum, plaquette and link-trace checks.

File layout
-----------
An ASCII header, one ``KEY = VALUE`` per line between ``BEGIN_HEADER`` and ``END_HEADER``, then
the binary data starting right after the newline that ends ``END_HEADER``::

    BEGIN_HEADER
    HDR_VERSION = 1.0
    DATATYPE = 4D_SU3_GAUGE_3x3        (3x3 complex per link; 4D_SU3_GAUGE: first two rows)
    DIMENSION_1 = Lx    DIMENSION_2 = Ly    DIMENSION_3 = Lz    DIMENSION_4 = Lt
    LINK_TRACE = <Re Tr U>/3 over the 4V links
    PLAQUETTE = <Re Tr U_p>/3 over the 6V plaquettes
    CHECKSUM = <hex>                   (see below)
    FLOATING_POINT = IEEE64BIG         (IEEE32BIG, IEEE64LITTLE, IEEE32LITTLE; IEEE32/IEEE64)
    ...                                (BOUNDARY_i, ENSEMBLE_ID, CREATOR, dates: kept, unchecked)
    END_HEADER

Data: sites with t slowest, then z, y, and x fastest; per site the four links mu = x, y, z, t;
per link the 3x3 matrix (or its first two rows) row by row, each entry (Re, Im). With
``U[0, mu, t, x, y, z]`` in the library layout (mu = t, x, y, z) the file holds, in C order,
``F[t, z, y, x, k] = U[0, (k + 1) % 4, t, x, y, z]`` (see :func:`._common.xyzt_file_order`).
For 3x2 storage the third row is rebuilt as ``u_3 = (u_1 x u_2)^*``, exact for SU(3).

``CHECKSUM`` is the sum, modulo 2^32, of the data read as 32-bit unsigned words in the file's
byte order (for 64-bit data the two halves of every double; for 3x2 the stored two rows), in
hexadecimal. ``IEEE32``/``IEEE64`` without an endianness are ambiguous (Grid reads them as
little-endian, older big-endian machines wrote them big-endian): both orders are tried and the
one whose checksum agrees is taken.

Checks on reading (the tolerances of Grid's reader): the checksum exactly, the plaquette to
``1e-5`` and the link trace to ``1e-6`` (absolute), both recomputed in float64 from the data as
read. Entries missing from the header are reported as not stored and not checked. Last, the
links themselves must be in SU(3) (:func:`._common.check_data`); the writer refuses NaN/inf and
links outside SU(3) before it creates a file, so 3x2 storage (which rebuilds the third row
from SU(3) alone) loses nothing.
"""

from __future__ import annotations

import datetime as _dt
import getpass
import platform
from pathlib import Path

import numpy as np

from .. import __version__
from ._common import (GaugeFileError, GaugeFileInfo, HeaderCheck, check_data, compare_float,
                      file_size, float_dtype, from_xyzt_file_order, plaquette_and_trace,
                      single_su3_config, xyzt_file_order)
from .atomic import atomic_open_binary

__all__ = ["read_nersc", "write_nersc", "nersc_checksum", "reconstruct_third_row",
           "PLAQUETTE_TOL", "LINK_TRACE_TOL"]

PLAQUETTE_TOL = 1e-5
"""Largest accepted |PLAQUETTE - plaquette of the data| (Grid's tolerance)."""
LINK_TRACE_TOL = 1e-6
"""Largest accepted |LINK_TRACE - link trace of the data| (Grid's tolerance)."""

_DATATYPES = {"4D_SU3_GAUGE_3x3": "3x3", "4D_SU3_GAUGE": "3x2"}
_FLOATING = {"IEEE64BIG": (64, "big"), "IEEE32BIG": (32, "big"),
             "IEEE64LITTLE": (64, "little"), "IEEE32LITTLE": (32, "little"),
             "IEEE64": (64, None), "IEEE32": (32, None)}
_MAX_HEADER = 1 << 16


def nersc_checksum(raw: bytes, endian: str) -> int:
    """Sum mod 2^32 of ``raw`` read as unsigned 32-bit words of byte order ``endian``."""
    if len(raw) % 4:
        raise ValueError(f"checksum data must be whole 32-bit words, got {len(raw)} bytes")
    words = np.frombuffer(raw, dtype=("<u4" if endian == "little" else ">u4"))
    return int(np.sum(words, dtype=np.uint64) & np.uint64(0xFFFFFFFF))


def reconstruct_third_row(U2: np.ndarray) -> np.ndarray:
    """``[..., 2, 3]`` first two rows of SU(3) matrices -> ``[..., 3, 3]`` with
    ``u_3 = conj(u_1 x u_2)`` (exact for SU(3))."""
    a, b = U2[..., 0, :], U2[..., 1, :]
    c = np.conj(np.cross(a, b))
    return np.stack([a, b, c], axis=-2)


def _parse_header(fh, path: str) -> tuple[dict, int]:
    first = fh.readline(_MAX_HEADER)
    if first.strip() != b"BEGIN_HEADER":
        raise GaugeFileError(f"{path}: not a NERSC file: first line is {first[:40]!r}, "
                             "expected 'BEGIN_HEADER'")
    header: dict[str, str] = {}
    while True:
        line = fh.readline(_MAX_HEADER)
        if not line:
            raise GaugeFileError(f"{path}: NERSC header has no END_HEADER line (file "
                                 "truncated or not NERSC)")
        if fh.tell() > _MAX_HEADER:
            raise GaugeFileError(f"{path}: NERSC header longer than {_MAX_HEADER} bytes "
                                 "without END_HEADER")
        text = line.decode("ascii", errors="replace").strip()
        if text == "END_HEADER":
            return header, fh.tell()
        if "=" in text:
            key, value = text.split("=", 1)
            header[key.strip()] = value.strip()


def _int_entry(header: dict, key: str, path: str) -> int:
    if key not in header:
        raise GaugeFileError(f"{path}: NERSC header lacks {key}")
    try:
        value = int(header[key])
    except ValueError:
        raise GaugeFileError(f"{path}: NERSC header {key} = {header[key]!r} is not an "
                             "integer") from None
    if value < 1:
        raise GaugeFileError(f"{path}: NERSC header {key} = {value} must be positive")
    return value


def _float_entry(header: dict, key: str, path: str) -> float | None:
    if key not in header:
        return None
    try:
        return float(header[key])
    except ValueError:
        raise GaugeFileError(f"{path}: NERSC header {key} = {header[key]!r} is not a "
                             "number") from None


def _decode(raw: bytes, dims_xyzt, bits: int, endian: str, storage: str) -> np.ndarray:
    Lx, Ly, Lz, Lt = dims_xyzt
    rows = 3 if storage == "3x3" else 2
    vals = np.frombuffer(raw, dtype=float_dtype(bits, endian)).astype(np.float64)
    vals = vals.reshape(Lt, Lz, Ly, Lx, 4, rows, 3, 2)
    F = vals[..., 0] + 1j * vals[..., 1]
    if storage == "3x2":
        F = reconstruct_third_row(F)
    return from_xyzt_file_order(F)


def read_nersc(path, *, check: bool = True) -> tuple[np.ndarray, GaugeFileInfo]:
    """Read a NERSC file.

    Returns ``(U0, info)``: ``U0`` host complex128 ``[4, Lt, Lx, Ly, Lz, 3, 3]`` (library
    order, time = direction 0) and a :class:`~._common.GaugeFileInfo` whose ``checks`` hold
    the checksum, plaquette and link-trace comparisons and the check that the links are in
    SU(3). With ``check=True`` any failure raises :class:`~._common.GaugeFileError` naming the
    stored and computed values.
    """
    path = str(path)
    with open(path, "rb") as fh:
        header, offset = _parse_header(fh, path)
        dtype_name = header.get("DATATYPE")
        if dtype_name not in _DATATYPES:
            raise GaugeFileError(f"{path}: unsupported NERSC DATATYPE {dtype_name!r}; "
                                 f"expected one of {', '.join(_DATATYPES)}")
        storage = _DATATYPES[dtype_name]
        fp = header.get("FLOATING_POINT", "")
        if fp not in _FLOATING:
            raise GaugeFileError(f"{path}: unsupported NERSC FLOATING_POINT {fp!r}; expected "
                                 f"one of {', '.join(_FLOATING)}")
        bits, endian = _FLOATING[fp]
        dims = tuple(_int_entry(header, f"DIMENSION_{i}", path) for i in (1, 2, 3, 4))
        volume = int(np.prod(dims))
        nbytes = volume * 4 * (9 if storage == "3x3" else 6) * 2 * bits // 8
        have = file_size(path) - offset
        if have != nbytes:
            raise GaugeFileError(
                f"{path}: NERSC data size mismatch: header DIMENSION_1..4 = "
                f"{'x'.join(map(str, dims))}, {dtype_name}, {fp} needs {nbytes} bytes after "
                f"the header, the file holds {have}"
                + (" (truncated)" if have < nbytes else " (trailing bytes)"))
        raw = fh.read(nbytes)

    stored_sum = header.get("CHECKSUM")
    stored = None
    if stored_sum is not None:
        try:
            stored = int(stored_sum.lower().removeprefix("0x"), 16)
        except ValueError:
            raise GaugeFileError(f"{path}: NERSC header CHECKSUM = {stored_sum!r} is not "
                                 "hexadecimal") from None
    if endian is None:  # IEEE32 / IEEE64: take the byte order whose checksum agrees
        endian = "little"
        if stored is not None and nersc_checksum(raw, "little") != stored \
                and nersc_checksum(raw, "big") == stored:
            endian = "big"
    computed = nersc_checksum(raw, endian)
    checks = [HeaderCheck("checksum", None if stored is None else f"{stored:08x}",
                          f"{computed:08x}", None if stored is None else computed == stored)]
    U0 = _decode(raw, dims, bits, endian, storage)
    plaq, trace = plaquette_and_trace(U0)
    checks.append(compare_float("plaquette", _float_entry(header, "PLAQUETTE", path), plaq,
                                PLAQUETTE_TOL))
    checks.append(compare_float("link trace", _float_entry(header, "LINK_TRACE", path), trace,
                                LINK_TRACE_TOL))
    Lx, Ly, Lz, Lt = dims
    info = GaugeFileInfo(path=path, format="nersc", lattice=(Lt, Lx, Ly, Lz), N=3,
                         precision=bits, endian=endian, storage=storage, header=header,
                         checks=checks)
    check_data(info, U0[None])
    if check:
        info.raise_on_failure()
    return U0, info


def write_nersc(path, U, *, precision: int = 64, endian: str = "big", storage: str = "3x3",
                ensemble_id: str = "lattice_ml", ensemble_label: str = "",
                sequence_number: int = 0) -> GaugeFileInfo:
    """Write one configuration ``U[1, 4, Lt, Lx, Ly, Lz, 3, 3]`` as a NERSC file, atomically.

    ``precision`` 64 or 32 (bits), ``endian`` 'big' or 'little', ``storage`` '3x3'
    (``4D_SU3_GAUGE_3x3``) or '3x2' (``4D_SU3_GAUGE``, first two rows). The header's
    PLAQUETTE, LINK_TRACE and CHECKSUM are computed from the data exactly as stored (after
    rounding and, for 3x2, reconstruction), so the file passes its own checks. NaN/inf and links
    outside SU(3) are a ``ValueError`` before any file is created. Returns the
    :class:`~._common.GaugeFileInfo` of the written file.
    """
    if storage not in ("3x3", "3x2"):
        raise ValueError(f"NERSC storage must be '3x3' or '3x2', not {storage!r}")
    ftype = float_dtype(precision, endian)
    U0 = single_su3_config(U, "NERSC")
    F = xyzt_file_order(U0)  # [t, z, y, x, mu, 3, 3]
    if storage == "3x2":  # the links are in SU(3), so two rows determine them
        F = F[..., :2, :]
    raw = np.ascontiguousarray(np.stack([F.real, F.imag], axis=-1), dtype=ftype).tobytes()
    Lt, Lx, Ly, Lz = U0.shape[1:5]
    dims = (Lx, Ly, Lz, Lt)
    plaq, trace = plaquette_and_trace(_decode(raw, dims, precision, endian, storage))
    checksum = nersc_checksum(raw, endian)
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%a %b %d %H:%M:%S %Y UTC")
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name available
        user = "unknown"
    dtype_name = "4D_SU3_GAUGE_3x3" if storage == "3x3" else "4D_SU3_GAUGE"
    fp = f"IEEE{precision}{'BIG' if endian == 'big' else 'LITTLE'}"
    entries = [("HDR_VERSION", "1.0"), ("DATATYPE", dtype_name), ("STORAGE_FORMAT", "1.0")]
    entries += [(f"DIMENSION_{i + 1}", str(n)) for i, n in enumerate(dims)]
    entries += [("LINK_TRACE", repr(trace)), ("PLAQUETTE", repr(plaq))]
    entries += [(f"BOUNDARY_{i}", "PERIODIC") for i in (1, 2, 3, 4)]
    entries += [("CHECKSUM", f"{checksum:08x}"), ("ENSEMBLE_ID", ensemble_id),
                ("ENSEMBLE_LABEL", ensemble_label), ("SEQUENCE_NUMBER", str(int(sequence_number))),
                ("CREATOR", f"{user} (lattice_ml {__version__})"),
                ("CREATOR_HARDWARE", platform.machine() or "unknown"),
                ("CREATION_DATE", now), ("ARCHIVE_DATE", now), ("FLOATING_POINT", fp)]
    for key, value in entries:
        if "\n" in value or "\r" in value:
            raise ValueError(f"NERSC header value of {key} must be one line, got {value!r}")
    text = "BEGIN_HEADER\n" + "".join(f"{k} = {v}\n" for k, v in entries) + "END_HEADER\n"
    with atomic_open_binary(Path(path)) as fh:
        fh.write(text.encode("ascii", errors="replace"))
        fh.write(raw)
    header = dict(entries)
    checks = [HeaderCheck("checksum", f"{checksum:08x}", f"{checksum:08x}", True),
              HeaderCheck("plaquette", plaq, plaq, True, PLAQUETTE_TOL),
              HeaderCheck("link trace", trace, trace, True, LINK_TRACE_TOL)]
    return GaugeFileInfo(path=str(path), format="nersc", lattice=(Lt, Lx, Ly, Lz), N=3,
                         precision=precision, endian=endian, storage=storage, header=header,
                         checks=checks)
