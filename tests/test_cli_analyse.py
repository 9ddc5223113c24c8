"""`lattice-ml analyse DIR`: a finished run re-analysed from its histories (cut, bins, S), the
numbers checked against the Γ-method applied directly to history.npz, nothing in DIR changed."""

import hashlib
import json

import numpy as np
import pytest

from lattice_ml.cli.main import main
from lattice_ml.stats import gamma_method


def _run(tmp_path, name, *sets):
    out = tmp_path / name
    args = ["run", "--out", str(out), "--set", "run.progress=never"]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0
    return out


def _analyse(capsys, *args):
    capsys.readouterr()
    code = main(["analyse", *map(str, args), "--json"])
    out = capsys.readouterr()
    return code, (json.loads(out.out) if code == 0 else None), out.err


def _fingerprint(d):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def phi4_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("an"), "phi4", "lattice.shape=[6,6]",
                "sampler.n_chains=3", "sampler.n_therm=20", "sampler.n_samples=120")


def test_default_options_give_the_summary(phi4_run, capsys):
    before = _fingerprint(phi4_run)
    code, res, _ = _analyse(capsys, phi4_run)
    assert code == 0
    summary = json.loads((phi4_run / "summary.json").read_text())
    assert res["observables"] == summary["observables"]
    assert res["acceptance"] == summary["acceptance"] and res["n_samples"] == 120
    assert _fingerprint(phi4_run) == before          # nothing in DIR written or changed


@pytest.mark.parametrize("discard,bin_size,S", [(30, 1, 1.5), (0, 4, 1.5), (10, 3, 2.0),
                                                (0, 1, 0.0)])
def test_cut_bins_and_window_against_the_gamma_method(phi4_run, capsys, discard, bin_size, S):
    code, res, _ = _analyse(capsys, phi4_run, "--discard", discard, "--bin", bin_size, "--S", S)
    assert code == 0
    with np.load(phi4_run / "history.npz") as f:
        h = f["phi2"][:, discard:]
        m2, absm = f["m2"][:, discard:], f["abs_magnetization"][:, discard:]
    n = (h.shape[1] // bin_size) * bin_size
    binned = [x[:, :n].reshape(x.shape[0], -1, bin_size).mean(axis=2) for x in (h, m2, absm)]
    direct = gamma_method(binned[0], S=S)
    entry = res["observables"]["phi2"]
    assert res["n_samples"] == n // bin_size
    assert entry["mean"] == pytest.approx(direct.value, rel=1e-12)
    assert entry["error"] == pytest.approx(direct.error, rel=1e-12)
    assert entry["tau_int"] == pytest.approx(direct.tau_int, rel=1e-12)
    V = 36
    chi = gamma_method([binned[1], binned[2]], f=lambda a: V * (a[0] - a[1] ** 2), S=S)
    assert res["observables"]["susceptibility"]["mean"] == pytest.approx(chi.value, rel=1e-10)


def test_shorter_measure_histories_lose_their_share_of_the_cut(tmp_path, capsys):
    out = _run(tmp_path, "u1", "theory.name=u1", "theory.beta=2.0", "lattice.shape=[6,6]",
               "sampler.n_chains=2", "sampler.n_therm=20", "sampler.n_samples=60",
               "measure.wilson_loops=2", "measure.every=3")
    summary = json.loads((out / "summary.json").read_text())
    code, res, _ = _analyse(capsys, out)
    assert code == 0 and res["observables"] == summary["observables"]
    code, res, _ = _analyse(capsys, out, "--discard", 7)
    with np.load(out / "history.npz") as f:
        w = f["measure.W_1_1"]
        assert w.shape[1] == 20
        P = f["plaquette"][:, 7:]
    # measurements 0, 3, 6 are among the first 7: three entries of the every-3rd history go
    assert res["observables"]["wilson_loop_1x1"]["mean"] == pytest.approx(
        gamma_method(w[:, 3:]).value, rel=1e-12)
    assert res["observables"]["plaquette"]["mean"] == pytest.approx(gamma_method(P).value,
                                                                    rel=1e-12)


def test_refusals_are_one_line_and_exit_2(tmp_path, phi4_run, capsys):
    code, _, err = _analyse(capsys, tmp_path / "nowhere")
    assert code == 2 and "no such run directory" in err and err.count("\n") == 1
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.toml").write_text((phi4_run / "config.toml").read_text())
    code, _, err = _analyse(capsys, unfinished)
    assert code == 2 and "history.npz" in err and "--resume" in err
    code, _, err = _analyse(capsys, phi4_run, "--discard", 118)
    assert code == 2 and "--discard 118" in err and "Γ-method needs" in err
    code, _, err = _analyse(capsys, phi4_run, "--bin", 0)
    assert code == 2 and "--bin" in err


def test_the_digest_says_what_was_done(phi4_run, capsys):
    capsys.readouterr()
    assert main(["analyse", str(phi4_run), "--discard", "20", "--bin", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "discard 20, bin 2, S 1.5" in lines[0] and "50 samples" in lines[0]
    assert any(line.strip().startswith("phi2 = ") for line in lines[1:])
