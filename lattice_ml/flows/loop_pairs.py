"""Functions of two plaquettes that share a link ("plaquette pairs") for the gradient flows of
:mod:`lattice_ml.flows.gradient_flow`: values, group Laplacians in closed form, vector fields
and pull-backs, written against the array API.

Terms
-----
For a link ``l = (x, mu)`` and a direction ``nu != mu`` the two plaquettes of the ``(mu, nu)``
plane on either side of ``l`` are read from ``l`` in the same orientation (both start with
``U_l``): ``W_a = U_l S_a``, ``S_a`` along ``(nu, +1), (mu, -1), (nu, -1)``, and
``W_b = U_l S_b``, ``S_b`` along ``(nu, -1), (mu, -1), (nu, +1)``; ``A = Tr W_a``,
``B = Tr W_b``. A term ``"plaquette_pair:<name>"`` is ``F = sum over the pairs of g(W_a, W_b)``
(one pair per link and plane, ``D (D - 1) V`` pairs; ``2V`` in 2D, where every link has exactly
this one pair):

==========  =========================  ===================================================
name        ``g``                      in words
==========  =========================  ===================================================
``re_re``   ``Re A Re B``              product of the real parts of the two traces
``im_im``   ``Im A Im B``              product of the imaginary parts (same orientation)
``twice``   ``Re Tr(W_a W_b)``         the loop through ``l`` twice (8 steps, a figure eight)
(``rect``)  ``Re Tr(W_a W_b^dagger)``  the 1x2 rectangle, already the loop type "rectangle"
==========  =========================  ===================================================

All are gauge invariant and unchanged when both loops are read backwards. Only coplanar pairs
are provided: two plaquettes of different planes that share a link (D > 2) span the same algebra
with the "chair" in place of the rectangle, but are not terms here. ``rect`` is used internally
(the Laplacian of ``re_re``, ``im_im`` contains it; it is not a flow term, the flow has
``"rectangle"``). For U(1) ``twice = re_re - im_im`` and ``rect = re_re + im_im`` (refused:
``twice``); for SU(2) ``Im A = Im B = 0`` (refused: ``im_im``) and ``twice = re_re - rect``.
Needs every lattice extent >= 3 (else the two plaquettes share a second link).

Group Laplacian
---------------
With ``Delta = sum_{links, a} d^a d^a``: at the three other links of plaquette a,
``Delta_link g = Delta_a g`` (the left Laplacian of ``W_a`` with ``W_b`` fixed; the generator is
conjugated by the path to the link, which leaves ``sum_a T_a x T_a`` unchanged), likewise for b,
and at ``l`` both move: ``Delta_l = Delta_a + Delta_b + 2 X``, ``X = sum_c d^c_a d^c_b``. So
``Delta g = 4 Delta_a g + 4 Delta_b g + 2 X g``. ``Delta_a`` is ``-C`` on all four (``C`` the
Casimir), except ``rect`` where the two ``T T`` terms of the mixed derivative cancel ``l``
(``X rect = C rect``). With ``sum_a (T_a)_ij (T_a)_kl = -(1/2)(delta_il delta_kj - delta_ij
delta_kl / N)`` (U(1): no ``1/N`` terms),

    sum_c Re Tr(T_c X) Re Tr(T_c Y) = (1/4)[Re Tr(X Y^dagger) - Re Tr(X Y) - (2/N) Im Tr X Im Tr Y]
    sum_c Im Tr(T_c X) Im Tr(T_c Y) = (1/4)[Re Tr(X Y^dagger) + Re Tr(X Y) - (2/N) Re Tr X Re Tr Y]
    sum_c Tr(T_c X T_c Y)           = -(1/2)[Tr X Tr Y - Tr(X Y) / N]

give (:func:`pair_laplacian`)

    Delta re_re = -8C re_re + (rect - twice) / 2 - im_im / N
    Delta im_im = -8C im_im + (rect + twice) / 2 - re_re / N
    Delta twice = (-8C + 1/N) twice - re_re + im_im
    Delta rect  = -6C rect

with no constants: a closed space of four functions, and since every pair is mapped to
functions of the same pair, ``div Z = sum_f c_f sum_pairs (Delta g_f)`` is again in closed form.

Gradients and pull-backs
------------------------
Every ``g`` is a real-linear function of loop traces read from ``l``: ``re_re``, ``im_im``
through ``A`` and ``B`` (``d g = Re(alpha dA) + Re(beta dB)``, ``alpha = Re B`` or
``-i Im B``), ``twice`` and ``rect`` through the traces of the 8-step paths ``a + b`` and
``a + reversed(b)``. The gradient of ``Re(c Tr W)`` for a path ``W = F_1 ... F_n`` (``F_i``
the links or their daggers, ``c`` a complex field per pair) is ``dL = sum_i Re Tr(R_i dF_i)``
with ``R_i = c suf_i pre_i`` (prefix and suffix products), placed at each link:
``G_nu = -TA(U_nu Y_nu) / 2``. The pull-back of the vector field (a Hessian-vector product,
``L = sum_f w_f D_K F_f`` with ``D_K`` the derivative along the left perturbation ``K``) uses
the tangents ``dF_i = K_i F_i`` (forward step) or ``-F_i K_i`` (backward): with the tangents
``dpre``, ``dsuf`` of the prefix and suffix products, ``Re(c Tr dW)`` has
``R_i = c (suf_i dpre_i + dsuf_i pre_i)`` plus, through ``dF_i``, ``c Q K_i`` (forward) or
``-c K_i Q`` (backward), ``Q = suf_i pre_i``; the coefficients of ``re_re``, ``im_im`` depend
on the partner's trace, which adds a first-order term with the partner's tangent.
"""

from __future__ import annotations

from ..backend import namespace
from ..gauge.paths import link, shift_by
from ..groups import dagger, project_algebra, trace
from .loop_functions import casimir

__all__ = ["PAIR_FUNCTIONS", "pair_laplacian", "pair_readings", "pair_sums", "pair_field",
           "pair_pullback", "check_pair_terms"]

#: the flow terms of two plaquettes sharing a link, by name (module docstring)
PAIR_FUNCTIONS = {"re_re": "Re Tr W_a Re Tr W_b", "im_im": "Im Tr W_a Im Tr W_b",
                  "twice": "Re Tr(W_a W_b)"}
_ALL = ("re_re", "im_im", "twice", "rect")


def check_pair_terms(names, N: int, shape) -> None:
    """Refuse unknown names, the functions that are constant or dependent for U(1) / SU(2),
    and lattices with an extent below 3 (module docstring)."""
    for name in names:
        if name not in PAIR_FUNCTIONS:
            raise ValueError(f"unknown plaquette-pair function {name!r}; choose from "
                             f"{', '.join(PAIR_FUNCTIONS)}")
    if N == 1 and "twice" in names:
        raise ValueError("for U(1) Re Tr(W_a W_b) = re_re - im_im: give re_re and im_im")
    if N == 2 and "im_im" in names:
        raise ValueError("for SU(2) the traces are real: im_im is zero")
    if min(shape) < 3:
        raise ValueError(f"plaquette pairs need every lattice extent >= 3, got {list(shape)}")


def pair_laplacian(name: str, N: int) -> dict:
    """``{g: coefficient}`` with ``Delta g_name = sum_g coefficient g`` over ``re_re``,
    ``im_im``, ``twice``, ``rect`` (the Laplacian over all links; no constant)."""
    C = casimir(N)
    inv = 0.0 if N == 1 else 1.0 / N
    if name == "re_re":
        return {"re_re": -8.0 * C, "rect": 0.5, "twice": -0.5, "im_im": -inv}
    if name == "im_im":
        return {"im_im": -8.0 * C, "rect": 0.5, "twice": 0.5, "re_re": -inv}
    if name == "twice":
        return {"twice": -8.0 * C + inv, "re_re": -1.0, "im_im": 1.0}
    if name == "rect":
        return {"rect": -6.0 * C}
    raise ValueError(f"unknown plaquette-pair function {name!r}")


def _paths(mu, nu):
    pa = ((mu, 1), (nu, 1), (mu, -1), (nu, -1))
    pb = ((mu, 1), (nu, -1), (mu, -1), (nu, 1))
    return pa, pb


def _factors(U, path):
    """``[(F_i, nu, s, site)]``: the factors of the path from every site ``x`` (the link or its
    dagger, ``[batch, *sites, N, N]``) and the link ``(x + site, nu)`` each one is."""
    D = U.shape[1]
    pos = [0] * D
    out = []
    for nu, s in path:
        if s > 0:
            out.append((shift_by(link(U, nu), pos), nu, s, tuple(pos)))
            pos[nu] += 1
        else:
            pos[nu] -= 1
            out.append((dagger(shift_by(link(U, nu), pos)), nu, s, tuple(pos)))
    return out


def _reversed(fac):
    return [(dagger(F), nu, -s, site) for F, nu, s, site in reversed(fac)]


def _prod(fs):
    out = fs[0]
    for F in fs[1:]:
        out = out @ F
    return out


def pair_readings(U):
    """Per plane ``(mu, nu)``, ``nu != mu``: ``{"a": factors, "b": factors, "A": Tr W_a,
    "B": Tr W_b, "twice": Tr(W_a W_b), "rect": Tr(W_a W_b^dagger)}`` (traces
    ``[batch, *sites]``, complex) for the pairs at the links ``(x, mu)``."""
    D = U.shape[1]
    out = []
    for mu in range(D):
        for nu in range(D):
            if nu == mu:
                continue
            pa, pb = _paths(mu, nu)
            fa, fb = _factors(U, pa), _factors(U, pb)
            Wa, Wb = _prod([f[0] for f in fa]), _prod([f[0] for f in fb])
            out.append({"mu": mu, "nu": nu, "a": fa, "b": fb, "A": trace(Wa), "B": trace(Wb),
                        "twice": trace(Wa @ Wb), "rect": trace(Wa @ dagger(Wb))})
    return out


def _values(r, name):
    xp = namespace(r["A"])
    if name == "re_re":
        return xp.real(r["A"]) * xp.real(r["B"])
    if name == "im_im":
        return xp.imag(r["A"]) * xp.imag(r["B"])
    return xp.real(r[name])


def pair_sums(readings, names) -> dict:
    """``{name: sum over the pairs of g_name}`` ``[batch]`` (``names`` from ``re_re``,
    ``im_im``, ``twice``, ``rect``)."""
    out = {}
    for name in names:
        tot = None
        for r in readings:
            g = _values(r, name)
            xp = namespace(g)
            s = xp.sum(xp.reshape(g, (g.shape[0], -1)), axis=1)
            tot = s if tot is None else tot + s
        out[name] = tot
    return out


def _scal(c):
    return c[..., None, None]


def _coeff(xp, re, im, w_re, w_im, dtype):
    """``w_re re - i w_im im`` as a complex field (``re``, ``im`` real fields)."""
    c = None
    if w_re != 0.0:
        c = xp.astype(re, dtype) * w_re
    if w_im != 0.0:
        t = xp.astype(im, dtype) * (-1j * w_im)
        c = t if c is None else c + t
    return c


def _accumulate(Y, R, nu, s, site):
    G = R if s > 0 else dagger(R)
    G = shift_by(G, [-d for d in site])
    Y[nu] = G if Y[nu] is None else Y[nu] + G


def _pullback(fac, Y, c1, c2=None, dfac=None, Kf=None):
    """Add to ``Y`` the cotangents of ``Re(c1 Tr W) + Re(c2 Tr dW)`` (``W`` the product of the
    factors, ``dW`` its tangent from the factor tangents ``dfac``; ``c1``, ``c2`` complex
    fields or scalars held fixed, either may be None; module docstring)."""
    n = len(fac)
    F = [f[0] for f in fac]
    pre, suf = [None] * n, [None] * n
    for i in range(1, n):
        pre[i] = F[0] if i == 1 else pre[i - 1] @ F[i - 1]
    for i in range(n - 2, -1, -1):
        suf[i] = F[n - 1] if i == n - 2 else F[i + 1] @ suf[i + 1]
    dpre, dsuf = [None] * n, [None] * n
    if c2 is not None:
        for i in range(1, n):
            t = dfac[i - 1] if pre[i - 1] is None else pre[i - 1] @ dfac[i - 1]
            dpre[i] = t if dpre[i - 1] is None else dpre[i - 1] @ F[i - 1] + t
        for i in range(n - 2, -1, -1):
            t = dfac[i + 1] if suf[i + 1] is None else dfac[i + 1] @ suf[i + 1]
            dsuf[i] = t if dsuf[i + 1] is None else F[i + 1] @ dsuf[i + 1] + t
    for i, (_, nu, s, site) in enumerate(fac):
        if pre[i] is None:
            Q = suf[i]
        elif suf[i] is None:
            Q = pre[i]
        else:
            Q = suf[i] @ pre[i]
        R = None
        if c1 is not None:
            R = _mul(c1, Q)
        if c2 is not None:
            terms = []
            if dpre[i] is not None:
                terms.append(dpre[i] if suf[i] is None else suf[i] @ dpre[i])
            if dsuf[i] is not None:
                terms.append(dsuf[i] if pre[i] is None else dsuf[i] @ pre[i])
            terms.append(Q @ Kf[i] if s > 0 else -(Kf[i] @ Q))
            t = terms[0]
            for x in terms[1:]:
                t = t + x
            t = _mul(c2, t)
            R = t if R is None else R + t
        _accumulate(Y, R, nu, s, site)


def _mul(c, M):
    return M * c if isinstance(c, (int, float, complex)) else _scal(c) * M


def _gradient(U, Y):
    xp = namespace(U)
    D = U.shape[1]
    zero = xp.zeros_like(link(U, 0))
    return xp.stack([zero if Y[nu] is None else -0.5 * project_algebra(link(U, nu) @ Y[nu])
                     for nu in range(D)], axis=1)


def pair_field(U, readings, weights: dict):
    """The gradient ``G = sum_a (d^a F) T_a`` of ``F = sum_f w_f sum_pairs g_f``
    ``[batch, D, *sites, N, N]`` (host float weights over ``re_re``, ``im_im``, ``twice``,
    ``rect``)."""
    xp = namespace(U)
    w = {g: float(weights.get(g, 0.0)) for g in _ALL}
    Y = [None] * U.shape[1]
    for r in readings:
        A, B = r["A"], r["B"]
        ca = _coeff(xp, xp.real(B), xp.imag(B), w["re_re"], w["im_im"], A.dtype)
        cb = _coeff(xp, xp.real(A), xp.imag(A), w["re_re"], w["im_im"], A.dtype)
        if ca is not None:
            _pullback(r["a"], Y, ca)
            _pullback(r["b"], Y, cb)
        if w["twice"] != 0.0:
            _pullback(r["a"] + r["b"], Y, w["twice"])
        if w["rect"] != 0.0:
            _pullback(r["a"] + _reversed(r["b"]), Y, w["rect"])
    return _gradient(U, Y)


def _tangents(fac, K):
    """``dF_i``: ``K F`` for a forward factor, ``-F K`` for a backward one (``K`` at the link),
    and the ``K_i`` themselves."""
    Kf, dF = [], []
    for F, nu, s, site in fac:
        Ki = shift_by(K[:, nu, ...], list(site))
        Kf.append(Ki)
        dF.append(Ki @ F if s > 0 else -(F @ Ki))
    return dF, Kf


def _tangent_trace(fac, dfac):
    """``Tr dW`` for ``W`` the product of the factors."""
    n = len(fac)
    P, dP = None, None
    for i in range(n):
        F, dF = fac[i][0], dfac[i]
        dP = (dF if P is None else P @ dF) if dP is None else dP @ F + (P @ dF)
        P = F if P is None else P @ F
    return trace(dP)


def pair_pullback(U, readings, weights: dict, K):
    """Pull-back of :func:`pair_field`: for ``L = -2 sum_l Re Tr(V_l K_l)`` (``V`` the field
    with ``weights``, ``K`` an algebra field ``[batch, D, *sites, N, N]``), i.e. ``L = sum_f w_f
    D_K F_f``, returns ``(G, dL/dw)``: the link gradient of ``L`` and ``{name: D_K F_name}``
    (0-d arrays summed over the batch) for the names of ``weights``."""
    xp = namespace(U)
    w = {g: float(weights.get(g, 0.0)) for g in _ALL}
    Y = [None] * U.shape[1]
    dw = {name: 0.0 for name in weights}
    for r in readings:
        A, B = r["A"], r["B"]
        fa, fb = r["a"], r["b"]
        fr = _reversed(fb)
        dfa, Ka = _tangents(fa, K)
        dfb, Kb = _tangents(fb, K)
        dfr = [Ki @ F if s > 0 else -(F @ Ki) for (F, _, s, _), Ki in zip(fr, reversed(Kb))]
        dA, dB = _tangent_trace(fa, dfa), _tangent_trace(fb, dfb)
        if "re_re" in dw:
            dw["re_re"] = dw["re_re"] + xp.sum(xp.real(B) * xp.real(dA) +
                                               xp.real(A) * xp.real(dB))
        if "im_im" in dw:
            dw["im_im"] = dw["im_im"] + xp.sum(xp.imag(B) * xp.imag(dA) +
                                               xp.imag(A) * xp.imag(dB))
        if "twice" in dw:
            dw["twice"] = dw["twice"] + xp.sum(xp.real(_tangent_trace(fa + fb, dfa + dfb)))
        if "rect" in dw:
            dw["rect"] = dw["rect"] + xp.sum(xp.real(_tangent_trace(fa + fr, dfa + dfr)))
        dt = A.dtype
        c2a = _coeff(xp, xp.real(B), xp.imag(B), w["re_re"], w["im_im"], dt)
        if c2a is not None:
            c2b = _coeff(xp, xp.real(A), xp.imag(A), w["re_re"], w["im_im"], dt)
            c1a = _coeff(xp, xp.real(dB), xp.imag(dB), w["re_re"], w["im_im"], dt)
            c1b = _coeff(xp, xp.real(dA), xp.imag(dA), w["re_re"], w["im_im"], dt)
            _pullback(fa, Y, c1a, c2a, dfa, Ka)
            _pullback(fb, Y, c1b, c2b, dfb, Kb)
        if w["twice"] != 0.0:
            _pullback(fa + fb, Y, None, w["twice"], dfa + dfb, Ka + Kb)
        if w["rect"] != 0.0:
            _pullback(fa + fr, Y, None, w["rect"], dfa + dfr, Ka + list(reversed(Kb)))
    return _gradient(U, Y), dw
