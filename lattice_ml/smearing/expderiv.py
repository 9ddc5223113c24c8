"""Exact derivative of the exponential map of U(1) and SU(N), as a pull-back (vector-Jacobian
product) onto the Lie algebra.

For an algebra element ``X`` (anti-hermitian, traceless for SU(N)) and any complex matrix ``B``
the Fréchet derivative of ``exp`` at ``X`` in direction ``B`` is

    L(X, B) = int_0^1 exp(s X) B exp((1 - s) X) ds,

and, because ``Tr(L(X, dX) B) = Tr(dX L(X, B))``, it is its own transpose under the trace
pairing. :func:`expm_pullback` returns

    Lambda = TA( L(X, B) )                                                     (*)

the algebra element with ``Re Tr(d exp_X[dX] B) = Re Tr(dX Lambda)`` for every algebra
direction ``dX`` (only the projection onto the algebra is defined by this pairing; TA is the
traceless anti-hermitian projection of :mod:`lattice_ml.groups`).

Methods (``"auto"`` picks by N):

* ``"u1"`` (N = 1): exp is abelian, ``L(X, B) = exp(X) B``.
* ``"su2"`` (N = 2): ``exp X = cos r + sinc(r) X`` with ``X^2 = -r^2``, so
  ``Gamma = sinc(r) B + (1/2)[sinc(r) Tr B - xi1(r) Tr(X B)] X``,
  ``xi1(r) = (cos r - sinc r)/r^2`` (a Taylor series below r = 1).
* ``"su3"`` (N = 3): Cayley-Hamilton, Morningstar & Peardon, PRD 69 (2004) 054501: with
  ``Q = -iX``, ``exp(iQ) = f0 + f1 Q + f2 Q^2`` and ``df_j = b1j Tr(Q dQ) + b2j Tr(Q^2 dQ)``
  (``b1j = df_j/dc1``, ``b2j = df_j/dc0``),
  ``Gamma_MP = Tr(B1 B) Q + Tr(B2 B) Q^2 + f1 B + f2 (Q B + B Q)``,
  ``B_i = b_i0 + b_i1 Q + b_i2 Q^2`` and ``Gamma = -i Gamma_MP``. f_j and b_ij come from
  :func:`lattice_ml.groups.su3_ch_coefficients` (MP's closed form, their eqs. (57)-(65), away
  from Q = 0; the Cayley-Hamilton reduced Taylor series differentiated term by term near it).
* ``"eigh"`` (any N): ``iX = V diag(lam) V^dagger``;
  ``L = V [(V^dagger B V) o Delta] V^dagger`` with the divided differences of exp
  (Daleckii-Krein) ``Delta_jk = exp(-i(lam_j + lam_k)/2) sinc((lam_j - lam_k)/2)``, which is
  exact and stable for (near-)degenerate eigenvalues.
* ``"block"`` (any N, no eigensolver): ``exp([[X, B], [0, X]]) = [[e^X, L(X, B)], [0, e^X]]``,
  by scaling and squaring of a degree-30 Taylor polynomial.

All functions take ``[..., N, N]`` arrays of any array-API namespace.
"""

from __future__ import annotations

import math

from ..backend import device_of, make_complex, namespace
from ..groups import (_sinc, dagger, project_algebra, resolve_exp_method, su3_ch_coefficients,
                      su3_invariants, trace, xi1)

__all__ = ["expm_pullback", "expm_frechet_block", "su3_b_coefficients", "xi1"]

_METHODS = ("auto", "u1", "su2", "su3", "eigh", "block")


def _trace_product(A, B):
    """``Tr(A B)`` ``[...]`` without the matrix product: ``sum_ij A_ij B_ji``."""
    xp = namespace(A, B)
    P = A * xp.matrix_transpose(B)
    return xp.sum(xp.reshape(P, tuple(P.shape[:-2]) + (-1,)), axis=-1)


def su3_b_coefficients(c0, c1, cd=None):
    """``(f, b1, b2)``: the three complex arrays each of ``f_j``, ``b1j = df_j/dc1`` and
    ``b2j = df_j/dc0`` for ``exp(iQ) = f0 + f1 Q + f2 Q^2``, ``c0 = det Q``,
    ``c1 = Tr(Q^2)/2`` (real arrays): :func:`lattice_ml.groups.su3_ch_coefficients` with its
    derivative (one switch between series and closed form, measured there)."""
    return su3_ch_coefficients(c0, c1, derivative=True, cd=cd)


def _gamma_su3(X, B):
    xp = namespace(X, B)
    Q = -1j * X
    Q2 = Q @ Q
    (_, f1, f2), b1, b2 = su3_ch_coefficients(*su3_invariants(Q, Q2), derivative=True,
                                               cd=X.dtype)
    t0, t1, t2 = trace(B), _trace_product(Q, B), _trace_product(Q2, B)
    s1 = b1[0] * t0 + b1[1] * t1 + b1[2] * t2
    s2 = b2[0] * t0 + b2[1] * t1 + b2[2] * t2
    G = (s1[..., None, None] * Q + s2[..., None, None] * Q2 + f1[..., None, None] * B
         + f2[..., None, None] * (Q @ B + B @ Q))
    return -1j * G


def _gamma_su2(X, B):
    xp = namespace(X, B)
    r2 = -0.5 * xp.real(_trace_product(X, X))
    r = xp.sqrt(xp.where(r2 > 0.0, r2, xp.zeros_like(r2)))
    s = xp.astype(_sinc(xp, r), X.dtype)
    x1 = xp.astype(xi1(r), X.dtype)
    c = 0.5 * (s * trace(B) - x1 * _trace_product(X, B))
    return s[..., None, None] * B + c[..., None, None] * X


def _gamma_eigh(X, B):
    xp = namespace(X, B)
    lam, V = xp.linalg.eigh(1j * X)
    lj, lk = lam[..., :, None], lam[..., None, :]
    ph = -0.5 * (lj + lk)
    delta = make_complex(xp, xp.cos(ph), xp.sin(ph), X.dtype) * xp.astype(
        _sinc(xp, 0.5 * (lj - lk)), X.dtype)
    Vd = dagger(V)
    return V @ ((Vd @ B @ V) * delta) @ Vd


def expm_frechet_block(X, B, degree: int = 30, max_norm: float = 1.0):
    """``L(X, B)`` from ``exp([[X, B], [0, X]])`` (scaling and squaring of a Taylor polynomial);
    any square ``X``, ``B`` ``[..., N, N]``. Exact to round-off; needs no eigensolver."""
    xp = namespace(X, B)
    N = X.shape[-1]

    def fro(A):
        return xp.sqrt(xp.sum(xp.reshape(xp.real(A * xp.conj(A)), tuple(A.shape[:-2]) + (-1,)),
                              axis=-1))

    # L is linear in B: scale B per matrix so the block norm is set by X
    nb = fro(B)
    scale = xp.where(nb > 0.0, nb, xp.ones_like(nb))
    Bs = B / xp.astype(scale, B.dtype)[..., None, None]
    Z = xp.zeros_like(X)
    top = xp.concat([X, Bs], axis=-1)
    bot = xp.concat([Z, X], axis=-1)
    A = xp.concat([top, bot], axis=-2)
    nmax = float(xp.max(fro(A))) if A.ndim > 2 else float(fro(A))
    s = max(0, int(math.ceil(math.log2(nmax / max_norm)))) if nmax > max_norm else 0
    A = A / (2.0 ** s)
    eye = xp.eye(2 * N, dtype=A.dtype, device=device_of(A))
    P = xp.zeros_like(A) + eye
    for k in range(degree, 0, -1):
        P = eye + (A @ P) / float(k)
    for _ in range(s):
        P = P @ P
    return P[..., :N, N:] * xp.astype(scale, B.dtype)[..., None, None]


def expm_pullback(X, B, method: str = "auto"):
    """``Lambda = TA(L(X, B))``: the algebra element with ``Re Tr(d exp_X[dX] B) = Re Tr(dX
    Lambda)`` for every algebra direction dX (see the module docstring).

    ``X`` ``[..., N, N]`` algebra elements (projected with TA first), ``B`` ``[..., N, N]`` any
    complex matrices (broadcast against X). Returns ``[..., N, N]`` algebra elements.
    """
    xp = namespace(X, B)
    N = X.shape[-1]
    if method not in _METHODS:
        raise ValueError(f"unknown exp-derivative method {method!r}; choose one of "
                         f"{', '.join(_METHODS)}")
    method = resolve_exp_method(method, N, xp, fallback="block", what="exp-derivative method")
    X = project_algebra(X)
    if method == "u1":
        th = xp.imag(X)
        G = make_complex(xp, xp.cos(th), xp.sin(th), X.dtype) * B
    elif method == "su2":
        G = _gamma_su2(X, B)
    elif method == "su3":
        G = _gamma_su3(X, B)
    elif method == "eigh":
        G = _gamma_eigh(X, B)
    else:
        G = expm_frechet_block(X, B)
    return project_algebra(G)
