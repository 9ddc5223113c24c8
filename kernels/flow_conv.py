"""Numba CPU kernels of the periodic convolution of the flow conditioners, D = 2, batched.

References: :func:`lattice_ml.flows.conv.periodic_conv_forward` (op ``flow_conv_forward``) and
:func:`lattice_ml.flows.conv.periodic_conv_vjp` (op ``flow_conv_vjp``), same arguments, same
results. The formulation is the reference's (patches times the weight matrix, the products in
BLAS); what the kernels replace are its array-API data movements, which dominate at the tutorial
sizes (8 channels, kernel 3):

* ``im2col``: the patches ``P[b V + s0 L1 + s1, (k0 K + k1) c_in + i] = x[b, s0 + k0 - r, s1 +
  k1 - r, i]`` (sites modulo the extents, ``r = K // 2``) in one gather, instead of padding,
  ``K^2`` slices and a stack;
* ``col2im``, the adjoint: ``gx[b, u, i] = sum_k Q[b V + (u - k + r), (k0 K + k1) c_in + i]``
  with ``Q = G W_m^T`` (``G = gy`` as ``[B V, c_out]``, ``W_m`` the ``[K^2 c_in, c_out]`` weight
  matrix), instead of the patches of ``gy`` times the flipped kernel: the same products, summed
  in another order.

``gW = P^T G`` reuses the forward's patches (the forward's second output, as in the reference),
``gbias = sum G``.

Accepted (else the reference runs): NumPy float32/float64 ``x[batch, L0, L1, c_in]`` (made
C-contiguous), ``weight[c_out, c_in, K, K]`` (and ``bias``, ``gy``) of its dtype, ``K`` odd with
``K // 2`` not above an extent. Memory-bound: ``K^2 c_in`` numbers written per site by
``im2col``, read by ``col2im``.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit, prange

from ..dispatch import register

__all__ = ["conv_forward_cpu", "conv_vjp_cpu", "accepts_forward", "accepts_vjp"]


def _ok(x, weight) -> bool:
    try:
        return (isinstance(x, np.ndarray) and isinstance(weight, np.ndarray)
                and x.dtype in (np.float32, np.float64) and weight.dtype == x.dtype
                and x.ndim == 4 and weight.ndim == 4
                and weight.shape[1] == x.shape[-1] and weight.shape[2] == weight.shape[3]
                and weight.shape[2] % 2 == 1
                and weight.shape[2] // 2 <= min(x.shape[1], x.shape[2]))
    except AttributeError:
        return False


def accepts_forward(x, weight, bias=None) -> bool:
    return _ok(x, weight) and (bias is None or (isinstance(bias, np.ndarray)
                                                and bias.dtype == x.dtype
                                                and bias.shape == (weight.shape[0],)))


def accepts_vjp(x, weight, gy, need_input=True, need_params=True, bias=True,
                saved=None) -> bool:
    return (_ok(x, weight) and isinstance(gy, np.ndarray) and gy.dtype == x.dtype
            and tuple(gy.shape) == tuple(x.shape[:-1]) + (weight.shape[0],))


def _wmat(weight):
    """``W[o, i, k0, k1]`` as the matrix ``[(k0 K + k1) c_in + i, o]`` of the patches."""
    co, ci, K = weight.shape[0], weight.shape[1], weight.shape[2]
    return np.ascontiguousarray(weight.transpose(2, 3, 1, 0)).reshape(K * K * ci, co)


@functools.lru_cache(maxsize=32)
def _neighbours(L0: int, L1: int, K: int, sign: int):
    """``nb[s, k0 K + k1]``: the site ``s + sign (k - r)`` (flat index, periodic)."""
    r = K // 2
    s0, s1 = np.indices((L0, L1)).reshape(2, -1)
    nb = np.empty((L0 * L1, K * K), dtype=np.int64)
    for k0 in range(K):
        for k1 in range(K):
            nb[:, k0 * K + k1] = ((s0 + sign * (k0 - r)) % L0) * L1 + (s1 + sign * (k1 - r)) % L1
    return nb


@njit(parallel=True, cache=True)
def _im2col(x2, nb, V, P):
    """``P[b V + s, k C + i] = x2[b V + nb[s, k], i]`` for the flat ``x2[B V, C]``."""
    N, C = x2.shape
    KK = nb.shape[1]
    for row in prange(N):
        s = row % V
        base = row - s
        for k in range(KK):
            src = base + nb[s, k]
            for i in range(C):
                P[row, k * C + i] = x2[src, i]


@njit(parallel=True, cache=True)
def _col2im(Q, nbi, V, gx2):
    """``gx2[b V + s, i] = sum_k Q[b V + nbi[s, k], k C + i]`` (the adjoint of :func:`_im2col`
    with ``nbi`` the inverse shifts)."""
    N, C = gx2.shape
    KK = nbi.shape[1]
    for row in prange(N):
        s = row % V
        base = row - s
        for i in range(C):
            a = Q[base + nbi[s, 0], i]
            for k in range(1, KK):
                a += Q[base + nbi[s, k], k * C + i]
            gx2[row, i] = a


# rows of patches per chunk: the patch buffer (about 256 KiB) stays in the cache between the
# gather and the matrix product, instead of a batch-sized array written to fresh memory
_CHUNK_BYTES = 1 << 18


def _patches(x, K):
    B, L0, L1, C = x.shape
    P = np.empty((B * L0 * L1, K * K * C), dtype=x.dtype)
    _im2col(np.ascontiguousarray(x).reshape(-1, C), _neighbours(L0, L1, K, 1), L0 * L1, P)
    return P


def _chunks(x, K, C):
    """Row ranges ``(r0, r1)`` of whole configurations with patches of at most about
    ``_CHUNK_BYTES`` (one configuration at least)."""
    B, V = x.shape[0], x.shape[1] * x.shape[2]
    per = max(1, _CHUNK_BYTES // (V * K * K * C * x.dtype.itemsize))
    return [(b * V, min(b + per, B) * V) for b in range(0, B, per)]


@register("flow_conv_forward", "cpu", accepts=accepts_forward, name="cpu:flow_conv_forward")
def conv_forward_cpu(x, weight, bias=None):
    """CPU kernel of :func:`lattice_ml.flows.conv.periodic_conv_forward`: ``(y, saved)``, the
    patches saved when they fit in one chunk (else ``None``: the vjp gathers them again)."""
    co, ci, K = weight.shape[0], weight.shape[1], weight.shape[2]
    B, L0, L1 = x.shape[:3]
    V = L0 * L1
    x2 = np.ascontiguousarray(x).reshape(-1, ci)
    nb = _neighbours(L0, L1, K, 1)
    Wm = _wmat(weight)
    chunks = _chunks(x, K, ci)
    Y = np.empty((B * V, co), dtype=x.dtype)
    P = np.empty((chunks[0][1], K * K * ci), dtype=x.dtype)
    for r0, r1 in chunks:
        Pc = P[:r1 - r0]
        _im2col(x2[r0:r1], nb, V, Pc)
        np.matmul(Pc, Wm, out=Y[r0:r1])
    if bias is not None:
        Y += bias
    return Y.reshape(tuple(x.shape[:-1]) + (co,)), (P if len(chunks) == 1 else None)


@register("flow_conv_vjp", "cpu", accepts=accepts_vjp, name="cpu:flow_conv_vjp")
def conv_vjp_cpu(x, weight, gy, need_input=True, need_params=True, bias=True, saved=None):
    """CPU kernel of :func:`lattice_ml.flows.conv.periodic_conv_vjp`: ``(gx, gW, gbias)``."""
    co, ci, K = weight.shape[0], weight.shape[1], weight.shape[2]
    B, L0, L1 = x.shape[:3]
    V = L0 * L1
    G = np.ascontiguousarray(gy).reshape(-1, co)
    gW = gbias = gx = None
    chunks = _chunks(x, K, max(ci, co))
    if need_params:
        x2 = np.ascontiguousarray(x).reshape(-1, ci)
        nb = _neighbours(L0, L1, K, 1)
        if saved is not None and saved.shape[0] != x2.shape[0]:
            saved = None
        P = saved if saved is not None else np.empty((chunks[0][1], K * K * ci), x.dtype)
        gWm = np.zeros((co, K * K * ci), dtype=x.dtype)
        for r0, r1 in chunks:
            if saved is not None:
                Pc = saved[r0:r1]
            else:
                Pc = P[:r1 - r0]
                _im2col(x2[r0:r1], nb, V, Pc)
            gWm += G[r0:r1].T @ Pc
        gW = np.ascontiguousarray(gWm.reshape(co, K, K, ci).transpose(0, 3, 1, 2))
        if bias:
            gbias = G.sum(axis=0)
    if need_input:
        gx = np.empty(x.shape, dtype=x.dtype)
        gx2 = gx.reshape(-1, ci)
        if co < ci:     # the patches of gy (K^2 c_out columns) times the flipped kernel
            wf = np.ascontiguousarray(weight[:, :, ::-1, ::-1].transpose(2, 3, 0, 1))
            Wf = wf.reshape(K * K * co, ci)
            nb = _neighbours(L0, L1, K, 1)
            Pg = np.empty((chunks[0][1], K * K * co), dtype=x.dtype)
            for r0, r1 in chunks:
                _im2col(G[r0:r1], nb, V, Pg[:r1 - r0])
                np.matmul(Pg[:r1 - r0], Wf, out=gx2[r0:r1])
        else:           # Q = G W_m^T (K^2 c_in columns), summed back onto the sites
            WmT = np.ascontiguousarray(_wmat(weight).T)
            nbi = _neighbours(L0, L1, K, -1)
            Q = np.empty((chunks[0][1], K * K * ci), dtype=x.dtype)
            for r0, r1 in chunks:
                np.matmul(G[r0:r1], WmT, out=Q[:r1 - r0])
                _col2im(Q[:r1 - r0], nbi, V, gx2[r0:r1])
    return gx, gW, gbias
