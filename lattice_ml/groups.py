"""The gauge groups U(1) and SU(N), N >= 2: generators, algebra, exp map, projections,
reunitarisation, Haar-random elements and gauge transformations.

Layouts
-------
* Group and algebra elements in matrix form are complex arrays whose **last two axes are the
  matrix** ``[..., N, N]`` (complex64 or complex128). U(1) is ``N = 1``: its elements are
  ``[..., 1, 1]`` arrays of phases, so every function below treats U(1) and SU(N) alike.
* Gauge links are ``[batch, D, L_0, ..., L_{D-1}, N, N]``; a gauge transformation ``g`` is
  ``[batch, L_0, ..., L_{D-1}, N, N]``. The Lie-algebra field of a gauge field (momenta,
  forces) is ``[batch, D, *sites, N, N]`` in matrix form or ``[batch, D, *sites, n_gen]`` in
  real coordinates.

Generators and normalisation
----------------------------
The generators ``T_a``, ``a = 0 ... n_gen - 1``, are anti-hermitian with

    Tr(T_a T_b) = -1/2 delta_ab.

* SU(N): ``n_gen = N^2 - 1`` and ``T_a = i lambda_a / 2`` with the generalised Gell-Mann
  matrices ``lambda_a`` (hermitian, traceless, ``Tr(lambda_a lambda_b) = 2 delta_ab``), in the
  *nested* order that reproduces the Pauli matrices for N = 2 and the standard Gell-Mann order
  ``lambda_1 ... lambda_8`` for N = 3: for ``k = 1, ..., N-1`` in turn, first for each
  ``j = 0, ..., k-1`` the symmetric matrix ``S_jk`` (1 at ``(j,k)`` and ``(k,j)``) and the
  antisymmetric one ``A_jk`` (``-i`` at ``(j,k)``, ``+i`` at ``(k,j)``), then the diagonal
  ``D_k = sqrt(2/(k(k+1))) diag(1, ..., 1, -k, 0, ..., 0)`` (k ones). So N = 2 gives
  ``sigma_1, sigma_2, sigma_3`` and N = 3 gives ``lambda_1, ..., lambda_8``.
* U(1): ``n_gen = 1`` and ``T_0 = i / sqrt(2)`` (the same normalisation).

An algebra element is ``X = sum_a x_a T_a`` with real ``x_a``; its coordinates are
``x_a = -2 Re Tr(T_a X)`` and ``-Tr(X^2) = (1/2) sum_a x_a^2``, so the HMC kinetic energy
``sum_a p_a^2 / 2`` is ``-Tr(P^2)`` per link.

The traceless anti-hermitian projection is

    TA(M) = (M - M^dagger)/2 - Tr(M - M^dagger)/(2N) 1        (SU(N))
    TA(M) = (M - M^*)/2                                         (U(1), no trace removed)

and ``sum_a T_a Re Tr(T_a M) = -TA(M)/2`` for any complex M.

Everything here is written against the array API: NumPy appears only for the small host table
of the generators (:func:`generators`).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import numpy as np

from .backend import complex_dtype_of, device_of, make_complex, namespace, real_dtype_of
from .lattice import shift

__all__ = [
    "n_generators",
    "generators",
    "dagger",
    "trace",
    "det",
    "identity",
    "identity_like",
    "algebra_to_matrix",
    "matrix_to_algebra",
    "project_algebra",
    "expm_algebra",
    "su3_invariants",
    "su3_ch_coefficients",
    "su3_exp_coefficients",
    "reunitarize",
    "unitarity_deviation",
    "random_algebra",
    "haar_random",
    "random_near_identity",
    "gauge_transform",
    "random_gauge_transformation",
    "check_links", "unitarity_deviation",
]


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
    N = _matrix_n(M)
    return identity(N, tuple(M.shape[:-2]), xp, dtype=M.dtype, device=device_of(M))


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
    zero = xp.zeros(tuple(x.shape[:-1]), dtype=rdtype, device=device_of(x))
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


# ------------------------------------------------------------------------------------------
# exponential map
# ------------------------------------------------------------------------------------------
_EXPM_METHODS = ("auto", "u1", "su2", "su3", "eigh", "taylor")


def resolve_exp_method(method: str, N: int, xp, fallback: str, what: str) -> str:
    """The concrete method of an exp (or exp-derivative) computation: ``"auto"`` picks the closed
    form for U(1), SU(2), SU(3), else ``"eigh"`` where the namespace has ``linalg.eigh``, else
    ``fallback``; a closed form asked for the wrong N raises ``ValueError``."""
    if method == "auto":
        closed = {1: "u1", 2: "su2", 3: "su3"}
        if N in closed:
            return closed[N]
        has_eigh = hasattr(xp, "linalg") and hasattr(xp.linalg, "eigh")
        return "eigh" if has_eigh else fallback
    need = {"u1": 1, "su2": 2, "su3": 3}
    if method in need and N != need[method]:
        raise ValueError(f"{what} {method!r} is for N = {need[method]}, got N = {N}")
    return method


def expm_algebra(X, method: str = "auto"):
    """``exp(X)`` of algebra elements ``[..., N, N]``, exact to round-off.

    The map is applied to ``TA(X)``: for an algebra element that is X itself, and round-off
    outside the algebra never leaves the group.

    Methods (``method="auto"`` picks by N):

    * ``"u1"`` (N = 1): ``exp(i theta)`` with ``theta = Im X``, as ``cos + i sin``.
    * ``"su2"`` (N = 2): ``X = i b.sigma``; ``exp(X) = cos|b| 1 + sin|b|/|b| X`` with a Taylor
      series of ``sin r / r`` for ``r < 0.05``.
    * ``"su3"`` (N = 3): Cayley-Hamilton, Morningstar & Peardon, PRD 69 (2004) 054501, with
      ``Q = -iX``: ``exp(iQ) = f0 + f1 Q + f2 Q^2``; see
      :func:`su3_exp_coefficients`.
    * ``"eigh"`` (any N): ``H = iX`` hermitian, ``H = V diag(lambda) V^dagger``,
      ``exp(X) = V diag(exp(-i lambda)) V^dagger``, evaluated as
      ``1 + V diag(-2 sin^2(lambda/2) - i sin lambda) V^dagger`` so that small arguments keep
      their relative precision (``xp.linalg.eigh``); ``auto`` for N >= 4.
    * ``"taylor"`` (any N): scaling and squaring: ``X / 2^s`` with Frobenius norm <= 2, a
      degree-30 Taylor polynomial (Horner), ``s`` squarings. One ``s`` for the whole array,
      from the largest norm (one host synchronisation). ``auto`` falls back to it for N >= 4
      when the namespace has no ``linalg.eigh``.

    The dtype is kept (complex64 in, complex64 out).
    """
    xp = namespace(X)
    N = _matrix_n(X, "algebra element")
    if method not in _EXPM_METHODS:
        raise ValueError(f"unknown exp method {method!r}; choose one of {', '.join(_EXPM_METHODS)}")
    if not _is_complex(xp, X.dtype):
        X = xp.astype(X, complex_dtype_of(xp, X.dtype))
    method = resolve_exp_method(method, N, xp, fallback="taylor", what="exp method")
    if method == "u1":
        th = xp.imag(X)
        return make_complex(xp, xp.cos(th), xp.sin(th), X.dtype)
    if method == "su2":
        return _expm_su2(X)
    A = project_algebra(X)
    if method == "su3":
        return _expm_su3(A)
    if method == "eigh":
        return _expm_eigh(A)
    return _expm_taylor(A)


def _sinc(xp, r):
    """sin(r)/r (real array), Taylor series below |r| = 0.05 (truncation error < 3e-21)."""
    r2 = r * r
    series = 1.0 - r2 / 6.0 * (1.0 - r2 / 20.0 * (1.0 - r2 / 42.0 * (1.0 - r2 / 72.0)))
    small = xp.abs(r) < 0.05
    safe = xp.where(small, xp.ones_like(r), r)
    return xp.where(small, series, xp.sin(safe) / safe)


def _xi1(xp, r):
    """``xi1(r) = (cos r - sin r / r) / r^2 = d/dr(sin r / r) / r`` (real array), stable at 0:
    the Taylor series ``sum_{k>=1} (-1)^k 2k r^(2k-2) / (2k+1)!`` (12 terms) for ``|r| < 1``."""
    r2 = r * r
    series = xp.zeros_like(r)
    for k in range(12, 0, -1):  # Horner from the highest term
        series = series * r2 + (-1.0) ** k * 2.0 * k / math.factorial(2 * k + 1)
    small = xp.abs(r) < 1.0
    safe = xp.where(small, xp.ones_like(r), r)
    closed = (xp.cos(safe) - xp.sin(safe) / safe) / (safe * safe)
    return xp.where(small, series, closed)


def xi1(r):
    """:func:`_xi1` in the namespace of ``r``."""
    return _xi1(namespace(r), r)


def _expm_su2(X):
    xp = namespace(X)
    # X_TA = i b.sigma = [[i b3, b2 + i b1], [-b2 + i b1, -i b3]]
    b3 = 0.5 * (xp.imag(X[..., 0, 0]) - xp.imag(X[..., 1, 1]))
    b1 = 0.5 * (xp.imag(X[..., 0, 1]) + xp.imag(X[..., 1, 0]))
    b2 = 0.5 * (xp.real(X[..., 0, 1]) - xp.real(X[..., 1, 0]))
    r = xp.sqrt(b1 * b1 + b2 * b2 + b3 * b3)
    c, s = xp.cos(r), _sinc(xp, r)
    sb1, sb2, sb3 = s * b1, s * b2, s * b3
    cd = X.dtype
    return _from_entries(xp, [make_complex(xp, c, sb3, cd), make_complex(xp, sb2, sb1, cd),
                              make_complex(xp, -sb2, sb1, cd), make_complex(xp, c, -sb3, cd)], 2)


# Below c1 = Tr(Q^2)/2 = _SU3_SERIES_C1 the Cayley-Hamilton-reduced Taylor series replaces
# Morningstar-Peardon's closed form (measured in su3_ch_coefficients' docstring).
_SU3_SERIES_C1 = 3.0
_SU3_SERIES_TERMS = 24


def su3_invariants(Q, Q2=None):
    """``(c0, c1) = (det Q, Tr(Q^2)/2) = (Tr(Q^3)/3, Tr(Q^2)/2)`` ``[...]`` (real) of hermitian
    traceless ``Q`` ``[..., 3, 3]`` (``c1`` clipped at 0 against round-off)."""
    xp = namespace(Q)
    if Q2 is None:
        Q2 = Q @ Q
    c1 = 0.5 * xp.real(trace(Q2))
    # Tr(Q^3) = sum_ij (Q^2)_ij Q_ji
    c0 = xp.real(xp.sum(xp.reshape(Q2 * xp.matrix_transpose(Q), tuple(Q.shape[:-2]) + (9,)),
                        axis=-1)) / 3.0
    return c0, xp.where(c1 > 0.0, c1, xp.zeros_like(c1))


def _su3_series(xp, c0, c1, cd, derivative: bool = True, terms: int = _SU3_SERIES_TERMS):
    """``f`` (and ``b1 = df/dc1``, ``b2 = df/dc0``) from the Taylor series
    ``exp(iQ) = sum_n i^n Q^n / n!`` with ``Q^n = a_n + b_n Q + d_n Q^2`` reduced by
    Cayley-Hamilton ``Q^3 = c1 Q + c0`` (``a, b, d <- c0 d, a + c1 d, b``), the recursion
    differentiated in c0 and c1 term by term. Returns tuples of three complex arrays."""
    z = xp.zeros_like(c1)
    v = [xp.ones_like(c1), z, z]            # (a_n, b_n, d_n)
    v0, v1 = [z, z, z], [z, z, z]           # their derivatives in c0 and in c1
    # real and imaginary parts apart: i^n / n! is real for even n, imaginary for odd n
    f = [[xp.ones_like(c1), z, z], [z, z, z]]
    g0 = [[z, z, z], [z, z, z]]
    g1 = [[z, z, z], [z, z, z]]
    fact = 1.0
    for n in range(1, terms + 1):
        a, b, d = v
        if derivative:
            v0 = [d + c0 * v0[2], v0[0] + c1 * v0[2], v0[1]]
            v1 = [c0 * v1[2], v1[0] + d + c1 * v1[2], v1[1]]
        v = [c0 * d, a + c1 * d, b]
        fact *= n
        coeff = (1.0 if n % 4 in (0, 1) else -1.0) / fact
        part = n % 2
        for j in range(3):
            f[part][j] = f[part][j] + coeff * v[j]
            if derivative:
                g0[part][j] = g0[part][j] + coeff * v0[j]
                g1[part][j] = g1[part][j] + coeff * v1[j]

    def cplx(g):
        return tuple(make_complex(xp, g[0][j], g[1][j], cd) for j in range(3))

    if not derivative:
        return cplx(f)
    return cplx(f), cplx(g1), cplx(g0)


def _su3_closed(xp, c0, c1, cd, derivative: bool = True):
    """Morningstar-Peardon's closed form (their eqs. (29)-(35) for f, (57)-(65) for b), at |c0|
    and mapped back with ``f_j(-c0) = (-1)^j f_j(c0)^*``, ``b_ij(-c0) = (-1)^(i+j+1)
    b_ij(c0)^*`` (so theta stays in [0, pi/2], where ``9u^2 - w^2 >= 2 c1``); c1 > 0."""
    neg = c0 < 0.0
    c0max = 2.0 * (c1 / 3.0) ** 1.5
    ratio = xp.abs(c0) / c0max
    theta = xp.acos(xp.where(ratio > 1.0, xp.ones_like(ratio), ratio))
    u = xp.sqrt(c1 / 3.0) * xp.cos(theta / 3.0)
    w = xp.sqrt(c1) * xp.sin(theta / 3.0)
    u2, w2 = u * u, w * w
    xi0 = _sinc(xp, xp.abs(w))
    cw = xp.cos(w)

    def C(re, im=None):
        return make_complex(xp, re, xp.zeros_like(re) if im is None else im, cd)

    e2 = C(xp.cos(2.0 * u), xp.sin(2.0 * u))          # e^{2iu}
    em = C(xp.cos(u), -xp.sin(u))                     # e^{-iu}
    U, U2, W2 = C(u), C(u2), C(w2)
    h0 = (U2 - W2) * e2 + em * C(8.0 * u2 * cw, 2.0 * u * (3.0 * u2 + w2) * xi0)
    h1 = 2.0 * U * e2 - em * C(2.0 * u * cw, -(3.0 * u2 - w2) * xi0)
    h2 = e2 - em * C(cw, 3.0 * u * xi0)
    den = C(9.0 * u2 - w2)
    f = (h0 / den, h1 / den, h2 / den)

    def flip(z, sign):
        return xp.where(neg, sign * xp.conj(z), z)

    f_out = tuple(flip(f[j], (-1.0) ** j) for j in range(3))
    if not derivative:
        return f_out
    X0, X1, CW = C(xi0), C(_xi1(xp, w)), C(cw)
    iu = C(xp.zeros_like(u), u)                       # i u
    I = C(xp.zeros_like(u), xp.ones_like(u))          # i
    one = C(xp.ones_like(u))
    # MP eqs. (60)-(65): r^(1)_j, r^(2)_j
    r1 = (2.0 * (U + I * (U2 - W2)) * e2
          + 2.0 * em * (4.0 * U * (2.0 - iu) * CW
                        + I * (9.0 * U2 + W2 - iu * (3.0 * U2 + W2)) * X0),
          2.0 * (one + 2.0 * iu) * e2
          + em * (-2.0 * (one - iu) * CW + I * (6.0 * U + I * (W2 - 3.0 * U2)) * X0),
          2.0 * I * e2 + I * em * (CW - 3.0 * (one - iu) * X0))
    r2 = (-2.0 * e2 + 2.0 * iu * em * (CW + (one + 4.0 * iu) * X0 + 3.0 * U2 * X1),
          -I * em * (CW + (one + 2.0 * iu) * X0 - 3.0 * U2 * X1),
          em * (X0 - 3.0 * iu * X1))
    den2 = 2.0 * den * den
    b1 = tuple(flip((2.0 * U * r1[j] + (3.0 * U2 - W2) * r2[j] - 2.0 * (15.0 * U2 + W2) * f[j])
                    / den2, (-1.0) ** j) for j in range(3))
    b2 = tuple(flip((r1[j] - 3.0 * U * r2[j] - 24.0 * U * f[j]) / den2, (-1.0) ** (j + 1))
               for j in range(3))
    return f_out, b1, b2


def su3_ch_coefficients(c0, c1, derivative: bool = False, cd=None):
    """Cayley-Hamilton coefficients of ``exp(iQ) = f0 + f1 Q + f2 Q^2`` for hermitian traceless
    3x3 ``Q`` with invariants ``c0 = det Q``, ``c1 = Tr(Q^2)/2`` (real arrays ``[...]``, see
    :func:`su3_invariants`), and with ``derivative=True`` also their derivatives
    ``b1j = df_j/dc1``, ``b2j = df_j/dc0`` (Morningstar & Peardon, PRD 69 (2004) 054501; their
    ``b_ij`` with ``dc1 = Tr(Q dQ)``, ``dc0 = Tr(Q^2 dQ)``).

    Returns ``(f0, f1, f2)``, or ``((f0, f1, f2), (b10, b11, b12), (b20, b21, b22))``: complex
    arrays ``[...]`` of dtype ``cd`` (default: complex of the dtype of c1).

    Two branches, one switch at ``c1 = 3`` (``_SU3_SERIES_C1``), where both are accurate:

    * ``c1 >= 3``: Morningstar-Peardon's closed form in ``u, w`` (``theta =
      arccos(|c0|/c0_max)``, ``c0_max = 2 (c1/3)^(3/2)``, ``u = sqrt(c1/3) cos(theta/3)``,
      ``w = sqrt(c1) sin(theta/3)``; ``f_j = h_j / (9u^2 - w^2)``, MP's eqs. (57)-(65) for b),
      at ``|c0|`` and mapped back with ``f_j(-c0) = (-1)^j f_j^*``,
      ``b_ij(-c0) = (-1)^(i+j+1) b_ij^*``. The h_j cancel as ``c1 -> 0``, and b more than f.
    * ``c1 < 3``: the Taylor series of ``exp(iQ)`` reduced with ``Q^3 = c1 Q + c0``
      (24 terms; ``|eigenvalue| <= 2 sqrt(c1/3) = 2`` at the switch), differentiated term by term.

    Error in float64, ``max_j |f_j - ref_j| / max_j |ref_j|`` (and the same for b1, b2), against a
    60-digit ``decimal`` evaluation of the series to convergence, on c1 from 1e-8 to 40 and
    c0/c0_max in [-1, 1] (degenerate spectra included; ``tests/test_groups.py`` repeats it):

    ========  ======================  ===========================  ===========================
    branch    c1                      f                            b
    ========  ======================  ===========================  ===========================
    series    1e-8 ... 3              <= 3.3e-16                   <= 4.0e-16
    series    4 / 6 / 10              2.3e-16 / 1.7e-15 / 6e-13    4.1e-16 / 3.1e-14 / 1.2e-11
    closed    1e-6 / 1e-3 / 0.02      7.5e-11 / 9.1e-14 / 3.0e-15  0.48 / 2.4e-8 / 8.0e-12
    closed    0.5 / 1 / 3             2.4e-16 / 3.4e-16 / 4.5e-16  7.1e-15 / 3.1e-15 / 1.1e-15
    closed    3 ... 15 / 15 ... 40    <= 6.3e-16 / <= 1.5e-15      <= 2.8e-15 / <= 9.9e-15
    ========  ======================  ===========================  ===========================

    With the switch at 3 every coefficient is within 6.1e-16 (f) and 2.8e-15 (b) of the reference
    for c1 < 15 (|Q| eigenvalues up to 4.5). The former separate switches (f at c1 = 0.02 with 14
    terms, b at 0.5 with 30) gave up to 3.0e-15 (f) and 7.1e-15 (b) just above them.
    """
    xp = namespace(c0, c1)
    if cd is None:
        cd = complex_dtype_of(xp, c1.dtype)
    c1 = xp.where(c1 > 0.0, c1, xp.zeros_like(c1))
    small = c1 < _SU3_SERIES_C1
    series = _su3_series(xp, c0, c1, cd, derivative)
    # the closed form only where it is used: elsewhere a harmless argument
    closed = _su3_closed(xp, xp.where(small, xp.zeros_like(c0), c0),
                         xp.where(small, xp.ones_like(c1), c1), cd, derivative)

    def pick(s, c):
        return tuple(xp.where(small, s[j], c[j]) for j in range(3))

    if not derivative:
        return pick(series, closed)
    return tuple(pick(s, c) for s, c in zip(series, closed))


def su3_exp_coefficients(Q, Q2=None):
    """Coefficients ``f0, f1, f2`` ``[...]`` (complex, dtype of Q) with
    ``exp(iQ) = f0 + f1 Q + f2 Q^2`` for hermitian traceless ``Q`` ``[..., 3, 3]``
    (``Q = -iX`` for an algebra element X); ``Q2 = Q @ Q`` may be passed if already computed.
    :func:`su3_ch_coefficients` of :func:`su3_invariants`."""
    c0, c1 = su3_invariants(Q, Q2)
    return su3_ch_coefficients(c0, c1, cd=Q.dtype)


def _expm_su3(A):
    Q = -1j * A
    Q2 = Q @ Q
    f0, f1, f2 = su3_exp_coefficients(Q, Q2)
    return _add_diagonal(f1[..., None, None] * Q + f2[..., None, None] * Q2, f0)


def _expm_eigh(A):
    xp = namespace(A)
    lam, V = xp.linalg.eigh(1j * A)
    # exp(-i lam) - 1 = -2 sin^2(lam/2) - i sin(lam): exact for small lam, so that
    # 1 + V (e^{-i lam} - 1) V^dagger keeps tiny arguments to relative precision
    sh = xp.sin(0.5 * lam)
    ph = make_complex(xp, -2.0 * sh * sh, -xp.sin(lam), A.dtype)
    eye = xp.eye(A.shape[-1], dtype=A.dtype, device=device_of(A))
    return (V * ph[..., None, :]) @ dagger(V) + eye


def _expm_taylor(A, degree: int = 30, max_norm: float = 2.0):
    xp = namespace(A)
    fro = xp.sqrt(xp.sum(xp.reshape(xp.real(A * xp.conj(A)), tuple(A.shape[:-2]) + (-1,)),
                         axis=-1))
    nmax = float(xp.max(fro)) if fro.ndim else float(fro)
    s = max(0, int(math.ceil(math.log2(nmax / max_norm)))) if nmax > max_norm else 0
    B = A / (2.0 ** s)
    eye = identity_like(B)
    P = eye
    for k in range(degree, 0, -1):  # Horner: 1 + B/1 (1 + B/2 (1 + ...))
        P = eye + (B @ P) / float(k)
    for _ in range(s):
        P = P @ P
    return P


# ------------------------------------------------------------------------------------------
# reunitarisation and random elements
# ------------------------------------------------------------------------------------------
def _gram_schmidt_rows(M, passes: int = 2):
    """Orthonormalise the rows of ``[..., N, N]`` (modified Gram-Schmidt, re-orthogonalised)."""
    xp = namespace(M)
    N = M.shape[-1]
    q = []
    for i in range(N):
        v = M[..., i, :]
        for _ in range(passes):
            for qj in q:
                v = v - xp.sum(xp.conj(qj) * v, axis=-1)[..., None] * qj
        nrm = xp.sqrt(xp.sum(xp.real(v * xp.conj(v)), axis=-1))
        q.append(v / xp.astype(nrm, v.dtype)[..., None])
    return xp.stack(q, axis=-2)


def _fix_det(W):
    """``W det(W)^(-1/N)`` with the principal root: unitary W -> SU(N)."""
    N = W.shape[-1]
    return W * _phase_root(namespace(W), det(W), N)[..., None, None]


def reunitarize(U):
    """Project ``[..., N, N]`` matrices near the group back onto it.

    U(1) (N = 1): ``U / |U|``. SU(N): the rows are orthonormalised by modified Gram-Schmidt
    (each row orthogonalised twice against the previous ones, "twice is enough"), then the
    determinant phase is removed, ``W -> W exp(-i arg(det W)/N)`` with the principal arg, which is
    continuous wherever ``det W != -1`` (always so for inputs near SU(N)). Idempotent on group
    elements to round-off; a perturbation ``U (1 + O(delta))`` of a group element is moved back
    to within ``O(delta)`` of it. Plain array ops, no ``linalg`` calls below N = 4.
    """
    xp = namespace(U)
    N = _matrix_n(U, "links")
    if not _is_complex(xp, U.dtype):
        U = xp.astype(U, complex_dtype_of(xp, U.dtype))
    if N == 1:
        return U / xp.astype(xp.abs(U), U.dtype)
    return _fix_det(_gram_schmidt_rows(U))


def haar_random(rng, shape: Sequence[int], N: int):
    """Haar-distributed elements ``[rng.n_chains, *shape, N, N]`` of U(1) (N = 1) or SU(N).

    ``Z`` complex normal (Ginibre) from ``rng.complex_normal``; ``Z = QR``
    (``xp.linalg.qr``, Householder); ``Q Lambda`` with ``Lambda = diag(R_ii / |R_ii|)`` is Haar
    on U(N) (Mezzadri, Notices AMS 54 (2007) 592); then ``det^(-1/N)`` is removed (any root
    choice commutes with left multiplication by SU(N), so the result is Haar on SU(N)).
    Namespaces without ``linalg.qr`` use Gram-Schmidt on the rows, which gives the same
    distribution. U(1): ``z / |z|``. dtype: complex of ``rng``'s precision.
    """
    N = _check_N(N)
    Z = rng.complex_normal(tuple(shape) + (N, N))
    xp = namespace(Z)
    if N == 1:
        return Z / xp.astype(xp.abs(Z), Z.dtype)
    if hasattr(xp, "linalg") and hasattr(xp.linalg, "qr"):
        Qm, R = xp.linalg.qr(Z)
        diag = xp.stack([R[..., i, i] for i in range(N)], axis=-1)
        ph = diag / xp.astype(xp.abs(diag), diag.dtype)
        W = Qm * ph[..., None, :]
    else:
        W = _gram_schmidt_rows(Z)
    return _fix_det(W)


def random_near_identity(rng, shape: Sequence[int], N: int, eps: float):
    """``exp(eps X)`` ``[rng.n_chains, *shape, N, N]``, X with standard normal coordinates."""
    return expm_algebra(eps * random_algebra(rng, shape, N))


# ------------------------------------------------------------------------------------------
# gauge transformations and validation
# ------------------------------------------------------------------------------------------
def gauge_transform(U, g):
    """``U'_mu(x) = g(x) U_mu(x) g(x + mu_hat)^dagger``.

    ``U`` ``[batch, D, *sites, N, N]``, ``g`` ``[batch, *sites, N, N]``; returns the layout of U.
    Closed loops ``Tr(U_mu(x) U_nu(x+mu) ...)`` are invariant.
    """
    xp = namespace(U, g)
    D = U.shape[1]
    if g.ndim != U.ndim - 1 or tuple(g.shape[1:]) != tuple(U.shape[2:]) or g.shape[0] not in (
            1, U.shape[0]):
        raise ValueError(f"gauge transformation of shape {tuple(g.shape)} does not fit links of "
                         f"shape {tuple(U.shape)}; expected [batch, *sites, N, N]")
    gd = dagger(g)
    return xp.stack([g @ U[:, mu, ...] @ shift(gd, mu, +1, site_axis=1) for mu in range(D)], axis=1)


def random_gauge_transformation(rng, lattice_shape, N: int):
    """Haar-random ``g`` ``[rng.n_chains, *lattice_shape, N, N]`` (``lattice_shape`` may be a
    :class:`lattice_ml.lattice.Lattice`)."""
    shape = getattr(lattice_shape, "shape", lattice_shape)
    return haar_random(rng, tuple(shape), N)


def _default_tol(xp, dtype) -> float:
    return 1e-5 if dtype == xp.complex64 else 1e-10


def unitarity_deviation(U) -> float:
    """Largest distance of ``[..., N, N]`` matrices from the group, as one host float.

    ``max |U^dagger U - 1|`` over all entries, and for N >= 2 also ``max |det U - 1|`` (the larger
    of the two is returned). NaN where ``U`` holds NaN or inf. This is the quantity
    :func:`check_links` compares with its tolerance and :func:`reunitarize` sets back to
    round-off.
    """
    xp = namespace(U)
    shape = tuple(U.shape)
    n = shape[-1]
    err = xp.abs(_add_diagonal(dagger(U) @ U, -xp.ones(shape[:-2], dtype=U.dtype,
                                                         device=device_of(U))))
    dev = float(xp.max(err))
    if n >= 2:
        dev = max(dev, float(xp.max(xp.abs(det(U) - 1.0))))
    if int(xp.sum(xp.astype(~xp.isfinite(U), xp.int64))):
        return float("nan")
    return dev


def check_links(U, N: int | None = None, tol: float | None = None, name: str = "links") -> None:
    """Raise ``ValueError`` unless ``U`` is a valid U(1)/SU(N) link field.

    Checks, in order: layout ``[batch, D, *sites, N, N]`` with ``D = U.shape[1]`` in 2..4 and
    ``U.ndim == D + 4``; square matrix axes, of size ``N`` if given; complex dtype; no NaN/inf;
    unitarity ``max |U^dagger U - 1| <= tol``; for N >= 2 ``max |det U - 1| <= tol``.
    ``tol`` defaults to 1e-10 for complex128 and 1e-5 for complex64. Returns None. The maxima
    are synchronised to the host (one scalar each).
    """
    shape = tuple(getattr(U, "shape", ()))
    layout = "[batch, D, *sites, N, N] with D = 2, 3 or 4 site axes"
    if len(shape) < 6:
        raise ValueError(f"{name} must have layout {layout}; got {len(shape)} axes, shape {shape}")
    D = shape[1]
    if not 2 <= D <= 4:
        raise ValueError(f"{name} has {D} directions (axis 1) but D must be 2, 3 or 4; "
                         f"layout {layout}, shape {shape}")
    if len(shape) != D + 4:
        raise ValueError(f"{name}: direction axis says D = {D} but the array has "
                         f"{len(shape) - 4} site axes; layout {layout} needs {D + 4} axes, "
                         f"shape {shape}")
    if shape[-1] != shape[-2]:
        raise ValueError(f"{name}: matrix axes must be square [.., N, N], shape {shape}")
    n = shape[-1]
    if N is not None and n != N:
        raise ValueError(f"{name} are {n}x{n} matrices but N = {N} was expected "
                         f"({'U(1)' if N == 1 else f'SU({N})'}), shape {shape}")
    xp = namespace(U)
    if not _is_complex(xp, U.dtype):
        raise ValueError(f"{name} must have a complex dtype (complex64 or complex128), "
                         f"got {U.dtype}")
    bad = int(xp.sum(xp.astype(~xp.isfinite(U), xp.int64)))
    if bad:
        raise ValueError(f"{name} contain {bad} non-finite (NaN or inf) entries")
    if tol is None:
        tol = _default_tol(xp, U.dtype)
    err = xp.abs(_add_diagonal(dagger(U) @ U, -xp.ones(shape[:-2], dtype=U.dtype,
                                                         device=device_of(U))))
    dev = float(xp.max(err))
    if not dev <= tol:
        raise ValueError(f"{name} are not unitary: max |U^dagger U - 1| = {dev:.3g} "
                         f"(tolerance {tol:.3g}); reunitarize them first")
    if n >= 2:
        ddev = float(xp.max(xp.abs(det(U) - 1.0)))
        if not ddev <= tol:
            raise ValueError(f"{name} are not in SU({n}): max |det U - 1| = {ddev:.3g} "
                             f"(tolerance {tol:.3g})")
    return None
