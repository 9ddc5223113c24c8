"""`lattice-ml run` with dynamical fermions: the Schwinger model with Wilson or rooted staggered
fermions and SU(N) with `fermion = none | wilson | staggered` (tiny lattices, few trajectories)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from lattice_ml.cli.config import ConfigError, load_config
from lattice_ml.cli.jobs import build_job, fermion_job, gauge_job
from lattice_ml.cli.main import main
from lattice_ml.fermions import (StaggeredPseudofermionAction, StaggeredRationalAction,
                                 WilsonPseudofermionAction)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cli_replica import assert_same_histories, schwinger_replica  # noqa: E402

TINY = ["--set", "sampler.n_chains=2", "--set", "sampler.n_therm=2", "--set", "sampler.n_samples=6",
        "--set", "sampler.n_steps=4", "--set", "theory.n_sources=1", "--set", "run.progress=never"]


def run(tmp_path, name, *sets):
    out = tmp_path / name
    argv = ["run", "--out", str(out), *TINY]
    for s in sets:
        argv += ["--set", s]
    code = main(argv)
    return code, out


def job(*sets):
    return build_job(load_config(None, list(sets)))


def test_schwinger_staggered_run(tmp_path):
    """Staggered Schwinger model (nf = 2 in 2D: det D, one unrooted field) through the CLI is the
    library's pseudofermion HMC with the unrooted even/odd CG field at the same seed, bit for
    bit (tests/cli_replica.py)."""
    code, out = run(tmp_path, "st", "theory.name=schwinger", "theory.fermion=staggered",
                    "lattice.shape=[4,4]", "sampler.fine_steps=2", "theory.beta=2.0",
                    "theory.mass=0.1", "run.seed=5", "sampler.adapt_steps=false",
                    "sampler.start=cold", "sampler.tau=1.0", "sampler.tau_jitter=0.1",
                    "run.reunitarize_every=10")
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["fermion"] == "staggered" and summary["nf"] == 2
    assert summary["rooting"] == [0.5]          # det(D^dag D)^(1/2) = det D_st: 2 tastes in 2D
    assert summary["staggered"] == {"tastes_per_field": 2, "power_of_det_D": 1.0,
                                    "weight": "det D^(2/2) = det(D†D)^(2/4)",
                                    "fields": ["det D (unrooted, CG)"]}
    obs = summary["observables"]
    assert {"plaquette", "chiral_condensate", "topological_susceptibility"} <= set(obs)
    hist = np.load(out / "history.npz")
    assert hist["pion_correlator"].shape == (2, 6, 4)
    fermions = [StaggeredPseudofermionAction(0.1, 1, tol=1e-10)]
    assert_same_histories(hist, schwinger_replica(
        fermions, 2.0, 0.1, "staggered", 1, 2, 4, seed=5, n_chains=2, n_therm=2, n_samples=6))


def test_su2_wilson_clover_two_pseudofermions_run(tmp_path):
    code, out = run(tmp_path, "w", "theory.name=su2", "theory.fermion=wilson", "theory.nf=4",
                    "theory.mass=0.3", "theory.csw=1.0", "lattice.shape=[8,4]",
                    "sampler.fine_steps=2")
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["theory"] == "su2" and summary["fermion"] == "wilson" and summary["nf"] == 4
    assert summary["couplings"] == {"beta": 2.3, "mass": 0.3, "csw": 1.0}
    obs = summary["observables"]
    assert {"plaquette", "polyakov_loop", "chiral_condensate", "pion_mass"} <= set(obs)
    assert obs["pion_mass"]["mean"] > 0
    t_min, t_max = obs["pion_mass"]["fit_range"]
    assert 1 <= t_min < t_max <= 4                      # T = 8: the fit lives in [1, T/2]
    assert summary["acceptance"] > 0.5


@pytest.mark.parametrize("fermion", ["wilson", "staggered"])
def test_float32_runs_with_loose_solver_tolerance(tmp_path, fermion):
    code, out = run(tmp_path, f"f32{fermion}", "theory.name=schwinger", f"theory.fermion={fermion}",
                    "lattice.shape=[4,4]", "run.dtype=float32", "sampler.n_samples=5")
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dtype"] == "float32" and summary["acceptance"] > 0.5
    assert np.isfinite(summary["observables"]["chiral_condensate"]["mean"])


def _fermions(j):
    return j.extra["fermions"]


def test_jobs_and_rooting():
    j = job("theory.name=su3")
    assert j.N == 3 and "fermions" not in j.extra                  # fermion = "none" by default
    j = job("theory.name=su3", "theory.fermion=staggered", "lattice.shape=[4,4,4,4]")
    assert [f.power for f in _fermions(j)] == [0.25]
    assert all(isinstance(f, StaggeredRationalAction) for f in _fermions(j))
    j = job("theory.name=suN", "theory.N=4", "theory.fermion=staggered", "theory.nf=8",
            "lattice.shape=[4,4,4,4]")
    assert [f.power for f in _fermions(j)] == [0.5, 0.5]          # det D^2: two unrooted fields
    assert all(isinstance(f, StaggeredPseudofermionAction) for f in _fermions(j))
    # 4D: nf = 4 is det D (one unrooted field of four tastes), nf = 2 det D^(1/2) (RHMC),
    # nf = 6 det D^(3/2) (one of each)
    j = job("theory.name=su2", "theory.fermion=staggered", "theory.nf=4", "lattice.shape=[4,4,4,4]")
    assert [type(f) for f in _fermions(j)] == [StaggeredPseudofermionAction]
    assert j.description["staggered"]["power_of_det_D"] == 1.0
    j = job("theory.name=su2", "theory.fermion=staggered", "theory.nf=6", "lattice.shape=[4,4,4,4]")
    assert [type(f) for f in _fermions(j)] == [StaggeredPseudofermionAction,
                                               StaggeredRationalAction]
    assert [f.power for f in _fermions(j)] == [0.5, 0.25]
    assert j.description["staggered"]["fields"] == ["det D (unrooted, CG)", "det(D†D)^0.25 (RHMC)"]
    j = job("theory.name=schwinger", "theory.fermion=staggered", "theory.nf=1", "lattice.shape=[4,4]")
    assert j.N == 1 and [f.power for f in _fermions(j)] == [0.25]
    assert isinstance(_fermions(j)[0], StaggeredRationalAction)
    j = job("theory.name=schwinger", "theory.nf=6", "lattice.shape=[4,4]")
    assert j.extra["tol"] == 1e-10
    assert len(_fermions(j)) == 3 and all(isinstance(f, WilsonPseudofermionAction) and f.even_odd
                                          for f in _fermions(j))
    j = job("theory.name=su2", "theory.fermion=wilson", "theory.csw=1.2", "lattice.shape=[4,4]")
    assert _fermions(j)[0].csw == 1.2 and _fermions(j)[0].even_odd
    # the fermion actions are integrated: on the outer level with fine_steps, else with the gauge
    j = job("theory.name=su2", "theory.fermion=wilson", "lattice.shape=[4,4]", "sampler.fine_steps=3")
    outer, inner = j.sampler.levels
    assert list(outer.actions) == _fermions(j) and inner.n_steps == 3
    # the adapted sampler keeps the split and the pseudofermions
    adapted = j.with_n_steps(7)
    assert adapted.levels[0].n_steps == 7 and adapted.levels[1].n_steps == 3
    assert adapted.fermion_actions == j.sampler.fermion_actions


@pytest.mark.parametrize("sets,key", [
    (["theory.name=su2", "theory.fermion=wilson", "theory.nf=3", "lattice.shape=[4,4]"], "theory.nf"),
    (["theory.name=su2", "theory.fermion=staggered", "theory.mass=0", "lattice.shape=[4,4]"],
     "theory.mass"),
    (["theory.name=su2", "theory.fermion=staggered", "lattice.shape=[4,4,4]"], "lattice.shape"),
    (["theory.name=su3", "theory.fermion=wilson", "sampler.name=heatbath"], "sampler.name"),
    (["theory.name=schwinger", "theory.fermion=staggered", "theory.csw=1.0"], "theory.csw"),
    (["theory.name=schwinger", "theory.csw=-1.0"], "theory.csw"),
    (["theory.name=su2", "theory.fermion=quark"], "theory.fermion"),
    (["theory.name=schwinger", "theory.fermion=none"], "theory.fermion"),
])
def test_config_errors_name_the_key(tmp_path, capsys, sets, key):
    code, out = run(tmp_path, "bad", *sets)
    assert code == 2
    assert key in capsys.readouterr().err
    assert not (out / "summary.json").exists()


def test_variant_keys_name_the_fermion_they_need():
    with pytest.raises(ConfigError, match="csw needs theory.fermion = 'wilson'"):
        load_config(None, ["theory.name=su2", "theory.fermion=staggered", "theory.csw=1.0"])
    with pytest.raises(ConfigError, match="theory.mass"):
        load_config(None, ["theory.name=su2", "theory.mass=0.2"])   # fermion = "none": no mass
