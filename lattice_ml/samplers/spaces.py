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

Momentum updates ("kicks") are always ``p + eps F`` with the force ``F = -dS/dfield`` expressed
in the same layout as ``p``; they are linear on every space (a Lie algebra is a vector space),
so they live in the integrator. Gauge fields supply a space whose momenta are Lie-algebra
fields and whose drift is the exponential map; the integrators are not rewritten for them.
"""

from __future__ import annotations

from ..backend import namespace

__all__ = ["EuclideanSpace"]


class EuclideanSpace:
    """Flat real fields ``phi[batch, ...]``: p ~ N(0, 1) per degree of freedom, K = sum p^2 / 2,
    drift phi -> phi + eps p."""

    def sample_momenta(self, field, rng):
        return rng.normal(tuple(field.shape[1:]))

    def kinetic_energy(self, p):
        xp = namespace(p)
        return 0.5 * xp.sum(p * p, axis=tuple(range(1, p.ndim)))

    def drift(self, field, p, eps):
        return field + eps * p
