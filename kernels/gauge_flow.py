"""Numba CPU kernels for the vector field of the gauge-field gradient flows: the generator of a
stout step for any loop set and its vector-Jacobian product, U(1) and SU(N) links in any D.

Registered with :mod:`lattice_ml.dispatch` for the ops of :mod:`lattice_ml.smearing.stout`:

* ``"stout_generator"``: :func:`lattice_ml.smearing.stout.stout_generator` (``Q = -TA(U W)`` and
  the staple sums per loop type, all loop types of a direction in one pass over the links);
* ``"stout_generator_pullback"``: :func:`lattice_ml.smearing.stout.stout_generator_pullback`
  (the loop-by-loop pull-back gathered per batch entry; see :mod:`._gauge_flow_sites`).

:class:`lattice_ml.flows.GradientFlow` and Lüscher's map reach them through these two functions.
Accepted: NumPy links ``[batch, D, *sites, N, N]`` complex128 (any N >= 1, any D), weights that
are one number per loop type or one per direction (``[D]``) — the gradient flows' case;
per-site or per-configuration weights, other dtypes, array-api-strict and CuPy arrays take the
reference. The staples come back as the reference's ``staples[mu][k]`` (views of one packed
array, which the pull-back then reads without a copy).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..dispatch import register
from ..smearing.stout import _prepare

from . import _gauge_flow_sites as _sites

__all__ = ["stout_generator_cpu", "stout_generator_pullback_cpu", "PackedStaples"]


class PackedStaples(list):
    """``staples[mu][k]`` as the reference returns it (``None`` where type k has no loops
    through direction mu), each entry a view of ``packed`` ``[n_types, batch, D, V, N, N]``."""

    def __init__(self, packed, has, sites):
        B, D, N = packed.shape[1], packed.shape[2], packed.shape[-1]
        super().__init__(
            [[np.reshape(packed[k, :, mu], (B, *sites, N, N)) if has[k][mu] else None
              for k in range(packed.shape[0])] for mu in range(D)])
        self.packed = packed


def _loop_class(path, sites):
    """``(key, extent_ok)``: the loop's links as a set of edges of Z^D translated to its
    smallest one (the same for the path begun at any of its links), and whether the loop fits
    in the lattice (extent < L in every direction: its translates are distinct loops)."""
    D = len(sites)
    pos = [0] * D
    verts, edges = [tuple(pos)], []
    for nu, s in path:
        if s < 0:
            pos[nu] -= 1
        edges.append((tuple(pos), nu))
        if s > 0:
            pos[nu] += 1
        verts.append(tuple(pos))
    lo = min(edges)[0]
    key = frozenset((tuple(v - o for v, o in zip(e, lo)), nu) for e, nu in edges)
    ok = (len(set(edges)) == len(edges) and pos == [0] * D
          and all(max(v[d] for v in verts) - min(v[d] for v in verts) < sites[d]
                  for d in range(D)))
    return key, ok


def _loop_table(by_mu, sites):
    """The loops of one type, each once (a representative path per class), or None when the
    type has loops the loop-by-loop kernels do not handle (winding, or larger than the
    lattice)."""
    reps, count = {}, {}
    for mu, paths in enumerate(by_mu):
        for p in paths:
            key, ok = _loop_class(p, sites)
            if not ok:
                return None
            reps.setdefault(key, p)
            count[key] = count.get(key, 0) + 1
    if any(count[k] != len(reps[k]) for k in reps):
        return None
    return list(reps.values())


@lru_cache(maxsize=64)
def _tables(loopsets: tuple, sites: tuple, by_loop: bool):
    """Path table (types run link by link), loop table (types run loop by loop; only with
    ``by_loop``) and neighbour tables of a loop set on a lattice (module docstring of
    :mod:`._gauge_flow_sites`)."""
    D = len(sites)
    loops = [_loop_table(by_mu, sites) if by_loop else None for by_mu in loopsets]
    p_type, p_start, p_len, st_dir, st_sign, mu_first = [], [], [], [], [], [0]
    has = [[bool(by_mu[mu]) for mu in range(D)] for by_mu in loopsets]
    for mu in range(D):
        for k, by_mu in enumerate(loopsets):
            if loops[k] is not None:
                continue
            for path in by_mu[mu]:
                p_type.append(k)
                p_start.append(len(st_dir))
                p_len.append(len(path) - 1)
                for nu, s in path[1:]:
                    st_dir.append(nu)
                    st_sign.append(s)
        mu_first.append(len(p_type))
    l_type, l_start, l_len, l_dir, l_sign = [], [], [], [], []
    for k, reps in enumerate(loops):
        for path in reps or ():
            l_type.append(k)
            l_start.append(len(l_dir))
            l_len.append(len(path))
            for nu, s in path:
                l_dir.append(nu)
                l_sign.append(s)
    idx = np.arange(int(np.prod(sites))).reshape(sites)
    fwd = np.stack([np.roll(idx, -1, axis=nu).ravel() for nu in range(D)], axis=1)
    bwd = np.stack([np.roll(idx, 1, axis=nu).ravel() for nu in range(D)], axis=1)
    i64 = np.int64
    paths = (np.asarray(p_type, i64), np.asarray(p_start, i64), np.asarray(p_len, i64),
             np.asarray(st_dir, i64), np.asarray(st_sign, i64), np.asarray(mu_first, i64),
             np.ascontiguousarray(fwd, i64), np.ascontiguousarray(bwd, i64),
             max(p_len, default=0), has)
    ltab = (np.asarray(l_type, i64), np.asarray(l_start, i64), np.asarray(l_len, i64),
            np.asarray(l_dir, i64), np.asarray(l_sign, i64), paths[6], paths[7],
            max(l_len, default=1))
    return paths, ltab


def _weights(R, D):
    """``rho[k, mu]`` from the canonical weights, or None if one varies over sites or batch."""
    out = np.empty((len(R), D))
    for k, r in enumerate(R):
        a = np.asarray(r)
        if any(s != 1 for i, s in enumerate(a.shape) if i != 1):
            return None
        out[k] = np.broadcast_to(a.reshape(-1), (D,)) if a.shape[1] in (1, D) else np.nan
    return out


def _setup(U, rho, loops):
    """``(loopsets, R, canon, single, rho[k, mu])`` or None when the kernel does not apply."""
    if not (isinstance(U, np.ndarray) and U.dtype == np.complex128 and U.ndim >= 5
            and U.shape[1] == U.ndim - 4 and U.shape[-1] == U.shape[-2]):
        return None
    for r in (rho if isinstance(rho, (list, tuple)) else [rho]):
        if not (isinstance(r, (int, float, np.floating, np.integer))
                or (isinstance(r, np.ndarray) and r.dtype.kind == "f")):
            return None
    try:
        _, loopsets, R, canon, single = _prepare(U, rho, loops)
    except (ValueError, TypeError):
        return None             # the reference raises the error
    w = _weights(R, U.shape[1])
    if w is None:
        return None
    return loopsets, R, canon, single, w


def _accepts_generator(U, rho, loops="plaquette", staples=None):
    return _setup(U, rho, loops) is not None


def _accepts_pullback(U, rho, cotangent, loops="plaquette", staples=None):
    return (isinstance(cotangent, np.ndarray) and cotangent.dtype == np.complex128
            and tuple(cotangent.shape) == tuple(U.shape) and _setup(U, rho, loops) is not None)


def _packed(staples, U, K):
    """The staple sums as one ``[K, B, D, V, N, N]`` array (no copy when packed by the kernel)."""
    B, D, N = U.shape[0], U.shape[1], U.shape[-1]
    V = int(np.prod(U.shape[2:2 + D]))
    if isinstance(staples, PackedStaples) and staples.packed.shape == (K, B, D, V, N, N):
        return staples.packed
    S = np.zeros((K, B, D, V, N, N), dtype=np.complex128)
    for mu in range(D):
        for k in range(K):
            if staples[mu][k] is not None:
                S[k, :, mu] = np.reshape(staples[mu][k], (B, V, N, N))
    return S


def _flat9(a):
    """A C-contiguous ``[..., 3, 3]`` array as the ``[..., 9]`` view of the SU(3) kernels."""
    return np.reshape(a, a.shape[:-2] + (9,))


@register("stout_generator", "cpu", accepts=_accepts_generator, name="cpu:stout_generator_loops")
def stout_generator_cpu(U, rho, loops="plaquette", staples=None):
    """``stout_generator`` on NumPy links (``njit``, parallel over the batch)."""
    loopsets, _, _, _, w = _setup(U, rho, loops)
    B, D, N = U.shape[0], U.shape[1], U.shape[-1]
    sites = tuple(U.shape[2:2 + D])
    tabs, ltab = _tables(tuple(loopsets), sites, N == 3)
    Uf = np.reshape(np.ascontiguousarray(U), (B, D, -1, N, N))
    K = len(loopsets)
    if staples is None:
        S, have = np.zeros((K,) + Uf.shape, dtype=np.complex128), False
    else:
        S, have = _packed(staples, U, K), True
    Q = np.empty_like(Uf)
    if N == 3:
        if not have and len(ltab[0]):
            _sites.loop_staples3(_flat9(Uf), *ltab, _flat9(S))
        _sites.generator_batches3(_flat9(Uf), w, *tabs[:8], _flat9(S), have, _flat9(Q))
    else:
        _sites.generator_batches(Uf, w, *tabs[:8], S, have, Q)
    return np.reshape(Q, U.shape), PackedStaples(S, tabs[9], sites)


@register("stout_generator_pullback", "cpu", accepts=_accepts_pullback,
          name="cpu:stout_generator_pullback_loops")
def stout_generator_pullback_cpu(U, rho, cotangent, loops="plaquette", staples=None):
    """``stout_generator_pullback`` on NumPy links (``njit``, parallel over the batch)."""
    loopsets, R, canon, single, w = _setup(U, rho, loops)
    B, D, N = U.shape[0], U.shape[1], U.shape[-1]
    sites = tuple(U.shape[2:2 + D])
    tabs, ltab = _tables(tuple(loopsets), sites, N == 3)
    K = len(loopsets)
    if staples is None:
        _, staples = stout_generator_cpu(U, rho, loops)
    S = _packed(staples, U, K)
    Uf = np.reshape(np.ascontiguousarray(U), (B, D, -1, N, N))
    Kf = np.reshape(np.ascontiguousarray(cotangent), Uf.shape)
    Y = np.zeros_like(Uf)
    G = np.empty_like(Uf)
    g = np.zeros((B, K, D))
    if N == 3:
        LU = np.empty_like(Uf)
        _sites.pullback_batches3(_flat9(Uf), w, _flat9(Kf), _flat9(S), *tabs[:8], tabs[8],
                                 _flat9(Y), _flat9(LU), g)
        if len(ltab[0]):
            _sites.loop_pullback3(_flat9(Uf), w, _flat9(LU), *ltab, _flat9(Y))
        _sites.finish3(_flat9(Uf), _flat9(Y), _flat9(G))
    else:
        _sites.pullback_batches(Uf, w, Kf, S, *tabs[:8], tabs[8], Y, G, g)
    grads = []
    for k in range(K):
        gk = g[:, k, :].sum(axis=0)                         # [D]
        if R[k].shape[1] == 1:
            gk = gk.sum(keepdims=True)
        grads.append(np.reshape(gk, canon[k][1]))
    return np.reshape(G, U.shape), (grads[0] if single else grads)
