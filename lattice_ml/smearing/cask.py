"""Covariant attention with a stout kernel (CASK; Y. Nagai, H. Ohno, A. Tomiya, Lattice 2024,
arXiv:2501.16955): a stout step whose staple weights are a softmax attention over the loops
through each link, with an exact hand-written backward pass for the links and every weight.

One layer (conventions of :mod:`lattice_ml.smearing.stout`)
-----------------------------------------------------------
For the link ``U_mu(x)`` let ``S_j``, ``j = 1 .. n_mu``, be the individual staples of all loops of
the layer's loop types through it (``U_mu(x) S_j`` is the loop matrix at ``x``; plaquettes:
``n_mu = 2(D-1)``), ``k(j)`` the type of loop ``j``. The attention scores are the gauge-invariant
Frobenius products of the link with its staples (the loop traces),

    s_j = Re Tr(U_mu(x) S_j) / N,      z_j = beta_{k(j)} s_j,
    a_j = exp(z_j) / sum_i exp(z_i)      (softmax over the neighbourhood of the link),

and they weight the staples of a stout step (the weighted staple sum is the ``Omega^dagger`` of
the stout exponent):

    W_mu(x) = sum_j rho_{k(j)} n_mu a_j S_j,    Q = -TA(U W),    U' = exp(Q) U.

``beta = 0`` gives ``a_j = 1/n_mu`` and the plain stout step of weights ``rho`` (exactly
:func:`~lattice_ml.smearing.stout_smear`); ``beta > 0`` leans on the loops that are already
ordered, ``beta < 0`` on the rough ones. The weights ``a_j`` are gauge invariant and ``S_j``
transforms like ``U_mu(x)^dagger``, so ``U'`` is gauge covariant; lattice rotations and
reflections permute the loops of a type among themselves, so the layer is equivariant under them
too. Parameters per layer: ``(rho_k, beta_k)`` for each loop type.

Backward (force convention of :mod:`.stout`: ``F = -dL/dU`` as an algebra field)
--------------------------------------------------------------------------------
With ``c_j = rho_k n a_j`` as per-link weight fields, the step is a stout step with one "loop
type" per staple, so the stout recursion gives the adjoint part ``E^dagger F' E``, ``Lambda``
(exact exp derivative), the force through the staples at fixed ``c`` and ``g_j = dL/dc_j`` per
link. The chain rule through the attention:

    dL/drho_k = sum_{j in k} n a_j g_j,      h_j = rho_k n g_j,
    dL/dz_j   = a_j (h_j - sum_i a_i h_i)    (softmax),
    dL/dbeta_k = sum_{j in k} s_j dL/dz_j,   w_j = beta_k dL/dz_j = dL/ds_j,

and the scores add the force of the loop sum ``sum_{x,mu,j} w_j Re Tr(U_mu S_j)/N``, which is the
stout generator pull-back again with ``Lambda = -1/2`` and the weights ``w_j / N``.

:class:`CASKSmearing` stacks layers with a flat parameter vector and the interface of
:class:`~lattice_ml.smearing.StoutSmearing` (``forward(U) -> U'``, ``backward(F') -> (F,
dL/dtheta)``, ``parameters``/``set_parameters``/``n_parameters``), so it goes wherever a
trainable stout network goes (:class:`~lattice_ml.smearing.SmearedAction`, training with
:mod:`lattice_ml.optim`).
"""

from __future__ import annotations

from typing import Any

from ..backend import asarray, device_of, namespace, real_dtype_of
from ..gauge.paths import link
from ..groups import dagger, expm_algebra, project_algebra, trace
from .expderiv import expm_pullback
from .loop_sets import _as_by_mu, _check_closed, resolve_loops
from .stout import _exp_methods, _generator_pullback, _staple

__all__ = ["CASKContext", "cask_smear", "cask_backward", "CASKSmearing"]


class CASKContext:
    """What one forward layer keeps for :func:`cask_backward`: the input links, per direction the
    individual staples, scores, attention weights and staple coefficients, ``Q`` and ``exp(Q)``,
    and the weights the layer ran with."""

    def __init__(self, U, rho, beta, loops, paths, S, s, a, c, Q, E, method):
        self.U, self.rho, self.beta, self.loops, self.paths = U, rho, beta, loops, paths
        self.S, self.s, self.a, self.c, self.Q, self.E = S, s, a, c, Q, E
        self.method = method


def _paths_by_mu(loops, D: int) -> tuple[list, int]:
    """Per direction, the ``(type, path)`` of every loop through the link; number of types."""
    specs = [loops] if isinstance(loops, (str, dict)) else list(loops)
    sets = [_as_by_mu(spec, D) for spec in specs]
    return [[(k, p) for k, by_mu in enumerate(sets) for p in by_mu[mu]] for mu in range(D)], \
        len(sets)


def _weights(w, n: int, what: str) -> list[float]:
    if isinstance(w, (int, float)):
        return [float(w)] * n
    w = [float(v) for v in w]
    if len(w) != n:
        raise ValueError(f"give one {what} per loop type ({n}), got {len(w)}")
    return w


def cask_smear(U, rho, beta, loops="plaquette", *, method: str = "auto"):
    """One CASK layer (module docstring): ``(U', context)``.

    Parameters
    ----------
    U : array ``[batch, D, *sites, N, N]``
    rho, beta : a number, or one per loop type (host floats): the stout weight and the
        attention's inverse temperature of each loop type.
    loops : a loop type or a sequence of them (``"plaquette"``, ``"rectangle"``, ``"chair"`` or
        ``{mu: paths}`` dicts, as for :func:`~lattice_ml.smearing.stout_smear`); the softmax runs
        over all loops of all these types through the link.
    method : exp method of :func:`lattice_ml.groups.expm_algebra`.
    """
    xp = namespace(U)
    if U.ndim < 5 or U.shape[1] != U.ndim - 4 or U.shape[-1] != U.shape[-2]:
        raise ValueError(f"links of shape {tuple(U.shape)} are not in the layout "
                         "[batch, D, *sites, N, N]")
    D, N = U.shape[1], U.shape[-1]
    for spec in resolve_loops(loops, D):
        _check_closed(spec, tuple(U.shape[2:2 + D]))
    paths, n_types = _paths_by_mu(loops, D)
    rho, beta = _weights(rho, n_types, "rho"), _weights(beta, n_types, "beta")
    em, _ = _exp_methods(method, N)
    S, s, a, c, Q, E, out = [], [], [], [], [], [], []
    for mu in range(D):
        Umu = link(U, mu)
        if not paths[mu]:
            for lst in (S, s, a, c, Q, E):
                lst.append(None)
            out.append(Umu)
            continue
        S_mu = [_staple(U, mu, p) for _, p in paths[mu]]
        s_mu = [xp.real(trace(Umu @ St)) / N for St in S_mu]
        z = [beta[k] * sj for (k, _), sj in zip(paths[mu], s_mu)]
        zmax = z[0]
        for zj in z[1:]:
            zmax = xp.maximum(zmax, zj)
        ex = [xp.exp(zj - zmax) for zj in z]
        tot = ex[0]
        for e in ex[1:]:
            tot = tot + e
        n = len(S_mu)
        a_mu = [e / tot for e in ex]
        c_mu = [rho[k] * n * aj for (k, _), aj in zip(paths[mu], a_mu)]
        W = None
        for cj, St in zip(c_mu, S_mu):
            t = xp.astype(cj, U.dtype)[..., None, None] * St
            W = t if W is None else W + t
        Qm = -project_algebra(Umu @ W)
        Em = expm_algebra(Qm, method=em)
        S.append(S_mu)
        s.append(s_mu)
        a.append(a_mu)
        c.append(c_mu)
        Q.append(Qm)
        E.append(Em)
        out.append(Em @ Umu)
    ctx = CASKContext(U, rho, beta, loops, paths, S, s, a, c, Q, E, method)
    return xp.stack(out, axis=1), ctx


def cask_backward(ctx: CASKContext, force):
    """Backward pass of :func:`cask_smear`: ``(F, grad_rho, grad_beta)``.

    ``force`` ``F' = -dL/dU'`` ``[batch, D, *sites, N, N]`` (a batch means ``L = sum_b L_b``);
    returns the force ``F = -dL/dU`` at the input links and ``dL/drho_k``, ``dL/dbeta_k`` (lists
    of host floats, one per loop type)."""
    U = ctx.U
    xp = namespace(U)
    D, N = U.shape[1], U.shape[-1]
    _, dm = _exp_methods(ctx.method, N)
    paths = ctx.paths
    n_types = len(ctx.rho)
    J = max(len(p) for p in paths)
    rdt = real_dtype_of(xp, U.dtype)
    batch_sites = (U.shape[0],) + tuple(U.shape[2:2 + D])
    zeros = xp.zeros(batch_sites, dtype=rdt, device=device_of(U))
    # one "loop type" per staple slot j, with the per-link coefficients c_j
    loopsets = [tuple(((paths[mu][j][1],) if j < len(paths[mu]) else ()) for mu in range(D))
                for j in range(J)]
    S_all = [[(ctx.S[mu][j] if ctx.S[mu] is not None and j < len(paths[mu]) else None)
              for j in range(J)] for mu in range(D)]

    def per_link(fields):   # fields[mu][j] -> J arrays [batch, D, *sites]
        return [xp.stack([fields[mu][j] if fields[mu] is not None and j < len(paths[mu])
                          else zeros for mu in range(D)], axis=1) for j in range(J)]

    adj, Lam = [], []
    for mu in range(D):
        Fp = force[:, mu, ...]
        if ctx.E[mu] is None:
            adj.append(Fp)
            Lam.append(None)
            continue
        B = dagger(ctx.E[mu]) @ Fp
        adj.append(B @ ctx.E[mu])
        Lam.append(expm_pullback(ctx.Q[mu], B, method=dm))
    F_q, g = _generator_pullback(U, per_link(ctx.c), Lam, loopsets, S_all, xp)

    g_rho, g_beta = [0.0] * n_types, [0.0] * n_types
    w = [None] * D
    for mu in range(D):
        if Lam[mu] is None:
            continue
        n = len(paths[mu])
        kinds = [k for k, _ in paths[mu]]
        gm = [g[j][:, mu, ...] for j in range(n)]
        h = [ctx.rho[k] * n * gj for k, gj in zip(kinds, gm)]
        ah = None
        for aj, hj in zip(ctx.a[mu], h):
            ah = aj * hj if ah is None else ah + aj * hj
        dz = [aj * (hj - ah) for aj, hj in zip(ctx.a[mu], h)]
        for j, k in enumerate(kinds):
            g_rho[k] += float(xp.sum(n * ctx.a[mu][j] * gm[j]))
            g_beta[k] += float(xp.sum(dz[j] * ctx.s[mu][j]))
        w[mu] = [ctx.beta[k] * dzj / N for k, dzj in zip(kinds, dz)]
    eye = xp.eye(N, dtype=U.dtype, device=device_of(U))
    Lam_s = [None if Lam[mu] is None else -0.5 * eye for mu in range(D)]
    F_s, _ = _generator_pullback(U, per_link(w), Lam_s, loopsets, S_all, xp)
    F = []
    for nu in range(D):
        f = adj[nu]
        for part in (F_q[nu], F_s[nu]):
            if part is not None:
                f = f + part
        F.append(f)
    return xp.stack(F, axis=1), g_rho, g_beta


class CASKSmearing:
    """A stack of CASK layers with trainable ``(rho_k, beta_k)`` in one flat real array.

    Parameters
    ----------
    n_layers : int
    loops : loop types shared by every layer (as in :func:`cask_smear`).
    D : int
    rho, beta : initial weights (floats; ``beta = 0``: the network starts as plain stout), or
        pass ``theta`` (a flat array of all parameters) instead.
    method : exp method.

    Parameter layout: ``theta[layer, type, (rho, beta)]`` flattened in C order (``2 n_types``
    parameters per layer; a :class:`~lattice_ml.smearing.StoutSmearing` of the same loop types
    has ``n_types`` per layer).

    ``forward(U)`` returns the smeared links and keeps the layers' contexts; ``backward(F')``
    returns ``(F, dL/dtheta)`` (flat, the layout of :meth:`parameters`, an array of the
    namespace and device of ``F'`` like :meth:`StoutSmearing.backward`'s).
    """

    def __init__(self, n_layers: int, loops="plaquette", *, D: int = 4, rho: float = 0.1,
                 beta: float = 0.0, theta: Any = None, method: str = "auto"):
        import numpy as np  # host-side parameter vector

        if not isinstance(n_layers, int) or n_layers < 1:
            raise ValueError(f"n_layers must be a positive integer, not {n_layers!r}")
        self.n_layers = n_layers
        self.loops = [loops] if isinstance(loops, (str, dict)) else list(loops)
        self.D = D
        self.n_types = len(resolve_loops(self.loops, D))
        self.method = method
        self.param_shape = (n_layers, self.n_types, 2)
        self.n_parameters = 2 * n_layers * self.n_types
        if theta is None:
            t = np.empty(self.param_shape)
            t[..., 0], t[..., 1] = float(rho), float(beta)
            theta = t.reshape(-1)
        self.set_parameters(theta)

    def parameters(self):
        """The flat real parameter array (host NumPy; the object's own array)."""
        return self._theta

    def set_parameters(self, theta) -> None:
        """Replace the parameters by the flat array ``theta`` (length ``n_parameters``)."""
        import numpy as np

        from ..backend import to_numpy
        t = np.asarray(to_numpy(theta) if hasattr(theta, "shape") else theta, dtype=np.float64)
        if t.shape != (self.n_parameters,):
            raise ValueError(f"parameters must have shape ({self.n_parameters},), got {t.shape}")
        self._theta = t.copy()
        self._ctx = None

    def forward(self, U):
        """Smear ``U`` ``[batch, D, *sites, N, N]`` through every layer; keeps the contexts."""
        if U.shape[1] != self.D:
            raise ValueError(f"this smearing was built for D = {self.D}, links have D = "
                             f"{U.shape[1]}")
        T = self._theta.reshape(self.param_shape)
        ctxs = []
        for layer in range(self.n_layers):
            U, ctx = cask_smear(U, list(T[layer, :, 0]), list(T[layer, :, 1]), self.loops,
                                method=self.method)
            ctxs.append(ctx)
        self._ctx = ctxs
        return U

    __call__ = forward

    def backward(self, force):
        """``(F, grad)``: the force at the input of the last :meth:`forward` and ``dL/dtheta``."""
        import numpy as np

        if self._ctx is None:
            raise RuntimeError("call forward(U) before backward(force)")
        xp = namespace(force)
        grad = np.zeros(self.param_shape)
        for layer in range(self.n_layers - 1, -1, -1):
            force, g_rho, g_beta = cask_backward(self._ctx[layer], force)
            grad[layer, :, 0], grad[layer, :, 1] = g_rho, g_beta
        return force, asarray(grad.reshape(-1), xp, dtype=real_dtype_of(xp, force.dtype),
                              device=device_of(force))
