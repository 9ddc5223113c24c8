"""A normalizing flow: a stack of invertible layers on top of a Gaussian prior.

With latent fields ``z[batch, *sites]`` drawn from the prior ``r(z) = prod_x N(z(x); 0, 1)``,
``log r(z) = -sum_x z(x)^2 / 2 - (V/2) log(2 pi)``, the flow ``x = f(z) = f_n(...f_1(z))`` has the
density ``log q(x) = log r(z) - log|det df/dz|``. Every layer maps ``(x, logJ) -> (y, logJ +
log|det dy/dx|)``, so ``forward(z)`` returns ``(x, logJ)`` with ``logJ = log|det df/dz|`` and
``inverse(x)`` returns ``(z, log|det df^{-1}/dx|) = (z, -logJ)``.

Parameters are one dict ``{"layer0": {...}, "layer1": {...}, ...}`` (a parameter set of
:mod:`lattice_ml.optim`), held by the flow as ``flow.params`` and replaced (never modified in
place) by training. Vector-Jacobian products: :meth:`Flow.vjp` (forward map) and
:meth:`Flow.inverse_vjp` (inverse map) give the cotangents of the input and of all parameters.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..backend import asarray, namespace, to_numpy
from ..stats import effective_sample_size  # noqa: F401  (the one ESS, re-exported)
from .coupling import AffineCoupling, ConvNet, checkerboard_mask, stripe_mask

__all__ = ["Flow", "make_phi4_flow", "prior_log_prob", "effective_sample_size"]


def prior_log_prob(z):
    """``log r(z) = -sum z^2 / 2 - (V/2) log 2 pi`` per configuration, ``[batch]``."""
    xp = namespace(z)
    V = math.prod(z.shape[1:])
    return -0.5 * xp.sum(z * z, axis=tuple(range(1, z.ndim))) - 0.5 * V * math.log(2 * math.pi)


class Flow:
    """A stack of coupling layers with a standard-normal prior (see the module docstring).

    Parameters
    ----------
    layers : sequence of layers (e.g. :class:`~lattice_ml.flows.coupling.AffineCoupling`)
    params : dict ``{"layer<i>": parameters of layer i}``
    shape : lattice shape ``(L_0, ..., L_{D-1})``
    """

    def __init__(self, layers: Sequence, params: dict, shape: Sequence[int]):
        self.layers = list(layers)
        self.shape = tuple(int(L) for L in shape)
        keys = [f"layer{i}" for i in range(len(self.layers))]
        if sorted(params) != sorted(keys):
            raise ValueError(f"flow parameters must have the keys {keys}, got {sorted(params)}")
        self.params = {k: params[k] for k in keys}

    def __repr__(self) -> str:
        return f"Flow({len(self.layers)} layers, shape={list(self.shape)})"

    @property
    def n_parameters(self) -> int:
        from ..optim import flatten
        return int(sum(math.prod(p.shape) for p in flatten(self.params)[1]))

    def _p(self, i):
        return self.params[f"layer{i}"]

    def _check(self, x, name):
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"{name} must have shape [batch, {', '.join(map(str, self.shape))}], "
                             f"got {tuple(x.shape)}")

    # -- maps ----------------------------------------------------------------------------------
    def forward(self, z):
        """``(x, logJ)`` with ``x = f(z)`` and ``logJ = log|det df/dz|`` ``[batch]``."""
        self._check(z, "z")
        xp = namespace(z)
        logJ = xp.zeros((z.shape[0],), dtype=z.dtype)
        x = z
        for i, layer in enumerate(self.layers):
            x, logJ = layer.forward(self._p(i), x, logJ)
        return x, logJ

    def inverse(self, x):
        """``(z, log|det df^{-1}/dx|)`` with ``z = f^{-1}(x)``."""
        self._check(x, "x")
        xp = namespace(x)
        logJ = xp.zeros((x.shape[0],), dtype=x.dtype)
        for i in range(len(self.layers) - 1, -1, -1):
            x, logJ = self.layers[i].inverse(self._p(i), x, logJ)
        return x, logJ

    def draw_latent(self, rng):
        """Latent fields ``z[rng.n_chains, *sites]`` from the prior (standard normal)."""
        return rng.normal(self.shape)

    def prior_log_prob(self, z):
        """``log r(z)`` ``[batch]`` (:func:`prior_log_prob`)."""
        return prior_log_prob(z)

    def log_prob(self, x):
        """``log q(x)`` of the flow's distribution, ``[batch]``."""
        z, ld = self.inverse(x)
        return prior_log_prob(z) + ld

    def sample(self, rng):
        """``(x, log q(x))`` for one latent draw per chain of the random streams ``rng``."""
        z = self.draw_latent(rng)
        x, logJ = self.forward(z)
        return x, prior_log_prob(z) - logJ

    # -- vector-Jacobian products --------------------------------------------------------------
    def forward_cache(self, z):
        """``(x, logJ, caches)`` for :meth:`vjp`."""
        self._check(z, "z")
        xp = namespace(z)
        logJ = xp.zeros((z.shape[0],), dtype=z.dtype)
        caches = []
        x = z
        for i, layer in enumerate(self.layers):
            x, ld, c = layer.forward_cache(self._p(i), x)
            logJ = logJ + ld
            caches.append(c)
        return x, logJ, caches

    def vjp(self, caches, gx, glogJ, need_params: bool = True):
        """Cotangents ``(gz, gparams)`` of ``<gx, x> + <glogJ, logJ>`` for ``(x, logJ) =
        forward(z)``; ``glogJ`` is ``[batch]``. ``gparams`` has the structure of ``params``
        (``None`` with ``need_params=False``)."""
        grads = {}
        g = gx
        for i in range(len(self.layers) - 1, -1, -1):
            g, gp = self.layers[i].vjp(self._p(i), caches[i], g, glogJ, need_params)
            grads[f"layer{i}"] = gp
        if not need_params:
            return g, None
        return g, {f"layer{i}": grads[f"layer{i}"] for i in range(len(self.layers))}

    def inverse_cache(self, x):
        """``(z, logdet_inv, caches)`` for :meth:`inverse_vjp`."""
        self._check(x, "x")
        xp = namespace(x)
        ld = xp.zeros((x.shape[0],), dtype=x.dtype)
        caches = [None] * len(self.layers)
        for i in range(len(self.layers) - 1, -1, -1):
            x, d, caches[i] = self.layers[i].inverse_cache(self._p(i), x)
            ld = ld + d
        return x, ld, caches

    def inverse_vjp(self, caches, gz, glogdet):
        """Cotangents ``(gx, gparams)`` of ``<gz, z> + <glogdet, logdet_inv>`` for the inverse."""
        grads = {}
        g = gz
        for i in range(len(self.layers)):
            g, grads[f"layer{i}"] = self.layers[i].inverse_vjp(self._p(i), caches[i], g, glogdet)
        return g, {f"layer{i}": grads[f"layer{i}"] for i in range(len(self.layers))}

    # -- parameters ----------------------------------------------------------------------------
    def params_to_host(self) -> dict:
        """Copy of the parameters as host NumPy arrays (nested dicts)."""
        def rec(t):
            return {k: rec(v) for k, v in t.items()} if isinstance(t, dict) else \
                np.array(to_numpy(t), copy=True)
        return rec(self.params)

    def load_params(self, host: dict, xp=None, dtype=None, device=None) -> None:
        """Replace the parameters by ``host`` (as from :meth:`params_to_host`); shapes are
        checked against the current parameters."""
        def rec(cur, new, path):
            if isinstance(cur, dict):
                if not isinstance(new, dict) or sorted(cur) != sorted(new):
                    raise ValueError(f"flow parameters at {path or '<root>'!r}: expected keys "
                                     f"{sorted(cur)}, got {sorted(new) if isinstance(new, dict) else new!r}")
                return {k: rec(cur[k], new[k], f"{path}/{k}" if path else k) for k in cur}
            a = np.asarray(to_numpy(new))
            if tuple(a.shape) != tuple(cur.shape):
                raise ValueError(f"flow parameter {path!r} has shape {tuple(a.shape)}, expected "
                                 f"{tuple(cur.shape)}")
            ns = xp or namespace(cur)
            return asarray(a, ns, dtype=dtype or cur.dtype, device=device)
        self.params = rec(self.params, host, "")


def make_phi4_flow(shape: Sequence[int], xp, *, n_layers: int = 16,
                   hidden: Sequence[int] = (8, 8), kernel: int = 3, mask: str = "checkerboard",
                   hidden_activation: str = "leaky_relu", final_activation: str = "tanh",
                   seed: int = 0, final_scale: float = 1.0, dtype=None, device=None) -> Flow:
    """Affine-coupling flow for a real scalar field on a periodic lattice of ``shape``.

    Layer ``i`` freezes the sites of parity ``i % 2`` (``mask="checkerboard"``) or the slices
    ``x_mu`` of parity ``(i // D) % 2`` in direction ``mu = i % D`` (``mask="stripes"``); its
    conditioner is a :class:`~lattice_ml.flows.coupling.ConvNet` with channels
    ``[1, *hidden, 2]``, kernel ``kernel``, ``hidden_activation`` after hidden convolutions and
    ``final_activation`` (``tanh`` bounds ``s``) after the last one. The defaults are the
    architecture of Albergo et al., arXiv:2101.08176 (16 layers, hidden ``[8, 8]``, kernel 3).
    Weights are drawn from a NumPy generator seeded with ``seed`` (reproducible on every
    namespace); ``final_scale < 1`` shrinks the last convolution to start near the identity.
    """
    if not isinstance(n_layers, int) or n_layers < 1:
        raise ValueError(f"n_layers must be a positive integer, got {n_layers!r}")
    dtype = dtype or xp.float64
    D = len(shape)
    rng = np.random.default_rng(seed)
    layers, params = [], {}
    for i in range(n_layers):
        if mask == "checkerboard":
            m = checkerboard_mask(shape, i % 2, xp, dtype, device)
        elif mask == "stripes":
            m = stripe_mask(shape, i % D, (i // D) % 2, xp, dtype, device)
        else:
            raise ValueError(f"unknown mask {mask!r}; choose 'checkerboard' or 'stripes'")
        net = ConvNet(D, [1, *hidden, 2], kernel, hidden_activation, final_activation)
        layer = AffineCoupling(m, net)
        layers.append(layer)
        params[f"layer{i}"] = layer.init_params(xp, rng, dtype, device, final_scale)
    return Flow(layers, params, shape)
