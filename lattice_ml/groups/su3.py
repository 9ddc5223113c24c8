"""SU(3): the Cayley-Hamilton coefficients of ``exp(iQ) = f0 + f1 Q + f2 Q^2`` and their
derivatives (Morningstar & Peardon, PRD 69 (2004) 054501), in one function with one switch
between the Taylor series and the closed form (:func:`su3_ch_coefficients`)."""

from __future__ import annotations

from ..backend import complex_dtype_of, make_complex, namespace
from ._scalars import _sinc, _xi1
from .algebra import trace


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
