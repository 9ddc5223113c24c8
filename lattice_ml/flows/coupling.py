"""Affine coupling layers (real NVP) for real scalar fields, with conv-net conditioners.

A coupling layer splits the sites with a fixed mask ``m`` (1 on *frozen* sites, 0 on *active*
sites) and maps ``x[batch, *sites] -> y``::

    (s, t) = net(m x)                                  (net: [B, *sites, 1] -> [B, *sites, 2])
    y      = m x + (1 - m) (x exp(s) + t)
    log|det dy/dx| = sum_x (1 - m(x)) s(x)             (per configuration, shape [batch])

The Jacobian is triangular (active sites depend on frozen ones only through ``s`` and ``t``), so
the log-determinant is exact. The inverse is ``x = m y + (1 - m) (y - t) exp(-s)`` with
``(s, t) = net(m y)``. Masks: :func:`checkerboard_mask` (sites of parity ``(sum_mu x_mu) mod 2``
equal to ``parity`` are frozen) and :func:`stripe_mask` (slices ``x_mu`` even or odd frozen), or
any 0/1 array of the lattice shape.

Vector-Jacobian products: :meth:`AffineCoupling.vjp` gives the cotangents of ``x`` and of the
parameters for the cotangents ``(gy, glogdet)`` of the outputs ``(y, logdet)``, and
:meth:`AffineCoupling.inverse_vjp` the same for the inverse map (used by forward-KL training).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..backend import asarray, namespace
from .activations import activation
from .conv import PeriodicConv

__all__ = ["ConvNet", "AffineCoupling", "checkerboard_mask", "stripe_mask"]


def checkerboard_mask(shape: Sequence[int], parity: int, xp, dtype=None, device=None):
    """0/1 array of ``shape``: 1 where ``(sum_mu x_mu) % 2 == parity`` (frozen sites)."""
    if parity not in (0, 1):
        raise ValueError(f"checkerboard parity must be 0 or 1, got {parity!r}")
    grids = np.indices(tuple(shape)).sum(axis=0) % 2
    return asarray((grids == parity).astype(np.float64), xp, dtype=dtype or xp.float64,
                   device=device)


def stripe_mask(shape: Sequence[int], mu: int, parity: int, xp, dtype=None, device=None):
    """0/1 array of ``shape``: 1 where ``x_mu % 2 == parity`` (frozen slices)."""
    if parity not in (0, 1):
        raise ValueError(f"stripe parity must be 0 or 1, got {parity!r}")
    if not 0 <= mu < len(shape):
        raise ValueError(f"stripe direction mu = {mu} outside 0..{len(shape) - 1}")
    coord = np.indices(tuple(shape))[mu] % 2
    return asarray((coord == parity).astype(np.float64), xp, dtype=dtype or xp.float64,
                   device=device)


class ConvNet:
    """A stack of :class:`~lattice_ml.flows.conv.PeriodicConv` layers with pointwise activations.

    ``channels = [c_in, h_1, ..., h_n, c_out]``; every convolution but the last is followed by
    ``hidden_activation``, the last by ``final_activation``. Parameters are a dict
    ``{"conv0": {...}, "conv1": {...}, ...}``.
    """

    def __init__(self, dim: int, channels: Sequence[int], kernel: int = 3,
                 hidden_activation: str = "leaky_relu", final_activation: str = "tanh"):
        channels = list(channels)
        if len(channels) < 2:
            raise ValueError(f"ConvNet needs at least input and output channels, got {channels}")
        self.dim = dim
        self.channels = channels
        self.kernel = kernel
        self.convs = [PeriodicConv(dim, a, b, kernel) for a, b in zip(channels[:-1], channels[1:])]
        n = len(self.convs)
        self.acts = [activation(hidden_activation if i < n - 1 else final_activation)
                     for i in range(n)]

    def init_params(self, xp, rng: np.random.Generator, dtype=None, device=None,
                    final_scale: float = 1.0) -> dict:
        """Fresh parameters; the last convolution's range is multiplied by ``final_scale`` (a
        small value starts the coupling layer close to the identity)."""
        n = len(self.convs)
        return {f"conv{i}": c.init_params(xp, rng, dtype, device,
                                          scale=final_scale if i == n - 1 else 1.0)
                for i, c in enumerate(self.convs)}

    def forward(self, params, x):
        caches = []
        for i, (conv, act) in enumerate(zip(self.convs, self.acts)):
            x, cc = conv.forward(params[f"conv{i}"], x)
            x, ca = act.forward(x)
            caches.append((cc, ca))
        return x, caches

    def vjp(self, params, caches, gy, need_input: bool = True, need_params: bool = True):
        """Cotangents ``(gx, gparams)`` of ``<gy, y>`` (``None`` for a part not needed)."""
        grads = {}
        g = gy
        for i in range(len(self.convs) - 1, -1, -1):
            cc, ca = caches[i]
            g = self.acts[i].vjp(ca, g)
            g, grads[f"conv{i}"] = self.convs[i].vjp(params[f"conv{i}"], cc, g,
                                                     need_input=need_input or i > 0,
                                                     need_params=need_params)
        if not need_params:
            return g, None
        return g, {f"conv{i}": grads[f"conv{i}"] for i in range(len(self.convs))}


class AffineCoupling:
    """Affine coupling layer ``y = m x + (1 - m)(x e^s + t)`` (see the module docstring).

    Parameters
    ----------
    mask : array ``[*sites]`` of 0/1 (1 = frozen), in the namespace and dtype of the fields.
    net : :class:`ConvNet` with 1 input and 2 output channels (``s`` and ``t``).
    """

    def __init__(self, mask, net: ConvNet):
        if net.channels[0] != 1 or net.channels[-1] != 2:
            raise ValueError("the conditioner of an affine coupling maps 1 channel to 2 (s, t), "
                             f"got channels {net.channels}")
        if mask.ndim != net.dim:
            raise ValueError(f"mask has {mask.ndim} dimensions but the net is {net.dim}-dimensional")
        self.mask = mask
        self.net = net

    def __repr__(self) -> str:
        return f"AffineCoupling(shape={tuple(self.mask.shape)}, channels={self.net.channels})"

    def init_params(self, xp, rng, dtype=None, device=None, final_scale: float = 1.0) -> dict:
        return self.net.init_params(xp, rng, dtype, device, final_scale)

    def _check(self, x):
        if tuple(x.shape[1:]) != tuple(self.mask.shape):
            raise ValueError(f"field has sites {tuple(x.shape[1:])} but the coupling mask has "
                             f"shape {tuple(self.mask.shape)}")

    def _st(self, params, frozen):
        xp = namespace(frozen)
        out, caches = self.net.forward(params, xp.expand_dims(frozen, axis=-1))
        return out[..., 0], out[..., 1], caches

    def _net_vjp(self, params, caches, gs, gt, need_params=True):
        xp = namespace(gs)
        gz, gp = self.net.vjp(params, caches, xp.stack([gs, gt], axis=-1),
                              need_params=need_params)
        return (None if gz is None else gz[..., 0]), gp

    def _sum_sites(self, a):
        xp = namespace(a)
        return xp.sum(a, axis=tuple(range(1, a.ndim)))

    # -- forward -------------------------------------------------------------------------------
    def forward_cache(self, params, x):
        """``(y, logdet, cache)``; ``logdet[batch] = log|det dy/dx|``."""
        self._check(x)
        xp = namespace(x)
        m = self.mask
        a = 1.0 - m
        s, t, caches = self._st(params, m * x)
        es = xp.exp(s)
        y = m * x + a * (x * es + t)
        return y, self._sum_sites(a * s), (x, es, caches)

    def forward(self, params, x, logJ):
        """``(y, logJ + log|det dy/dx|)`` (normflow style)."""
        y, ld, _ = self.forward_cache(params, x)
        return y, logJ + ld

    def vjp(self, params, cache, gy, glogdet, need_params: bool = True):
        """Cotangents ``(gx, gparams)`` of ``<gy, y> + <glogdet, logdet>`` (``gparams`` is
        ``None`` with ``need_params=False``, which skips their computation)."""
        xp = namespace(gy)
        x, es, caches = cache
        m = self.mask
        a = 1.0 - m
        ga = a * gy
        gs = ga * x * es + a * xp.reshape(glogdet, (-1,) + (1,) * (gy.ndim - 1))
        gfrozen, gp = self._net_vjp(params, caches, gs, ga, need_params)
        gx = m * gy + ga * es + m * gfrozen
        return gx, gp

    # -- inverse -------------------------------------------------------------------------------
    def inverse_cache(self, params, y):
        """``(x, logdet_inv, cache)`` with ``logdet_inv = log|det dx/dy| = -sum (1 - m) s``."""
        self._check(y)
        xp = namespace(y)
        m = self.mask
        a = 1.0 - m
        s, t, caches = self._st(params, m * y)
        ems = xp.exp(-s)
        x = m * y + a * (y - t) * ems
        return x, -self._sum_sites(a * s), (y, t, ems, x, caches)

    def inverse(self, params, y, logJ):
        """``(x, logJ + log|det dx/dy|)``."""
        x, ld, _ = self.inverse_cache(params, y)
        return x, logJ + ld

    def inverse_vjp(self, params, cache, gx, glogdet):
        """Cotangents ``(gy, gparams)`` of ``<gx, x> + <glogdet, logdet_inv>`` for the inverse."""
        xp = namespace(gx)
        y, t, ems, x, caches = cache
        m = self.mask
        a = 1.0 - m
        ga = a * gx
        # x_active = (y - t) e^{-s}: d/ds = -x_active, d/dt = -e^{-s}; logdet_inv = -sum a s
        gs = -ga * x - a * xp.reshape(glogdet, (-1,) + (1,) * (gx.ndim - 1))
        gt = -ga * ems
        gfrozen, gp = self._net_vjp(params, caches, gs, gt)
        gy = m * gx + ga * ems + m * gfrozen
        return gy, gp
