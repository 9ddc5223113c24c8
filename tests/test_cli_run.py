"""End-to-end runs of `lattice-ml run` (small lattices): outputs, reproducibility, failures."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lattice_ml.cli.main import main
from lattice_ml.stats import gamma_method

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cli_replica import (assert_same_histories, cold_links, gauge_measure,  # noqa: E402
                         library_history, schwinger_replica)

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


# the sampler keys a replica (tests/cli_replica.py) builds by hand, set explicitly
HMC_KEYS = ["--set", "sampler.adapt_steps=false", "--set", "sampler.start=cold",
            "--set", "sampler.tau=1.0", "--set", "sampler.tau_jitter=0.1",
            "--set", "sampler.n_steps=8", "--set", "run.seed=5"]


def _phi4_replica(shape, form, couplings, integrator="omelyan", fine=0, backend="numpy",
                  dtype="float64", n_chains=3, n_therm=20, n_samples=60):
    from lattice_ml.lattice import Lattice
    from lattice_ml.samplers import HMC, EuclideanSpace, Level
    from lattice_ml.scalar import Phi4Action, abs_magnetization, phi2, two_point_function
    lat = Lattice(shape)
    a = Phi4Action(lat, form, **couplings)
    levels = ([Level([a.part("kinetic")], 8, integrator), Level([a.part("local")], fine, integrator)]
              if fine else [Level([a], 8, integrator)])
    hmc = HMC(levels, EuclideanSpace(), tau=1.0, tau_jitter=0.1)
    return library_history(
        hmc, lambda phi, rng: {"phi2": phi2(phi), "abs_magnetization": abs_magnetization(phi),
                               "two_point": two_point_function(phi)},
        lambda rng: 0.0 * rng.normal(lat.shape), seed=5, n_chains=n_chains, n_therm=n_therm,
        n_samples=n_samples, backend=backend, dtype=dtype)


@pytest.mark.parametrize("extra,replica", [
    (["theory.form=standard", "theory.m2=0.5", "theory.lam=0.5"],
     dict(shape=(6, 6), form="standard", couplings=dict(m2=0.5, lam=0.5))),
    (["theory.beta=0.6", "theory.lam=1.0", "sampler.integrator=leapfrog", "sampler.fine_steps=2"],
     dict(shape=(6, 6), form="hopping", couplings=dict(beta=0.6, lam=1.0), integrator="leapfrog",
          fine=2)),
    (["theory.beta=0.6", "theory.lam=1.0", "run.dtype=float32"],
     dict(shape=(6, 6), form="hopping", couplings=dict(beta=0.6, lam=1.0), dtype="float32")),
    (["theory.beta=0.6", "theory.lam=1.0", "run.backend=array_api_strict"],
     dict(shape=(6, 6), form="hopping", couplings=dict(beta=0.6, lam=1.0),
          backend="array_api_strict")),
    (["theory.beta=0.4", "theory.lam=1.0", "lattice.shape=[4,4,4]"],
     dict(shape=(4, 4, 4), form="hopping", couplings=dict(beta=0.4, lam=1.0))),
])
def test_variants_run(tmp_path, extra, replica):
    """Each variant's CLI chains are the library's HMC chains built by hand from the same
    couplings, integrator and seed, bit for bit (tests/cli_replica.py)."""
    code, out = run(tmp_path, "v", *HMC_KEYS, *[a for s in extra for a in ("--set", s)])
    assert code == 0
    assert_same_histories(np.load(out / "history.npz"), _phi4_replica(**replica))


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


def _gauge_hmc_replica(shape, N, beta, action, fine, n_chains=2, n_therm=5, n_samples=20):
    from lattice_ml.gauge import GaugeAction
    from lattice_ml.samplers import HMC, Level, LieGroupSpace
    a = GaugeAction(beta, N, action)
    levels = ([Level([a.part("rectangle")], 8, "omelyan"),
               Level([a.part("plaquette")], fine, "omelyan")] if fine
              else [Level([a], 8, "omelyan")])
    hmc = HMC(levels, LieGroupSpace(N), tau=1.0, tau_jitter=0.1)
    return library_history(hmc, gauge_measure(len(shape) == 2 and N == 1),
                           cold_links(len(shape), shape, N), seed=5, n_chains=n_chains,
                           n_therm=n_therm, n_samples=n_samples, reunitarize_every=10)


@pytest.mark.parametrize("extra,keys,replica", [
    (["theory.name=u1", "theory.beta=2.0"],
     {"plaquette", "polyakov_loop", "topological_susceptibility"},
     dict(shape=(6, 6), N=1, beta=2.0, action="wilson", fine=0)),
    (["theory.name=su2", "theory.beta=2.3", "theory.action=symanzik", "sampler.fine_steps=2"],
     {"plaquette", "polyakov_loop"},
     dict(shape=(6, 6), N=2, beta=2.3, action="symanzik", fine=2)),
    (["theory.name=suN", "theory.N=4", "theory.beta=11.0", "lattice.shape=[4,4,4]"],
     {"plaquette", "polyakov_loop"},
     dict(shape=(4, 4, 4), N=4, beta=11.0, action="wilson", fine=0)),
])
def test_gauge_runs(tmp_path, extra, keys, replica):
    """The CLI's gauge HMC chains are the library's, built by hand (GaugeAction, the rectangles
    outer and the plaquettes inner with fine_steps, LieGroupSpace, reunitarisation every 10
    updates) at the same seed, bit for bit."""
    out = tmp_path / "g"
    argv = [*GAUGE_SMALL, *HMC_KEYS, "--set", "run.reunitarize_every=10",
            *[a for s in extra for a in ("--set", s)]]
    assert main(["run", "--out", str(out), *argv]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert keys <= set(summary["observables"])
    hist = np.load(out / "history.npz")
    assert hist["plaquette"].shape == (2, 20)
    assert_same_histories(hist, _gauge_hmc_replica(**replica))


def test_u1_run_matches_exact_2d(tmp_path):
    """2D U(1) on 6x6 at beta = 2 through the CLI: plaquette and topological susceptibility
    within 4 sigma of the exact character-expansion values of the torus (tests/gauge_exact.py),
    8 chains x 300 trajectories."""
    from gauge_exact import u1_plaquette, u1_topological_susceptibility
    out = tmp_path / "u1"
    argv = ["--set", "lattice.shape=[6,6]", "--set", "theory.name=u1", "--set", "theory.beta=2.0",
            "--set", "sampler.n_chains=8", "--set", "sampler.n_therm=50",
            "--set", "sampler.n_samples=300", "--set", "run.progress=never"]
    assert main(["run", "--out", str(out), *argv]) == 0
    obs = json.loads((out / "summary.json").read_text())["observables"]
    for key, exact in (("plaquette", u1_plaquette(2.0, 36)),
                       ("topological_susceptibility", u1_topological_susceptibility(2.0, 36))):
        r = obs[key]
        assert 300 >= 20 * r["tau_int"], (key, r)
        assert abs(r["mean"] - exact) < 4 * r["error"], (key, r["mean"], r["error"], exact)


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
    """SU(3) heatbath + over-relaxation through the CLI is the library's Heatbath at the same
    seed (with reunitarisation every 10 updates), bit for bit."""
    from lattice_ml.samplers import Heatbath
    out = tmp_path / "hb"
    argv = ["run", "--out", str(out), *GAUGE_SMALL, "--set", "theory.name=su3",
            "--set", "sampler.name=heatbath", "--set", "sampler.n_or=2", "--set", "run.seed=5",
            "--set", "lattice.shape=[4,4,4,4]", "--set", "theory.beta=5.7",
            "--set", "sampler.start=cold", "--set", "run.reunitarize_every=10"]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sampler"] == "heatbath" and summary["acceptance"] == 1.0
    assert "exp_minus_delta_h" not in summary["observables"]
    hist = np.load(out / "history.npz")
    assert "delta_h" not in hist and hist["plaquette"].shape == (2, 20)
    replica = library_history(Heatbath(5.7, 3, n_or=2), gauge_measure(False),
                              cold_links(4, (4, 4, 4, 4), 3), seed=5, n_chains=2, n_therm=5,
                              n_samples=20, reunitarize_every=10)
    assert_same_histories(hist, replica)


def test_schwinger_run(tmp_path):
    """Two-flavour Wilson Schwinger model through the CLI (default mass 0.1) is the library's
    even/odd pseudofermion HMC at the same seed, bit for bit."""
    from lattice_ml.fermions import WilsonPseudofermionAction
    out = tmp_path / "sw"
    argv = ["run", "--out", str(out), "--set", "theory.name=schwinger", "--set", "lattice.shape=[4,4]",
            "--set", "sampler.n_chains=2", "--set", "sampler.n_therm=3", "--set", "sampler.n_samples=8",
            "--set", "sampler.n_steps=4", "--set", "sampler.fine_steps=2", "--set", "theory.n_sources=2",
            "--set", "run.progress=never", "--set", "theory.beta=2.0", "--set", "run.seed=5",
            "--set", "sampler.adapt_steps=false", "--set", "sampler.start=cold",
            "--set", "sampler.tau=1.0", "--set", "sampler.tau_jitter=0.1",
            "--set", "run.reunitarize_every=10"]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["theory"] == "schwinger" and summary["couplings"]["mass"] == 0.1
    obs = summary["observables"]
    assert {"plaquette", "chiral_condensate", "topological_susceptibility"} <= set(obs)
    hist = np.load(out / "history.npz")
    assert hist["pion_correlator"].shape == (2, 8, 4)
    fermions = [WilsonPseudofermionAction(0.1, 1, tol=1e-10, csw=0.0, even_odd=True)]
    assert_same_histories(hist, schwinger_replica(
        fermions, 2.0, 0.1, "wilson", 2, 2, 4, seed=5, n_chains=2, n_therm=3, n_samples=8))


@pytest.mark.parametrize("extra,key", [(["--set", "lattice.shape=[4,4,4,4]"], "lattice.shape"),
                                       (["--set", "sampler.name=heatbath"], "sampler.name"),
                                       (["--set", "theory.nf=1"], "theory.nf")])
def test_schwinger_config_errors(tmp_path, capsys, extra, key):
    out = tmp_path / "bad"
    assert main(["run", "--out", str(out), "--set", "theory.name=schwinger", *extra]) == 2
    assert key in capsys.readouterr().err
    assert not (out / "summary.json").exists()
