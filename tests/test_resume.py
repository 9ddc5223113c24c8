"""Checkpoint and resume of `lattice-ml run`: a run stopped anywhere (in process, by SIGKILL or by
SIGINT from another process) and resumed gives bit-identical histories and identical summary
observables to an uninterrupted run; bad checkpoints are refused with exit code 2."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lattice_ml.cli.config import dump_toml, load_config
from lattice_ml.cli.main import main
from lattice_ml.cli.run import ResumeError, load_resume, run_job
from lattice_ml.io.checkpoint import CheckpointError, load_checkpoint

TINY = ["lattice.shape=[4,4]", "sampler.n_chains=2", "sampler.n_therm=3", "sampler.n_samples=5",
        "sampler.measure_every=2", "run.progress=never", "run.checkpoint_every=1"]


class Stop(Exception):
    """Stands for a crash right after a checkpoint was written."""


def _stop_at(k_stop):
    def hook(k, path):
        if k == k_stop:
            raise Stop
    return hook


def _new_dir(tmp_path, name, config):
    out = tmp_path / name
    out.mkdir()
    (out / "config.toml").write_text(dump_toml(config))
    return out


def _uninterrupted(tmp_path, config):
    out = _new_dir(tmp_path, "ref", config)
    return run_job(config, out, "never"), np.load(out / "history.npz")


def _stopped_and_resumed(tmp_path, config, stops):
    out = _new_dir(tmp_path, "resumed", config)
    state = None
    for k in stops:
        with pytest.raises(Stop):
            run_job(config, out, "never", resume=state, on_checkpoint=_stop_at(k))
        state = load_resume(out, config)
        assert state["next_update"] == k
    summary = run_job(config, out, "never", resume=state)
    return summary, np.load(out / "history.npz")


def assert_same_run(a, b):
    (sa, ha), (sb, hb) = a, b
    assert list(ha) == list(hb)
    for key in ha:
        assert ha[key].dtype == hb[key].dtype and ha[key].shape == hb[key].shape
        assert np.array_equal(ha[key], hb[key], equal_nan=True), key
    assert _without_times(sa) == _without_times(sb)


def _without_times(summary):
    """The summary without wall times and the count of segments (they differ by design)."""
    if isinstance(summary, dict):
        return {k: _without_times(v) for k, v in summary.items()
                if k not in ("elapsed_s", "segments", "train_seconds")}
    return summary


JOBS = {
    "phi4": [],
    "phi4_two_scales_f32": ["sampler.fine_steps=2", "run.dtype=float32",
                            "sampler.start=hot"],
    "u1_hmc": ["theory.name=u1"],
    "su2_heatbath": ["theory.name=su2", "sampler.name=heatbath", "sampler.n_or=1"],
    "su3_heatbath": ["theory.name=su3", "sampler.name=heatbath", "theory.beta=3.0"],
    "suN_symanzik_two_scales": ["theory.name=suN", "theory.N=3", "theory.action=symanzik",
                                "sampler.fine_steps=1", "sampler.start=hot", "sampler.n_steps=2",
                                "sampler.n_therm=1", "sampler.n_samples=5",
                                "sampler.measure_every=1"],
    "schwinger": ["theory.name=schwinger", "sampler.n_steps=1", "sampler.tau=0.5",
                  "sampler.n_chains=1", "theory.n_sources=1", "sampler.n_therm=1",
                  "sampler.n_samples=5", "sampler.measure_every=1"],
}
JOBS["schwinger_staggered_rhmc"] = JOBS["schwinger"] + ["theory.fermion=staggered", "theory.nf=1"]  # RHMC: nf = 2 is the unrooted CG field
_FLOW = ["flow.n_layers=2", "flow.channels=2", "flow.hidden_layers=1",
         "flow.train_steps=5", "flow.batch_size=4", "sampler.min_acceptance=0"]  # a 5-step flow
JOBS["phi4_flow_metropolis"] = ["sampler.name=flow", *_FLOW]  # the flow is retrained on resume
JOBS["phi4_flow_hmc"] = ["sampler.name=flow_hmc", *_FLOW]
STOPS = {"suN_symanzik_two_scales": [1, 2, 4], "schwinger": [1, 2, 4],
         "schwinger_staggered_rhmc": [1, 2, 4], "phi4_flow_metropolis": [6],
         "phi4_flow_hmc": [3, 6]}
SLOW_JOBS = ("phi4_flow_hmc", "schwinger_staggered_rhmc")  # every build of a flow job trains it and measures its ESS


@pytest.mark.parametrize("job", [pytest.param(j, marks=pytest.mark.slow) if j in SLOW_JOBS else j
                                 for j in JOBS])
def test_every_job_resumes_bit_identically(tmp_path, job):
    """Stops in thermalisation, at the first measurement and between measurements (total = 3 +
    5 x 2 = 13 updates, 1 + 5 for the costly ones); the pseudofermion HMC also draws
    noise in its measurements."""
    config = load_config(None, TINY + JOBS[job])
    ref = _uninterrupted(tmp_path, config)
    assert_same_run(ref, _stopped_and_resumed(tmp_path, config, STOPS.get(job, [2, 4, 9])))
    assert ref[0]["segments"] == 1


def test_array_api_strict_resumes_bit_identically(tmp_path):
    config = load_config(None, TINY + ["run.backend=array_api_strict", "theory.name=u1",
                                       "sampler.n_steps=2"])
    assert_same_run(_uninterrupted(tmp_path, config),
                    _stopped_and_resumed(tmp_path, config, [5]))


def test_resume_at_start_and_end_and_by_time(tmp_path):
    config = load_config(None, TINY)
    ref = _uninterrupted(tmp_path, config)
    got = _stopped_and_resumed(tmp_path, config, [0, 13])  # before the first and after the last
    assert_same_run(ref, got)
    assert got[0]["segments"] == 3
    timed = load_config(None, TINY + ["run.checkpoint_every=0", "run.checkpoint_seconds=1e-9"])
    out = _new_dir(tmp_path, "timed", timed)
    seen = []
    run_job(timed, out, "never", on_checkpoint=lambda k, p: seen.append(k))
    assert seen == list(range(14))  # every update is more than 1e-9 s after the last save


def test_a_segment_that_dies_before_its_first_checkpoint_is_counted(tmp_path, monkeypatch):
    """Three processes worked on the run (the second died in its first update, before any
    periodic checkpoint): the summary says 3 segments, not 2."""
    import lattice_ml.cli.run as run_module

    config = load_config(None, TINY)
    ref = _uninterrupted(tmp_path, config)
    out = _new_dir(tmp_path, "died", config)
    with pytest.raises(Stop):
        run_job(config, out, "never", on_checkpoint=_stop_at(4))
    real_build = run_module.build_job

    def dying_build(c):
        job = real_build(c)

        class Dies:
            def step(self, field, rng):
                raise Stop
        job.sampler = Dies()
        return job

    monkeypatch.setattr(run_module, "build_job", dying_build)
    with pytest.raises(Stop):
        run_job(config, out, "never", resume=load_resume(out, config))
    monkeypatch.setattr(run_module, "build_job", real_build)
    state = load_resume(out, config)
    assert state["next_update"] == 4 and state["segments"] == 2
    got = run_job(config, out, "never", resume=state), np.load(out / "history.npz")
    assert got[0]["segments"] == 3
    assert_same_run(ref, got)


def test_checkpoint_contents(tmp_path):
    config = load_config(None, TINY + ["theory.name=u1"])
    out = _new_dir(tmp_path, "c", config)
    with pytest.raises(Stop):
        run_job(config, out, "never", on_checkpoint=_stop_at(6))
    ck = load_checkpoint(out / "checkpoint.ckpt", kind="run")
    s = ck.state
    assert s["config"] == config and s["next_update"] == 6 and s["total_updates"] == 13
    assert s["field"].shape == (2, 2, 4, 4, 1, 1) and s["field"].dtype == np.complex128
    assert len(s["rng"]["chains"]) == 2 and s["elapsed_s"] > 0
    # 6 updates = 3 thermalisation + 3 measured trajectories, one measurement (every 2)
    assert s["history"]["delta_h"].shape == (3, 2)
    assert s["history"]["plaquette"].shape == (1, 2)
    assert ck.versions["lattice_ml"] and ck.versions["numpy"] == np.__version__


# --------------------------------------------------------------------------------------------
# the command: refusals (exit 2) and the life cycle of the checkpoint file
# --------------------------------------------------------------------------------------------

def _interrupted_dir(tmp_path, name="run", extra=(), stop=4):
    config = load_config(None, TINY + list(extra))
    out = _new_dir(tmp_path, name, config)
    with pytest.raises(Stop):
        run_job(config, out, "never", on_checkpoint=_stop_at(stop))
    return out


def _refused(capsys, argv, *words):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("lattice-ml: error: ") and "Traceback" not in err
    for w in words:
        assert w in err, (w, err)


def test_corrupt_checkpoints_are_refused(tmp_path, capsys):
    out = _interrupted_dir(tmp_path)
    ck = out / "checkpoint.ckpt"
    raw = ck.read_bytes()
    ck.write_bytes(raw[: len(raw) - 100])
    _refused(capsys, ["run", "--resume", str(out)], "truncated", str(ck))
    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 1
    ck.write_bytes(bytes(flipped))
    _refused(capsys, ["run", "--resume", str(out)], "SHA-256 mismatch")
    ck.write_bytes(b"")
    _refused(capsys, ["run", "--resume", str(out)], "truncated")
    ck.unlink()
    _refused(capsys, ["run", "--resume", str(out)], "no checkpoint")
    assert not (out / "summary.json").exists()


def test_checkpoint_of_another_configuration_is_refused(tmp_path, capsys):
    out = _interrupted_dir(tmp_path)
    text = (out / "config.toml").read_text()
    (out / "config.toml").write_text(text.replace("beta = 0.64", "beta = 0.65"))
    _refused(capsys, ["run", "--resume", str(out)], "another configuration",
             "theory.beta (0.64 in the checkpoint, 0.65 in config.toml)")
    (out / "config.toml").write_text(text)
    _refused(capsys, ["run", "--resume", str(out), "--set", "sampler.n_therm=9"],
             "sampler.n_therm", "cannot be changed when resuming")
    _refused(capsys, ["run", "--resume", str(out), "--out", str(tmp_path / "x")], "--resume")
    _refused(capsys, ["run", "--resume", str(tmp_path / "nowhere")], "not a directory")
    # a new run into the directory of an unfinished one is refused too
    _refused(capsys, ["run", "--out", str(out)], "--resume", "unfinished")


def test_resume_life_cycle(tmp_path, capsys):
    out = _interrupted_dir(tmp_path)
    (out / ".checkpoint.ckpt.abc123.tmp").write_bytes(b"half a checkpoint")
    # keys that do not change the results may be changed on resume; config.toml follows
    assert main(["run", "--resume", str(out), "--set", "run.keep_checkpoint=true"]) == 0
    assert "keep_checkpoint = true" in (out / "config.toml").read_text()
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["segments"] == 2
    # kept: the final state of the chains
    assert load_checkpoint(out / "checkpoint.ckpt").state["next_update"] == 13
    capsys.readouterr()
    _refused(capsys, ["run", "--resume", str(out)], "completed run")
    # the default removes the checkpoint once summary.json is written
    fresh = tmp_path / "fresh"
    assert main(["run", "--out", str(fresh), *[a for s in TINY for a in ("--set", s)]]) == 0
    assert sorted(os.listdir(fresh)) == ["config.toml", "history.npz", "summary.json"]
    assert main(["run", "--out", str(out), "--overwrite",
                 *[a for s in TINY for a in ("--set", s)]]) == 0
    assert not (out / "checkpoint.ckpt").exists()


def test_load_resume_errors_name_the_problem(tmp_path):
    out = _interrupted_dir(tmp_path)
    config = load_config(out / "config.toml")
    with pytest.raises(ResumeError, match="another configuration: run.seed"):
        load_resume(out, dict(config, run=dict(config["run"], seed=5)))
    state = load_resume(out, dict(config, run=dict(config["run"], progress="always")))
    assert state["next_update"] == 4
    assert issubclass(ResumeError, ValueError) and issubclass(CheckpointError, ValueError)


# --------------------------------------------------------------------------------------------
# kill a real process at random points
# --------------------------------------------------------------------------------------------

KILL = ["lattice.shape=[4,4]", "sampler.n_chains=2", "sampler.n_therm=5",
        "sampler.n_samples=100", "run.progress=never", "run.checkpoint_every=1"]


def _argv(sets):
    return [a for s in sets for a in ("--set", s)]


def _start(out, sets=KILL, resume=False):
    cmd = [sys.executable, "-m", "lattice_ml.cli.main", "run"]
    cmd += ["--resume", str(out)] if resume else ["--out", str(out), *_argv(sets)]
    # run outside the source tree: `python -m` puts the working directory first on sys.path,
    # and the checkout's lattice_ml/ is not the installed package (kernels/ maps in on install)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=str(Path(out).parent))


def _wait_for_checkpoint(proc, path, k_min, timeout=60.0, fail=True):
    """Wait until ``path`` holds a checkpoint with at least ``k_min`` updates; its count
    (``None`` if the process ended first and ``fail`` is false)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            if not fail:
                return None
            pytest.fail(f"the run ended (rc {proc.returncode}) before checkpoint {k_min}: "
                        f"{proc.stderr.read()}")
        try:
            k = load_checkpoint(path).state["next_update"]
            if k >= k_min:
                return k
        except CheckpointError:
            pass  # not written yet
        time.sleep(0.01)
    pytest.fail(f"no checkpoint {k_min} within {timeout} s")


def _reference(tmp_path, sets=KILL):
    out = tmp_path / "reference"
    assert main(["run", "--out", str(out), *_argv(sets)]) == 0
    return json.loads((out / "summary.json").read_text()), np.load(out / "history.npz")


@pytest.fixture(scope="module")
def kill_reference(tmp_path_factory):
    """The uninterrupted run of KILL (shared by the kill tests of this module)."""
    return _reference(tmp_path_factory.mktemp("kill_reference"))


def _result(out):
    return json.loads((out / "summary.json").read_text()), np.load(out / "history.npz")


def test_sigkill_at_a_random_point_then_resume(tmp_path, kill_reference):
    rnd = random.Random(8)
    out = tmp_path / "killed"
    proc = _start(out)
    _wait_for_checkpoint(proc, out / "checkpoint.ckpt", rnd.randint(5, 40))
    time.sleep(rnd.uniform(0.0, 0.02))  # mid-trajectory or mid-write
    proc.kill()
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "summary.json").exists()
    k = load_checkpoint(out / "checkpoint.ckpt").state["next_update"]
    assert 0 < k < 105
    assert main(["run", "--resume", str(out)]) == 0
    assert_same_run(kill_reference, _result(out))


def test_sigint_writes_a_checkpoint_and_exits_130(tmp_path, kill_reference):
    out = tmp_path / "interrupted"
    proc = _start(out)
    _wait_for_checkpoint(proc, out / "checkpoint.ckpt", 20)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and f"--resume {out}" in err
    assert not (out / "summary.json").exists()
    k = load_checkpoint(out / "checkpoint.ckpt").state["next_update"]
    assert 20 <= k < 105
    assert main(["run", "--resume", str(out)]) == 0
    assert_same_run(kill_reference, _result(out))


@pytest.mark.slow
@pytest.mark.parametrize("theory,seed", [("phi4", 1), ("u1", 2), ("phi4", 3)])
def test_many_random_kills_then_resume(tmp_path, theory, seed):
    """Eight stops of a real process, each resumed by a new process: SIGKILLs a random 0-30 ms
    after a random later checkpoint appeared (mid-trajectory or mid-write), one SIGKILL while
    Python starts (before the resumed loop runs), and one SIGTERM."""
    rnd = random.Random(seed)
    sets = KILL + [f"theory.name={theory}", "sampler.n_samples=300"]
    out = tmp_path / "killed"
    path = out / "checkpoint.ckpt"
    proc = _start(out, sets)
    resumed_loops = 0
    for i in range(8):
        if i == 2:
            time.sleep(rnd.uniform(0.0, 1.0))  # during start-up
        else:
            k_now = load_checkpoint(path).state["next_update"] if path.exists() else -1
            if _wait_for_checkpoint(proc, path, k_now + rnd.randint(1, 25), fail=False) is None:
                break  # finished meanwhile
            resumed_loops += i > 0
            time.sleep(rnd.uniform(0.0, 0.03))
        if i == 5:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
            assert proc.returncode in (143, 0), err
        else:
            proc.kill()
            proc.communicate()
        if (out / "summary.json").exists():
            break
        proc = _start(out, resume=True)
    if not (out / "summary.json").exists():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    result = _result(out)
    assert resumed_loops >= 5 and result[0]["segments"] >= resumed_loops + 1
    assert_same_run(_reference(tmp_path, sets), result)


# --------------------------------------------------------------------------------------------
# starting from a configuration file (run.start_file)
# --------------------------------------------------------------------------------------------

def test_start_file_of_unit_links_equals_a_cold_start(tmp_path):
    """The hot field is drawn for every kind of start, so a file holding the unit configuration
    gives exactly the run of ``sampler.start = "cold"``; one configuration per chain (HDF5)
    and one shared by all chains (NERSC, 32-bit, reunitarised) both work."""
    pytest.importorskip("h5py")
    from lattice_ml.backend import RandomStreams, namespace_by_name
    from lattice_ml.cli.jobs import build_job
    from lattice_ml.cli.run import _start_field
    from lattice_ml.groups import check_links, haar_random
    from lattice_ml.io import write_gauge

    unit = np.ones((2, 2, 4, 4, 1, 1), dtype=np.complex128)
    write_gauge(tmp_path / "unit.h5", unit, "hdf5")
    cold = load_config(None, TINY + ["theory.name=u1"])
    from_file = load_config(None, TINY + ["theory.name=u1", "sampler.start=hot",
                                          f'run.start_file="{tmp_path}/unit.h5"'])
    (tmp_path / "a").mkdir()
    summary = run_job(from_file, tmp_path / "a", "never")
    assert summary["start_file"] == f"{tmp_path}/unit.h5"
    got = summary, np.load(tmp_path / "a" / "history.npz")
    ref = _uninterrupted(tmp_path, cold)
    assert_same_run((dict(ref[0], start_file=summary["start_file"]), ref[1]), got)

    U = haar_random(RandomStreams(5, 1), (4, 4, 4, 2, 2), 3)
    write_gauge(tmp_path / "su3.nersc", U, "nersc", precision=32)
    config = load_config(None, TINY + ["theory.name=su3", "lattice.shape=[4,4,2,2]",
                                       f'run.start_file="{tmp_path}/su3.nersc"'])
    rng = RandomStreams(1, 2)
    field = _start_field(build_job(config), config, rng, namespace_by_name("numpy"))
    assert field.shape == (2, 4, 4, 4, 2, 2, 3, 3) and field.dtype == np.complex128
    np.testing.assert_allclose(field, np.concatenate([U, U]), atol=1e-6)  # 32-bit file
    check_links(field, 3)  # reunitarised to float64 precision
    assert not np.array_equal(field, np.concatenate([U, U]))


@pytest.mark.parametrize("extra,words", [
    (["lattice.shape=[6,6]"], ["run.start_file", "[2, 6, 6, 1, 1]"]),
    (["sampler.n_chains=3"], ["run.start_file", "holds 2 configurations"]),
    (["theory.name=phi4"], ["run.start_file", "no gauge links"]),
])
def test_bad_start_file_is_a_usage_error(tmp_path, capsys, extra, words):
    pytest.importorskip("h5py")
    from lattice_ml.io import write_gauge

    write_gauge(tmp_path / "u.h5", np.ones((2, 2, 4, 4, 1, 1), dtype=np.complex128), "hdf5")
    sets = TINY + ["theory.name=u1", f'run.start_file="{tmp_path}/u.h5"', *extra]
    _refused(capsys, ["run", "--out", str(tmp_path / "o"), *_argv(sets)], *words)
    _refused(capsys, ["run", "--out", str(tmp_path / "p"),
                      *_argv(TINY + ["theory.name=u1", f'run.start_file="{tmp_path}/none.h5"'])],
             "run.start_file", "none.h5")


def test_non_unitary_start_file_is_refused_not_repaired(tmp_path, capsys):
    """Only the rounding of a 32-bit file is repaired (reunitarised); links far from U(1)/SU(N)
    are an error naming the file."""
    pytest.importorskip("h5py")
    from lattice_ml.io import write_gauge

    write_gauge(tmp_path / "bad.h5", 1.5 * np.ones((2, 2, 4, 4, 1, 1), dtype=np.complex128),
                "hdf5", check=False)
    sets = TINY + ["theory.name=u1", f'run.start_file="{tmp_path}/bad.h5"']
    _refused(capsys, ["run", "--out", str(tmp_path / "o"), *_argv(sets)], "run.start_file",
             "bad.h5")


def test_start_file_is_read_once_per_run(tmp_path, monkeypatch, capsys):
    """The validation reads and checks the start file; the run starts from those links instead
    of reading the file again. A file changed in between is read again (and checked again)."""
    pytest.importorskip("h5py")
    import lattice_ml.io as io
    from lattice_ml.io import write_gauge

    write_gauge(tmp_path / "unit.h5", np.ones((2, 2, 4, 4, 1, 1), dtype=np.complex128), "hdf5")
    reads = []
    real_read = io.read_gauge
    monkeypatch.setattr(io, "read_gauge",
                        lambda *a, **kw: reads.append(a[0]) or real_read(*a, **kw))
    sets = TINY + ["theory.name=u1", f'run.start_file="{tmp_path}/unit.h5"']
    argv = [x for s in sets for x in ("--set", s)]
    assert main(["run", "--out", str(tmp_path / "a"), *argv]) == 0
    assert len(reads) == 1
    config = load_config(None, sets)                       # read by the validation
    assert len(reads) == 2
    os.utime(tmp_path / "unit.h5", ns=(1, 1))              # a changed file is read again
    (tmp_path / "b").mkdir()
    run_job(config, tmp_path / "b", "never")
    assert len(reads) == 3
