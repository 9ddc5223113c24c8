"""Shared finite-difference check of Lie-algebra forces (imported by several test modules)."""

import numpy as np
import pytest

from lattice_ml.backend import to_numpy
from lattice_ml.groups import expm_algebra, generators


def assert_force_matches_fd(action, U, xp, h=1e-5, rel=1e-7, sites=None):
    """For one link of every direction and every generator T_a, check
    ``-2 Re Tr(T_a F_mu(x)) = -d/ds S[exp(s T_a) U_mu(x)]`` at s = 0 (central differences) for the
    first configuration of the batch. ``sites`` (one per direction) default to reproducible
    random sites."""
    D = U.shape[1]
    shape = tuple(U.shape[2:2 + D])
    N = U.shape[-1]
    F = to_numpy(action.force(U))
    T = to_numpy(generators(N, xp, dtype=xp.complex128))
    host = to_numpy(U)
    if sites is None:
        sites = [tuple(np.random.default_rng(mu).integers(0, L) for L in shape) for mu in range(D)]
    for mu, x in zip(range(D), sites):
        idx = (0, mu, *x)
        for a in range(T.shape[0]):
            vals = []
            for s in (h, -h):
                V = host.copy()
                V[idx] = to_numpy(expm_algebra(xp.asarray(s * T[a]))) @ host[idx]
                vals.append(to_numpy(action.action(xp.asarray(V)))[0])
            dS = (vals[0] - vals[1]) / (2 * h)
            coord = -2 * np.trace(T[a] @ F[idx]).real
            assert coord == pytest.approx(-dS, abs=rel * (1 + abs(dS))), (mu, x, a)
