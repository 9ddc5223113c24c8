"""Shared finite-difference check of Lie-algebra forces (imported by several test modules)."""

import numpy as np
from lattice_ml.backend import to_numpy
from lattice_ml.groups import expm_algebra, generators


def worst_fd_deviation(action, U, xp, h=1e-5, sites=None, min_component=0.0):
    """Largest ``|(-2 Re Tr(T_a F_mu(x))) + dS/ds| / (1 + |dS/ds|)`` over one link of every
    direction and every generator T_a, with ``dS/ds`` the central difference of
    ``S[exp(s T_a) U_mu(x)]`` at s = 0, for the first configuration of the batch. Every component
    must have ``|dS/ds| > min_component`` (so the check is not trivially passed). ``sites`` (one
    per direction) default to reproducible random sites."""
    D = U.shape[1]
    shape = tuple(U.shape[2:2 + D])
    N = U.shape[-1]
    F = to_numpy(action.force(U))
    T = to_numpy(generators(N, xp, dtype=xp.complex128))
    host = to_numpy(U)
    if sites is None:
        sites = [tuple(np.random.default_rng(mu).integers(0, L) for L in shape) for mu in range(D)]
    worst = 0.0
    for mu, x in zip(range(D), sites):
        idx = (0, mu, *x)
        for a in range(T.shape[0]):
            vals = []
            for s in (h, -h):
                V = host.copy()
                V[idx] = to_numpy(expm_algebra(xp.asarray(s * T[a]))) @ host[idx]
                vals.append(to_numpy(action.action(xp.asarray(V)))[0])
            dS = (vals[0] - vals[1]) / (2 * h)
            assert abs(dS) > min_component, (mu, x, a, dS)
            coord = -2 * np.trace(T[a] @ F[idx]).real
            worst = max(worst, abs(coord + dS) / (1 + abs(dS)))
    return worst


def assert_force_matches_fd(action, U, xp, h=1e-5, rel=1e-7, sites=None):
    """Assert :func:`worst_fd_deviation` ``< rel``."""
    worst = worst_fd_deviation(action, U, xp, h=h, sites=sites)
    assert worst < rel, worst
