"""Training a flow: reverse KL (self-training from the prior), forward KL (from samples) and the
path-gradient estimator of the reverse KL.

Losses, per batch of ``B`` configurations (batch axis first), with the target ``p(x) = exp(-S(x))
/ Z`` and the flow density ``q`` (:mod:`lattice_ml.flows.flow`; gauge fields:
:mod:`lattice_ml.flows.gradient_flow`):

* reverse KL (``mode="reverse_kl"``), ``z_b ~ r``, ``x_b = f(z_b)``::

      L = (1/B) sum_b [log q(x_b) + S(x_b)] = KL(q || p) - log Z   (estimate)
      dL/dtheta = vjp of (gx = dS/dx / B = -F(x) / B,  glogJ = -1 / B)

  (``log r(z_b)`` does not depend on the parameters);
* forward KL (``mode="forward_kl"``), ``x_b`` drawn uniformly (with replacement) from given
  samples of ``p`` (e.g. HMC or heatbath configurations), ``z_b = f^{-1}(x_b)``::

      L = -(1/B) sum_b log q(x_b) = KL(p || q) + const
      dL/dtheta = inverse vjp of (gz = -grad log r(z) / B,  glogdet = -1 / B);

* path gradient (``mode="path_gradient"``; Vaitl, Nicoli, Nakajima & Kessel, "Gradients should
  stay on path", arXiv:2207.09213; for continuous flows Vaitl et al., arXiv:2206.09016): the
  same loss value as reverse KL, with the gradient

      g = (1/B) sum_b (dx_b/dtheta)^T grad_x [S(x) + log q(x)] |_{x = x_b, theta fixed}
        = vjp of (gx = (grad_x log q - F(x)) / B,  glogJ = 0),
      grad_x log q(x) = inverse vjp of (gz = grad log r(z),  glogdet = 1)   (no parameter part).

  Its expectation is the reverse-KL gradient (the dropped term ``E_q[d log q_theta(x)/dtheta]``
  at fixed ``x`` is ``d/dtheta int q = 0``), and it vanishes sample by sample where ``q ∝
  exp(-S)``, so its variance falls to zero as the flow becomes exact. It needs the flow's
  ``inverse_cache`` / ``inverse_vjp``; a gradient flow's inverse cache is taken from its forward
  cache (:func:`lattice_ml.flows.gradient_flow_inverse.cache_from_forward`: the same trajectory,
  no inversion), and its solve costs 10-40 backward passes per step (docs/training.md has the
  measured cost and ESS).

``grad log r`` is ``-z`` for the Gaussian prior of :class:`~lattice_ml.flows.flow.Flow` and zero
for flows on links (Haar prior, density 1); a flow may define ``prior_score(z)`` instead.

The effective sample size per configuration, ``ESS = (sum w)^2 / (B sum w^2)`` with ``log w =
-S(x) - log q(x)`` for a batch drawn from the flow (:func:`lattice_ml.stats.effective_sample_size`;
NaN when a log-weight is not finite),
is recorded with the loss, the gradient norm and the learning rate in ``trainer.history``
(reverse KL and path gradient: the training batch itself; forward KL: an extra flow batch every
``ess_every`` steps, NaN otherwise).

Optimisation uses :mod:`lattice_ml.optim` (Adam, schedules, :func:`clip_by_global_norm`); a step
whose gradient norm is not finite is skipped and counted. :meth:`FlowTrainer.state_dict` holds the
parameters, the optimiser state, the random streams and the history, so that a trainer rebuilt
with the same arguments and loaded with it continues bit-identically. A ``callback(trainer,
record)`` is called after every step (checkpoints, progress; :class:`ProgressPrinter`).
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np

from ..backend import RandomStreams, namespace, to_numpy
from ..optim import clip_by_global_norm, global_norm
from .flow import Flow, effective_sample_size
from .gradient_flow import GradientFlow

__all__ = ["FlowTrainer", "ProgressPrinter", "reverse_kl_grads", "forward_kl_grads",
           "path_gradient_grads", "prior_score", "MODES"]

MODES = ("reverse_kl", "forward_kl", "path_gradient")
"""The training modes of :class:`FlowTrainer` (module docstring)."""
_HISTORY_KEYS = ("loss", "ess", "grad_norm", "lr", "time")


def _flow_batch(flow, action, z):
    """``(x, logJ, caches, S, log q, loss)`` of a batch drawn from the flow: the forward pass
    and the reverse-KL loss ``mean(log q + S)`` that both reverse-KL estimators report."""
    x, logJ, caches = flow.forward_cache(z)
    S = action.action(x)
    logq = flow.prior_log_prob(z) - logJ
    return x, logJ, caches, S, logq, float(namespace(z).mean(logq + S))


def reverse_kl_grads(flow: Flow, action, z):
    """``(loss, grads, log_w)`` of the reverse-KL loss for latent fields ``z[batch, *sites]``;
    ``log_w = -S(x) - log q(x)`` ``[batch]`` (host NumPy)."""
    xp = namespace(z)
    B = z.shape[0]
    x, logJ, caches, S, logq, loss = _flow_batch(flow, action, z)
    gx = action.force(x) * (-1.0 / B)
    glogJ = xp.full((B,), -1.0 / B, dtype=logJ.dtype)
    _, grads = flow.vjp(caches, gx, glogJ)
    return loss, grads, _host(-(S + logq))


def forward_kl_grads(flow: Flow, x):
    """``(loss, grads)`` of the forward-KL loss ``-mean log q(x)`` for samples ``x``."""
    xp = namespace(x)
    B = x.shape[0]
    z, ld, caches = flow.inverse_cache(x)
    logq = flow.prior_log_prob(z) + ld
    loss = -float(xp.mean(logq))
    _, grads = flow.inverse_vjp(caches, prior_score(flow, z) * (-1.0 / B),
                                xp.full((B,), -1.0 / B, dtype=ld.dtype))
    return loss, grads


def path_gradient_grads(flow: Flow, action, z):
    """``(loss, grads, log_w)`` of the path-gradient estimator (module docstring) for latent
    fields ``z``: the loss and ``log_w`` of :func:`reverse_kl_grads`, the gradient through
    ``grad_x [S + log q]`` at fixed parameters."""
    xp = namespace(z)
    B = z.shape[0]
    x, logJ, caches, S, logq, loss = _flow_batch(flow, action, z)
    if isinstance(flow, GradientFlow):
        from .gradient_flow_inverse import cache_from_forward
        inv = cache_from_forward(flow, z, caches)
    else:
        inv = flow.inverse_cache(x)[2]
    ones = xp.ones((B,), dtype=logJ.dtype)
    gq, _ = flow.inverse_vjp(inv, prior_score(flow, z), ones)
    gx = (gq - action.force(x)) * (1.0 / B)
    _, grads = flow.vjp(caches, gx, xp.zeros((B,), dtype=logJ.dtype))
    return loss, grads, _host(-(S + logq))


def prior_score(flow, z):
    """``grad_z log r(z)`` of the flow's prior: ``flow.prior_score(z)`` where the flow defines
    it, ``-z`` for the Gaussian prior of :class:`~lattice_ml.flows.flow.Flow`, zero for flows on
    links (complex ``z``: the Haar prior, density 1)."""
    if hasattr(flow, "prior_score"):
        return flow.prior_score(z)
    xp = namespace(z)
    if xp.isdtype(z.dtype, "complex floating"):
        return xp.zeros_like(z)
    if isinstance(flow, Flow):
        return -z
    raise TypeError(f"{type(flow).__name__} has a real latent space but no prior_score(z)")


def _host(a):
    return np.asarray(to_numpy(a), dtype=np.float64)


class FlowTrainer:
    """Stochastic-gradient training of a :class:`~lattice_ml.flows.flow.Flow`.

    Parameters
    ----------
    flow : Flow
        Trained in place (``flow.params`` is replaced after every step).
    action : object with ``action(x)`` and ``force(x)`` (e.g. :class:`~lattice_ml.scalar.Phi4Action`)
    optimizer : :class:`lattice_ml.optim.Adam` or ``SGD``
    batch_size : int
    seed : int
        Seed of the trainer's :class:`~lattice_ml.backend.RandomStreams` (one stream per batch
        entry: latent draws, sample indices).
    mode : {"reverse_kl", "forward_kl", "path_gradient"}
        Forward KL and path gradient need the flow's ``inverse_cache`` / ``inverse_vjp``.
    samples : array ``[N, *sites]`` (links: ``[N, D, *sites, N_c, N_c]``), forward KL only
    max_grad_norm : float, optional
        Clip the gradient to this global norm (:func:`lattice_ml.optim.clip_by_global_norm`).
    ess_every : int
        Forward KL only: evaluate the ESS on a flow batch every ``ess_every`` steps (0: never).
    xp, dtype : namespace and ``"float64"``/``"float32"`` of the random draws.
    """

    def __init__(self, flow: Flow, action, optimizer, *, batch_size: int, seed: int = 0,
                 mode: str = "reverse_kl", samples=None, max_grad_norm: float | None = None,
                 ess_every: int = 10, xp=None, dtype: str = "float64", device=None):
        if mode not in MODES:
            raise ValueError(f"training mode must be one of {MODES}, not {mode!r}")
        if mode != "reverse_kl" and not (hasattr(flow, "inverse_cache") and
                                         hasattr(flow, "inverse_vjp")):
            raise ValueError(f"{mode} training needs the flow's inverse_cache and inverse_vjp; "
                             f"{type(flow).__name__} has no such methods (use reverse_kl)")
        if not isinstance(batch_size, int) or batch_size < 2:
            raise ValueError(f"batch_size must be an integer >= 2, got {batch_size!r}")
        if mode == "forward_kl":
            if samples is None:
                raise ValueError("forward_kl training needs samples [N, *sites] of the target")
            flow._check(samples, "samples")     # [N, *sites] or links [N, D, *sites, n, n]
        elif samples is not None:
            raise ValueError("samples are only used by forward_kl training")
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0, got {max_grad_norm!r}")
        if xp is None:
            leaf = flow.params
            while isinstance(leaf, dict):
                leaf = next(iter(leaf.values()))
            xp = namespace(leaf)
        self.flow, self.action, self.optimizer = flow, action, optimizer
        self.batch_size, self.mode, self.samples = batch_size, mode, samples
        self.max_grad_norm = max_grad_norm
        self.ess_every = int(ess_every)
        self.seed = seed
        self.rng = RandomStreams(seed, batch_size, xp, dtype=dtype, device=device)
        self.step_count = 0
        self.skipped = 0
        self.history: dict[str, list[float]] = {k: [] for k in _HISTORY_KEYS}

    def flow_ess(self, rng=None) -> float:
        """ESS per configuration of one flow batch drawn from ``rng`` (default: the trainer's)."""
        x, logq = self.flow.sample(rng or self.rng)
        lw = _host(-self.action.action(x) - logq)
        return float(effective_sample_size(lw)) if np.all(np.isfinite(lw)) else math.nan

    def step(self) -> dict:
        """One optimisation step; returns its record (also appended to ``history``)."""
        t0 = time.perf_counter()
        ess = math.nan
        if self.mode != "forward_kl":
            z = self.flow.draw_latent(self.rng)
            grads_of = reverse_kl_grads if self.mode == "reverse_kl" else path_gradient_grads
            loss, grads, log_w = grads_of(self.flow, self.action, z)
            ess = float(effective_sample_size(log_w)) if np.all(np.isfinite(log_w)) else math.nan
        else:
            xp = namespace(self.samples)
            idx = self.rng.integers(self.samples.shape[0], ())
            loss, grads = forward_kl_grads(self.flow, xp.take(self.samples, idx, axis=0))
            if self.ess_every and self.step_count % self.ess_every == 0:
                ess = self.flow_ess()
        if self.max_grad_norm is not None:
            grads, norm = clip_by_global_norm(grads, self.max_grad_norm)
        else:
            norm = global_norm(grads)
        lr = self.optimizer.lr_at(self.optimizer.step_count)
        if math.isfinite(norm) and math.isfinite(loss):
            self.flow.params = self.optimizer.step(self.flow.params, grads)
        else:
            self.skipped += 1
        self.step_count += 1
        rec = {"step": self.step_count, "loss": loss, "ess": ess, "grad_norm": norm, "lr": lr,
               "time": time.perf_counter() - t0}
        for k in _HISTORY_KEYS:
            self.history[k].append(float(rec[k]))
        return rec

    def train(self, n_steps: int, callback=None) -> dict:
        """``n_steps`` steps; ``callback(trainer, record)`` after each. Returns the history."""
        if not isinstance(n_steps, int) or n_steps < 0:
            raise ValueError(f"n_steps must be a non-negative integer, got {n_steps!r}")
        for _ in range(n_steps):
            rec = self.step()
            if callback is not None:
                callback(self, rec)
        return self.history

    # -- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Plain data (numbers, lists, host NumPy arrays): parameters, optimiser, random streams,
        step counters and history."""
        return {"step": self.step_count, "skipped": self.skipped, "mode": self.mode,
                "batch_size": self.batch_size, "params": self.flow.params_to_host(),
                "optimizer": self.optimizer.state_dict(), "rng": self.rng.state(),
                "history": {k: list(v) for k, v in self.history.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` into a trainer built with the same arguments."""
        for key in ("step", "params", "optimizer", "rng", "history"):
            if key not in state:
                raise ValueError(f"trainer state lacks {key!r}")
        if state.get("mode", self.mode) != self.mode:
            raise ValueError(f"trainer state is for {state['mode']!r} training, this trainer does "
                             f"{self.mode!r}")
        if state.get("batch_size", self.batch_size) != self.batch_size:
            raise ValueError(f"trainer state has batch size {state['batch_size']}, this trainer "
                             f"{self.batch_size}")
        self.flow.load_params(state["params"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.rng.set_state(state["rng"])
        self.step_count = int(state["step"])
        self.skipped = int(state.get("skipped", 0))
        self.history = {k: [float(v) for v in state["history"].get(k, [])] for k in _HISTORY_KEYS}


class ProgressPrinter:
    """Callback printing ``step, loss, ESS (mean of the last `every` steps), lr`` every ``every``
    steps to ``stream``."""

    def __init__(self, every: int = 100, stream=None):
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive integer, got {every!r}")
        self.every = every
        self.stream = stream or sys.stdout
        self._t0 = time.perf_counter()

    def __call__(self, trainer: FlowTrainer, rec: dict) -> None:
        if rec["step"] % self.every:
            return
        h = trainer.history
        ess = [e for e in h["ess"][-self.every:] if math.isfinite(e)]
        ess_txt = f"{np.mean(ess):.3f}" if ess else "n/a"
        loss = np.mean(h["loss"][-self.every:])
        print(f"step {rec['step']:6d}  loss {loss:10.4f}  ess {ess_txt}  lr {rec['lr']:.2e}  "
              f"{time.perf_counter() - self._t0:7.1f} s", file=self.stream, flush=True)
