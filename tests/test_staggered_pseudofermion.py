"""Unrooted staggered pseudofermions (det D_st = det A_ee, even/odd CG): the heatbath has the
covariance A_ee, the action is phi^dag A_ee^{-1} phi against dense matrices, the force matches
finite differences along every generator and in a random direction, gauge invariance, and MD
reversibility. The exact-determinant check of the sampled distribution is in
tests/test_rhmc.py (test_unrooted_staggered_hmc_agrees_with_reweighted_quenched)."""

import sys
from pathlib import Path

import numpy as np
import pytest

from lattice_ml.backend import RandomStreams, namespace_by_name, to_numpy
from lattice_ml.fermions import StaggeredDirac, StaggeredPseudofermionAction
from lattice_ml.fermions.wilson import colour_mul
from lattice_ml.gauge import GaugeAction
from lattice_ml.groups import gauge_transform, random_gauge_transformation, random_near_identity
from lattice_ml.samplers import Level, LieGroupSpace, integrate

sys.path.insert(0, str(Path(__file__).parent))
from fd_checks import random_direction_deviation, worst_fd_deviation  # noqa: E402


def _dense(op, sites, N, batch=1):
    """The matrix of the linear map ``op`` on staggered fields ``[batch, *sites, 1, N]``."""
    xp = namespace_by_name("numpy")
    n = int(np.prod(sites)) * N
    cols = []
    for k in range(n):
        e = np.zeros((batch, *sites, 1, N), dtype=np.complex128)
        e.reshape(batch, n)[:, k] = 1.0
        cols.append(to_numpy(op(xp.asarray(e))).reshape(batch, n))
    return np.stack(cols, axis=-1)


@pytest.mark.parametrize("N,shape", [(1, (4, 4)), (2, (2, 2, 2, 4))])
def test_heatbath_covariance_and_action_against_dense_matrices(N, shape):
    """phi_e = (D^dag eta)_e is linear in eta with matrix B; B B^dag is the even block of
    D^dag D, and its determinant is det D (up to the sign D^dag D = A_ee (+) A_oo gives)."""
    xp = namespace_by_name("numpy")
    rng = RandomStreams(2, 1, xp)
    U = random_near_identity(rng, (len(shape), *shape), N, 0.7)
    act = StaggeredPseudofermionAction(0.3, N, tol=1e-14)
    S = act.operator(U)
    B = _dense(lambda eta: S.even(S.apply_dagger(eta)), shape, N)[0]
    A = _dense(S.normal, shape, N)[0]
    even = np.abs(to_numpy(S.even(xp.ones((1, *shape, 1, N), dtype=xp.complex128)))).ravel() > 0
    A_ee = A[np.ix_(even, even)]
    np.testing.assert_allclose((B @ B.conj().T)[np.ix_(even, even)], A_ee, atol=1e-12)
    Dm = _dense(S.apply, shape, N)[0]
    _, logdet_D = np.linalg.slogdet(Dm)
    _, logdet_ee = np.linalg.slogdet(A_ee)
    assert abs(logdet_D - logdet_ee) < 1e-9          # det D_st = det A_ee: no root
    phi = act.refresh(U, rng)
    assert np.all(to_numpy(S.odd(phi)) == 0)
    np.testing.assert_array_equal(to_numpy(phi), to_numpy(S.even(S.apply_dagger(act.eta))))
    p = to_numpy(phi).ravel()[even]
    want = np.real(p.conj() @ np.linalg.solve(A_ee, p))
    np.testing.assert_allclose(to_numpy(act.action(U)), [want], rtol=1e-11)


@pytest.mark.parametrize("N,shape", [(1, (4, 4)), (2, (4, 4)), (3, (2, 2, 2, 4))])
def test_force_is_minus_derivative(xp_cpu, N, shape):
    if N == 3 and xp_cpu is not namespace_by_name("numpy"):
        pytest.skip("SU(3) 4D: NumPy only (time)")
    rng = RandomStreams(1, 2, xp_cpu)
    U = random_near_identity(rng, (len(shape), *shape), N, 0.5)
    act = StaggeredPseudofermionAction(0.2, N, tol=1e-13)
    act.refresh(U, rng)
    assert worst_fd_deviation(act, U, xp_cpu, h=1e-4, min_component=1e-4) < 1e-8
    assert random_direction_deviation(act, U, xp_cpu) < 1e-6


def test_gauge_invariance_and_reversibility():
    xp = namespace_by_name("numpy")
    rng = RandomStreams(4, 2, xp)
    U = random_near_identity(rng, (4, 2, 2, 2, 4), 2, 0.8)
    act = StaggeredPseudofermionAction(0.3, 2, tol=1e-13)
    phi = act.refresh(U, rng)
    g = random_gauge_transformation(rng, (2, 2, 2, 4), 2)
    s0 = to_numpy(act.action(U))
    act.phi = colour_mul(g, phi)          # phi is a colour vector at each site
    np.testing.assert_allclose(to_numpy(act.action(gauge_transform(U, g))), s0, rtol=1e-11)
    act.phi = phi
    space = LieGroupSpace(2)
    P = space.sample_momenta(U, rng)
    levels = [Level([act], 3, "omelyan"), Level([GaugeAction(2.0, 2)], 2)]
    U1, P1 = integrate(U, P, levels, space, 0.5)
    U2, P2 = integrate(U1, -P1, levels, space, 0.5)
    np.testing.assert_allclose(to_numpy(U2), to_numpy(U), atol=1e-11)
    np.testing.assert_allclose(to_numpy(-P2), to_numpy(P), atol=1e-11)


def test_refusals():
    with pytest.raises(ValueError, match="mass must be > 0"):
        StaggeredPseudofermionAction(0.0, 2)
    act = StaggeredPseudofermionAction(0.1, 2)
    U = random_near_identity(RandomStreams(0, 1, namespace_by_name("numpy")), (2, 4, 4), 2, 0.1)
    with pytest.raises(RuntimeError, match="refresh"):
        act.action(U)
    with pytest.raises(ValueError, match="not 3x3"):
        StaggeredPseudofermionAction(0.1, 3).operator(U)
    assert StaggeredDirac(U, 0.1).mass == 0.1
