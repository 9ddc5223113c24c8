"""Pointwise activations with their vector-Jacobian products.

Each activation is an object with ``forward(x) -> (y, cache)`` and ``vjp(cache, gy) -> gx``
(no parameters); ``y`` has the shape of ``x``:

* ``tanh``: ``y = tanh x``, ``dy/dx = 1 - y^2``;
* ``leaky_relu`` (slope ``a``, default 0.01 as in PyTorch): ``y = x`` for ``x > 0``, ``a x``
  otherwise (evaluated as ``max(x, a x)``); ``dy/dx = 1`` or ``a`` (at ``x = 0`` the derivative
  ``a`` is used);
* ``softplus``: ``y = log(1 + e^x)``, ``dy/dx = 1 / (1 + e^-x)``, evaluated stably;
* ``identity``.
"""

from __future__ import annotations

from ..backend import namespace

__all__ = ["Tanh", "LeakyReLU", "Softplus", "Identity", "activation"]


class Tanh:
    name = "tanh"

    def forward(self, x):
        y = namespace(x).tanh(x)
        return y, y

    def vjp(self, cache, gy):
        return gy * (1.0 - cache * cache)

    def __repr__(self):
        return "Tanh()"


class LeakyReLU:
    name = "leaky_relu"

    def __init__(self, slope: float = 0.01):
        if not 0.0 <= slope < 1.0:
            raise ValueError(f"leaky_relu slope must be in [0, 1), got {slope!r}")
        self.slope = float(slope)

    def forward(self, x):
        # max(x, a x) for 0 <= a < 1: no branches (where() on the sign of x runs at the speed of
        # mispredicted branches on random signs); the output is the cache (y > 0 iff x > 0)
        y = namespace(x).maximum(x, self.slope * x)
        return y, y

    def vjp(self, cache, gy):
        # dy/dx = p + (1 - p) a with p = [y > 0] in {0, 1}: exactly 1 or a, branch-free
        xp = namespace(gy)
        p = xp.astype(cache > 0, gy.dtype)
        return gy * (p + (1.0 - p) * self.slope)

    def __repr__(self):
        return f"LeakyReLU({self.slope})"


class Softplus:
    name = "softplus"

    def forward(self, x):
        xp = namespace(x)
        # log(1 + e^x) = max(x, 0) + log(1 + e^-|x|)
        y = xp.maximum(x, 0.0 * x) + xp.log1p(xp.exp(-xp.abs(x)))
        return y, x

    def vjp(self, cache, gy):
        xp = namespace(gy)
        e = xp.exp(-xp.abs(cache))
        sig = xp.where(cache >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        return gy * sig

    def __repr__(self):
        return "Softplus()"


class Identity:
    name = "identity"

    def forward(self, x):
        return x, None

    def vjp(self, cache, gy):
        return gy

    def __repr__(self):
        return "Identity()"


_ACTIVATIONS = {"tanh": Tanh, "leaky_relu": LeakyReLU, "softplus": Softplus,
                "identity": Identity}


def activation(name: str):
    """The activation called ``name`` (one of ``tanh``, ``leaky_relu``, ``softplus``,
    ``identity``)."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()
