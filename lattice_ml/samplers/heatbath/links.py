"""Per-link samplers in fixed staples: Best-Fisher von Mises (U(1)), Kennedy-Pendleton /
Creutz (SU(2)), Cabibbo-Marinari over the SU(2) subgroups (SU(N)), and the over-relaxation
reflections; :func:`heatbath_links`, :func:`overrelax_links`."""

from __future__ import annotations

import math

from ...backend import backend_name, device_of, make_complex, namespace, real_dtype_of
from ...groups import qconj, qentries, qmatrix, qmul, qnormalise, qproject
from . import DEFAULT_ROUNDS, KP_CROSSOVER
from .streams import _check_rounds, _draw_block, _Fallback, _rejection

_TINY_COUPLING = 1e-12  # couplings below this are treated as this (distribution unchanged to 1e-12)


def subgroups(N: int) -> list[tuple[int, int]]:
    """The SU(2) subgroups ``(i, j)``, ``i < j``, of SU(N) in the Cabibbo-Marinari order."""
    return [(i, j) for i in range(N) for j in range(i + 1, N)]


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
        k, w = qnormalise(xp, qproject(xp, V[..., 0, 0], V[..., 0, 1], V[..., 1, 0],
                                         V[..., 1, 1]))
        x, used = _sample_su2(xp, beta * k, block, rows, fallback)
        return qmatrix(xp, qmul(x, qconj(w)), cd), xp.sum(used, axis=1), fallback.rounds
    W = U @ V
    Urows = [U[..., a, :] for a in range(N)]
    Wrows = [W[..., a, :] for a in range(N)]
    total = None
    for s, (i, j) in enumerate(subgroups(N)):
        k, w = qnormalise(xp, qproject(xp, Wrows[i][..., i], Wrows[i][..., j],
                                         Wrows[j][..., i], Wrows[j][..., j]))
        x, used = _sample_su2(xp, (2.0 * beta / N) * k, block[:, s * rows:(s + 1) * rows, :],
                              rows, fallback)
        r00, r01, r10, r11 = (e[..., None] for e in qentries(xp, qmul(x, qconj(w)), cd))
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
        _, w = qnormalise(xp, qproject(xp, V[..., 0, 0], V[..., 0, 1], V[..., 1, 0],
                                         V[..., 1, 1]))
        u = qproject(xp, U[..., 0, 0], U[..., 0, 1], U[..., 1, 0], U[..., 1, 1])
        wd = qconj(w)
        return qmatrix(xp, qmul(qmul(wd, qconj(u)), wd), cd)
    W = U @ V
    Urows = [U[..., a, :] for a in range(N)]
    Wrows = [W[..., a, :] for a in range(N)]
    order = subgroups(N)
    for i, j in (reversed(order) if reverse else order):
        _, w = qnormalise(xp, qproject(xp, Wrows[i][..., i], Wrows[i][..., j],
                                         Wrows[j][..., i], Wrows[j][..., j]))
        wd = qconj(w)
        r00, r01, r10, r11 = (e[..., None] for e in qentries(xp, qmul(wd, wd), cd))
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


