"""Lüscher's trivialising map at leading and next-to-leading order, as coefficients of a
:class:`GradientFlow`.

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
----------------------------------------------------------------
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
Legendre coefficients ``(x_f / 2, x_f / 2)`` (``n_t >= 2``).

Next-to-leading order, the two-plaquette part
---------------------------------------------
The terms ``P != P'`` of ``dS . dS`` are, per link ``l`` and ordered pair of plaquettes through
it (both read from ``l``, ``W_a = U_l S_a``, ``W_b = U_l S_b``), ``(k^2/4) [rect - twice -
(2/N) im_im]`` (:mod:`lattice_ml.flows.loop_pairs`: ``rect = Re Tr(W_a W_b^dagger)`` the 1x2
rectangle, ``twice = Re Tr(W_a W_b)``, ``im_im = Im Tr W_a Im Tr W_b``), i.e. ``(k^2/2)[...]``
per unordered pair. The Laplacian maps the four functions ``g = (re_re, im_im, twice, rect)`` of
a pair to functions of the same pair (:func:`~lattice_ml.flows.loop_pairs.pair_laplacian`,
``Delta g_f = sum_g L_fg g``), so with ``S~^(2) = -t sum_pairs sum_f x_f g_f``

    L^T x = -(k^2 / 8C) r,       r = (0, -2/N, -1, 1)                 (SU(N), N >= 3)

(:func:`luscher_nlo_pairs`; for SU(3) ``x = (1.2202, -7.5333, -10.504, 12.626) 10^-4 beta^2``,
for U(1) in the basis below ``x = (1, 4) beta^2 / 30``). For U(1) ``twice = re_re - im_im``, ``rect = re_re + im_im`` and the
system is solved in the basis ``(re_re, im_im)``; for SU(2) ``im_im = 0``, ``twice = re_re -
rect``, basis ``(re_re, rect)``. The coefficient of ``rect`` is that of the flow's
``"rectangle"`` term (in 2D every 1x2 rectangle is the pair of exactly one link; in D > 2 the
coplanar pairs are all rectangles). In 2D the pairs of one link are the two plaquettes on either
side, so single-plaquette and pair parts together are the whole NLO map: eight functions
(``plaquette``; ``plaquette:re_tr2``, ``:re_tr_sq``, ``:abs_tr_sq``; ``rectangle``;
``plaquette_pair:re_re``, ``:im_im``, ``:twice``), the "Lüscher NL" of Bacchio et al. In
D > 2 the pairs of plaquettes in different planes (with the "chair" in place of the rectangle)
are missing: the equation splits by pair geometry, so the coplanar part is still the exact
projection, but not the whole NLO map.
"""

from __future__ import annotations

import numpy as np

from .gradient_flow import GradientFlow, casimir
from .loop_functions import laplacian
from .loop_pairs import pair_laplacian

__all__ = ["luscher_coefficients", "luscher_flow", "luscher_nlo_plaquette", "luscher_nlo_pairs"]

#: the pair functions as a basis per gauge group, and the reduction of all four onto it
_PAIR_BASIS = {1: ("re_re", "im_im"), 2: ("re_re", "rect")}
_PAIR_REDUCTION = {1: {"re_re": (1, 0), "im_im": (0, 1), "twice": (1, -1), "rect": (1, 1)},
                   2: {"re_re": (1, 0), "im_im": (0, 0), "twice": (1, -1), "rect": (0, 1)}}
_PAIR_TERMS = {"re_re": "plaquette_pair:re_re", "im_im": "plaquette_pair:im_im",
               "twice": "plaquette_pair:twice", "rect": "rectangle"}


def luscher_nlo_pairs(beta: float, N: int) -> dict:
    """``{term name: x_f}`` of the NLO two-plaquette part ``c_f(t) = x_f t`` of the trivialising
    map of the Wilson action (module docstring): the flow terms ``plaquette_pair:re_re``,
    ``plaquette_pair:im_im``, ``plaquette_pair:twice`` and ``rectangle`` (N >= 3), ``re_re``
    and ``im_im`` (U(1)), ``re_re`` and ``rectangle`` (SU(2))."""
    k = beta / N
    C = casimir(N)
    full = ("re_re", "im_im", "twice", "rect")
    basis = _PAIR_BASIS.get(N, full)
    red = _PAIR_REDUCTION.get(N, {g: tuple(float(g == b) for b in full) for g in full})
    Rm = np.array([red[g] for g in full], dtype=float)            # [4, n_basis]
    L = np.array([[pair_laplacian(f, N).get(g, 0.0) for g in full] for f in basis])
    inv = 0.0 if N == 1 else 1.0 / N
    r = np.array([0.0, -2.0 * inv, -1.0, 1.0]) @ Rm
    x = np.linalg.solve((L @ Rm).T, -(k * k / (8.0 * C)) * r)
    return {_PAIR_TERMS[f]: float(v) for f, v in zip(basis, x)}


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
    ``plaquette:re_tr_sq``, ``plaquette:abs_tr_sq`` for N >= 3; module docstring) and, when the
    flow has any ``plaquette_pair`` term, the two-plaquette part (then all the terms of
    :func:`luscher_nlo_pairs`: the full NLO map in 2D)."""
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
        if any(str(name).startswith("plaquette_pair:") for name in loop_names):
            pairs = luscher_nlo_pairs(action.beta, action.N)
            missing = [name for name in pairs if name not in loop_names]
            if missing:
                raise ValueError(f"the two-plaquette part of the NLO map needs the terms "
                                 f"{missing} in the flow (it has {list(loop_names)})")
            nlo.update(pairs)
        for name, x in nlo.items():
            theta[list(loop_names).index(name), :2] = [0.5 * x, 0.5 * x]   # x t = x (P0 + P1)/2
    elif order != 1:
        raise ValueError(f"order must be 1 or 2, got {order!r}")
    return theta


def luscher_flow(action, shape, xp, *, loops=("plaquette",), n_t: int = 1, n_steps: int = 8,
                 order: int = 1, **kwargs) -> GradientFlow:
    """A :class:`GradientFlow` for ``action`` on ``shape`` starting at (or, with no further
    training, equal to) the leading-order trivialising map (``order=2``: with the NLO
    single-plaquette class functions, and the two-plaquette part when ``loops`` has the pair
    terms: the complete NLO map in D = 2, its coplanar part only in D > 2, where the pairs of
    plaquettes in different planes are missing)."""
    flow = GradientFlow(shape, action.N, xp, loops=loops, n_t=n_t, n_steps=n_steps, **kwargs)
    theta = luscher_coefficients(action, flow.loop_names, flow.lengths, n_t, order=order)
    flow.load_params({"theta": theta})
    return flow
