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

``gx`` takes whichever of the two is narrower: ``col2im`` (``K^2 c_in`` columns) when ``c_out >=
c_in``, else the patches of ``gy`` (``K^2 c_out`` columns) times the flipped kernel, as the
reference does. ``gW = P^T G`` (the forward's patches when it kept them, its second output),
``gbias = sum G``.

Chunks: the batch is processed in chunks of whole configurations whose patches take about
``_CHUNK_BYTES`` (256 KiB), gathered into one buffer and multiplied (``np.dot``) while they are
in the cache, all in one Numba call per product (the chunk loop inside). The gathers are
serial; threads are BLAS's, in the products. Parallel gathers (``prange``) open a region per
chunk, far shorter than a scheduler time slice: on a loaded CPU each one waits for a descheduled
thread (measured on the shared 2-core machine: 16 s instead of 0.07 s per tutorial training step
at batch 64 with two Numba threads). A batch that fits one chunk keeps its patches for ``gW``; a larger one gathers them again
in the vjp, which is cheaper than writing a batch-sized patch array (9 x the activations) to
fresh memory.

Accepted (else the reference runs): NumPy float32/float64 ``x[batch, L0, L1, c_in]`` (made
C-contiguous), ``weight[c_out, c_in, K, K]`` (and ``bias``, ``gy``) of its dtype, ``K`` odd with
``K // 2`` not above an extent.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit

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


@njit(cache=True)
def _gather(x2, nb, V, r0, n, P):
    """``P[:n] = im2col(x2)[r0:r0 + n]``: the patches of rows ``r0 .. r0 + n - 1``."""
    C = x2.shape[1]
    KK = nb.shape[1]
    for row in range(n):
        s = (r0 + row) % V
        base = r0 + row - s
        for k in range(KK):
            src = base + nb[s, k]
            for i in range(C):
                P[row, k * C + i] = x2[src, i]


@njit(cache=True)
def _conv_rows(x2, nb, V, Wm, rows, P, Y):
    """``Y = im2col(x2) Wm``, ``rows`` rows at a time through the buffer ``P[rows, K^2 C]``."""
    N = x2.shape[0]
    for r0 in range(0, N, rows):
        n = min(rows, N - r0)
        _gather(x2, nb, V, r0, n, P)
        np.dot(P[:n], Wm, Y[r0:r0 + n])


@njit(cache=True)
def _weight_grad(x2, G, nb, V, rows, P, saved, gWm):
    """``gWm = G^T im2col(x2)``: from the patches ``P`` when ``saved``, else gathered into the
    buffer ``P[rows, K^2 C]`` chunk by chunk."""
    N = x2.shape[0]
    for r0 in range(0, N, rows):
        n = min(rows, N - r0)
        if saved:
            Pc = P[r0:r0 + n]
        else:
            _gather(x2, nb, V, r0, n, P)
            Pc = P[:n]
        gWm += np.dot(G[r0:r0 + n].T, Pc)


@njit(cache=True)
def _col2im_rows(G, WmT, nbi, V, rows, Q, gx2):
    """``gx2[b V + s, i] = sum_k Q[b V + nbi[s, k], k C + i]`` with ``Q = G WmT`` formed
    ``rows`` rows at a time in the buffer ``Q`` (the adjoint of the gather, ``nbi`` the inverse
    shifts)."""
    N, C = gx2.shape
    KK = nbi.shape[1]
    for r0 in range(0, N, rows):
        n = min(rows, N - r0)
        Qc = Q[:n]
        np.dot(G[r0:r0 + n], WmT, Qc)
        for row in range(n):
            s = (r0 + row) % V
            base = row - s
            for i in range(C):
                a = Qc[base + nbi[s, 0], i]
                for k in range(1, KK):
                    a += Qc[base + nbi[s, k], k * C + i]
                gx2[r0 + row, i] = a


# rows of patches per chunk: the patch buffer (about 256 KiB) stays in the cache between the
# gather and the matrix product, instead of a batch-sized array written to fresh memory
_CHUNK_BYTES = 1 << 18


def _chunk_rows(x, K, C):
    """Rows of whole configurations per chunk, patches of at most about ``_CHUNK_BYTES`` (one
    configuration at least), and at most the batch."""
    B, V = x.shape[0], x.shape[1] * x.shape[2]
    per = max(1, _CHUNK_BYTES // (V * K * K * C * x.dtype.itemsize))
    return min(per, B) * V


@register("flow_conv_forward", "cpu", accepts=accepts_forward, name="cpu:flow_conv_forward")
def conv_forward_cpu(x, weight, bias=None):
    """CPU kernel of :func:`lattice_ml.flows.conv.periodic_conv_forward`: ``(y, saved)``, the
    patches saved when they fit in one chunk (else ``None``: the vjp gathers them again)."""
    co, ci, K = weight.shape[0], weight.shape[1], weight.shape[2]
    B, L0, L1 = x.shape[:3]
    rows = _chunk_rows(x, K, ci)
    Y = np.empty((B * L0 * L1, co), dtype=x.dtype)
    P = np.empty((rows, K * K * ci), dtype=x.dtype)
    _conv_rows(np.ascontiguousarray(x).reshape(-1, ci), _neighbours(L0, L1, K, 1), L0 * L1,
               _wmat(weight), rows, P, Y)
    if bias is not None:
        Y += bias
    return Y.reshape(tuple(x.shape[:-1]) + (co,)), (P if rows == Y.shape[0] else None)


@register("flow_conv_vjp", "cpu", accepts=accepts_vjp, name="cpu:flow_conv_vjp")
def conv_vjp_cpu(x, weight, gy, need_input=True, need_params=True, bias=True, saved=None):
    """CPU kernel of :func:`lattice_ml.flows.conv.periodic_conv_vjp`: ``(gx, gW, gbias)``."""
    co, ci, K = weight.shape[0], weight.shape[1], weight.shape[2]
    B, L0, L1 = x.shape[:3]
    V = L0 * L1
    G = np.ascontiguousarray(gy).reshape(-1, co)
    gW = gbias = gx = None
    rows = _chunk_rows(x, K, max(ci, co))
    nb = _neighbours(L0, L1, K, 1)
    if need_params:
        x2 = np.ascontiguousarray(x).reshape(-1, ci)
        ok = saved is not None and tuple(saved.shape) == (x2.shape[0], K * K * ci)
        P = saved if ok else np.empty((rows, K * K * ci), x.dtype)
        gWm = np.zeros((co, K * K * ci), dtype=x.dtype)
        _weight_grad(x2, G, nb, V, rows, P, ok, gWm)
        gW = np.ascontiguousarray(gWm.reshape(co, K, K, ci).transpose(0, 3, 1, 2))
        if bias:
            gbias = G.sum(axis=0)
    if need_input:
        gx = np.empty(x.shape, dtype=x.dtype)
        gx2 = gx.reshape(-1, ci)
        if co < ci:     # the patches of gy (K^2 c_out columns) times the flipped kernel
            wf = np.ascontiguousarray(weight[:, :, ::-1, ::-1].transpose(2, 3, 0, 1))
            _conv_rows(G, nb, V, wf.reshape(K * K * co, ci), rows,
                       np.empty((rows, K * K * co), dtype=x.dtype), gx2)
        else:           # Q = G W_m^T (K^2 c_in columns), summed back onto the sites
            _col2im_rows(G, np.ascontiguousarray(_wmat(weight).T), _neighbours(L0, L1, K, -1),
                         V, rows, np.empty((rows, K * K * ci), dtype=x.dtype), gx2)
    return gx, gW, gbias
