"""`lattice-ml run` with flows for gauge fields: sampler.name = flow | flow_hmc on u1/su2/su3/suN
with [flow] kind = gradient | luscher | coupling; exact 2D plaquettes, summary fields, refusals."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from gauge_exact import sun_plaquette, u1_plaquette  # noqa: E402

from lattice_ml.cli.main import main  # noqa: E402


def _run(tmp_path, name, *sets):
    out = tmp_path / name
    args = ["run", "--out", str(out), "--set", "run.progress=never"]
    for s in sets:
        args += ["--set", s]
    return main(args), out


def _summary(out):
    return json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize("theory,beta,exact", [
    ("u1", 1.0, lambda: u1_plaquette(1.0, 16)),
    ("su2", 2.0, lambda: sun_plaquette(2.0, 2)),
])
def test_luscher_flow_metropolis_gives_the_exact_2d_plaquette(tmp_path, theory, beta, exact):
    code, out = _run(tmp_path, theory, f"theory.name={theory}", f"theory.beta={beta}",
                     "lattice.shape=[4,4]", "sampler.name=flow", "flow.kind=luscher",
                     "sampler.n_chains=8", "sampler.n_therm=5", "sampler.n_samples=60")
    assert code == 0
    s = _summary(out)
    assert s["sampler"] == "flow" and s["flow"]["kind"] == "luscher"
    assert s["flow"]["n_parameters"] == 1 and s["flow"]["train_steps"] == 0
    assert 0 < s["ess"] <= 1 and s["acceptance"] > 0.3
    assert s["flow"]["density_error"] < 0.01
    P = s["observables"]["plaquette"]
    assert abs(P["mean"] - exact()) < 4 * P["error"], (P, exact())
    if theory == "u1":
        assert "topological_susceptibility" in s["observables"]


def test_gradient_flow_hmc_for_su3_trains_and_reports(tmp_path):
    code, out = _run(tmp_path, "su3", "theory.name=su3", "theory.beta=3.0",
                     "lattice.shape=[4,4]", "sampler.name=flow_hmc", "flow.kind=gradient",
                     "flow.loops='plaquette,rectangle'", "flow.n_t=2", "flow.n_steps=3",
                     "flow.train_steps=3", "flow.batch_size=4", "sampler.n_chains=2",
                     "sampler.n_therm=2", "sampler.n_samples=20", "sampler.n_steps=4",
                     "sampler.adapt_steps=false", "sampler.min_acceptance=0.05")
    assert code == 0
    s = _summary(out)
    assert s["flow"]["kind"] == "gradient" and s["flow"]["n_parameters"] == 4
    assert s["flow"]["loops"] == ["plaquette", "rectangle"] and s["flow"]["train_steps"] == 3
    assert s["flow"]["loss"] == "reverse_kl" and s["flow"]["memory"] == "stages"
    assert np.isfinite(s["flow"]["final_loss"]) and s["train_seconds"] > 0
    assert s["integrator"] and 0 < s["acceptance"] <= 1
    assert 0 < s["observables"]["plaquette"]["mean"] < 1


def test_path_gradient_training_from_the_command(tmp_path):
    """flow.loss = path_gradient and flow.memory = constant reach the trainer and the flow; the
    summary records both."""
    code, out = _run(tmp_path, "su2", "theory.name=su2", "theory.beta=2.0",
                     "lattice.shape=[4,4]", "sampler.name=flow", "flow.kind=gradient",
                     "flow.loops=plaquette", "flow.n_t=1", "flow.n_steps=4",
                     "flow.loss=path_gradient", "flow.memory=constant", "flow.train_steps=2",
                     "flow.batch_size=4", "sampler.n_chains=2", "sampler.n_therm=2",
                     "sampler.n_samples=20", "sampler.min_acceptance=0.05")
    assert code == 0
    s = _summary(out)
    assert s["flow"]["loss"] == "path_gradient" and s["flow"]["memory"] == "constant"
    assert s["flow"]["train_steps"] == 2 and np.isfinite(s["flow"]["final_loss"])


def test_class_functions_of_loops_from_the_command(tmp_path):
    """flow.loops takes <loop>:<function> terms (and plaquette:re_tr as plaquette); the flow
    has one coefficient per term and basis function."""
    code, out = _run(tmp_path, "cf", "theory.name=su2", "theory.beta=2.0",
                     "lattice.shape=[4,4]", "sampler.name=flow", "flow.kind=gradient",
                     "flow.loops='plaquette:re_tr,plaquette:re_tr_sq'", "flow.n_t=2",
                     "flow.n_steps=4", "flow.train_steps=2", "flow.batch_size=4",
                     "sampler.n_chains=2", "sampler.n_therm=2", "sampler.n_samples=20",
                     "sampler.min_acceptance=0.05")
    assert code == 0
    s = _summary(out)
    assert s["flow"]["loops"] == ["plaquette", "plaquette:re_tr_sq"]
    assert s["flow"]["n_parameters"] == 4 and np.isfinite(s["flow"]["final_loss"])


def test_u1_coupling_flow_runs_from_the_command(tmp_path):
    code, out = _run(tmp_path, "cpl", "theory.name=u1", "theory.beta=1.0", "lattice.shape=[4,4]",
                     "sampler.name=flow", "flow.kind=coupling", "flow.n_layers=4",
                     "flow.channels=4", "flow.hidden_layers=1", "flow.train_steps=5",
                     "flow.batch_size=8", "sampler.n_chains=4", "sampler.n_therm=5",
                     "sampler.n_samples=40", "sampler.min_acceptance=0.01")
    assert code == 0
    s = _summary(out)
    assert s["flow"]["kind"] == "coupling" and s["flow"]["n_layers"] == 4
    assert 0 < s["ess"] <= 1


def test_too_coarse_a_step_fails_before_sampling(tmp_path, capsys):
    code, out = _run(tmp_path, "coarse", "theory.name=su3", "theory.beta=6.0",
                     "lattice.shape=[4,4]", "sampler.name=flow", "flow.kind=luscher",
                     "flow.n_steps=1", "flow.max_density_error=1e-6", "sampler.n_chains=2",
                     "sampler.n_therm=2", "sampler.n_samples=20")
    assert code != 0
    assert "flow.n_steps" in capsys.readouterr().err
    assert not (out / "summary.json").exists()


@pytest.mark.parametrize("sets,key", [
    (["theory.name=phi4", "flow.kind=gradient"], "flow.kind"),
    (["theory.name=su3", "flow.kind=coupling"], "flow.kind"),
    (["theory.name=u1", "flow.kind=coupling", "lattice.shape=[6,6]"], "lattice.shape"),
    (["theory.name=su2", "flow.loops='plaquette,chair'"], "flow.loops"),
    (["theory.name=su2", "flow.loops='hexagon'"], "flow.loops"),
    (["theory.name=su2", "flow.loops='plaquette:re_tr3'"], "flow.loops"),
    (["theory.name=u1", "flow.loops='plaquette,plaquette:abs_tr_sq'"], "flow.loops"),
    (["theory.name=su2", "flow.loops='plaquette,plaquette:re_tr'"], "flow.loops"),
    (["theory.name=schwinger"], "sampler.name"),
    (["theory.name=su2", "run.start_file='cfg.h5'"], "run.start_file"),
])
def test_invalid_gauge_flow_configs_are_refused_before_any_write(tmp_path, capsys, sets, key):
    out = tmp_path / "bad"
    args = ["run", "--out", str(out), "--set", "sampler.name=flow", "--set", "lattice.shape=[4,4]"]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 2
    assert key in capsys.readouterr().err
    assert not out.exists()


def test_a_poor_gauge_flow_proposal_names_the_flow_keys(tmp_path, capsys):
    """Below the acceptance floor, a Lüscher-map run is told to train a flow (it has no parameters
    to enlarge), not to raise flow.n_layers (a key of the coupling flows)."""
    code, out = _run(tmp_path, "poor", "theory.name=su2", "theory.beta=2.0", "lattice.shape=[4,4]",
                     "sampler.name=flow", "flow.kind=luscher", "sampler.n_chains=2",
                     "sampler.n_therm=2", "sampler.n_samples=20", "sampler.min_acceptance=0.99")
    err = capsys.readouterr().err
    assert code == 1 and not (out / "summary.json").exists()
    assert "sampler.min_acceptance" in err and "flow.kind = 'gradient'" in err
    assert "flow.n_layers" not in err


def test_gauge_flow_metropolis_resumes_bit_identically(tmp_path):
    """The chains' log-weights travel in the checkpoint: the resumed run does not recompute
    them by the (fixed-point) inverse of the flow, whose round-off (~1e-13) would show in
    delta_h."""
    from lattice_ml.cli.config import dump_toml, load_config
    from lattice_ml.cli.run import load_resume, run_job

    class Stop(Exception):
        pass

    def stop_at(k_stop):
        def hook(k, path):
            if k == k_stop:
                raise Stop
        return hook

    config = load_config(None, ["theory.name=su2", "theory.beta=2.0", "lattice.shape=[4,4]",
                                "sampler.name=flow", "flow.kind=luscher", "sampler.n_chains=2",
                                "sampler.n_therm=3", "sampler.n_samples=8", "run.progress=never",
                                "run.checkpoint_every=1", "run.reunitarize_every=4",
                                "sampler.min_acceptance=0"])
    dirs = {}
    for name in ("ref", "resumed"):
        dirs[name] = tmp_path / name
        dirs[name].mkdir()
        (dirs[name] / "config.toml").write_text(dump_toml(config))
    run_job(config, dirs["ref"], "never")
    state = None
    for k in (2, 6):
        with pytest.raises(Stop):
            run_job(config, dirs["resumed"], "never", resume=state, on_checkpoint=stop_at(k))
        state = load_resume(dirs["resumed"], config)
        assert state["log_w"].shape == (2,)
    run_job(config, dirs["resumed"], "never", resume=state)
    ha, hb = (np.load(d / "history.npz") for d in dirs.values())
    assert list(ha) == list(hb)
    for key in ha:
        np.testing.assert_array_equal(ha[key], hb[key])
