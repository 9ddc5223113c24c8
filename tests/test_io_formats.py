"""The common interface: format detection, reading into any namespace, conversions between the
formats (bit-exact in float64), and one link followed through NERSC and openQCD bytes."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from io_reference import random_links

from lattice_ml.backend import to_numpy
from lattice_ml.io import (GaugeFileError, detect_format, format_from_extension, read_gauge,
                           write_gauge)

FILES = {"nersc": "cfg.nersc", "ildg": "cfg.lime", "openqcd": "cfg.oqcd", "hdf5": "cfg.h5"}


@pytest.fixture(scope="module")
def U():
    return random_links(seed=41)


@pytest.mark.parametrize("fmt", list(FILES))
def test_detect_and_read_into_namespace(tmp_path, U, fmt, xp):
    path = tmp_path / "no_extension"
    write_gauge(path, xp.asarray(U), fmt)  # the writers take any namespace too
    assert detect_format(path) == fmt
    V = read_gauge(path, xp=xp)
    assert V.shape == U.shape and V.dtype == xp.complex128
    np.testing.assert_array_equal(to_numpy(V), U)
    W = read_gauge(path, xp=xp, dtype="complex64")
    assert W.dtype == xp.complex64


def test_conversion_chain_is_bit_exact(tmp_path, U):
    current = U
    for fmt in ["nersc", "ildg", "openqcd", "hdf5", "nersc"]:
        path = tmp_path / f"{fmt}-{len(list(tmp_path.iterdir()))}"
        write_gauge(path, current, fmt)
        current = read_gauge(path)
    np.testing.assert_array_equal(current, U)


def test_one_link_through_nersc_and_openqcd_bytes(tmp_path, U):
    """The x-direction link at t = 0, x = 0, y = 0, z = 1: in NERSC at file site (t, z, y, x) =
    (0, 1, 0, 0), direction 0 (x); in openQCD at the first odd point x = (0, 0, 0, 1),
    direction 1, forward. Both files must hold the same 18 doubles."""
    Lt, Lx, Ly, Lz = U.shape[2:6]
    write_gauge(tmp_path / "a.nersc", U, "nersc", endian="little")
    write_gauge(tmp_path / "a.oqcd", U, "openqcd")
    nersc = (tmp_path / "a.nersc").read_bytes()
    data = nersc[nersc.index(b"END_HEADER\n") + 11:]
    site = ((0 * Lz + 1) * Ly + 0) * Lx + 0
    link_bytes = 18 * 8
    from_nersc = struct.unpack("<18d", data[(4 * site + 0) * link_bytes:][:link_bytes])
    oqcd = (tmp_path / "a.oqcd").read_bytes()[24:]
    # first odd point, entries U(x,0), U(x-0,0), U(x,1): the third matrix
    from_oqcd = struct.unpack("<18d", oqcd[2 * link_bytes:3 * link_bytes])
    assert from_nersc == from_oqcd
    expect = U[0, 1, 0, 0, 0, 1]
    assert from_nersc[:2] == (expect[0, 0].real, expect[0, 0].imag)


def test_detection_failures_and_names(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x01\x02" * 100)
    with pytest.raises(GaugeFileError, match="cannot tell the format"):
        read_gauge(junk)
    with pytest.raises(ValueError, match="unknown gauge-file format 'milc'"):
        read_gauge(junk, "milc")
    with pytest.raises(FileNotFoundError):
        read_gauge(tmp_path / "missing.nersc")
    assert format_from_extension("a/b.LIME") == "ildg"
    assert format_from_extension("x.h5") == "hdf5" and format_from_extension("x.dat") is None
    with pytest.raises(ValueError, match="one configuration"):
        write_gauge(tmp_path / "x", random_links(seed=1, batch=1), "nersc")
        read_gauge(tmp_path / "x", index=3)


def test_docs_io_example_runs():
    import re
    from pathlib import Path

    doc = Path(__file__).resolve().parents[1] / "docs" / "io.md"
    if not doc.exists():
        pytest.skip("docs/io.md not in this checkout")
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), re.S)
    assert blocks
    namespace = {}
    for code in blocks:
        exec(compile(code, str(doc), "exec"), namespace)
