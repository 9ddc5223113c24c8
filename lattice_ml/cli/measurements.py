"""The measurements of ``lattice-ml run`` and how their histories become summary entries: the
Γ-method entry of SPEC section 4 (:func:`summary_entry`), the ``[measure]`` gauge observables
(clover charge, Wilson flow t0/w0, Wilson loops and Creutz ratios), the chiral condensate by
all-mode averaging (``measure.ama_*``) and the pion mass from a cosh fit of the correlator.
The job builders (:mod:`lattice_ml.cli.jobs`) put them together per theory; ``lattice-ml
analyse`` recomputes the entries with another window parameter ``S``.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable

import numpy as np

from ..backend import namespace, to_numpy
from ..fermions import chiral_condensate
from ..gauge.observables import (average_plaquette, average_rectangle, creutz_ratio,
                                 polyakov_loop, wilson_loop)
from ..lattice import Lattice
from ..stats import WindowWarning, gamma_method

__all__ = ["host", "summary_entry", "MEASURE_PREFIX", "gauge_measurements",
           "summarize_gauge_measurements", "pion_mass_entry", "ama_features"]


def host(x) -> np.ndarray:
    """A measurement as a float64 host array."""
    return to_numpy(x).astype(np.float64)


def summary_entry(data, f=None, S: float = 1.5) -> dict | None:
    """Γ-method summary entry with the key names of SPEC section 4 (``mean``, ``error``,
    ``tau_int``, ``tau_int_error``, ...); a warning of the analysis (window at its limit,
    anticorrelated history) is kept in the entry under ``warning``. ``None`` when the derived
    quantity is undefined at the measured means (e.g. a correlation length with G(0) < G(p1)).
    ``S``: the window parameter of :func:`~lattice_ml.stats.gamma_method`."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", WindowWarning)
        try:
            res = gamma_method(data, f=f, S=S)
        except ValueError:
            if f is None:
                raise
            return None
    d = res.to_dict()
    d["mean"] = d.pop("value")
    if caught:
        d["warning"] = "; ".join(str(w.message) for w in caught)
    return d



# ------------------------------------------------------------------------------------------
# the chiral condensate by all-mode averaging (measure.ama_sloppy, measure.ama_regression)
# ------------------------------------------------------------------------------------------
def ama_features(U):
    """``[batch, 5]``: the regression's features of a configuration, ``(P, R, Re L, |L|^2,
    P^2)`` with P the average plaquette, R the average rectangle and L the Polyakov loop (all
    normalised by N)."""
    xp = namespace(U)
    P, L = average_plaquette(U), polyakov_loop(U)
    return xp.stack([P, average_rectangle(U), xp.real(L), xp.real(L * xp.conj(L)), P * P],
                    axis=1)


def _ama_measure(U, D, rng, n_sources: int, m: dict, tol: float, subset: bool) -> dict:
    """The AMA measurements of one configuration: the truncated-solve condensate and/or the
    features at every measurement, the exact condensate (and the approximations again, on the
    ``[measure]`` axis) on the subset."""
    from ..fermions.observables import chiral_condensate_ama

    out = {}
    exact = None
    if m["ama_sloppy"]:
        sloppy, exact = chiral_condensate_ama(D, rng, n_sources, m["sloppy_iterations"],
                                              exact=subset, tol=tol)
        out["chiral_condensate_sloppy"] = sloppy
        if subset:
            out[MEASURE_PREFIX + "chiral_condensate_sloppy"] = sloppy
    elif subset:
        exact = chiral_condensate(D, rng, n_sources, tol=tol)
    if m["ama_regression"]:
        feats = ama_features(U)
        out["ama_features"] = feats
        if subset:
            out[MEASURE_PREFIX + "ama_features"] = feats
    if subset:
        out[MEASURE_PREFIX + "chiral_condensate"] = exact
    return out


def _ama_entry(res) -> dict:
    """A summary entry (SPEC key names) of an :class:`~lattice_ml.stats.AMAResult`."""
    d = res.to_dict()
    d["mean"] = d.pop("value")
    d["n"] = d["n_all"]
    for part in ("approx", "correction", "exact"):
        if part in d:
            d[part]["mean"] = d[part].pop("value")
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in d.items()}


def _ama_summary(hist: dict, m: dict, S: float) -> dict:
    """``chiral_condensate`` (the exact solves alone, on the ``[measure]`` axis) and the AMA
    estimates ``chiral_condensate_ama_sloppy`` / ``chiral_condensate_ama_regression``; an
    estimate whose histories are too short (a large ``analyse --discard``) is left out."""
    from ..stats import ama, ama_regression

    exact = hist[MEASURE_PREFIX + "chiral_condensate"]
    obs = {"chiral_condensate": summary_entry(exact, S=S)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", WindowWarning)
        if m["ama_sloppy"]:
            try:
                res = ama(hist["chiral_condensate_sloppy"], exact, every=m["every"],
                          approx_subset=hist[MEASURE_PREFIX + "chiral_condensate_sloppy"], S=S)
                obs["chiral_condensate_ama_sloppy"] = _ama_entry(res)
            except ValueError:
                pass
        if m["ama_regression"]:
            try:
                res = ama_regression(hist["ama_features"], hist[MEASURE_PREFIX + "ama_features"],
                                     exact, every=m["every"], n_train=m["ama_train"], S=S)
                obs["chiral_condensate_ama_regression"] = _ama_entry(res)
            except ValueError:
                pass
    return obs


def pion_mass_entry(C, S: float = 1.5) -> dict:
    """The pion mass from the correlator histories ``C[chain, time, T]``: a folded, uncorrelated
    cosh fit (:func:`lattice_ml.stats.fit_cosh_mass`) over the plateau range of
    :func:`lattice_ml.stats.choose_fit_range` (chosen once from the data), its error from the
    Γ-method with the whole fit as a derived quantity of the T time slices. The entry carries
    ``fit_range`` [t_min, t_max]. When no range or fit exists (a correlator without signal, or
    no effective-mass plateau within the errors) the entry is ``{"unavailable": reason}``, the
    reason in words (e.g. choose_fit_range's), so that a summary without a mass says why."""
    from ..stats import choose_fit_range, fit_cosh_mass, folded_errors

    T = C.shape[-1]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", WindowWarning)
        try:
            t_range = choose_fit_range(C)
            sigma = folded_errors(C)
        except ValueError as exc:
            return {"unavailable": f"no fit range for the pion correlator: {exc}"}
    entry = summary_entry([C[..., t] for t in range(T)],
                          f=lambda c: fit_cosh_mass(np.asarray(c), t_range, sigma=sigma).mass, S=S)
    if entry is None:
        return {"unavailable": f"the cosh fit over t = {int(t_range[0])} ... {int(t_range[1])} "
                               "has no solution at the measured means"}
    entry["fit_range"] = [int(t_range[0]), int(t_range[1])]
    if caught and "warning" not in entry:
        entry["warning"] = "fit range and weights: " + str(caught[0].message)
    return entry


# ------------------------------------------------------------------------------------------
# [measure]: gauge observables every measure.every measurements
# ------------------------------------------------------------------------------------------
MEASURE_PREFIX = "measure."
"""History names of the ``[measure]`` observables start with this (their own, shorter time axis)."""


def gauge_measurements(config: dict) -> Callable | None:
    """``U -> {name: [batch]}`` of the ``[measure]`` table, or ``None`` when nothing is asked.

    ``clover_charge``: Q (clover, D = 4); ``wilson_flow``: t²E(t) (clover) and t d(t²E)/dt at
    the flow times ``k · 5 eps`` up to ``flow_t_max``; ``wilson_loops = n``: W(R, T) for
    1 <= R, T <= n."""
    m = config["measure"]
    if not (m["clover_charge"] or m["wilson_flow"] or m["wilson_loops"]):
        return None

    def measure(U) -> dict:
        from ..gauge.wilson_flow import wilson_flow
        from ..gauge.topology import topological_charge_clover

        out = {}
        if m["clover_charge"]:
            out["Q_clover"] = topological_charge_clover(U)
        for R in range(1, m["wilson_loops"] + 1):
            for T in range(1, m["wilson_loops"] + 1):
                out[f"W_{R}_{T}"] = wilson_loop(U, R, T)
        if m["wilson_flow"]:
            res = wilson_flow(U, m["flow_t_max"], m["flow_eps"], measure_every=5, check=False)
            t = host(res.t)
            for i in range(t.size):
                out[f"t2E_{i}"] = res.t2E_clover[:, i]
                out[f"W0_{i}"] = res.W_clover[:, i]
            out["flow_times"] = np.broadcast_to(t, (U.shape[0], t.size))
        return {MEASURE_PREFIX + k: v for k, v in out.items()}

    return measure


def summarize_gauge_measurements(hist: dict, config: dict, lat: Lattice,
                                 S: float = 1.5) -> dict:
    """Summary entries of the ``[measure]`` histories (``measure.*`` names in ``hist``)."""
    from ..gauge.wilson_flow import t0 as t0_of, w0 as w0_of

    h = {k[len(MEASURE_PREFIX):]: v for k, v in hist.items() if k.startswith(MEASURE_PREFIX)}
    obs: dict = {}
    if not h:
        return obs
    if "Q_clover" in h:
        obs["topological_charge_clover"] = summary_entry(h["Q_clover"], S=S)
        obs["topological_susceptibility_clover"] = summary_entry(h["Q_clover"] ** 2 / lat.volume,
                                                                 S=S)
    n = config["measure"]["wilson_loops"]
    loops = {}
    for R in range(1, n + 1):
        for T in range(1, n + 1):
            loops[(R, T)] = h[f"W_{R}_{T}"]
            obs[f"wilson_loop_{R}x{T}"] = summary_entry(h[f"W_{R}_{T}"], S=S)
    for R in range(2, n + 1):
        for T in range(2, n + 1):
            obs[f"creutz_ratio_{R}x{T}"] = summary_entry(
                [loops[(R, T)], loops[(R - 1, T - 1)], loops[(R, T - 1)], loops[(R - 1, T)]],
                f=lambda w: creutz_ratio(*w), S=S)
    if "flow_times" in h:
        t = h["flow_times"][0, 0]
        k = t.size
        t2E = [h[f"t2E_{i}"] for i in range(k)]
        W = [h[f"W0_{i}"] for i in range(k)]
        obs["t0"] = summary_entry(t2E, f=lambda m: float(t0_of(t, np.asarray(m))), S=S)
        obs["w0"] = summary_entry(W, f=lambda m: float(w0_of(t, np.asarray(m))), S=S)
    return {k: v for k, v in obs.items() if v is not None}
