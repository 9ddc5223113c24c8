"""Stout smearing (Morningstar & Peardon, PRD 69 (2004) 054501) for U(1) and SU(N), any loop set,
with an exact hand-written backward pass for the links and the weights.

Conventions (see docs/smearing.md)
----------------------------------
Links ``U[batch, D, *sites, N, N]``; ``U_mu(x)`` transports from ``x + mu_hat`` to ``x``. For a
closed loop through ``U_mu(x)`` that starts with ``(mu, +1)`` the *staple* ``S`` is the rest of
the loop (:func:`lattice_ml.gauge.staples`), so ``U_mu(x) S`` is the loop matrix at ``x``. One
stout step is

    W_mu(x) = sum_k rho_k(mu, x) sum_{loops of type k through U_mu(x)} S,
    Z_mu(x) = U_mu(x) W_mu(x),
    Q_mu(x) = -TA(Z_mu(x)),                 U'_mu(x) = exp(Q_mu(x)) U_mu(x).

In Morningstar-Peardon's notation ``C = W^dagger`` (their staples run from x to x + mu),
``Omega = C U^dagger = Z^dagger`` and ``i Q_MP = TA(Omega) = Q``: the same map. With this sign a
small positive rho moves every link towards its staples: ``d/drho Re Tr(U'_mu(x) W_mu(x)) =
|TA(Z)|^2 >= 0`` at rho = 0, and for the plaquette loop set with one rho the step is an Euler
step of the Wilson flow (``Q = (2N/beta) rho F_Wilson``).

Force convention
----------------
A scalar L of the links has the *force* ``F = -dL/dU`` as a Lie-algebra field, exactly as
:meth:`lattice_ml.gauge.GaugeAction.force`: for every algebra direction X at one link,
``d/ds L(exp(s X) U) |_{s=0} = 2 Re Tr(X F)``, i.e. ``-2 Re Tr(T_a F) = -dL/ds_a`` along each
generator. So ``stout_backward(U, rho, action.force(U'))`` is the force of ``S(U'(U))``.

Backward recursion (one layer; E = exp(Q), F' the force at U'):

    B       = E^dagger F'
    Lambda  = TA(L(Q, B))                   (exact exp derivative, :mod:`.expderiv`)
    F_mu(x) = E^dagger F' E  -  TA(U_mu(x) [W_mu(x) Lambda_mu(x) + Y_mu(x)])
    dL/drho_k(mu, x) = -2 Re Tr(Lambda_mu(x) U_mu(x) S_k,mu(x))

where ``Y`` collects, for every loop through every link ``U_mu(x)`` with its first link replaced
by ``M = rho Lambda_mu(x) U_mu(x)``, the loop opened at each of its other links (forward steps
``nu``: the product from that link's end round to its start, added to Y_nu at the link's site;
backward steps: the dagger of it). See docs/theory/stout-backward.md for the derivation.
"""

from __future__ import annotations

from ..backend import asarray, device_of, namespace, real_dtype_of
from ..dispatch import dispatchable
from ..gauge.paths import link, shift_by, transport
from ..groups import dagger, expm_algebra, project_algebra
from .expderiv import expm_pullback
from .loop_sets import _check_closed, _named, resolve_loops

__all__ = ["stout_smear", "stout_backward", "stout_generator", "stout_generator_pullback",
           "StoutContext", "direction_weights", "stout_plaquette_layer",
           "stout_plaquette_layer_backward"]


def direction_weights(D: int, rho_s: float, rho_t: float | None = None) -> list[float]:
    """Per-direction weights ``[rho_t, rho_s, ..., rho_s]`` (time is direction 0)."""
    return [rho_s if rho_t is None else rho_t] + [rho_s] * (D - 1)


# ------------------------------------------------------------------------------------------
# weights
# ------------------------------------------------------------------------------------------
def _canonical_rho(r, U, xp):
    """rho as a real array broadcastable to ``[batch, D, *sites]`` (canonical, ndim 2 + D),
    and the shape it was given in."""
    D = U.shape[1]
    rdt = real_dtype_of(xp, U.dtype)
    a = asarray(r, xp, dtype=rdt, device=device_of(U))
    given = tuple(a.shape)
    sites = tuple(U.shape[2:2 + D])
    if a.ndim == 0:
        canon = (1,) * (2 + D)
    elif a.ndim == 1:
        canon = (1, a.shape[0]) + (1,) * D
    elif a.ndim == 1 + D:
        canon = (1,) + given
    elif a.ndim == 2 + D:
        canon = given
    else:
        raise ValueError(f"a weight must be a scalar, [D], [D, *sites] or [batch, D, *sites]; "
                         f"got shape {given} for links {tuple(U.shape)}")
    full = (U.shape[0], D) + sites
    for c, f in zip(canon, full):
        if c not in (1, f):
            raise ValueError(f"weight of shape {given} does not broadcast to [batch, D, *sites] = "
                             f"{list(full)}")
    return xp.reshape(a, canon), given


def _rho_at(R, mu, cdt, xp):
    """The weights of direction mu as ``[batch|1, *sites|1, 1, 1]`` complex."""
    r = R[:, mu if R.shape[1] > 1 else 0, ...]
    return xp.astype(r, cdt)[..., None, None]


def _reduce_to(g, canon_shape, given, xp):
    """Sum the full ``[batch, D, *sites]`` gradient g over the broadcast axes of rho."""
    axes = tuple(i for i, (c, f) in enumerate(zip(canon_shape, g.shape)) if c == 1 and f != 1)
    if axes:
        g = xp.sum(g, axis=axes, keepdims=True)
    return xp.reshape(g, given)


def _normalise_rho(rho, loops, n_types):
    """One weight per loop type: ``loops`` a single type -> ``rho`` is one weight."""
    if isinstance(loops, (str, dict)):
        return [rho], True
    if not isinstance(rho, (list, tuple)) or len(rho) != n_types:
        raise ValueError(f"give a list with one weight per loop type ({n_types} types), got "
                         f"{rho!r}")
    return list(rho), False


# ------------------------------------------------------------------------------------------
# one layer
# ------------------------------------------------------------------------------------------
def _staple(U, mu, path):
    """The staple of a loop starting with (mu, +1): the rest of the loop begun at x + mu_hat;
    None for a one-link loop (winding around an extent-1 direction)."""
    start = [0] * U.shape[1]
    start[mu] = 1
    return transport(U, path[1:], start=start)


def _staple_sum(U, mu, paths):
    total = None
    for p in paths:
        s = _staple(U, mu, p)
        if s is None:
            xp = namespace(U)
            N = U.shape[-1]
            s = xp.zeros_like(link(U, mu)) + xp.eye(N, dtype=U.dtype, device=device_of(U))
        total = s if total is None else total + s
    return total


class StoutContext:
    """What one forward layer keeps for the backward pass.

    ``keep="links"``: only the input links (the backward recomputes staples and exp).
    ``keep="all"``: also, per direction, the staple sum of every loop type, ``Q`` and
    ``exp(Q)`` (``(n_types + 2)`` link fields more).
    """

    def __init__(self, U, keep: str):
        self.U = U
        self.keep = keep
        self.staples = None   # [mu][k] staple-sum fields or None (no loops)
        self.Q = None         # [mu]
        self.E = None         # [mu]
        self.fields = None    # plaquette loop set: (S, Q, E) as [batch, D, *sites, N, N]


def _layer_pieces(U, R, loopsets, xp, method):
    """Per mu: staples per type, Q, E (exp Q)."""
    D = U.shape[1]
    cdt = U.dtype
    S_all, Q_all, E_all = [], [], []
    for mu in range(D):
        S_mu = []
        W = None
        for k, by_mu in enumerate(loopsets):
            paths = by_mu[mu]
            if not paths:
                S_mu.append(None)
                continue
            S = _staple_sum(U, mu, paths)
            S_mu.append(S)
            t = _rho_at(R[k], mu, cdt, xp) * S
            W = t if W is None else W + t
        S_all.append(S_mu)
        if W is None:
            Q_all.append(None)
            E_all.append(None)
            continue
        Q = -project_algebra(link(U, mu) @ W)
        Q_all.append(Q)
        E_all.append(expm_algebra(Q, method=method))
    return S_all, Q_all, E_all


def _prepare(U, rho, loops):
    xp = namespace(U)
    if U.ndim < 5 or U.shape[1] != U.ndim - 4 or U.shape[-1] != U.shape[-2]:
        raise ValueError(f"links of shape {tuple(U.shape)} are not in the layout "
                         "[batch, D, *sites, N, N]")
    D = U.shape[1]
    loopsets = resolve_loops(loops, D)
    for by_mu in loopsets:
        _check_closed(by_mu, tuple(U.shape[2:2 + D]))
    rhos, single = _normalise_rho(rho, loops, len(loopsets))
    canon = [_canonical_rho(r, U, xp) for r in rhos]
    R = [c[0] for c in canon]
    return xp, loopsets, R, canon, single


def _exp_methods(method, N):
    if method == "auto":
        return "auto", "auto"
    if method == "eigh":
        return "eigh", "eigh"
    if method == "taylor":
        return "taylor", "block"
    return method, method


def stout_smear(U, rho, loops="plaquette", *, keep: str | None = None, method: str = "auto"):
    """One stout-smearing step ``U'_mu(x) = exp(Q_mu(x)) U_mu(x)``, ``Q = -TA(U W)``.

    Parameters
    ----------
    U : array ``[batch, D, *sites, N, N]`` (complex; N = 1 for U(1))
    rho : weight, or a list with one weight per loop type. A weight is a scalar, a ``[D]``
        array (one per link direction; :func:`direction_weights` builds ``[rho_t, rho_s, ...]``),
        a ``[D, *sites]`` or a ``[batch, D, *sites]`` array (axes of length 1 broadcast).
    loops : a loop type or a sequence of loop types: ``"plaquette"``, ``"rectangle"``,
        ``"chair"``, or a dict ``{mu: [paths starting with (mu, +1)]}`` (see
        :func:`custom_loops`, :func:`restrict_loops`, :func:`polyakov_loops`).
    keep : None, ``"links"`` or ``"all"``: if given, return ``(U', context)`` for
        :func:`stout_backward` (see :class:`StoutContext` for what is kept).
    method : exp method of :func:`lattice_ml.groups.expm_algebra` (``"auto"``).

    Returns ``U'`` ``[batch, D, *sites, N, N]`` (or ``(U', ctx)``).
    """
    xp, loopsets, R, _, _ = _prepare(U, rho, loops)
    if keep not in (None, "links", "all"):
        raise ValueError(f"keep must be None, 'links' or 'all', not {keep!r}")
    D = U.shape[1]
    if _plaquette_only(loopsets, D):
        out, S, Q, E = stout_plaquette_layer(U, R[0], keep == "all", method)
        if keep is None:
            return out
        ctx = StoutContext(U, keep)
        if keep == "all":
            ctx.fields = (S, Q, E)
            ctx.staples = [[S[:, mu, ...]] for mu in range(D)]
            ctx.Q = [Q[:, mu, ...] for mu in range(D)]
            ctx.E = [E[:, mu, ...] for mu in range(D)]
        return out, ctx
    em, _ = _exp_methods(method, U.shape[-1])
    S_all, Q_all, E_all = _layer_pieces(U, R, loopsets, xp, em)
    out = xp.stack([link(U, mu) if E_all[mu] is None else E_all[mu] @ link(U, mu)
                    for mu in range(D)], axis=1)
    if keep is None:
        return out
    ctx = StoutContext(U, keep)
    if keep == "all":
        ctx.staples, ctx.Q, ctx.E = S_all, Q_all, E_all
    return out, ctx


def _plaquette_only(loopsets, D: int) -> bool:
    return len(loopsets) == 1 and loopsets[0] == _named("plaquette", D)


@dispatchable("stout_plaquette_forward")
def stout_plaquette_layer(U, rho, keep_fields: bool = False, method: str = "auto"):
    """One stout layer with the plaquette loop set: the hot path of :func:`stout_smear`.

    ``U`` ``[batch, D, *sites, N, N]``; ``rho`` real, ``[batch|1, D|1, *sites|1]`` (ndim 2 + D:
    one weight per link after broadcasting). Returns ``(U', S, Q, E)``: with ``keep_fields`` the
    unweighted plaquette staple sum ``S``, ``Q = -TA(rho U S)`` and ``E = exp(Q)``, each
    ``[batch, D, *sites, N, N]``; otherwise ``(U', None, None, None)``. Dispatched (op
    ``"stout_plaquette_forward"``): 4D SU(3) NumPy/CuPy links run a Numba kernel.
    """
    xp = namespace(U)
    D = U.shape[1]
    em, _ = _exp_methods(method, U.shape[-1])
    S_all, Q_all, E_all = _layer_pieces(U, [rho], [_named("plaquette", D)], xp, em)
    out = xp.stack([E_all[mu] @ link(U, mu) for mu in range(D)], axis=1)
    if not keep_fields:
        return out, None, None, None
    return (out, xp.stack([S_all[mu][0] for mu in range(D)], axis=1), xp.stack(Q_all, axis=1),
            xp.stack(E_all, axis=1))


@dispatchable("stout_plaquette_backward")
def stout_plaquette_layer_backward(U, rho, force, fields=None, method: str = "auto"):
    """Backward pass of :func:`stout_plaquette_layer`: ``(F, g)``, the force ``F = -dL/dU``
    ``[batch, D, *sites, N, N]`` and ``g = dL/drho`` per link ``[batch, D, *sites]`` (real, not
    yet summed over the axes along which rho broadcasts). ``fields``: the ``(S, Q, E)`` kept by
    the forward, or None (recomputed). Dispatched (op ``"stout_plaquette_backward"``).
    """
    xp = namespace(U)
    D = U.shape[1]
    loopsets = [_named("plaquette", D)]
    em, dm = _exp_methods(method, U.shape[-1])
    if fields is None:
        S_all, Q_all, E_all = _layer_pieces(U, [rho], loopsets, xp, em)
    else:
        S, Q, E = fields
        S_all = [[S[:, mu, ...]] for mu in range(D)]
        Q_all = [Q[:, mu, ...] for mu in range(D)]
        E_all = [E[:, mu, ...] for mu in range(D)]
    F, grads = _backward_core(U, [rho], force, loopsets, S_all, Q_all, E_all, dm, xp)
    return F, grads[0]


def _path_pullback(U, mu, path, M, Y):
    """Add to ``Y[nu]`` the loop ``path`` (first link replaced by M at every x) opened at each of
    its other links: the product from the link's end round to its start (forward step), or its
    dagger (backward step), placed at the link's site."""
    D = U.shape[1]
    pos = [0] * D
    pos[mu] = 1
    A, where = [], []
    for nu, s in path[1:]:
        if s > 0:
            A.append(shift_by(link(U, nu), pos))
            where.append((nu, s, tuple(pos)))
            pos[nu] += 1
        else:
            pos[nu] -= 1
            A.append(dagger(shift_by(link(U, nu), pos)))
            where.append((nu, s, tuple(pos)))
    m = len(A)
    suf = [None] * m
    for i in range(m - 2, -1, -1):
        suf[i] = A[i + 1] if suf[i + 1] is None else A[i + 1] @ suf[i + 1]
    pre = M
    for i in range(m):
        G = pre if suf[i] is None else suf[i] @ pre
        nu, s, site = where[i]
        if s < 0:
            G = dagger(G)
        G = shift_by(G, [-d for d in site])
        Y[nu] = G if Y[nu] is None else Y[nu] + G
        if i < m - 1:
            pre = pre @ A[i]


def stout_backward(U, rho, force, loops="plaquette", *, context: StoutContext | None = None,
                   method: str = "auto"):
    """Backward pass of :func:`stout_smear`: the force at the thin links and dL/drho.

    Parameters
    ----------
    U, rho, loops, method : as given to :func:`stout_smear` (U: the thin input links).
    force : ``[batch, D, *sites, N, N]`` algebra field ``F' = -dL/dU'`` at the smeared links, in
        the convention of :meth:`lattice_ml.gauge.GaugeAction.force`. A batch of configurations
        means ``L = sum_b L_b``.
    context : the context returned by ``stout_smear(..., keep=...)`` (optional; with
        ``keep="all"`` the staples and exponentials are reused, otherwise recomputed).

    Returns ``(F, grad_rho)``: ``F = -dL/dU`` ``[batch, D, *sites, N, N]`` and ``dL/drho`` in the
    shape of rho (one array per loop type, a list if rho was a list; a weight that broadcast
    over axes gets the sum over them).
    """
    xp, loopsets, R, canon, single = _prepare(U, rho, loops)
    em, dm = _exp_methods(method, U.shape[-1])
    D = U.shape[1]
    keep_all = context is not None and context.keep == "all"
    if _plaquette_only(loopsets, D):
        fields = None
        if keep_all:
            fields = context.fields
            if fields is None:
                fields = (xp.stack([context.staples[mu][0] for mu in range(D)], axis=1),
                          xp.stack(context.Q, axis=1), xp.stack(context.E, axis=1))
        F, g = stout_plaquette_layer_backward(U, R[0], force, fields, method)
        grad = _reduce_to(g, tuple(R[0].shape), canon[0][1], xp)
        return F, (grad if single else [grad])
    if keep_all:
        S_all, Q_all, E_all = context.staples, context.Q, context.E
    else:
        S_all, Q_all, E_all = _layer_pieces(U, R, loopsets, xp, em)
    F, full = _backward_core(U, R, force, loopsets, S_all, Q_all, E_all, dm, xp)
    grads = [_reduce_to(full[k], tuple(R[k].shape), canon[k][1], xp) for k in range(len(full))]
    return F, (grads[0] if single else grads)


def _backward_core(U, R, force, loopsets, S_all, Q_all, E_all, dm, xp):
    """``(F, [g_k])``: the force at the thin links and, per loop type, dL/drho at every link
    ``[batch, D, *sites]`` (see the module docstring)."""
    D = U.shape[1]
    adj = [None] * D
    Lam = [None] * D
    for mu in range(D):
        Fp = force[:, mu, ...]
        if E_all[mu] is None:
            adj[mu] = Fp
            continue
        E = E_all[mu]
        B = dagger(E) @ Fp
        adj[mu] = B @ E
        Lam[mu] = expm_pullback(Q_all[mu], B, method=dm)
    F_q, grads = _generator_pullback(U, R, Lam, loopsets, S_all, xp)
    F = xp.stack([adj[nu] if F_q[nu] is None else adj[nu] + F_q[nu] for nu in range(D)], axis=1)
    return F, grads


def _generator_pullback(U, R, Lam, loopsets, S_all, xp):
    """Pull-back through ``Q_mu = -TA(U_mu W_mu)`` alone: for the algebra fields ``Lam[mu]``
    (``None``: no contribution), the fields ``-TA(U_nu Y_nu)`` per direction (``None`` where
    nothing reaches) and, per loop type, ``-2 Re Tr(Lam_mu U_mu S_k,mu)`` per link
    ``[batch, D, *sites]`` (module docstring: the recursion without its exp part)."""
    D = U.shape[1]
    cdt = U.dtype
    rdt = real_dtype_of(xp, cdt)
    zeros_g = None
    Y = [None] * D
    g = [[None] * D for _ in loopsets]
    for mu in range(D):
        if Lam[mu] is None:
            continue
        LU = Lam[mu] @ link(U, mu)
        Wl = None
        for k, by_mu in enumerate(loopsets):
            S = S_all[mu][k]
            if S is None:
                continue
            rk = _rho_at(R[k], mu, cdt, xp)
            # dL/drho = -2 Re Tr(S Lambda U)
            P = S * xp.matrix_transpose(LU)
            g[k][mu] = -2.0 * xp.sum(xp.reshape(xp.real(P), tuple(P.shape[:-2]) + (-1,)),
                                     axis=-1)
            t = rk * (S @ Lam[mu])
            Wl = t if Wl is None else Wl + t
            Mk = rk * LU
            for path in by_mu[mu]:
                _path_pullback(U, mu, path, Mk, Y)
        if Wl is not None:
            Y[mu] = Wl if Y[mu] is None else Y[mu] + Wl
    F = [None if Y[nu] is None else -project_algebra(link(U, nu) @ Y[nu]) for nu in range(D)]
    grads = []
    batch_sites = (U.shape[0],) + tuple(U.shape[2:2 + D])
    for k in range(len(loopsets)):
        parts = []
        for mu in range(D):
            if g[k][mu] is None:
                if zeros_g is None:
                    zeros_g = xp.zeros(batch_sites, dtype=rdt, device=device_of(U))
                parts.append(zeros_g)
            else:
                parts.append(g[k][mu])
        grads.append(xp.stack(parts, axis=1))
    return F, grads


@dispatchable("stout_generator")
def stout_generator(U, rho, loops="plaquette", staples=None):
    """The exponent of one stout step, ``Q_mu(x) = -TA(U_mu(x) W_mu(x))`` with ``W_mu =
    sum_k rho_k S_k,mu`` (module docstring), as ``(Q, staples)``: ``Q`` ``[batch, D, *sites,
    N, N]`` (zero for directions without loops) and ``staples[mu][k]`` the unweighted staple
    sum of loop type k (``None`` where the type has no loops through direction mu), to hand
    back to :func:`stout_generator_pullback` (or to this function: given, they are reused).
    ``rho`` and ``loops`` as for :func:`stout_smear`. Gradient flows of loop actions use it as
    their vector field. Dispatched (op ``"stout_generator"``): NumPy complex128 links with one
    weight per loop type (or per direction) run a Numba kernel (``kernels/gauge_flow.py``)."""
    xp, loopsets, R, _, _ = _prepare(U, rho, loops)
    D = U.shape[1]
    S_all, Q = [], []
    for mu in range(D):
        S_mu, W = [], None
        for k, by_mu in enumerate(loopsets):
            if staples is not None:
                S = staples[mu][k]
            else:
                S = _staple_sum(U, mu, by_mu[mu]) if by_mu[mu] else None
            S_mu.append(S)
            if S is not None:
                t = _rho_at(R[k], mu, U.dtype, xp) * S
                W = t if W is None else W + t
        S_all.append(S_mu)
        Q.append(xp.zeros_like(link(U, mu)) if W is None else -project_algebra(link(U, mu) @ W))
    return xp.stack(Q, axis=1), S_all


@dispatchable("stout_generator_pullback")
def stout_generator_pullback(U, rho, cotangent, loops="plaquette", staples=None):
    """Vector-Jacobian product of :func:`stout_generator`: for an algebra field ``cotangent``
    ``K`` ``[batch, D, *sites, N, N]`` with ``dL = -2 sum_{x,mu} Re Tr(dQ_mu(x) K_mu(x))``,
    returns ``(G, grad_rho)``: ``G = sum_a (dL/ds_a) T_a`` at every link (the left derivative
    ``U -> exp(s T_a) U``; ``G = -F`` in the force convention of the module docstring) and
    dL/drho in the shape of rho (a list if rho was a list). ``staples`` from
    :func:`stout_generator` saves their recomputation. Dispatched (op
    ``"stout_generator_pullback"``), as :func:`stout_generator`."""
    xp, loopsets, R, canon, single = _prepare(U, rho, loops)
    D = U.shape[1]
    if staples is None:
        staples = [[_staple_sum(U, mu, by_mu[mu]) if by_mu[mu] else None for by_mu in loopsets]
                   for mu in range(D)]
    # the stout recursion carries Lambda = -K (its cotangent is the force F' = -G')
    Lam = [None if all(s is None for s in staples[mu]) else -cotangent[:, mu, ...]
           for mu in range(D)]
    F_q, full = _generator_pullback(U, R, Lam, loopsets, staples, xp)
    G = xp.stack([xp.zeros_like(link(U, nu)) if F_q[nu] is None else -F_q[nu]
                  for nu in range(D)], axis=1)
    grads = [_reduce_to(full[k], tuple(R[k].shape), canon[k][1], xp) for k in range(len(full))]
    return G, (grads[0] if single else grads)
