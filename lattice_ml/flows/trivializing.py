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
beta c0 / N``, ``k_rect = beta c1 / N`` (``n = 4, 6``).

Next-to-leading order (Wilson action), the single-plaquette part
----------------------------------------------------------------------
At order ``beta^2`` (``<S>_t`` only adds constants) with ``S~^(1) = S / (4C)``:

    -Delta S~^(2)_t = -(t / 4C) dS . dS + const,
    dS . dS = sum_links sum_a (d^a S)^2 = k^2 sum_l sum_{P, P' through l} sum_a Re Tr(T_a P_l) Re Tr(T_a P'_l)

and ``sum_a Re Tr(T_a A) Re Tr(T_a B) = (1/4)[Re Tr(A B^dagger) - Re Tr(A B) + (1/N)(Re(Tr A
Tr B) - Re(Tr A conj Tr B))]`` (SU(N); U(1) without the ``1/N`` terms). The terms ``P = P'``
(each plaquette at its 4 links) are class functions of one plaquette:

    (dS . dS)_diag = k^2 sum_P [N - Re Tr P^2 + (1/N)(Re (Tr P)^2 - |Tr P|^2)].

The terms ``P != P'`` (two plaquettes sharing a link) give ``Re Tr`` of the 1x2 rectangle, the
trace of a loop through the shared link twice and products of the traces of the two plaquettes.
The group Laplacian maps class functions of one plaquette to class functions of that plaquette
(:func:`lattice_ml.flows.loop_functions.laplacian`) and functions of two neighbouring plaquettes
to functions of the two (never to one plaquette alone), so the equation splits, and its
one-plaquette part is solved exactly within the flow's terms: with ``S~^(2) = -t sum_P sum_f
x_f f(P)`` over ``f in (re_tr2, re_tr_sq, abs_tr_sq)`` and ``Delta f = sum_g L_fg g + const``,

    4 L^T x = -(k^2 / 4C) r,     r = (-1, 1/N, -1/N)        (U(1): f = re_tr2 only, r = -1),

(SU(2): ``Tr P`` is real, the three functions reduce to ``re_tr_sq`` with ``r = -1`` and
``Delta (Tr P)^2 = -2 (Tr P)^2 + 2``), i.e. for SU(3) ``x = (-3/5, 2/5, -1/9) beta^2 / 192``,
for SU(2) ``x = -beta^2 / 96``, for U(1) ``x = -beta^2 / 16``
(:func:`luscher_nlo_plaquette`). The coefficients are linear in t: ``c_f(t) = x_f t``, the
Legendre coefficients ``(x_f / 2, x_f / 2)`` (``n_t >= 2``). The two-plaquette part is not
included: its rectangle coefficient mixes, through the Laplacian, with the products of traces
and the doubly-traversed loop that the flow does not have, so keeping the rectangle alone would
not be a consistent truncation. This is therefore not the full NLO map of Lüscher (and of the
"Lüscher NL" baseline of Bacchio et al.), but the exact NLO projection onto single-plaquette
class functions.
"""

from __future__ import annotations

import numpy as np

from .gradient_flow import GradientFlow, casimir
from .loop_functions import laplacian

__all__ = ["luscher_coefficients", "luscher_flow", "luscher_nlo_plaquette"]


def luscher_nlo_plaquette(beta: float, N: int) -> dict:
    """``{term name: x_f}`` of the NLO single-plaquette part ``c_f(t) = x_f t`` of the
    trivialising map of the Wilson action (module docstring)."""
    k = beta / N
    C = casimir(N)
    if N == 1:
        coef, _ = laplacian("re_tr2", 1)
        Lf = sum(coef.values())                     # re_tr_sq = re_tr2 for U(1)
        return {"plaquette:re_tr2": -(k * k / (4 * C * 4)) * (-1.0) / Lf}
    if N == 2:
        # Tr P is real: Re(Tr P)^2 = |Tr P|^2 = (Tr P)^2 and Re Tr P^2 = (Tr P)^2 - 2, so the
        # three functions are one, re_tr_sq (r = -1; Delta (Tr P)^2 = -2 (Tr P)^2 + 2)
        coef, _ = laplacian("re_tr_sq", 2)
        Lf = coef["re_tr_sq"] + coef["re_tr2"]
        return {"plaquette:re_tr_sq": -(k * k / (4 * C * 4)) * (-1.0) / Lf}
    fs = ("re_tr2", "re_tr_sq", "abs_tr_sq")
    L = np.zeros((3, 3))
    for i, f in enumerate(fs):
        coef, _ = laplacian(f, N)
        for g, a in coef.items():
            L[i, fs.index(g)] = a
    r = np.array([-1.0, 1.0 / N, -1.0 / N])
    x = np.linalg.solve(4.0 * L.T, -(k * k / (4 * C)) * r)
    return {f"plaquette:{f}": float(v) for f, v in zip(fs, x)}


def luscher_coefficients(action, loop_names, lengths, n_t: int, order: int = 1) -> np.ndarray:
    """``theta`` ``[n_W, n_t]`` of the leading-order trivialising map for ``action`` (a
    :class:`~lattice_ml.gauge.GaugeAction`) on the loop types ``loop_names`` (with their
    lengths): ``c_i = k_i / (C n_i)`` in the constant Legendre polynomial, zero elsewhere.
    The action's loops must be among the flow's (``"plaquette"``, and ``"rectangle"`` when the
    action has rectangles). ``order=2`` adds the NLO single-plaquette class functions (Wilson
    action only; the flow needs ``n_t >= 2`` and the terms ``plaquette:re_tr2`` for U(1),
    ``plaquette:re_tr_sq`` for SU(2), and all three of ``plaquette:re_tr2``,
    ``plaquette:re_tr_sq``, ``plaquette:abs_tr_sq`` for N >= 3; module docstring)."""
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
    if order == 2:
        if "rectangle" in k or action.terms != "all" or action.c0 != 1.0:
            raise ValueError(f"the NLO map is derived for the Wilson action, not {action!r}")
        if n_t < 2:
            raise ValueError("the NLO map is linear in t: it needs n_t >= 2")
        nlo = luscher_nlo_plaquette(action.beta, action.N)
        missing = [name for name in nlo if name not in loop_names]
        if missing:
            raise ValueError(f"the NLO map needs the terms {missing} in the flow (it has "
                             f"{list(loop_names)})")
        for name, x in nlo.items():
            theta[list(loop_names).index(name), :2] = [0.5 * x, 0.5 * x]   # x t = x (P0 + P1)/2
    elif order != 1:
        raise ValueError(f"order must be 1 or 2, got {order!r}")
    return theta


def luscher_flow(action, shape, xp, *, loops=("plaquette",), n_t: int = 1, n_steps: int = 8,
                 order: int = 1, **kwargs) -> GradientFlow:
    """A :class:`GradientFlow` for ``action`` on ``shape`` starting at (or, with no further
    training, equal to) the leading-order trivialising map (``order=2``: with the NLO
    single-plaquette class functions)."""
    flow = GradientFlow(shape, action.N, xp, loops=loops, n_t=n_t, n_steps=n_steps, **kwargs)
    theta = luscher_coefficients(action, flow.loop_names, flow.lengths, n_t, order=order)
    flow.load_params({"theta": theta})
    return flow
