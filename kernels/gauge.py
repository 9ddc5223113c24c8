"""Numba kernels for the 4D SU(3) staple sums and gauge force (plaquette and rectangle loops).

Registered with :mod:`lattice_ml.dispatch` for the ops of :mod:`lattice_ml.gauge.action`:

* ``"gauge_staples"``: :func:`lattice_ml.gauge.action.staple_field` (every direction, or one);
* ``"gauge_force"``: :func:`lattice_ml.gauge.action.gauge_force`
  ``F = -(beta/6) TA(U_mu(x) V_mu(x))``, fused with the staple sum (V is never stored).

Both accept links ``[batch, 4, L0, L1, L2, L3, 3, 3]`` of dtype complex128 or complex64 (NumPy:
``njit(parallel=True)``, one ``prange`` iteration per link; CuPy: CUDA, one thread per link);
anything else runs the array-API reference. The layout conversion is a reshape to
``[batch, 4, V, 9]`` (no copy for C-contiguous links; other strides are copied once).
Complex64 links are multiplied in complex64; the output keeps the input dtype.
"""

from __future__ import annotations

import functools

import numpy as np

from ..dispatch import register

from . import _gauge_sites
from ._build import cuda_namespace
from ._common import THREADS_PER_BLOCK, array_module, blocks_for, cuda_usable

__all__ = ["staple_field_cpu", "gauge_force_cpu", "staple_field_cuda", "gauge_force_cuda",
           "accepts_links"]


def accepts_links(U) -> bool:
    """4D SU(3) links ``[batch, 4, L0, L1, L2, L3, 3, 3]``, complex64 or complex128."""
    try:
        return (U.ndim == 8 and U.shape[1] == 4 and U.shape[-1] == 3 and U.shape[-2] == 3
                and str(U.dtype) in ("complex128", "complex64"))
    except AttributeError:
        return False


def _scalar(*values) -> bool:
    """Every coupling is a plain number (or None): per-configuration arrays take the reference."""
    return all(v is None or np.ndim(v) == 0 for v in values)


def _accepts_staples(U, c_plaq, c_rect, mu=None):
    return (accepts_links(U) and (c_plaq is not None or c_rect is not None)
            and _scalar(c_plaq, c_rect) and (mu is None or 0 <= int(mu) < 4))


def _accepts_force(U, beta, c_plaq, c_rect):
    return (accepts_links(U) and (c_plaq is not None or c_rect is not None)
            and _scalar(beta, c_plaq, c_rect))


def geometry(xp, U):
    """``(L, T, V)`` of 4D links ``[batch, 4, *L, 3, 3]``: extents, the neighbour-offset table
    of :func:`._gauge_sites.offset_table` (an array of ``xp``) and the number of sites."""
    L = tuple(int(v) for v in U.shape[2:6])
    return L, _offset_table(L, xp, _device_id(xp)), L[0] * L[1] * L[2] * L[3]


def _device_id(xp) -> int | None:
    """The current CUDA device of CuPy (the table must live where the links are), else None."""
    if getattr(xp, "__name__", "") == "cupy":
        return int(xp.cuda.Device().id)
    return None


@functools.lru_cache(maxsize=32)
def _offset_table(L, xp, device_id):
    return xp.asarray(_gauge_sites.offset_table(L))


def flat_links(xp, U):
    """``[batch, 4, V, 9]`` view of C-contiguous links (copied once otherwise)."""
    U = xp.ascontiguousarray(U)
    return xp.reshape(U, (U.shape[0], U.shape[1], -1, 9))


def real_scalar(U, x):
    """``x`` as a scalar of the real dtype of ``U`` (keeps complex64 arithmetic in complex64)."""
    return np.float32(x) if str(U.dtype) == "complex64" else np.float64(x)


def _args(U, c_plaq, c_rect):
    has_p = c_plaq is not None and c_plaq != 0.0
    has_r = c_rect is not None and c_rect != 0.0
    cp = real_scalar(U, c_plaq if has_p else 0.0)
    cr = real_scalar(U, c_rect if has_r else 0.0)
    return cp, cr, has_p, has_r


def compute_dtype(target, U):
    """The dtype a kernel computes in: the links' own on CUDA; complex128 on the CPU, where the
    scalar complex arithmetic of the kernels runs at the same speed in both precisions (complex64
    links are converted on entry and the result back, which saves a second compilation)."""
    return U.dtype if target == "cuda" else np.complex128


def _run(target, U, c_plaq, c_rect, mu, force_factor=None):
    xp = array_module(U)
    B = U.shape[0]
    L, T, V = geometry(xp, U)
    cdt = compute_dtype(target, U)
    Uf = flat_links(xp, U.astype(cdt, copy=False))
    nd = 4 if mu is None else 1
    O = xp.empty((B, nd, V, 9), dtype=cdt)
    cp, cr, has_p, has_r = _args(Uf, c_plaq, c_rect)
    if not has_p and not has_r:          # every coefficient 0: zero staples, zero force
        O[...] = 0
    else:
        args = (Uf, O, L, T, cp, cr, has_p, has_r, -1 if mu is None else int(mu),
                force_factor is not None, real_scalar(Uf, force_factor or 0.0))
        if target == "cpu":
            _gauge_sites.cpu_staples(*args)
        else:
            cuda_namespace().cuda_staples[blocks_for(B * nd * V), THREADS_PER_BLOCK](*args)
    O = O.astype(U.dtype, copy=False)
    if mu is None:
        return xp.reshape(O, U.shape)
    return xp.reshape(O, (B,) + tuple(U.shape[2:]))


@register("gauge_staples", "cpu", accepts=_accepts_staples, name="cpu:gauge_staples_su3_4d")
def staple_field_cpu(U, c_plaq, c_rect, mu=None):
    """``staple_field`` on NumPy links (``njit``, parallel over links)."""
    return _run("cpu", U, c_plaq, c_rect, mu)


@register("gauge_force", "cpu", accepts=_accepts_force, name="cpu:gauge_force_su3_4d")
def gauge_force_cpu(U, beta, c_plaq, c_rect):
    """``gauge_force`` on NumPy links (``njit``, parallel over links, fused staples)."""
    return _run("cpu", U, c_plaq, c_rect, None, -float(beta) / 6.0)


def _cuda_ok(*args, **kwargs):
    return cuda_usable()


@register("gauge_staples", "cuda",
          accepts=lambda *a, **kw: _accepts_staples(*a, **kw) and _cuda_ok(),
          name="cuda:gauge_staples_su3_4d")
def staple_field_cuda(U, c_plaq, c_rect, mu=None):
    """``staple_field`` on CuPy links (NumPy links under the CUDA simulator)."""
    return _run("cuda", U, c_plaq, c_rect, mu)


@register("gauge_force", "cuda", accepts=lambda *a, **kw: _accepts_force(*a, **kw) and _cuda_ok(),
          name="cuda:gauge_force_su3_4d")
def gauge_force_cuda(U, beta, c_plaq, c_rect):
    """``gauge_force`` on CuPy links (NumPy links under the CUDA simulator)."""
    return _run("cuda", U, c_plaq, c_rect, None, -float(beta) / 6.0)
