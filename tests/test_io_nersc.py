"""NERSC files: round trips (3x3/3x2, 32/64 bit, both byte orders), a hand-built file with
independently computed header values, and corrupted files rejected with errors that name the
mismatch."""

from __future__ import annotations

import itertools
import os
import re

import numpy as np
import pytest
from io_reference import (SHAPE, file_links_xyzt, link_trace_loop, pack_matrix,
                          plaquette_loop_xyzt, random_links, words_sum)

from lattice_ml.io import GaugeFileError, inspect_gauge, read_gauge, read_nersc, write_gauge
from lattice_ml.io.nersc import reconstruct_third_row


@pytest.fixture(scope="module")
def U():
    return random_links(seed=11)


@pytest.mark.parametrize("storage,precision,endian",
                         list(itertools.product(["3x3", "3x2"], [64, 32], ["big", "little"])))
def test_round_trip(tmp_path, U, storage, precision, endian):
    path = tmp_path / "cfg.nersc"
    write_gauge(path, U, "nersc", storage=storage, precision=precision, endian=endian)
    V = read_gauge(path)
    assert V.shape == U.shape
    assert V.dtype == (np.complex128 if precision == 64 else np.complex64)
    tol = {64: 1e-15 if storage == "3x3" else 4e-15, 32: 2e-7}[precision]
    err = np.max(np.abs(V - U))
    assert err <= tol
    if storage == "3x3" and precision == 64:
        assert err == 0.0  # bit-exact
    _, info = read_nersc(path)
    assert info.storage == storage and info.precision == precision and info.endian == endian
    assert info.header["DATATYPE"] == ("4D_SU3_GAUGE_3x3" if storage == "3x3" else "4D_SU3_GAUGE")
    assert {c.name: c.ok for c in info.checks} == {"checksum": True, "plaquette": True,
                                                   "link trace": True, "links in SU(3)": True}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_third_row_reconstruction_is_exact_for_su3(U):
    M = U.reshape(-1, 3, 3)
    np.testing.assert_allclose(reconstruct_third_row(M[:, :2]), M, atol=1e-14, rtol=0)


def _hand_built(U, path, *, storage="3x3", endian="big", bits=64, header_override=None,
                plaq_shift=0.0):
    """A NERSC file written with struct, header values from plain loops."""
    links = file_links_xyzt(U)
    Lt, Lx, Ly, Lz = U.shape[2:6]
    fmt = (">" if endian == "big" else "<") + ("d" if bits == 64 else "f")
    rows = 3 if storage == "3x3" else 2
    raw = b"".join(pack_matrix(links[((t, z, y, x), k)], fmt, rows)
                   for t in range(Lt) for z in range(Lz) for y in range(Ly) for x in range(Lx)
                   for k in range(4))
    plaq = plaquette_loop_xyzt(links, (Lt, Lz, Ly, Lx)) + plaq_shift
    header = {
        "HDR_VERSION": "1.0",
        "DATATYPE": "4D_SU3_GAUGE_3x3" if storage == "3x3" else "4D_SU3_GAUGE",
        "DIMENSION_1": Lx, "DIMENSION_2": Ly, "DIMENSION_3": Lz, "DIMENSION_4": Lt,
        "CHECKSUM": f"{words_sum(raw, endian):x}",
        "LINK_TRACE": f"{link_trace_loop(links):.10f}",
        "PLAQUETTE": f"{plaq:.10f}",
        "FLOATING_POINT": f"IEEE{bits}{'BIG' if endian == 'big' else 'LITTLE'}",
    }
    header.update(header_override or {})
    text = "BEGIN_HEADER\n" + "".join(f"{k} = {v}\n" for k, v in header.items()) + "END_HEADER\n"
    path.write_bytes(text.encode() + raw)
    return header


@pytest.mark.parametrize("storage,endian,bits", [("3x3", "big", 64), ("3x2", "little", 32),
                                                 ("3x2", "big", 64)])
def test_hand_built_file_is_read_correctly(tmp_path, U, storage, endian, bits):
    path = tmp_path / "hand.cfg"
    header = _hand_built(U, path, storage=storage, endian=endian, bits=bits)
    V = read_gauge(path)  # format detected; every check must pass
    assert V.shape == (1, 4) + SHAPE + (3, 3)
    tol = 1e-14 if bits == 64 else 3e-7
    assert np.max(np.abs(V - U)) <= tol
    _, info = inspect_gauge(path)
    assert info.format == "nersc" and info.lattice == SHAPE
    by = {c.name: c for c in info.checks}
    assert by["checksum"].ok and by["checksum"].stored == header["CHECKSUM"].rjust(8, "0")
    assert by["plaquette"].ok and abs(by["plaquette"].computed - float(header["PLAQUETTE"])) < 1e-9
    assert by["link trace"].ok


def test_unit_configuration_has_plaquette_and_trace_one(tmp_path):
    U = np.broadcast_to(np.eye(3, dtype=complex), (1, 4) + SHAPE + (3, 3)).copy()
    info = write_gauge(tmp_path / "u.nersc", U, "nersc")
    assert float(info.header["PLAQUETTE"]) == 1.0 and float(info.header["LINK_TRACE"]) == 1.0


def test_ambiguous_ieee64_takes_the_byte_order_whose_checksum_agrees(tmp_path, U):
    for endian in ("big", "little"):
        path = tmp_path / f"{endian}.nersc"
        _hand_built(U, path, endian=endian, header_override={"FLOATING_POINT": "IEEE64"})
        V = read_gauge(path)
        assert np.max(np.abs(V - U)) < 1e-14


# ------------------------------------------------------------------------------------------
# corrupted files
# ------------------------------------------------------------------------------------------
def _data_offset(path):
    raw = path.read_bytes()
    return raw.index(b"END_HEADER\n") + len(b"END_HEADER\n")


def test_flipped_byte_is_a_checksum_mismatch(tmp_path, U):
    path = tmp_path / "c.nersc"
    write_gauge(path, U, "nersc")
    raw = bytearray(path.read_bytes())
    raw[_data_offset(path) + 1000] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(GaugeFileError, match=r"checksum: MISMATCH \(file [0-9a-f]{8}, data "
                                             r"[0-9a-f]{8}\)"):
        read_gauge(path)
    # without the check the data are readable and inspect names the failure
    _, info = inspect_gauge(path)
    assert [c.name for c in info.failed][0] == "checksum"


def test_wrong_checksum_in_header(tmp_path, U):
    path = tmp_path / "c.nersc"
    _hand_built(U, path, header_override={"CHECKSUM": "deadbeef"})
    with pytest.raises(GaugeFileError) as exc:
        read_gauge(path)
    msg = str(exc.value)
    assert "checksum: MISMATCH" in msg and "deadbeef" in msg
    true_sum = words_sum(path.read_bytes()[_data_offset(path):], "big")
    assert true_sum != 0xDEADBEEF and f"{true_sum:08x}" in msg


def test_wrong_plaquette_and_link_trace(tmp_path, U):
    path = tmp_path / "p.nersc"
    _hand_built(U, path, plaq_shift=2e-4)
    with pytest.raises(GaugeFileError, match=r"plaquette: MISMATCH .*tolerance 1\.0e-05"):
        read_gauge(path)
    # a difference inside the tolerance (header printed with 10 digits) is accepted
    _hand_built(U, path, plaq_shift=5e-6)
    read_gauge(path)
    _hand_built(U, path, header_override={"LINK_TRACE": "0.5"})
    with pytest.raises(GaugeFileError, match=r"link trace: MISMATCH \(file 0\.5, data"):
        read_gauge(path)


def test_truncated_and_trailing_bytes(tmp_path, U):
    path = tmp_path / "t.nersc"
    write_gauge(path, U, "nersc")
    raw = path.read_bytes()
    path.write_bytes(raw[:-7])
    with pytest.raises(GaugeFileError, match=r"needs \d+ bytes .*holds \d+ \(truncated\)"):
        read_gauge(path)
    path.write_bytes(raw + b"\0" * 8)
    with pytest.raises(GaugeFileError, match="trailing bytes"):
        read_gauge(path)
    path.write_bytes(raw[:200])  # cut inside the header
    with pytest.raises(GaugeFileError, match="END_HEADER"):
        read_gauge(path)


def test_wrong_dimensions(tmp_path, U):
    path = tmp_path / "d.nersc"
    _hand_built(U, path, header_override={"DIMENSION_1": 4})
    with pytest.raises(GaugeFileError, match=r"DIMENSION_1\.\.4 = 4x6x8x4,.* needs 442368 bytes"
                                             r".*holds 221184"):
        read_gauge(path)
    _hand_built(U, path, header_override={"DIMENSION_3": "eight"})
    with pytest.raises(GaugeFileError, match="DIMENSION_3 = 'eight' is not an integer"):
        read_gauge(path)


@pytest.mark.parametrize("key,value,match", [
    ("DATATYPE", "4D_SU2_GAUGE", "unsupported NERSC DATATYPE '4D_SU2_GAUGE'"),
    ("FLOATING_POINT", "IEEE128", "unsupported NERSC FLOATING_POINT 'IEEE128'"),
    ("CHECKSUM", "xyz", "CHECKSUM = 'xyz' is not hexadecimal"),
])
def test_bad_header_entries(tmp_path, U, key, value, match):
    path = tmp_path / "h.nersc"
    _hand_built(U, path, header_override={key: value})
    with pytest.raises(GaugeFileError, match=re.escape(match)):
        read_gauge(path)


def test_missing_checks_are_reported_not_failed(tmp_path, U):
    path = tmp_path / "m.nersc"
    _hand_built(U, path)
    text = path.read_bytes()
    text = re.sub(rb"PLAQUETTE = [^\n]*\n", b"", text)
    path.write_bytes(text)
    read_gauge(path)
    _, info = inspect_gauge(path)
    assert {c.name: c.ok for c in info.checks}["plaquette"] is None


def test_write_refuses_what_nersc_cannot_hold(tmp_path):
    two = random_links(seed=2, batch=2)
    with pytest.raises(ValueError, match="batch axis has 2"):
        write_gauge(tmp_path / "x.nersc", two, "nersc")
    su2 = np.broadcast_to(np.eye(2, dtype=complex), (1, 4) + SHAPE + (2, 2))
    with pytest.raises(ValueError, match=r"4D SU\(3\)"):
        write_gauge(tmp_path / "x.nersc", su2, "nersc")
    with pytest.raises(ValueError, match="storage"):
        write_gauge(tmp_path / "x.nersc", two[:1], "nersc", storage="2x3")
    bad = two[:1].copy()
    bad[0, 0, 0, 0, 0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        write_gauge(tmp_path / "x.nersc", bad, "nersc")
    assert os.listdir(tmp_path) == []  # nothing written, no temporary files


@pytest.mark.parametrize("storage", ["3x2", "3x3"])
def test_links_that_are_not_su3_are_refused(tmp_path, U, storage):
    """Two rows determine only an SU(3) matrix: a U(3) phase would silently be lost with 3x2;
    NERSC files hold SU(3) links whatever the storage."""
    V = U * np.exp(0.3j)                     # unitary, det = e^{0.9i} != 1
    with pytest.raises(ValueError, match=r"not in SU\(3\): max \|det U - 1\| = 0\.87"):
        write_gauge(tmp_path / "v.nersc", V, "nersc", storage=storage)
    assert not (tmp_path / "v.nersc").exists()
