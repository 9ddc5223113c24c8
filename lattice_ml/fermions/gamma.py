"""Euclidean gamma matrices for D = 2, 3, 4, with time = direction 0.

All gamma matrices are hermitian and satisfy ``{gamma_mu, gamma_nu} = 2 delta_mu_nu``.
Index ``mu`` is the lattice direction: ``gamma_0`` is the *time* gamma matrix.

Bases
-----
* **D = 2** (2 spin components, Pauli matrices)::

      gamma_0 = sigma_1,  gamma_1 = sigma_2,  gamma_5 = sigma_3 = -i gamma_0 gamma_1

* **D = 3** (2 spin components): ``gamma_0 = sigma_1, gamma_1 = sigma_2, gamma_2 = sigma_3``.
  There is no gamma_5 in three dimensions with two-component spinors
  (``gamma_0 gamma_1 gamma_2 = i``); :func:`gamma5` raises ``ValueError`` for D = 3.
* **D = 4** (4 spin components): the **DeGrand-Rossi (chiral) basis** of Chroma / QDP++ / QUDA,
  with Chroma's ``gamma_4`` (time) as our ``gamma_0`` and Chroma's ``gamma_1, gamma_2, gamma_3``
  as our spatial ``gamma_1, gamma_2, gamma_3``::

      gamma_0 = [[0, 0, 1, 0], [0, 0, 0, 1], [1, 0, 0, 0], [0, 1, 0, 0]]
      gamma_1 = [[0, 0, 0, i], [0, 0, i, 0], [0, -i, 0, 0], [-i, 0, 0, 0]]
      gamma_2 = [[0, 0, 0, -1], [0, 0, 1, 0], [0, 1, 0, 0], [-1, 0, 0, 0]]
      gamma_3 = [[0, 0, i, 0], [0, 0, 0, -i], [-i, 0, 0, 0], [0, i, 0, 0]]
      gamma_5 = gamma_1 gamma_2 gamma_3 gamma_0 = -gamma_0 gamma_1 gamma_2 gamma_3
              = diag(1, 1, -1, -1)

  (Chroma's ``gamma_5 = gamma_1 gamma_2 gamma_3 gamma_4``.)

``gamma_5`` is hermitian, squares to one and anticommutes with every ``gamma_mu``.
NumPy is used only for these small host tables; :func:`gamma_matrices` converts them with
``xp.asarray``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..backend import device_constant

__all__ = ["n_spin", "gamma_matrices", "gamma5", "sigma_munu"]


def n_spin(D: int) -> int:
    """Number of spin components of a Wilson fermion in D dimensions: 2 (D = 2, 3), 4 (D = 4)."""
    if isinstance(D, bool) or D not in (2, 3, 4):
        raise ValueError(f"gamma matrices exist here for D = 2, 3, 4 only, not D = {D!r}")
    return 4 if D == 4 else 2


_S1 = np.array([[0, 1], [1, 0]], dtype=complex)
_S2 = np.array([[0, -1j], [1j, 0]], dtype=complex)
_S3 = np.array([[1, 0], [0, -1]], dtype=complex)


@lru_cache(maxsize=None)
def _gammas_host(D: int) -> np.ndarray:
    n_spin(D)
    if D == 2:
        g = np.stack([_S1, _S2])
    elif D == 3:
        g = np.stack([_S1, _S2, _S3])
    else:
        i = 1j
        g0 = np.array([[0, 0, 1, 0], [0, 0, 0, 1], [1, 0, 0, 0], [0, 1, 0, 0]], dtype=complex)
        g1 = np.array([[0, 0, 0, i], [0, 0, i, 0], [0, -i, 0, 0], [-i, 0, 0, 0]], dtype=complex)
        g2 = np.array([[0, 0, 0, -1], [0, 0, 1, 0], [0, 1, 0, 0], [-1, 0, 0, 0]], dtype=complex)
        g3 = np.array([[0, 0, i, 0], [0, 0, 0, -i], [-i, 0, 0, 0], [0, i, 0, 0]], dtype=complex)
        g = np.stack([g0, g1, g2, g3])
    g.setflags(write=False)
    return g


@lru_cache(maxsize=None)
def _gamma5_host(D: int) -> np.ndarray:
    n_spin(D)
    g = _gammas_host(D)
    if D == 3:
        raise ValueError("there is no gamma_5 for D = 3 with two-component spinors "
                         "(gamma_0 gamma_1 gamma_2 = i)")
    if D == 2:
        g5 = -1j * g[0] @ g[1]
    else:
        g5 = g[1] @ g[2] @ g[3] @ g[0]
    g5 = np.asarray(g5)
    g5.setflags(write=False)
    return g5


def _as(xp, host, dtype, device):
    return device_constant(xp, host, dtype or xp.complex128, device)


def gamma_matrices(D: int, xp, dtype=None, device=None):
    """The D Euclidean gamma matrices ``[D, s, s]`` (``s = n_spin(D)``), ``gamma[0]`` = time.

    ``dtype`` is complex64 or complex128 (default complex128).
    """
    return _as(xp, _gammas_host(D), dtype, device)


def gamma5(D: int, xp, dtype=None, device=None):
    """gamma_5 ``[s, s]``: ``sigma_3`` for D = 2, ``diag(1, 1, -1, -1)`` for D = 4 (see module
    docstring); ``ValueError`` for D = 3."""
    return _as(xp, _gamma5_host(D), dtype, device)


@lru_cache(maxsize=None)
def _sigma_host(D: int) -> np.ndarray:
    g = _gammas_host(D)
    s = np.zeros((D, D) + g.shape[1:], dtype=complex)
    for mu in range(D):
        for nu in range(D):
            s[mu, nu] = 0.5j * (g[mu] @ g[nu] - g[nu] @ g[mu])
    s.setflags(write=False)
    return s


def sigma_munu(D: int, xp, dtype=None, device=None):
    """``sigma_munu = (i/2) [gamma_mu, gamma_nu]`` as ``[D, D, s, s]`` (hermitian,
    antisymmetric in mu, nu)."""
    return _as(xp, _sigma_host(D), dtype, device)
