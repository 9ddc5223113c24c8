"""Learned multigrid layers: gauge-equivariant pooling (a learned restriction ``R`` and
prolongation ``P = R^dag``) and a learned coarse-grid correction ``M~ ~ D~^-1`` (Lehner & Wettig,
PRD 110 (2024) 034517), with hand-written gradients and :class:`lattice_ml.optim.Adam` training.

Pooling (restriction) and unpooling (prolongation)
--------------------------------------------------
The lattice is cut into blocks (:class:`lattice_ml.fermions.blocking.Blocking`); the reference
site of block ``B(y)`` is its first corner ``r(y) = y * block``. Every site ``x`` of the block is
carried to ``r(y)`` along a fixed path inside the block: first ``x_0 - r_0`` steps in direction
0, then direction 1, ... (read from ``r(y)``), with the transporter::

    Q(r) = 1,     Q(x) = Q(x - mu) U_mu(x - mu)     (mu the last direction with x_mu > r_mu),

so ``Q(x) -> g(r(y)) Q(x) g(x)^dag`` under ``U_mu(x) -> g(x) U_mu(x) g(x + mu)^dag`` (the path
stays inside the block and never crosses the lattice boundary: no fermion sign). The layer is::

    (R phi)(y)_{k, a} = sum_{x in B(y)} sum_s conj(W(y)_{(x,s), k}) (Q(x) phi(x)_s)_a,
    (P c)(x)_s        = Q(x)^dag sum_k W(y)_{(x,s), k} c(y)_k,                 P = R^dag,

with weights ``W(y)`` ``[prod(block) * spin, n_c]`` per coarse site (spin (x) coarse channel; they
never touch colour) and the coarse field ``c(y)`` ``[n_c, N]``: channel ``k`` carries a colour
index that transforms with the gauge transformation at the reference site,
``c(y) -> g(r(y)) c(y)`` (tested to round-off). Flattened, the coarse field is
``[batch, *coarse_sites, n_c * N]`` (channel-major), the layout of
:class:`lattice_ml.fermions.multigrid.CoarseOperator`, so the Galerkin stencil ``D~ = R D P`` of
:class:`lattice_ml.fermions.multigrid.TwoLevelMultigrid` (``transfer=pool``) is built as for the
near-null basis. For U(1) (``N = 1``) the space spanned is that of a near-null-vector basis with
``n_c`` columns (the transporter is a phase per site); for SU(N) it is a different, colour-blind
space of ``n_c N`` coarse dof per block.

``chiral=True`` (D = 2, 4): the first ``n_c / 2`` channels live on the ``gamma_5 = +1`` spin
components, the others on ``-1`` (a fixed mask on ``W`` and its gradient), as the chirality
split of the near-null basis.

Orthonormality. ``R P = 1`` iff ``W(y)^dag W(y) = 1``. Training does not constrain ``W``: the
coarse-grid correction ``P (R D P)^-1 R`` depends only on the range of ``P`` (``P -> P G`` with
an invertible ``G`` per block leaves it unchanged), and the cost below favours an orthonormal
``W`` anyway. :meth:`GaugePooling.orthonormalise` (QR per block and chirality) is applied after
training, which leaves the range, and so the two-level preconditioner with a direct coarse
solve, unchanged and restores ``R P = 1``.

Training cost (:func:`train_pooling`): the reconstruction of near-null (low-mode) vectors ``v_i``,

    C = (1/n) sum_i |v_i - P R v_i|^2 / |v_i|^2;

with ``z = Q v`` on a block ``[n, N]``, ``A = W^dag z`` and ``e = W A - z`` (``= Q (P R v - v)``),
the gradient (convention ``dC/dRe W + i dC/dIm W``) per block is
``2 (e A^dag + z e^dag W) / |v|^2``, summed over the vectors (over colour by the products).
:meth:`GaugePooling.init_from_vectors` starts from the leading left singular vectors of the
transported vectors on each block (for ``N = 1`` and ``n_c / 2`` vectors per chirality, the
near-null basis itself).

Learned coarse correction
-------------------------
:class:`CoarseStencilNetwork`: ``M~ = L_k ... L_1`` of coarse stencil layers with weights per
coarse site (``[batch, *coarse, n_tot, n_tot]``, ``n_tot = n_c N``)::

    (L c)(y) = A(y) c(y) + sum_mu [ F_mu(y) c(y + mu) + B_mu(y) c(y - mu) ],

trained (:func:`train_coarse_correction`) with ``C = <|M~ D~ v - v|^2 / |v|^2>`` over complex
Gaussian coarse ``v`` (Adam; a fresh batch per step), as :func:`lattice_ml.fermions.ptc.
train_preconditioner` trains ``M D ~ 1``; started from ``L_1 = A~^-1`` (the inverse of the
coarse operator's site-diagonal part) and ``L_j = 1`` after it. Gradients per layer for the
output gradient ``g`` and input ``c``::

    dC/dA = g c^dag,  dC/dF_mu = g shift(c, mu, +1)^dag,  dC/dB_mu = g shift(c, mu, -1)^dag,
    dC/dc = A^dag g + sum_mu [ shift(F_mu^dag g, mu, -1) + shift(B_mu^dag g, mu, +1) ]

(summed over the batch when the weights have batch 1). Used as ``coarse_solver=net`` in
:class:`lattice_ml.fermions.multigrid.TwoLevelMultigrid`, in place of the direct coarse solve.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import numpy as np

from ..backend import device_of, namespace, real_dtype_of, to_numpy
from ..lattice import shift
from .blocking import Blocking
from .ptc import TrainingRecord, complex_to_real_params, real_to_complex_params

__all__ = ["block_transport", "GaugePooling", "train_pooling", "CoarseStencilNetwork",
           "train_coarse_correction"]


def _dagger(M):
    xp = namespace(M)
    return xp.conj(xp.matrix_transpose(M))


# ------------------------------------------------------------------------------------------
# pooling
# ------------------------------------------------------------------------------------------
def block_transport(U, blocking: Blocking):
    """``Q[batch, *sites, N, N]``: the transporter from every site to its block's reference
    site along the fixed in-block path (module docstring), from the links
    ``U[batch, D, *sites, N, N]``."""
    xp = namespace(U)
    D, bl = blocking.D, blocking
    N = U.shape[-1]
    eye = xp.eye(N, dtype=U.dtype, device=device_of(U))
    Q = xp.zeros_like(U[:, 0, ...]) + eye
    rdt = real_dtype_of(xp, U.dtype)
    for mu in range(D):
        pos = bl.block_coordinate(mu)
        Umu = U[:, mu, ...]
        for k in range(1, bl.block[mu]):
            m = xp.asarray((pos == k).astype(np.float64).reshape((1,) + bl.sites + (1, 1)),
                           dtype=rdt, device=device_of(U))
            step = shift(Q, mu, -1) @ shift(Umu, mu, -1)        # Q(x - mu) U_mu(x - mu)
            Q = m * step + (1.0 - m) * Q
    return Q


class GaugePooling:
    """Gauge-equivariant pooling ``R`` and unpooling ``P = R^dag`` (module docstring) on the
    links ``U[batch, D, *sites, N, N]`` with blocks ``block``.

    Parameters
    ----------
    U : links
    block : block extents (must tile the lattice)
    n_c : int
        Coarse channels per block (even with ``chiral``); ``n_c * N`` coarse dof per coarse site.
    chiral : bool
        Half the channels on each chirality (D = 2, 4).
    weights : complex ``[Bw, *coarse, prod(block) * spin, n_c]`` (``Bw`` 1 or the links'
        batch), optional; default: set by :meth:`init_random` or :meth:`init_from_vectors`.
    """

    def __init__(self, U, block: Sequence[int], n_c: int, *, chiral: bool = True,
                 weights=None):
        from .gamma import n_spin
        from .wilson import _check_link_layout
        D, sites, N = _check_link_layout(U, False)
        self.xp, self.D, self.N = namespace(U), D, N
        self.n_spin = n_spin(D)
        self.blocking = Blocking(sites, block, self.n_spin, N)
        self.n = math.prod(self.blocking.block) * self.n_spin      # rows of W per block
        n_c = int(n_c)
        self.chiral = bool(chiral)
        if n_c < 1 or (self.chiral and n_c % 2):
            raise ValueError(f"n_c must be a positive{' even' if self.chiral else ''} integer "
                             f"(half the channels per chirality), got {n_c}")
        cap = self.n // 2 if self.chiral else self.n
        if (n_c // 2 if self.chiral else n_c) > cap:
            raise ValueError(f"n_c = {n_c} exceeds what a block {self.blocking.block} holds "
                             f"({cap} spin-site components{' per chirality' if chiral else ''})")
        self.n_c, self.batch = n_c, U.shape[0]
        self.U = U
        self.Q = block_transport(U, self.blocking)
        self.mask = self._mask()
        self.weights = None if weights is None else self._check_weights(weights)

    # -- weights --------------------------------------------------------------------------------
    @property
    def coarse_dof(self) -> int:
        """``n_c * N``: coarse components per coarse site."""
        return self.n_c * self.N

    def weight_shape(self, Bw: int = 1) -> tuple[int, ...]:
        return (Bw,) + self.blocking.coarse + (self.n, self.n_c)

    def _mask(self):
        """``[n, n_c]`` 0/1: channel ``k`` on the spin components of its chirality (all ones
        without ``chiral``)."""
        m = np.ones((self.n, self.n_c))
        if self.chiral:
            from .gamma import gamma5
            g5 = np.real(np.diag(to_numpy(gamma5(self.D, np))))
            spin_of_row = np.arange(self.n) % self.n_spin
            h = self.n_c // 2
            m[:, :h] = (g5[spin_of_row] > 0)[:, None]
            m[:, h:] = (g5[spin_of_row] < 0)[:, None]
        return self.xp.asarray(m, dtype=real_dtype_of(self.xp, self.U.dtype),
                               device=device_of(self.U))

    def _check_weights(self, W):
        sh = tuple(W.shape)
        if len(sh) != 3 + self.D or sh[1:] != self.weight_shape()[1:] or \
                sh[0] not in (1, self.batch):
            raise ValueError(f"GaugePooling weights have shape {sh}, expected "
                             f"[1 or {self.batch}, {', '.join(map(str, self.blocking.coarse))}, "
                             f"{self.n}, {self.n_c}] ([Bw, *coarse, block sites * spin, n_c])")
        return W * self.mask

    def set_weights(self, W) -> None:
        self.weights = self._check_weights(W)

    def init_random(self, seed: int = 0, Bw: int = 1):
        """Complex Gaussian weights (host ``default_rng(seed)``), orthonormalised per block."""
        rng = np.random.default_rng(seed)
        sh = self.weight_shape(Bw)
        h = (rng.standard_normal(sh) + 1j * rng.standard_normal(sh)) / math.sqrt(2)
        self.set_weights(self.xp.asarray(h, dtype=self.U.dtype, device=device_of(self.U)))
        self.orthonormalise()
        return self.weights

    def init_from_vectors(self, vectors):
        """Weights from near-null vectors ``[batch, *sites, spin, colour]`` (links' batch): per
        block and chirality the ``n_c`` (``n_c / 2``) leading left singular vectors of the
        transported vectors ``Q v_i`` as an ``[n, N * n_vec]`` matrix."""
        xp = self.xp
        Z = xp.concat([self._transported(v) for v in vectors], axis=-1)   # [B, *c, n, N n_vec]
        groups = [(self.mask[:, :self.n_c // 2], self.n_c // 2),
                  (self.mask[:, self.n_c // 2:], self.n_c // 2)] if self.chiral else \
            [(self.mask, self.n_c)]
        cols = []
        for m, k in groups:
            Zm = Z * m[:, :1]                                  # the group's spin components
            if Zm.shape[-1] < k:
                raise ValueError(f"{len(vectors)} vectors of {self.N} colours give at most "
                                 f"{Zm.shape[-1]} channels per group, n_c needs {k}")
            Uq, _, _ = xp.linalg.svd(Zm, full_matrices=False)
            cols.append(Uq[..., :k])
        self.set_weights(xp.concat(cols, axis=-1))
        return self.weights

    def orthonormalise(self) -> None:
        """QR of ``W`` on every block (per chirality): the same range, ``R P = 1``."""
        xp, W = self.xp, self.weights
        parts = [W[..., :self.n_c // 2], W[..., self.n_c // 2:]] if self.chiral else [W]
        self.set_weights(xp.concat([xp.linalg.qr(p)[0] for p in parts], axis=-1))

    # -- transfer ---------------------------------------------------------------------------------
    def _transported(self, phi):
        """``Q phi`` on the blocks: ``[batch, *coarse, n, N]``."""
        xp = self.xp
        z = self.blocking.to_blocks(self._apply_Q(phi))
        return xp.reshape(z, tuple(z.shape[:-1]) + (self.n, self.N))

    def _apply_Q(self, phi):
        """``(Q phi)(x)_s = Q(x) phi(x)_s`` for ``phi[batch, *sites, s, N]``."""
        xp = self.xp
        return xp.matrix_transpose(self.Q @ xp.matrix_transpose(phi))

    def restrict(self, phi):
        """``R phi``: ``[batch, *sites, s, N] -> [batch, *coarse, n_c * N]``."""
        xp = self.xp
        z = self._transported(phi)
        c = _dagger(self.weights) @ z                               # [B, *c, n_c, N]
        return xp.reshape(c, tuple(c.shape[:-2]) + (self.coarse_dof,))

    def prolong(self, c):
        """``P c = R^dag c``: ``[batch, *coarse, n_c * N] -> [batch, *sites, s, N]``."""
        xp, bl = self.xp, self.blocking
        c = xp.reshape(c, tuple(c.shape[:-1]) + (self.n_c, self.N))
        z = self.weights @ c                                         # [B, *c, n, N]
        z = xp.reshape(z, tuple(z.shape[:-2]) + (self.n * self.N,))
        phi = bl.from_blocks(z)                                      # [B, *sites, s, N]
        return xp.matrix_transpose(_dagger(self.Q) @ xp.matrix_transpose(phi))

    def defect(self, v):
        """``|v - P R v| / |v|`` per batch entry (host array)."""
        from .solvers import norm2
        r = v - self.prolong(self.restrict(v))
        return np.sqrt(to_numpy(norm2(r)) / to_numpy(norm2(v)))

    # -- training -------------------------------------------------------------------------------
    def cost(self, vectors, need_grad: bool = True):
        """``C = (1/n) sum_i |v_i - P R v_i|^2 / |v_i|^2`` (``vectors`` a list of fields or one
        batch ``[n, *sites, s, N]``; links of batch 1 broadcast) and its weight gradient."""
        xp = self.xp
        v = xp.concat(list(vectors), axis=0) if isinstance(vectors, (list, tuple)) else vectors
        z = self._transported(v)                                     # [n, *c, n_rows, N]
        W = self.weights
        A = _dagger(W) @ z
        e = W @ A - z
        nv = v.shape[0]
        axes = tuple(range(1, v.ndim))
        vv = xp.sum(xp.real(v * xp.conj(v)), axis=axes)              # [n]
        ee = xp.sum(xp.real(e * xp.conj(e)), axis=tuple(range(1, e.ndim)))
        C = float(to_numpy(xp.sum(ee / vv))) / nv
        if not need_grad:
            return C, None
        w = xp.reshape(xp.astype(2.0 / (vv * nv), W.dtype), (nv,) + (1,) * (e.ndim - 1))
        G = w * (e @ _dagger(A) + z @ (_dagger(e) @ W))              # [n, *c, n_rows, n_c]
        if W.shape[0] == 1 and nv > 1:
            G = xp.sum(G, axis=0, keepdims=True)
        return C, G * self.mask


def train_pooling(pool: GaugePooling, vectors, *, steps: int = 200, lr: float = 1e-2,
                  batch: int | None = None, seed: int = 0, orthonormalise: bool = True,
                  optimizer=None) -> TrainingRecord:
    """Train the pooling weights in place on the reconstruction cost of ``vectors`` (a list of
    fields ``[1, *sites, s, N]``; module docstring) with Adam on the real and imaginary parts;
    ``batch``: a random subset of that many vectors per step (host ``default_rng(seed)``;
    default all). Then :meth:`GaugePooling.orthonormalise` (``orthonormalise``)."""
    from ..optim import Adam
    xp = pool.xp
    allv = xp.concat(list(vectors), axis=0)
    nv = allv.shape[0]
    rng = np.random.default_rng(seed)
    opt = optimizer if optimizer is not None else Adam(lr=lr)
    params = complex_to_real_params([pool.weights])
    costs = []
    t0 = time.perf_counter()
    for k in range(steps):
        v = allv
        if batch is not None and batch < nv:
            idx = np.sort(rng.choice(nv, size=batch, replace=False))
            v = xp.take(allv, xp.asarray(idx, device=device_of(allv)), axis=0)
        C, G = pool.cost(v)
        if not math.isfinite(C):
            raise FloatingPointError(f"train_pooling: the cost is {C} at step {k} (lower lr)")
        costs.append(C)
        params = opt.step(params, complex_to_real_params([G]))
        pool.set_weights(real_to_complex_params(params)[0])
    if orthonormalise:
        pool.orthonormalise()
    return TrainingRecord(cost=np.asarray(costs), seconds=time.perf_counter() - t0, steps=steps,
                          extra={"final_cost": pool.cost(allv, need_grad=False)[0]})


# ------------------------------------------------------------------------------------------
# learned coarse correction
# ------------------------------------------------------------------------------------------
class CoarseStencilNetwork:
    """``M~ = L_k ... L_1`` of nearest-neighbour coarse stencil layers with weights per coarse
    site (module docstring), on coarse fields ``[batch, *coarse, n]``.

    ``weights``: a list (one per layer) of lists ``[A, F_0, ..., F_{D-1}, B_0, ..., B_{D-1}]``
    of complex arrays ``[Bw, *coarse, n, n]`` (``Bw`` 1: shared by the batch)."""

    def __init__(self, weights):
        self.weights = [list(w) for w in weights]
        if not self.weights:
            raise ValueError("a coarse stencil network needs at least one layer")
        A = self.weights[0][0]
        self.xp = namespace(A)
        self.D = (len(self.weights[0]) - 1) // 2
        self.coarse = tuple(A.shape[1:1 + self.D])
        self.n = A.shape[-1]
        for w in self.weights:
            if len(w) != 1 + 2 * self.D or any(tuple(a.shape) != tuple(A.shape) for a in w):
                raise ValueError("every layer needs 1 + 2 D weight arrays of the shape "
                                 f"{tuple(A.shape)} ([Bw, *coarse, n, n])")

    @classmethod
    def from_coarse_operator(cls, op, n_layers: int = 2) -> "CoarseStencilNetwork":
        """``L_1 = A~^-1`` (the inverse of the site-diagonal part of the stencil ``op``, a
        :class:`lattice_ml.fermions.multigrid.CoarseOperator`), hops zero, ``L_j = 1`` after."""
        xp = op.xp
        A = op.A
        eye = xp.zeros_like(A) + xp.eye(A.shape[-1], dtype=A.dtype, device=device_of(A))
        zero = xp.zeros_like(A)
        layers = [[xp.linalg.inv(A)] + [zero] * (2 * op.D)]
        layers += [[eye] + [zero] * (2 * op.D) for _ in range(n_layers - 1)]
        return cls(layers)

    def n_parameters(self) -> int:
        return sum(2 * math.prod(a.shape) for w in self.weights for a in w)

    @staticmethod
    def _layer(w, c, D):
        z = c[..., None]
        out = w[0] @ z
        for mu in range(D):
            out = out + w[1 + mu] @ shift(z, mu, +1) + w[1 + D + mu] @ shift(z, mu, -1)
        return out[..., 0]

    def __call__(self, c):
        for w in self.weights:
            c = self._layer(w, c, self.D)
        return c

    def forward(self, c):
        """``(M~ c, inputs of every layer)``."""
        ins = []
        for w in self.weights:
            ins.append(c)
            c = self._layer(w, c, self.D)
        return c, ins

    def backward(self, ins, g, need_input: bool = False):
        """Weight gradients (per layer, per array) for the output gradient ``g``; with
        ``need_input`` also ``dC/dc``."""
        xp, D = self.xp, self.D
        grads = [None] * len(self.weights)
        for k in range(len(self.weights) - 1, -1, -1):
            w, c = self.weights[k], ins[k]
            gz = g[..., :, None]

            def outer(a):
                o = gz * xp.conj(a)[..., None, :]                 # [b, *c, n, n]
                if w[0].shape[0] == 1 and o.shape[0] > 1:
                    o = xp.sum(o, axis=0, keepdims=True)
                return o
            gw = [outer(c)] + [outer(shift(c, mu, +1)) for mu in range(D)] \
                + [outer(shift(c, mu, -1)) for mu in range(D)]
            grads[k] = gw
            if k > 0 or need_input:
                gi = _dagger(w[0]) @ gz
                for mu in range(D):
                    gi = gi + shift(_dagger(w[1 + mu]) @ gz, mu, -1) \
                        + shift(_dagger(w[1 + D + mu]) @ gz, mu, +1)
                g = gi[..., 0]
        return (grads, g) if need_input else grads


def _flat(ws):
    return [a for w in ws for a in w]


def _unflat(flat, like):
    out, i = [], 0
    for w in like:
        out.append(list(flat[i:i + len(w)]))
        i += len(w)
    return out


def coarse_correction_cost(net: CoarseStencilNetwork, Dc: Callable, v, need_grad: bool = True):
    """``C = mean_b |M~ D~ v_b - v_b|^2 / |v_b|^2`` and (``need_grad``) the weight gradients."""
    xp = namespace(v)
    out, ins = net.forward(Dc(v))
    res = out - v
    axes = tuple(range(1, v.ndim))
    vv = xp.sum(xp.real(v * xp.conj(v)), axis=axes)
    rr = xp.sum(xp.real(res * xp.conj(res)), axis=axes)
    nb = v.shape[0]
    C = float(to_numpy(xp.sum(rr / vv))) / nb
    if not need_grad:
        return C, None
    s = xp.reshape(xp.astype(2.0 / (vv * nb), res.dtype), (nb,) + (1,) * (v.ndim - 1))
    return C, net.backward(ins, s * res)


def train_coarse_correction(net: CoarseStencilNetwork, Dc: Callable, *, steps: int = 200,
                            batch: int = 8, lr: float = 1e-2, seed: int = 0,
                            optimizer=None) -> TrainingRecord:
    """Train ``net`` in place so that ``M~ D~ ~ 1``: Adam on ``C = <|M~ D~ v - v|^2/|v|^2>``
    over a fresh batch of ``batch`` complex Gaussian coarse fields per step (host
    ``default_rng(seed)``); ``Dc`` the coarse operator (e.g. ``mg.coarse_op.apply``) on a batch
    of coarse fields (its links' batch 1)."""
    from ..optim import Adam
    xp = net.xp
    rng = np.random.default_rng(seed)
    shape = (batch,) + net.coarse + (net.n,)
    A0 = net.weights[0][0]
    opt = optimizer if optimizer is not None else Adam(lr=lr)
    params = complex_to_real_params(_flat(net.weights))
    costs = []
    t0 = time.perf_counter()
    for k in range(steps):
        h = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / math.sqrt(2)
        v = xp.asarray(h, dtype=A0.dtype, device=device_of(A0))
        C, grads = coarse_correction_cost(net, Dc, v)
        if not math.isfinite(C):
            raise FloatingPointError(f"train_coarse_correction: the cost is {C} at step {k}")
        costs.append(C)
        params = opt.step(params, complex_to_real_params(_flat(grads)))
        net.weights = _unflat(real_to_complex_params(params), net.weights)
    return TrainingRecord(cost=np.asarray(costs), seconds=time.perf_counter() - t0, steps=steps)
