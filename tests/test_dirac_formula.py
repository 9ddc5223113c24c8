"""The Wilson(-clover) and staggered operators against dense matrices written here from the
formulas of docs/fermions.md, independently of the library (own site loops, γ matrices typed in
from the documented bases, own clover leaves, own η phases and time-boundary signs), on Haar-random
gauge backgrounds: 2D U(1) (the Schwinger model) and SU(2), 4D SU(2) and SU(3).

    D_W ψ(x) = (m + D) ψ(x) − ½ Σ_μ [(1 − γ_μ) U_μ(x) ψ(x+μ̂) + (1 + γ_μ) U_μ(x−μ̂)† ψ(x−μ̂)]
               + c_sw (i/4) Σ_{μ,ν} σ_μν F_μν(x) ψ(x),   F_μν = (Q_μν − Q_μν†)/8,
    D_st χ(x) = m χ(x) + ½ Σ_μ η_μ(x) [U_μ(x) χ(x+μ̂) − U_μ(x−μ̂)† χ(x−μ̂)],
    η_μ(x) = (−1)^(x_0 + … + x_{μ−1}),

time (direction 0) antiperiodic: a hop across the time boundary carries −1."""

import itertools

import numpy as np
import pytest

from lattice_ml.backend import RandomStreams, namespace_by_name, to_numpy
from lattice_ml.dispatch import kernel_mode
from lattice_ml.fermions import StaggeredDirac, WilsonDirac
from lattice_ml.groups import haar_random

NP = namespace_by_name("numpy")
I = 1j
GAMMA = {
    2: np.array([[[0, 1], [1, 0]], [[0, -I], [I, 0]]]),
    4: np.array([[[0, 0, 1, 0], [0, 0, 0, 1], [1, 0, 0, 0], [0, 1, 0, 0]],
                 [[0, 0, 0, I], [0, 0, I, 0], [0, -I, 0, 0], [-I, 0, 0, 0]],
                 [[0, 0, 0, -1], [0, 0, 1, 0], [0, 1, 0, 0], [-1, 0, 0, 0]],
                 [[0, 0, I, 0], [0, 0, 0, -I], [-I, 0, 0, 0], [0, I, 0, 0]]]),
}


def links(N, shape, seed):
    U = haar_random(RandomStreams(seed, 1, NP), (len(shape), *shape), N)
    return to_numpy(U)[0]                               # [D, *sites, N, N]


def hop(x, mu, step, shape):
    """The neighbour x ± mu and the boundary sign of a fermion hop (antiperiodic in time)."""
    y = list(x)
    y[mu] = (x[mu] + step) % shape[mu]
    wraps = (x[mu] + step) != y[mu]
    return tuple(y), (-1.0 if wraps and mu == 0 else 1.0)


def plaquette_leaves(U, x, mu, nu, shape):
    """Sum of the four plaquette leaves in the (mu, nu) plane starting and ending at x."""
    def u(y, d):        # U_d(y), periodic
        return U[(d, *[c % L for c, L in zip(y, shape)])]

    def shift(y, d, k):
        z = list(y)
        z[d] += k
        return tuple(z)

    dag = lambda M: M.conj().T  # noqa: E731
    xm, xn = shift(x, mu, -1), shift(x, nu, -1)
    xmn = shift(xm, nu, -1)
    return (u(x, mu) @ u(shift(x, mu, 1), nu) @ dag(u(shift(x, nu, 1), mu)) @ dag(u(x, nu))
            + u(x, nu) @ dag(u(shift(xm, nu, 1), mu)) @ dag(u(xm, nu)) @ u(xm, mu)
            + dag(u(xm, mu)) @ dag(u(xmn, nu)) @ u(xmn, mu) @ u(shift(x, nu, -1), nu)
            + dag(u(xn, nu)) @ u(xn, mu) @ u(shift(xn, mu, 1), nu) @ dag(u(x, mu)))


def wilson_dense(U, mass, csw=0.0):
    D = U.shape[0]
    shape, N = U.shape[1:1 + D], U.shape[-1]
    g = GAMMA[D]
    s = g.shape[-1]
    one = np.eye(s)
    sites = list(itertools.product(*[range(L) for L in shape]))
    index = {x: i for i, x in enumerate(sites)}
    M = np.zeros((len(sites), s, N, len(sites), s, N), dtype=complex)
    sigma = {(m, n): 0.5 * I * (g[m] @ g[n] - g[n] @ g[m]) for m in range(D) for n in range(D)}
    for x in sites:
        i = index[x]
        for a in range(s):
            M[i, a, :, i, a, :] += (mass + D) * np.eye(N)
        for mu in range(D):
            y, sign = hop(x, mu, +1, shape)
            M[index[x], :, :, index[y]] += -0.5 * sign * np.einsum(
                "st,ab->satb", one - g[mu], U[(mu, *x)])
            y, sign = hop(x, mu, -1, shape)
            M[index[x], :, :, index[y]] += -0.5 * sign * np.einsum(
                "st,ab->satb", one + g[mu], U[(mu, *y)].conj().T)
        if csw:
            for mu in range(D):
                for nu in range(D):
                    if mu == nu:
                        continue
                    Q = plaquette_leaves(U, x, mu, nu, shape)
                    F = (Q - Q.conj().T) / 8
                    M[i, :, :, i] += csw * I / 4 * np.einsum("st,ab->satb", sigma[(mu, nu)], F)
    n = len(sites) * s * N
    return M.reshape(n, n)


def staggered_dense(U, mass):
    D = U.shape[0]
    shape, N = U.shape[1:1 + D], U.shape[-1]
    sites = list(itertools.product(*[range(L) for L in shape]))
    index = {x: i for i, x in enumerate(sites)}
    M = np.zeros((len(sites), N, len(sites), N), dtype=complex)
    for x in sites:
        M[index[x], :, index[x]] += mass * np.eye(N)
        for mu in range(D):
            eta = (-1.0) ** sum(x[:mu])
            y, sign = hop(x, mu, +1, shape)
            M[index[x], :, index[y]] += 0.5 * eta * sign * U[(mu, *x)]
            y, sign = hop(x, mu, -1, shape)
            M[index[x], :, index[y]] -= 0.5 * eta * sign * U[(mu, *y)].conj().T
    n = len(sites) * N
    return M.reshape(n, n)


def dense_from(apply, shape, s, N):
    n = int(np.prod(shape)) * s * N
    cols = []
    for k in range(n):
        e = np.zeros((1, *shape, s, N), dtype=complex)
        e.flat[k] = 1.0
        cols.append(to_numpy(apply(NP.asarray(e))).reshape(n))
    return np.stack(cols, axis=-1)


CASES = [(1, (4, 4)), (2, (4, 4)), (2, (2, 2, 2, 2)), (3, (2, 2, 2, 2))]


@pytest.mark.parametrize("mode", ["auto", "off"])       # the Numba kernels and the reference
@pytest.mark.parametrize("csw", [0.0, 1.3])
@pytest.mark.parametrize("N,shape", CASES)
def test_wilson_operator_is_the_formula(N, shape, csw, mode):
    U = links(N, shape, seed=11 + N)
    W = WilsonDirac(NP.asarray(U[None]), 0.1, csw=csw)
    ref = wilson_dense(U, 0.1, csw)
    with kernel_mode(mode):
        got = dense_from(W.apply, shape, GAMMA[len(shape)].shape[-1], N)
    assert np.abs(got - ref).max() < 1e-13 * np.abs(ref).max()
    assert np.abs(ref - ref.conj().T).max() > 0.1          # not trivially hermitian/empty


@pytest.mark.parametrize("mode", ["auto", "off"])
@pytest.mark.parametrize("N,shape", CASES)
def test_staggered_operator_is_the_formula(N, shape, mode):
    U = links(N, shape, seed=21 + N)
    S = StaggeredDirac(NP.asarray(U[None]), 0.1)
    ref = staggered_dense(U, 0.1)
    with kernel_mode(mode):
        got = dense_from(S.apply, shape, 1, N)
    assert np.abs(got - ref).max() < 1e-13 * np.abs(ref).max()
