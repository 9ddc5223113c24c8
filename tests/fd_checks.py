"""Shared finite-difference checks of Lie-algebra forces (imported by several test modules): one
link per direction along every generator (:func:`worst_fd_deviation`), and every link at once
along a random algebra direction with a relative metric (:func:`random_direction_deviation`)."""

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


def random_direction_deviation(action, U, xp, h=1e-4, seed=0):
    """Relative deviation of the force from a central difference along one random direction
    that moves every link, per configuration; returns the largest over the batch.

    ``X`` is a random Lie-algebra field on every link, ``X = sum_a x_a T_a`` with ``x_a``
    standard normal (host NumPy, ``seed``). With the pairing ``<X, F> = -2 Re sum_links Tr(X F)``
    (``= sum x_a f_a``, since ``Tr(T_a T_b) = -delta_ab / 2``), the force ``F = -grad S``
    predicts the directional derivative ``dS/ds [exp(s X) U] |_0 = -<X, F>``; the central
    difference ``(S[exp(hX) U] - S[exp(-hX) U]) / (2h)`` (two action evaluations) approximates it
    with a truncation error ``h^2 S'''/6`` and a round-off error ``~ eps |S| / h``. The returned
    metric is ``|fd - predicted| / |predicted|``: with ``h = 1e-4`` it is ``~ 3e-8`` for the
    actions tested here (it falls as ``h^2``: their third directional derivative is of the size
    of the first), while a force that misses or mis-weights a term is off by that term's share
    of ``dS/ds``. ``|predicted|`` is asserted to be nonzero."""
    F = to_numpy(action.force(U))
    N = U.shape[-1]
    T = to_numpy(generators(N, xp, dtype=xp.complex128))
    c = np.random.default_rng(seed).standard_normal((*U.shape[:-2], T.shape[0]))
    X = np.einsum("...a,aij->...ij", c, T)
    pairing = -2 * np.einsum("...ij,...ji->...", X, F).reshape(U.shape[0], -1).sum(1).real
    predicted = -pairing
    vals = []
    for s in (h, -h):
        V = to_numpy(expm_algebra(xp.asarray(s * X))) @ to_numpy(U)
        vals.append(to_numpy(action.action(xp.asarray(V))))
    fd = (vals[0] - vals[1]) / (2 * h)
    assert np.all(np.abs(predicted) > 0), predicted
    return float(np.max(np.abs(fd - predicted) / np.abs(predicted)))


def assert_force_matches_random_direction(action, U, xp, h=1e-4, rel=1e-6, seed=0):
    """Assert :func:`random_direction_deviation` ``< rel`` (default: 30 times the truncation
    error at ``h = 1e-4`` of its docstring)."""
    worst = random_direction_deviation(action, U, xp, h=h, seed=seed)
    assert worst < rel, worst


def complex_direction_deviation(cost, params, grads, h=1e-5, seed=0):
    """Relative deviation of hand-written gradients of a real ``cost`` of complex arrays from a
    central difference along one random complex direction that moves **every entry of every
    array** at once (all weights, all sites).

    ``params`` and ``grads`` are lists of host complex arrays of equal shapes; the gradient
    convention is ``dC/dRe z + i dC/dIm z``, so the directional derivative along ``dz`` is
    ``Re sum conj(g) dz``. ``cost(list_of_host_arrays) -> float``. The metric is
    ``|fd - predicted| / |predicted|`` (``|predicted| > 0`` asserted): the central difference's
    truncation error is ``h^2 C'''/6`` and its round-off ``~ eps |C| / h``, so in float64 with
    ``h = 1e-5`` a correct gradient gives ``<~ 1e-8``, a missing or mis-weighted term its share
    of the derivative."""
    rng = np.random.default_rng(seed)
    dirs = [(rng.standard_normal(p.shape) + 1j * rng.standard_normal(p.shape)) / np.sqrt(2)
            for p in params]
    predicted = sum(float(np.sum(np.conj(g) * d).real) for g, d in zip(grads, dirs))
    plus = cost([p + h * d for p, d in zip(params, dirs)])
    minus = cost([p - h * d for p, d in zip(params, dirs)])
    fd = (plus - minus) / (2 * h)
    assert abs(predicted) > 0, predicted
    return abs(fd - predicted) / abs(predicted)
