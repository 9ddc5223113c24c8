"""Trainable stout networks: a stack of stout layers (:mod:`.stout`) whose weights are one flat
real parameter array, with the exact backward pass giving the gradient of a loss with respect to
the input links and to every weight (used for learned smearing, SLHMC's effective action and
training examples; docs/smearing.md, docs/training.md).
"""

from __future__ import annotations

from typing import Any, Sequence

from ..backend import asarray, device_of, namespace, real_dtype_of
from .loop_sets import resolve_loops
from .stout import stout_backward, stout_smear

__all__ = ["StoutSmearing"]

_DIRECTIONS = ("isotropic", "anisotropic", "per_direction")


class StoutSmearing:
    """A stack of stout layers with trainable weights in one flat real array.

    Parameters
    ----------
    n_layers : int
    loops : loop types shared by every layer (as in :func:`stout_smear`).
    D : int
        Number of dimensions.
    directions : ``"isotropic"`` (one weight per loop type), ``"anisotropic"`` (two: ``rho_t``
        for mu = 0 and ``rho_s`` for mu >= 1) or ``"per_direction"`` (D).
    site_shape : optional lattice shape: then every weight is also a field over the sites.
    rho : initial value of every weight (float), or a flat array of all parameters.
    keep : ``"links"`` or ``"all"`` (what each layer keeps for the backward; see
        :class:`~lattice_ml.smearing.stout.StoutContext`).

    Parameter layout: ``theta[layer, type, class, *site_shape]`` flattened in C order, with the
    direction classes ``[all]``, ``[t, s]`` or ``[0, ..., D-1]``.

    ``forward(U)`` returns the smeared links and keeps the layer inputs; ``backward(F')``
    returns ``(F, dL/dtheta)`` (flat, same layout as :meth:`parameters`).
    """

    def __init__(self, n_layers: int, loops="plaquette", *, D: int = 4,
                 directions: str = "isotropic", site_shape: Sequence[int] | None = None,
                 rho: Any = 0.1, keep: str = "all", method: str = "auto"):
        if not isinstance(n_layers, int) or n_layers < 1:
            raise ValueError(f"n_layers must be a positive integer, not {n_layers!r}")
        if directions not in _DIRECTIONS:
            raise ValueError(f"directions must be one of {', '.join(_DIRECTIONS)}")
        if keep not in ("links", "all"):
            raise ValueError(f"keep must be 'links' or 'all', not {keep!r}")
        self.n_layers = n_layers
        self.loops = [loops] if isinstance(loops, (str, dict)) else list(loops)
        self.D = D
        self.n_types = len(resolve_loops(loops, D))
        self.directions = directions
        self.n_classes = {"isotropic": 1, "anisotropic": 2, "per_direction": D}[directions]
        self.site_shape = tuple(site_shape) if site_shape is not None else ()
        self.keep = keep
        self.method = method
        self.param_shape = (n_layers, self.n_types, self.n_classes) + self.site_shape
        n = 1
        for s in self.param_shape:
            n *= s
        self.n_parameters = n
        if isinstance(rho, (int, float)):
            import numpy as _np  # host-side initial parameter vector only
            self._theta = _np.full(n, float(rho))
        else:
            self.set_parameters(rho)
        self._ctx = None

    # -- parameters ----------------------------------------------------------------------------
    def parameters(self):
        """The flat real parameter array (the object's own array; copy before mutating)."""
        return self._theta

    def set_parameters(self, theta) -> None:
        """Replace the parameters by the flat array ``theta`` (length ``n_parameters``)."""
        shape = tuple(theta.shape) if hasattr(theta, "shape") else (len(theta),)
        if shape != (self.n_parameters,):
            raise ValueError(f"parameters must have shape ({self.n_parameters},), got {shape}")
        self._theta = theta
        self._ctx = None

    def _layer_rho(self, theta, layer, xp, D):
        T = xp.reshape(theta, self.param_shape)[layer, ...]
        out = []
        for k in range(self.n_types):
            w = T[k, ...]  # [class, *site_shape]
            if self.directions == "isotropic":
                r = w[0, ...] if not self.site_shape else xp.reshape(w, (1,) + self.site_shape)
            elif self.directions == "anisotropic":
                idx = xp.asarray([0] + [1] * (D - 1), device=device_of(theta))
                r = xp.take(w, idx, axis=0)
            else:
                r = w
            out.append(r)
        return out

    def _grad_layer(self, grads, xp, D):
        out = []
        for g in grads:
            if self.directions == "isotropic":
                out.append(xp.reshape(g, (1,) + self.site_shape))
            elif self.directions == "anisotropic":
                out.append(xp.stack([g[0, ...], xp.sum(g[1:, ...], axis=0)], axis=0))
            else:
                out.append(g)
        return xp.stack(out, axis=0)

    # -- forward / backward --------------------------------------------------------------------
    def forward(self, U):
        """Smear ``U`` ``[batch, D, *sites, N, N]`` through every layer; keeps the contexts."""
        xp = namespace(U)
        if U.shape[1] != self.D:
            raise ValueError(f"this smearing was built for D = {self.D}, links have D = "
                             f"{U.shape[1]}")
        if self.site_shape and tuple(U.shape[2:2 + self.D]) != self.site_shape:
            raise ValueError(f"per-site weights are for sites {list(self.site_shape)}, links "
                             f"have {list(U.shape[2:2 + self.D])}")
        theta = asarray(self._theta, xp, dtype=real_dtype_of(xp, U.dtype), device=device_of(U))
        ctxs = []
        for layer in range(self.n_layers):
            rho = self._layer_rho(theta, layer, xp, self.D)
            U, ctx = stout_smear(U, rho, self.loops, keep=self.keep, method=self.method)
            ctxs.append((rho, ctx))
        self._ctx = ctxs
        return U

    __call__ = forward

    def backward(self, force):
        """``(F, grad)``: the force ``-dL/dU`` at the input of the last :meth:`forward` and
        ``dL/dtheta`` (flat), given the force ``F' = -dL/dU'`` at its output."""
        if self._ctx is None:
            raise RuntimeError("call forward(U) before backward(force)")
        xp = namespace(force)
        grads = [None] * self.n_layers
        for layer in range(self.n_layers - 1, -1, -1):
            rho, ctx = self._ctx[layer]
            force, g = stout_backward(ctx.U, rho, force, self.loops, context=ctx,
                                      method=self.method)
            grads[layer] = self._grad_layer(g, xp, self.D)
        return force, xp.reshape(xp.stack(grads, axis=0), (self.n_parameters,))

    def memory_fields(self) -> int:
        """Link-sized fields kept between forward and backward (per configuration)."""
        per = 1 if self.keep == "links" else 3 + self.n_types
        return self.n_layers * per
