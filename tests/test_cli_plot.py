"""`lattice-ml plot DIR`: the files are written, and the figures show the run's data (the
drawn lines are the histories, the window marker is the Γ-method's window, the histogram counts
every value, the correlator points are the Γ-method means with the summary's fit)."""

import hashlib
import json

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from lattice_ml.cli.main import main  # noqa: E402
from lattice_ml.cli.plot import figures  # noqa: E402
from lattice_ml.stats import gamma_method  # noqa: E402


def _run(tmp_path, name, *sets):
    out = tmp_path / name
    args = ["run", "--out", str(out), "--set", "run.progress=never"]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def phi4_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("plot"), "phi4", "lattice.shape=[6,6]",
                "sampler.n_chains=3", "sampler.n_therm=20", "sampler.n_samples=150")


def test_files_are_written_and_nothing_else_changes(phi4_run, capsys):
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in phi4_run.iterdir()
              if p.is_file()}
    capsys.readouterr()
    assert main(["plot", str(phi4_run)]) == 0
    assert "8 files" in capsys.readouterr().out
    plots = phi4_run / "plots"
    for stem in ("phi2", "abs_magnetization", "magnetization", "acceptance"):
        png, svg = plots / f"{stem}.png", plots / f"{stem}.svg"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        assert b"<svg" in svg.read_bytes()[:2000]
    assert not list(plots.glob("*.part")) and not list(plots.glob(".*"))
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in phi4_run.iterdir()
             if p.is_file()}
    assert after == before


@pytest.mark.parametrize("discard", [0, 25])
def test_observable_figure_shows_the_history_and_the_gamma_window(phi4_run, discard):
    figs = figures(phi4_run, discard=discard)
    h = np.load(phi4_run / "history.npz")["phi2"]
    ax_h, ax_hist, ax_rho, ax_tau = figs["phi2"].axes
    for c in range(3):                                    # one line per chain, the data itself
        np.testing.assert_array_equal(ax_h.lines[c].get_ydata(), h[c])
    kept = h[:, discard:]
    assert sum(p.get_height() for p in ax_hist.patches) == kept.size
    res = gamma_method(kept)
    window_line = [ln for ln in ax_rho.lines if ln.get_linestyle() == "--"][0]
    assert window_line.get_xdata()[0] == res.window
    rho = ax_rho.lines[0].get_ydata()
    np.testing.assert_allclose(rho, res.rho[:rho.size], rtol=0, atol=1e-15)
    tau_curve = ax_tau.lines[0].get_ydata()
    assert tau_curve[res.window] == pytest.approx(0.5 + res.rho[1:res.window + 1].sum())
    assert f"{res.value:.6g}" in figs["phi2"].get_suptitle()
    shaded = [p for p in ax_h.patches]                    # the discarded stretch is marked
    assert len(shaded) == (1 if discard else 0)


def test_acceptance_figure_is_the_delta_h_history(phi4_run):
    fig = figures(phi4_run)["acceptance"]
    hist = np.load(phi4_run / "history.npz")
    ax_dh, _, ax_acc = fig.axes
    np.testing.assert_array_equal(ax_dh.lines[0].get_ydata(), hist["delta_h"][0])
    assert ax_acc.lines[0].get_ydata()[-1] == pytest.approx(hist["accepted"].mean())


def test_correlator_figure_with_the_summary_fit(tmp_path):
    out = _run(tmp_path, "w", "theory.name=su2", "theory.fermion=wilson", "theory.nf=4",
               "theory.mass=0.3", "theory.csw=1.0", "lattice.shape=[8,4]",
               "sampler.fine_steps=2", "sampler.n_chains=2", "sampler.n_therm=2",
               "sampler.n_samples=6", "sampler.n_steps=4", "theory.n_sources=1")
    summary = json.loads((out / "summary.json").read_text())
    entry = summary["observables"]["pion_mass"]
    C = np.load(out / "history.npz")["pion_correlator"]
    fig = figures(out)["correlator"]
    ax_c, ax_m = fig.axes
    points = ax_c.containers[0].lines[0].get_ydata()      # the errorbar's data points
    np.testing.assert_allclose(points, C.mean(axis=(0, 1)), rtol=1e-14)
    t0, t1 = entry["fit_range"]
    fit_line = ax_c.lines[-1]
    np.testing.assert_array_equal(fit_line.get_xdata(), np.arange(t0, t1 + 1))
    band = ax_m.patches[-1].get_extents()                 # the fitted mass +- error is drawn
    assert band is not None and f"{entry['mean']:.4g}" in ax_m.get_legend_handles_labels()[1][-1]


def test_refusals_are_one_line(tmp_path, phi4_run, capsys, monkeypatch):
    import sys
    capsys.readouterr()
    assert main(["plot", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "no such run directory" in err and err.count("\n") == 1
    assert main(["plot", str(phi4_run), "--discard", "149"]) == 2
    assert "--discard 149" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert main(["plot", str(phi4_run)]) == 2
    assert "pip install 'lattice-ml[plot]'" in capsys.readouterr().err


def test_flow_training_history_is_saved_and_drawn(tmp_path):
    out = _run(tmp_path, "flow", "sampler.name=flow", "lattice.shape=[4,4]",
               "flow.train_steps=30", "flow.n_layers=2", "flow.channels=2",
               "flow.hidden_layers=1", "flow.batch_size=8", "sampler.n_chains=2",
               "sampler.n_therm=5", "sampler.n_samples=30", "sampler.min_acceptance=0")
    summary = json.loads((out / "summary.json").read_text())
    tr = np.load(out / "training.npz")
    assert set(tr.files) >= {"loss", "ess", "grad_norm", "lr"} and tr["loss"].size == 30
    assert summary["flow"]["final_loss"] == pytest.approx(tr["loss"][-50:].mean(), rel=1e-12)
    fig = figures(out)["training"]
    np.testing.assert_array_equal(fig.axes[0].lines[0].get_ydata(), tr["loss"])
    np.testing.assert_array_equal(fig.axes[2].lines[0].get_ydata(), tr["grad_norm"])
    # an --overwrite with a run that trains nothing leaves neither the old training history
    # nor the old pictures looking like the new run's
    assert main(["plot", str(out)]) == 0 and (out / "plots" / "training.png").exists()
    assert main(["run", "--out", str(out), "--overwrite", "--set", "run.progress=never",
                 "--set", "lattice.shape=[4,4]", "--set", "sampler.n_samples=20"]) == 0
    assert not (out / "training.npz").exists() and not (out / "plots").exists()
