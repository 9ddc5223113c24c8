"""`lattice-ml convert` and `lattice-ml info`: conversions, printed checks, bad input (exit 2)
and no partial output."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from io_reference import random_links

from lattice_ml.cli.main import main
from lattice_ml.io import read_gauge, write_gauge


@pytest.fixture(scope="module")
def U():
    return random_links(seed=53)


@pytest.fixture
def nersc(tmp_path, U):
    path = tmp_path / "in.nersc"
    write_gauge(path, U, "nersc")
    return path


def _no_temporaries(directory):
    return not [p for p in directory.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("name,fmt", [("out.lime", "ildg"), ("out.oqcd", "openqcd"),
                                      ("out.h5", "hdf5"), ("out.nersc", "nersc")])
def test_convert_to_every_format(tmp_path, nersc, U, capsys, name, fmt):
    out = tmp_path / name
    assert main(["convert", str(nersc), str(out)]) == 0
    assert f"-> {out} ({fmt}, 4x2x6x8, 64-bit)" in capsys.readouterr().out
    np.testing.assert_array_equal(read_gauge(out, fmt), U)
    assert _no_temporaries(tmp_path)


def test_convert_options_and_index(tmp_path, nersc, U):
    out = tmp_path / "out.bin"
    assert main(["convert", str(nersc), str(out), "--to", "nersc", "--precision", "32",
                 "--storage", "3x2", "--endian", "little"]) == 0
    head = out.read_bytes()[:2000]
    assert b"DATATYPE = 4D_SU3_GAUGE\n" in head and b"FLOATING_POINT = IEEE32LITTLE" in head
    assert np.max(np.abs(read_gauge(out) - U)) < 3e-7
    ens = tmp_path / "two.h5"
    write_gauge(ens, random_links(seed=9, batch=2), "hdf5")
    assert main(["convert", str(ens), str(tmp_path / "one.lime"), "--index", "1"]) == 0
    np.testing.assert_array_equal(read_gauge(tmp_path / "one.lime"),
                                  random_links(seed=9, batch=2)[1:])


def test_info_prints_header_plaquette_and_checks(nersc, capsys):
    assert main(["info", str(nersc)]) == 0
    out = capsys.readouterr().out
    plaq = float(next(ln for ln in out.splitlines() if ln.startswith("  PLAQUETTE")).split("=")[1])
    assert "format:      nersc" in out and "lattice:     4x2x6x8" in out
    computed = float(next(ln for ln in out.splitlines()
                          if ln.startswith("plaquette:")).split()[1])
    assert abs(computed - plaq) < 1e-14  # the plaquette of the data agrees with the header
    assert "checksum: ok" in out and "plaquette: ok" in out and "link trace: ok" in out


def test_info_json(nersc, capsys):
    assert main(["info", str(nersc), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["format"] == "nersc" and doc["lattice"] == [4, 2, 6, 8] and doc["ok"] is True
    assert {c["name"] for c in doc["checks"]} == {"checksum", "plaquette", "link trace",
                                                  "links in SU(3)"}
    assert doc["max_unitarity_deviation"] < 1e-13


def _corrupt(path):
    raw = bytearray(path.read_bytes())
    raw[-500] ^= 0x04
    path.write_bytes(bytes(raw))


def test_info_on_a_corrupted_file_names_the_mismatch(nersc, capsys):
    _corrupt(nersc)
    assert main(["info", str(nersc)]) == 2
    cap = capsys.readouterr()
    assert "checksum: MISMATCH" in cap.out
    assert "failed: checksum" in cap.err


@pytest.mark.parametrize("case", ["missing", "corrupt", "extension", "exists", "several",
                                  "option", "truncated", "directory"])
def test_convert_bad_input_exit_2_and_no_output(tmp_path, nersc, capsys, case):
    out = tmp_path / "out.lime"
    args = ["convert", str(nersc), str(out)]
    if case == "missing":
        args[1] = str(tmp_path / "nope.nersc")
        expect = "no such file"
    elif case == "corrupt":
        _corrupt(nersc)
        expect = "checksum: MISMATCH"
    elif case == "extension":
        out = tmp_path / "out.xyz"
        args[2] = str(out)
        expect = "cannot tell the output format"
    elif case == "exists":
        out.write_bytes(b"old")
        expect = "exists; pass --overwrite"
    elif case == "several":
        write_gauge(tmp_path / "two.h5", random_links(seed=9, batch=2), "hdf5")
        args[1] = str(tmp_path / "two.h5")
        expect = "holds 2 configurations"
    elif case == "option":
        args += ["--storage", "3x2"]
        expect = "--storage does not apply to ildg output"
    elif case == "truncated":
        nersc.write_bytes(nersc.read_bytes()[:-8])
        expect = "truncated"
    else:
        args[1] = str(tmp_path)
        expect = "is a directory"
    assert main(args) == 2
    assert expect in capsys.readouterr().err
    if case == "exists":
        assert out.read_bytes() == b"old"  # untouched
    else:
        assert not out.exists()
    assert _no_temporaries(tmp_path)


def test_convert_write_failure_leaves_nothing(tmp_path, nersc, capsys, monkeypatch):
    import lattice_ml.io.ildg as ildg

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ildg, "write_lime_records", boom)
    out = tmp_path / "out.lime"
    assert main(["convert", str(nersc), str(out)]) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert not out.exists() and _no_temporaries(tmp_path)


def test_subprocess_entry_point(nersc):
    res = subprocess.run([sys.executable, "-m", "lattice_ml.cli.main", "info", str(nersc)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "checksum: ok" in res.stdout
    res = subprocess.run([sys.executable, "-m", "lattice_ml.cli.main", "info",
                          str(nersc) + ".missing"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "no such file" in res.stderr


def test_info_and_convert_of_a_scalar_field_ensemble(tmp_path, capsys):
    phi = np.random.default_rng(3).normal(size=(2, 8, 6))
    write_gauge(tmp_path / "phi.h5", phi, "hdf5")
    assert main(["info", str(tmp_path / "phi.h5")]) == 0
    out = capsys.readouterr().out
    assert "8x6" in out and "fields" in out and "2 configurations" in out
    assert main(["convert", str(tmp_path / "phi.h5"), str(tmp_path / "phi.nersc"),
                 "--index", "0"]) == 2
    assert "NERSC files hold one 4D SU(3) configuration" in capsys.readouterr().err
    assert not (tmp_path / "phi.nersc").exists()
