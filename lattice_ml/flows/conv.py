"""Periodic convolutions on D-dimensional lattices with hand-written vector-Jacobian products.

Layout: channels last, batch first. An input ``x[batch, *sites, C_in]`` on a periodic lattice of
D = len(sites) dimensions (D = 2 or 3 are tested; any D works) is mapped to
``y[batch, *sites, C_out]``::

    y[b, x, o] = bias[o] + sum_{k, i} W[o, i, k] x[b, x + k - r, i],    r = K // 2,

with ``k = (k_0, ..., k_{D-1})`` running over the ``K^D`` kernel offsets (K odd) and the site
index taken modulo the lattice extents (periodic, PyTorch's ``padding_mode="circular"`` with
``padding = K // 2``: the same cross-correlation convention). Weights ``W[C_out, C_in, K, ..., K]``
and bias ``[C_out]`` are in PyTorch's layout, so a trained PyTorch ``ConvNd`` can be loaded
unchanged.

Implementation: :func:`periodic_conv_forward` and :func:`periodic_conv_vjp`, dispatchable
(ops ``flow_conv_forward`` and ``flow_conv_vjp`` of :mod:`lattice_ml.dispatch`; the Numba CPU
kernels of ``lattice_ml.kernels.flow_conv`` take NumPy arrays in D = 2). The array-API reference
stacks the ``K^D`` shifted copies of the input into patches ``P[b*V, K^D*C_in]`` (im2col) and
multiplies them by ``W`` reshaped to ``[K^D*C_in, C_out]``; the vjp is ``dW = P^T G``, ``db = sum
G`` (the patches are kept from the forward), and ``dx`` is the convolution of ``G`` with the
kernel flipped in every direction and its channel axes swapped (the transposed convolution).
Patches are slices of the input padded periodically once by ``K // 2`` sites (``K // 2`` must not
exceed an extent).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from ..backend import asarray, namespace
from ..dispatch import dispatchable

__all__ = ["PeriodicConv", "init_conv_params", "periodic_conv_forward", "periodic_conv_vjp"]


def _offsets(dim: int, kernel: int):
    r = kernel // 2
    return [tuple(k - r for k in ks) for ks in itertools.product(range(kernel), repeat=dim)]


def _patches(x, kernel: int):
    """``[B*V, K^D * C]`` matrix of the ``K^D`` shifted copies of ``x[B, *S, C]``: the input is
    padded periodically by ``r`` sites on each side once, and the patches are slices."""
    xp = namespace(x)
    D = x.ndim - 2
    r = kernel // 2
    pad = x
    if r:
        for mu in range(D):
            ax = 1 + mu
            L = x.shape[ax]
            if r > L:
                raise ValueError(f"periodic convolution: kernel half-width {r} exceeds the "
                                 f"lattice extent {L} in direction {mu}")
            lo = tuple(slice(L - r, L) if a == ax else slice(None) for a in range(pad.ndim))
            hi = tuple(slice(0, r) if a == ax else slice(None) for a in range(pad.ndim))
            pad = xp.concat([pad[lo], pad, pad[hi]], axis=ax)
    sites = x.shape[1:1 + D]
    offsets = _offsets(D, kernel)
    parts = []
    for off in offsets:
        idx = (slice(None),) + tuple(slice(o + r, o + r + L) for o, L in zip(off, sites)) \
            + (slice(None),)
        parts.append(pad[idx])
    P = xp.stack(parts, axis=-2)                             # [B, *S, K^D, C]
    rows = math.prod(x.shape[:-1])
    return xp.reshape(P, (rows, len(offsets) * x.shape[-1]))


@dispatchable("flow_conv_forward")
def periodic_conv_forward(x, weight, bias=None):
    """``(y, saved)``: the convolution ``y[batch, *sites, c_out]`` of ``x[batch, *sites, c_in]``
    (the module docstring's formula; ``bias=None``: none) and what :func:`periodic_conv_vjp` may
    reuse (the reference's patches; ``None`` from a kernel, which needs nothing)."""
    xp = namespace(x)
    D = x.ndim - 2
    c_out, c_in, K = weight.shape[0], weight.shape[1], weight.shape[2]
    P2 = _patches(x, K)
    wt = xp.permute_dims(weight, tuple(range(2, 2 + D)) + (1, 0))
    Y = P2 @ xp.reshape(wt, (K ** D * c_in, c_out))
    if bias is not None:
        Y = Y + bias
    return xp.reshape(Y, tuple(x.shape[:-1]) + (c_out,)), P2


@dispatchable("flow_conv_vjp")
def periodic_conv_vjp(x, weight, gy, need_input: bool = True, need_params: bool = True,
                      bias: bool = True, saved=None):
    """``(gx, gweight, gbias)``: the cotangents of ``<gy, y>`` for ``y =
    periodic_conv_forward(x, weight, bias)[0]``; ``gx`` is ``None`` with ``need_input=False``,
    ``gweight`` and ``gbias`` with ``need_params=False``, ``gbias`` with ``bias=False``.
    ``saved`` is the forward's second output (recomputed when ``None``)."""
    xp = namespace(gy)
    D = x.ndim - 2
    c_out, c_in, K = weight.shape[0], weight.shape[1], weight.shape[2]
    gw = gb = gx = None
    if need_params:
        P2 = saved if saved is not None else _patches(x, K)
        G = xp.reshape(gy, (P2.shape[0], c_out))
        gWm = xp.matrix_transpose(P2) @ G                    # [K^D c_in, c_out]
        gw = xp.reshape(gWm, (K,) * D + (c_in, c_out))
        gw = xp.permute_dims(gw, (D + 1, D) + tuple(range(D)))
        if bias:
            gb = xp.sum(G, axis=0)
    if need_input:
        # gx[x, i] = sum_{k, o} W[o, i, k] gy[x - (k - r), o]: a convolution of gy with the
        # kernel flipped in every direction and the channel axes swapped.
        kaxes = tuple(range(2, 2 + D))
        wf = xp.flip(weight, axis=kaxes)
        wf = xp.permute_dims(wf, kaxes + (0, 1))               # [*K, c_out, c_in]
        Wf = xp.reshape(wf, (K ** D * c_out, c_in))
        gx = xp.reshape(_patches(gy, K) @ Wf, tuple(x.shape))
    return gx, gw, gb


def init_conv_params(xp, dim: int, c_in: int, c_out: int, kernel: int, rng: np.random.Generator,
                     dtype=None, device=None, scale: float = 1.0):
    """Parameters ``{"weight": [c_out, c_in, K, ...], "bias": [c_out]}`` drawn uniformly from
    ``[-a, a]`` with ``a = scale / sqrt(c_in K^D)`` (PyTorch's default for convolutions at
    ``scale = 1``). ``rng`` is a host NumPy generator, so the values do not depend on ``xp``."""
    dtype = dtype or xp.float64
    fan_in = c_in * kernel ** dim
    a = scale / math.sqrt(fan_in)
    w = rng.uniform(-a, a, size=(c_out, c_in) + (kernel,) * dim)
    b = rng.uniform(-a, a, size=(c_out,))
    return {"weight": asarray(w, xp, dtype=dtype, device=device),
            "bias": asarray(b, xp, dtype=dtype, device=device)}


class PeriodicConv:
    """Periodic convolution with ``c_in`` input and ``c_out`` output channels and an odd kernel
    size ``kernel`` on ``dim``-dimensional lattices (see the module docstring for the formula and
    layouts). The object holds only the shape information; parameters are passed explicitly.

    Methods
    -------
    forward(params, x) -> (y, cache)
    vjp(params, cache, gy, need_input=True, need_params=True) -> (gx, {"weight": gW, "bias": gb})
        The cotangents of ``x`` and the parameters for the output cotangent ``gy`` (either may be
        skipped and returned as ``None``).
    """

    def __init__(self, dim: int, c_in: int, c_out: int, kernel: int = 3, bias: bool = True):
        for name, v in (("dim", dim), ("c_in", c_in), ("c_out", c_out), ("kernel", kernel)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"PeriodicConv: {name} must be a positive integer, got {v!r}")
        if kernel % 2 != 1:
            raise ValueError(f"PeriodicConv: kernel size must be odd, got {kernel}")
        self.dim, self.c_in, self.c_out, self.kernel = int(dim), int(c_in), int(c_out), int(kernel)
        self.bias = bool(bias)
        self.offsets = _offsets(self.dim, self.kernel)

    def __repr__(self) -> str:
        return (f"PeriodicConv(dim={self.dim}, c_in={self.c_in}, c_out={self.c_out}, "
                f"kernel={self.kernel}, bias={self.bias})")

    def init_params(self, xp, rng: np.random.Generator, dtype=None, device=None,
                    scale: float = 1.0) -> dict:
        """Fresh parameters (see :func:`init_conv_params`); without bias only ``"weight"``."""
        p = init_conv_params(xp, self.dim, self.c_in, self.c_out, self.kernel, rng, dtype,
                             device, scale)
        if not self.bias:
            del p["bias"]
        return p

    def _check(self, params, x):
        D = self.dim
        if x.ndim != D + 2 or x.shape[-1] != self.c_in:
            raise ValueError(f"{self!r}: input must have shape [batch, *sites ({D}), {self.c_in}], "
                             f"got {tuple(x.shape)}")
        w = params["weight"]
        want = (self.c_out, self.c_in) + (self.kernel,) * D
        if tuple(w.shape) != want:
            raise ValueError(f"{self!r}: weight has shape {tuple(w.shape)}, expected {want}")
        if self.bias and tuple(params["bias"].shape) != (self.c_out,):
            raise ValueError(f"{self!r}: bias has shape {tuple(params['bias'].shape)}, expected "
                             f"({self.c_out},)")

    def forward(self, params, x):
        """``(y, cache)`` for ``x[batch, *sites, c_in]``."""
        self._check(params, x)
        r = self.kernel // 2
        for mu, L in enumerate(x.shape[1:1 + self.dim]):
            if r > L:
                raise ValueError(f"{self!r}: kernel half-width {r} exceeds the lattice extent "
                                 f"{L} in direction {mu}")
        y, saved = periodic_conv_forward(x, params["weight"],
                                         params["bias"] if self.bias else None)
        return y, (x, saved)

    def __call__(self, params, x):
        return self.forward(params, x)[0]

    def vjp(self, params, cache, gy, need_input: bool = True, need_params: bool = True):
        """Cotangents ``(gx, grads)`` of ``<gy, y>`` with respect to the input and the parameters
        (``gx`` is ``None`` with ``need_input=False``, ``grads`` is ``None`` with
        ``need_params=False``)."""
        x, saved = cache
        gx, gw, gb = periodic_conv_vjp(x, params["weight"], gy, need_input, need_params,
                                       self.bias, saved)
        grads = None
        if need_params:
            grads = {"weight": gw}
            if self.bias:
                grads["bias"] = gb
        return gx, grads
