"""The lattice-ml command's configuration, output and progress machinery (no physics run).

``lattice_ml.cli.run`` is replaced by a fake module wherever ``main`` runs a job, so these tests
are fast and independent of the samplers.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from lattice_ml.cli import config as cfg
from lattice_ml.cli.config import ConfigError, dump_toml, load_config, parse_override
from lattice_ml.cli.main import digest, format_value_error, main
from lattice_ml.cli.output import (
    OutputError,
    atomic_save_npz,
    atomic_write_json,
    atomic_write_text,
    json_default,
    RunLock,
    check_out_dir,
    discard_previous,
    prepare_out_dir,
    restore_previous,
    set_aside,
)
from lattice_ml.cli.progress import Progress

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

FAKE_SUMMARY = {
    "theory": "phi4", "lattice": [4, 4], "sampler": "hmc", "backend": "numpy",
    "n_samples": 10, "acceptance": 0.9, "elapsed_s": 0.01,
    "observables": {"phi2": {"mean": 0.5, "error": 0.01, "tau_int": 1.2,
                             "tau_int_error": 0.1}},
}


@pytest.fixture
def fake_run(monkeypatch):
    """Install a fake ``lattice_ml.cli.run``; returns the list of calls it received."""
    class Calls(list):
        module: types.ModuleType

    calls = Calls()
    module = types.ModuleType("lattice_ml.cli.run")
    module.behaviour = "ok"

    def run_job(config, out_dir, progress):
        calls.append((config, Path(out_dir), progress))
        if module.behaviour == "raise":
            raise RuntimeError("the integrator exploded")
        if module.behaviour == "nan":
            return {**FAKE_SUMMARY, "acceptance": float("nan")}
        atomic_save_npz(Path(out_dir) / "history.npz", phi2=np.zeros((2, 3)))
        return dict(FAKE_SUMMARY, observables={**FAKE_SUMMARY["observables"],
                                               "n": np.int64(3)})

    module.run_job = run_job
    monkeypatch.setitem(sys.modules, "lattice_ml.cli.run", module)
    calls.module = module
    return calls


def write(tmp_path: Path, text: str, name: str = "job.toml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def error_of(*args, **kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(*args, **kwargs)
    return info.value


# --------------------------------------------------------------------------------------------
# defaults
# --------------------------------------------------------------------------------------------

def test_defaults_load_and_validate():
    c = load_config(None, [])
    assert list(c) == ["lattice", "theory", "sampler", "flow", "slhmc", "run", "output",
                       "measure", "parallel"]
    assert c["lattice"]["shape"] == [32, 32]
    assert c["theory"] == {"name": "phi4", "form": "hopping", "beta": 0.64, "lam": 1.0}
    s = c["sampler"]
    assert s["name"] == "hmc" and s["integrator"] == "omelyan"
    for key in ("n_chains", "n_therm", "n_samples", "n_steps", "measure_every", "fine_steps"):
        assert type(s[key]) is int
    assert type(s["tau"]) is float
    assert c["run"]["backend"] == "numpy" and c["run"]["dtype"] == "float64"
    assert c["run"]["progress"] in ("auto", "always", "never")
    # validation is idempotent on a resolved config
    assert cfg.validate_config(c) == c


def test_default_toml_sets_and_comments_every_key():
    text = cfg.default_config_text()
    resolved = load_config(None, [])
    assert tomllib.loads(text) == resolved  # nothing left to the schema defaults
    for section, values in resolved.items():
        for key in values:
            line = next(ln for ln in text.splitlines() if re.match(rf"{key}\s*=", ln))
            assert "#" in line, f"{section}.{key} has no comment in default.toml"


def test_schema_defaults_agree_with_default_toml_for_the_theory():
    # the schema's fallback couplings are those of the embedded default
    defaults = cfg._schema_defaults()
    assert defaults["theory"] == load_config(None, [])["theory"]


def test_standard_form_defaults_are_the_same_theory():
    hop = load_config(None, [])["theory"]
    std = load_config(None, ["theory.form=standard"])["theory"]
    assert set(std) == {"name", "form", "m2", "lam"}
    beta, lam, d = hop["beta"], hop["lam"], 2
    assert math.isclose(std["m2"], (2 / beta) * (1 - 2 * lam) - 2 * d)
    assert math.isclose(std["lam"], 4 * lam / beta**2)


def test_docs_mention_every_key():
    doc = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    for section, _chain, key, _p in cfg.iter_schema():
        assert f"`{section}.{key}`" in doc, f"{section}.{key} missing from docs/cli.md"


# --------------------------------------------------------------------------------------------
# files and overrides
# --------------------------------------------------------------------------------------------

def test_file_merges_over_default(tmp_path):
    p = write(tmp_path, "[sampler]\nn_samples = 50\n[lattice]\nshape = [8, 4, 6]\n")
    c = load_config(p, [])
    assert c["sampler"]["n_samples"] == 50
    assert c["lattice"]["shape"] == [8, 4, 6]
    assert c["sampler"]["n_chains"] == load_config(None, [])["sampler"]["n_chains"]


def test_file_switching_form_drops_the_other_forms_couplings(tmp_path):
    p = write(tmp_path, '[theory]\nform = "standard"\nm2 = -4.0\nlam = 8\n')
    c = load_config(p, [])
    assert c["theory"] == {"name": "phi4", "form": "standard", "m2": -4.0, "lam": 8.0}
    assert type(c["theory"]["lam"]) is float  # int accepted for float, converted


def test_overrides(tmp_path):
    c = load_config(None, ["sampler.n_samples=500", "lattice.shape=[8,8]",
                           "theory.form=standard", "theory.m2=-4", "run.backend=array_api_strict",
                           "run.dtype=float32", 'run.progress="never"', "sampler.tau=0.5",
                           "sampler.n_samples=600"])
    assert c["sampler"]["n_samples"] == 600  # last one wins
    assert c["lattice"]["shape"] == [8, 8]
    assert c["theory"]["form"] == "standard" and c["theory"]["m2"] == -4.0
    assert c["run"]["backend"] == "array_api_strict" and c["run"]["dtype"] == "float32"
    assert c["run"]["progress"] == "never"
    assert c["sampler"]["tau"] == 0.5
    # overrides also apply over a file
    p = write(tmp_path, "[sampler]\nn_samples = 50\n")
    assert load_config(p, ["sampler.n_samples=7"])["sampler"]["n_samples"] == 7
    assert load_config(None, ["lattice={shape=[4,4,4,4]}"])["lattice"]["shape"] == [4] * 4


@pytest.mark.parametrize("text, expected", [
    ("sampler.n_samples=500", (("sampler", "n_samples"), 500)),
    ("theory.form=hopping", (("theory", "form"), "hopping")),
    ("lattice.shape=[8, 8]", (("lattice", "shape"), [8, 8])),
    ("theory.beta = 0.5", (("theory", "beta"), 0.5)),
    ('run.backend="numpy"', (("run", "backend"), "numpy")),
    ("run.progress=never", (("run", "progress"), "never")),
])
def test_parse_override(text, expected):
    assert parse_override(text) == expected


@pytest.mark.parametrize("text", ["sampler.n_samples", "=3", "a..b=1", "sampler.n_samples=",
                                  "lattice.shape=[8,8", "theory.beta.x=1", "a b=1",
                                  'run.backend="numpy'])
def test_bad_set_syntax(text):
    with pytest.raises(ConfigError) as info:
        load_config(None, [text])
    assert "--set" in str(info.value)


# --------------------------------------------------------------------------------------------
# bad input: one test per kind, each names the key
# --------------------------------------------------------------------------------------------

BAD_FILES = [
    # (file text, key named in the message, words expected in the message)
    ("[samplr]\nn_samples = 3\n", "[samplr]", ["unknown table", "[sampler]"]),
    ("seed = 3\n", "seed", ["unknown top-level key", "run.seed"]),
    ("[sampler]\nn_sample = 3\n", "sampler.n_sample", ["unknown key", "sampler.n_samples"]),
    ("[theory]\nbta = 0.3\n", "theory.bta", ["unknown key", "theory.beta"]),
    ("[sampler]\nn_samples = 2.5\n", "sampler.n_samples", ["integer", "float"]),
    ("[sampler]\nn_samples = \"10\"\n", "sampler.n_samples", ["integer", "string"]),
    ("[sampler]\nn_chains = true\n", "sampler.n_chains", ["integer", "boolean"]),
    ("[theory]\nbeta = true\n", "theory.beta", ["number", "boolean"]),
    ("[theory]\nbeta = \"big\"\n", "theory.beta", ["number", "string"]),
    ("[run]\nbackend = 3\n", "run.backend", ["string"]),
    ("[sampler]\nn_samples = 0\n", "sampler.n_samples", [">= 1", "0"]),
    ("[sampler]\nn_therm = -1\n", "sampler.n_therm", [">= 0"]),
    ("[sampler]\ntau = 0.0\n", "sampler.tau", ["> 0"]),
    ("[sampler]\nfine_steps = -2\n", "sampler.fine_steps", [">= 0"]),
    ("[theory]\nlam = -0.5\n", "theory.lam", [">= 0"]),
    ("[theory]\nbeta = nan\n", "theory.beta", ["finite"]),
    ("[run]\nseed = -1\n", "run.seed", [">= 0"]),
    ("[lattice]\nshape = [16]\n", "lattice.shape", ["2, 3 or 4"]),
    ("[lattice]\nshape = [4, 4, 4, 4, 4]\n", "lattice.shape", ["2, 3 or 4"]),
    ("[lattice]\nshape = [8, 7]\n", "lattice.shape", ["odd", "even"]),
    ("[lattice]\nshape = [8, 8.0]\n", "lattice.shape", ["integer"]),
    ("[lattice]\nshape = [8, true]\n", "lattice.shape", ["integer"]),
    ("[lattice]\nshape = [8, -4]\n", "lattice.shape", ["positive"]),
    ("[lattice]\nshape = [8, 0]\n", "lattice.shape", ["positive"]),
    ("[lattice]\nshape = 16\n", "lattice.shape", ["list"]),
    ("lattice = 3\n", "lattice", ["table"]),
    ("[theory]\nname = \"phi5\"\n", "theory.name", ["unknown theory", "phi4"]),
    ("[theory]\nname = \"schwingr\"\n", "theory.name", ["schwinger"]),
    ("[sampler]\nname = \"slhmc\"\n", "sampler.name", ["dynamical fermions", "'hmc'"]),
    ("[sampler]\nname = \"metropolis\"\n", "sampler.name", ["unknown sampler", "hmc"]),
    ("[run]\nbackend = \"torch\"\n", "run.backend", ["unknown backend", "numpy, cupy"]),
    ("[run]\ndtype = \"float16\"\n", "run.dtype", ["unknown dtype", "float32"]),
    ("[sampler]\nintegrator = \"verlet\"\n", "sampler.integrator",
     ["unknown integrator", "leapfrog, omelyan"]),
    ("[theory]\nform = \"weird\"\n", "theory.form", ["standard, hopping"]),
    ("[run]\nprogress = \"sometimes\"\n", "run.progress", ["auto, always, never"]),
    ("[theory]\nform = \"hopping\"\nm2 = 1.0\n", "theory.m2",
     ["does not belong", "theory.form = 'standard'"]),
    ("[theory]\nform = \"standard\"\nbeta = 0.5\n", "theory.beta",
     ["does not belong", "theory.form = 'hopping'"]),
    ("[flow]\nloss = \"forward_kl\"\n", "flow.loss", ["reverse_kl, path_gradient"]),
    ("[flow]\nmemory = \"all\"\n", "flow.memory", ["stages, states, constant"]),
]


@pytest.mark.parametrize("text, key, words", BAD_FILES)
def test_bad_file_names_key(tmp_path, text, key, words):
    p = write(tmp_path, text)
    err = error_of(p, [])
    msg = str(err)
    assert msg.startswith(key + ":"), msg
    assert err.key == key
    for w in words:
        assert w in msg, (w, msg)
    assert str(p) in msg  # where the value came from


def test_bad_set_value_names_key_and_source():
    err = error_of(None, ["theory.m2=1"])
    assert err.key == "theory.m2" and "--set" in str(err)
    err = error_of(None, ["sampler.n_chains=0"])
    assert err.key == "sampler.n_chains" and ">= 1" in str(err)


def test_toml_syntax_error_names_file_and_line(tmp_path):
    p = write(tmp_path, "[lattice]\nshape = [16, 16]\n[sampler]\nn_samples = = 3\n")
    msg = str(error_of(p, []))
    assert str(p) in msg and "line 4" in msg and "invalid TOML" in msg


def test_missing_file_and_bad_encoding(tmp_path):
    msg = str(error_of(tmp_path / "nope.toml", []))
    assert "not found" in msg and "nope.toml" in msg
    msg = str(error_of(tmp_path, []))
    assert "directory" in msg
    p = tmp_path / "latin1.toml"
    p.write_bytes(b"# caf\xe9\n")
    assert "UTF-8" in str(error_of(p, []))


def test_config_error_is_value_error():
    assert issubclass(ConfigError, ValueError)


# --------------------------------------------------------------------------------------------
# TOML writer
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides", [[], ["theory.form=standard", "lattice.shape=[4,6,8]",
                                            "sampler.tau=1e-3", "run.backend=array_api_strict"]])
@pytest.mark.parametrize("comments", [True, False])
def test_dump_toml_round_trip(overrides, comments):
    c = load_config(None, overrides)
    assert tomllib.loads(dump_toml(c, comments=comments)) == c


def test_dump_toml_strings():
    text = dump_toml({"x": {"s": 'a "quoted"\\ \n\tline\x01'}}, comments=False)
    assert tomllib.loads(text) == {"x": {"s": 'a "quoted"\\ \n\tline\x01'}}


# --------------------------------------------------------------------------------------------
# main(): config command and errors
# --------------------------------------------------------------------------------------------

def test_main_config_prints_parseable_toml(capsys, tmp_path):
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert tomllib.loads(out) == load_config(None, [])
    p = write(tmp_path, "[sampler]\nn_samples = 5\n")
    assert main(["config", str(p), "--set", "lattice.shape=[4,4]", "--no-comments"]) == 0
    out = capsys.readouterr().out
    assert "#" not in out
    back = tomllib.loads(out)
    assert back == load_config(p, ["lattice.shape=[4,4]"])
    assert back["sampler"]["n_samples"] == 5


def test_main_config_error_exit_2(capsys):
    assert main(["config", "--set", "sampler.n_sample=3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lattice-ml: error: sampler.n_sample:")
    assert "Traceback" not in err


def test_main_version_and_usage(capsys):
    assert main(["--version"]) == 0
    assert "lattice-ml" in capsys.readouterr().out
    assert main([]) == 2
    assert main(["frobnicate"]) == 2


@pytest.mark.parametrize("text, key", [(t, k) for t, k, _ in BAD_FILES[::3]] + [
    ("[sampler]\nn_samples = = 3\n", "invalid TOML"),
])
def test_main_run_bad_config_exit_2_no_output(tmp_path, capsys, fake_run, text, key):
    p = write(tmp_path, text)
    out = tmp_path / "out"
    assert main(["run", str(p), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lattice-ml: error: ") and key in err
    assert "Traceback" not in err
    assert not (out / "summary.json").exists()
    assert not out.exists()  # nothing created before the config is valid
    assert fake_run == []


@pytest.mark.parametrize("argv", [
    ["--set", "sampler.n_samples"],
    ["--set", "lattice.shape=[8,7]"],
    ["--set", "theory.name=qed4"],
    ["--set", "theory.m2=-1"],
    ["missing.toml"],
])
def test_main_run_bad_args_exit_2(tmp_path, capsys, fake_run, argv):
    out = tmp_path / "out"
    assert main(["run", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lattice-ml: error: ")
    assert not (out / "summary.json").exists()
    assert fake_run == []


# --------------------------------------------------------------------------------------------
# main(): run with a fake run_job
# --------------------------------------------------------------------------------------------

def test_main_run_success(tmp_path, capsys, fake_run):
    out = tmp_path / "out"
    assert main(["run", "--out", str(out), "--set", "sampler.n_samples=10",
                 "--set", "lattice.shape=[4,4]"]) == 0
    (config, out_dir, progress), = fake_run
    assert out_dir == out
    assert config == load_config(None, ["sampler.n_samples=10", "lattice.shape=[4,4]"])
    assert progress == config["run"]["progress"] == "auto"  # the display mode
    summary = json.loads((out / "summary.json").read_text())
    assert summary["observables"]["phi2"]["mean"] == 0.5
    assert summary["observables"]["n"] == 3  # numpy scalar converted
    assert summary["config"] == config and summary["version"]
    assert tomllib.loads((out / "config.toml").read_text()) == config
    assert set(os.listdir(out)) == {"summary.json", "history.npz", "config.toml"}
    stdout = capsys.readouterr().out
    assert str(out / "summary.json") in stdout
    assert "phi2 = 0.500(10)" in stdout


def test_main_run_refuses_completed_dir_then_overwrites(tmp_path, capsys, fake_run):
    out = tmp_path / "out"
    assert main(["run", "--out", str(out)]) == 0
    before = (out / "summary.json").read_text()
    assert main(["run", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "summary.json").read_text() == before
    # a failing rerun with --overwrite leaves the earlier run as it was
    history = (out / "history.npz").read_bytes()
    fake_run.module.behaviour = "raise"
    assert main(["run", "--out", str(out), "--overwrite", "--set", "run.seed=7"]) == 1
    err = capsys.readouterr().err
    assert "lattice-ml: error: run failed: RuntimeError: the integrator exploded" in err
    assert "earlier run" in err and "Traceback" not in err
    assert (out / "summary.json").read_text() == before
    assert (out / "history.npz").read_bytes() == history
    assert tomllib.loads((out / "config.toml").read_text())["run"]["seed"] == 1
    assert not (out / "previous-run").exists()
    # a config error found late (here: the backend) is found before anything is touched
    assert main(["run", "--out", str(out), "--overwrite", "--set",
                 "run.backend=cupy"]) == 2
    assert (out / "summary.json").read_text() == before
    fake_run.module.behaviour = "ok"
    assert main(["run", "--out", str(out), "--overwrite", "--set", "run.seed=7"]) == 0
    assert tomllib.loads((out / "config.toml").read_text())["run"]["seed"] == 7
    assert not (out / "previous-run").exists()


def test_main_run_failure_traceback_with_debug(tmp_path, capsys, fake_run):
    fake_run.module.behaviour = "raise"
    assert main(["run", "--out", str(tmp_path / "o"), "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_main_run_nan_summary_exit_1_no_summary(tmp_path, capsys, fake_run):
    fake_run.module.behaviour = "nan"
    out = tmp_path / "out"
    assert main(["run", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "acceptance" in err and "NaN" in err
    assert not (out / "summary.json").exists()
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]


def test_main_run_default_out_dir(tmp_path, monkeypatch, fake_run):
    monkeypatch.chdir(tmp_path)
    assert main(["run"]) == 0
    runs = list((tmp_path / "lattice-ml-runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "summary.json").exists()
    assert re.fullmatch(r"\d{8}T\d{6}Z", runs[0].name)


# --------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------

def test_atomic_writes_leave_no_temporaries(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "hello\n")
    atomic_write_json(tmp_path / "b.json", {"x": np.float32(1.5), "y": np.arange(3),
                                            "z": np.bool_(True)})
    atomic_save_npz(tmp_path / "c.npz", a=np.ones((2, 3)), b=np.arange(4))
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.json", "c.npz"]
    assert (tmp_path / "a.txt").read_text() == "hello\n"
    assert json.loads((tmp_path / "b.json").read_text()) == {"x": 1.5, "y": [0, 1, 2],
                                                              "z": True}
    with np.load(tmp_path / "c.npz") as f:
        assert f["a"].shape == (2, 3) and list(f["b"]) == [0, 1, 2, 3]


def test_atomic_json_rejects_nan_and_keeps_target(tmp_path):
    target = tmp_path / "s.json"
    atomic_write_json(target, {"ok": 1})
    for bad in ({"obs": {"phi2": {"mean": float("nan")}}}, {"v": np.array([1.0, np.inf])},
                {"v": np.float32("nan")}):
        with pytest.raises(ValueError, match="NaN"):
            atomic_write_json(target, bad)
    with pytest.raises(ValueError, match=r"obs\.phi2\.mean"):
        atomic_write_json(target, {"obs": {"phi2": {"mean": float("nan")}}})
    with pytest.raises(TypeError):
        atomic_write_json(target, {"x": object()})
    assert json.loads(target.read_text()) == {"ok": 1}
    assert os.listdir(tmp_path) == ["s.json"]


def test_atomic_write_cleans_up_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "t.txt"
    atomic_write_text(target, "old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "new")
    with pytest.raises(OSError):
        atomic_save_npz(tmp_path / "h.npz", a=np.zeros(3))
    assert os.listdir(tmp_path) == ["t.txt"]
    assert target.read_text() == "old"


def test_json_default():
    assert json_default(np.int64(3)) == 3 and type(json_default(np.int64(3))) is int
    assert json_default(np.arange(2.0)) == [0.0, 1.0]
    assert json_default(np.complex128(1 + 2j)) == [1.0, 2.0]
    assert json_default(Path("a/b")) == "a/b"
    with pytest.raises(TypeError):
        json_default(object())


def test_prepare_out_dir_and_check_out_dir(tmp_path, monkeypatch):
    out = prepare_out_dir(tmp_path / "a" / "b")
    assert out.is_dir()
    (out / "history.npz").write_bytes(b"x")
    check_out_dir(out)  # no summary: an incomplete run may be reused
    (out / "summary.json").write_text("{}")
    with pytest.raises(OutputError, match="--overwrite"):
        check_out_dir(out)
    check_out_dir(out, overwrite=True)
    assert (out / "summary.json").exists()  # checking deletes nothing
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(OutputError, match="not a directory"):
        prepare_out_dir(f)
    monkeypatch.chdir(tmp_path)
    d1, d2 = prepare_out_dir(None), prepare_out_dir(None)
    assert d1 != d2 and d1.parent == d2.parent == tmp_path / "lattice-ml-runs"


def test_set_aside_and_restore_keep_the_earlier_run(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    for name, text in (("summary.json", "{}"), ("history.npz", "h"), ("config.toml", "c")):
        (out / name).write_text(text)
    (out / "configs").mkdir()
    (out / "configs" / "ensemble.h5").write_text("e")
    aside = set_aside(out)
    assert sorted(os.listdir(out)) == ["previous-run"]
    (out / "config.toml").write_text("new")            # the new run starts writing
    (out / "history.npz").write_text("partial")
    restore_previous(out, aside)
    assert sorted(os.listdir(out)) == ["config.toml", "configs", "history.npz", "summary.json"]
    assert (out / "config.toml").read_text() == "c" and (out / "history.npz").read_text() == "h"
    assert (out / "configs" / "ensemble.h5").read_text() == "e"
    discard_previous(set_aside(out))
    assert os.listdir(out) == []


def test_run_lock_refuses_a_second_holder_and_names_the_first(tmp_path):
    import subprocess
    import textwrap

    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from lattice_ml.cli.output import RunLock
        with RunLock(Path({str(tmp_path)!r})):
            print("locked", flush=True)
            sys.stdin.readline()
    """)
    holder = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputError, match=rf"in use by another lattice-ml run \(pid "
                                              rf"{holder.pid} on "):
            with RunLock(tmp_path):
                pass
    finally:
        holder.communicate("\n", timeout=30)
    with RunLock(tmp_path):  # released when the holder ended
        pass


# --------------------------------------------------------------------------------------------
# progress
# --------------------------------------------------------------------------------------------

class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class _TTY(io.StringIO):
    def isatty(self):
        return True


def test_progress_hidden_when_not_a_tty():
    stream = io.StringIO()
    with Progress(10, "x", mode="auto", stream=stream) as bar:
        for _ in range(10):
            bar.update(acceptance=0.5)
    assert not bar.visible and stream.getvalue() == ""
    stream = _TTY()
    with Progress(10, "x", mode="never", stream=stream) as bar:
        bar.update()
    assert stream.getvalue() == ""
    assert Progress(10, mode="auto", stream=_TTY()).visible


def test_progress_shows_and_throttles():
    clock, stream = _Clock(), io.StringIO()
    with Progress(100, "hmc", mode="always", stream=stream, clock=clock) as bar:
        for i in range(100):
            clock.t += 0.01  # 100 updates per second
            bar.update(acceptance=0.875, dH=0.0312)
    text = stream.getvalue()
    draws = text.count("\r")
    assert 2 <= draws <= 13  # about 10 per second over 1 s, plus the final state
    assert text.endswith("\n")
    last = text.rstrip("\n").split("\r")[-1]
    assert "100.0% 100/100" in last and "acceptance=0.875" in last and "dH=0.0312" in last
    assert "/s" in last


def test_progress_eta_and_phases():
    clock, stream = _Clock(), io.StringIO()
    bar = Progress(10, "therm", mode="always", stream=stream, clock=clock)
    clock.t = 5.0           # the first update took 5 s (compilation): it sets no rate
    bar.update(1)
    assert "ETA --:--" in stream.getvalue()
    clock.t = 5.5
    bar.update(1)           # 1 more in 0.5 s: 2/s, 8 left, 4 s
    assert "ETA 0:04" in bar.line() and "2.0/s" in bar.line()
    bar.reset(5, "measure")
    assert stream.getvalue().endswith("\n")
    child = bar(3, "other")
    assert child.visible and child.total == 3 and child.stream is stream
    with pytest.raises(ValueError):
        Progress(mode="sometimes")


# --------------------------------------------------------------------------------------------
# digest
# --------------------------------------------------------------------------------------------

def test_format_value_error_and_digest():
    assert format_value_error(0.6977, 0.0011) == "0.6977(11)"
    assert format_value_error(12.34, 2.5) == "12.3(25)"
    assert format_value_error(1234.0, 56.0) == "1234(56)"
    assert "+/-" in format_value_error(1.0, float("nan"))
    lines = digest(FAKE_SUMMARY)
    assert 1 <= len(lines) <= 2 and "phi4 on 4x4" in lines[0] and "acceptance 0.900" in lines[0]
    assert digest({}) == ["? on ?, ?"]
    # the Γ-method's own dict names the estimate "value"
    lines = digest({"observables": {"phi2": {"value": 0.5, "error": 0.01}}})
    assert "phi2 = 0.500(10)" in lines[1]


@pytest.mark.parametrize("old,new,extra", [
    ("flow.layers", "flow.n_layers", []),
    ("flow.batch", "flow.batch_size", []),
    ("flow.clip", "flow.max_grad_norm", []),
    ("theory.n_noise", "theory.n_sources", ["theory.name=schwinger"]),
])
def test_renamed_keys_are_refused_naming_the_new_key(tmp_path, old, new, extra):
    """One name for one thing (docs/cli.md, Vocabulary): an old key is refused, from --set and
    from a file, in one line naming its new name; the new key is accepted."""
    with pytest.raises(ConfigError) as exc:
        load_config(None, extra + [f"{old}=4"])
    msg = str(exc.value)
    assert msg.startswith(old) and new in msg and "\n" not in msg
    table, key = old.split(".")
    f = tmp_path / "old.toml"
    f.write_text(f"[{table}]\n{key} = 4\n" + ('name = "schwinger"\n' if extra else ""))
    with pytest.raises(ConfigError, match=new.replace(".", r"\.")):
        load_config(f)
    assert load_config(None, extra + [f"{new}=4"])[table][new.split(".")[1]] == 4
    assert old in cfg.RENAMED and cfg.RENAMED[old] == new
