"""Generators, matrix basics and the Lie algebra of U(1) and SU(N) (conventions in
:mod:`lattice_ml.groups`)."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import numpy as np

from ..backend import complex_dtype_of, device_of, make_complex, namespace, real_dtype_of


# ------------------------------------------------------------------------------------------
# small helpers
# ------------------------------------------------------------------------------------------

def _is_complex(xp, dtype) -> bool:
    return xp.isdtype(dtype, "complex floating")





def _matrix_n(M, what: str = "matrix") -> int:
    if M.ndim < 2 or M.shape[-1] != M.shape[-2]:
        raise ValueError(f"{what} must have square matrix axes [..., N, N], got shape "
                         f"{tuple(M.shape)}")
    return int(M.shape[-1])


def _from_entries(xp, entries, N: int):
    """Matrix ``[..., N, N]`` from the row-major list of its N*N entries ``[...]``."""
    stacked = xp.stack(entries, axis=-1)
    return xp.reshape(stacked, tuple(stacked.shape[:-1]) + (N, N))


def _rows(M, N):
    return [M[..., i, :] for i in range(N)]


def _phase_root(xp, d, N: int):
    """``exp(-i arg(d) / N)`` with the principal arg in (-pi, pi] (continuous away from d < 0)."""
    phi = xp.atan2(xp.imag(d), xp.real(d)) / N
    return make_complex(xp, xp.cos(phi), -xp.sin(phi), d.dtype)


# ------------------------------------------------------------------------------------------
# generators
# ------------------------------------------------------------------------------------------
def n_generators(N: int) -> int:
    """Number of generators: 1 for U(1) (``N = 1``), ``N^2 - 1`` for SU(N)."""
    N = _check_N(N)
    return 1 if N == 1 else N * N - 1


def _check_N(N) -> int:
    if isinstance(N, bool) or not isinstance(N, (int, np.integer)) or N < 1:
        raise ValueError(f"N must be a positive integer (1 for U(1), N >= 2 for SU(N)), not {N!r}")
    return int(N)


@lru_cache(maxsize=None)
def _generators_host(N: int) -> np.ndarray:
    """Host table ``[n_gen, N, N]`` complex128 of the generators (see module docstring)."""
    if N == 1:
        return np.array([[[1j / math.sqrt(2.0)]]])
    lam = []
    for k in range(1, N):
        for j in range(k):
            s = np.zeros((N, N), complex)
            s[j, k] = s[k, j] = 1.0
            a = np.zeros((N, N), complex)
            a[j, k], a[k, j] = -1j, 1j
            lam += [s, a]
        d = np.zeros((N, N), complex)
        d[np.arange(k), np.arange(k)] = 1.0
        d[k, k] = -k
        lam.append(math.sqrt(2.0 / (k * (k + 1))) * d)
    T = 0.5j * np.stack(lam)
    T.setflags(write=False)
    return T


@lru_cache(maxsize=None)
def _entry_terms(N: int):
    """Per matrix entry (r, c), row-major: [(a, Re T_a[r,c], Im T_a[r,c]) for T_a[r,c] != 0]."""
    T = _generators_host(N)
    out = []
    for r in range(N):
        for c in range(N):
            out.append([(a, float(T[a, r, c].real), float(T[a, r, c].imag))
                        for a in range(T.shape[0]) if T[a, r, c] != 0])
    return out


def generators(N: int, xp, dtype=None, device=None):
    """The generators ``T_a`` as an array ``[n_gen, N, N]``.

    Anti-hermitian, ``Tr(T_a T_b) = -delta_ab / 2``; SU(N): ``T_a = i lambda_a / 2`` with the
    generalised Gell-Mann matrices in nested order (Pauli for N = 2, Gell-Mann
    ``lambda_1..lambda_8`` for N = 3); U(1) (``N = 1``): ``T_0 = i / sqrt(2)``.
    ``dtype`` defaults to ``complex128``.
    """
    N = _check_N(N)
    return xp.asarray(_generators_host(N), dtype=dtype or xp.complex128, device=device)


# ------------------------------------------------------------------------------------------
# matrix basics
# ------------------------------------------------------------------------------------------
def dagger(M):
    """Conjugate transpose of the last two axes: ``[..., N, N] -> [..., N, N]``."""
    xp = namespace(M)
    return xp.conj(xp.matrix_transpose(M))


def trace(M):
    """Trace of the last two axes: ``[..., N, N] -> [...]`` (same dtype)."""
    N = _matrix_n(M)
    out = M[..., 0, 0]
    for i in range(1, N):
        out = out + M[..., i, i]
    return out


def det(M):
    """Determinant of the last two axes: ``[..., N, N] -> [...]``.

    Closed forms for N <= 3 (plain array ops); ``xp.linalg.det`` for N >= 4.
    """
    xp = namespace(M)
    N = _matrix_n(M)
    if N == 1:
        return M[..., 0, 0]
    if N == 2:
        return M[..., 0, 0] * M[..., 1, 1] - M[..., 0, 1] * M[..., 1, 0]
    if N == 3:
        a = M
        return (a[..., 0, 0] * (a[..., 1, 1] * a[..., 2, 2] - a[..., 1, 2] * a[..., 2, 1])
                - a[..., 0, 1] * (a[..., 1, 0] * a[..., 2, 2] - a[..., 1, 2] * a[..., 2, 0])
                + a[..., 0, 2] * (a[..., 1, 0] * a[..., 2, 1] - a[..., 1, 1] * a[..., 2, 0]))
    return xp.linalg.det(M)


def identity(N: int, shape: Sequence[int], xp, dtype=None, device=None):
    """Identity matrices ``[*shape, N, N]`` (a writable array; ``dtype`` default complex128)."""
    N = _check_N(N)
    dtype = dtype or xp.complex128
    eye = xp.eye(N, dtype=dtype, device=device)
    return xp.zeros(tuple(shape) + (N, N), dtype=dtype, device=device) + eye


def identity_like(M):
    """Identity matrices with the shape, dtype and device of ``M`` ``[..., N, N]``."""
    xp = namespace(M)
    _matrix_n(M)
    # zeros_like, not zeros(shape): a decomposed M (lattice_ml.parallel) gives its own block
    return xp.zeros_like(M) + xp.eye(M.shape[-1], dtype=M.dtype, device=device_of(M))


def _add_diagonal(M, s):
    """``M + s 1`` with ``s`` of shape ``M.shape[:-2]``."""
    xp = namespace(M)
    N = M.shape[-1]
    eye = xp.eye(N, dtype=M.dtype, device=device_of(M))
    return M + s[..., None, None] * eye


# ------------------------------------------------------------------------------------------
# algebra
# ------------------------------------------------------------------------------------------
def algebra_to_matrix(x, N: int):
    """``X = sum_a x_a T_a``: real coordinates ``[..., n_gen]`` -> matrix ``[..., N, N]``.

    float64 coordinates give complex128, float32 give complex64. The result is anti-hermitian
    exactly (the two entries of each off-diagonal pair are computed by the same operations) and
    traceless to round-off (SU(N)).
    """
    xp = namespace(x)
    N = _check_N(N)
    ng = n_generators(N)
    if x.ndim < 1 or x.shape[-1] != ng:
        raise ValueError(f"algebra coordinates of U(1)/SU({N}) need a last axis of length {ng}, "
                         f"got shape {tuple(x.shape)}")
    if _is_complex(xp, x.dtype):
        raise ValueError("algebra coordinates must be real")
    rdtype = real_dtype_of(xp, x.dtype)
    x = xp.astype(x, rdtype)
    cdtype = complex_dtype_of(xp, rdtype)
    zero = xp.zeros_like(x[..., 0])      # (not zeros(shape): keeps a decomposed x's block)
    entries = []
    for terms in _entry_terms(N):
        re, im = zero, zero
        for a, tr, ti in terms:
            if tr != 0.0:
                re = re + tr * x[..., a]
            if ti != 0.0:
                im = im + ti * x[..., a]
        entries.append(make_complex(xp, re, im, cdtype))
    return _from_entries(xp, entries, N)


def matrix_to_algebra(X, N: int | None = None):
    """Coordinates ``x_a = -2 Re Tr(T_a X)``: matrix ``[..., N, N]`` -> real ``[..., n_gen]``.

    For an algebra element this inverts :func:`algebra_to_matrix`; for any complex ``M``,
    ``algebra_to_matrix(matrix_to_algebra(M)) = TA(M)``. complex128 gives float64, complex64
    gives float32. ``N`` defaults to the matrix size.
    """
    xp = namespace(X)
    n = _matrix_n(X, "algebra element")
    if N is not None and _check_N(N) != n:
        raise ValueError(f"matrix is {n}x{n}, expected N = {N}")
    N = n
    Xr, Xi = xp.real(X), xp.imag(X)
    if not _is_complex(xp, X.dtype):  # real input: zero imaginary part
        Xi = xp.zeros_like(Xr)
    # Tr(T_a X) = sum_{r,c} T_a[r,c] X[c,r];  Re(T X) = Re T Re X - Im T Im X
    coeff = [[] for _ in range(n_generators(N))]
    for idx, terms in enumerate(_entry_terms(N)):
        r, c = divmod(idx, N)
        for a, tr, ti in terms:
            coeff[a].append((r, c, tr, ti))
    out = []
    for terms in coeff:
        acc = None
        for r, c, tr, ti in terms:
            term = None
            if tr != 0.0:
                term = (-2.0 * tr) * Xr[..., c, r]
            if ti != 0.0:
                t2 = (2.0 * ti) * Xi[..., c, r]
                term = t2 if term is None else term + t2
            acc = term if acc is None else acc + term
        out.append(acc)
    return xp.stack(out, axis=-1)


def project_algebra(M):
    """Traceless anti-hermitian projection ``TA(M)`` of ``[..., N, N]`` (N = 1: U(1)).

    SU(N): ``TA(M) = (M - M^dagger)/2 - Tr(M - M^dagger)/(2N) 1``; U(1): ``(M - M^*)/2``.
    ``sum_a T_a Re Tr(T_a M) = -TA(M)/2``.
    """
    N = _matrix_n(M)
    A = 0.5 * (M - dagger(M))
    if N == 1:
        return A
    return _add_diagonal(A, -trace(A) / N)


def random_algebra(rng, shape: Sequence[int], N: int):
    """Algebra elements ``[n_chains, *shape, N, N]`` with standard normal coordinates.

    This is the distribution of HMC momenta (density ``exp(Tr P^2) = exp(-sum_a p_a^2 / 2)``).
    """
    N = _check_N(N)
    x = rng.normal(tuple(shape) + (n_generators(N),))
    return algebra_to_matrix(x, N)
