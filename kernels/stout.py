"""Numba kernels for one stout-smearing layer of 4D SU(3) links with the plaquette loop set, forward
and backward (link force and weight gradient), one weight per link.

Registered with :mod:`lattice_ml.dispatch` for the ops of :mod:`lattice_ml.smearing.stout`:

* ``"stout_plaquette_forward"``: :func:`lattice_ml.smearing.stout.stout_plaquette_layer`
  (``U' = exp(Q) U``, ``Q = -TA(rho U S)``; optionally keeps S, Q, E);
* ``"stout_plaquette_backward"``: :func:`lattice_ml.smearing.stout.stout_plaquette_layer_backward`
  (two passes: per link ``Lambda`` and the local terms, then the pull-back through the
  neighbouring plaquettes; see :mod:`._stout_sites`).

:func:`lattice_ml.smearing.stout_smear`, :func:`~lattice_ml.smearing.stout_backward` and
:class:`~lattice_ml.smearing.StoutSmearing` reach them for ``loops="plaquette"`` (any weight
shape: scalar, per direction, per site). Accepted: links ``[batch, 4, L0, L1, L2, L3, 3, 3]``
complex128 or complex64, ``method`` ``"auto"`` or ``"su3"``. On the CPU the arithmetic is
complex128 (complex64 links are converted on entry and the results back); on CUDA it keeps the
links' dtype for the products (the exponential and its derivative are complex128 on both).
"""

from __future__ import annotations

import numpy as np

from ..dispatch import register

from . import _stout_sites
from ._build import cuda_namespace
from ._common import THREADS_PER_BLOCK, array_module, blocks_for, cuda_usable
from .gauge import accepts_links, compute_dtype, flat_links, geometry

__all__ = ["stout_forward_cpu", "stout_backward_cpu", "stout_forward_cuda",
           "stout_backward_cuda"]


def _real(cdt):
    return np.float32 if np.dtype(cdt) == np.complex64 else np.float64


def _accepts_rho(U, rho):
    return (hasattr(rho, "ndim") and rho.ndim == 6 and np.dtype(str(rho.dtype)).kind == "f"
            and all(r in (1, u) for r, u in zip(rho.shape, (U.shape[0], 4) + tuple(U.shape[2:6]))))


def _accepts_forward(U, rho, keep_fields=False, method="auto"):
    return accepts_links(U) and method in ("auto", "su3") and _accepts_rho(U, rho)


def _accepts_backward(U, rho, force, fields=None, method="auto"):
    return (accepts_links(U) and method in ("auto", "su3") and _accepts_rho(U, rho)
            and tuple(force.shape) == tuple(U.shape)
            and (fields is None or (len(fields) == 3 and fields[0] is not None
                                    and tuple(fields[0].shape) == tuple(U.shape))))


def _rho_links(xp, rho, U, rdt):
    """The weight of every link as a contiguous ``[batch, 4, V]`` array of dtype ``rdt``."""
    full = (U.shape[0], 4) + tuple(U.shape[2:6])
    R = xp.ascontiguousarray(xp.broadcast_to(rho.astype(rdt, copy=False), full))
    return xp.reshape(R, (U.shape[0], 4, -1))


def _forward(target, U, rho, keep_fields):
    xp = array_module(U)
    L, T, V = geometry(xp, U)
    B = U.shape[0]
    cdt = compute_dtype(target, U)
    rdt = _real(cdt)
    Uf = flat_links(xp, U.astype(cdt, copy=False))
    R = _rho_links(xp, rho, U, rdt)
    O = xp.empty((B, 4, V, 9), dtype=cdt)
    shape = (B, 4, V, 9) if keep_fields else (1, 1, 1, 9)
    S, Q, E = (xp.empty(shape, dtype=cdt) for _ in range(3))
    args = (Uf, R, O, S, Q, E, bool(keep_fields), L, T, rdt(1.0))
    if target == "cpu":
        _stout_sites.cpu_stout_forward(*args)
    else:
        cuda_namespace().cuda_stout_forward[blocks_for(B * 4 * V), THREADS_PER_BLOCK](*args)

    def back(a):
        return xp.reshape(a.astype(U.dtype, copy=False), U.shape)
    if not keep_fields:
        return back(O), None, None, None
    return back(O), back(S), back(Q), back(E)


def _backward(target, U, rho, force, fields):
    xp = array_module(U)
    L, T, V = geometry(xp, U)
    B = U.shape[0]
    cdt = compute_dtype(target, U)
    rdt = _real(cdt)
    Uf = flat_links(xp, U.astype(cdt, copy=False))
    R = _rho_links(xp, rho, U, rdt)
    Ff = flat_links(xp, force.astype(cdt, copy=False))
    if fields is not None:
        S_in, has_S = flat_links(xp, fields[0].astype(cdt, copy=False)), True
    else:
        S_in, has_S = xp.empty((1, 1, 1, 9), dtype=cdt), False
    O = xp.empty((B, 4, V, 9), dtype=cdt)
    M = xp.empty((B, 4, V, 9), dtype=cdt)
    G = xp.empty((B, 4, V), dtype=rdt)
    if target == "cpu":
        _stout_sites.cpu_stout_backward_links(Uf, R, Ff, S_in, has_S, O, M, G, L, T, rdt(1.0))
        _stout_sites.cpu_stout_pullback(Uf, M, O, L, T)
    else:
        k = cuda_namespace()
        grid = (blocks_for(B * 4 * V), THREADS_PER_BLOCK)
        k.cuda_stout_backward_links[grid](Uf, R, Ff, S_in, has_S, O, M, G, L, T, rdt(1.0))
        k.cuda_stout_pullback[grid](Uf, M, O, L, T)
    F = xp.reshape(O.astype(U.dtype, copy=False), U.shape)
    g = xp.reshape(G.astype(_real(U.dtype), copy=False), (B, 4) + tuple(U.shape[2:6]))
    return F, g


@register("stout_plaquette_forward", "cpu", accepts=_accepts_forward,
          name="cpu:stout_plaquette_forward_su3_4d")
def stout_forward_cpu(U, rho, keep_fields=False, method="auto"):
    """``stout_plaquette_layer`` on NumPy links (``njit``, parallel over links)."""
    return _forward("cpu", U, rho, keep_fields)


@register("stout_plaquette_backward", "cpu", accepts=_accepts_backward,
          name="cpu:stout_plaquette_backward_su3_4d")
def stout_backward_cpu(U, rho, force, fields=None, method="auto"):
    """``stout_plaquette_layer_backward`` on NumPy links (two parallel passes)."""
    return _backward("cpu", U, rho, force, fields)


@register("stout_plaquette_forward", "cuda",
          accepts=lambda *a, **kw: _accepts_forward(*a, **kw) and cuda_usable(),
          name="cuda:stout_plaquette_forward_su3_4d")
def stout_forward_cuda(U, rho, keep_fields=False, method="auto"):
    """``stout_plaquette_layer`` on CuPy links (NumPy links under the CUDA simulator)."""
    return _forward("cuda", U, rho, keep_fields)


@register("stout_plaquette_backward", "cuda",
          accepts=lambda *a, **kw: _accepts_backward(*a, **kw) and cuda_usable(),
          name="cuda:stout_plaquette_backward_su3_4d")
def stout_backward_cuda(U, rho, force, fields=None, method="auto"):
    """``stout_plaquette_layer_backward`` on CuPy links (NumPy links under the simulator)."""
    return _backward("cuda", U, rho, force, fields)
