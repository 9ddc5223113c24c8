"""ILDG gauge-configuration files (LIME container, 4D SU(3), 32/64 bit), with SciDAC checksums.

Records used (other records are kept in the info and otherwise ignored):

* ``ildg-format``: XML ``<ildgFormat>`` with ``<field>su3gauge</field>``,
  ``<precision>32|64</precision>`` and the extents ``<lx> <ly> <lz> <lt>``;
* ``ildg-binary-data``: big-endian IEEE floats; sites with t slowest, then z, y, and x fastest;
  per site the links mu = x, y, z, t; per link the 3x3 complex matrix row by row, (Re, Im). In
  the library layout ``F[t, z, y, x, k] = U[0, (k + 1) % 4, t, x, y, z]``, as for NERSC;
* ``scidac-checksum``: XML ``<scidacChecksum>`` with ``<suma>`` and ``<sumb>`` (hex). For the
  site of file rank ``r = x + Lx (y + Ly (z + Lz t))`` let ``c_r`` be the CRC-32 (zlib's) of the
  site's bytes as stored (4 links); then ``suma = XOR_r rotl32(c_r, r mod 29)`` and
  ``sumb = XOR_r rotl32(c_r, r mod 31)`` (QIO's ``DML_checksum``).

The writer produces the message layout of QIO/Chroma: message 1 ``scidac-private-file-xml``,
``scidac-file-xml``; message 2 ``scidac-private-record-xml``, ``scidac-record-xml``,
``ildg-format``, ``ildg-binary-data``, ``scidac-checksum`` (and ``ildg-data-lfn`` when given).

Checks on reading: both SciDAC sums exactly (when the record is present); the binary record's
length against the ILDG extents and precision; the links in SU(3)
(:func:`._common.check_data`: the checksums of NaN data agree too). ILDG stores no plaquette;
the plaquette of the data is reported by :func:`lattice_ml.io.inspect_gauge`.
"""

from __future__ import annotations

import datetime as _dt
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import numpy as np

from .. import __version__
from ._common import (GaugeFileError, GaugeFileInfo, HeaderCheck, check_data, float_dtype,
                      from_xyzt_file_order, plaquette_and_trace, single_su3_config,
                      xyzt_file_order)
from .atomic import atomic_open_binary
from .lime import read_lime_data, scan_lime, write_lime_records

__all__ = ["read_ildg", "write_ildg", "scidac_checksum"]

_XML_HEAD = '<?xml version="1.0" encoding="UTF-8"?>'


def scidac_checksum(raw: bytes, site_bytes: int) -> tuple[int, int]:
    """SciDAC ``(suma, sumb)`` of data stored site after site, ``site_bytes`` per site, in
    file rank order (see the module docstring)."""
    if site_bytes <= 0 or len(raw) % site_bytes:
        raise ValueError(f"data of {len(raw)} bytes are not whole sites of {site_bytes} bytes")
    view = memoryview(raw)
    n_sites = len(raw) // site_bytes
    crc = np.fromiter((zlib.crc32(view[i * site_bytes:(i + 1) * site_bytes])
                       for i in range(n_sites)), dtype=np.uint64, count=n_sites)
    rank = np.arange(n_sites, dtype=np.uint64)
    out = []
    for mod in (29, 31):
        s = rank % np.uint64(mod)
        rot = ((crc << s) | (crc >> (np.uint64(32) - s))) & np.uint64(0xFFFFFFFF)
        out.append(int(np.bitwise_xor.reduce(rot)) if n_sites else 0)
    return out[0], out[1]


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _xml_fields(text: bytes, root_name: str, path: str, record: str) -> dict[str, str]:
    try:
        # real files have NULs after and blank lines before the XML declaration
        root = ET.fromstring(text.strip(b"\0 \t\r\n").decode("utf-8", errors="replace"))
    except ET.ParseError as exc:
        raise GaugeFileError(f"{path}: record '{record}' is not valid XML ({exc})") from None
    if _local(root.tag) != root_name:
        raise GaugeFileError(f"{path}: record '{record}' has root <{_local(root.tag)}>, "
                             f"expected <{root_name}>")
    return {_local(child.tag): (child.text or "").strip() for child in root}


def _ildg_format(fields: dict, path: str) -> tuple[int, tuple[int, int, int, int]]:
    field = fields.get("field")
    if field != "su3gauge":
        raise GaugeFileError(f"{path}: ildg-format field is {field!r}, expected 'su3gauge'")
    values = {}
    for key in ("precision", "lx", "ly", "lz", "lt"):
        if key not in fields:
            raise GaugeFileError(f"{path}: ildg-format lacks <{key}>")
        try:
            values[key] = int(fields[key])
        except ValueError:
            raise GaugeFileError(f"{path}: ildg-format <{key}> = {fields[key]!r} is not an "
                                 "integer") from None
    if values["precision"] not in (32, 64):
        raise GaugeFileError(f"{path}: ildg-format precision {values['precision']}, expected "
                             "32 or 64")
    dims = tuple(values[k] for k in ("lx", "ly", "lz", "lt"))
    if min(dims) < 1:
        raise GaugeFileError(f"{path}: ildg-format extents {dims} must be positive")
    return values["precision"], dims


def read_ildg(path, *, check: bool = True) -> tuple[np.ndarray, GaugeFileInfo]:
    """Read an ILDG file.

    Returns ``(U0, info)``: ``U0`` host complex128 ``[4, Lt, Lx, Ly, Lz, 3, 3]`` (library
    order) and the :class:`~._common.GaugeFileInfo` with the SciDAC checksum comparisons (and
    the plaquette of the data, reported, not checked) and the check that the links are in
    SU(3). With ``check=True`` a checksum mismatch or links outside SU(3) raise
    :class:`~._common.GaugeFileError`. The first ``ildg-binary-data`` record is read.
    """
    path = str(path)
    records = scan_lime(path)
    by_type: dict = {}
    for rec in records:
        by_type.setdefault(rec.type, rec)
    for needed in ("ildg-format", "ildg-binary-data"):
        if needed not in by_type:
            found = ", ".join(r.type for r in records) or "none"
            raise GaugeFileError(f"{path}: no '{needed}' record (records: {found})")
    fmt = _xml_fields(read_lime_data(path, by_type["ildg-format"]), "ildgFormat", path,
                      "ildg-format")
    bits, dims = _ildg_format(fmt, path)
    Lx, Ly, Lz, Lt = dims
    volume = Lx * Ly * Lz * Lt
    site_bytes = 4 * 18 * bits // 8
    binary = by_type["ildg-binary-data"]
    if binary.length != volume * site_bytes:
        raise GaugeFileError(
            f"{path}: ildg-binary-data holds {binary.length} bytes but ildg-format "
            f"{Lx}x{Ly}x{Lz}x{Lt} (lx ly lz lt), precision {bits} needs {volume * site_bytes}")
    raw = read_lime_data(path, binary)
    header: dict = {"records": [r.type for r in records], "ildg-format": fmt}
    suma, sumb = scidac_checksum(raw, site_bytes)
    checks = []
    if "scidac-checksum" in by_type:
        cs = _xml_fields(read_lime_data(path, by_type["scidac-checksum"]), "scidacChecksum",
                         path, "scidac-checksum")
        header["scidac-checksum"] = cs
        for key, value in (("suma", suma), ("sumb", sumb)):
            try:
                stored = int(cs.get(key, ""), 16)
            except ValueError:
                raise GaugeFileError(f"{path}: scidac-checksum <{key}> = {cs.get(key)!r} is "
                                     "missing or not hexadecimal") from None
            checks.append(HeaderCheck(f"scidac checksum {key}", f"{stored:08x}",
                                      f"{value:08x}", stored == value))
    else:
        checks += [HeaderCheck("scidac checksum suma", None, f"{suma:08x}", None),
                   HeaderCheck("scidac checksum sumb", None, f"{sumb:08x}", None)]
    for extra in ("scidac-private-file-xml", "scidac-private-record-xml", "ildg-data-lfn"):
        if extra in by_type:
            header[extra] = read_lime_data(path, by_type[extra]).rstrip(b"\0").decode(
                "utf-8", errors="replace")
    vals = np.frombuffer(raw, dtype=float_dtype(bits, "big")).astype(np.float64)
    vals = vals.reshape(Lt, Lz, Ly, Lx, 4, 3, 3, 2)
    U0 = from_xyzt_file_order(vals[..., 0] + 1j * vals[..., 1])
    plaq, _ = plaquette_and_trace(U0)
    checks.append(HeaderCheck("plaquette", None, plaq, None))
    info = GaugeFileInfo(path=path, format="ildg", lattice=(Lt, Lx, Ly, Lz), N=3,
                         precision=bits, endian="big", storage="3x3", header=header,
                         checks=checks)
    check_data(info, U0[None])
    if check:
        info.raise_on_failure()
    return U0, info


def write_ildg(path, U, *, precision: int = 64, lfn: str | None = None,
               file_xml: str | None = None, record_xml: str | None = None) -> GaugeFileInfo:
    """Write one configuration ``U[1, 4, Lt, Lx, Ly, Lz, 3, 3]`` as an ILDG file, atomically.

    ``precision`` 64 or 32 (bits); ``lfn`` the ILDG logical file name (an ``ildg-data-lfn``
    record when given); ``file_xml`` / ``record_xml`` the user XML of the SciDAC file and record
    (a small ``<info>`` document by default). NaN/inf and links outside SU(3) are a
    ``ValueError`` before any file is created.
    """
    U0 = single_su3_config(U, "ILDG")
    ftype = float_dtype(precision, "big")
    F = xyzt_file_order(U0)
    raw = np.ascontiguousarray(np.stack([F.real, F.imag], axis=-1), dtype=ftype).tobytes()
    Lt, Lx, Ly, Lz = U0.shape[1:5]
    site_bytes = 4 * 18 * precision // 8
    suma, sumb = scidac_checksum(raw, site_bytes)
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%a %b %d %H:%M:%S %Y UTC")
    letter = "D" if precision == 64 else "F"
    info_xml = f"{_XML_HEAD}<info><creator>lattice_ml {__version__}</creator></info>"
    ildg_format = (
        f'{_XML_HEAD}<ildgFormat xmlns="http://www.lqcd.org/ildg" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xsi:schemaLocation="http://www.lqcd.org/ildg http://www.lqcd.org/ildg/filefmt.xsd">'
        f"<version>1.0</version><field>su3gauge</field><precision>{precision}</precision>"
        f"<lx>{Lx}</lx><ly>{Ly}</ly><lz>{Lz}</lz><lt>{Lt}</lt></ildgFormat>")
    private_file = (f"{_XML_HEAD}<scidacFile><version>1.1</version><spacetime>4</spacetime>"
                    f"<dims>{Lx} {Ly} {Lz} {Lt} </dims><volfmt>0</volfmt></scidacFile>")
    private_record = (
        f"{_XML_HEAD}<scidacRecord><version>1.1</version><date>{date}</date>"
        f"<recordtype>0</recordtype><datatype>QDP_{letter}3_ColorMatrix</datatype>"
        f"<precision>{letter}</precision><colors>3</colors><spins>4</spins>"
        f"<typesize>{18 * precision // 8}</typesize><datacount>4</datacount></scidacRecord>")
    checksum = (f"{_XML_HEAD}<scidacChecksum><version>1.0</version><suma>{suma:x}</suma>"
                f"<sumb>{sumb:x}</sumb></scidacChecksum>")
    rec = [("scidac-private-file-xml", private_file.encode(), True, False),
           ("scidac-file-xml", (file_xml or info_xml).encode(), False, True),
           ("scidac-private-record-xml", private_record.encode(), True, False),
           ("scidac-record-xml", (record_xml or info_xml).encode(), False, False),
           ("ildg-format", ildg_format.encode(), False, False),
           ("ildg-binary-data", raw, False, False),
           ("scidac-checksum", checksum.encode(), False, lfn is None)]
    if lfn is not None:
        rec.append(("ildg-data-lfn", lfn.encode("utf-8"), False, True))
    with atomic_open_binary(Path(path)) as fh:
        write_lime_records(fh, rec)
    checks = [HeaderCheck("scidac checksum suma", f"{suma:08x}", f"{suma:08x}", True),
              HeaderCheck("scidac checksum sumb", f"{sumb:08x}", f"{sumb:08x}", True)]
    return GaugeFileInfo(path=str(path), format="ildg", lattice=(Lt, Lx, Ly, Lz), N=3,
                         precision=precision, endian="big", storage="3x3",
                         header={"records": [r[0] for r in rec]}, checks=checks)
