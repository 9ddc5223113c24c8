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
  ``B_i = b_i0 + b_i1 Q + b_i2 Q^2`` and ``Gamma = -i Gamma_MP``. The b_ij come from MP's closed
  form (their eqs. (57)-(65), evaluated at ``|c0|`` and mapped with
  ``b_ij(-c0) = (-1)^(i+j+1) b_ij(c0)^*``) for ``c1 >= 0.5`` and from the Cayley-Hamilton
  reduced Taylor series of ``exp(iQ)`` differentiated term by term in (c0, c1) below, where the
  closed form cancels.
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
from ..groups import dagger, project_algebra, resolve_exp_method, su3_exp_coefficients, trace

__all__ = ["expm_pullback", "expm_frechet_block", "su3_b_coefficients", "xi1"]

_METHODS = ("auto", "u1", "su2", "su3", "eigh", "block")


def _trace_product(A, B):
    """``Tr(A B)`` ``[...]`` without the matrix product: ``sum_ij A_ij B_ji``."""
    xp = namespace(A, B)
    P = A * xp.matrix_transpose(B)
    return xp.sum(xp.reshape(P, tuple(P.shape[:-2]) + (-1,)), axis=-1)


def _sinc(xp, r):
    """sin(r)/r, Taylor series below 0.05."""
    r2 = r * r
    series = 1.0 - r2 / 6.0 * (1.0 - r2 / 20.0 * (1.0 - r2 / 42.0 * (1.0 - r2 / 72.0)))
    small = xp.abs(r) < 0.05
    safe = xp.where(small, xp.ones_like(r), r)
    return xp.where(small, series, xp.sin(safe) / safe)


def xi1(r):
    """``xi1(r) = (cos r - sin r / r) / r^2 = d/dr(sin r / r) / r`` (real array), stable at 0.

    Taylor series ``sum_{k>=1} (-1)^k 2k r^(2k-2) / (2k+1)!`` (12 terms) for ``|r| < 1``.
    """
    xp = namespace(r)
    r2 = r * r
    series = xp.zeros_like(r)
    # Horner from the highest term
    terms = [(-1.0) ** k * 2.0 * k / math.factorial(2 * k + 1) for k in range(1, 13)]
    for c in reversed(terms):
        series = series * r2 + c
    small = xp.abs(r) < 1.0
    safe = xp.where(small, xp.ones_like(r), r)
    closed = (xp.cos(safe) - xp.sin(safe) / safe) / (safe * safe)
    return xp.where(small, series, closed)


# ------------------------------------------------------------------------------------------
# SU(3): Morningstar-Peardon b coefficients
# ------------------------------------------------------------------------------------------
_B_SERIES_C1 = 0.5
_B_SERIES_TERMS = 30


def _b_series(xp, c0, c1, cd):
    """f_j and df_j/dc1, df_j/dc0 from the Taylor series of exp(iQ) with Q^3 = c1 Q + c0.

    Q^n = a_n + b_n Q + d_n Q^2; the recursion is differentiated in c0 and c1 term by term.
    """
    z = xp.zeros_like(c1)
    one = xp.ones_like(c1)
    v = [one, z, z]                 # (a, b, d) of Q^n
    d0 = [z, z, z]                  # d/dc0
    d1 = [z, z, z]                  # d/dc1
    # accumulate real and imaginary parts separately: i^n / n!
    f_re, f_im = [one, z, z], [z, z, z]
    g1_re, g1_im = [z, z, z], [z, z, z]
    g0_re, g0_im = [z, z, z], [z, z, z]
    fact = 1.0
    for n in range(1, _B_SERIES_TERMS + 1):
        a, b, d = v
        a0, b0, dd0 = d0
        a1, b1, dd1 = d1
        v = [c0 * d, a + c1 * d, b]
        d0 = [d + c0 * dd0, a0 + c1 * dd0, b0]
        d1 = [c0 * dd1, a1 + d + c1 * dd1, b1]
        fact *= n
        coeff = (1.0 if n % 4 in (0, 1) else -1.0) / fact
        if n % 2 == 0:
            f_t, g0_t, g1_t = f_re, g0_re, g1_re
        else:
            f_t, g0_t, g1_t = f_im, g0_im, g1_im
        for j in range(3):
            f_t[j] = f_t[j] + coeff * v[j]
            g0_t[j] = g0_t[j] + coeff * d0[j]
            g1_t[j] = g1_t[j] + coeff * d1[j]
    f = [make_complex(xp, f_re[j], f_im[j], cd) for j in range(3)]
    b1 = [make_complex(xp, g1_re[j], g1_im[j], cd) for j in range(3)]
    b2 = [make_complex(xp, g0_re[j], g0_im[j], cd) for j in range(3)]
    return f, b1, b2


def _b_closed(xp, c0, c1, cd):
    """Morningstar-Peardon closed form of f_j, b1j, b2j (valid for c1 > 0), at |c0|, mapped back."""
    neg = c0 < 0.0
    c0a = xp.abs(c0)
    c0max = 2.0 * (c1 / 3.0) ** 1.5
    ratio = c0a / c0max
    ratio = xp.where(ratio > 1.0, xp.ones_like(ratio), ratio)
    theta = xp.acos(ratio)
    u = xp.sqrt(c1 / 3.0) * xp.cos(theta / 3.0)
    w = xp.sqrt(c1) * xp.sin(theta / 3.0)
    u2, w2 = u * u, w * w
    xi0 = _sinc(xp, w)
    x1 = xi1(w)
    cw = xp.cos(w)

    def C(re, im=None):
        return make_complex(xp, re, xp.zeros_like(re) if im is None else im, cd)

    e2 = C(xp.cos(2.0 * u), xp.sin(2.0 * u))      # e^{2iu}
    em = C(xp.cos(u), -xp.sin(u))                 # e^{-iu}
    iu = C(xp.zeros_like(u), u)                   # i u
    I = C(xp.zeros_like(u), xp.ones_like(u))      # i
    one = C(xp.ones_like(u))
    U, U2, W2 = C(u), C(u2), C(w2)
    CW, X0, X1 = C(cw), C(xi0), C(x1)
    h0 = (U2 - W2) * e2 + em * C(8.0 * u2 * cw, 2.0 * u * (3.0 * u2 + w2) * xi0)
    h1 = 2.0 * U * e2 - em * C(2.0 * u * cw, -(3.0 * u2 - w2) * xi0)
    h2 = e2 - em * C(cw, 3.0 * u * xi0)
    den = C(9.0 * u2 - w2)
    f = [h0 / den, h1 / den, h2 / den]
    # MP eqs. (60)-(65)
    r10 = (2.0 * (U + I * (U2 - W2)) * e2
           + 2.0 * em * (4.0 * U * (2.0 - iu) * CW
                         + I * (9.0 * U2 + W2 - iu * (3.0 * U2 + W2)) * X0))
    r11 = (2.0 * (one + 2.0 * iu) * e2
           + em * (-2.0 * (one - iu) * CW + I * (6.0 * U + I * (W2 - 3.0 * U2)) * X0))
    r12 = 2.0 * I * e2 + I * em * (CW - 3.0 * (one - iu) * X0)
    r20 = -2.0 * e2 + 2.0 * iu * em * (CW + (one + 4.0 * iu) * X0 + 3.0 * U2 * X1)
    r21 = -I * em * (CW + (one + 2.0 * iu) * X0 - 3.0 * U2 * X1)
    r22 = em * (X0 - 3.0 * iu * X1)
    den2 = 2.0 * den * den
    r1, r2 = (r10, r11, r12), (r20, r21, r22)
    b1 = [(2.0 * U * r1[j] + (3.0 * U2 - W2) * r2[j] - 2.0 * (15.0 * U2 + W2) * f[j]) / den2
          for j in range(3)]
    b2 = [(r1[j] - 3.0 * U * r2[j] - 24.0 * U * f[j]) / den2 for j in range(3)]
    # f_j(-c0) = (-1)^j f_j^*, b_ij(-c0) = (-1)^(i+j+1) b_ij^*
    def flip(z, sign):
        return xp.where(neg, sign * xp.conj(z), z)
    f = [flip(f[j], (-1.0) ** j) for j in range(3)]
    b1 = [flip(b1[j], (-1.0) ** j) for j in range(3)]
    b2 = [flip(b2[j], (-1.0) ** (j + 1)) for j in range(3)]
    return f, b1, b2


def su3_b_coefficients(c0, c1, cd=None):
    """``(f, b1, b2)``: lists of the three complex arrays ``f_j``, ``b1j = df_j/dc1`` and
    ``b2j = df_j/dc0`` for ``exp(iQ) = f0 + f1 Q + f2 Q^2``, ``c0 = det Q``,
    ``c1 = Tr(Q^2)/2`` (real arrays). Series below ``c1 = 0.5``, MP's closed form above."""
    xp = namespace(c0, c1)
    if cd is None:
        cd = xp.complex128 if c1.dtype == xp.float64 else xp.complex64
    c1 = xp.where(c1 > 0.0, c1, xp.zeros_like(c1))
    small = c1 < _B_SERIES_C1
    fs, b1s, b2s = _b_series(xp, c0, c1, cd)
    c1c = xp.where(small, xp.ones_like(c1), c1)
    c0c = xp.where(small, xp.zeros_like(c0), c0)
    fc, b1c, b2c = _b_closed(xp, c0c, c1c, cd)
    pick = [lambda s, c: xp.where(small, s, c)]
    f = [pick[0](fs[j], fc[j]) for j in range(3)]
    b1 = [pick[0](b1s[j], b1c[j]) for j in range(3)]
    b2 = [pick[0](b2s[j], b2c[j]) for j in range(3)]
    return f, b1, b2


def _gamma_su3(X, B):
    xp = namespace(X, B)
    Q = -1j * X
    Q2 = Q @ Q
    c1 = 0.5 * xp.real(trace(Q2))
    c0 = xp.real(_trace_product(Q2, Q)) / 3.0
    _, b1, b2 = su3_b_coefficients(c0, c1, X.dtype)
    f0, f1, f2 = su3_exp_coefficients(Q, Q2)
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
