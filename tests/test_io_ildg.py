"""LIME records and ILDG files: round trips (32/64 bit), a hand-built file with independently
computed SciDAC checksums, and corrupted files rejected with errors naming the mismatch."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from io_reference import (SHAPE, file_links_xyzt, pack_matrix, plaquette_loop_xyzt,
                          random_links, scidac_sums_loop)

from lattice_ml.io import (GaugeFileError, inspect_gauge, read_gauge, read_ildg, scan_lime,
                           scidac_checksum, write_gauge)
from lattice_ml.io.lime import write_lime_records


@pytest.fixture(scope="module")
def U():
    return random_links(seed=23)


def _lime_record(rtype: str, data: bytes, mb: bool, me: bool) -> bytes:
    """One LIME record packed by hand (big-endian header, 128-byte type, zero padding)."""
    flags = (0x8000 if mb else 0) | (0x4000 if me else 0)
    head = struct.pack(">IHHq", 0x456789AB, 1, flags, len(data))
    head += rtype.encode().ljust(128, b"\0")
    return head + data + b"\0" * ((8 - len(data) % 8) % 8)


def test_lime_records_round_trip(tmp_path):
    recs = [("a-type", b"12345", True, False), ("b-type", b"", False, False),
            ("c-type", b"x" * 16, False, True)]
    buf = io.BytesIO()
    write_lime_records(buf, recs)
    raw = buf.getvalue()
    assert raw == b"".join(_lime_record(*r) for r in recs)  # matches the hand-packed bytes
    path = tmp_path / "r.lime"
    path.write_bytes(raw)
    found = scan_lime(path)
    assert [(r.type, r.length, r.mb, r.me) for r in found] == [
        ("a-type", 5, True, False), ("b-type", 0, False, False), ("c-type", 16, False, True)]
    assert found[0].offset == 144 and found[1].offset == 144 + 8 + 144


def test_scidac_checksum_matches_an_independent_loop():
    rng = np.random.default_rng(5)
    raw = rng.bytes(576 * 70)  # 70 sites: ranks past 29 and 31 exercise both rotations
    assert scidac_checksum(raw, 576) == scidac_sums_loop(raw, 576)


@pytest.mark.parametrize("precision", [64, 32])
def test_round_trip(tmp_path, U, precision):
    path = tmp_path / "cfg.lime"
    info = write_gauge(path, U, "ildg", precision=precision, lfn="lfn://lattice_ml/test")
    assert [c.ok for c in info.checks] == [True, True]  # the writer's info: its checksums
    V = read_gauge(path)
    assert V.dtype == (np.complex128 if precision == 64 else np.complex64)
    err = np.max(np.abs(V - U))
    assert err == 0.0 if precision == 64 else err <= 2e-7
    types = [r.type for r in scan_lime(path)]
    assert types == ["scidac-private-file-xml", "scidac-file-xml", "scidac-private-record-xml",
                     "scidac-record-xml", "ildg-format", "ildg-binary-data", "scidac-checksum",
                     "ildg-data-lfn"]
    recs = scan_lime(path)
    assert [(r.mb, r.me) for r in recs] == [(True, False), (False, True), (True, False)] + \
        [(False, False)] * 4 + [(False, True)]


def _hand_built(U, path, *, bits=64, lx=None, checksum=None):
    links = file_links_xyzt(U)
    Lt, Lx, Ly, Lz = U.shape[2:6]
    fmt = ">d" if bits == 64 else ">f"
    sites = [b"".join(pack_matrix(links[((t, z, y, x), k)], fmt) for k in range(4))
             for t in range(Lt) for z in range(Lz) for y in range(Ly) for x in range(Lx)]
    raw = b"".join(sites)
    suma, sumb = checksum or scidac_sums_loop(raw, len(sites[0]))
    # a blank line before the XML declarations, as in files written by SIMULATeQCD
    ildg_xml = (f'\n<?xml version="1.0"?><ildgFormat xmlns="http://www.lqcd.org/ildg">'
                f"<version>1.0</version><field>su3gauge</field><precision>{bits}</precision>"
                f"<lx>{lx or Lx}</lx><ly>{Ly}</ly><lz>{Lz}</lz><lt>{Lt}</lt></ildgFormat>")
    cs_xml = (f"\n<?xml version=\"1.0\"?><scidacChecksum><version>1.0</version>"
              f"<suma>{suma:x}</suma><sumb>{sumb:x}</sumb></scidacChecksum>")
    path.write_bytes(_lime_record("ildg-format", ildg_xml.encode(), True, False)
                     + _lime_record("ildg-binary-data", raw, False, False)
                     + _lime_record("scidac-checksum", cs_xml.encode(), False, True))
    return raw, (suma, sumb), plaquette_loop_xyzt(links, (Lt, Lz, Ly, Lx))


@pytest.mark.parametrize("bits", [64, 32])
def test_hand_built_file_is_read_correctly(tmp_path, U, bits):
    path = tmp_path / "hand.dat"
    _, (suma, sumb), plaq = _hand_built(U, path, bits=bits)
    V = read_gauge(path)  # detected as ILDG; the checksums must agree
    assert V.shape == (1, 4) + SHAPE + (3, 3)
    assert np.max(np.abs(V - U)) <= (0 if bits == 64 else 3e-7)
    _, info = inspect_gauge(path)
    assert info.format == "ildg" and info.lattice == SHAPE and info.precision == bits
    by = {c.name: c for c in info.checks}
    assert by["scidac checksum suma"].ok and by["scidac checksum suma"].stored == f"{suma:08x}"
    assert by["scidac checksum sumb"].ok and by["scidac checksum sumb"].stored == f"{sumb:08x}"
    assert by["plaquette"].computed == pytest.approx(plaq, abs=1e-12 if bits == 64 else 1e-6)


def test_flipped_byte_is_a_scidac_mismatch(tmp_path, U):
    path = tmp_path / "c.lime"
    write_gauge(path, U, "ildg")
    binary = next(r for r in scan_lime(path) if r.type == "ildg-binary-data")
    raw = bytearray(path.read_bytes())
    raw[binary.offset + 12345] ^= 0x10
    path.write_bytes(bytes(raw))
    with pytest.raises(GaugeFileError, match=r"scidac checksum suma: MISMATCH \(file [0-9a-f]{8}, "
                                             r"data [0-9a-f]{8}\)"):
        read_gauge(path)
    _, info = inspect_gauge(path)
    assert {"scidac checksum suma", "scidac checksum sumb"} <= {c.name for c in info.failed}


def test_wrong_checksum_record(tmp_path, U):
    path = tmp_path / "c.lime"
    _hand_built(U, path, checksum=(0x1234, 0x5678))
    with pytest.raises(GaugeFileError, match=r"suma: MISMATCH \(file 00001234"):
        read_gauge(path)


def test_truncated_file(tmp_path, U):
    path = tmp_path / "t.lime"
    write_gauge(path, U, "ildg")
    raw = path.read_bytes()
    binary = next(r for r in scan_lime(path) if r.type == "ildg-binary-data")
    path.write_bytes(raw[:binary.offset + 1000])
    with pytest.raises(GaugeFileError, match=r"record 5 'ildg-binary-data' declares 221184 bytes "
                                             r"of data but only 1000 remain \(file truncated\)"):
        read_gauge(path)
    path.write_bytes(raw[:binary.offset - 100])  # cut inside a header
    with pytest.raises(GaugeFileError, match="truncated"):
        read_gauge(path)


def test_wrong_dimensions(tmp_path, U):
    path = tmp_path / "d.lime"
    _hand_built(U, path, lx=4)
    with pytest.raises(GaugeFileError, match=r"ildg-binary-data holds 221184 bytes but "
                                             r"ildg-format 4x6x8x4 .* needs 442368"):
        read_gauge(path)


def test_bad_magic_and_missing_records(tmp_path, U):
    path = tmp_path / "m.lime"
    write_gauge(path, U, "ildg")
    raw = bytearray(path.read_bytes())
    second = scan_lime(path)[1].offset - 144
    raw[second] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(GaugeFileError, match=r"record 1 at offset \d+: magic number 0xba6789ab, "
                                             r"expected 0x456789ab"):
        read_gauge(path)
    path.write_bytes(_lime_record("ildg-format", b"<ildgFormat/>", True, True))
    with pytest.raises(GaugeFileError, match="no 'ildg-binary-data' record"):
        read_gauge(path)


def test_ildg_format_xml_problems(tmp_path):
    bad = ('<ildgFormat><field>su3gauge</field><precision>64</precision><lx>2</lx><ly>2</ly>'
           '<lz>2</lz></ildgFormat>')
    path = tmp_path / "x.lime"
    path.write_bytes(_lime_record("ildg-format", bad.encode(), True, False)
                     + _lime_record("ildg-binary-data", b"", False, True))
    with pytest.raises(GaugeFileError, match="ildg-format lacks <lt>"):
        read_ildg(path)
    path.write_bytes(_lime_record("ildg-format", b"<ildgFormat><field>", True, False)
                     + _lime_record("ildg-binary-data", b"", False, True))
    with pytest.raises(GaugeFileError, match="not valid XML"):
        read_ildg(path)
