"""End-to-end runs of `lattice-ml run` (small lattices): outputs, reproducibility, failures."""

import json
import subprocess
import sys

import numpy as np
import pytest

from lattice_ml.cli.main import main
from lattice_ml.stats import gamma_method

SMALL = ["--set", "lattice.shape=[6,6]", "--set", "sampler.n_chains=3",
         "--set", "sampler.n_therm=20", "--set", "sampler.n_samples=60",
         "--set", "run.progress=never"]


def run(tmp_path, name, *extra):
    out = tmp_path / name
    code = main(["run", "--out", str(out), *SMALL, *extra])
    return code, out


def test_small_run_writes_complete_outputs(tmp_path):
    code, out = run(tmp_path, "a")
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["theory"] == "phi4" and summary["lattice"] == [6, 6]
    assert summary["sampler"] == "hmc" and summary["backend"] == "numpy"
    assert summary["n_samples"] == 60 and 0 < summary["acceptance"] <= 1
    obs = summary["observables"]
    for key in ("phi2", "abs_magnetization", "susceptibility", "binder_cumulant"):
        assert set(obs[key]) >= {"mean", "error", "tau_int", "tau_int_error"}
        assert np.isfinite(obs[key]["mean"]) and obs[key]["error"] >= 0
    hist = np.load(out / "history.npz")
    assert hist["phi2"].shape == (3, 60)
    assert hist["two_point"].shape == (3, 60, 6)
    assert hist["delta_h"].shape == hist["accepted"].shape == (3, 60)
    # the summary can be redone from the saved histories
    redo = gamma_method(hist["phi2"])
    assert redo.value == pytest.approx(obs["phi2"]["mean"], rel=1e-14)
    assert redo.error == pytest.approx(obs["phi2"]["error"], rel=1e-12)
    assert summary["acceptance"] == pytest.approx(hist["accepted"].mean())
    assert (out / "config.toml").exists()
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


def test_same_seed_same_result_and_chain_independence(tmp_path):
    _, a = run(tmp_path, "a")
    _, b = run(tmp_path, "b")
    _, c = run(tmp_path, "c", "--set", "sampler.n_chains=5")
    ha, hb, hc = (np.load(d / "history.npz") for d in (a, b, c))
    np.testing.assert_array_equal(ha["phi2"], hb["phi2"])
    # chain b's history does not depend on how many chains run beside it
    np.testing.assert_array_equal(ha["phi2"], hc["phi2"][:3])
    _, d = run(tmp_path, "d", "--set", "run.seed=2")
    assert not np.array_equal(ha["phi2"], np.load(d / "history.npz")["phi2"])


@pytest.mark.parametrize("extra", [["--set", "theory.form=standard", "--set", "theory.m2=0.5"],
                                   ["--set", "sampler.integrator=leapfrog",
                                    "--set", "sampler.fine_steps=2"],
                                   ["--set", "run.dtype=float32"],
                                   ["--set", "run.backend=array_api_strict"],
                                   ["--set", "lattice.shape=[4,4,4]"]])
def test_variants_run(tmp_path, extra):
    code, out = run(tmp_path, "v", *extra)
    assert code == 0
    assert json.loads((out / "summary.json").read_text())["observables"]["phi2"]["mean"] > 0


def test_numpy_and_strict_backends_agree(tmp_path, monkeypatch):
    """The array-API code gives the same chains on both namespaces (the Numba kernels, which
    only serve NumPy arrays, sum in another order: HMC amplifies that round-off, so the
    comparison of the reference paths switches them off)."""
    monkeypatch.setenv("LATTICE_ML_KERNELS", "off")
    _, a = run(tmp_path, "np")
    _, b = run(tmp_path, "strict", "--set", "run.backend=array_api_strict")
    np.testing.assert_allclose(np.load(a / "history.npz")["phi2"],
                               np.load(b / "history.npz")["phi2"], rtol=1e-12)


def test_kernels_and_reference_agree_on_short_chains(tmp_path, monkeypatch):
    """With and without the phi4 force kernel, the first trajectories agree to round-off
    amplified by the molecular dynamics (a few trajectories, accept/reject unchanged)."""
    short = ["--set", "sampler.n_therm=0", "--set", "sampler.n_samples=5"]
    _, a = run(tmp_path, "kern", *short)
    monkeypatch.setenv("LATTICE_ML_KERNELS", "off")
    _, b = run(tmp_path, "ref", *short)
    ha, hb = np.load(a / "history.npz"), np.load(b / "history.npz")
    np.testing.assert_array_equal(ha["accepted"], hb["accepted"])
    np.testing.assert_allclose(ha["phi2"], hb["phi2"], rtol=1e-9)


def test_blow_up_fails_without_summary(tmp_path, capsys):
    """A step size far beyond stability drives the field to inf/NaN: exit 1, a message, and
    no summary.json left behind."""
    code, out = run(tmp_path, "bad", "--set", "sampler.tau=40.0", "--set", "sampler.n_steps=2",
                    "--set", "sampler.start=hot", "--set", "theory.lam=50.0")
    assert code == 1
    err = capsys.readouterr().err
    assert "NaN" in err or "nan" in err or "inf" in err
    assert not (out / "summary.json").exists()


def test_console_script_default_config_prints():
    """The installed entry point works (the README's first command relies on it)."""
    res = subprocess.run([sys.executable, "-m", "lattice_ml.cli.main", "config"],
                         capture_output=True, text=True)
    assert res.returncode == 0 and "[lattice]" in res.stdout


GAUGE_SMALL = ["--set", "lattice.shape=[6,6]", "--set", "sampler.n_chains=2",
               "--set", "sampler.n_therm=5", "--set", "sampler.n_samples=20",
               "--set", "run.progress=never"]


@pytest.mark.parametrize("extra,keys", [
    (["--set", "theory.name=u1"], {"plaquette", "polyakov_loop", "topological_susceptibility"}),
    (["--set", "theory.name=su2", "--set", "theory.action=symanzik",
      "--set", "sampler.fine_steps=2"], {"plaquette", "polyakov_loop"}),
    (["--set", "theory.name=suN", "--set", "theory.N=4", "--set", "lattice.shape=[4,4,4]"],
     {"plaquette", "polyakov_loop"}),
])
def test_gauge_runs(tmp_path, extra, keys):
    out = tmp_path / "g"
    assert main(["run", "--out", str(out), *GAUGE_SMALL, *extra]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert keys <= set(summary["observables"])
    assert 0 < summary["observables"]["plaquette"]["mean"] < 1
    assert summary["acceptance"] > 0.5
    hist = np.load(out / "history.npz")
    assert hist["plaquette"].shape == (2, 20)


@pytest.mark.parametrize("extra,key", [
    (["--set", "theory.name=su2", "--set", "sampler.name=heatbath",
      "--set", "theory.action=iwasaki"], "theory.action"),
    (["--set", "theory.name=su3", "--set", "sampler.fine_steps=3"], "sampler.fine_steps"),
    (["--set", "theory.name=u1", "--set", "theory.N=3"], "theory.N"),
])
def test_gauge_config_errors(tmp_path, capsys, extra, key):
    out = tmp_path / "bad"
    assert main(["run", "--out", str(out), *GAUGE_SMALL, *extra]) == 2
    err = capsys.readouterr().err
    assert key in err
    assert not (out / "summary.json").exists()


def test_heatbath_run(tmp_path):
    out = tmp_path / "hb"
    argv = ["run", "--out", str(out), *GAUGE_SMALL, "--set", "theory.name=su3",
            "--set", "sampler.name=heatbath", "--set", "sampler.n_or=2",
            "--set", "lattice.shape=[4,4,4,4]", "--set", "theory.beta=5.7"]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sampler"] == "heatbath" and summary["acceptance"] == 1.0
    assert "exp_minus_delta_h" not in summary["observables"]
    assert 0.3 < summary["observables"]["plaquette"]["mean"] < 0.7
    hist = np.load(out / "history.npz")
    assert "delta_h" not in hist and hist["plaquette"].shape == (2, 20)


def test_schwinger_run(tmp_path):
    out = tmp_path / "sw"
    argv = ["run", "--out", str(out), "--set", "theory.name=schwinger", "--set", "lattice.shape=[4,4]",
            "--set", "sampler.n_chains=2", "--set", "sampler.n_therm=3", "--set", "sampler.n_samples=8",
            "--set", "sampler.n_steps=4", "--set", "sampler.fine_steps=2", "--set", "theory.n_sources=2",
            "--set", "run.progress=never"]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["theory"] == "schwinger" and summary["couplings"]["mass"] == 0.1
    obs = summary["observables"]
    assert {"plaquette", "chiral_condensate", "topological_susceptibility"} <= set(obs)
    assert 0 < obs["plaquette"]["mean"] < 1 and obs["chiral_condensate"]["mean"] > 0
    hist = np.load(out / "history.npz")
    assert hist["pion_correlator"].shape == (2, 8, 4)


@pytest.mark.parametrize("extra,key", [(["--set", "lattice.shape=[4,4,4,4]"], "lattice.shape"),
                                       (["--set", "sampler.name=heatbath"], "sampler.name"),
                                       (["--set", "theory.nf=1"], "theory.nf")])
def test_schwinger_config_errors(tmp_path, capsys, extra, key):
    out = tmp_path / "bad"
    assert main(["run", "--out", str(out), "--set", "theory.name=schwinger", *extra]) == 2
    assert key in capsys.readouterr().err
    assert not (out / "summary.json").exists()
