"""``lattice-ml plot DIR``: pictures of a finished run, drawn from its histories.

::

    lattice-ml plot DIR [--to PLOTS] [--discard N] [--format png svg] [--max-chains 8]

For every primary observable of the summary with a scalar history (φ⁴: ``phi2``,
``abs_magnetization``, ``magnetization``; gauge theories: ``plaquette``, ``polyakov_loop``, and
the topological charge where the run measures it; fermions also ``chiral_condensate``) one
figure ``<name>.png`` / ``.svg`` with four panels:

* the Monte Carlo history of each chain (measurement number on the x axis; the run's own
  ``n_therm`` updates are not in the history; ``--discard N`` marks a further cut, grey, and
  leaves those measurements out of the other panels),
* the histogram over all chains,
* the normalised autocorrelation function ρ(t) of the Γ-method (Wolff, Comput. Phys. Commun.
  156 (2004) 143) with the chosen window W marked,
* τ_int(W') = 1/2 + Σ_{t=1}^{W'} ρ(t) against the summation window W', the chosen W marked and
  the bias-corrected τ_int of the result drawn as a point with its error.

Also ``acceptance``: ΔH per update and chain, its histogram, and the running acceptance (for
Metropolis samplers); ``correlator`` (runs with fermions): the pion correlator with its
Γ-method errors on a log scale with the cosh fit over the summary's fit range, and the cosh
effective mass (:func:`lattice_ml.fermions.effective_mass`) with the fitted mass; ``training``
(flow runs that trained: loss, batch ESS and gradient norm per training step; SLHMC runs: loss,
spread of S_θ − S and the weights per training trajectory), from ``DIR/training.npz``.
Figures are written atomically into ``DIR/plots/`` (or ``--to``); nothing
else in DIR changes.

matplotlib is an optional dependency (``pip install 'lattice-ml[plot]'``); no global state of it
is touched (figures are built with ``matplotlib.figure.Figure``, no ``pyplot``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

__all__ = ["add_parser", "figures", "plot_run", "PlotError"]

EXIT_OK = 0
EXIT_USAGE = 2


class PlotError(ValueError):
    """A run directory that cannot be drawn, or matplotlib missing (one-line message)."""


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise PlotError("lattice-ml plot needs matplotlib, which is not installed: "
                        "pip install 'lattice-ml[plot]' (or pip install matplotlib)") from exc
    return Figure


def _load(out: Path):
    from .output import HISTORY_NAME, SUMMARY_NAME

    if not out.is_dir():
        raise PlotError(f"{out}: no such run directory")
    hist_path, sum_path = out / HISTORY_NAME, out / SUMMARY_NAME
    if not hist_path.is_file() or not sum_path.is_file():
        missing = HISTORY_NAME if not hist_path.is_file() else SUMMARY_NAME
        raise PlotError(f"{out} holds no finished run ({missing} is missing)")
    try:
        summary = json.loads(sum_path.read_text())
    except (OSError, ValueError) as exc:
        raise PlotError(f"{sum_path} is not readable JSON: {exc}") from exc
    with np.load(hist_path) as f:
        hist = {k: np.asarray(f[k]) for k in f.files}
    return summary, hist


def _primaries(summary: dict, hist: dict) -> list[str]:
    names = [k for k in summary.get("observables", {}) if k in hist and hist[k].ndim == 2]
    if "measure.Q_clover" in hist:
        names.append("measure.Q_clover")
    return names


def _tau_curve(rho: np.ndarray) -> np.ndarray:
    """τ_int(W') = 1/2 + Σ_{t=1}^{W'} ρ(t) for W' = 0 … len(rho) − 1."""
    return 0.5 + np.concatenate([[0.0], np.cumsum(rho[1:])])


def _gamma(h):
    """The Γ-method of a history; a window at its limit is shown, not warned about (the
    summary and ``analyse`` carry the warning)."""
    import warnings

    from ..stats import WindowWarning, gamma_method

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", WindowWarning)
        return gamma_method(h)


def _observable_figure(Figure, name: str, h: np.ndarray, discard: int, max_chains: int):
    fig = Figure(figsize=(10, 7), layout="constrained")
    ax_h, ax_hist, ax_rho, ax_tau = fig.subplots(2, 2).ravel()
    x = np.arange(h.shape[1])
    for c in range(min(h.shape[0], max_chains)):
        ax_h.plot(x, h[c], lw=0.7, label=f"chain {c}")
    if discard:
        ax_h.axvspan(-0.5, discard - 0.5, color="0.85", zorder=0, label=f"discarded ({discard})")
    ax_h.set(xlabel="measurement", ylabel=name, title=f"{name}: Monte Carlo history")
    if h.shape[0] <= 8:
        ax_h.legend(fontsize="small", loc="best")
    kept = h[:, discard:]
    ax_hist.hist(kept.ravel(), bins="auto", color="C0", alpha=0.8)
    ax_hist.set(xlabel=name, ylabel="count", title=f"histogram ({kept.size} values)")
    res = _gamma(kept)
    rho = np.asarray(res.rho)
    t_max = min(rho.size, max(4 * res.window + 2, 10))
    ax_rho.plot(np.arange(t_max), rho[:t_max], "o-" if t_max <= 60 else "-", ms=3, color="C1")
    ax_rho.axhline(0, color="0.5", lw=0.5)
    ax_rho.axvline(res.window, color="C3", ls="--", label=f"window W = {res.window}")
    ax_rho.set(xlabel="t (measurements)", ylabel="ρ(t)", title="normalised autocorrelation")
    ax_rho.legend(fontsize="small")
    tau = _tau_curve(rho)
    ax_tau.plot(np.arange(t_max), tau[:t_max], "-", color="C2", label="τ_int(W')")
    ax_tau.axvline(res.window, color="C3", ls="--", label=f"W = {res.window}")
    ax_tau.errorbar([res.window], [res.tau_int], yerr=[res.tau_int_error], fmt="s", color="C3",
                    label=f"τ_int = {res.tau_int:.3g}({res.tau_int_error:.2g})")
    ax_tau.set(xlabel="summation window W'", ylabel="τ_int", title="τ_int against the window")
    ax_tau.legend(fontsize="small")
    fig.suptitle(f"{name} = {res.value:.6g} ± {res.error:.2g}")
    return fig, res


def _acceptance_figure(Figure, hist: dict, discard: int, max_chains: int):
    dh = hist["delta_h"][:, discard:]
    acc = hist["accepted"][:, discard:].astype(float)
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax_dh, ax_hist, ax_acc = fig.subplots(1, 3)
    for c in range(min(dh.shape[0], max_chains)):
        ax_dh.plot(dh[c], ".", ms=2)
    ax_dh.set(xlabel="measured update", ylabel="ΔH", title="ΔH per update")
    finite = dh[np.isfinite(dh)]
    ax_hist.hist(finite, bins="auto", color="C0", alpha=0.8)
    ax_hist.set(xlabel="ΔH", ylabel="count",
                title=f"<exp(-ΔH)> = {np.mean(np.exp(-finite)):.3f}")
    running = np.cumsum(acc.mean(axis=0)) / np.arange(1, acc.shape[1] + 1)
    ax_acc.plot(running, color="C2")
    ax_acc.set(xlabel="measured update", ylabel="acceptance", ylim=(0, 1.02),
               title=f"running acceptance (final {running[-1]:.3f})")
    return fig


def _correlator_figure(Figure, C: np.ndarray, entry: dict | None, discard: int):
    from ..stats import cosh_correlator, fit_cosh_mass, folded_errors

    C = C[:, discard:]
    T = C.shape[-1]
    res = [_gamma(C[..., t]) for t in range(T)]
    mean = np.array([r.value for r in res])
    err = np.array([r.error for r in res])
    t = np.arange(T)
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    ax_c, ax_m = fig.subplots(1, 2)
    ax_c.errorbar(t, mean, yerr=err, fmt="o", ms=3, label="C(t)")
    ax_c.set(yscale="log", xlabel="t", ylabel="C(t)", title="pion correlator")
    from ..fermions.observables import effective_mass

    with np.errstate(divide="ignore", invalid="ignore"):
        meff = effective_mass(mean, "cosh")          # t = 1 .. T-1
    ax_m.plot(t[1:], meff, "o", ms=3, label="arccosh[(C(t-1) + C(t+1)) / 2C(t)]")
    if entry is not None and "fit_range" in entry:
        t0, t1 = entry["fit_range"]
        import warnings

        from ..stats import WindowWarning

        with warnings.catch_warnings():        # the summary's fit, with its weights
            warnings.simplefilter("ignore", WindowWarning)
            fit = fit_cosh_mass(mean, (t0, t1), sigma=folded_errors(C))
        tt = np.arange(t0, t1 + 1)
        ax_c.plot(tt, cosh_correlator(T, fit.mass, fit.amplitude)[tt], "-", color="C3",
                  label=f"cosh fit [{t0}, {t1}]")
        m, dm = entry["mean"], entry["error"]
        ax_m.axhspan(m - dm, m + dm, color="C3", alpha=0.3, label=f"m = {m:.4g}({dm:.2g})")
    ax_c.legend(fontsize="small")
    ax_m.set(xlabel="t", ylabel="effective mass", title="effective mass")
    ax_m.legend(fontsize="small")
    return fig


def _training_figure(Figure, tr: dict):
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax_loss, ax_ess, ax_g = fig.subplots(1, 3)
    step = np.arange(1, tr["loss"].size + 1)
    if "spread" in tr:          # self-learning HMC: one Adam step per HMC trajectory
        ax_loss.plot(step, tr["loss"], lw=0.8, color="C0")
        ax_loss.set(xlabel="training trajectory", ylabel="loss", yscale="log",
                    title="self-learning loss")
        ax_ess.plot(step, tr["spread"], lw=0.8, color="C1")
        ax_ess.set(xlabel="training trajectory", ylabel="std over chains",
                   title="spread of S_θ − S")
        ax_g.plot(step, tr["theta"], lw=0.8)
        ax_g.set(xlabel="training trajectory", ylabel="weight", title="network weights")
        return fig
    ax_loss.plot(step, tr["loss"], lw=0.8, color="C0")
    ax_loss.set(xlabel="training step", ylabel="loss", title="reverse KL + const (loss)")
    ax_ess.plot(step, tr["ess"], lw=0.8, color="C1")
    ax_ess.set(xlabel="training step", ylabel="ESS of the batch", ylim=(0, 1.02), title="ESS")
    ax_g.plot(step, tr["grad_norm"], lw=0.8, color="C2")
    ax_g.set(xlabel="training step", ylabel="|gradient|", yscale="log", title="gradient norm")
    return fig


def figures(out_dir, discard: int = 0, max_chains: int = 8) -> dict:
    """``{file stem: matplotlib Figure}`` of the finished run in ``out_dir`` (see the module
    docstring); raises :class:`PlotError`."""
    Figure = _figure_class()
    summary, hist = _load(Path(out_dir))
    if not (isinstance(discard, int) and discard >= 0):
        raise PlotError(f"--discard must be an integer >= 0, got {discard!r}")
    shortest = min(h.shape[1] for h in hist.values())
    if discard >= shortest - 1:
        raise PlotError(f"--discard {discard} leaves fewer than 2 measurements of the shortest "
                        f"history ({shortest})")
    figs = {}
    n_full = max(x.shape[1] for x in hist.values())
    for name in _primaries(summary, hist):
        h = hist[name]
        # a [measure] history (every measure.every-th measurement) loses its share of the cut
        cut = discard if h.shape[1] == n_full else -(-discard * h.shape[1] // n_full)
        figs[name.replace("measure.", "")], _ = _observable_figure(Figure, name, h, cut,
                                                                    max_chains)
    if "delta_h" in hist and "accepted" in hist:
        figs["acceptance"] = _acceptance_figure(Figure, hist, discard, max_chains)
    from .output import TRAINING_NAME

    training = Path(out_dir) / TRAINING_NAME
    if training.is_file():
        with np.load(training) as f:
            figs["training"] = _training_figure(Figure, {k: np.asarray(f[k]) for k in f.files})
    if "pion_correlator" in hist:
        figs["correlator"] = _correlator_figure(
            Figure, hist["pion_correlator"], summary.get("observables", {}).get("pion_mass"),
            discard)
    return figs


def _save_atomic(fig, path: Path) -> None:
    from ..io.atomic import atomic_open_binary   # the umask's mode, no partial file

    with atomic_open_binary(path) as fh:
        fig.savefig(fh, format=path.suffix[1:], dpi=120)


def plot_run(out_dir, to=None, formats=("png", "svg"), discard: int = 0,
             max_chains: int = 8) -> list[Path]:
    """Draw the run in ``out_dir`` into ``to`` (default ``out_dir/plots``); the written paths."""
    figs = figures(out_dir, discard, max_chains)
    from .output import PLOTS_NAME

    dest = Path(to) if to is not None else Path(out_dir) / PLOTS_NAME
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, fig in figs.items():
        for fmt in formats:
            path = dest / f"{stem}.{fmt}"
            _save_atomic(fig, path)
            written.append(path)
    return written


def add_parser(subparsers) -> None:
    """Add the ``plot`` subcommand (sets ``handler``)."""
    p = subparsers.add_parser(
        "plot", help="draw a finished run's histories, autocorrelations and histograms",
        description="Draw the Monte Carlo histories, histograms, autocorrelation functions with "
                    "the Γ-method window, τ_int(W), ΔH and acceptance, and for fermions the "
                    "correlator with its fit, of the finished run in DIR as PNG and SVG in "
                    "DIR/plots/ (needs matplotlib).")
    p.add_argument("dir", metavar="DIR", type=Path, help="the run's output directory")
    p.add_argument("--to", type=Path, metavar="PLOTS", help="output folder (default DIR/plots)")
    p.add_argument("--discard", type=int, default=0, metavar="N",
                   help="mark and leave out the first N measurements of every chain")
    p.add_argument("--format", dest="formats", nargs="+", default=["png", "svg"],
                   choices=["png", "svg", "pdf"], help="file formats (default png svg)")
    p.add_argument("--max-chains", type=int, default=8, metavar="K",
                   help="draw the histories of at most K chains (default 8)")
    p.set_defaults(handler=cmd_plot)


def cmd_plot(args: argparse.Namespace) -> int:
    try:
        written = plot_run(args.dir, args.to, tuple(args.formats), args.discard, args.max_chains)
    except PlotError as exc:
        print(f"lattice-ml: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    folder = written[0].parent if written else args.to
    print(f"{len(written)} files in {folder}: " + ", ".join(sorted({p.stem for p in written})))
    return EXIT_OK
