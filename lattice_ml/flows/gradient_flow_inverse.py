"""The inverse map of a :class:`~lattice_ml.flows.gradient_flow.GradientFlow` and its exact
vector-Jacobian product (forward-KL training, path gradients).

The map and its log-det
-----------------------
The flow is a composition of ``n`` steps ``U_{k+1} = Phi_k(U_k; theta)`` (``k = 0 .. n-1``,
``U_0 = z``, ``U_n = U``), each with the log-det increment ``dlogJ_k(U_k; theta)`` of the
quadrature in :mod:`lattice_ml.flows.gradient_flow`. The inverse runs the steps backwards
(:meth:`GradientFlow._invert_step`) and returns

    z = U_0(U),        logdet(U) = -sum_k dlogJ_k(U_k),

the values of :meth:`GradientFlow.inverse`. :func:`inverse_vjp` is the exact vjp of this discrete
map (and of this sum), not of the continuous flow.

Cotangents
----------
Link cotangents are algebra fields in matrix form, as in :meth:`GradientFlow.vjp`: ``G = sum_a
(dL/ds_a) T_a`` for the left perturbation ``U -> exp(s T_a) U``. Write ``J_k = dU_{k+1}/dU_k`` in
these coordinates; :meth:`GradientFlow._step_backward` applied to ``(G, gamma)`` returns
``J_k^T G + gamma grad dlogJ_k`` and adds ``(dPhi_k/dtheta)^T G + gamma d dlogJ_k/dtheta`` to
its theta accumulator. For ``L = <gz, z> + <glogdet, logdet>`` the cotangent ``a_k`` of ``U_k``
(everything below ``U_k`` a function of it) obeys

    a_0 = gz - glogdet grad dlogJ_0(U_0),
    a_{k+1} = J_k^{-T} a_k - glogdet grad dlogJ_{k+1}(U_{k+1}),      gU = a_n

(no log-det term at ``U_n``), i.e. per step ``h = a_{k+1} + glogdet grad dlogJ_{k+1}`` solves

    J_k^T h + glogdet grad dlogJ_k(U_k) = c_k,         c_0 = gz, c_{k+1} = h,

one :meth:`~GradientFlow._step_backward` with ``gamma = glogdet`` on the left. ``J_k = 1 +
O(eps)``, so it is solved by the Neumann (fixed-point) iteration

    h <- h + c_k - [J_k^T h + glogdet grad dlogJ_k],          h = c_k at the start,

a contraction with the rate ``|J_k - 1| ~ eps |dZ|`` (as the inverse of the step itself),
iterated to round-off (or to the round-off floor of the backward pass: no smaller change in 8
iterations, below ``1e-8`` relative); an error names ``n_steps`` when it does not converge in 200 iterations
(or diverges). Each update is projected onto the algebra (``gz`` too): the backward pass returns
algebra fields and is blind to the rest, so a round-off component outside the algebra would
otherwise grow by itself at every iteration and compound over the steps.

Parameters: at fixed ``U_{k+1}``, ``dU_k/dtheta = -J_k^{-1} dPhi_k/dtheta``, so step ``k``
contributes ``-(dPhi_k/dtheta)^T h - glogdet d dlogJ_k/dtheta``: minus the theta part of the same
:meth:`~GradientFlow._step_backward` call at the solution ``h`` (the last iteration's; it differs
from the solution by the round-off tolerance).

Cost and memory
---------------
Each step costs about ``m`` backward passes for an ``m``-iteration solve (``m ~ log(tol) /
log(eps |dZ|)``, 10-20 for trained flows at 8 steps). The pass runs in the forward direction
(from ``z`` to ``U``), so with ``memory="constant"`` the cache holds ``z`` alone and the steps
are integrated again on the way; ``"states"`` keeps every ``U_k``; ``"stages"`` also every
step's stage record (staples, exponents, exponentials: the backward passes evaluate no vector
field). A forward cache (:meth:`GradientFlow.forward_cache`) holds the same trajectory, so
:func:`cache_from_forward` turns it into an inverse cache without inverting anything (path
gradients: ``grad_x log q`` at a sample ``x = f(z)``).
"""

from __future__ import annotations

import math

import numpy as np

from ..backend import asarray, device_of, namespace, real_dtype_of
from ..groups import project_algebra

__all__ = ["inverse_cache", "inverse_vjp", "cache_from_forward"]

_MAX_ITER = 200


def inverse_cache(flow, U):
    """``(z, logdet, cache)`` with ``(z, logdet) = flow.inverse(U)`` and the cache of
    :func:`inverse_vjp` (its content follows ``flow.memory``; module docstring)."""
    flow._check(U, "U")
    xp = namespace(U)
    eps, times = flow._times()
    ld = xp.zeros((U.shape[0],), dtype=real_dtype_of(xp, U.dtype), device=device_of(U))
    tol = flow._tol(U)
    states = [None] * flow.n_steps
    out = U
    for k in range(flow.n_steps - 1, -1, -1):
        U, d = flow._invert_step(U, times[k], eps, tol)
        ld = ld - d
        states[k] = U
    stages = None
    if flow.memory == "stages":
        stages = [flow._step(states[k], times[k], eps, keep=True)[2]
                  for k in range(flow.n_steps)]
    return U, ld, _cache(flow, U, states, stages, out)


def cache_from_forward(flow, z, cache):
    """The :func:`inverse_vjp` cache of ``U = flow.forward(z)`` from the forward cache
    ``cache`` of :meth:`GradientFlow.forward_cache` ``(z)``: the same trajectory, no
    inversion."""
    return _cache(flow, z, cache.get("states"), cache.get("stages"), cache["out"])


def _cache(flow, z, states, stages, out):
    keep_states = flow.memory != "constant" and states is not None
    return {"z": z, "states": states if keep_states else None,
            "stages": stages if keep_states and flow.memory == "stages" else None,
            "out": out}


def inverse_vjp(flow, cache, gz, glogdet, need_params: bool = True):
    """Cotangents ``(gU, gparams)`` of ``<gz, z> + <glogdet, logdet>`` for ``(z, logdet) =
    flow.inverse(U)`` (``gz`` an algebra field ``[batch, D, *sites, N, N]``, ``glogdet``
    ``[batch]``); ``gparams = {"theta": ...}`` as from :meth:`GradientFlow.vjp` (``None`` with
    ``need_params=False``). Module docstring: the recursion, the solve, the parameter part."""
    xp = namespace(gz)
    eps, times = flow._times()
    g_theta = np.zeros((flow.n_w, flow.n_t))
    tol = flow._tol(cache["z"])
    gl = xp.astype(xp.asarray(glogdet), real_dtype_of(xp, gz.dtype))
    c = project_algebra(gz)
    W = cache["z"]
    for k in range(flow.n_steps):
        if cache.get("stages") is not None:
            stages = cache["stages"][k]
        else:
            if cache.get("states") is not None:
                W = cache["states"][k]
            W, _, stages = flow._step(W, times[k], eps, keep=True)
        c, th = _solve_step_transpose(flow, stages, eps, c, gl, tol, k)
        g_theta -= th
    if not need_params:
        return c, None
    th = flow.params["theta"]
    return c, {"theta": asarray(g_theta, flow.xp, dtype=th.dtype, device=device_of(th))}


def _solve_step_transpose(flow, stages, eps, c, gl, tol, k):
    """``(h, theta part)`` with ``J_k^T h + gl grad dlogJ_k = c`` (Neumann iteration; module
    docstring) and the theta part of that backward pass at ``h``."""
    xp = namespace(c)
    scale = float(xp.max(xp.abs(c)))
    h = c
    err = best = math.inf
    stalled = 0
    for it in range(_MAX_ITER):
        th = np.zeros((flow.n_w, flow.n_t))
        with np.errstate(over="ignore", invalid="ignore"):     # a diverging series: below
            r_h = flow._step_backward(stages, eps, h, gl, th)
            h_new = h + project_algebra(c - r_h)
            prev, err = err, float(xp.max(xp.abs(h_new - h)))
        h = h_new
        if it == 0:
            scale = max(scale, float(xp.max(xp.abs(h))))
        lim = tol * scale
        # as GradientFlow._invert_step: converged when the remaining error of the linear
        # contraction, err r / (1 - r), is below tol, or stalled at round-off
        # (a stall only after a measured rate, and within 10 tol: with 1e3 tol complex64
        # accepted a 2e-3 relative error)
        r = err / prev if 0.0 < prev < math.inf else 1.0
        if err <= lim or (r < 1.0 and err * r / (1.0 - r) <= lim) or \
                (prev < math.inf and r > 0.9 and err < 10.0 * lim):
            return h, th
        # stalled at the round-off floor of the backward pass (its intermediate terms can be
        # much larger than h): no smaller change in 8 iterations, and small
        stalled = stalled + 1 if err >= best else 0
        best = min(best, err)
        if stalled >= 8 and best < max(1e-8 * scale, 10.0 * lim):
            return h, th
        if not err < 1e8 * scale:           # diverging (or not finite): no use going on
            break
    raise RuntimeError(f"the inverse vjp of gradient-flow step {k} did not converge in "
                       f"{it + 1} iterations (last change {err:.2e} of {scale:.2e}); increase "
                       f"n_steps (now {flow.n_steps}) or reduce the coefficients")
