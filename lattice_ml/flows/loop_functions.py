"""Class functions of Wilson loops ("trace functions") for the gradient flows of
:mod:`lattice_ml.flows.gradient_flow`: their derivatives, group Laplacians, vector fields and
pull-backs, written against the array API.

Terms
-----
A term is a loop type with a class function ``f`` of the loop matrix ``W``,
``F(U) = sum over the distinct loops of the type of f(W)``:

==============  =====================  ======================================================
name            ``f(W)``               ``M`` with ``d/ds f(e^{sT} W) = Re Tr(T M)``
==============  =====================  ======================================================
``re_tr``       ``Re Tr W``            ``W``
``re_tr2``      ``Re Tr W^2``          ``2 W^2``
``re_tr_sq``    ``Re (Tr W)^2``        ``2 (Tr W) W``
``abs_tr_sq``   ``|Tr W|^2``           ``2 conj(Tr W) W``
==============  =====================  ======================================================

All four are real and invariant under ``W -> g W g^dagger`` and ``W -> W^dagger``, so a loop
may be read from any of its links in either orientation. For U(1) (``W = e^{i theta}``)
``re_tr2 = re_tr_sq = cos 2 theta`` and ``abs_tr_sq = 1`` (refused by the flow: constant);
for SU(2) ``Tr W^2 = (Tr W)^2 - 2`` and ``Tr W`` is real, so the three quadratic terms are one
function up to constants.

Layout: for a link ``l = (x, mu)`` and a loop through it, ``W_l = U_mu(x) S`` is the loop read
from ``l`` (``S`` its staple, :func:`lattice_ml.smearing.stout`'s convention: the paths of
``resolve_loops`` that start with ``(mu, +1)``). The gradient of ``F`` at ``l`` (left
derivative, ``G = sum_a (d^a F) T_a``) is ``-sum_{loops through l} TA(M(W_l)) / 2``
(``sum_a T_a Re Tr(T_a M) = -TA(M)/2``).

Group Laplacian
---------------
With ``Delta = sum_a d^a d^a`` on one group element (``sum_a T_a T_a = -C 1``; for SU(N)
``sum_a (T_a)_ij (T_a)_kl = -(1/2)(delta_il delta_kj - (1/N) delta_ij delta_kl)``,
U(1): ``T T = -1/2``, so the ``1/N`` terms drop), for ``W -> e^{s T_a} W``:

    Delta Tr W      = -C Tr W
    Delta Tr W^2    = 2 Tr(T T W W) + 2 sum_a Tr(T_a W T_a W) = -2C Tr W^2 - (Tr W)^2 + Tr W^2 / N
    Delta (Tr W)^2  = 2 Tr W Delta Tr W + 2 sum_a Tr(T_a W)^2  = -2C (Tr W)^2 - Tr W^2 + (Tr W)^2 / N
    Delta |Tr W|^2  = -2C |Tr W|^2 - 2 sum_a Tr(T_a W) Tr(W^dagger T_a) = -2C |Tr W|^2 + N - |Tr W|^2 / N

(:func:`laplacian`; ``Delta`` is real, so the real parts follow). A loop that passes each of
its ``n`` links once has ``Delta_l f(W) = (Delta f)(W)`` at each of them (``f`` is a class
function, ``W_l`` a conjugate of ``W``), so the divergence of the vector field
``Z = c grad F`` is ``c n sum_W (Delta f)(W)``: again a sum of these functions over the loops.

Pull-back
---------
For a cotangent ``K`` of the vector field (``dL = -2 sum_l Re Tr(dQ_l K_l)``) and
``Q_l = -sum_f w_f TA(M_f(W_l)) / 2``, ``L = sum_l sum_f w_f Re Tr(K_l M_f(W_l))`` (a
directional derivative of ``F``; its link gradient is a Hessian-vector product). Per reading
``phi = Re Tr(K M_f(W))`` varies as ``Re Tr(R dW)`` with (:func:`class_function_cotangent`)

    re_tr: R = K,   re_tr2: R = 2 (W K + K W),   re_tr_sq: R = 2 (Tr(K W) 1 + Tr W K),
    abs_tr_sq: R = 2 (conj(Tr(K W)) 1 + conj(Tr W) K),

and ``Re Tr(R d(U_l S))`` is pulled back to every link of the loop by prefix and suffix
products of the loop (:func:`lattice_ml.smearing.stout._path_pullback`, with the first link
replaced by ``R U_l``): ``G_nu = -TA(U_nu Y_nu) / 2``.
"""

from __future__ import annotations

from ..backend import device_of, namespace
from ..gauge.paths import link, transport
from ..groups import project_algebra, trace
from ..smearing.stout import _path_pullback

__all__ = ["FUNCTIONS", "casimir", "class_function", "class_function_derivative",
           "class_function_cotangent", "laplacian", "loop_readings", "loop_function_sums",
           "loop_function_field", "loop_function_pullback"]

#: the class functions of a loop, by name (module docstring)
FUNCTIONS = {"re_tr": "Re Tr W", "re_tr2": "Re Tr W^2", "re_tr_sq": "Re (Tr W)^2",
             "abs_tr_sq": "|Tr W|^2"}


def casimir(N: int) -> float:
    """``C`` with ``sum_a T_a T_a = -C 1``: ``(N^2 - 1)/(2N)`` for SU(N), ``1/2`` for U(1)."""
    return 0.5 if N == 1 else (N * N - 1) / (2.0 * N)


def _check(name):
    if name not in FUNCTIONS:
        raise ValueError(f"unknown loop function {name!r}; choose from {', '.join(FUNCTIONS)}")


def _scalar(t, W):
    """``t [...]`` as ``[..., 1, 1]``."""
    return t[..., None, None]


def class_function(name: str, W):
    """``f(W)`` ``[...]`` (real) for ``W`` ``[..., N, N]``."""
    _check(name)
    xp = namespace(W)
    if name == "re_tr":
        return xp.real(trace(W))
    if name == "re_tr2":
        return xp.real(trace(W @ W))
    t = trace(W)
    if name == "re_tr_sq":
        return xp.real(t * t)
    return xp.real(t * xp.conj(t))


def class_function_derivative(name: str, W):
    """``M(W)`` with ``d/ds f(e^{sT} W)|_0 = Re Tr(T M)`` for every algebra element ``T``."""
    _check(name)
    if name == "re_tr":
        return W
    if name == "re_tr2":
        return 2.0 * (W @ W)
    xp = namespace(W)
    t = trace(W)
    if name == "re_tr_sq":
        return _scalar(2.0 * t, W) * W
    return _scalar(2.0 * xp.conj(t), W) * W


def class_function_cotangent(name: str, W, K):
    """``R`` with ``d Re Tr(K M(W)) = Re Tr(R dW)`` (``K`` held fixed)."""
    _check(name)
    if name == "re_tr":
        return K
    if name == "re_tr2":
        return 2.0 * (W @ K + K @ W)
    xp = namespace(W)
    N = W.shape[-1]
    eye = xp.eye(N, dtype=W.dtype, device=device_of(W))
    kw = trace(K @ W)
    t = trace(W)
    if name == "re_tr_sq":
        return 2.0 * (_scalar(kw, W) * eye + _scalar(t, W) * K)
    return 2.0 * (_scalar(xp.conj(kw), W) * eye + _scalar(xp.conj(t), W) * K)


def laplacian(name: str, N: int) -> tuple[dict, float]:
    """``(coefficients, constant)`` with ``Delta f = sum_g coefficients[g] g + constant`` (the
    group Laplacian of the module docstring; ``N = 1``: U(1))."""
    _check(name)
    C = casimir(N)
    inv = 0.0 if N == 1 else 1.0 / N
    if name == "re_tr":
        return {"re_tr": -C}, 0.0
    if name == "re_tr2":
        return {"re_tr2": -2.0 * C + inv, "re_tr_sq": -1.0}, 0.0
    if name == "re_tr_sq":
        return {"re_tr_sq": -2.0 * C + inv, "re_tr2": -1.0}, 0.0
    return {"abs_tr_sq": -2.0 * C - inv}, float(N)


def loop_readings(U, by_mu):
    """``readings[mu]``: per loop through the links of direction mu (the paths ``by_mu[mu]``,
    each starting with ``(mu, +1)``) the triple ``(path, S, W)``, ``S`` the staple and
    ``W = U_mu S`` the loop read from the link ``[batch, *sites, N, N]``."""
    D = U.shape[1]
    out = []
    for mu in range(D):
        rows = []
        start = [0] * D
        start[mu] = 1
        for path in by_mu[mu]:
            S = transport(U, path[1:], start=start)
            if S is None:
                raise ValueError("a loop function needs loops of at least two links")
            rows.append((path, S, link(U, mu) @ S))
        out.append(rows)
    return out


def loop_function_sums(readings, names, n: int) -> dict:
    """``{name: sum over the distinct loops of f(W)}`` ``[batch]`` (every loop of length ``n``
    is read once from each of its links)."""
    out = {}
    for name in names:
        tot = None
        for rows in readings:
            for _, _, W in rows:
                f = class_function(name, W)
                xp = namespace(f)
                s = xp.sum(xp.reshape(f, (f.shape[0], -1)), axis=1)
                tot = s if tot is None else tot + s
        out[name] = tot / n
    return out


def _zeros_like_links(U):
    xp = namespace(U)
    return xp.zeros_like(link(U, 0))


def loop_function_field(U, readings, weights: dict):
    """``V_l = -sum_f w_f sum_{loops through l} TA(M_f(W_l)) / 2`` ``[batch, D, *sites, N, N]``
    (host float weights ``{name: w_f}``): the gradient of ``sum_f w_f F_f`` (module
    docstring)."""
    xp = namespace(U)
    D = U.shape[1]
    out = []
    for mu in range(D):
        acc = None
        for _, _, W in readings[mu]:
            for name, w in weights.items():
                if w == 0.0:
                    continue
                t = class_function_derivative(name, W) * w
                acc = t if acc is None else acc + t
        out.append(_zeros_like_links(U) if acc is None else -0.5 * project_algebra(acc))
    return xp.stack(out, axis=1)


def loop_function_pullback(U, readings, weights: dict, K):
    """Pull-back of :func:`loop_function_field`: for ``L = -2 sum_l Re Tr(V_l K_l)``
    (``K`` an algebra field ``[batch, D, *sites, N, N]``) returns ``(G, dL/dw)``: ``G`` the
    link gradient ``sum_a (dL/ds_a) T_a`` and ``{name: dL/dw_f}`` (0-d arrays, summed over
    the batch)."""
    xp = namespace(U)
    D = U.shape[1]
    Y = [None] * D
    dw = {name: 0.0 for name in weights}
    for mu in range(D):
        Kmu = K[:, mu, ...]
        for path, S, W in readings[mu]:
            R = None
            for name, w in weights.items():
                M = class_function_derivative(name, W)
                dw[name] = dw[name] + xp.sum(xp.real(Kmu * xp.matrix_transpose(M)))
                if w == 0.0:
                    continue
                r = class_function_cotangent(name, W, Kmu) * w
                R = r if R is None else R + r
            if R is None:
                continue
            t = S @ R
            Y[mu] = t if Y[mu] is None else Y[mu] + t
            _path_pullback(U, mu, path, R @ link(U, mu), Y)
    G = [_zeros_like_links(U) if Y[nu] is None else -0.5 * project_algebra(link(U, nu) @ Y[nu])
         for nu in range(D)]
    return xp.stack(G, axis=1), dw
