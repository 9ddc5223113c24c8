"""`lattice-ml run` with `sampler.name = "slhmc"` (self-learning HMC, the `[slhmc]` table): the
refusals of the dry run, a tiny run end to end (2D Schwinger model 4x4), the identity network at
m_eff = m being HMC itself, resume in and after the training phase and extension (bit for bit),
the CASK network, the unrooted staggered fields, and a summary that says why it has no pion
mass. The exactness of SLHMC itself is tested in tests/test_slhmc.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from lattice_ml.cli.config import load_config
from lattice_ml.cli.jobs import build_job
from lattice_ml.cli.main import main
from lattice_ml.cli.measurements import pion_mass_entry
from lattice_ml.fermions import StaggeredPseudofermionAction, StaggeredRationalAction

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_resume import _stopped_and_resumed, _uninterrupted, _without_times  # noqa: E402

SCHWINGER = ["theory.name=schwinger", "lattice.shape=[4,4]", "theory.mass=0.1",
             "theory.n_sources=1", "sampler.n_chains=2", "sampler.n_steps=4",
             "run.progress=never"]
SL = SCHWINGER + ["sampler.name=slhmc", "slhmc.m_eff=0.2"]


def _cli(tmp_path, name, sets, command="run"):
    out = tmp_path / name
    argv = [command] + (["--out", str(out)] if command == "run" else [])
    for s in sets:
        argv += ["--set", s]
    return main(argv), out


@pytest.mark.parametrize("sets,key", [
    (["theory.name=su2", "lattice.shape=[4,4]", "sampler.name=slhmc"], "sampler.name"),
    (["sampler.name=slhmc"], "sampler.name"),                                   # φ⁴
    (SL + ["slhmc.rate=0.1"], "slhmc.rate"),
    (SL + ["slhmc.loss=l2"], "slhmc.loss"),
    (SL + ["slhmc.network=transformer"], "slhmc.network"),
    (SL + ["slhmc.loops=plaquette,hexagon"], "slhmc.loops"),
    (SL + ["slhmc.loops=plaquette,plaquette"], "slhmc.loops"),
    (SL + ["slhmc.loops=chair"], "slhmc.loops"),                                # 2D
    (SL + ["slhmc.n_layers=0"], "slhmc.n_layers"),
    (SL + ["slhmc.lr=0"], "slhmc.lr"),
    (SL + ["slhmc.train_trajectories=-1"], "slhmc.train_trajectories"),
    (SL + ["slhmc.loss=centered", "sampler.n_chains=1"], "slhmc.loss"),
    (SL + ["theory.fermion=staggered", "slhmc.m_eff=0"], "slhmc.m_eff"),
])
def test_config_refusals_name_the_key(tmp_path, capsys, sets, key):
    code, out = _cli(tmp_path, "bad", sets)
    err = capsys.readouterr().err
    assert code == 2 and key in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
    # the dry run refuses the same
    code, _ = _cli(tmp_path, "dry", sets, command="config")
    assert code == 2 and key in capsys.readouterr().err


def test_dry_run_prints_the_slhmc_table(capsys):
    code = main(["config", *sum((["--set", s] for s in SL), [])])
    text = capsys.readouterr().out
    assert code == 0 and "[slhmc]" in text and 'name = "slhmc"' in text
    assert "m_eff = 0.2" in text and 'loss = "paper"' in text


def test_tiny_run_end_to_end(tmp_path):
    """2 chains, 3 thermalisation + 6 training + 8 measured trajectories: the summary's slhmc
    entry, the histories of the measured trajectories, training.npz."""
    code, out = _cli(tmp_path, "r", SL + ["sampler.n_therm=3", "slhmc.train_trajectories=6",
                                          "sampler.n_samples=8"])
    assert code == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["sampler"] == "slhmc" and 0 < s["acceptance"] <= 1
    sl = s["slhmc"]
    assert sl["n_parameters"] == 6 and len(sl["weights"]) == 6
    assert sl["loops"] == ["plaquette", "polyakov_t", "polyakov_s"]
    assert sl["train_trajectories"] == 6 and sl["m_eff"] == 0.2 and sl["loss"] == "paper"
    for key in ("loss_first", "loss_last", "spread_first", "spread_last",
                "action_difference_std", "delta_h_difference_std"):
        assert np.isfinite(sl[key]) and sl[key] >= 0, key
    assert 0 <= sl["training_acceptance"] <= 1
    # the network moved away from the identity and the loss fell (m_eff != m: S_theta - S is
    # mostly a constant, which the paper's loss removes first)
    assert any(w != 0 for w in sl["weights"].values())
    assert sl["loss_last"] < sl["loss_first"]
    hist = np.load(out / "history.npz")
    assert hist["action_difference"].shape == hist["delta_h_difference"].shape == (2, 8)
    assert np.isclose(np.std(hist["action_difference"]), sl["action_difference_std"])
    # m_eff = 0.2 against m = 0.1: the effective fermion action is the smaller one
    assert np.mean(hist["action_difference"]) == pytest.approx(sl["action_difference_mean"])
    tr = np.load(out / "training.npz")
    assert tr["loss"].shape == (6,) and tr["theta"].shape == (6, 6)
    assert np.array_equal(tr["theta"][-1], list(sl["weights"].values()))
    assert {"plaquette", "chiral_condensate", "pion_mass"} <= set(s["observables"])
    # the analysis recomputes the run's observables from its histories
    from lattice_ml.cli.analyse import analyse_run
    again = analyse_run(out)
    assert again["observables"]["plaquette"] == s["observables"]["plaquette"]


def test_identity_network_at_the_true_mass_is_hmc(tmp_path):
    """Untrained (weights 0: the identity map) at m_eff = theory.mass the effective action is the
    true one, and SLHMC draws the random numbers of pseudofermion HMC in the same order: the run
    is the hmc run of the same seed (to round-off) with S_theta - S = 0."""
    common = SCHWINGER + ["sampler.n_therm=4", "sampler.n_samples=6", "run.seed=3"]
    code, a = _cli(tmp_path, "sl", common + ["sampler.name=slhmc", "slhmc.m_eff=0.1",
                                            "slhmc.train_trajectories=0"])
    assert code == 0
    code, b = _cli(tmp_path, "hmc", common)
    assert code == 0
    ha, hb = np.load(a / "history.npz"), np.load(b / "history.npz")
    assert np.array_equal(ha["accepted"], hb["accepted"])
    for key in ("plaquette", "chiral_condensate", "delta_h"):
        np.testing.assert_allclose(ha[key], hb[key], rtol=0, atol=1e-10, err_msg=key)
    assert np.max(np.abs(ha["action_difference"])) < 1e-10
    assert np.max(np.abs(ha["delta_h_difference"])) < 1e-9
    assert not (a / "training.npz").exists()


RESUME = load_config(None, SL + ["sampler.n_therm=2", "slhmc.train_trajectories=3",
                                 "sampler.n_samples=5", "run.checkpoint_every=1"])


def test_resume_in_and_after_training_is_bit_identical(tmp_path):
    """Stopped after update 3 (in the training phase, updates 3-5), again after 6 (the first
    measured SLHMC trajectory) and resumed: histories, training.npz and summary as without stops
    (the trained weights and the Adam moments are in the checkpoint)."""
    ref_summary, ref_hist = _uninterrupted(tmp_path, RESUME)
    ref_training = dict(np.load(tmp_path / "ref" / "training.npz"))
    summary, hist = _stopped_and_resumed(tmp_path, RESUME, [3, 4, 6])
    assert list(ref_hist) == list(hist)
    for key in ref_hist:
        assert np.array_equal(ref_hist[key], hist[key]), key
    training = np.load(tmp_path / "resumed" / "training.npz")
    for key, val in ref_training.items():
        assert np.array_equal(val, training[key]), key
    assert _without_times(summary) == _without_times(ref_summary)
    assert summary["segments"] == 4


def test_extension_of_a_finished_run(tmp_path, capsys):
    """A finished run with its final checkpoint extended by --set sampler.n_samples is the
    longer run (the trained network is kept, not retrained)."""
    base = SL + ["sampler.n_therm=2", "slhmc.train_trajectories=2", "run.keep_checkpoint=true"]
    code, short = _cli(tmp_path, "short", base + ["sampler.n_samples=5"])
    assert code == 0
    code = main(["run", "--resume", str(short), "--set", "sampler.n_samples=7"])
    assert code == 0
    code, long = _cli(tmp_path, "long", base + ["sampler.n_samples=7"])
    assert code == 0
    ha, hb = np.load(short / "history.npz"), np.load(long / "history.npz")
    for key in hb:
        assert np.array_equal(ha[key], hb[key]), key
    sa = json.loads((short / "summary.json").read_text())
    sb = json.loads((long / "summary.json").read_text())
    assert _without_times(sa["slhmc"]) == _without_times(sb["slhmc"])


def test_cask_network():
    job = build_job(load_config(None, SL + ["slhmc.network=cask", "slhmc.n_layers=2",
                                            "sampler.start=hot"]))
    net = job.extra["network"]
    assert net.n_parameters == 12                        # (rho, beta) x 3 loop types x 2 layers
    assert job.extra["parameter_names"][:2] == ["layer0/plaquette/rho", "layer0/plaquette/beta"]
    # one training trajectory moves the weights (the gradient goes through the CASK backward;
    # on the cold start it vanishes by symmetry, so hot links)
    from lattice_ml.backend import RandomStreams, namespace_by_name
    rng = RandomStreams(1, 2, namespace_by_name("numpy"))
    U = job.initial_field(rng)
    st = job.stateful
    st.updates = job.sampler.n_therm                     # skip to the training phase
    U, info = job.sampler.step(U, rng)
    assert st.updates == job.sampler.n_therm + 1 and len(st.records["loss"]) == 1
    assert np.any(np.asarray(net.parameters()) != 0)


def test_staggered_fields_of_the_effective_action():
    """4D staggered nf = 4 (det D, four tastes): one unrooted CG field, true and effective;
    nf = 2 (det D^(1/2)): RHMC on both sides."""
    base = ["theory.name=su2", "theory.fermion=staggered", "lattice.shape=[4,4,4,4]",
            "theory.mass=0.3", "sampler.name=slhmc", "slhmc.m_eff=0.4"]
    job = build_job(load_config(None, base + ["theory.nf=4"]))
    (true,), (eff,) = job.extra["fermions"], job.extra["effective"]
    assert isinstance(true, StaggeredPseudofermionAction) and true.mass == 0.3
    assert isinstance(eff.inner, StaggeredPseudofermionAction) and eff.inner.mass == 0.4
    assert eff.smearing is job.extra["network"]
    assert job.description["staggered"]["power_of_det_D"] == 1.0
    job = build_job(load_config(None, base + ["theory.nf=2"]))
    (true,), (eff,) = job.extra["fermions"], job.extra["effective"]
    assert isinstance(true, StaggeredRationalAction) and true.power == 0.25
    assert isinstance(eff.inner, StaggeredRationalAction) and eff.inner.power == 0.25


def test_staggered_schwinger_slhmc_run(tmp_path):
    code, out = _cli(tmp_path, "st", SL + ["theory.fermion=staggered", "sampler.n_therm=2",
                                           "slhmc.train_trajectories=2", "sampler.n_samples=5",
                                           "slhmc.loss=centered"])
    assert code == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["staggered"]["fields"] == ["det D (unrooted, CG)"] and s["slhmc"]["loss"] == "centered"


def test_a_summary_without_pion_mass_says_why():
    """A correlator whose effective mass has no plateau within its (tiny) errors gets an entry
    with the reason instead of no entry (choose_fit_range's message)."""
    T, rng = 8, np.random.default_rng(5)
    t = np.arange(T)
    exact = (np.cosh(0.5 * (t - T / 2)) + 3.0 * np.cosh(1.5 * (t - T / 2)))
    C = exact * (1 + 1e-6 * rng.standard_normal((4, 60, T)))
    entry = pion_mass_entry(C)
    assert set(entry) == {"unavailable"} and "no effective-mass plateau" in entry["unavailable"]
    C = rng.standard_normal((4, 60, T))                 # no signal at all
    assert "significant signal" in pion_mass_entry(C)["unavailable"]
    # a good correlator still gets its mass
    C = np.cosh(0.5 * (t - T / 2)) * (1 + 1e-3 * rng.standard_normal((4, 60, T)))
    entry = pion_mass_entry(C)
    assert entry["mean"] == pytest.approx(0.5, abs=0.01) and "fit_range" in entry
