"""The gauge groups U(1) and SU(N), N >= 2: generators, algebra, exp map, projections,
reunitarisation, Haar-random elements and gauge transformations.

Layouts
-------
* Group and algebra elements in matrix form are complex arrays whose **last two axes are the
  matrix** ``[..., N, N]`` (complex64 or complex128). U(1) is ``N = 1``: its elements are
  ``[..., 1, 1]`` arrays of phases, so every function below treats U(1) and SU(N) alike.
* Gauge links are ``[batch, D, L_0, ..., L_{D-1}, N, N]``; a gauge transformation ``g`` is
  ``[batch, L_0, ..., L_{D-1}, N, N]``. The Lie-algebra field of a gauge field (momenta,
  forces) is ``[batch, D, *sites, N, N]`` in matrix form or ``[batch, D, *sites, n_gen]`` in
  real coordinates.

Generators and normalisation
----------------------------
The generators ``T_a``, ``a = 0 ... n_gen - 1``, are anti-hermitian with

    Tr(T_a T_b) = -1/2 delta_ab.

* SU(N): ``n_gen = N^2 - 1`` and ``T_a = i lambda_a / 2`` with the generalised Gell-Mann
  matrices ``lambda_a`` (hermitian, traceless, ``Tr(lambda_a lambda_b) = 2 delta_ab``), in the
  *nested* order that reproduces the Pauli matrices for N = 2 and the standard Gell-Mann order
  ``lambda_1 ... lambda_8`` for N = 3: for ``k = 1, ..., N-1`` in turn, first for each
  ``j = 0, ..., k-1`` the symmetric matrix ``S_jk`` (1 at ``(j,k)`` and ``(k,j)``) and the
  antisymmetric one ``A_jk`` (``-i`` at ``(j,k)``, ``+i`` at ``(k,j)``), then the diagonal
  ``D_k = sqrt(2/(k(k+1))) diag(1, ..., 1, -k, 0, ..., 0)`` (k ones). So N = 2 gives
  ``sigma_1, sigma_2, sigma_3`` and N = 3 gives ``lambda_1, ..., lambda_8``.
* U(1): ``n_gen = 1`` and ``T_0 = i / sqrt(2)`` (the same normalisation).

An algebra element is ``X = sum_a x_a T_a`` with real ``x_a``; its coordinates are
``x_a = -2 Re Tr(T_a X)`` and ``-Tr(X^2) = (1/2) sum_a x_a^2``, so the HMC kinetic energy
``sum_a p_a^2 / 2`` is ``-Tr(P^2)`` per link.

The traceless anti-hermitian projection is

    TA(M) = (M - M^dagger)/2 - Tr(M - M^dagger)/(2N) 1        (SU(N))
    TA(M) = (M - M^*)/2                                         (U(1), no trace removed)

and ``sum_a T_a Re Tr(T_a M) = -TA(M)/2`` for any complex M.

Everything here is written against the array API: NumPy appears only for the small host table
of the generators (:func:`generators`).

Modules (every public name is importable from ``lattice_ml.groups``)
---------------------------------------------------------------------
* :mod:`.algebra`: generators, ``dagger``/``trace``/``det``/identities, algebra <-> matrix,
  ``project_algebra`` (TA), ``random_algebra``;
* :mod:`.exp`: ``expm_algebra`` (closed forms for N = 1, 2, 3; eigh; Taylor) and
  ``resolve_exp_method``;
* :mod:`.su2`: SU(2) as unit quaternions (products, conjugates, matrices, the quaternion part of
  a 2x2 block), used by the heatbath and over-relaxation;
* :mod:`.su3`: the SU(3) Cayley-Hamilton coefficients with their derivatives (one function,
  one switch, measured against a 60-digit reference);
* :mod:`.elements`: reunitarisation, Haar-random and near-identity elements, gauge
  transformations, ``unitarity_deviation`` and ``check_links``.
"""

# private names re-exported for the rest of the library and the tests: _sinc, _default_tol and
# the two SU(3) branches with their switch
from ._scalars import _sinc, xi1
from .algebra import (algebra_to_matrix, dagger, det, generators, identity, identity_like,
                      matrix_to_algebra, n_generators, project_algebra, random_algebra, trace)
from .elements import (_default_tol, check_links, gauge_transform, haar_random,
                       random_gauge_transformation, random_near_identity, reunitarize,
                       unitarity_deviation)
from .exp import expm_algebra, resolve_exp_method
from .su2 import qconj, qentries, qmatrix, qmul, qnormalise, qproject
from .su3 import (_SU3_SERIES_C1, _SU3_SERIES_TERMS, _su3_closed, _su3_series, su3_ch_coefficients,
                  su3_exp_coefficients, su3_invariants)

__all__ = [
    "n_generators",
    "generators",
    "dagger",
    "trace",
    "det",
    "identity",
    "identity_like",
    "algebra_to_matrix",
    "matrix_to_algebra",
    "project_algebra",
    "expm_algebra",
    "su3_invariants",
    "su3_ch_coefficients",
    "su3_exp_coefficients",
    "qmul", "qconj", "qentries", "qmatrix", "qproject", "qnormalise",
    "reunitarize",
    "unitarity_deviation",
    "random_algebra",
    "haar_random",
    "random_near_identity",
    "gauge_transform",
    "random_gauge_transformation",
    "check_links",
    "xi1",
]
