"""What the gauge-file layer refuses and how its files look on disk: NaN and non-group links
refused by every writer and reported by every reader and by ``lattice-ml info`` / ``convert``;
file modes that follow the umask; a reader that closes the pipe early; command-line wording;
and run checkpoints read by ``info`` and ``convert``."""

from __future__ import annotations

import json
import re
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
from io_reference import SHAPE, random_links

from lattice_ml.cli.main import main
from lattice_ml.io import (Ensemble, GaugeFileError, atomic_write_bytes, inspect_gauge,
                           nersc_checksum, read_gauge, save_checkpoint, scidac_checksum,
                           write_gauge)
from lattice_ml.io._common import plaquette_and_trace, xyzt_file_order
from lattice_ml.io.lime import write_lime_records


@pytest.fixture(scope="module")
def U():
    return random_links(seed=61)


def _nothing_left(directory, *keep) -> bool:
    return sorted(p.name for p in directory.iterdir()) == sorted(keep)


def _bad(U, kind):
    """Links with one defect: a NaN or an inf entry, one link scaled by 1.5 (its
    |U^dag U - 1| = 1.25), or every link times a phase (unitary, det != 1)."""
    V = U.copy()
    if kind == "nan":
        V[0, 1, 0, 0, 0, 0, 1, 2] = np.nan
    elif kind == "inf":
        V[0, 2, 1, 0, 0, 0, 0, 0] = np.inf
    elif kind == "scaled":
        V[0, 0, 0, 0, 0, 0] *= 1.5
    else:
        V = V * np.exp(0.3j)
    return V


REFUSAL = {"nan": "1 non-finite", "inf": "1 non-finite",
           "scaled": r"not unitary: max \|U\^dagger U - 1\| = 1\.25",
           "phase": r"not in SU\(3\): max \|det U - 1\| = 0\.87"}


# ------------------------------------------------------------------------------------------
# 1. writers refuse NaN / inf and links outside the group, before anything is written
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(REFUSAL))
@pytest.mark.parametrize("fmt", ["nersc", "ildg", "openqcd", "hdf5"])
def test_every_writer_refuses_nan_and_non_group_links(tmp_path, U, fmt, kind):
    with pytest.raises(ValueError, match=REFUSAL[kind]):
        write_gauge(tmp_path / "out", _bad(U, kind), fmt)
    assert _nothing_left(tmp_path)  # no file, no temporary


def test_ensemble_append_refuses_and_leaves_the_ensemble_as_it_was(tmp_path, U):
    path = tmp_path / "e.h5"
    with Ensemble(path, "w") as ens:
        with pytest.raises(ValueError, match="1 non-finite"):
            ens.append_configurations(_bad(U, "nan"))  # first append: no dataset created
        assert ens.configuration_shape is None
        ens.append_configurations(U)
        with pytest.raises(ValueError, match=r"not unitary: max \|U\^dagger U - 1\| = 1\.25"):
            ens.append_configurations(_bad(U, "scaled"))
        assert ens.n_configurations == 1 and ens._f["configurations"].shape[0] == 1
    np.testing.assert_array_equal(read_gauge(path), U)


def test_ensembles_of_u1_links_and_momenta(tmp_path):
    """U(1) links are checked like SU(N) ones; ``check=False`` stores complex arrays of the link
    layout that are not group elements (momenta, forces), but never NaN."""
    rng = np.random.default_rng(4)
    phases = np.exp(1j * rng.uniform(-np.pi, np.pi, size=(3, 2, 4, 4, 1, 1)))
    write_gauge(tmp_path / "u1.h5", phases, "hdf5")
    with pytest.raises(ValueError, match="not unitary"):
        write_gauge(tmp_path / "bad.h5", 1.5 * phases, "hdf5")
    write_gauge(tmp_path / "p.h5", 1.5 * phases, "hdf5", check=False)
    with Ensemble(tmp_path / "p.h5") as ens:
        np.testing.assert_array_equal(ens.configurations(), 1.5 * phases)
    with pytest.raises(GaugeFileError, match="links in U\\(1\\): FAILED"):
        read_gauge(tmp_path / "p.h5")
    nan = phases.copy()
    nan[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        write_gauge(tmp_path / "nan.h5", nan, "hdf5", check=False)
    assert _nothing_left(tmp_path, "u1.h5", "p.h5")


def test_scalar_field_ensembles_take_finite_fields_and_refuse_nan(tmp_path, capsys):
    phi = np.random.default_rng(3).normal(size=(2, 8, 6))
    write_gauge(tmp_path / "phi.h5", phi, "hdf5")
    phi[1, 3, 2] = np.nan
    with Ensemble(tmp_path / "phi.h5", "a") as ens:
        with pytest.raises(ValueError, match="field values contain 1 non-finite"):
            ens.append_configurations(phi)
        assert ens.n_configurations == 2
    with pytest.raises(ValueError, match="field values contain 1 non-finite"):
        write_gauge(tmp_path / "nan.h5", phi, "hdf5")
    assert _nothing_left(tmp_path, "phi.h5")
    assert main(["info", str(tmp_path / "phi.h5")]) == 0
    assert "field values finite: ok" in capsys.readouterr().out


# hand-built files whose own header checks pass, whatever the links (the library's writers
# refuse to write them)
def _raw_big_endian(U) -> bytes:
    F = xyzt_file_order(U[0])
    return np.ascontiguousarray(np.stack([F.real, F.imag], axis=-1), dtype=">f8").tobytes()


def _unchecked_nersc(path, U):
    raw = _raw_big_endian(U)
    plaq, trace = plaquette_and_trace(U[0])
    Lt, Lx, Ly, Lz = U.shape[2:6]
    header = (f"BEGIN_HEADER\nDATATYPE = 4D_SU3_GAUGE_3x3\nDIMENSION_1 = {Lx}\n"
              f"DIMENSION_2 = {Ly}\nDIMENSION_3 = {Lz}\nDIMENSION_4 = {Lt}\n"
              f"LINK_TRACE = {trace!r}\nPLAQUETTE = {plaq!r}\n"
              f"CHECKSUM = {nersc_checksum(raw, 'big'):08x}\nFLOATING_POINT = IEEE64BIG\n"
              "END_HEADER\n")
    path.write_bytes(header.encode() + raw)


def _unchecked_ildg(path, U):
    raw = _raw_big_endian(U)
    suma, sumb = scidac_checksum(raw, 4 * 18 * 8)
    Lt, Lx, Ly, Lz = U.shape[2:6]
    fmt = (f"<ildgFormat><field>su3gauge</field><precision>64</precision><lx>{Lx}</lx>"
           f"<ly>{Ly}</ly><lz>{Lz}</lz><lt>{Lt}</lt></ildgFormat>")
    cs = f"<scidacChecksum><suma>{suma:x}</suma><sumb>{sumb:x}</sumb></scidacChecksum>"
    with open(path, "wb") as fh:
        write_lime_records(fh, [("ildg-format", fmt.encode(), True, False),
                                ("ildg-binary-data", raw, False, False),
                                ("scidac-checksum", cs.encode(), False, True)])


@pytest.mark.parametrize("fmt,kind", [("nersc", "scaled"), ("nersc", "phase"),
                                      ("ildg", "nan"), ("ildg", "scaled")])
def test_readers_refuse_links_outside_the_group(tmp_path, U, fmt, kind):
    path = tmp_path / "in.dat"
    (_unchecked_nersc if fmt == "nersc" else _unchecked_ildg)(path, _bad(U, kind))
    _, info = inspect_gauge(path)
    assert [c.name for c in info.failed] == ["links in SU(3)"]  # the header checks pass
    with pytest.raises(GaugeFileError, match=rf"links in SU\(3\): FAILED .*{REFUSAL[kind]}"):
        read_gauge(path)
    V = read_gauge(path, check=False)
    assert V.shape == U.shape


@pytest.mark.parametrize("kind", ["scaled", "nan"])
def test_info_reports_the_deviation_and_exits_2(tmp_path, U, capsys, kind):
    path = tmp_path / "in.lime"
    _unchecked_ildg(path, _bad(U, kind))
    assert main(["info", str(path)]) == 2
    cap = capsys.readouterr()
    if kind == "scaled":
        # one link times 1.5: |U^dag U - 1| = 1.5^2 - 1 = 1.25, |det U - 1| = 1.5^3 - 1 = 2.375
        # (exactly on a rounding edge of the 3-digit print, so compare the numbers)
        m = re.search(r"unitarity:   max \|U\^dag U - 1\| = (\S+), max \|det U - 1\| = (\S+)\n",
                      cap.out)
        assert m, cap.out
        assert float(m.group(1)) == pytest.approx(1.25, abs=0.005)
        assert float(m.group(2)) == pytest.approx(2.375, abs=0.005)
    assert "links in SU(3): FAILED" in cap.out and "check failed: links in SU(3)" in cap.err
    assert main(["info", "--json", str(path)]) == 2
    doc = json.loads(capsys.readouterr().out)  # strict JSON: no NaN tokens
    assert doc["ok"] is False
    if kind == "scaled":
        assert doc["max_unitarity_deviation"] == pytest.approx(1.25)
        assert doc["max_det_deviation"] == pytest.approx(2.375)
    else:
        assert doc["max_unitarity_deviation"] is None and doc["plaquette"] == [None]


@pytest.mark.parametrize("to", ["out.h5", "out.nersc", "out.oqcd"])
@pytest.mark.parametrize("check", [True, False])
def test_convert_refuses_links_outside_the_group(tmp_path, U, capsys, to, check):
    path = tmp_path / "in.lime"
    _unchecked_ildg(path, _bad(U, "nan"))  # the SciDAC checksums of NaN data agree
    args = ["convert", str(path), str(tmp_path / to)] + ([] if check else ["--no-check"])
    assert main(args) == 2
    assert "non-finite" in capsys.readouterr().err
    assert _nothing_left(tmp_path, "in.lime")


def test_info_of_a_good_file_reports_the_group_check(tmp_path, U, capsys):
    write_gauge(tmp_path / "c.nersc", U, "nersc", precision=32)
    assert main(["info", str(tmp_path / "c.nersc")]) == 0
    out = capsys.readouterr().out
    assert "links in SU(3): ok (max |U^dag U - 1| = " in out and "tolerance 1e-05" in out


def test_openqcd_open_boundary_links_may_be_zero_other_links_not(tmp_path, U):
    W = U.copy()
    W[0, 0, -1] = 0.0  # openQCD's open boundary: U(x, 0) = 0 at x0 = N0 - 1
    write_gauge(tmp_path / "open.oqcd", W, "openqcd")
    np.testing.assert_array_equal(read_gauge(tmp_path / "open.oqcd"), W)
    with pytest.raises(ValueError, match="not unitary"):
        write_gauge(tmp_path / "open.nersc", W, "nersc")  # NERSC files are periodic
    W[0, 1, 0, 0, 0, 0] = 0.0  # a space link at x0 = 0
    with pytest.raises(ValueError, match="not unitary"):
        write_gauge(tmp_path / "bad.oqcd", W, "openqcd")
    assert _nothing_left(tmp_path, "open.oqcd")


# ------------------------------------------------------------------------------------------
# 2. file modes follow the umask
# ------------------------------------------------------------------------------------------
def _write_each_kind(directory, U):
    atomic_write_bytes(directory / "a.bin", b"abc")
    write_gauge(directory / "c.nersc", U, "nersc")
    write_gauge(directory / "c.h5", U, "hdf5")
    save_checkpoint(directory / "c.ckpt", {"a": 1})
    return ["a.bin", "c.nersc", "c.h5", "c.ckpt"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, U, umask, mode):
    old = os.umask(umask)
    try:
        names = _write_each_kind(tmp_path, U)
    finally:
        os.umask(old)
    assert {n: oct(stat.S_IMODE((tmp_path / n).stat().st_mode)) for n in names} == \
        {n: oct(mode) for n in names}
    assert _nothing_left(tmp_path, *names)


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_replacing_a_file_keeps_its_mode(tmp_path, U):
    old = os.umask(0o022)
    try:
        names = _write_each_kind(tmp_path, U)
        for n in names:
            os.chmod(tmp_path / n, 0o640)
        _write_each_kind(tmp_path, U)
    finally:
        os.umask(old)
    assert {oct(stat.S_IMODE((tmp_path / n).stat().st_mode)) for n in names} == {oct(0o640)}


# ------------------------------------------------------------------------------------------
# 3. a reader that closes the pipe early (`lattice-ml info --json FILE | head -c 10`)
# ------------------------------------------------------------------------------------------
def test_info_into_a_pipe_closed_early_is_not_a_traceback(tmp_path, U):
    path = tmp_path / "big.h5"
    # a metadata entry larger than a pipe's buffer, so that the writer blocks on a full pipe
    write_gauge(path, U, "hdf5", metadata={"notes": "x" * 300_000})
    proc = subprocess.Popen([sys.executable, "-m", "lattice_ml.cli.main", "info", "--json",
                             str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = proc.stdout.read(10)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert head == b'{\n  "file"'
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert proc.returncode == 141


# ------------------------------------------------------------------------------------------
# 4. the command line names its own flags
# ------------------------------------------------------------------------------------------
def test_undetectable_format_names_the_command_line_flag(tmp_path, capsys):
    path = tmp_path / "junk.dat"
    path.write_bytes(b"no gauge file" * 10)
    with pytest.raises(GaugeFileError, match="name it with format="):
        read_gauge(path)  # the library names its keyword argument
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert "pass --format" in err and "format=" not in err
    assert main(["convert", str(path), str(tmp_path / "o.h5")]) == 2
    err = capsys.readouterr().err
    assert "pass --from" in err and "format=" not in err


# ------------------------------------------------------------------------------------------
# 5. run checkpoints are read by info and convert
# ------------------------------------------------------------------------------------------
def _checkpoint(path, field, theory, next_update=30, total=42):
    config = {"lattice": {"shape": list(field.shape[2:-2] if field.ndim > 3 else
                                        field.shape[1:])},
              "theory": theory, "sampler": {"name": "hmc", "n_chains": field.shape[0]}}
    state = {"config": config, "next_update": next_update, "total_updates": total,
             "elapsed_s": 1.5, "segments": 1, "field": field, "rng": {"seed": 1},
             "history": {}}
    save_checkpoint(path, state, kind="run")
    return path


def test_info_and_convert_of_a_run_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    sets = ["theory.name=u1", "lattice.shape=[4,4]", "sampler.n_chains=2", "sampler.n_therm=2",
            "sampler.n_samples=40", "run.keep_checkpoint=true", "run.checkpoint_every=10",
            "run.progress=never"]
    assert main(["run", "--out", str(out)] + [a for s in sets for a in ("--set", s)]) == 0
    ckpt = out / "checkpoint.ckpt"
    capsys.readouterr()
    assert main(["info", str(ckpt)]) == 0
    text = capsys.readouterr().out
    assert "format:      checkpoint (kind run)" in text
    assert "update:      42 of 42 (next_update of total_updates)" in text
    assert "lattice:     4x4" in text and "U(1) links" in text and "theory:      u1" in text
    assert "chain 0:" in text and "chain 1:" in text
    assert "unitarity:   max |U^dag U - 1| = " in text and "det" not in text.split(
        "unitarity:")[1].splitlines()[0]
    assert main(["info", "--json", str(ckpt)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["format"] == "checkpoint" and doc["n_configurations"] == 2
    assert doc["header"]["next_update"] == 42 and doc["header"]["total_updates"] == 42
    assert doc["header"]["theory"]["name"] == "u1" and len(doc["plaquette"]) == 2
    assert doc["max_unitarity_deviation"] < 1e-12 and doc["ok"] is True

    from lattice_ml.io import load_checkpoint
    field = load_checkpoint(ckpt).state["field"]
    assert main(["convert", str(ckpt), str(tmp_path / "links.h5")]) == 0
    np.testing.assert_array_equal(read_gauge(tmp_path / "links.h5"), field)
    with Ensemble(tmp_path / "links.h5") as ens:
        assert list(ens.trajectories) == [42, 42]
        assert ens.metadata["source"]["format"] == "checkpoint"
    np.testing.assert_array_equal(read_gauge(ckpt, index=1), field[1:])


def test_convert_one_chain_of_an_su3_checkpoint_to_nersc(tmp_path, capsys):
    field = random_links(seed=8, batch=3)
    ckpt = _checkpoint(tmp_path / "checkpoint.ckpt", field, {"name": "su3", "beta": 6.0})
    assert main(["convert", str(ckpt), str(tmp_path / "c.nersc")]) == 2
    assert "holds 3 configurations" in capsys.readouterr().err
    assert main(["convert", str(ckpt), str(tmp_path / "c.nersc"), "--index", "2"]) == 0
    np.testing.assert_array_equal(read_gauge(tmp_path / "c.nersc"), field[2:])
    assert main(["info", str(ckpt)]) == 0
    text = capsys.readouterr().out
    assert "update:      30 of 42" in text and "theory:      su3, beta = 6.0" in text
    assert f"lattice:     {'x'.join(map(str, SHAPE))}" in text and "SU(3) links" in text
    assert "max |det U - 1|" in text


def test_checkpoints_that_are_refused(tmp_path, capsys):
    field = random_links(seed=8, batch=2)
    ckpt = _checkpoint(tmp_path / "bad.ckpt", _bad(field, "scaled"), {"name": "su3"})
    assert main(["info", str(ckpt)]) == 2
    assert "max |U^dag U - 1| = 1.25e+00" in capsys.readouterr().out
    assert main(["convert", str(ckpt), str(tmp_path / "o.h5"), "--no-check"]) == 2
    assert not (tmp_path / "o.h5").exists()
    phi = np.random.default_rng(1).normal(size=(2, 6, 4))
    assert main(["info", str(_checkpoint(tmp_path / "phi.ckpt", phi, {"name": "phi4"}))]) == 0
    assert "fields" in capsys.readouterr().out
    phi[0, 0, 0] = np.nan
    assert main(["info", str(_checkpoint(tmp_path / "nan.ckpt", phi, {"name": "phi4"}))]) == 2
    assert "field values finite: FAILED" in capsys.readouterr().out
    from lattice_ml.io import save_training_checkpoint
    save_training_checkpoint(tmp_path / "t.ckpt", step=3)
    assert main(["info", str(tmp_path / "t.ckpt")]) == 2
    assert "'training' checkpoint" in capsys.readouterr().err
    raw = bytearray(ckpt.read_bytes())
    raw[-3] ^= 1
    ckpt.write_bytes(bytes(raw))
    assert main(["info", str(ckpt)]) == 2
    assert "SHA-256 mismatch" in capsys.readouterr().err
    with pytest.raises(ValueError, match="checkpoint"):
        write_gauge(tmp_path / "x.ckpt", field, "checkpoint")
