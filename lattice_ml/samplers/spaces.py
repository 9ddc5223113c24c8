"""Phase spaces for molecular dynamics: how momenta are drawn and how a field moves.

The integrators and HMC in this package never touch a field directly: every operation that
depends on what the field *is* goes through a ``FieldSpace``. A space provides

``sample_momenta(field, rng) -> p``
    Gaussian momenta conjugate to ``field`` (batch axis first), distributed as exp(-K(p)).
``kinetic_energy(p) -> [batch]``
    K(p).
``drift(field, p, eps) -> field``
    The field after moving for a time ``eps`` at fixed momentum: ``field + eps p`` on a flat
    space, ``exp(eps p) U`` on a Lie group.
``check(field)``
    Raise ``ValueError`` naming the problem if ``field`` is not a valid point of the space
    (NaN/inf; for links also layout, unitarity and det 1). HMC calls it on the field it is given.

Momentum updates ("kicks") are always ``p + eps F`` with the force ``F = -dS/dfield`` expressed
in the same layout as ``p``; they are linear on every space (a Lie algebra is a vector space),
so they live in the integrator. Gauge fields supply a space whose momenta are Lie-algebra
fields and whose drift is the exponential map; the integrators are not rewritten for them.
"""

from __future__ import annotations

from ..backend import namespace
from ..groups import algebra_to_matrix, check_links, expm_algebra, n_generators

__all__ = ["EuclideanSpace", "LieGroupSpace"]


class EuclideanSpace:
    """Flat real fields ``phi[batch, ...]``: p ~ N(0, 1) per degree of freedom, K = sum p^2 / 2,
    drift phi -> phi + eps p."""

    def sample_momenta(self, field, rng):
        return rng.normal(tuple(field.shape[1:]))

    def check(self, field):
        xp = namespace(field)
        bad = int(xp.sum(xp.astype(~xp.isfinite(field), xp.int64)))
        if bad:
            raise ValueError(f"field contains {bad} non-finite (NaN or inf) entries")

    def kinetic_energy(self, p):
        xp = namespace(p)
        return 0.5 * xp.sum(p * p, axis=tuple(range(1, p.ndim)))

    def drift(self, field, p, eps):
        return field + eps * p


class LieGroupSpace:
    """Link fields ``U[batch, D, *sites, N, N]`` of U(1) (N = 1) or SU(N).

    Momenta are Lie-algebra fields ``P = sum_a p_a T_a`` (matrix form, layout of the links) with
    p_a ~ N(0, 1) and ``Tr(T_a T_b) = -delta_ab / 2``, so ``K = -sum Re Tr P^2 = sum p_a^2 / 2``;
    the drift is ``U -> exp(eps P) U`` (:func:`lattice_ml.groups.expm_algebra`), which keeps the
    links in the group. Forces must be Lie-algebra fields of the same layout (e.g.
    :meth:`lattice_ml.gauge.GaugeAction.force`).
    """

    def __init__(self, N: int):
        if not isinstance(N, int) or N < 1:
            raise ValueError(f"N must be a positive integer (1 for U(1)), got {N!r}")
        self.N = N

    def check(self, field):
        check_links(field, self.N)

    def sample_momenta(self, field, rng):
        coords = rng.normal(tuple(field.shape[1:-2]) + (n_generators(self.N),))
        xp = namespace(field)
        return xp.astype(algebra_to_matrix(coords, self.N), field.dtype)

    def kinetic_energy(self, p):
        xp = namespace(p)
        # -Tr P^2 = sum_ij |P_ij|^2 for anti-hermitian P
        sq = xp.real(p) ** 2 + xp.imag(p) ** 2
        return xp.sum(sq, axis=tuple(range(1, p.ndim)))

    def drift(self, field, p, eps):
        return expm_algebra(eps * p) @ field
