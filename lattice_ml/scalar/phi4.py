"""The real scalar φ⁴ theory on a D-dimensional periodic lattice, in its two usual forms.

Fields are arrays ``phi[batch, *sites]`` (real). Actions return one value per configuration,
``[batch]``; forces return ``F = -dS/dphi`` in the layout of ``phi``.

Standard form (mass and quartic coupling)::

    S = sum_x [ sum_mu (phi(x+mu) - phi(x))^2 + m2 phi(x)^2 + lam phi(x)^4 ]
    F(x) = 2 sum_mu [phi(x+mu) + phi(x-mu) - 2 phi(x)] - 2 m2 phi(x) - 4 lam phi(x)^3

Hopping form (hopping parameter ``beta``, field normalised to |phi| ~ 1 in the broken phase)::

    S = sum_x [ -beta sum_mu phi(x+mu) phi(x) + phi(x)^2 + lam (phi(x)^2 - 1)^2 ]
    F(x) = beta sum_mu [phi(x+mu) + phi(x-mu)] - 2 phi(x) - 4 lam (phi(x)^2 - 1) phi(x)

``mu`` runs over the D forward directions, so each nearest-neighbour pair appears once. Neither
form has a factor 1/2 in front of the kinetic term; the free propagators are therefore
``G(p) = 1 / (2 (phat^2 + m2))`` (standard) and ``G(p) = 1 / (2 (1 - beta sum_mu cos p_mu))``
(hopping); see :func:`free_propagator`.

Each action may be restricted to its nearest-neighbour part (``terms="kinetic"``) or its
site-local part (``terms="local"``), so that multiple-time-scale integrators can put them on
different levels; the two parts add up to the full action.
"""

from __future__ import annotations

from ..backend import namespace
from ..dispatch import dispatchable
from ..lattice import Lattice, shift

__all__ = ["Phi4Action", "free_propagator", "phi4_force"]

_TERMS = ("all", "kinetic", "local")


class Phi4Action:
    """φ⁴ action in the standard (``m2``, ``lam``) or hopping (``beta``, ``lam``) form.

    Parameters
    ----------
    lattice : Lattice
    form : {"standard", "hopping"}
    m2, lam, beta : float
        Couplings; ``m2`` only in the standard form, ``beta`` only in the hopping form.
    terms : {"all", "kinetic", "local"}
        Which part of the action this object represents (see the module docstring).
    """

    def __init__(self, lattice: Lattice, form: str = "standard", *, m2: float | None = None,
                 lam: float = 0.0, beta: float | None = None, terms: str = "all"):
        if form not in ("standard", "hopping"):
            raise ValueError(f"phi4 form must be 'standard' or 'hopping', not {form!r}")
        if terms not in _TERMS:
            raise ValueError(f"terms must be one of {_TERMS}, not {terms!r}")
        if form == "standard":
            if m2 is None or beta is not None:
                raise ValueError("the standard form takes m2 and lam (not beta)")
        else:
            if beta is None or m2 is not None:
                raise ValueError("the hopping form takes beta and lam (not m2)")
        if lam < 0:
            raise ValueError(f"lam must be >= 0 for a bounded action, got {lam}")
        self.lattice = lattice
        self.form = form
        self.m2 = None if m2 is None else float(m2)
        self.beta = None if beta is None else float(beta)
        self.lam = float(lam)
        self.terms = terms

    def __repr__(self) -> str:
        c = f"m2={self.m2}" if self.form == "standard" else f"beta={self.beta}"
        return f"Phi4Action({self.lattice!r}, {self.form!r}, {c}, lam={self.lam}, terms={self.terms!r})"

    def part(self, terms: str) -> "Phi4Action":
        """The same action restricted to ``terms`` ("kinetic" or "local")."""
        return Phi4Action(self.lattice, self.form, m2=self.m2, lam=self.lam, beta=self.beta,
                          terms=terms)

    # -- pieces --------------------------------------------------------------------------------
    def _forward_product_sum(self, phi):
        """sum_mu phi(x+mu) phi(x), per site."""
        out = 0.0
        for mu in range(self.lattice.dim):
            out = out + shift(phi, mu, +1) * phi
        return out

    def _sum_sites(self, density):
        xp = namespace(density)
        return xp.sum(density, axis=tuple(range(1, density.ndim)))

    # -- action and force ----------------------------------------------------------------------
    def action_density(self, phi):
        """Per-site Lagrangian ``[batch, *sites]`` whose site sum is the action."""
        self.lattice.check_field(phi, name="phi")
        D = self.lattice.dim
        kin = self.terms in ("all", "kinetic")
        loc = self.terms in ("all", "local")
        phi2 = phi * phi
        out = 0.0
        if self.form == "standard":
            if kin:
                # sum_mu (phi(x+mu) - phi(x))^2 = sum_mu phi(x+mu)^2 + D phi^2 - 2 sum_mu phi(x+mu) phi(x);
                # after the site sum the first term equals D phi^2.
                out = out + 2.0 * D * phi2 - 2.0 * self._forward_product_sum(phi)
            if loc:
                out = out + self.m2 * phi2 + self.lam * phi2 * phi2
        else:
            if kin:
                out = out - self.beta * self._forward_product_sum(phi)
            if loc:
                out = out + phi2 + self.lam * (phi2 - 1.0) ** 2
        return out

    def action(self, phi):
        """Action ``S[phi]`` per configuration, shape ``[batch]``."""
        return self._sum_sites(self.action_density(phi))

    def force(self, phi):
        """Force ``F = -dS/dphi``, shape of ``phi``."""
        self.lattice.check_field(phi, name="phi")
        c = self.m2 if self.form == "standard" else self.beta
        return phi4_force(phi, self.form, self.terms in ("all", "kinetic"),
                          self.terms in ("all", "local"), c, self.lam)


def _neighbour_sum(phi):
    """sum_mu [phi(x+mu) + phi(x-mu)] for ``phi[batch, *sites]``."""
    out = 0.0
    for mu in range(phi.ndim - 1):
        out = out + shift(phi, mu, +1) + shift(phi, mu, -1)
    return out


@dispatchable("phi4_force")
def phi4_force(phi, form: str, kinetic: bool, local: bool, c: float, lam: float):
    """Force ``F = -dS/dphi`` of :class:`Phi4Action` for ``phi[batch, *sites]``: ``form``
    "standard" (``c = m2``) or "hopping" (``c = beta``), with the kinetic and/or the local terms
    (formulas in the module docstring). Numba kernels run it for NumPy and CuPy arrays
    (:mod:`lattice_ml.dispatch`)."""
    D = phi.ndim - 1
    out = 0.0 * phi
    if form == "standard":
        if kinetic:
            out = out + 2.0 * (_neighbour_sum(phi) - (2.0 * D) * phi)
        if local:
            out = out - (2.0 * c) * phi - (4.0 * lam) * phi * phi * phi
    else:
        if kinetic:
            out = out + c * _neighbour_sum(phi)
        if local:
            out = out - 2.0 * phi - (4.0 * lam) * (phi * phi - 1.0) * phi
    return out


def free_propagator(lattice: Lattice, xp, form: str, *, m2: float | None = None,
                    beta: float | None = None, dtype=None, device=None):
    """Exact momentum-space propagator ``G(p) = <|phi~(p)|^2> / V`` of the free (lam = 0) theory.

    With ``phi~(p) = sum_x exp(-i p.x) phi(x)`` the free actions are ``S = (1/V) sum_p K(p)
    |phi~(p)|^2`` with ``K = phat^2 + m2`` (standard) or ``K = 1 - beta sum_mu cos p_mu``
    (hopping). The Gaussian weight ``exp(-S)`` has no factor 1/2, so ``G(p) = 1 / (2 K(p))``.
    Returns an array ``[*sites]`` indexed by the momentum integers ``n_mu``.
    """
    dtype = dtype or xp.float64
    if form == "standard":
        if m2 is None or m2 <= 0:
            raise ValueError("the free standard form needs m2 > 0")
        K = lattice.phat_squared(xp, dtype=dtype, device=device) + m2
    elif form == "hopping":
        if beta is None:
            raise ValueError("the hopping form needs beta")
        cos_sum = 0.0
        for p in lattice.momenta(xp, dtype=dtype, device=device):
            cos_sum = cos_sum + xp.cos(p)
        K = 1.0 - beta * cos_sum
        if float(xp.min(K)) <= 0:
            raise ValueError(f"free hopping form is unstable for beta = {beta} >= 1/D")
    else:
        raise ValueError(f"unknown phi4 form {form!r}")
    return 1.0 / (2.0 * K)
