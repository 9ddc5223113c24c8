"""Flow Metropolis alternated with HMC (lattice_ml.samplers.flow_mixture): exact 2D U(1)
plaquette and chi_t on a small torus within 4 sigma, the same chains as flow Metropolis without
trajectories, reproducibility (NumPy and array-api-strict), argument checks."""

import sys
from pathlib import Path

import numpy as np
import pytest

from lattice_ml.backend import RandomStreams, namespace_by_name, to_numpy
from lattice_ml.flows.u1_coupling import make_u1_coupling_flow
from lattice_ml.gauge import GaugeAction
from lattice_ml.gauge.observables import average_plaquette, topological_charge_2d
from lattice_ml.samplers.flow_mcmc import FlowMetropolis
from lattice_ml.samplers.flow_mixture import FlowHMCMixture
from lattice_ml.samplers.hmc import HMC
from lattice_ml.samplers.integrators import Level
from lattice_ml.samplers.spaces import LieGroupSpace
from lattice_ml.stats import gamma_method

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gauge_exact import u1_plaquette, u1_topological_susceptibility  # noqa: E402

OBS = {"P": average_plaquette, "Q": topological_charge_2d}


@pytest.fixture(params=["numpy", "array_api_strict"])
def xp(request):
    if request.param == "array_api_strict":
        pytest.importorskip("array_api_strict")
    return namespace_by_name(request.param)


def mixture(xp, beta, L=4, n_hmc=1, n_layers=2, seed=1):
    flow = make_u1_coupling_flow((L, L), xp, n_layers=n_layers, hidden=(4,), n_mix=2,
                                 seed=seed)
    action = GaugeAction(beta, 1)
    hmc = HMC([Level([action], 4, "omelyan")], LieGroupSpace(1), tau=0.5, tau_jitter=0.2)
    return flow, action, FlowHMCMixture(flow, action, hmc, n_hmc)


def history(hist, name, discard=0):
    return np.stack([np.asarray(to_numpy(a), dtype=np.float64) for a in hist[name]],
                    axis=1)[:, discard:]


def test_mixture_reproduces_exact_2d_u1():
    """4x4, beta = 2, an untrained two-layer flow (a poor proposal: the flow steps alone
    would mix slowly) and one HMC trajectory per update, 32 chains x 120 updates (first 10
    discarded): plaquette and chi_t = <Q^2>/V against the character expansion within 4 sigma."""
    xp = namespace_by_name("numpy")
    beta, L = 2.0, 4
    V = L * L
    _, _, sampler = mixture(xp, beta, L)
    _, hist = sampler.run(RandomStreams(4, 32, xp), 120, OBS)
    summ = sampler.summary(hist)
    assert 0.0 < summ["acceptance"] < 0.5 and summ["hmc_acceptance"] > 0.8, summ
    P, Q = history(hist, "P", 10), history(hist, "Q", 10)
    np.testing.assert_allclose(Q, np.round(Q), atol=1e-10)
    rp, rq = gamma_method(P), gamma_method(np.round(Q) ** 2 / V)
    exact_p, exact_chi = u1_plaquette(beta, V), u1_topological_susceptibility(beta, V)
    assert abs(rp.value - exact_p) < 4 * rp.error, (rp.value, rp.error, exact_p)
    assert abs(rq.value - exact_chi) < 4 * rq.error, (rq.value, rq.error, exact_chi)
    assert rp.error < 0.01 and rq.error < 0.006, (rp.error, rq.error)
    assert rp.tau_int < 10 and rq.tau_int < 10      # chains long against tau_int


def test_no_trajectories_is_flow_metropolis(xp):
    """``n_hmc = 0``: the same proposals and decisions as FlowMetropolis from the same streams
    (the mixture recomputes log w, FlowMetropolis carries it: equal to round-off)."""
    flow, action, sampler = mixture(xp, 1.0, n_hmc=0)
    _, h_mix = sampler.run(RandomStreams(7, 8, xp), 6, OBS)
    _, h_mh = FlowMetropolis(flow, action).run(RandomStreams(7, 8, xp), 6, OBS)
    np.testing.assert_array_equal(history(h_mix, "accepted"), history(h_mh, "accepted"))
    np.testing.assert_allclose(history(h_mix, "P"), history(h_mh, "P"), atol=1e-12)
    assert h_mix["hmc_accepted"] == [] and np.isnan(sampler.summary(h_mix)["hmc_acceptance"])


def test_reproducible_and_moves_by_hmc(xp):
    """Same streams, same chains; with one trajectory the configurations differ from the
    flow-only chains (HMC moved them)."""
    _, _, sampler = mixture(xp, 1.0, n_hmc=1)
    runs = [sampler.run(RandomStreams(9, 4, xp), 3, OBS)[1] for _ in range(2)]
    np.testing.assert_array_equal(history(runs[0], "P"), history(runs[1], "P"))
    np.testing.assert_array_equal(history(runs[0], "accepted"), history(runs[1], "accepted"))
    _, _, flow_only = mixture(xp, 1.0, n_hmc=0)
    h0 = flow_only.run(RandomStreams(9, 4, xp), 3, OBS)[1]
    assert np.all(history(runs[0], "P") != history(h0, "P"))
    assert len(runs[0]["hmc_accepted"]) == 3


def test_arguments():
    xp = namespace_by_name("numpy")
    flow, action, sampler = mixture(xp, 1.0)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="n_hmc"):
            FlowHMCMixture(flow, action, sampler.hmc, bad)
    with pytest.raises(ValueError, match="n_steps"):
        sampler.run(RandomStreams(0, 2, xp), 0, OBS)


def test_exported_from_samplers():
    """``FlowHMCMixture`` and ``MixtureStep`` are part of the public ``lattice_ml.samplers`` API."""
    import lattice_ml.samplers as samplers
    from lattice_ml.samplers import flow_mixture

    assert {"FlowHMCMixture", "MixtureStep"} <= set(samplers.__all__)
    assert samplers.FlowHMCMixture is flow_mixture.FlowHMCMixture
    assert samplers.MixtureStep is flow_mixture.MixtureStep
