"""`[measure] ama_sloppy / ama_regression`: the all-mode-averaged chiral condensate of a
Schwinger-model run against the exact (1/V) Re Tr D^{-1} of its own configurations (dense
inverse), the library's AMA applied to the run's histories, and the refusals (nothing written)."""

import json

import numpy as np
import pytest

from lattice_ml.cli.config import ConfigError, load_config
from lattice_ml.cli.main import main
from lattice_ml.fermions import WilsonDirac
from lattice_ml.io import Ensemble
from lattice_ml.stats import ama, ama_regression

MASS = 0.1


def _dense_condensate(U):
    """(1/V) Re Tr D^{-1} of each configuration ``U[b]`` (dense inverse of the Wilson operator)."""
    import lattice_ml.backend as B

    xp = B.namespace_by_name("numpy")
    sites = U.shape[2:-2]
    n = int(np.prod(sites)) * 2
    out = []
    for b in range(U.shape[0]):
        Ub = np.broadcast_to(U[b:b + 1], (n,) + U.shape[1:]).copy()
        eye = np.eye(n, dtype=np.complex128).reshape((n, *sites, 2, 1))
        cols = WilsonDirac(xp.asarray(Ub), MASS, check=False).apply(xp.asarray(eye))
        M = np.asarray(cols).reshape(n, n).T
        out.append(np.trace(np.linalg.inv(M)).real / np.prod(sites))
    return np.array(out)


@pytest.mark.slow
def test_schwinger_ama_condensate_agrees_with_the_exact_one(tmp_path):
    """2 chains x 90 measurements of the 4x4 Schwinger model (Wilson, m = 0.1): the condensate of
    2-iteration truncated solves is biased by many sigma; its AMA with the exact solves of every
    3rd measurement (same noise), the regression's AMA and the exact subset alone agree with the
    exact (1/V) Re Tr D^{-1} averaged over the run's saved configurations within 3 sigma of their
    errors (which include the noise of the estimator and the Monte Carlo error shared with the
    exact average, so the band is conservative); the summary's AMA equals stats.ama on the
    histories."""
    out = tmp_path / "ama"
    every = 3
    code = main(["run", "--out", str(out), "--set", "theory.name=schwinger",
                 "--set", "lattice.shape=[4,4]", "--set", f"theory.mass={MASS}",
                 "--set", "sampler.n_chains=2", "--set", "sampler.n_therm=20",
                 "--set", "sampler.n_samples=90", "--set", "theory.n_sources=2",
                 "--set", f"measure.every={every}", "--set", "measure.ama_sloppy=true",
                 "--set", "measure.sloppy_iterations=2", "--set", "measure.ama_regression=true",
                 "--set", "measure.ama_train=5", "--set", "output.save_every=1",
                 "--set", "run.progress=never"])
    assert code == 0
    obs = json.loads((out / "summary.json").read_text())["observables"]
    configs = []
    for path in sorted((out / "configs").glob("*.h5")):   # one file per save, every chain
        with Ensemble(path) as ens:
            configs.append(np.asarray(ens.configurations()))
    U = np.concatenate(configs)
    exact = _dense_condensate(U).mean()
    slo, reg, sub = (obs["chiral_condensate_ama_sloppy"], obs["chiral_condensate_ama_regression"],
                     obs["chiral_condensate"])
    assert U.shape[0] == 2 * 90
    assert abs(slo["approx"]["mean"] - exact) > 5 * slo["approx"]["error"]   # the bias is real
    for entry in (slo, reg, sub):
        assert abs(entry["mean"] - exact) < 3 * entry["error"], (entry["mean"], exact)
    assert slo["error"] < sub["error"]      # AMA beats the exact subset alone
    # the summary is the library's AMA of the run's histories
    with np.load(out / "history.npz") as h:
        res = ama(h["chiral_condensate_sloppy"], h["measure.chiral_condensate"], every=every,
                  approx_subset=h["measure.chiral_condensate_sloppy"])
        rr = ama_regression(h["ama_features"], h["measure.ama_features"],
                            h["measure.chiral_condensate"], every=every, n_train=5)
        # the subset's approximations are the full-axis ones at measurements 0, every, ...
        np.testing.assert_array_equal(h["measure.chiral_condensate_sloppy"],
                                      h["chiral_condensate_sloppy"][:, ::every])
        assert "chiral_condensate" not in h.files      # no exact solve at every measurement
    assert slo["mean"] == pytest.approx(res.value, rel=1e-12)
    assert slo["error"] == pytest.approx(res.error, rel=1e-12)
    assert reg["mean"] == pytest.approx(rr.value, rel=1e-12)
    assert reg["n_train"] == 5 and reg["n_all"] == 2 * (90 - 5 * every)


@pytest.mark.parametrize("sets,key", [
    (["theory.name=su2", "lattice.shape=[4,4]", "measure.ama_sloppy=true"], "measure.ama_sloppy"),
    (["measure.ama_regression=true"], "measure.ama_regression"),              # phi4
    (["theory.name=schwinger", "lattice.shape=[4,4]", "measure.ama_sloppy=true",
      "sampler.n_samples=40", "measure.every=10"], "measure.every"),
    (["theory.name=schwinger", "lattice.shape=[4,4]", "measure.ama_regression=true",
      "sampler.n_samples=100", "measure.every=10", "measure.ama_train=6"], "measure.ama_train"),
])
def test_ama_refusals_name_the_key_and_write_nothing(tmp_path, capsys, sets, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, sets)
    out = tmp_path / "bad"
    argv = ["run", "--out", str(out)]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 2
    assert key in capsys.readouterr().err
    assert not out.exists()


def test_ama_run_histories_and_summary(tmp_path):
    """A tiny run: the AMA histories (every measurement; the [measure] axis every 2nd) and the
    summary entries with their parts."""
    out = tmp_path / "tiny"
    code = main(["run", "--out", str(out), "--set", "theory.name=schwinger",
                 "--set", "lattice.shape=[4,4]", "--set", "sampler.n_chains=2",
                 "--set", "sampler.n_therm=2", "--set", "sampler.n_samples=12",
                 "--set", "sampler.n_steps=4", "--set", "theory.n_sources=1",
                 "--set", "measure.every=2", "--set", "measure.ama_sloppy=true",
                 "--set", "run.progress=never"])
    assert code == 0
    with np.load(out / "history.npz") as h:
        assert h["chiral_condensate_sloppy"].shape == (2, 12)
        assert h["measure.chiral_condensate"].shape == (2, 6)
        assert "ama_features" not in h.files
    entry = json.loads((out / "summary.json").read_text())["observables"][
        "chiral_condensate_ama_sloppy"]
    assert entry["every"] == 2 and entry["n_blocks"] == 6 and entry["n_subset"] == 12
    assert {"mean", "error", "tau_int", "approx", "correction", "exact",
            "error_uncorrelated"} <= set(entry)
    assert entry["mean"] == pytest.approx(entry["approx"]["mean"] + entry["correction"]["mean"],
                                          rel=1e-12)
    # lattice-ml analyse recomputes it from the histories, also after a cut (2 measurements: one
    # [measure] entry, the blocks stay aligned)
    from lattice_ml.cli.analyse import analyse_run
    again = analyse_run(out)["observables"]["chiral_condensate_ama_sloppy"]
    assert again["mean"] == pytest.approx(entry["mean"], rel=1e-12)
    assert again["error"] == pytest.approx(entry["error"], rel=1e-12)
    cut = analyse_run(out, discard=2)["observables"]["chiral_condensate_ama_sloppy"]
    assert cut["n_blocks"] == 5 and cut["n_subset"] == 10
