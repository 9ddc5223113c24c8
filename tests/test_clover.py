"""Force of the clover term: the bilinear 2 Re(L^dag C R) and the two-flavour Wilson-clover
pseudofermion action against finite differences along every generator (float64), the leaves
against the clover field strength of the operator, and a clover HMC trajectory."""

import numpy as np
import pytest

from lattice_ml.backend import RandomStreams, namespace_by_name, to_numpy
from lattice_ml.fermions import WilsonDirac, WilsonPseudofermionAction, clover_field_strength
from lattice_ml.fermions.clover import (clover_force_matrix, clover_leaves, clover_logdet,
                                        clover_logdet_force_matrix)
from lattice_ml.fermions.solvers import vdot
from lattice_ml.gauge.paths import transport
from lattice_ml.groups import dagger, project_algebra, random_near_identity

from fd_checks import (assert_force_matches_random_direction, random_direction_deviation,
                       worst_fd_deviation)

CASES = [(1, (4, 4)), (2, (4, 4)), (3, (2, 2, 2, 4))]


class CloverBilinear:
    """S(U) = 2 Re(L^dag C(U) R) at fixed L, R; force (1/2) TA(M) with dS/ds = Re Tr(T M)."""

    def __init__(self, L, R, mass, csw):
        self.L, self.R, self.mass, self.csw = L, R, mass, csw

    def _W(self, U):
        return WilsonDirac(U, self.mass, csw=self.csw, check=False)

    def action(self, U):
        W = self._W(U)
        C_R = W.local(self.R) - W.diag * self.R
        return 2.0 * W.xp.real(vdot(self.L, C_R))

    def force(self, U):
        W = self._W(U)
        return 0.5 * project_algebra(clover_force_matrix(W, self.L, self.R))


def _fields(xp, N, shape, seed=3):
    D = len(shape)
    rng = RandomStreams(seed, 1, xp)
    U = random_near_identity(rng, (D, *shape), N, 0.5)
    ns = 2 if D < 4 else 4
    L = rng.complex_normal((*shape, ns, N))
    R = rng.complex_normal((*shape, ns, N))
    return rng, U, L, R


@pytest.mark.parametrize("N,shape", CASES)
def test_clover_bilinear_force_matches_fd(xp_cpu, N, shape):
    if N == 3 and xp_cpu is not namespace_by_name("numpy"):
        pytest.skip("SU(3) 4D: NumPy only (time)")
    _, U, L, R = _fields(xp_cpu, N, shape)
    act = CloverBilinear(L, R, 0.1, 1.3)
    assert worst_fd_deviation(act, U, xp_cpu, h=1e-4, min_component=1e-3) < 1e-8


class OddLogDet:
    """S(U) = sum_{x odd} log|det A(x)| of the clover operator; force (1/2) TA(M)."""

    def __init__(self, mass, csw):
        self.mass, self.csw = mass, csw

    def action(self, U):
        return clover_logdet(WilsonDirac(U, self.mass, csw=self.csw, check=False), 1)

    def force(self, U):
        W = WilsonDirac(U, self.mass, csw=self.csw, check=False)
        return 0.5 * project_algebra(clover_logdet_force_matrix(W, 1))


@pytest.mark.parametrize("N,shape", CASES)
def test_clover_logdet_force_matches_fd(xp_cpu, N, shape):
    if N == 3 and xp_cpu is not namespace_by_name("numpy"):
        pytest.skip("SU(3) 4D: NumPy only (time)")
    _, U, _, _ = _fields(xp_cpu, N, shape, seed=6)
    assert worst_fd_deviation(OddLogDet(0.1, 1.3), U, xp_cpu, h=1e-4, min_component=1e-4) < 1e-8


@pytest.mark.parametrize("N", [1, 2])
def test_even_odd_clover_determinant_identity(N):
    """log|det D| = sum_odd log|det A(x)| + log|det Dhat_ee| (dense matrices), the identity
    behind the extra term of the even/odd clover action."""
    xp = namespace_by_name("numpy")
    _, U, _, _ = _fields(xp, N, (4, 4), seed=8)
    W = WilsonDirac(U, 0.1, csw=1.4)
    n = 16 * 2 * N

    def dense(op, keep):
        cols = []
        for k in keep:
            e = np.zeros((1, 4, 4, 2, N), dtype=np.complex128)
            e.flat[k] = 1.0
            cols.append(to_numpy(op(xp.asarray(e))).reshape(n)[keep])
        return np.stack(cols, axis=-1)

    even = np.flatnonzero(to_numpy(W.even(xp.ones((1, 4, 4, 2, N), dtype=xp.complex128))).ravel())
    full = np.linalg.slogdet(dense(W.apply, np.arange(n)))[1]
    schur = np.linalg.slogdet(dense(W.apply_eo, even))[1]
    odd = float(to_numpy(clover_logdet(W, 1))[0])
    assert abs(full - (odd + schur)) < 1e-10 * abs(full)
    assert abs(odd - 16 * N * np.log(W.diag)) > 1e-3          # the clover does change it


@pytest.mark.parametrize("N,shape", CASES[:2])
@pytest.mark.parametrize("even_odd", [False, True])
def test_wilson_clover_pseudofermion_force_matches_fd(xp_cpu, N, shape, even_odd):
    """The assembly of hopping and clover forces (the clover derivative itself is checked for
    SU(3) in 4D above; a dense-CG FD check there takes minutes)."""
    if N == 2 and xp_cpu is not namespace_by_name("numpy"):
        pytest.skip("array-api-strict: U(1) only (time)")
    rng, U, _, _ = _fields(xp_cpu, N, shape, seed=4)
    act = WilsonPseudofermionAction(0.2, N, csw=1.5, tol=1e-13, even_odd=even_odd)
    act.refresh(U, rng)
    assert worst_fd_deviation(act, U, xp_cpu, h=1e-4, min_component=1e-3) < 1e-8
    # the clover part matters: without it the force differs from the finite differences
    plain = WilsonPseudofermionAction(0.2, N, csw=0.0, tol=1e-13, even_odd=even_odd)
    plain.phi = act.phi
    mixed = type("Mixed", (), {"action": act.action, "force": plain.force})()
    assert worst_fd_deviation(mixed, U, xp_cpu, h=1e-4) > 1e-3


@pytest.mark.parametrize("even_odd", [False, True])
def test_su3_4d_clover_pseudofermion_force_random_direction(even_odd):
    """SU(3) in 4D, the whole Wilson-clover pseudofermion force (hopping + clover, with even/odd
    the -2 sum_odd log|det A| term too) against a central difference along a random algebra
    direction on every link: two action evaluations instead of one CG per link and generator
    (tests/fd_checks.py, relative metric, truncation ~3e-8 at h = 1e-4, tolerance 1e-6)."""
    xp = namespace_by_name("numpy")
    rng = RandomStreams(4, 2, xp)                     # two configurations
    U = random_near_identity(rng, (4, 2, 2, 2, 4), 3, 0.5)
    act = WilsonPseudofermionAction(0.2, 3, csw=1.5, tol=1e-13, even_odd=even_odd)
    act.refresh(U, rng)
    assert_force_matches_random_direction(act, U, xp)
    if even_odd:
        # the log-det term matters at this tolerance: its force left out fails by far
        logdet = OddLogDet(0.2, 1.5)
        without = type("WithoutLogDet", (), {
            "action": act.action,
            "force": lambda self, V: act.force(V) + 2.0 * logdet.force(V)})()
        assert random_direction_deviation(without, U, xp) > 1e-3


def test_leaves_give_the_operators_field_strength():
    xp = namespace_by_name("numpy")
    _, U, _, _ = _fields(xp, 3, (2, 2, 2, 4))
    F = clover_field_strength(U)
    for (mu, nu), Fmn in F.items():
        Q = sum(transport(U, p) for p in clover_leaves(mu, nu))
        np.testing.assert_allclose(to_numpy((Q - dagger(Q)) / 8.0), to_numpy(Fmn), atol=1e-14)


def test_zero_csw_gives_zero_clover_force():
    xp = namespace_by_name("numpy")
    _, U, L, R = _fields(xp, 2, (4, 4))
    M = clover_force_matrix(WilsonDirac(U, 0.1), L, R)
    assert M.shape == U.shape and not np.any(to_numpy(M))


def test_negative_csw_refused():
    with pytest.raises(ValueError, match="csw"):
        WilsonPseudofermionAction(0.1, 2, csw=-1.0)


def test_clover_md_energy_error_scales_as_eps_squared():
    """Omelyan trajectories of gauge + Wilson-clover fermions from fixed fields and momenta:
    |dH| = c2 eps^2 (1 + O(eps^2)) for a consistent force, so halving eps divides it by 4; the
    standard of the other integrator tests: both ratios of n = 8, 16, 32 steps within 4 +- 10%."""
    from lattice_ml.gauge import GaugeAction
    from lattice_ml.samplers import HMC, Level, LieGroupSpace

    xp = namespace_by_name("numpy")
    rng = RandomStreams(7, 4, xp)
    U = random_near_identity(rng, (2, 4, 4), 2, 0.4)
    ferm = WilsonPseudofermionAction(0.1, 2, csw=1.0, tol=1e-13)
    ferm.refresh(U, rng)
    space = LieGroupSpace(2)
    P = space.sample_momenta(U, rng)
    dh = []
    for n in (8, 16, 32):
        hmc = HMC([Level([ferm, GaugeAction(2.0, 2)], n, "omelyan")], space, tau=1.0)
        Un, Pn, _ = hmc.trajectory(U, P)
        dh.append(np.mean(np.abs(to_numpy(hmc.hamiltonian(Un, Pn) - hmc.hamiltonian(U, P)))))
    assert 3.6 < dh[0] / dh[1] < 4.4 and 3.6 < dh[1] / dh[2] < 4.4, dh
