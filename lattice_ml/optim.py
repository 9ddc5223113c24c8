"""The one optimiser module of the library: SGD and Adam, learning-rate schedules, gradient clipping.

Everything that trains in ``lattice_ml`` (flows, trainable stout networks, self-learning actions)
uses this module. It is written against the Python array API: parameters and gradients are arrays
of any namespace (NumPy, CuPy, ``array_api_strict``), and no deep-learning framework is involved.

Parameter sets
--------------
A *parameter set* is one array, a list or tuple of parameter sets, or a dict ``name -> parameter
set`` (nesting allowed, e.g. ``{"layer0": {"w": w0, "b": b0}, "layer1": [...]}``). Gradients must
have exactly the same structure (same keys, same lengths, same shapes). Leaves must be real
floating arrays (float32 or float64); pass complex parameters as their real and imaginary parts.
A gradient of another float dtype than its parameter is cast to the parameter's dtype (so the
parameters and the state keep their dtype).
Each leaf has a *name*, its path in the structure joined by ``/`` (``"layer0/w"``, ``"1"``; the
single-array set has the name ``""``); names order the optimiser state.

Optimisers
----------
:class:`SGD` and :class:`Adam` are small objects that hold real state (step count, momentum and
moment buffers). ``new_params = opt.step(params, grads)`` is *pure with respect to its inputs*: it
returns new arrays in the structure of ``params`` and never writes into ``params`` or ``grads``;
only the optimiser's own state advances. Everything minimises; to maximise, pass ``-grad``.

``opt.state_dict()`` returns plain data (Python numbers, strings and host NumPy arrays, copied)
and ``opt.load_state_dict(state)`` restores it into an optimiser built with the same arguments;
a checkpoint taken after step k and loaded into a fresh optimiser gives bit-identical steps k+1,
k+2, ... (tested). Buffers are moved to the namespace and device of the parameters at the next
step. The hyperparameters are the object's own (constructor arguments); ``state_dict`` records
them under ``"hyperparameters"`` for reference only.

Learning rates
--------------
``lr`` is a non-negative float or a callable ``step -> lr`` evaluated with the number of steps
already taken (the first update uses ``lr(0)``). Helpers: :func:`constant`, :func:`cosine_decay`,
:func:`exponential_decay`, :func:`warmup`.

Update formulas (step t = 1, 2, ..., learning rate ``eta_t = lr(t - 1)``, gradient ``g``)
------------------------------------------------------------------------------------------
SGD (weight decay as an L2 term added to the gradient, as in PyTorch)::

    g <- g + wd * theta
    b <- mu * b + g           (b = g at t = 1)
    d <- g + mu * b  (nesterov)   or   d <- b
    theta <- theta - eta_t * d

Adam (Kingma & Ba 2015) with bias correction, and *decoupled* weight decay (AdamW, Loshchilov &
Hutter 2019) by default (``decoupled_weight_decay=False`` adds ``wd * theta`` to ``g`` instead)::

    m <- b1 m + (1 - b1) g,    v <- b2 v + (1 - b2) g^2
    m_hat = m / (1 - b1^t),    v_hat = v / (1 - b2^t)      (amsgrad: vmax <- max(vmax, v) and
                                                             v_hat = vmax / (1 - b2^t))
    theta <- theta - eta_t * wd * theta - eta_t * m_hat / (sqrt(v_hat) + eps)

For a constant gradient ``m_hat = g`` and ``v_hat = g^2`` at every step, so every step moves by
``eta_t g / (|g| + eps)``: ``eta_t sign(g)`` up to ``eps`` (tested).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .backend import asarray, device_of, namespace, to_numpy

__all__ = [
    "SGD",
    "Adam",
    "Optimizer",
    "constant",
    "cosine_decay",
    "exponential_decay",
    "warmup",
    "global_norm",
    "clip_by_global_norm",
    "clip_by_value",
    "flatten",
    "unflatten",
]


# ------------------------------------------------------------------------------------------
# parameter sets
# ------------------------------------------------------------------------------------------
def _is_leaf(x) -> bool:
    return not isinstance(x, (dict, list, tuple))


def flatten(tree, what: str = "parameters"):
    """``(names, leaves, treedef)`` of a parameter set (see the module docstring).

    ``names`` are the ``/``-joined paths, in depth-first order (dict keys in insertion order);
    ``unflatten(treedef, leaves)`` rebuilds the structure. A ``ValueError`` names an empty set or
    a dict key that is not a string.
    """
    names: list[str] = []
    leaves: list[Any] = []

    def rec(node, path):
        if isinstance(node, dict):
            keys = []
            for k, v in node.items():
                if not isinstance(k, str):
                    raise ValueError(f"{what}: dict keys must be strings, got {k!r} at "
                                     f"{path or '<root>'!r}")
                keys.append((k, rec(v, f"{path}/{k}" if path else k)))
            return ("dict", tuple(keys))
        if isinstance(node, (list, tuple)):
            kids = tuple(rec(v, f"{path}/{i}" if path else str(i)) for i, v in enumerate(node))
            return ("list" if isinstance(node, list) else "tuple", kids)
        names.append(path)
        leaves.append(node)
        return ("leaf",)

    treedef = rec(tree, "")
    if not leaves:
        raise ValueError(f"{what}: the parameter set is empty")
    return names, leaves, treedef


def unflatten(treedef, leaves):
    """Inverse of :func:`flatten`: the structure ``treedef`` filled with ``leaves`` in order."""
    it = iter(leaves)

    def rec(td):
        kind = td[0]
        if kind == "leaf":
            return next(it)
        if kind == "dict":
            return {k: rec(sub) for k, sub in td[1]}
        kids = [rec(sub) for sub in td[1]]
        return kids if kind == "list" else tuple(kids)

    return rec(treedef)


def _check_real_float(xp, x, name: str, what: str):
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise ValueError(f"{what} {name!r}: expected an array, got {type(x).__name__}")
    if x.dtype not in (xp.float32, xp.float64):
        raise ValueError(f"{what} {name!r}: dtype {x.dtype} is not float32/float64 (complex "
                         "parameters: pass real and imaginary parts as separate parameters)")


def _match(params, grads):
    """Flatten params and grads and check that they have the same structure and shapes."""
    pnames, pleaves, ptd = flatten(params, "params")
    try:
        gnames, gleaves, gtd = flatten(grads, "grads")
    except ValueError as exc:
        raise ValueError(f"grads do not match params: {exc}") from None
    if ptd != gtd:
        missing = sorted(set(pnames) - set(gnames))
        extra = sorted(set(gnames) - set(pnames))
        detail = []
        if missing:
            detail.append(f"missing in grads: {missing}")
        if extra:
            detail.append(f"not in params: {extra}")
        if not detail:
            detail.append("same names but different container types or order")
        raise ValueError("grads do not have the structure of params (" + "; ".join(detail) + ")")
    for n, p, g in zip(pnames, pleaves, gleaves):
        xp = namespace(p)
        _check_real_float(xp, p, n, "parameter")
        if not hasattr(g, "shape"):
            raise ValueError(f"gradient {n!r}: expected an array, got {type(g).__name__}")
        if tuple(g.shape) != tuple(p.shape):
            raise ValueError(f"gradient {n!r} has shape {tuple(g.shape)} but the parameter has "
                             f"shape {tuple(p.shape)}")
        try:
            namespace(p, g)
        except TypeError:
            raise ValueError(f"gradient {n!r} is an array of another namespace than its "
                             "parameter") from None
        _check_real_float(xp, g, n, "gradient")
    gleaves = [g if g.dtype == p.dtype else namespace(p).astype(g, p.dtype)
               for p, g in zip(pleaves, gleaves)]
    return pnames, pleaves, gleaves, ptd


# ------------------------------------------------------------------------------------------
# learning-rate schedules
# ------------------------------------------------------------------------------------------
def _check_nonneg(value, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return v


def _check_steps(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class constant:
    """``lr(step) = lr`` for every step."""

    def __init__(self, lr: float):
        self.lr = _check_nonneg(lr, "lr")

    def __call__(self, step: int) -> float:
        return self.lr

    def __repr__(self) -> str:
        return f"constant({self.lr!r})"


class cosine_decay:
    """``lr(t) = lr_min + (lr0 - lr_min) (1 + cos(pi min(t, T) / T)) / 2`` with ``T =
    total_steps``: ``lr0`` at t = 0, ``lr_min`` from t = T on."""

    def __init__(self, lr0: float, total_steps: int, lr_min: float = 0.0):
        self.lr0 = _check_nonneg(lr0, "lr0")
        self.total_steps = _check_steps(total_steps, "total_steps")
        self.lr_min = _check_nonneg(lr_min, "lr_min")
        if self.lr_min > self.lr0:
            raise ValueError(f"lr_min = {lr_min!r} exceeds lr0 = {lr0!r}")

    def __call__(self, step: int) -> float:
        t = min(max(int(step), 0), self.total_steps)
        return self.lr_min + 0.5 * (self.lr0 - self.lr_min) * (
            1.0 + math.cos(math.pi * t / self.total_steps))

    def __repr__(self) -> str:
        return f"cosine_decay({self.lr0!r}, {self.total_steps!r}, lr_min={self.lr_min!r})"


class exponential_decay:
    """``lr(t) = lr0 * decay_rate ** (t / decay_steps)``; with ``staircase=True`` the exponent is
    ``floor(t / decay_steps)``."""

    def __init__(self, lr0: float, decay_rate: float, decay_steps: int = 1,
                 staircase: bool = False):
        self.lr0 = _check_nonneg(lr0, "lr0")
        rate = _check_nonneg(decay_rate, "decay_rate")
        if rate == 0.0:
            raise ValueError("decay_rate must be > 0")
        self.decay_rate = rate
        self.decay_steps = _check_steps(decay_steps, "decay_steps")
        self.staircase = bool(staircase)

    def __call__(self, step: int) -> float:
        e = int(step) / self.decay_steps
        if self.staircase:
            e = math.floor(e)
        return self.lr0 * self.decay_rate ** e

    def __repr__(self) -> str:
        return (f"exponential_decay({self.lr0!r}, {self.decay_rate!r}, "
                f"decay_steps={self.decay_steps!r}, staircase={self.staircase!r})")


class warmup:
    """Linear warm-up in front of a schedule: ``lr(t) = base(t) * min(1, (t + 1) / warmup_steps)``.

    ``base`` is a float or a schedule; it sees the global step ``t`` (the warm-up does not shift
    it). The first step uses ``base(0) / warmup_steps``; from ``t = warmup_steps - 1`` on the
    factor is 1.
    """

    def __init__(self, base, warmup_steps: int):
        self.base = base if callable(base) else constant(base)
        self.warmup_steps = _check_steps(warmup_steps, "warmup_steps")

    def __call__(self, step: int) -> float:
        return float(self.base(step)) * min(1.0, (int(step) + 1) / self.warmup_steps)

    def __repr__(self) -> str:
        return f"warmup({self.base!r}, {self.warmup_steps!r})"


# ------------------------------------------------------------------------------------------
# clipping
# ------------------------------------------------------------------------------------------
def global_norm(grads) -> float:
    """``sqrt(sum over all leaves and entries of g^2)`` as a Python float (one host sync)."""
    _, leaves, _ = flatten(grads, "grads")
    total = 0.0
    for g in leaves:
        xp = namespace(g)
        total += float(xp.sum(g * g))
    return math.sqrt(total)


def clip_by_global_norm(grads, max_norm: float, error_if_nonfinite: bool = False):
    """Rescale a gradient set so that its global norm is at most ``max_norm``.

    Returns ``(clipped, norm)`` with ``norm`` the global norm *before* clipping (a float). If
    ``norm > max_norm`` every leaf is multiplied by ``max_norm / norm`` (so the clipped set has
    norm ``max_norm`` to round-off and the direction is kept); otherwise the leaves are returned
    unchanged. A non-finite norm raises ``ValueError`` with ``error_if_nonfinite=True``; otherwise
    the gradients are returned unscaled with that norm, so the caller can skip the step.
    """
    max_norm = _check_nonneg(max_norm, "max_norm")
    names, leaves, td = flatten(grads, "grads")
    norm = global_norm(grads)
    if not math.isfinite(norm):
        if error_if_nonfinite:
            raise ValueError(f"gradient global norm is {norm}; non-finite entries in "
                             f"{[n for n, g in zip(names, leaves) if not _finite(g)]}")
        return grads, norm
    if norm <= max_norm:
        return grads, norm
    scale = max_norm / norm
    return unflatten(td, [g * scale for g in leaves]), norm


def _finite(g) -> bool:
    xp = namespace(g)
    return bool(xp.all(xp.isfinite(g)))


def clip_by_value(grads, clip_value: float):
    """Clip every gradient entry to ``[-clip_value, clip_value]`` (same structure returned)."""
    c = _check_nonneg(clip_value, "clip_value")
    _, leaves, td = flatten(grads, "grads")
    out = []
    for g in leaves:
        xp = namespace(g)
        out.append(xp.clip(g, -c, c))
    return unflatten(td, out)


# ------------------------------------------------------------------------------------------
# optimisers
# ------------------------------------------------------------------------------------------
class Optimizer:
    """Common machinery: step counting, learning rate, state handling (see module docstring)."""

    _slots: tuple[str, ...] = ()

    def __init__(self, lr):
        if callable(lr):
            self.lr = lr
        else:
            self.lr = _check_nonneg(lr, "lr")
        self.reset()

    # -- state ---------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget all state (step count and buffers)."""
        self.step_count = 0
        self._names: list[str] | None = None
        self._shapes: list[tuple[int, ...]] | None = None
        self._buffers: dict[str, list[Any]] = {}
        self._host: dict[str, list[np.ndarray]] | None = None

    def lr_at(self, step: int) -> float:
        """The learning rate the update number ``step + 1`` uses (``step`` steps taken)."""
        if callable(self.lr):
            value = self.lr(step)
            try:
                v = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"learning-rate schedule returned {value!r} at step {step}, "
                                 "not a number") from None
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"learning-rate schedule returned {v!r} at step {step}; it "
                                 "must be finite and >= 0")
            return v
        return self.lr

    @property
    def current_lr(self) -> float:
        """The learning rate of the next step."""
        return self.lr_at(self.step_count)

    def hyperparameters(self) -> dict:
        raise NotImplementedError

    def state_dict(self) -> dict:
        """Plain-data state: ``{"optimizer", "step", "names", "shapes", "hyperparameters",
        "buffers": {slot: {name: host ndarray}}}`` (arrays copied; empty before the first step)."""
        hyper = self.hyperparameters()
        hyper["lr"] = repr(self.lr) if callable(self.lr) else self.lr
        buffers: dict[str, dict[str, np.ndarray]] = {}
        if self._names is not None:
            for slot in self._slots:
                host = self._host[slot] if self._host is not None else [
                    to_numpy(b) for b in self._buffers[slot]]
                buffers[slot] = {n: np.array(h, copy=True) for n, h in zip(self._names, host)}
        return {
            "optimizer": type(self).__name__,
            "step": int(self.step_count),
            "names": list(self._names) if self._names is not None else None,
            "shapes": [list(s) for s in self._shapes] if self._shapes is not None else None,
            "hyperparameters": hyper,
            "buffers": buffers,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` output. ``ValueError`` for another optimiser type or an
        incomplete state; structure and shapes are checked against the parameters at the next
        step. The buffers go to the parameters' namespace and device at the next step."""
        if not isinstance(state, dict) or "optimizer" not in state:
            raise ValueError("optimizer state must be a dict produced by state_dict()")
        if state["optimizer"] != type(self).__name__:
            raise ValueError(f"state of a {state['optimizer']} optimiser cannot be loaded into "
                             f"{type(self).__name__}")
        for key in ("step", "names", "shapes", "buffers"):
            if key not in state:
                raise ValueError(f"optimizer state lacks {key!r}")
        step = state["step"]
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"optimizer state: step must be a non-negative integer, got {step!r}")
        self.reset()
        self.step_count = int(step)
        if state["names"] is None:
            if self.step_count:
                raise ValueError("optimizer state has steps but no buffers")
            return
        names = [str(n) for n in state["names"]]
        shapes = [tuple(int(d) for d in s) for s in state["shapes"]]
        host: dict[str, list[np.ndarray]] = {}
        for slot in self._slots:
            if slot not in state["buffers"]:
                raise ValueError(f"optimizer state lacks the buffer {slot!r}")
            b = state["buffers"][slot]
            if set(b) != set(names):
                raise ValueError(f"optimizer state: buffer {slot!r} holds {sorted(b)} but the "
                                 f"parameters are {names}")
            arrs = []
            for n, s in zip(names, shapes):
                a = np.array(b[n], copy=True)
                if tuple(a.shape) != s:
                    raise ValueError(f"optimizer state: buffer {slot!r}/{n!r} has shape "
                                     f"{tuple(a.shape)}, expected {s}")
                arrs.append(a)
            host[slot] = arrs
        self._names, self._shapes, self._host = names, shapes, host

    # -- stepping ------------------------------------------------------------------------------
    def _prepare(self, names, pleaves):
        """Create (first step) or check the buffers against the parameters."""
        shapes = [tuple(p.shape) for p in pleaves]
        if self._names is None:
            self._names, self._shapes = list(names), shapes
            self._buffers = {slot: [namespace(p).zeros_like(p) for p in pleaves]
                             for slot in self._slots}
            return
        if list(names) != self._names:
            raise ValueError(f"params are {list(names)} but the optimiser state holds "
                             f"{self._names}")
        for n, s, s0 in zip(names, shapes, self._shapes):
            if s != s0:
                raise ValueError(f"parameter {n!r} has shape {s} but the optimiser state holds "
                                 f"shape {s0}")
        if self._host is not None:
            self._buffers = {
                slot: [asarray(h, namespace(p), dtype=p.dtype, device=device_of(p))
                       for h, p in zip(self._host[slot], pleaves)]
                for slot in self._slots}
            self._host = None

    def step(self, params, grads):
        """One update; returns the new parameters in the structure of ``params`` (inputs are not
        modified). ``ValueError`` if ``grads`` do not match ``params`` or the optimiser state."""
        names, pleaves, gleaves, td = _match(params, grads)
        self._prepare(names, pleaves)
        lr = self.lr_at(self.step_count)
        t = self.step_count + 1
        new = [self._update(i, p, g, lr, t) for i, (p, g) in enumerate(zip(pleaves, gleaves))]
        self.step_count = t
        return unflatten(td, new)

    def _update(self, i, p, g, lr, t):
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay.

    ``SGD(lr, momentum=0.0, nesterov=False, weight_decay=0.0)``; update in the module docstring
    (PyTorch's convention: the first momentum buffer is the gradient itself, no dampening).
    State buffer: ``"momentum"`` (one array per parameter; unused and zero without momentum).
    """

    _slots = ("momentum",)

    def __init__(self, lr, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0):
        m = _check_nonneg(momentum, "momentum")
        if m >= 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if nesterov and m == 0.0:
            raise ValueError("nesterov=True needs momentum > 0")
        self.momentum = m
        self.nesterov = bool(nesterov)
        self.weight_decay = _check_nonneg(weight_decay, "weight_decay")
        super().__init__(lr)

    def hyperparameters(self) -> dict:
        return {"momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay}

    def _update(self, i, p, g, lr, t):
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.momentum:
            b = g if t == 1 else self.momentum * self._buffers["momentum"][i] + g
            self._buffers["momentum"][i] = b
            d = g + self.momentum * b if self.nesterov else b
        else:
            d = g
        return p - lr * d


class Adam(Optimizer):
    """Adam with bias correction, optional AMSGrad and weight decay (decoupled by default).

    ``Adam(lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
    decoupled_weight_decay=True)``; update in the module docstring. State buffers: ``"m"``,
    ``"v"`` and ``"vmax"`` (AMSGrad; zero otherwise), one array per parameter.
    """

    _slots = ("m", "v", "vmax")

    def __init__(self, lr, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 amsgrad: bool = False, decoupled_weight_decay: bool = True):
        try:
            b1, b2 = (float(b) for b in betas)
        except (TypeError, ValueError):
            raise ValueError(f"betas must be a pair of numbers, got {betas!r}") from None
        for name, b in (("betas[0]", b1), ("betas[1]", b2)):
            if not 0.0 <= b < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {b!r}")
        self.betas = (b1, b2)
        self.eps = _check_nonneg(eps, "eps")
        self.weight_decay = _check_nonneg(weight_decay, "weight_decay")
        self.amsgrad = bool(amsgrad)
        self.decoupled_weight_decay = bool(decoupled_weight_decay)
        super().__init__(lr)

    def hyperparameters(self) -> dict:
        return {"betas": list(self.betas), "eps": self.eps, "weight_decay": self.weight_decay,
                "amsgrad": self.amsgrad, "decoupled_weight_decay": self.decoupled_weight_decay}

    def _update(self, i, p, g, lr, t):
        xp = namespace(p)
        b1, b2 = self.betas
        if self.weight_decay and not self.decoupled_weight_decay:
            g = g + self.weight_decay * p
        m = b1 * self._buffers["m"][i] + (1.0 - b1) * g
        v = b2 * self._buffers["v"][i] + (1.0 - b2) * (g * g)
        self._buffers["m"][i] = m
        self._buffers["v"][i] = v
        if self.amsgrad:
            v = xp.maximum(self._buffers["vmax"][i], v)
            self._buffers["vmax"][i] = v
        m_hat = m / (1.0 - b1 ** t)
        v_hat = v / (1.0 - b2 ** t)
        new = p - lr * m_hat / (xp.sqrt(v_hat) + self.eps)
        if self.weight_decay and self.decoupled_weight_decay:
            new = new - (lr * self.weight_decay) * p
        return new
