"""Gauge actions for U(1) and SU(N): Wilson and rectangle-improved, with their forces.

Links ``U[batch, D, *sites, N, N]`` (N = 1 for U(1)). With plaquettes P and 1x2 rectangles R
(both orientations, every rectangle counted once),

    S = -(beta / N) sum_x [ c0 sum_{mu<nu} Re Tr P_{mu nu}(x) + c1 sum_{rect} Re Tr R(x) ],
    c0 = 1 - 8 c1,

so that every action has the same classical continuum limit. Named choices of c1:

==========  ===================  ====================================================
name        c1                   reference
==========  ===================  ====================================================
wilson      0                    Wilson, Phys. Rev. D10 (1974) 2445
symanzik    -1/12                tree-level Symanzik (Lüscher & Weisz, CMP 97 (1985) 59)
iwasaki     -0.331               Iwasaki, UTHEP-118 (1983)
dbw2        -1.4088              Takaishi, PRD 54 (1996) 1050; de Forcrand et al. (2000)
==========  ===================  ====================================================

Force. Momenta are Lie-algebra fields ``P = sum_a p_a T_a`` with ``Tr(T_a T_b) = -delta_ab / 2``
(:mod:`lattice_ml.groups`), the kinetic energy is ``K = -sum Tr P^2 = sum p_a^2 / 2`` and links
move as ``U -> exp(eps P) U``. With the staple sum ``V_mu(x)`` (every loop through ``U_mu(x)``,
weighted by its coefficient, so that the action's dependence on the link is
``-(beta/N) Re Tr[U_mu(x) V_mu(x)]``), the force ``F = dP/dt = -dS/dU`` is

    F_mu(x) = -(beta / (2N)) TA[ U_mu(x) V_mu(x) ],

with TA the traceless anti-hermitian projection (for U(1) the anti-hermitian part). It has the
layout of the links, ``[batch, D, *sites, N, N]``.
"""

from __future__ import annotations

from functools import lru_cache

from ..backend import namespace
from ..dispatch import dispatchable
from ..groups import project_algebra, trace
from .paths import link, loop_shapes, loops_through_link, transport

__all__ = ["GaugeAction", "RECTANGLE_COEFFICIENTS", "plaquette_field", "staples", "staple_field",
           "gauge_force"]

RECTANGLE_COEFFICIENTS = {"wilson": 0.0, "symanzik": -1.0 / 12.0, "iwasaki": -0.331,
                          "dbw2": -1.4088}


def plaquette_field(U, mu: int, nu: int):
    """P_{mu nu}(x) = U_mu(x) U_nu(x+mu) U_mu(x+nu)^dag U_nu(x)^dag, ``[batch, *sites, N, N]``."""
    return transport(U, ((mu, 1), (nu, 1), (mu, -1), (nu, -1)))


def staples(U, mu: int, loops) -> object:
    """Sum of the staples of the closed ``loops`` (each starting with ``(mu, +1)``), started at
    ``x + mu_hat``: ``[batch, *sites, N, N]``."""
    D = U.shape[1]
    start = [0] * D
    start[mu] = 1
    total = None
    for loop in loops:
        s = transport(U, loop[1:], start=start)
        total = s if total is None else total + s
    return total


@lru_cache(maxsize=None)
def _loops(shape: str, mu: int, D: int) -> tuple:
    return tuple(loops_through_link(loop_shapes(shape, D), mu, D))


def _staple_sum_ref(U, mu: int, c_plaq, c_rect):
    total = None
    D = U.shape[1]
    for coeff, shape in ((c_plaq, "plaquette"), (c_rect, "rectangle")):
        if coeff is None:
            continue
        s = coeff * staples(U, mu, _loops(shape, mu, D))
        total = s if total is None else total + s
    return total


@dispatchable("gauge_staples")
def staple_field(U, c_plaq, c_rect, mu=None):
    """Weighted staple sums ``V_mu(x) = c_plaq sum_plaq S + c_rect sum_rect S`` (see
    :class:`GaugeAction`; a coefficient ``None`` leaves its loops out).

    ``U`` ``[batch, D, *sites, N, N]``. Returns ``[batch, D, *sites, N, N]`` (every direction) or,
    for an integer ``mu``, ``[batch, *sites, N, N]``; ``None`` if both coefficients are None.
    Dispatched (:mod:`lattice_ml.dispatch`, op ``"gauge_staples"``): 4D SU(3) NumPy/CuPy links
    run a Numba kernel.
    """
    if c_plaq is None and c_rect is None:
        return None
    if mu is not None:
        return _staple_sum_ref(U, mu, c_plaq, c_rect)
    xp = namespace(U)
    return xp.stack([_staple_sum_ref(U, m, c_plaq, c_rect) for m in range(U.shape[1])], axis=1)


@dispatchable("gauge_force")
def gauge_force(U, beta, c_plaq, c_rect):
    """``F_mu(x) = -(beta / (2N)) TA[U_mu(x) V_mu(x)]`` ``[batch, D, *sites, N, N]`` with the
    staple sums of :func:`staple_field` (see :class:`GaugeAction`). Dispatched (op
    ``"gauge_force"``): 4D SU(3) NumPy/CuPy links run a Numba kernel.
    """
    if c_plaq is None and c_rect is None:
        raise ValueError("the gauge force needs plaquette or rectangle loops (both are left out)")
    xp = namespace(U)
    N = U.shape[-1]
    D = U.shape[1]
    parts = [project_algebra(link(U, mu) @ _staple_sum_ref(U, mu, c_plaq, c_rect))
             for mu in range(D)]
    return (-beta / (2.0 * N)) * xp.stack(parts, axis=1)


class GaugeAction:
    """Wilson or rectangle-improved gauge action with coupling ``beta`` for U(1) (N = 1) or SU(N).

    Parameters
    ----------
    beta : float
    N : int
        1 for U(1), N >= 2 for SU(N).
    kind : {"wilson", "symanzik", "iwasaki", "dbw2"} or None
        Named rectangle coefficient; or give ``c1`` directly.
    c1 : float, optional
        Rectangle coefficient (then ``c0 = 1 - 8 c1``).
    terms : {"all", "plaquette", "rectangle"}
        The whole action, or only its plaquette or rectangle part (they add up to the whole), so
        that a multiple-time-scale integrator can put them on different levels.
    """

    def __init__(self, beta: float, N: int, kind: str | None = "wilson", c1: float | None = None,
                 terms: str = "all"):
        if c1 is None:
            if kind not in RECTANGLE_COEFFICIENTS:
                raise ValueError(f"unknown gauge action {kind!r}; choose one of "
                                 f"{', '.join(RECTANGLE_COEFFICIENTS)} or give c1")
            c1 = RECTANGLE_COEFFICIENTS[kind]
            self.kind = kind
        else:
            self.kind = "custom"
        if not isinstance(N, int) or N < 1:
            raise ValueError(f"N must be a positive integer (1 for U(1)), got {N!r}")
        self.beta = float(beta)
        self.N = N
        self.c1 = float(c1)
        self.c0 = 1.0 - 8.0 * self.c1
        if terms not in ("all", "plaquette", "rectangle"):
            raise ValueError(f"terms must be 'all', 'plaquette' or 'rectangle', not {terms!r}")
        self.terms = terms
        self._loop_cache: dict = {}

    def part(self, terms: str) -> "GaugeAction":
        """The same action restricted to its ``"plaquette"`` or ``"rectangle"`` loops."""
        return GaugeAction(self.beta, self.N, c1=self.c1, terms=terms)
    def __repr__(self) -> str:
        return (f"GaugeAction(beta={self.beta}, N={self.N}, kind={self.kind!r}, c1={self.c1}, "
                f"terms={self.terms!r})")

    def loops(self, mu: int, D: int) -> dict:
        """``{"plaquette": (c0, loops), "rectangle": (c1, loops)}``: the loops through
        ``U_mu(x)`` in D dimensions with their coefficients (rectangles only when c1 != 0)."""
        key = (mu, D)
        if key not in self._loop_cache:
            terms = {}
            if self.terms in ("all", "plaquette"):
                terms["plaquette"] = (self.c0,
                                      loops_through_link(loop_shapes("plaquette", D), mu, D))
            if self.c1 != 0.0 and self.terms in ("all", "rectangle"):
                terms["rectangle"] = (self.c1,
                                      loops_through_link(loop_shapes("rectangle", D), mu, D))
            self._loop_cache[key] = terms
        return self._loop_cache[key]

    def _coefficients(self):
        """``(c_plaq, c_rect)`` of the loops in this action (``None``: loops left out)."""
        c_plaq = self.c0 if self.terms in ("all", "plaquette") else None
        c_rect = self.c1 if self.c1 != 0.0 and self.terms in ("all", "rectangle") else None
        return c_plaq, c_rect

    def staple_sum(self, U, mu: int):
        """V_mu(x) = sum over loops through U_mu(x) of coefficient x staple,
        ``[batch, *sites, N, N]`` (:func:`staple_field`; ``None`` if the action has no loops)."""
        return staple_field(U, *self._coefficients(), mu=mu)

    def _check(self, U):
        if U.ndim < 5 or U.shape[-1] != self.N or U.shape[-2] != self.N:
            raise ValueError(f"links of shape {tuple(U.shape)} do not hold {self.N}x{self.N} "
                             "matrices in the layout [batch, D, *sites, N, N]")
        if U.shape[1] != U.ndim - 4:
            raise ValueError(f"links of shape {tuple(U.shape)}: axis 1 (D = {U.shape[1]}) does "
                             f"not match the {U.ndim - 4} site axes")

    def action(self, U):
        """S per configuration, ``[batch]`` (real)."""
        self._check(U)
        xp = namespace(U)
        D = U.shape[1]
        site_axes = tuple(range(1, D + 1))
        total = 0.0
        if self.terms in ("all", "plaquette"):
            for mu in range(D):
                for nu in range(mu + 1, D):
                    total = total + xp.sum(xp.real(trace(plaquette_field(U, mu, nu))),
                                           axis=site_axes)
            total = self.c0 * total
        if self.c1 != 0.0 and self.terms in ("all", "rectangle"):
            # sum_x sum_mu Re Tr U_mu V^rect_mu counts every rectangle once per link: 6 times
            rect = 0.0
            for mu in range(D):
                w = link(U, mu) @ staples(U, mu, self.loops(mu, D)["rectangle"][1])
                rect = rect + xp.sum(xp.real(trace(w)), axis=site_axes)
            total = total + self.c1 * rect / 6.0
        return -(self.beta / self.N) * total

    def force(self, U):
        """F = -dS/dU as a Lie-algebra field ``[batch, D, *sites, N, N]`` (see module doc)."""
        self._check(U)
        return gauge_force(U, self.beta, *self._coefficients())
