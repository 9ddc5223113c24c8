"""Lüscher's trivialising map at leading order, as coefficients of a :class:`GradientFlow`.

Lüscher (Commun. Math. Phys. 293 (2010) 899, arXiv:0907.5491) builds the map ``F`` that carries
the Haar measure to ``exp(-S) / Z`` as the flow of ``dU_t/dt = Z_t(U_t) U_t``, ``Z_t = -d S~_t``,
``t in [0, 1]``, through the densities ``p_t ∝ exp(-t S)``. The continuity equation of the flow
with the generator of :mod:`lattice_ml.flows.gradient_flow` reads

    -Delta S~_t + t (d S~_t) . (d S) = S - <S>_t ,

(``Delta = sum_{links, a} d^a d^a``) and is solved order by order in the coupling. At leading
order ``-Delta S~ = S - const``; a loop action ``S = -sum_i k_i w_i`` whose loops pass through
each of their ``n_i`` links once has ``Delta w_i = -C n_i w_i`` (``C`` the Casimir of
:func:`~lattice_ml.flows.gradient_flow.casimir`), so

    S~ = -sum_i (k_i / (C n_i)) w_i,     i.e.  c_i(t) = k_i / (C n_i), constant in t.

For the Wilson action ``k_plaq = beta / N`` (``S = -(beta/N) sum Re Tr P``): ``c_plaq = beta /
(4 C N)`` (``beta/2`` for U(1), ``beta/16`` for SU(3)); for the improved actions ``k_plaq =
beta c0 / N``, ``k_rect = beta c1 / N`` (``n = 4, 6``). The next order adds t-dependent terms
with products of traces that a loop action cannot represent; the learned flow starts here.
"""

from __future__ import annotations

import numpy as np

from .gradient_flow import GradientFlow, casimir

__all__ = ["luscher_coefficients", "luscher_flow"]


def luscher_coefficients(action, loop_names, lengths, n_t: int) -> np.ndarray:
    """``theta`` ``[n_W, n_t]`` of the leading-order trivialising map for ``action`` (a
    :class:`~lattice_ml.gauge.GaugeAction`) on the loop types ``loop_names`` (with their
    lengths): ``c_i = k_i / (C n_i)`` in the constant Legendre polynomial, zero elsewhere.
    The action's loops must be among the flow's (``"plaquette"``, and ``"rectangle"`` when the
    action has rectangles)."""
    k = {}
    if action.terms in ("all", "plaquette"):
        k["plaquette"] = action.beta * action.c0 / action.N
    if action.c1 != 0.0 and action.terms in ("all", "rectangle"):
        k["rectangle"] = action.beta * action.c1 / action.N
    missing = [name for name in k if name not in loop_names]
    if missing:
        raise ValueError(f"the trivialising map of {action!r} needs the loop types {missing} "
                         f"in the flow (it has {list(loop_names)})")
    C = casimir(action.N)
    theta = np.zeros((len(loop_names), n_t))
    for i, name in enumerate(loop_names):
        if name in k:
            theta[i, 0] = k[name] / (C * lengths[i])
    return theta


def luscher_flow(action, shape, xp, *, loops=("plaquette",), n_t: int = 1, n_steps: int = 8,
                 **kwargs) -> GradientFlow:
    """A :class:`GradientFlow` for ``action`` on ``shape`` starting at (or, with no further
    training, equal to) the leading-order trivialising map."""
    flow = GradientFlow(shape, action.N, xp, loops=loops, n_t=n_t, n_steps=n_steps, **kwargs)
    theta = luscher_coefficients(action, flow.loop_names, flow.lengths, n_t)
    flow.load_params({"theta": theta})
    return flow
