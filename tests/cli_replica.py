"""The run loop of ``lattice-ml run`` written again with library calls only (imported by the CLI
physics tests): a CLI run and this replica, given the same seed and the same sampler built by
hand, must give bit-identical histories. The replica follows the documented schedule (one
random stream per chain from ``run.seed``; the initial field drawn first; ``n_therm`` unmeasured
updates; reunitarisation every ``run.reunitarize_every`` updates; measurements after every
measured update, drawing from the same streams) and knows nothing of ``lattice_ml.cli``.
Runs compared with it set ``sampler.adapt_steps = false`` (the step-count adaptation is CLI
logic, tested in tests/test_cli_dependable.py)."""

from __future__ import annotations

import numpy as np

from lattice_ml.backend import RandomStreams, namespace, namespace_by_name, to_numpy
from lattice_ml.groups import haar_random, identity_like, reunitarize


def cold_links(D, shape, N):
    """``rng -> unit links``, after drawing the Haar field a hot start would use."""
    return lambda rng: identity_like(haar_random(rng, (D, *shape), N))


def library_history(sampler, measure, initial, *, seed, n_chains, n_therm, n_samples,
                    backend="numpy", dtype="float64", reunitarize_every=0):
    """``{name: [chain, time, ...] float64 host array}`` of ``measure(field, rng)`` after each
    measured update, plus ``accepted``/``delta_h`` of Metropolis samplers."""
    xp = namespace_by_name(backend)
    rng = RandomStreams(seed, n_chains, xp, dtype=dtype)
    field = initial(rng)
    hist: dict[str, list] = {}
    for k in range(n_therm + n_samples):
        field, info = sampler.step(field, rng)
        if reunitarize_every and (k + 1) % reunitarize_every == 0:
            field = reunitarize(field)
        if k < n_therm:
            continue
        if getattr(info, "accepted", None) is not None:
            hist.setdefault("accepted", []).append(to_numpy(info.accepted).astype(np.float64))
            hist.setdefault("delta_h", []).append(to_numpy(info.delta_h).astype(np.float64))
        for key, val in measure(field, rng).items():
            hist.setdefault(key, []).append(to_numpy(val).astype(np.float64))
    return {k: np.moveaxis(np.asarray(v), 0, 1) for k, v in hist.items()}


def assert_same_histories(cli_hist, replica: dict) -> None:
    """Every replica history equals the CLI's bit for bit."""
    for key, val in replica.items():
        np.testing.assert_array_equal(cli_hist[key], val, err_msg=key)


def gauge_measure(two_d_u1):
    """The CLI's gauge measurements (plaquette, |Re Polyakov loop|, 2D U(1) geometric charge)."""
    from lattice_ml.gauge.observables import (average_plaquette, polyakov_loop,
                                             topological_charge_2d)

    def measure(U, rng):
        xp = namespace(U)
        out = {"plaquette": average_plaquette(U),
               "polyakov_loop": xp.abs(xp.real(polyakov_loop(U)))}
        if two_d_u1:
            out["topological_charge"] = topological_charge_2d(U)
        return out
    return measure


def schwinger_replica(fermions, beta, mass, kind, n_sources, fine, n_steps, *, seed, n_chains,
                      n_therm, n_samples, shape=(4, 4), tol=1e-10):
    """The library's pseudofermion HMC of the Schwinger model, built by hand (fermion forces
    outer, the gauge force inner), with the CLI's measurements (plaquette, Polyakov loop,
    geometric charge, stochastic condensate, pion correlator) drawn from the same streams."""
    from lattice_ml.fermions import (StaggeredDirac, WilsonDirac, chiral_condensate,
                                     pion_correlator)
    from lattice_ml.gauge import GaugeAction
    from lattice_ml.samplers import Level, LieGroupSpace, PseudofermionHMC
    levels = [Level(list(fermions), n_steps, "omelyan"),
              Level([GaugeAction(beta, 1, "wilson")], fine, "omelyan")]
    sampler = PseudofermionHMC(levels, LieGroupSpace(1), tau=1.0, tau_jitter=0.1)
    gauge = gauge_measure(True)

    def measure(U, rng):
        out = gauge(U, rng)
        D = (WilsonDirac(U, mass, check=False) if kind == "wilson"
             else StaggeredDirac(U, mass, check=False))
        out["chiral_condensate"] = chiral_condensate(D, rng, n_sources, tol=tol)
        out["pion_correlator"] = pion_correlator(D, tol=tol)
        return out
    return library_history(sampler, measure, cold_links(2, shape, 1), seed=seed,
                           n_chains=n_chains, n_therm=n_therm, n_samples=n_samples,
                           reunitarize_every=10)
