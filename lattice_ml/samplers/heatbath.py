"""Heatbath and over-relaxation for pure gauge theory with the Wilson action.

Links ``U[batch, D, *sites, N, N]`` (N = 1 for U(1)), time = direction 0. With the Wilson
action ``S = -(beta/N) sum_x sum_{mu<nu} Re Tr P_{mu nu}(x)`` a single link enters as
``-(beta/N) Re Tr[U_mu(x) V_mu(x)]`` with the staple sum ``V_mu(x)`` (no coefficient,
``GaugeAction(beta, N, "wilson").staple_sum``), so its conditional distribution is

    dP(U) ~ exp((beta/N) Re Tr[U V]) dU        (dU Haar measure).

Algorithms (all vectorised over the batch and over the sites of one direction and parity)
---------------------------------------------------------------------------------------------
* **U(1)**: with ``V = |V| e^{i phi}`` and ``U = e^{i theta'}``, ``theta = theta' + phi`` is von
  Mises distributed, density ``~ exp(kappa cos theta)`` with ``kappa = beta |V|``. Sampled
  exactly by Best & Fisher, Appl. Statist. 28 (1979) 152 (wrapped-Cauchy envelope, acceptance
  >= 0.656 for every kappa); then ``U = e^{i theta} V^* / |V|``.
* **SU(2)**: ``V`` is a real multiple of an SU(2) matrix, ``V = k W`` with ``k = sqrt(det V)``.
  ``X = U W`` has density ``~ exp(alpha x0)`` with ``x0 = Re Tr X / 2`` and ``alpha = beta k``:
  ``x0`` has density ``sqrt(1 - x0^2) exp(alpha x0)`` on [-1, 1] and the 3-vector part is
  isotropic. ``delta = 1 - x0`` is drawn by Kennedy & Pendleton, Phys. Lett. B156 (1985) 393
  (for ``alpha >= 1.6847``) or by Creutz, Phys. Rev. D21 (1980) 2308 (below: there KP's
  acceptance drops like ``alpha^{3/2}``); the crossing point is where both accept 71 %, the
  worst case. Then ``U = X W^dagger``.
* **SU(N), N >= 3**: Cabibbo & Marinari, Phys. Lett. B119 (1982) 387. For each of the
  ``N(N-1)/2`` subgroups ``(i, j)``, ``i < j``, the link is updated as ``U -> R U`` with ``R``
  equal to an SU(2) matrix ``r`` in rows/columns ``i, j`` and the identity elsewhere. The density
  of ``r`` is ``~ exp((beta/N) Re Tr[R U V])``; with ``w`` the ``(i, j)`` block of ``U V``,
  ``Re Tr[R U V] = Re Tr[r w] + const``. Writing ``w = b0 + i b.sigma + (rest)`` with
  ``b0 = Re(w00 + w11)/2``, ``b1 = Im(w01 + w10)/2``, ``b2 = Re(w01 - w10)/2``,
  ``b3 = Im(w00 - w11)/2``, the rest does not contribute to ``Re Tr[r w]`` for any SU(2)
  ``r``, so ``Re Tr[r w] = k Re Tr[r w_hat]`` with ``k = |b|`` and ``w_hat = b/k`` in SU(2):
  the subgroup element is an SU(2) heatbath with ``alpha = (2 beta / N) k``
  (``x = r w_hat``, ``r = x w_hat^dagger``). For N = 2 this is the SU(2) case.

Over-relaxation (Brown & Woch 1987, Creutz 1987) reflects the link through the maximum of
its conditional distribution, which keeps ``Re Tr[U V]`` and therefore the action exactly:

* U(1): ``theta -> -theta - 2 arg V``, i.e. ``U -> U^* (V^*/|V|)^2``;
* SU(2): ``U -> W^dagger U^dagger W^dagger``;
* SU(N): per subgroup ``r = (w_hat^dagger)^2``, i.e. ``r w_hat = w_hat^dagger``.

Each single-link reflection is an involution; a sweep is undone by the sweep in the reverse
order (``reverse=True``).

Update order and vectorisation
------------------------------
For the Wilson action two links of the same direction ``mu`` at sites of the same parity never
share a plaquette (even extents), so all of them are drawn at once from their conditional
distributions. A *sweep* visits ``mu = 0 ... D-1`` and, for each, the even then the odd sites;
the staples are recomputed after every such half-sweep. The sampling itself runs on the
compact list of the sites of one parity (gathered with ``xp.take``) and is put back with a
gather and ``xp.where`` on the parity mask, so no scatter is needed.

Rejection loops run a fixed number ``rounds`` of proposal rounds for every link; a link keeps
the first accepted proposal (masks and ``xp.where``). Every chain draws the random numbers of
all rounds whether or not they are needed, one block per call, so the streams stay aligned.
Links still unaccepted after the fixed rounds (probability ``<= 0.345^rounds`` per link) are
never left as they are: they go on in further rounds until every link has accepted, with
numbers from a *fallback stream of their own chain*, a ``RandomStreams`` seeded from a number
that each chain draws from its main stream in every call. So a chain's result depends only on
its own stream, whatever the batch size, and the main streams are consumed in a fixed
pattern. A non-finite coupling would never accept; it raises ``RuntimeError`` after
``MAX_FALLBACK_ROUNDS`` further rounds instead of looping for ever.

Round-off: the U(1) and SU(2) heatbath build a fresh group element each time; Cabibbo-Marinari
and over-relaxation multiply onto the old link, so :class:`Heatbath` reunitarises
(``groups.reunitarize``) once per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from ..backend import RandomStreams, backend_name, device_of, make_complex, namespace, real_dtype_of, to_numpy
from ..gauge.action import GaugeAction
from ..groups import check_links, reunitarize
from ..lattice import Lattice

__all__ = [
    "DEFAULT_ROUNDS",
    "KP_CROSSOVER",
    "MAX_FALLBACK_ROUNDS",
    "Heatbath",
    "HeatbathStep",
    "heatbath_links",
    "overrelax_links",
    "heatbath_sweep",
    "overrelaxation_sweep",
    "subgroups",
]

DEFAULT_ROUNDS = 8
"""Fixed number of rejection rounds drawn per link and call (``<= 2e-4`` of the links need more
rounds from the fallback stream)."""

KP_CROSSOVER = 1.6847376360042774
"""``alpha`` above which the SU(2) heatbath uses Kennedy-Pendleton, below it Creutz (equal
acceptance 0.7114 there)."""

MAX_FALLBACK_ROUNDS = 1000
"""Further rounds after which a link that never accepts raises (only for non-finite input)."""

_TINY_COUPLING = 1e-12  # couplings below this are treated as this (distribution unchanged to 1e-12)


# ------------------------------------------------------------------------------------------
# small helpers
# ------------------------------------------------------------------------------------------



def subgroups(N: int) -> list[tuple[int, int]]:
    """The SU(2) subgroups ``(i, j)``, ``i < j``, of SU(N) in the Cabibbo-Marinari order."""
    return [(i, j) for i in range(N) for j in range(i + 1, N)]


# quaternions q = q0 + i (q1 sigma_1 + q2 sigma_2 + q3 sigma_3), a tuple of 4 real arrays;
# matrix [[q0 + i q3, q2 + i q1], [-q2 + i q1, q0 - i q3]] (the convention of groups.py)
def _qmul(a, b):
    a0, a1, a2, a3 = a
    b0, b1, b2, b3 = b
    return (a0 * b0 - a1 * b1 - a2 * b2 - a3 * b3,
            a0 * b1 + b0 * a1 - (a2 * b3 - a3 * b2),
            a0 * b2 + b0 * a2 - (a3 * b1 - a1 * b3),
            a0 * b3 + b0 * a3 - (a1 * b2 - a2 * b1))


def _qconj(a):
    return (a[0], -a[1], -a[2], -a[3])


def _qentries(xp, q, cdtype):
    """The four complex entries (00, 01, 10, 11) of the SU(2) matrix of quaternion ``q``."""
    q0, q1, q2, q3 = q
    return (make_complex(xp, q0, q3, cdtype), make_complex(xp, q2, q1, cdtype),
            make_complex(xp, -q2, q1, cdtype), make_complex(xp, q0, -q3, cdtype))


def _qmatrix(xp, q, cdtype):
    e00, e01, e10, e11 = _qentries(xp, q, cdtype)
    row0 = xp.stack([e00, e01], axis=-1)
    row1 = xp.stack([e10, e11], axis=-1)
    return xp.stack([row0, row1], axis=-2)


def _qproject(xp, w00, w01, w10, w11):
    """Quaternion part ``(b0, b1, b2, b3)`` of the 2x2 block: ``Re Tr[r w] = Re Tr[r b]`` for
    every SU(2) ``r``."""
    return (0.5 * (xp.real(w00) + xp.real(w11)), 0.5 * (xp.imag(w01) + xp.imag(w10)),
            0.5 * (xp.real(w01) - xp.real(w10)), 0.5 * (xp.imag(w00) - xp.imag(w11)))


def _qnormalise(xp, b):
    """``(k, b_hat)``: the norm and the unit quaternion (identity where ``k = 0``)."""
    k = xp.sqrt(b[0] * b[0] + b[1] * b[1] + b[2] * b[2] + b[3] * b[3])
    pos = k > 0.0
    ks = xp.where(pos, k, xp.ones_like(k))
    one, zero = xp.ones_like(k), xp.zeros_like(k)
    hat = (xp.where(pos, b[0] / ks, one),) + tuple(xp.where(pos, c / ks, zero) for c in b[1:])
    return k, hat


# ------------------------------------------------------------------------------------------
# vectorised rejection sampling with per-chain fallback streams
# ------------------------------------------------------------------------------------------
def _draw_block(rng, rows: int, n: int, dtype):
    """One draw from the main streams: ``(seed_numbers [B], block [B, rows, n])``."""
    xp = rng.xp
    flat = rng.uniform((1 + rows * n,))
    seed_u = flat[:, 0]
    block = xp.reshape(flat[:, 1:], (flat.shape[0], rows, n))
    return seed_u, _below_one(xp, block, dtype)


def _below_one(xp, u, dtype):
    """``u`` as ``dtype``, kept below 1 (float64 draws rounded to float32 can reach 1.0)."""
    if u.dtype != dtype:
        u = xp.astype(u, dtype)
    return xp.clip(u, 0.0, 1.0 - xp.finfo(dtype).eps / 2)


class _Fallback:
    """Per-chain fallback streams of one call, created lazily (see module docstring)."""

    def __init__(self, rng, seed_u, dtype, device):
        self.rng, self.seed_u, self.dtype, self.device = rng, seed_u, dtype, device
        self._seeds = None
        self.streams: dict[int, RandomStreams] = {}
        self.rounds = 0  # chain-rounds drawn from fallback streams

    def draw(self, pending_chains: np.ndarray, shape: tuple[int, ...]):
        """``[B, *shape]`` uniforms: pending chains from their own stream, 0.5 elsewhere."""
        xp = self.rng.xp
        if self._seeds is None:
            self._seeds = to_numpy(self.seed_u)
        blocks = []
        for b, pending in enumerate(pending_chains):
            if pending:
                if b not in self.streams:
                    self.streams[b] = RandomStreams(
                        int(float(self._seeds[b]) * 2.0 ** 53), 1, xp, self.rng.dtype_name,
                        self.device, first_chain=self.rng.first_chain + b)
                blocks.append(self.streams[b].uniform(shape))
                self.rounds += 1
            else:
                blocks.append(xp.full((1,) + tuple(shape), 0.5, dtype=self.rng.dtype,
                                      device=self.device))
        return _below_one(xp, xp.concat(blocks, axis=0), self.dtype)


def _rejection(xp, propose, u, n_u: int, fallback: _Fallback):
    """Vectorised rejection sampling.

    ``u`` is ``[B, rounds * n_u, n]``; ``propose(ur)`` maps uniforms ``[B, R, n_u, n]`` to
    ``(value [B, R, n], accepted [B, R, n])`` (R proposal rounds at once). Every link keeps its
    first accepted proposal; links that accepted in none of the fixed rounds go on with
    fallback numbers, one round at a time, until all have. Returns ``(value, rounds_used)``
    (``rounds_used`` real, ``>= 1``).
    """
    B, rows, n = u.shape
    R = rows // n_u
    val, acc = propose(xp.reshape(u, (B, R, n_u, n)))
    # the first accepted round wins: select from the last round back to the first
    value, done = val[:, R - 1, :], acc[:, R - 1, :]
    used = xp.where(done, xp.full_like(value, float(R)), xp.zeros_like(value))
    for r in range(R - 2, -1, -1):
        a = acc[:, r, :]
        value = xp.where(a, val[:, r, :], value)
        used = xp.where(a, xp.full_like(value, float(r + 1)), used)
        done = xp.logical_or(done, a)
    r = R
    while True:
        pending = to_numpy(xp.any(xp.logical_not(done), axis=1))
        if not pending.any():
            break
        if r - R >= MAX_FALLBACK_ROUNDS:
            raise RuntimeError(
                f"heatbath: {int(pending.sum())} chain(s) accepted no proposal in {r} rounds; "
                "the links or the coupling are not finite")
        val, acc = propose(xp.reshape(fallback.draw(pending, (n_u, n)), (B, 1, n_u, n)))
        val, acc = val[:, 0, :], acc[:, 0, :]
        new = xp.logical_and(acc, xp.logical_not(done))
        value = xp.where(new, val, value)
        used = xp.where(new, xp.full_like(val, float(r + 1)), used)
        done = xp.logical_or(done, acc)
        r += 1
    return value, used


# ------------------------------------------------------------------------------------------
# the single-variable samplers
# ------------------------------------------------------------------------------------------
def _von_mises_proposer(xp, kappa):
    """Best-Fisher proposals for exp(kappa cos theta); value = cos theta (= f)."""
    kappa = xp.where(kappa > _TINY_COUPLING, kappa, xp.full_like(kappa, _TINY_COUPLING))
    s = xp.sqrt(1.0 + 4.0 * kappa * kappa)
    tau = 1.0 + s
    # tau - sqrt(2 tau) without cancellation at small kappa
    tau_m = tau * (4.0 * kappa * kappa / (s + 1.0)) / (tau + xp.sqrt(2.0 * tau))
    rho = tau_m / (2.0 * kappa)
    # parameters [B, 1, n] broadcast over the rounds axis of the proposals [B, R, n]
    r = xp.expand_dims((1.0 + rho * rho) / (2.0 * rho), axis=1)
    kappa = xp.expand_dims(kappa, axis=1)

    def propose(ur):
        z = xp.cos(math.pi * ur[..., 0, :])
        f = (1.0 + r * z) / (r + z)
        c = kappa * (r - f)
        u2 = 1.0 - ur[..., 1, :]  # in (0, 1]
        cpos = xp.where(c > 0.0, c, xp.full_like(c, 1e-300))
        acc = xp.logical_or(c * (2.0 - c) > u2, xp.log(cpos) - xp.log(u2) + 1.0 - c >= 0.0)
        return f, acc

    return propose


def _su2_proposer(xp, alpha):
    """Proposals for delta = 1 - x0 with x0 ~ sqrt(1 - x0^2) exp(alpha x0): Kennedy-Pendleton
    for alpha >= KP_CROSSOVER, Creutz below."""
    alpha = xp.where(alpha > _TINY_COUPLING, alpha, xp.full_like(alpha, _TINY_COUPLING))
    alpha = xp.expand_dims(alpha, axis=1)  # [B, 1, n]: broadcasts over rounds
    use_kp = alpha >= KP_CROSSOVER
    span = -xp.expm1(-2.0 * alpha)  # 1 - exp(-2 alpha)

    def propose(ur):
        u1, u2, u3, u4 = ur[..., 0, :], ur[..., 1, :], ur[..., 2, :], ur[..., 3, :]
        # Kennedy-Pendleton: delta ~ Gamma(3/2, alpha), accept with sqrt(1 - delta/2)
        c = xp.cos(2.0 * math.pi * u2)
        d_kp = -(xp.log1p(-u1) + c * c * xp.log1p(-u3)) / alpha
        acc_kp = u4 * u4 <= 1.0 - 0.5 * d_kp
        # Creutz: delta ~ exp(-alpha delta) on [0, 2), accept with sqrt(delta (2 - delta))
        d_cr = -xp.log1p(-u1 * span) / alpha
        acc_cr = u4 * u4 <= d_cr * (2.0 - d_cr)
        return xp.where(use_kp, d_kp, d_cr), xp.where(use_kp, acc_kp, acc_cr)

    return propose


def _sample_su2(xp, alpha, u, draw_rows: int, fallback):
    """x ~ exp(alpha Re Tr x / 2) dx on SU(2) as a quaternion; ``u`` ``[B, rows, n]`` holds
    ``rounds * 4`` rejection rows and then the 2 direction rows."""
    rej = u[:, :draw_rows - 2, :]
    delta, used = _rejection(xp, _su2_proposer(xp, alpha), rej, 4, fallback)
    a0 = 1.0 - delta
    norm = xp.sqrt(xp.clip(delta * (2.0 - delta), 0.0, None))
    cos_t = 1.0 - 2.0 * u[:, draw_rows - 2, :]
    sin_t = xp.sqrt(xp.clip(1.0 - cos_t * cos_t, 0.0, None))
    phi = (2.0 * math.pi) * u[:, draw_rows - 1, :]
    return (a0, norm * sin_t * xp.cos(phi), norm * sin_t * xp.sin(phi), norm * cos_t), used


# ------------------------------------------------------------------------------------------
# link updates with fixed staples
# ------------------------------------------------------------------------------------------
def _flat_links(U, what):
    if U.ndim < 3 or U.shape[-1] != U.shape[-2]:
        raise ValueError(f"{what} must be [batch, ..., N, N], got shape {tuple(U.shape)}")
    xp = namespace(U)
    B, N = U.shape[0], U.shape[-1]
    n = math.prod(U.shape[1:-2])
    return xp.reshape(U, (B, n, N, N))


def _check_beta(beta) -> float:
    try:
        b = float(beta)
    except (TypeError, ValueError):
        raise ValueError(f"beta must be a real number, not {beta!r}") from None
    if not (math.isfinite(b) and b >= 0.0):
        raise ValueError(f"heatbath needs a finite beta >= 0, got {beta!r}")
    return b


def _rows_per_link(N: int, rounds: int) -> int:
    if N == 1:
        return 2 * rounds + 1
    return (N * (N - 1) // 2) * (4 * rounds + 2)


def _heatbath_flat(U, V, beta: float, rng, rounds: int):
    """Heatbath of links ``U [B, n, N, N]`` in fixed staples ``V``; returns
    ``(U_new, rounds_sum [B], fallback_rounds)``."""
    xp = namespace(U, V)
    B, n, N = U.shape[0], U.shape[1], U.shape[-1]
    if rng.n_chains != B:
        raise ValueError(f"the random streams hold {rng.n_chains} chains, the links {B}")
    cd = U.dtype
    rd = real_dtype_of(xp, cd)
    dev = device_of(U)
    if backend_name(rng.xp) != backend_name(xp):
        raise ValueError(f"the random streams make {backend_name(rng.xp)} arrays, the links are "
                         f"{backend_name(xp)} arrays: create RandomStreams with the links' "
                         "namespace")
    seed_u, block = _draw_block(rng, _rows_per_link(N, rounds), n, rd)
    fallback = _Fallback(rng, seed_u, rd, dev)
    if N == 1:
        v = V[:, :, 0, 0]
        av = xp.abs(v)
        kappa = beta * av
        f, used = _rejection(xp, _von_mises_proposer(xp, kappa), block[:, :2 * rounds, :], 2,
                             fallback)
        f = xp.clip(f, -1.0, 1.0)
        sin_abs = xp.sqrt(xp.clip(1.0 - f * f, 0.0, None))
        sin = xp.where(block[:, 2 * rounds, :] < 0.5, -sin_abs, sin_abs)
        pos = av > 0.0
        avs = xp.where(pos, av, xp.ones_like(av))
        # e^{i theta} V^* / |V|
        ph_re = xp.where(pos, xp.real(v) / avs, xp.ones_like(av))
        ph_im = xp.where(pos, -xp.imag(v) / avs, xp.zeros_like(av))
        new = make_complex(xp, f * ph_re - sin * ph_im, f * ph_im + sin * ph_re, cd)
        return xp.reshape(new, (B, n, 1, 1)), xp.sum(used, axis=1), fallback.rounds
    rows = 4 * rounds + 2
    if N == 2:
        k, w = _qnormalise(xp, _qproject(xp, V[..., 0, 0], V[..., 0, 1], V[..., 1, 0],
                                         V[..., 1, 1]))
        x, used = _sample_su2(xp, beta * k, block, rows, fallback)
        return _qmatrix(xp, _qmul(x, _qconj(w)), cd), xp.sum(used, axis=1), fallback.rounds
    W = U @ V
    Urows = [U[..., a, :] for a in range(N)]
    Wrows = [W[..., a, :] for a in range(N)]
    total = None
    for s, (i, j) in enumerate(subgroups(N)):
        k, w = _qnormalise(xp, _qproject(xp, Wrows[i][..., i], Wrows[i][..., j],
                                         Wrows[j][..., i], Wrows[j][..., j]))
        x, used = _sample_su2(xp, (2.0 * beta / N) * k, block[:, s * rows:(s + 1) * rows, :],
                              rows, fallback)
        r00, r01, r10, r11 = (e[..., None] for e in _qentries(xp, _qmul(x, _qconj(w)), cd))
        Urows[i], Urows[j] = r00 * Urows[i] + r01 * Urows[j], r10 * Urows[i] + r11 * Urows[j]
        Wrows[i], Wrows[j] = r00 * Wrows[i] + r01 * Wrows[j], r10 * Wrows[i] + r11 * Wrows[j]
        total = used if total is None else total + used
    return xp.stack(Urows, axis=-2), xp.sum(total, axis=1) / len(subgroups(N)), fallback.rounds


def _overrelax_flat(U, V, reverse: bool = False):
    xp = namespace(U, V)
    N = U.shape[-1]
    cd = U.dtype
    if N == 1:
        v = V[..., 0, 0]
        av = xp.abs(v)
        pos = av > 0.0
        avs = xp.where(pos, av, xp.ones_like(av))
        # (V^*/|V|)^2 = e^{-2i arg V}
        c = xp.where(pos, xp.real(v) / avs, xp.ones_like(av))
        s = xp.where(pos, xp.imag(v) / avs, xp.zeros_like(av))
        ph = make_complex(xp, c * c - s * s, -2.0 * c * s, cd)
        return xp.conj(U) * ph[..., None, None]
    if N == 2:
        _, w = _qnormalise(xp, _qproject(xp, V[..., 0, 0], V[..., 0, 1], V[..., 1, 0],
                                         V[..., 1, 1]))
        u = _qproject(xp, U[..., 0, 0], U[..., 0, 1], U[..., 1, 0], U[..., 1, 1])
        wd = _qconj(w)
        return _qmatrix(xp, _qmul(_qmul(wd, _qconj(u)), wd), cd)
    W = U @ V
    Urows = [U[..., a, :] for a in range(N)]
    Wrows = [W[..., a, :] for a in range(N)]
    order = subgroups(N)
    for i, j in (reversed(order) if reverse else order):
        _, w = _qnormalise(xp, _qproject(xp, Wrows[i][..., i], Wrows[i][..., j],
                                         Wrows[j][..., i], Wrows[j][..., j]))
        wd = _qconj(w)
        r00, r01, r10, r11 = (e[..., None] for e in _qentries(xp, _qmul(wd, wd), cd))
        Urows[i], Urows[j] = r00 * Urows[i] + r01 * Urows[j], r10 * Urows[i] + r11 * Urows[j]
        Wrows[i], Wrows[j] = r00 * Wrows[i] + r01 * Wrows[j], r10 * Wrows[i] + r11 * Wrows[j]
    return xp.stack(Urows, axis=-2)


def _check_pair(U, V):
    if tuple(U.shape) != tuple(V.shape):
        raise ValueError(f"links {tuple(U.shape)} and staples {tuple(V.shape)} differ in shape")
    if U.ndim < 3 or U.shape[-1] != U.shape[-2]:
        raise ValueError(f"links must be [batch, ..., N, N], got shape {tuple(U.shape)}")


def heatbath_links(U, V, beta: float, rng, *, rounds: int = DEFAULT_ROUNDS):
    """Heatbath update of independent links in fixed staples.

    Parameters
    ----------
    U, V : arrays ``[batch, ..., N, N]`` (complex, same shape)
        Links (U(1): N = 1; SU(N)) and their staple sums. Every link is updated independently
        from ``dP(U) ~ exp((beta/N) Re Tr[U V]) dU`` (for U(1) and SU(2) the old link is not
        used: an exact independent draw; for N >= 3 one Cabibbo-Marinari pass over the
        ``N(N-1)/2`` subgroups, which leaves that distribution invariant).
    beta : float >= 0
    rng : RandomStreams with ``rng.n_chains == batch``
    rounds : int
        Fixed number of rejection rounds (see the module docstring).

    Returns the new links, shape of ``U``.
    """
    _check_pair(U, V)
    xp = namespace(U, V)
    if not bool(xp.all(xp.isfinite(V))):
        raise ValueError("staples contain non-finite (NaN or inf) entries")
    new, _, _ = _heatbath_flat(_flat_links(U, "links"), _flat_links(V, "staples"),
                               _check_beta(beta), rng, _check_rounds(rounds))
    return namespace(U).reshape(new, tuple(U.shape))


def overrelax_links(U, V, *, reverse: bool = False):
    """Over-relaxation of links ``U [batch, ..., N, N]`` in fixed staples ``V`` (same shape):
    the reflection that keeps ``Re Tr[U V]`` (module docstring). An involution for U(1) and
    SU(2); for N >= 3 the subgroup pass with ``reverse=True`` undoes the one without."""
    _check_pair(U, V)
    new = _overrelax_flat(_flat_links(U, "links"), _flat_links(V, "staples"), reverse)
    return namespace(U).reshape(new, tuple(U.shape))


def _check_rounds(rounds) -> int:
    if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) or rounds < 1:
        raise ValueError(f"rounds must be a positive integer, not {rounds!r}")
    return int(rounds)


# ------------------------------------------------------------------------------------------
# sweeps
# ------------------------------------------------------------------------------------------
@lru_cache(maxsize=64)
def _parity_tables(shape: tuple[int, ...]):
    """Host tables per parity p: flat indices of the sites of parity p, and for every site its
    rank among the sites of parity p (0 for sites of the other parity)."""
    parity = (np.indices(shape).sum(axis=0) % 2).reshape(-1)
    out = []
    for p in (0, 1):
        idx = np.flatnonzero(parity == p)
        rank = np.zeros(parity.size, dtype=np.int64)
        rank[idx] = np.arange(idx.size)
        out.append((idx.astype(np.int64), rank))
    return tuple(out)


@lru_cache(maxsize=None)
def _staple_action(N: int) -> GaugeAction:
    return GaugeAction(1.0, N, "wilson")  # c0 = 1: staple_sum is the bare staple sum


def _prepare(U, lattice, N=None):
    check_links(U, N)
    shape = tuple(U.shape[2:-2])
    if lattice is not None:
        if not isinstance(lattice, Lattice):
            raise ValueError(f"lattice must be a lattice_ml.lattice.Lattice, not {lattice!r}")
        if tuple(lattice.shape) != shape:
            raise ValueError(f"links of shape {tuple(U.shape)} do not live on {lattice!r}")
    if any(L % 2 for L in shape):
        raise ValueError(f"heatbath and over-relaxation update one parity at a time and need "
                         f"even extents, got lattice shape {shape}")
    return shape


def _sweep(U, shape, update, reverse: bool = False):
    """Apply ``update(U_c, V_c)`` to every (direction, parity) half-sweep in order."""
    xp = namespace(U)
    B, D, N = U.shape[0], U.shape[1], U.shape[-1]
    dev = device_of(U)
    vol = math.prod(shape)
    tables = _parity_tables(shape)
    lat = Lattice(shape)
    masks = [xp.reshape(m, (1,) + shape + (1, 1))
             for m in (lat.even_mask(xp, device=dev), lat.odd_mask(xp, device=dev))]
    idx = [(xp.asarray(i, device=dev), xp.asarray(r, device=dev)) for i, r in tables]
    action = _staple_action(N)
    order = [(mu, p) for mu in range(D) for p in (0, 1)]
    if reverse:
        order = order[::-1]
    for mu, p in order:
        V = action.staple_sum(U, mu)
        Umu = U[:, mu, ...]
        sel, rank = idx[p]
        Uc = xp.take(xp.reshape(Umu, (B, vol, N, N)), sel, axis=1)
        Vc = xp.take(xp.reshape(V, (B, vol, N, N)), sel, axis=1)
        new = xp.reshape(xp.take(update(Uc, Vc), rank, axis=1), (B,) + shape + (N, N))
        Umu = xp.where(masks[p], new, Umu)
        U = xp.stack([Umu if nu == mu else U[:, nu, ...] for nu in range(D)], axis=1)
    return U


def _heatbath_sweep(U, beta, rng, shape, rounds):
    stats = {"rounds": None, "fallback": 0, "updates": 0}

    def update(Uc, Vc):
        new, used, fb = _heatbath_flat(Uc, Vc, beta, rng, rounds)
        stats["rounds"] = used if stats["rounds"] is None else stats["rounds"] + used
        stats["fallback"] += fb
        stats["updates"] += Uc.shape[1]
        return new

    U = _sweep(U, shape, update)
    return U, stats["rounds"] / float(stats["updates"]), stats["fallback"]


def heatbath_sweep(U, beta: float, rng, lattice: Lattice | None = None, *,
                   rounds: int = DEFAULT_ROUNDS):
    """One heatbath sweep of every link (Wilson action); returns the new links.

    ``U`` ``[batch, D, *sites, N, N]`` (U(1): N = 1; SU(N), N >= 2; even extents), checked with
    :func:`lattice_ml.groups.check_links`. Order: ``mu = 0 ... D-1``, even then odd sites,
    staples recomputed after each half-sweep. U(1): Best-Fisher; SU(2): Kennedy-Pendleton /
    Creutz; N >= 3: Cabibbo-Marinari over all SU(2) subgroups. ``lattice`` (optional) is checked
    against the shape of ``U``. ``rng`` must hold ``batch`` chains.
    """
    shape = _prepare(U, lattice)
    U, _, _ = _heatbath_sweep(U, _check_beta(beta), rng, shape, _check_rounds(rounds))
    return U


def overrelaxation_sweep(U, beta: float | None = None, lattice: Lattice | None = None, *,
                         reverse: bool = False):
    """One over-relaxation sweep (microcanonical: the Wilson action is kept to round-off).

    Same order as :func:`heatbath_sweep`; ``reverse=True`` runs the half-sweeps and the SU(2)
    subgroups in the opposite order, which is the inverse map. ``beta`` is accepted for symmetry
    with :func:`heatbath_sweep` and checked, but the reflection does not depend on it.
    """
    if beta is not None:
        _check_beta(beta)
    shape = _prepare(U, lattice)
    return _sweep(U, shape, lambda Uc, Vc: _overrelax_flat(Uc, Vc, reverse), reverse=reverse)


# ------------------------------------------------------------------------------------------
# the sampler object
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HeatbathStep:
    """What one :meth:`Heatbath.step` did.

    ``mean_rounds``: ``[batch]``, the average number of rejection rounds until a link (for
    N >= 3: an SU(2) subgroup element) was accepted in the heatbath sweep (>= 1; the
    acceptance of heatbath and over-relaxation is 1 by construction). ``fallback_rounds``: the
    number of (chain, round) pairs drawn from the fallback streams. ``n_or``: over-relaxation
    sweeps done. There is deliberately no ``accepted``/``delta_h``: run loops treat such a
    sampler as always accepting.
    """

    mean_rounds: Any
    fallback_rounds: int
    n_or: int


class Heatbath:
    """Heatbath + over-relaxation updates of a gauge field with the Wilson action.

    One :meth:`step` is one heatbath sweep followed by ``n_or`` over-relaxation sweeps, then
    (``reunitarize=True``) one reunitarisation of every link. Used like ``HMC.step``:
    ``U, info = Heatbath(beta, N, n_or=4).step(U, rng)``.

    Parameters
    ----------
    beta : float >= 0
    N : int
        1 for U(1), N >= 2 for SU(N); checked against the links.
    n_or : int >= 0
        Over-relaxation sweeps per heatbath sweep.
    rounds : int
        Fixed rejection rounds per link and half-sweep (see module docstring).
    reunitarize : bool
        Reunitarise at the end of every step (recommended; costs well under a sweep).
    """

    def __init__(self, beta: float, N: int, n_or: int = 1, rounds: int = DEFAULT_ROUNDS,
                 reunitarize: bool = True):
        if isinstance(N, bool) or not isinstance(N, (int, np.integer)) or N < 1:
            raise ValueError(f"N must be a positive integer (1 for U(1)), not {N!r}")
        if isinstance(n_or, bool) or not isinstance(n_or, (int, np.integer)) or n_or < 0:
            raise ValueError(f"n_or must be a non-negative integer, not {n_or!r}")
        self.beta = _check_beta(beta)
        self.N = int(N)
        self.n_or = int(n_or)
        self.rounds = _check_rounds(rounds)
        self.reunitarize = bool(reunitarize)

    def __repr__(self) -> str:
        return (f"Heatbath(beta={self.beta}, N={self.N}, n_or={self.n_or}, rounds={self.rounds}, "
                f"reunitarize={self.reunitarize})")

    def step(self, U, rng):
        """One heatbath sweep and ``n_or`` over-relaxation sweeps; returns ``(U, HeatbathStep)``."""
        shape = _prepare(U, None, self.N)
        U, mean_rounds, fb = _heatbath_sweep(U, self.beta, rng, shape, self.rounds)
        for _ in range(self.n_or):
            U = _sweep(U, shape, lambda Uc, Vc: _overrelax_flat(Uc, Vc))
        if self.reunitarize:
            U = reunitarize(U)
        return U, HeatbathStep(mean_rounds, fb, self.n_or)
