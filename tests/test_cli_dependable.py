"""`lattice-ml` as a dependable instrument (issue 12): validation before any write, the earlier
run kept until the new one completes, frozen or diverged chains refused, step-count adaptation,
reunitarisation, and the smaller defects. Every test here failed before the change it covers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lattice_ml.cli.config import ConfigError, load_config, parse_override
from lattice_ml.cli.main import digest, main
from lattice_ml.samplers.tuning import adapted_n_steps, target_delta_h

PHI4_TINY = ["lattice.shape=[4,4]", "sampler.n_chains=2", "sampler.n_therm=10",
             "sampler.n_samples=20", "run.progress=never"]
U1_TINY = ["theory.name=u1", "lattice.shape=[4,4]", "sampler.n_chains=2",
           "sampler.n_therm=10", "sampler.n_samples=20", "run.progress=never"]


def _argv(sets):
    return [a for s in sets for a in ("--set", s)]


def _run(out, sets, *extra):
    return main(["run", "--out", str(out), *extra, *_argv(sets)])


# ------------------------------------------------------------------------------------------
# 1. --overwrite keeps the completed run until the new one is known valid and has completed
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("late", [
    ["theory.name=u1", 'run.start_file="missing.nersc"'],
    ["sampler.name=flow", "flow.kernel=4"],
    ["run.backend=array_api_strict", "run.dtype=float32", "theory.lam=1e9", "sampler.n_steps=1",
     "sampler.adapt_steps=false", "sampler.tau=50.0", "sampler.start=hot"],
])
def test_overwrite_with_a_late_error_keeps_the_completed_run(tmp_path, capsys, late):
    out = tmp_path / "run"
    assert _run(out, PHI4_TINY) == 0
    before = {n: (out / n).read_bytes() for n in ("summary.json", "history.npz", "config.toml")}
    code = _run(out, PHI4_TINY + late, "--overwrite")
    assert code in (1, 2)
    assert "lattice-ml: error:" in capsys.readouterr().err
    assert {n: (out / n).read_bytes() for n in before} == before
    assert sorted(os.listdir(out)) == sorted(before)


# ------------------------------------------------------------------------------------------
# 2. one validation pass: `config` refuses every combination that `run` would
# ------------------------------------------------------------------------------------------
INVALID = [
    (["sampler.name=heatbath"], "sampler.name"),                                     # φ⁴ + heatbath
    (["theory.name=su3", "theory.fermion=wilson", "sampler.name=flow"], "sampler.name"),
    (["theory.name=schwinger", "sampler.name=flow_hmc"], "sampler.name"),          # fermions
    (["theory.name=u1", "sampler.name=flow", "flow.kind=coupling",
      "lattice.shape=[6,6]"], "lattice.shape"),                                   # not 4k
    (["theory.name=su2", "theory.fermion=wilson", "sampler.name=heatbath"], "sampler.name"),
    (["theory.name=su2", "sampler.name=heatbath", "theory.action=symanzik"], "theory.action"),
    (["theory.name=schwinger", "lattice.shape=[4,4,4]"], "lattice.shape"),
    (["theory.name=su2", "theory.fermion=wilson", "theory.nf=3"], "theory.nf"),
    (["theory.name=su2", "theory.fermion=staggered", "lattice.shape=[4,4,4]"], "lattice.shape"),
    (['run.start_file="cfg.h5"'], "run.start_file"),                                 # φ⁴ + file
    (["theory.name=su3", "sampler.fine_steps=2"], "sampler.fine_steps"),             # Wilson
    (["sampler.n_samples=3"], "sampler.n_samples"),                                  # Γ-method
    (["sampler.name=flow", "flow.kernel=4"], "flow.kernel"),
    (["theory.name=u1", "output.save_every=5", "output.format=nersc"], "output.format"),
    (["output.save_every=5", "output.format=ildg"], "output.format"),                # φ⁴
    (["theory.name=u1", "measure.clover_charge=true"], "measure.clover_charge"),     # 2D
    (["theory.name=su2", "lattice.shape=[4,4]", "measure.wilson_loops=3"], "measure.wilson_loops"),
    (["measure.wilson_flow=true"], "measure.wilson_flow"),                           # φ⁴
    (["sampler.min_acceptance=0.9", "sampler.target_acceptance=0.8"], "sampler.min_acceptance"),
    (["theory.name=u1", 'run.start_file="missing.h5"'], "run.start_file"),
]


@pytest.mark.parametrize("sets,key", INVALID)
def test_config_refuses_what_run_would_refuse_and_run_writes_nothing(tmp_path, capsys, sets,
                                                                     key):
    with pytest.raises(ConfigError) as info:
        load_config(None, sets)
    assert info.value.key == key
    assert main(["config", *_argv(sets)]) == 2
    out = tmp_path / "nested" / "out"
    assert _run(out, sets) == 2
    err = capsys.readouterr().err
    assert key in err and "Traceback" not in err
    assert not out.exists() and not out.parent.exists()


def test_bad_kernel_mode_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LATTICE_ML_KERNELS", "fast")
    out = tmp_path / "o"
    assert _run(out, PHI4_TINY + ["run.checkpoint_every=1"]) == 2
    assert "LATTICE_ML_KERNELS" in capsys.readouterr().err
    assert not out.exists()


def test_missing_array_api_strict_gets_the_install_hint(monkeypatch):
    import lattice_ml.backend as backend

    real = backend.namespace_by_name

    def fake(name):
        if name == "array_api_strict":
            raise ModuleNotFoundError("No module named 'array_api_strict'")
        return real(name)

    monkeypatch.setattr(backend, "namespace_by_name", fake)
    with pytest.raises(ConfigError, match=r"run.backend: .*pip install array-api-strict"):
        load_config(None, ["run.backend=array_api_strict"])


# ------------------------------------------------------------------------------------------
# 3. two runs into one directory: the second is refused naming the first
# ------------------------------------------------------------------------------------------
def test_second_run_into_a_locked_directory_is_refused(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    script = ("import sys; from pathlib import Path; from lattice_ml.cli.output import RunLock\n"
              f"with RunLock(Path({str(out)!r})):\n"
              "    print('locked', flush=True); sys.stdin.readline()\n")
    holder = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        proc = subprocess.run([sys.executable, "-m", "lattice_ml.cli.main", "run", "--out",
                               str(out), *_argv(PHI4_TINY)], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 2
        assert f"pid {holder.pid}" in proc.stderr and "in use" in proc.stderr
        assert not (out / "config.toml").exists() and not (out / "summary.json").exists()
        proc = subprocess.run([sys.executable, "-m", "lattice_ml.cli.main", "run", "--resume",
                               str(out)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and "in use" in proc.stderr
    finally:
        holder.communicate("\n", timeout=30)


# ------------------------------------------------------------------------------------------
# 4. frozen and diverged chains fail; the step adaptation makes the defaults work
# ------------------------------------------------------------------------------------------
def test_target_delta_h_and_the_adaptation_rule():
    # erfc(sqrt(<dH>)/2) = P  <=>  <dH> = (2 erfcinv(P))^2
    from scipy.special import erfc

    for p in (0.5, 0.8, 0.95):
        assert abs(erfc(np.sqrt(target_delta_h(p)) / 2) - p) < 1e-12
    h = target_delta_h(0.8)
    dh = np.full(40, np.sqrt(2 * h))                    # <dH^2>/2 = h: on target
    assert adapted_n_steps(10, dh, 0.8) == (10, 0)
    dh15 = np.sqrt(15.0) * dh                           # 15 h needs 15^(1/4) = 1.97x the steps
    assert adapted_n_steps(10, dh15, 0.8) == (20, 0)
    assert adapted_n_steps(10, 100 * dh, 0.8) == (20, 10)   # at most doubled; 10 is unstable
    assert adapted_n_steps(10, dh / 1e3, 0.8) == (8, 0)     # at most x0.8 down
    assert adapted_n_steps(10, dh / 1e3, 0.8, unstable=9) == (10, 9)  # never back to 9
    assert adapted_n_steps(10, [np.inf, np.nan], 0.8) == (20, 10)
    assert adapted_n_steps(1, dh / 1e3, 0.8) == (1, 0)


def test_adaptation_reaches_the_target_on_a_free_field(tmp_path):
    """Gaussian φ (λ = 0, m² = 1): from 1 step (acceptance ~0) the thermalisation adapts
    n_steps; the measured acceptance is near the 0.8 target (erfc model; 8 chains x 150)."""
    sets = ["lattice.shape=[8,8]", "theory.form=standard", "theory.m2=1.0", "theory.lam=0.0",
            "sampler.n_steps=1", "sampler.tau=2.0", "sampler.n_therm=150",
            "sampler.n_samples=150", "sampler.n_chains=8", "run.progress=never"]
    out = tmp_path / "o"
    assert _run(out, sets) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["n_steps_adapted"] and s["n_steps"] > 1
    assert 0.65 < s["acceptance"] < 0.93


def test_frozen_hmc_fails_with_the_keys_to_change(tmp_path, capsys):
    # tau = 100 with one step: every trajectory rejected
    sets = PHI4_TINY + ["sampler.tau=100.0", "sampler.n_steps=1", "sampler.adapt_steps=false",
                        "sampler.start=hot"]
    out = tmp_path / "o"
    assert _run(out, sets) == 1
    err = capsys.readouterr().err
    assert "sampler.min_acceptance" in err and "sampler.n_steps" in err
    assert not (out / "summary.json").exists() and not (out / "history.npz").exists()
    # with the floor lowered, the zero-variance rule still refuses a chain that never moved
    assert _run(tmp_path / "o2", sets + ["sampler.min_acceptance=0"]) == 1
    assert "frozen" in capsys.readouterr().err
    assert not (tmp_path / "o2" / "summary.json").exists()


def test_diverging_flow_training_fails(tmp_path, capsys):
    sets = PHI4_TINY + ["sampler.name=flow", "flow.n_layers=2", "flow.channels=2",
                        "flow.hidden_layers=1", "flow.train_steps=30", "flow.batch_size=8",
                        "flow.lr=1e6", "flow.max_grad_norm=0"]
    out = tmp_path / "o"
    assert _run(out, sets) == 1
    err = capsys.readouterr().err
    assert ("flow.lr" in err or "sampler.min_acceptance" in err or "frozen" in err)
    assert not (out / "summary.json").exists()


def test_su3_from_unit_links_thermalises_with_the_defaults(tmp_path):
    """The README example's path on a smaller lattice: cold SU(3) at beta = 6 has dH ~ 20 with
    8 steps; the adaptation lifts the acceptance above the floor (it was 0.000 before)."""
    sets = ["theory.name=su3", "lattice.shape=[4,4,4,4]", "sampler.n_therm=60",
            "sampler.n_samples=10", "run.progress=never"]
    out = tmp_path / "o"
    assert _run(out, sets) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["acceptance"] > 0.5
    assert 0.5 < s["observables"]["plaquette"]["mean"] < 0.7   # β = 6: 0.59 in large volume


# ------------------------------------------------------------------------------------------
# 5. float32 links are reunitarised on a schedule; the deviation is in the summary
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("theory", ["u1", "su3"])
def test_float32_links_are_reunitarised_and_report_the_deviation(tmp_path, capsys, theory):
    """float32 links drift off the group by round-off (a random walk of ~1e-7 per update): with
    this seed they pass the 1e-5 tolerance after 383 (U(1)) and 154 (SU(3)) updates unless they
    are reunitarised; the schedule keeps them at round-off and the summary says how far."""
    sets = [f"theory.name={theory}", "lattice.shape=[4,4]", "sampler.n_chains=2",
            "sampler.n_therm=20", "sampler.n_samples=500", "run.dtype=float32",
            "run.progress=never"]
    out = tmp_path / "o"
    assert _run(out, sets) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["reunitarize_every"] == 10 and 0 < s["max_unitarity_deviation"] < 1e-5
    assert _run(tmp_path / "o2", sets + ["run.reunitarize_every=0"]) == 1
    err = capsys.readouterr().err
    assert ("not unitary" in err or "not in SU(3)" in err) and "run.reunitarize_every" in err
    assert not (tmp_path / "o2" / "summary.json").exists()


# ------------------------------------------------------------------------------------------
# 8. smaller defects
# ------------------------------------------------------------------------------------------
def test_bare_paths_in_set_are_strings():
    assert parse_override("run.start_file=path/x.nersc") == (("run", "start_file"),
                                                             "path/x.nersc")
    assert parse_override("run.start_file=../cfg_12.lime") == (("run", "start_file"),
                                                               "../cfg_12.lime")


def test_digest_shows_every_observable_and_flags_short_chains():
    obs = {f"o{i}": {"mean": 1.0, "error": 0.1, "tau_int": 0.5} for i in range(6)}
    obs["slow"] = {"mean": 1.0, "error": 0.1, "tau_int": 30.0}
    lines = digest({"theory": "u1", "lattice": [4, 4], "sampler": "hmc", "n_samples": 100,
                    "observables": obs})
    assert len(lines) == 1 + 7
    assert "measure longer" in lines[-1] and "measure longer" not in lines[1]


@pytest.mark.slow
@pytest.mark.long     # float32: ~5 min CPU; float64 1e5 trajectories: about an hour
@pytest.mark.parametrize("dtype,n", [("float32", 10_000), ("float64", 100_000)])
def test_long_su3_runs_stay_on_the_group(tmp_path, dtype, n):
    """10^4 float32 / 10^5 float64 trajectories of 4x4 SU(3) (beta = 6): the largest deviation
    from the group over the run stays below the tolerance of each precision (1e-5, 1e-10)."""
    sets = ["theory.name=su3", "lattice.shape=[4,4]", "sampler.n_chains=1",
            "sampler.n_therm=0", f"sampler.n_samples={n}", f"run.dtype={dtype}",
            "run.progress=never", "sampler.adapt_steps=false", "sampler.n_steps=6"]
    out = tmp_path / "o"
    assert _run(out, sets) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["max_unitarity_deviation"] < (1e-5 if dtype == "float32" else 1e-10)


# ------------------------------------------------------------------------------------------
# [output]: configurations saved during the run
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sets,fmt,per_save", [
    (["theory.name=u1", "lattice.shape=[4,4]"], "hdf5", 1),
    (["theory.name=su3", "lattice.shape=[4,4,4,4]", "sampler.n_steps=12"], "nersc", 2),
    (["theory.name=su3", "lattice.shape=[4,4,4,4]", "sampler.n_steps=12"], "ildg", 2),
    (["lattice.shape=[4,4]"], "hdf5", 1),                                       # φ⁴
])
def test_configurations_are_saved_and_read_back(tmp_path, sets, fmt, per_save):
    from lattice_ml.io import read_gauge

    out = tmp_path / "o"
    base = ["sampler.n_chains=2", "sampler.n_therm=4", "sampler.n_samples=6",
            "run.progress=never", "output.save_every=3", f"output.format={fmt}",
            "sampler.min_acceptance=0"]
    assert _run(out, sets + base) == 0
    files = sorted((out / "configs").iterdir())
    assert len(files) == 2 * per_save                  # measurements 3 and 6
    assert files[0].name.startswith("cfg_00000007")    # after update 4 + 3
    if fmt != "hdf5" or "u1" in sets[0]:
        U = read_gauge(files[-1])                      # the format's checks pass
        assert U.shape[0] == (2 if fmt == "hdf5" else 1)


# ------------------------------------------------------------------------------------------
# [measure]: 4D gauge observables in the summary
# ------------------------------------------------------------------------------------------
def test_measure_table_adds_clover_charge_wilson_flow_and_loops(tmp_path):
    sets = ["theory.name=su2", "lattice.shape=[4,4,4,4]", "sampler.n_chains=2",
            "sampler.n_therm=20", "sampler.n_samples=10", "run.progress=never",
            "measure.every=2", "measure.clover_charge=true", "measure.wilson_loops=2",
            "measure.wilson_flow=true", "measure.flow_t_max=1.0", "measure.flow_eps=0.05",
            "theory.beta=2.5"]
    out = tmp_path / "o"
    assert _run(out, sets) == 0
    obs = json.loads((out / "summary.json").read_text())["observables"]
    for key in ("topological_charge_clover", "topological_susceptibility_clover",
                "wilson_loop_1x1", "wilson_loop_2x2", "creutz_ratio_2x2"):
        assert key in obs, key
    hist = np.load(out / "history.npz")
    assert hist["measure.Q_clover"].shape == (2, 5)
    # W(1,1) is the average (time-space) plaquette: same chains, same configurations
    assert abs(obs["wilson_loop_1x1"]["mean"] - obs["plaquette"]["mean"]) < 0.05
    assert obs["creutz_ratio_2x2"]["mean"] > 0          # an area law: a positive string tension


def test_measure_rules():
    with pytest.raises(ConfigError, match="measure.flow_t_max"):
        load_config(None, ["theory.name=su2", "measure.wilson_flow=true",
                           "measure.flow_t_max=1.01", "measure.flow_eps=0.02"])
    with pytest.raises(ConfigError, match="measure.every"):
        load_config(None, ["theory.name=su2", "measure.clover_charge=true",
                           "lattice.shape=[4,4,4,4]", "sampler.n_samples=20",
                           "measure.every=5"])


# ------------------------------------------------------------------------------------------
# extending a finished run
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("theory", [["lattice.shape=[4,4]"],
                                    ["theory.name=u1", "lattice.shape=[4,4]",
                                     "output.save_every=5", "measure.every=1"]])
def test_extending_a_finished_run_is_bit_identical(tmp_path, capsys, theory):
    base = theory + ["sampler.n_chains=2", "sampler.n_therm=30", "run.progress=never",
                     "run.keep_checkpoint=true"]
    ext, ref = tmp_path / "ext", tmp_path / "ref"
    assert _run(ext, base + ["sampler.n_samples=10"]) == 0
    first = (ext / "summary.json").read_text()
    # shortening and extending without the final checkpoint are refused
    assert main(["run", "--resume", str(ext), "--set", "sampler.n_samples=8"]) == 2
    assert "shorten" in capsys.readouterr().err
    assert (ext / "summary.json").read_text() == first
    assert main(["run", "--resume", str(ext), "--set", "sampler.n_samples=25"]) == 0
    assert _run(ref, base + ["sampler.n_samples=25"]) == 0
    a, b = np.load(ext / "history.npz"), np.load(ref / "history.npz")
    assert sorted(a.files) == sorted(b.files)
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    sa = json.loads((ext / "summary.json").read_text())
    sb = json.loads((ref / "summary.json").read_text())
    assert sa["observables"] == sb["observables"] and sa["n_samples"] == 25
    assert sa["segments"] == 2 and sb["segments"] == 1
    assert (ext / "config.toml").read_text() == (ref / "config.toml").read_text()
    if (ref / "configs").exists():
        assert sorted(os.listdir(ext / "configs")) == sorted(os.listdir(ref / "configs"))


def test_extension_needs_the_final_checkpoint(tmp_path, capsys):
    out = tmp_path / "o"
    assert _run(out, PHI4_TINY) == 0
    assert main(["run", "--resume", str(out), "--set", "sampler.n_samples=40"]) == 2
    assert "run.keep_checkpoint = true" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------
# the small-run rule: the array-API reference where compiling the kernels would dominate
# ------------------------------------------------------------------------------------------
def test_small_runs_take_the_reference_and_say_so(tmp_path, monkeypatch):
    pytest.importorskip("lattice_ml.kernels.phi4")
    from lattice_ml.cli.run import SMALL_RUN_WORK, force_evaluations, small_run_reason
    from lattice_ml.dispatch import kernel_mode, trace

    tiny = load_config(None, ["lattice.shape=[8,8]", "sampler.n_samples=100"])
    assert force_evaluations(tiny) == 16 * 64 * 600 * 16      # chains x V x updates x 2 x 8
    monkeypatch.delenv("LATTICE_ML_KERNELS", raising=False)
    assert "small run" in small_run_reason(tiny)
    assert force_evaluations(load_config(None)) >= SMALL_RUN_WORK      # the default keeps them
    assert small_run_reason(load_config(None)) is None
    with kernel_mode("cpu"):                                   # an explicit mode is obeyed
        assert small_run_reason(tiny) is None
    sets = PHI4_TINY + ["sampler.n_therm=2", "sampler.n_samples=5"]
    with trace() as log:
        assert _run(tmp_path / "small", sets) == 0
    s = json.loads((tmp_path / "small" / "summary.json").read_text())
    assert s["kernels"] == "off" and "LATTICE_ML_KERNELS=auto" in s["kernels_reason"]
    assert {impl for op, impl in log if op == "phi4_force"} == {"reference"}
    monkeypatch.setenv("LATTICE_ML_KERNELS", "auto")
    assert small_run_reason(tiny) is None
    with trace() as log:
        assert _run(tmp_path / "forced", sets) == 0
    s = json.loads((tmp_path / "forced" / "summary.json").read_text())
    assert s["kernels"] == "auto" and "kernels_reason" not in s
    assert {impl for op, impl in log if op == "phi4_force"} == {"cpu:phi4_force"}


# ------------------------------------------------------------------------------------------
# every theory x sampler pair the schema accepts runs out of the box
# ------------------------------------------------------------------------------------------
def _accepted_pairs():
    """(theory, sampler, fermion) for every combination that `lattice-ml config` accepts."""
    from lattice_ml.cli.schema import SAMPLERS, THEORIES

    pairs = []
    for theory, table in THEORIES.items():
        fermions = table.params["fermion"].choices if "fermion" in table.params else (None,)
        for sampler in SAMPLERS:
            for fermion in fermions:
                sets = [f"theory.name={theory}", f"sampler.name={sampler}", "lattice.shape=[4,4]"]
                if fermion is not None:
                    sets.append(f"theory.fermion={fermion}")
                try:
                    load_config(None, sets)
                except ConfigError:
                    continue
                pairs.append((theory, sampler, fermion))
    return pairs


PAIRS = _accepted_pairs()
SIGNAL = {"phi4": "phi2"}


GAUGE_FLOWS = [(t, s, f) for t, f in [("u1", None), ("su2", "none"), ("su3", "none"),
                                        ("suN", "none")] for s in ("flow", "flow_hmc")]
"""Pure-gauge flow pairs: out of the box they train a gradient flow (100 steps of 16; 90 s of CPU
for 2D SU(3) on 4x4), so they are in the `long` tier (tests/test_cli_gauge_flows.py runs them
small, against exact plaquettes, in the fast one)."""
SLOW_PAIRS = [(t, s, f) for t in ("su3", "suN") for f in ("wilson", "staggered")
              for s in ("hmc", "slhmc")] + [("su2", "slhmc", f) for f in ("wilson", "staggered")]
"""SU(3)/SU(N) with fermions: 13-22 s of CPU each on 4x4, in the slow tier (SU(2) and the
Schwinger model keep both fermions in the fast tier for HMC, the Schwinger model for self-learning
HMC, whose 50 training trajectories come on top)."""


def _tier(pair):
    if pair in GAUGE_FLOWS:
        return pytest.param(*pair, marks=pytest.mark.long)
    return pytest.param(*pair, marks=pytest.mark.slow) if pair in SLOW_PAIRS else pair


def test_the_accepted_pairs_are_the_documented_ones():
    """The table below is what docs/cli.md promises; a rule that starts refusing (or accepting)
    a pair shows up here."""
    gauge = [(t, s, f) for t in ("su2", "su3", "suN") for s, f in
             [("hmc", "none"), ("heatbath", "none"), ("hmc", "wilson"), ("hmc", "staggered"),
              ("slhmc", "wilson"), ("slhmc", "staggered")]]
    assert sorted(PAIRS, key=str) == sorted(
        [("phi4", "hmc", None), ("phi4", "flow", None), ("phi4", "flow_hmc", None),
         ("u1", "hmc", None), ("u1", "heatbath", None), *GAUGE_FLOWS,
         ("schwinger", "hmc", "wilson"), ("schwinger", "hmc", "staggered"),
         ("schwinger", "slhmc", "wilson"), ("schwinger", "slhmc", "staggered"), *gauge], key=str)


@pytest.mark.parametrize("theory,sampler,fermion", [_tier(pair) for pair in PAIRS],
                         ids=["-".join(str(p) for p in pair if p) for pair in PAIRS])
def test_every_accepted_pair_runs_out_of_the_box(tmp_path, theory, sampler, fermion):
    """Only the size is set (a 4x4 lattice, 2 chains, 40 thermalisation updates, 10
    measurements; φ⁴ flows: 2x2 and 40 measurements, a flow of 2 layers trained 100 steps):
    start, step counts, step adaptation and couplings are the defaults of the theory. The run
    passes every failure rule (acceptance above the floor, chains not frozen, finite fields)
    and its signal observable moved."""
    phi4_flow = theory == "phi4" and sampler in ("flow", "flow_hmc")
    n = 40 if phi4_flow else 10
    sets = [f"theory.name={theory}", f"sampler.name={sampler}",
            f"lattice.shape={'[2,2]' if phi4_flow else '[4,4]'}", "sampler.n_chains=2",
            "sampler.n_therm=40", f"sampler.n_samples={n}", "run.progress=never"]
    if fermion is not None:
        sets.append(f"theory.fermion={fermion}")
    if phi4_flow:
        sets += ["flow.n_layers=2", "flow.channels=4", "flow.hidden_layers=1",
                 "flow.train_steps=100"]
    out = tmp_path / "o"
    assert _run(out, sets) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["theory"] == theory and s["sampler"] == sampler
    assert s["acceptance"] >= load_config(None, sets)["sampler"]["min_acceptance"]
    obs = s["observables"]
    name = SIGNAL.get(theory, "plaquette")
    assert np.isfinite(obs[name]["mean"]) and obs[name]["error"] > 0
    if fermion not in (None, "none"):
        assert np.isfinite(obs["chiral_condensate"]["mean"])
    hist = np.load(out / "history.npz")
    assert hist[name].shape == (2, n) and np.ptp(hist[name]) > 0


def test_t0_and_w0_reach_the_summary(tmp_path):
    """2D U(1) at beta = 1 on 8x8: t^2 E(t) passes 0.3 at t ~ 3.2 and t d(t^2 E)/dt at
    t ~ 2.5 within flow_t_max = 6, so t0 and w0 are in the summary, and each agrees with the
    crossing of the chain-averaged histories (linear interpolation between flow times)."""
    sets = ["theory.name=u1", "lattice.shape=[8,8]", "theory.beta=1.0", "sampler.n_chains=2",
            "sampler.n_therm=50", "sampler.n_samples=20", "measure.every=2",
            "measure.wilson_flow=true", "measure.flow_t_max=6.0", "measure.flow_eps=0.05",
            "run.progress=never"]
    out = tmp_path / "o"
    assert _run(out, sets) == 0
    obs = json.loads((out / "summary.json").read_text())["observables"]
    h = np.load(out / "history.npz")
    t = h["measure.flow_times"][0, 0]
    assert h["measure.t2E_0"].shape == (2, 10)                  # every 2nd of 20 measurements
    t2E = np.array([h[f"measure.t2E_{i}"].mean() for i in range(t.size)])
    W = np.array([h[f"measure.W0_{i}"].mean() for i in range(t.size)])
    t0_hist = np.interp(0.3, t2E, t)                            # both increase with t here
    w0_hist = np.sqrt(np.interp(0.3, W, t))
    assert 0 < obs["t0"]["error"] < 0.2 * obs["t0"]["mean"]
    assert 0 < obs["w0"]["error"] < 0.2 * obs["w0"]["mean"]
    assert abs(obs["t0"]["mean"] - t0_hist) < 0.05 * t0_hist
    assert abs(obs["w0"]["mean"] - w0_hist) < 0.05 * w0_hist
    assert obs["w0"]["mean"] ** 2 < obs["t0"]["mean"]            # W passes 0.3 first


def test_ctrl_c_during_start_up_is_one_line_not_a_traceback(monkeypatch, capsys):
    """Ctrl-C before the run's own handler exists (importing, reading the configuration) exits
    130 with one line on stderr."""
    import lattice_ml.cli.main as cli_main

    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli_main, "_cmd_run", interrupted)
    capsys.readouterr()
    assert cli_main.main(["run", "--set", "lattice.shape=[4,4]"]) == 130
    err = capsys.readouterr().err
    assert "interrupted before the run started" in err and "Traceback" not in err
    assert err.strip().count("\n") <= 1
