"""openQCD files: round trip, a hand-built file (odd-point link order and the plaquette header
normalised to 3, both computed by plain loops), open-boundary zero links, corrupted files."""

from __future__ import annotations

import itertools
import struct

import numpy as np
import pytest
from io_reference import SHAPE, random_links

from lattice_ml.io import GaugeFileError, inspect_gauge, read_gauge, write_gauge
from lattice_ml.io.openqcd import openqcd_plaquette_tolerance


@pytest.fixture(scope="module")
def U():
    return random_links(seed=37)


def _hand_built(U, path, *, plaq_shift=0.0, dims=None):
    """Written as openQCD's export_cnfg describes it, with x = (x0, x1, x2, x3) = library
    coordinates; the header plaquette is the average of Re Tr U_p over the 6 V plaquettes."""
    N = U.shape[2:6]
    link = {}
    for x in itertools.product(*(range(n) for n in N)):
        for mu in range(4):
            link[(x, mu)] = U[(0, mu) + x]

    def shift(x, mu, s):
        y = list(x)
        y[mu] = (y[mu] + s) % N[mu]
        return tuple(y)

    data = b""
    for ix in range(int(np.prod(N))):  # ix = x3 + N3*x2 + N2*N3*x1 + N1*N2*N3*x0
        x3 = ix % N[3]
        x2 = (ix // N[3]) % N[2]
        x1 = (ix // (N[3] * N[2])) % N[1]
        x0 = ix // (N[3] * N[2] * N[1])
        x = (x0, x1, x2, x3)
        if sum(x) % 2 == 0:
            continue
        for mu in range(4):
            for m in (link[(x, mu)], link[(shift(x, mu, -1), mu)]):
                data += b"".join(struct.pack("<dd", v.real, v.imag) for v in m.reshape(-1))
    total, count = 0.0, 0
    for x in itertools.product(*(range(n) for n in N)):
        for mu, nu in itertools.combinations(range(4), 2):
            p = (link[(x, mu)] @ link[(shift(x, mu, 1), nu)]
                 @ link[(shift(x, nu, 1), mu)].conj().T @ link[(x, nu)].conj().T)
            total += np.trace(p).real
            count += 1
    plaq = total / count + plaq_shift
    path.write_bytes(struct.pack("<4i", *(dims or N)) + struct.pack("<d", plaq) + data)
    return plaq


def test_round_trip(tmp_path, U):
    path = tmp_path / "cfg.oqcd"
    info = write_gauge(path, U, "openqcd")
    V = read_gauge(path)
    assert V.shape == U.shape and V.dtype == np.complex128
    assert np.max(np.abs(V - U)) == 0.0  # bit-exact
    assert info.header["plaq"] == pytest.approx(inspect_gauge(path)[1].checks[0].computed,
                                                abs=1e-13)


def test_hand_built_file_is_read_correctly(tmp_path, U):
    path = tmp_path / "hand.bin"
    plaq3 = _hand_built(U, path)
    assert 0 < plaq3 < 3  # normalised to 3, not 1
    V = read_gauge(path)  # detected as openQCD from the header and size; plaquette checked
    np.testing.assert_array_equal(V, U)
    _, info = inspect_gauge(path)
    assert info.format == "openqcd" and info.lattice == SHAPE
    check = info.checks[0]
    assert check.ok and check.stored == plaq3
    assert abs(check.computed - plaq3) <= openqcd_plaquette_tolerance(int(np.prod(SHAPE)))


def test_open_boundary_zero_links(tmp_path, U):
    """openQCD's open boundary conditions store U(x, 0) = 0 at x0 = N0 - 1; such a file is read
    as it is, and its plaquette (the crossing plaquettes count 0) agrees with the header."""
    W = U.copy()
    W[0, 0, -1] = 0.0
    path = tmp_path / "open.bin"
    _hand_built(W, path)
    V = read_gauge(path)
    np.testing.assert_array_equal(V, W)


def test_wrong_plaquette(tmp_path, U):
    path = tmp_path / "p.bin"
    _hand_built(U, path, plaq_shift=1e-9)
    with pytest.raises(GaugeFileError, match=r"plaquette \(Re Tr U_p, normalised to 3\): "
                                             r"MISMATCH \(file [\d.]+, data [\d.]+, "
                                             r"\|difference\| 1\.00e-09"):
        read_gauge(path)


def test_flipped_byte_changes_the_plaquette(tmp_path, U):
    path = tmp_path / "f.oqcd"
    write_gauge(path, U, "openqcd")
    raw = bytearray(path.read_bytes())
    raw[24 + 8 * 100 + 6] ^= 0x01  # a high mantissa byte of one link entry
    path.write_bytes(bytes(raw))
    with pytest.raises(GaugeFileError, match="plaquette .*MISMATCH"):
        read_gauge(path)


def test_truncated_and_wrong_dimensions(tmp_path, U):
    path = tmp_path / "t.oqcd"
    write_gauge(path, U, "openqcd")
    raw = path.read_bytes()
    path.write_bytes(raw[:-100])
    with pytest.raises(GaugeFileError, match=r"header N0\.\.N3 = 4x2x6x8 needs 221184 bytes of "
                                             r"links, the file holds 221084 \(truncated\)"):
        read_gauge(path, "openqcd")
    path.write_bytes(raw[:10])
    with pytest.raises(GaugeFileError, match="truncated: openQCD header needs 24 bytes"):
        read_gauge(path, "openqcd")
    _hand_built(U, path, dims=(4, 2, 6, 4))
    with pytest.raises(GaugeFileError, match=r"4x2x6x4 needs 110592 bytes .* holds 221184 "
                                             r"\(trailing bytes\)"):
        read_gauge(path, "openqcd")
    _hand_built(U, path, dims=(3, 2, 6, 8))
    with pytest.raises(GaugeFileError, match=r"extents N0\.\.N3 = \(3, 2, 6, 8\) are not positive "
                                             "even"):
        read_gauge(path, "openqcd")


def test_write_needs_even_extents(tmp_path):
    U = random_links(seed=3, shape=(4, 2, 2, 3))
    with pytest.raises(ValueError, match="even extents"):
        write_gauge(tmp_path / "x.oqcd", U, "openqcd")
    assert not list(tmp_path.iterdir())
