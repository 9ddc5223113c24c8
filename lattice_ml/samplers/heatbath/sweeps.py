"""The sweep schedule: ``mu = 0 ... D-1``, even then odd sites, staples recomputed after each
half-sweep; the sites of one parity gathered into a compact list and put back with a gather and
``where``. :func:`heatbath_sweep`, :func:`overrelaxation_sweep`."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from ...backend import device_of, namespace
from ...gauge.action import GaugeAction
from ...groups import check_links
from ...lattice import Lattice
from . import DEFAULT_ROUNDS
from .links import _check_beta, _heatbath_flat, _overrelax_flat
from .streams import _check_rounds


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
