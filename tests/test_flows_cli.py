"""`lattice-ml run` with the flow samplers (sampler.name = flow | flow_hmc): summary fields
(ESS, training, acceptance), histories, reproducibility, agreement with exact quadrature on 2x2,
config errors."""

import functools
import json

import numpy as np
import pytest

from lattice_ml.cli.main import main

SMALL = ["--set", "lattice.shape=[2,2]", "--set", "theory.form=standard",
         "--set", "theory.m2=-4.0", "--set", "theory.lam=8.0",
         "--set", "sampler.n_chains=4", "--set", "sampler.n_therm=10",
         "--set", "sampler.n_samples=60", "--set", "run.progress=never"]
FLOW = ["--set", "flow.n_layers=2", "--set", "flow.channels=4",
        "--set", "flow.hidden_layers=1", "--set", "flow.train_steps=40",
        "--set", "flow.batch_size=32"]


def run(tmp_path, name, *extra):
    out = tmp_path / name
    code = main(["run", "--out", str(out), *SMALL, *extra])
    return code, out


@pytest.mark.parametrize("sampler", ["flow", "flow_hmc"])
def test_flow_run_reports_ess_training_and_acceptance(tmp_path, sampler):
    hmc = ["--set", "sampler.n_steps=3", "--set", "sampler.integrator=leapfrog"]
    code, out = run(tmp_path, sampler, "--set", f"sampler.name={sampler}", *FLOW,
                    *(hmc if sampler == "flow_hmc" else []))
    assert code == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["sampler"] == sampler
    assert 0 < s["ess"] <= 1 and s["ess"] == s["flow"]["ess"]
    assert s["train_seconds"] > 0 and s["flow"]["train_steps"] == 40
    assert s["flow"]["n_parameters"] == 2 * ((1 * 4 * 9 + 4) + (4 * 2 * 9 + 2))
    hist = np.load(out / "history.npz")
    assert hist["accepted"].shape == (4, 60)
    assert s["acceptance"] == pytest.approx(hist["accepted"].mean())
    assert 0.1 < s["acceptance"] <= 1       # a 2x2 flow trained for 40 steps is decent
    assert ("integrator" in s) == (sampler == "flow_hmc")
    for key in ("phi2", "abs_magnetization", "susceptibility"):
        assert np.isfinite(s["observables"][key]["mean"])
    # flow Metropolis: the field is x; flow HMC: measurements are of x = f(z), not z
    assert hist["phi2"].shape == (4, 60)


@functools.lru_cache
def _phi4_2x2_exact(m2, lam, n_gl, n_tr, Y=3.0):
    """<phi2>, <|M|>, susceptibility and Binder cumulant of the standard-form phi^4 action on a
    periodic 2x2 lattice by quadrature over the four sites, written here from the formula
    S = sum_x [sum_mu (phi(x+mu) - phi(x))^2 + m2 phi^2 + lam phi^4] (no library code).

    Coordinates y = H phi with the orthogonal 4x4 Hadamard matrix H (Jacobian 1), so that
    y0 = sum(phi)/2 = 2M: the kink of |M| lies on the boundary y0 = 0 of the half range that the
    phi -> -phi symmetry allows, y0 is integrated by Gauss-Legendre on [0, Y] (the integrand is
    analytic there) and y1..y3 by the trapezoidal rule on [-Y, Y] (spectrally accurate for a
    smooth, rapidly decaying integrand). Y = 3 leaves exp(-2 Y^4 + 4 Y^2) < 1e-50 outside."""
    g, gw = np.polynomial.legendre.leggauss(n_gl)
    y0, w0 = Y * (g + 1) / 2, Y * gw / 2
    y = np.linspace(-Y, Y, n_tr)
    H = 0.5 * np.array([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]])
    grid = np.stack(np.meshgrid(y0, y, y, y, indexing="ij"))
    phi = np.einsum("ab,b...->a...", H, grid).reshape(2, 2, *grid.shape[1:])
    S = sum(((np.roll(phi, -1, axis=mu) - phi) ** 2).sum((0, 1)) for mu in (0, 1))
    S = S + (m2 * phi ** 2 + lam * phi ** 4).sum((0, 1))
    p = w0[:, None, None, None] * np.exp(-S)
    p /= p.sum()
    M = phi.mean((0, 1))
    am, M2, M4 = (p * abs(M)).sum(), (p * M ** 2).sum(), (p * M ** 4).sum()
    return {"phi2": (p * (phi ** 2).mean((0, 1))).sum(), "abs_magnetization": am,
            "susceptibility": 4 * (M2 - am ** 2), "binder_cumulant": 1 - M4 / (3 * M2 ** 2)}


def test_quadrature_uses_the_library_convention():
    """The action written in the quadrature is the library's (standard form, 2x2)."""
    import numpy as xp
    from lattice_ml.lattice import Lattice
    from lattice_ml.scalar import Phi4Action
    phi = np.random.default_rng(3).normal(size=(5, 2, 2))
    S = sum(((np.roll(phi, -1, axis=mu) - phi) ** 2).sum((1, 2)) for mu in (1, 2))
    S = S + (-4.0 * phi ** 2 + 8.0 * phi ** 4).sum((1, 2))
    lib = Phi4Action(Lattice((2, 2)), "standard", m2=-4.0, lam=8.0).action(xp.asarray(phi))
    np.testing.assert_allclose(np.asarray(lib), S, rtol=1e-13)


@pytest.mark.parametrize("sampler", ["flow", "flow_hmc"])
def test_flow_run_agrees_with_exact_quadrature(tmp_path, sampler):
    """Both flow samplers are exact whatever the training: their 2x2 estimates agree with the
    quadrature within 4 sigma (the Gamma-method errors of the summary, 8 chains x 800 samples,
    at least 10 tau_int per chain). A sampler that forgets the Metropolis correction or the
    flow's log-det samples another distribution and fails."""
    exact = _phi4_2x2_exact(-4.0, 8.0, 32, 40)
    finer = _phi4_2x2_exact(-4.0, 8.0, 40, 48)
    for key in exact:                           # the quadrature has converged
        assert abs(exact[key] - finer[key]) < 1e-7, key
    hmc = ["--set", "sampler.n_steps=3", "--set", "sampler.integrator=leapfrog"]
    code, out = run(tmp_path, sampler, "--set", f"sampler.name={sampler}", *FLOW,
                    "--set", "flow.train_steps=150", "--set", "flow.batch_size=64",
                    "--set", "sampler.n_chains=8", "--set", "sampler.n_samples=800",
                    *(hmc if sampler == "flow_hmc" else []))
    assert code == 0
    obs = json.loads((out / "summary.json").read_text())["observables"]
    pulls = {key: (obs[key]["mean"] - value) / obs[key]["error"] for key, value in exact.items()}
    assert all(800 >= 10 * obs[key]["tau_int"] for key in exact), obs
    assert all(abs(z) < 4 for z in pulls.values()), pulls


def test_flow_run_is_reproducible(tmp_path):
    _, a = run(tmp_path, "a", "--set", "sampler.name=flow", *FLOW)
    _, b = run(tmp_path, "b", "--set", "sampler.name=flow", *FLOW)
    np.testing.assert_array_equal(np.load(a / "history.npz")["phi2"],
                                  np.load(b / "history.npz")["phi2"])


def test_flow_errors(tmp_path, capsys):
    # gauge flows exist for pure gauge theories; with dynamical fermions they are refused
    code = main(["run", "--out", str(tmp_path / "e1"), "--set", "sampler.name=flow",
                 "--set", "theory.name=schwinger", "--set", "lattice.shape=[4,4]"])
    text = "".join(capsys.readouterr())
    assert code == 2 and "sampler.name" in text and "fermion" in text
    assert not (tmp_path / "e1").exists()
    code = main(["run", "--out", str(tmp_path / "e3"), "--set", "sampler.name=flow",
                 "--set", "flow.kind=gradient"])
    text = "".join(capsys.readouterr())
    assert code == 2 and "flow.kind" in text and "coupling" in text
    code, _ = run(tmp_path, "e2", "--set", "sampler.name=flow", "--set", "flow.kernel=4",
                  "--set", "flow.train_steps=0")
    text = "".join(capsys.readouterr())
    assert code == 2 and "flow.kernel" in text and "odd" in text


@pytest.mark.parametrize("sampler", ["flow", "flow_hmc"])
def test_flow_run_resumes_bit_identically(tmp_path, sampler):
    """A resumed run retrains the same flow (its own seeded streams) and continues exactly."""
    from lattice_ml.cli.config import dump_toml, load_config
    from lattice_ml.cli.run import load_resume, run_job

    class Stop(Exception):
        pass

    def stop_at(k_stop):
        def hook(k, path):
            if k == k_stop:
                raise Stop
        return hook

    overrides = ["lattice.shape=[2,2]", "theory.form=standard", "theory.m2=-4.0",
                 "theory.lam=8.0", "sampler.n_chains=2", "sampler.n_therm=3",
                 "sampler.n_samples=6", "run.progress=never", "run.checkpoint_every=1",
                 f"sampler.name={sampler}", "flow.n_layers=2", "flow.channels=2",
                 "flow.hidden_layers=1", "flow.train_steps=5", "flow.batch_size=8",
                 "sampler.min_acceptance=0"]   # 2 chains x 6 updates: acceptance is noise
    if sampler == "flow_hmc":
        overrides += ["sampler.n_steps=2"]
    config = load_config(None, overrides)
    dirs = {}
    for name in ("ref", "resumed"):
        dirs[name] = tmp_path / name
        dirs[name].mkdir()
        (dirs[name] / "config.toml").write_text(dump_toml(config))
    ref = run_job(config, dirs["ref"], "never")
    state = None
    for k in (2, 5):
        with pytest.raises(Stop):
            run_job(config, dirs["resumed"], "never", resume=state, on_checkpoint=stop_at(k))
        state = load_resume(dirs["resumed"], config)
    resumed = run_job(config, dirs["resumed"], "never", resume=state)
    ha, hb = (np.load(d / "history.npz") for d in dirs.values())
    assert list(ha) == list(hb)
    for key in ha:
        np.testing.assert_array_equal(ha[key], hb[key])
    timing = {"elapsed_s", "segments", "train_seconds", "flow"}
    assert {k: v for k, v in ref.items() if k not in timing} == \
        {k: v for k, v in resumed.items() if k not in timing}
    assert ref["ess"] == resumed["ess"] and resumed["segments"] == 3
