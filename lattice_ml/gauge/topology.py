"""Clover field strength and the 4D clover topological charge.

Links ``U[batch, D, *sites, N, N]`` (N = 1 for U(1)), time = direction 0; ``U_mu(x)`` transports
from ``x + mu_hat`` to ``x`` (:mod:`lattice_ml.gauge.paths`).

Clover field strength
---------------------
``Q_{mu nu}(x)`` is the sum of the four plaquettes of the (mu, nu) plane that start and end at x,
all with the same orientation (mu first, then nu: counter-clockwise in the (mu, nu) plane)::

    Q_{mu nu}(x) = U_mu(x) U_nu(x+mu) U_mu(x+nu)^dag U_nu(x)^dag              (+mu, +nu, -mu, -nu)
                 + U_nu(x) U_mu(x-mu+nu)^dag U_nu(x-mu)^dag U_mu(x-mu)          (+nu, -mu, -nu, +mu)
                 + U_mu(x-mu)^dag U_nu(x-mu-nu)^dag U_mu(x-mu-nu) U_nu(x-nu)    (-mu, -nu, +mu, +nu)
                 + U_nu(x-nu)^dag U_mu(x-nu) U_nu(x+mu-nu) U_mu(x)^dag          (-nu, +mu, +nu, -mu)

and (Lüscher, JHEP 08 (2010) 071, eq. (3.2))

    F_{mu nu}(x) = (1/8) [Q_{mu nu}(x) - Q_{mu nu}(x)^dag]        (anti-hermitian, lattice units),

made traceless for SU(N) (``- Tr(...)/N``; not for U(1), whose field strength *is* the trace).
For a smooth field ``U_mu(x) = exp(a A_mu)`` with anti-hermitian ``A_mu``, F_{mu nu}(x) =
a^2 (d_mu A_nu - d_nu A_mu + [A_mu, A_nu])(x) + O(a^4): the clover is centred at x, so its
discretisation errors are O(a^2). ``F_{nu mu} = -F_{mu nu}``.

Topological charge (D = 4 only)
-------------------------------
With the anti-hermitian clover F above and ``epsilon_{0123} = +1`` (directions = array axes,
time = 0),

    q(x) = -(1/(32 pi^2)) epsilon_{mu nu rho sigma} Re Tr[F_{mu nu}(x) F_{rho sigma}(x)]
         = -(1/(4 pi^2)) Re Tr[F_01 F_23 - F_02 F_13 + F_03 F_12](x),
    Q    = sum_x q(x).

Written with the hermitian field strength ``G = i F`` this is ``+(1/(32 pi^2)) eps Tr(G G)``, and
with ``F = F^a T_a`` (``Tr T_a T_b = -delta_ab/2``) it is ``(1/(64 pi^2)) eps F^a F^a`` — the usual
``(g^2/(32 pi^2)) F^a F~^a`` in continuum normalisation. Sign check (tested): an abelian
configuration whose (0,1) and (2,3) plaquette angles are both positive in the same colour
component has Q > 0; for U(1) in 4D, Q is the product of the two flux quanta.
"""

from __future__ import annotations

import math

from ..backend import device_of, namespace
from ..groups import dagger, trace
from .paths import transport

__all__ = ["clover_leaves", "clover_field_strength", "clover_field_strengths", "planes",
           "trace_product", "topological_charge_density_clover", "topological_charge_clover"]


def planes(D: int) -> list[tuple[int, int]]:
    """The D(D-1)/2 planes ``(mu, nu)``, ``mu < nu``, in the order (0,1), (0,2), ..., (D-2,D-1)."""
    return [(mu, nu) for mu in range(D) for nu in range(mu + 1, D)]


def _check_links(U, what="links"):
    if U.ndim < 6 or U.shape[-1] != U.shape[-2] or U.shape[1] != U.ndim - 4:
        raise ValueError(f"{what} of shape {tuple(U.shape)} are not in the layout "
                         "[batch, D, *sites, N, N] with D = number of site axes")


def _check_plane(D, mu, nu):
    if not (0 <= mu < D and 0 <= nu < D) or mu == nu:
        raise ValueError(f"(mu, nu) = ({mu}, {nu}) is not a plane of a D = {D} lattice")


def clover_leaves(U, mu: int, nu: int):
    """``Q_{mu nu}(x)``: the sum of the four equally oriented plaquettes at x, ``[batch, *sites, N, N]``."""
    _check_links(U)
    _check_plane(U.shape[1], mu, nu)
    paths = (((mu, 1), (nu, 1), (mu, -1), (nu, -1)),
             ((nu, 1), (mu, -1), (nu, -1), (mu, 1)),
             ((mu, -1), (nu, -1), (mu, 1), (nu, 1)),
             ((nu, -1), (mu, 1), (nu, 1), (mu, -1)))
    total = None
    for p in paths:
        w = transport(U, p)
        total = w if total is None else total + w
    return total


def _traceless_antihermitian_part(Q, traceless: bool):
    xp = namespace(Q)
    F = 0.125 * (Q - dagger(Q))
    if traceless:
        N = Q.shape[-1]
        eye = xp.eye(N, dtype=F.dtype, device=device_of(F))
        F = F - (trace(F) / N)[..., None, None] * eye
    return F


def clover_field_strength(U, mu: int, nu: int, traceless: bool | None = None):
    """Clover ``F_{mu nu}(x) = (Q - Q^dag)/8`` (traceless for SU(N)), ``[batch, *sites, N, N]``.

    ``traceless`` defaults to True for N >= 2 and False for U(1) (N = 1).
    """
    if traceless is None:
        traceless = U.shape[-1] >= 2
    return _traceless_antihermitian_part(clover_leaves(U, mu, nu), traceless)


def clover_field_strengths(U, traceless: bool | None = None):
    """All planes at once: ``[batch, P, *sites, N, N]`` with P = D(D-1)/2 in the order of
    :func:`planes` (``F_{mu nu}`` for ``mu < nu``)."""
    xp = namespace(U)
    _check_links(U)
    return xp.stack([clover_field_strength(U, mu, nu, traceless) for mu, nu in planes(U.shape[1])],
                    axis=1)


def trace_product(A, B):
    """``Re Tr(A B)`` of ``[..., N, N]`` matrices, ``[...]`` real (no matrix product formed)."""
    xp = namespace(A, B)
    prod = A * xp.matrix_transpose(B)
    return xp.real(xp.sum(xp.sum(prod, axis=-1), axis=-1))


def topological_charge_density_clover(U):
    """``q(x)`` ``[batch, *sites]`` (real) of a D = 4 field, clover definition (module doc)."""
    _check_links(U)
    if U.shape[1] != 4:
        raise ValueError("the clover topological charge is defined in D = 4; got links of shape "
                         f"{tuple(U.shape)} (D = {U.shape[1]}); for 2D U(1) use "
                         "lattice_ml.gauge.observables.topological_charge_2d")
    F = {(mu, nu): clover_field_strength(U, mu, nu) for mu, nu in planes(4)}
    s = (trace_product(F[0, 1], F[2, 3]) - trace_product(F[0, 2], F[1, 3])
         + trace_product(F[0, 3], F[1, 2]))
    return (-1.0 / (4.0 * math.pi ** 2)) * s


def topological_charge_clover(U):
    """``Q = sum_x q(x)`` per configuration, ``[batch]`` (real), D = 4 (module doc)."""
    xp = namespace(U)
    q = topological_charge_density_clover(U)
    return xp.sum(q, axis=tuple(range(1, q.ndim)))
