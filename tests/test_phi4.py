"""φ⁴ actions, forces and observables against independent (loop / dense-matrix) computations."""

import itertools

import numpy as np
import pytest

from lattice_ml.backend import RandomStreams, namespace_by_name, to_numpy
from lattice_ml.lattice import Lattice
from lattice_ml.scalar import (Phi4Action, abs_magnetization, free_propagator, magnetization,
                               momentum_space_propagator, phi2, two_point_function)

FORMS = [("standard", dict(m2=-0.7, lam=0.9)), ("hopping", dict(beta=0.3, lam=1.3))]


def naive_action(phi, shape, form, m2=None, lam=0.0, beta=None):
    """Site loop over the definitions of SPEC section 3, for one configuration."""
    S = 0.0
    for x in itertools.product(*map(range, shape)):
        f = phi[x]
        for mu in range(len(shape)):
            y = list(x)
            y[mu] = (y[mu] + 1) % shape[mu]
            g = phi[tuple(y)]
            S += (g - f) ** 2 if form == "standard" else -beta * g * f
        S += m2 * f * f + lam * f ** 4 if form == "standard" else f * f + lam * (f * f - 1) ** 2
    return S


@pytest.mark.parametrize("form,couplings", FORMS)
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 4), (2, 2, 3, 2)])
def test_action_matches_site_loop(xp, form, couplings, shape):
    lat = Lattice(shape)
    phi = RandomStreams(1, 2, xp).normal(shape)
    S = to_numpy(Phi4Action(lat, form, **couplings).action(phi))
    host = to_numpy(phi)
    for b in range(2):
        assert S[b] == pytest.approx(naive_action(host[b], shape, form, **couplings), rel=1e-12)


@pytest.mark.parametrize("form,couplings", FORMS)
def test_parts_add_up(xp, form, couplings):
    lat = Lattice((4, 6))
    phi = RandomStreams(2, 3, xp).normal(lat.shape)
    full = Phi4Action(lat, form, **couplings)
    for method in ("action", "force"):
        whole = to_numpy(getattr(full, method)(phi))
        parts = sum(to_numpy(getattr(full.part(t), method)(phi)) for t in ("kinetic", "local"))
        np.testing.assert_allclose(parts, whole, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("form,couplings", FORMS)
@pytest.mark.parametrize("terms", ["all", "kinetic", "local"])
def test_force_is_minus_gradient(xp_cpu, form, couplings, terms):
    """F = -dS/dphi against central differences at every site (float64)."""
    xp = xp_cpu
    lat = Lattice((4, 3, 2))
    action = Phi4Action(lat, form, terms=terms, **couplings)
    phi = to_numpy(RandomStreams(3, 2, xp).normal(lat.shape))
    force = to_numpy(action.force(xp.asarray(phi)))
    h = 1e-5
    fd = np.zeros_like(phi)
    for idx in itertools.product(*map(range, lat.shape)):
        e = np.zeros_like(phi)
        e[(slice(None), *idx)] = h
        fd[(slice(None), *idx)] = -(to_numpy(action.action(xp.asarray(phi + e)))
                                    - to_numpy(action.action(xp.asarray(phi - e)))) / (2 * h)
    np.testing.assert_allclose(force, fd, rtol=1e-7, atol=1e-7)


def hessian(action, lat):
    """Dense Hessian of a quadratic action from evaluations on basis vectors."""
    xp = namespace_by_name("numpy")
    V = lat.volume
    basis = np.eye(V).reshape((V, *lat.shape))
    S1 = to_numpy(action.action(xp.asarray(basis)))
    pairs = (basis[:, None] + basis[None, :]).reshape((V * V, *lat.shape))
    S2 = to_numpy(action.action(xp.asarray(pairs))).reshape(V, V)
    # S(e_i + e_j) - S(e_i) - S(e_j) = 2 A_ij for S = phi^T A phi, also for i = j
    return S2 - S1[:, None] - S1[None, :]


@pytest.mark.parametrize("form,couplings", [("standard", dict(m2=0.5)), ("hopping", dict(beta=0.2))])
@pytest.mark.parametrize("shape", [(4, 6), (4, 2, 2)])
def test_free_propagator_normalisation(form, couplings, shape):
    """G(p) = 1/(2K(p)): the covariance <phi phi^T> = H^{-1} of the Gaussian exp(-S), with the
    Hessian H of the action computed independently from the action itself."""
    lat = Lattice(shape)
    xp = namespace_by_name("numpy")
    action = Phi4Action(lat, form, lam=0.0, **couplings)
    H = hessian(action, lat)
    cov = np.linalg.inv(H)
    G = free_propagator(lat, xp, form, **couplings)
    # real-space propagator from G(p) by FFT, compared with the covariance column of site 0
    Gx = np.real(np.fft.ifftn(to_numpy(G)))
    np.testing.assert_allclose(cov[:, 0].reshape(shape), Gx, rtol=1e-10, atol=1e-12)


def test_observables_match_definitions(xp):
    lat = Lattice((6, 4))
    phi = RandomStreams(5, 3, xp).normal(lat.shape)
    host = to_numpy(phi)
    V = lat.volume
    np.testing.assert_allclose(to_numpy(magnetization(phi)), host.sum(axis=(1, 2)) / V)
    np.testing.assert_allclose(to_numpy(abs_magnetization(phi)), np.abs(host.sum(axis=(1, 2))) / V)
    np.testing.assert_allclose(to_numpy(phi2(phi)), (host ** 2).mean(axis=(1, 2)))
    slices = host.sum(axis=2)
    C = np.array([[sum(slices[b, (t0 + t) % 6] * slices[b, t0] for t0 in range(6)) / V
                   for t in range(6)] for b in range(3)])
    np.testing.assert_allclose(to_numpy(two_point_function(phi)), C, rtol=1e-12)
    g0, g1 = momentum_space_propagator(phi)
    ft = np.fft.fftn(host, axes=(1, 2))
    np.testing.assert_allclose(to_numpy(g0), np.abs(ft[:, 0, 0]) ** 2 / V, rtol=1e-12)
    # only axis 0 has the extent of axis 0 on a 6x4 lattice
    np.testing.assert_allclose(to_numpy(g1), np.abs(ft[:, 1, 0]) ** 2 / V, rtol=1e-12)


def test_bad_parameters_are_named():
    lat = Lattice((4, 4))
    with pytest.raises(ValueError, match="form"):
        Phi4Action(lat, "quartic", m2=1.0)
    with pytest.raises(ValueError, match="beta"):
        Phi4Action(lat, "standard", m2=1.0, beta=0.1)
    with pytest.raises(ValueError, match="lam"):
        Phi4Action(lat, "hopping", beta=0.1, lam=-1.0)
    with pytest.raises(ValueError, match="shape"):
        Phi4Action(lat, "hopping", beta=0.1).action(np.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match="unstable"):
        free_propagator(lat, namespace_by_name("numpy"), "hopping", beta=0.6)
