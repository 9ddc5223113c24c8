"""SU(3) algebra for the gauge and stout kernels, written once as plain Python and compiled for
each target by :mod:`._build` (``numba.njit`` for the CPU, ``numba.cuda.jit(device=True)`` for
CUDA; the CUDA simulator runs it as Python).

A 3x3 complex matrix is a **9-tuple** of complex scalars in row-major order
``(m00, m01, m02, m10, ..., m22)``: tuples live in registers on both targets (no local arrays,
no allocation), and the arithmetic keeps the dtype of the loaded links (complex64 or
complex128) as long as the scalar factors are of the matching real dtype. The exponential and
its derivative coefficients are evaluated in float64 / complex128 whatever the storage dtype.

Link fields are passed to the kernels as ``U[batch, D, V, 9]`` (the library's
``[batch, D, *sites, 3, 3]`` reshaped without a copy; site index ``s`` in C order).

Conventions as in :mod:`lattice_ml.groups`: ``TA(M) = (M - M^dag)/2 - Tr(M - M^dag)/6``; the
exponential of an algebra element ``X`` uses Morningstar & Peardon, PRD 69 (2004) 054501, with
``Q = -i X`` hermitian, ``exp(iQ) = f0 + f1 Q + f2 Q^2``, ``c0 = det Q = Tr(Q^3)/3``,
``c1 = Tr(Q^2)/2``; ``b1j = df_j/dc1`` and ``b2j = df_j/dc0`` (their eqs. (57)-(65)).
"""

from __future__ import annotations

import math

from ._build import device

# ------------------------------------------------------------------------------------------
# loads, stores, linear algebra on 9-tuples
# ------------------------------------------------------------------------------------------


@device
def load(U, b, mu, s):
    """``U[b, mu, s]`` as a 9-tuple (``U`` of layout ``[batch, D, V, 9]``)."""
    return (U[b, mu, s, 0], U[b, mu, s, 1], U[b, mu, s, 2],
            U[b, mu, s, 3], U[b, mu, s, 4], U[b, mu, s, 5],
            U[b, mu, s, 6], U[b, mu, s, 7], U[b, mu, s, 8])


@device
def store(O, b, mu, s, m):
    """``O[b, mu, s] = m``."""
    for k in range(9):
        O[b, mu, s, k] = m[k]


@device
def add_to(O, b, mu, s, m):
    """``O[b, mu, s] += m``."""
    for k in range(9):
        O[b, mu, s, k] = O[b, mu, s, k] + m[k]


@device
def zero_like(z):
    """The 9-tuple of zeros of the dtype of the scalar ``z``."""
    o = z - z
    return (o, o, o, o, o, o, o, o, o)


@device
def add(a, b):
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3], a[4] + b[4], a[5] + b[5],
            a[6] + b[6], a[7] + b[7], a[8] + b[8])


@device
def sub(a, b):
    return (a[0] - b[0], a[1] - b[1], a[2] - b[2], a[3] - b[3], a[4] - b[4], a[5] - b[5],
            a[6] - b[6], a[7] - b[7], a[8] - b[8])


@device
def scale(c, a):
    """``c a`` for a scalar c."""
    return (c * a[0], c * a[1], c * a[2], c * a[3], c * a[4], c * a[5], c * a[6], c * a[7],
            c * a[8])


@device
def axpy(c, a, b):
    """``c a + b``."""
    return (c * a[0] + b[0], c * a[1] + b[1], c * a[2] + b[2], c * a[3] + b[3],
            c * a[4] + b[4], c * a[5] + b[5], c * a[6] + b[6], c * a[7] + b[7],
            c * a[8] + b[8])


@device
def dag(a):
    """``a^dag``."""
    return (a[0].conjugate(), a[3].conjugate(), a[6].conjugate(),
            a[1].conjugate(), a[4].conjugate(), a[7].conjugate(),
            a[2].conjugate(), a[5].conjugate(), a[8].conjugate())


@device
def mul(a, b):
    """``a b`` (27 complex multiply-adds: 198 real flops counting 6 per product, 2 per sum)."""
    return (a[0] * b[0] + a[1] * b[3] + a[2] * b[6],
            a[0] * b[1] + a[1] * b[4] + a[2] * b[7],
            a[0] * b[2] + a[1] * b[5] + a[2] * b[8],
            a[3] * b[0] + a[4] * b[3] + a[5] * b[6],
            a[3] * b[1] + a[4] * b[4] + a[5] * b[7],
            a[3] * b[2] + a[4] * b[5] + a[5] * b[8],
            a[6] * b[0] + a[7] * b[3] + a[8] * b[6],
            a[6] * b[1] + a[7] * b[4] + a[8] * b[7],
            a[6] * b[2] + a[7] * b[5] + a[8] * b[8])


@device
def mul_nd(a, b):
    """``a b^dag``."""
    bc = (b[0].conjugate(), b[1].conjugate(), b[2].conjugate(), b[3].conjugate(),
          b[4].conjugate(), b[5].conjugate(), b[6].conjugate(), b[7].conjugate(),
          b[8].conjugate())
    return (a[0] * bc[0] + a[1] * bc[1] + a[2] * bc[2],
            a[0] * bc[3] + a[1] * bc[4] + a[2] * bc[5],
            a[0] * bc[6] + a[1] * bc[7] + a[2] * bc[8],
            a[3] * bc[0] + a[4] * bc[1] + a[5] * bc[2],
            a[3] * bc[3] + a[4] * bc[4] + a[5] * bc[5],
            a[3] * bc[6] + a[4] * bc[7] + a[5] * bc[8],
            a[6] * bc[0] + a[7] * bc[1] + a[8] * bc[2],
            a[6] * bc[3] + a[7] * bc[4] + a[8] * bc[5],
            a[6] * bc[6] + a[7] * bc[7] + a[8] * bc[8])


@device
def mul_dn(a, b):
    """``a^dag b``."""
    return mul(dag(a), b)


@device
def mul_dd(a, b):
    """``a^dag b^dag = (b a)^dag``."""
    return dag(mul(b, a))


@device
def trace(a):
    return a[0] + a[4] + a[8]


@device
def trace_mul(a, b):
    """``Tr(a b)`` without the product (9 complex multiply-adds)."""
    return (a[0] * b[0] + a[1] * b[3] + a[2] * b[6]
            + a[3] * b[1] + a[4] * b[4] + a[5] * b[7]
            + a[6] * b[2] + a[7] * b[5] + a[8] * b[8])


@device
def re_trace_mul(a, b):
    """``Re Tr(a b)``."""
    return trace_mul(a, b).real


@device
def ta(a):
    """Traceless anti-hermitian part ``(a - a^dag)/2 - Tr(a - a^dag)/6``."""
    h = 0.5
    d0 = h * (a[0] - a[0].conjugate())
    d1 = h * (a[4] - a[4].conjugate())
    d2 = h * (a[8] - a[8].conjugate())
    t = (d0 + d1 + d2) / 3.0
    o01 = h * (a[1] - a[3].conjugate())
    o02 = h * (a[2] - a[6].conjugate())
    o12 = h * (a[5] - a[7].conjugate())
    return (d0 - t, o01, o02,
            -o01.conjugate(), d1 - t, o12,
            -o02.conjugate(), -o12.conjugate(), d2 - t)


@device
def times_minus_i(a):
    """``-i a`` (complex128)."""
    return scale(-1j, a)


@device
def add_diagonal(a, c):
    """``a + c 1``."""
    return (a[0] + c, a[1], a[2], a[3], a[4] + c, a[5], a[6], a[7], a[8] + c)


# ------------------------------------------------------------------------------------------
# exp of an su(3) element and the derivative coefficients (Morningstar-Peardon)
# ------------------------------------------------------------------------------------------
# one switch between the series and the closed form, and one series length, for f and b alike:
# those of lattice_ml.groups.su3_ch_coefficients (where they are measured; tests/test_groups.py
# checks these functions against it)
SERIES_C1 = 3.0
SERIES_TERMS = 24
# xi1(r) = sum_{k=1..12} (-1)^k 2k r^(2k-2) / (2k+1)!  (coefficient of r^(2k-2) at index k-1)
XI1_SERIES = tuple((-1.0) ** k * 2.0 * k / math.factorial(2 * k + 1) for k in range(1, 13))


@device
def sinc(r):
    """sin(r)/r, Taylor series below |r| = 0.05."""
    if abs(r) < 0.05:
        r2 = r * r
        return 1.0 - r2 / 6.0 * (1.0 - r2 / 20.0 * (1.0 - r2 / 42.0 * (1.0 - r2 / 72.0)))
    return math.sin(r) / r


@device
def xi1(r):
    """``(cos r - sin r / r) / r^2``, a 12-term Taylor series below |r| = 1."""
    if abs(r) < 1.0:
        r2 = r * r
        s = 0.0
        for k in range(11, -1, -1):          # Horner from the highest term
            s = s * r2 + XI1_SERIES[k]
        return s
    return (math.cos(r) - math.sin(r) / r) / (r * r)


@device
def hermitian_invariants(Q, Q2):
    """``(c0, c1) = (Tr(Q^3)/3, Tr(Q^2)/2)`` (float64) of a hermitian traceless Q."""
    c1 = 0.5 * float(trace(Q2).real)
    c0 = float(trace_mul(Q2, Q).real) / 3.0
    if c1 < 0.0:
        c1 = 0.0
    return c0, c1


@device
def mp_uw(c0a, c1):
    """Morningstar-Peardon ``u, w`` at ``|c0|`` (c1 > 0)."""
    c0max = 2.0 * (c1 / 3.0) ** 1.5
    ratio = c0a / c0max
    if ratio > 1.0:
        ratio = 1.0
    theta = math.acos(ratio)
    u = math.sqrt(c1 / 3.0) * math.cos(theta / 3.0)
    w = math.sqrt(c1) * math.sin(theta / 3.0)
    return u, w


@device
def exp_coefficients(c0, c1):
    """``f0, f1, f2`` (complex128) with ``exp(iQ) = f0 + f1 Q + f2 Q^2``: the Cayley-Hamilton
    reduced Taylor series below ``c1 = SERIES_C1``, Morningstar-Peardon's closed form above (at
    |c0|, mapped with ``f_j(-c0) = (-1)^j f_j(c0)^*``)."""
    if c1 < SERIES_C1:
        a, b, d = 1.0, 0.0, 0.0
        r0, r1, r2 = 1.0, 0.0, 0.0
        i0, i1, i2 = 0.0, 0.0, 0.0
        fact = 1.0
        for n in range(1, SERIES_TERMS + 1):
            a, b, d = c0 * d, a + c1 * d, b
            fact *= n
            m = n % 4
            coeff = (1.0 if (m == 0 or m == 1) else -1.0) / fact
            if n % 2 == 0:
                r0 += coeff * a
                r1 += coeff * b
                r2 += coeff * d
            else:
                i0 += coeff * a
                i1 += coeff * b
                i2 += coeff * d
        return complex(r0, i0), complex(r1, i1), complex(r2, i2)
    u, w = mp_uw(abs(c0), c1)
    u2 = u * u
    w2 = w * w
    xi0 = sinc(abs(w))
    cw = math.cos(w)
    e2 = complex(math.cos(2.0 * u), math.sin(2.0 * u))
    em = complex(math.cos(u), -math.sin(u))
    h0 = (u2 - w2) * e2 + em * complex(8.0 * u2 * cw, 2.0 * u * (3.0 * u2 + w2) * xi0)
    h1 = 2.0 * u * e2 - em * complex(2.0 * u * cw, -(3.0 * u2 - w2) * xi0)
    h2 = e2 - em * complex(cw, 3.0 * u * xi0)
    den = 9.0 * u2 - w2
    f0, f1, f2 = h0 / den, h1 / den, h2 / den
    if c0 < 0.0:
        return f0.conjugate(), -f1.conjugate(), f2.conjugate()
    return f0, f1, f2


@device
def b_series(c0, c1):
    """``b10, b11, b12, b20, b21, b22`` from the Taylor series of exp(iQ) with ``Q^3 = c1 Q + c0``
    (``Q^n = a_n + b_n Q + d_n Q^2``), differentiated in c0 and c1 term by term."""
    a, b, d = 1.0, 0.0, 0.0
    a0, b0, d0 = 0.0, 0.0, 0.0          # d/dc0
    a1, b1, d1 = 0.0, 0.0, 0.0          # d/dc1
    g1r0, g1r1, g1r2, g1i0, g1i1, g1i2 = 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    g0r0, g0r1, g0r2, g0i0, g0i1, g0i2 = 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    fact = 1.0
    for n in range(1, SERIES_TERMS + 1):
        na, nb, nd = c0 * d, a + c1 * d, b
        na0, nb0, nd0 = d + c0 * d0, a0 + c1 * d0, b0
        na1, nb1, nd1 = c0 * d1, a1 + d + c1 * d1, b1
        a, b, d = na, nb, nd
        a0, b0, d0 = na0, nb0, nd0
        a1, b1, d1 = na1, nb1, nd1
        fact *= n
        m = n % 4
        coeff = (1.0 if (m == 0 or m == 1) else -1.0) / fact
        if n % 2 == 0:
            g0r0 += coeff * a0
            g0r1 += coeff * b0
            g0r2 += coeff * d0
            g1r0 += coeff * a1
            g1r1 += coeff * b1
            g1r2 += coeff * d1
        else:
            g0i0 += coeff * a0
            g0i1 += coeff * b0
            g0i2 += coeff * d0
            g1i0 += coeff * a1
            g1i1 += coeff * b1
            g1i2 += coeff * d1
    return (complex(g1r0, g1i0), complex(g1r1, g1i1), complex(g1r2, g1i2),
            complex(g0r0, g0i0), complex(g0r1, g0i1), complex(g0r2, g0i2))


@device
def b_closed(c0, c1):
    """Morningstar-Peardon closed form of ``b1j, b2j`` (their eqs. (60)-(65)), at |c0| and mapped
    with ``b_ij(-c0) = (-1)^(i+j+1) b_ij(c0)^*``; for c1 away from 0."""
    u, w = mp_uw(abs(c0), c1)
    u2 = u * u
    w2 = w * w
    xi0 = sinc(w)
    x1 = xi1(w)
    cw = math.cos(w)
    e2 = complex(math.cos(2.0 * u), math.sin(2.0 * u))
    em = complex(math.cos(u), -math.sin(u))
    iu = complex(0.0, u)
    I = complex(0.0, 1.0)
    h0 = (u2 - w2) * e2 + em * complex(8.0 * u2 * cw, 2.0 * u * (3.0 * u2 + w2) * xi0)
    h1 = 2.0 * u * e2 - em * complex(2.0 * u * cw, -(3.0 * u2 - w2) * xi0)
    h2 = e2 - em * complex(cw, 3.0 * u * xi0)
    den = 9.0 * u2 - w2
    f0, f1, f2 = h0 / den, h1 / den, h2 / den
    r10 = (2.0 * (u + I * (u2 - w2)) * e2
           + 2.0 * em * (4.0 * u * (2.0 - iu) * cw
                         + I * (9.0 * u2 + w2 - iu * (3.0 * u2 + w2)) * xi0))
    r11 = (2.0 * (1.0 + 2.0 * iu) * e2
           + em * (-2.0 * (1.0 - iu) * cw + I * (6.0 * u + I * (w2 - 3.0 * u2)) * xi0))
    r12 = 2.0 * I * e2 + I * em * (cw - 3.0 * (1.0 - iu) * xi0)
    r20 = -2.0 * e2 + 2.0 * iu * em * (cw + (1.0 + 4.0 * iu) * xi0 + 3.0 * u2 * x1)
    r21 = -I * em * (cw + (1.0 + 2.0 * iu) * xi0 - 3.0 * u2 * x1)
    r22 = em * (xi0 - 3.0 * iu * x1)
    den2 = 2.0 * den * den
    k1 = 3.0 * u2 - w2
    k2 = 2.0 * (15.0 * u2 + w2)
    b10 = (2.0 * u * r10 + k1 * r20 - k2 * f0) / den2
    b11 = (2.0 * u * r11 + k1 * r21 - k2 * f1) / den2
    b12 = (2.0 * u * r12 + k1 * r22 - k2 * f2) / den2
    b20 = (r10 - 3.0 * u * r20 - 24.0 * u * f0) / den2
    b21 = (r11 - 3.0 * u * r21 - 24.0 * u * f1) / den2
    b22 = (r12 - 3.0 * u * r22 - 24.0 * u * f2) / den2
    if c0 < 0.0:
        return (b10.conjugate(), -b11.conjugate(), b12.conjugate(),
                -b20.conjugate(), b21.conjugate(), -b22.conjugate())
    return b10, b11, b12, b20, b21, b22


@device
def b_coefficients(c0, c1):
    """``b1j = df_j/dc1``, ``b2j = df_j/dc0``: series below ``c1 = SERIES_C1``, closed form
    above."""
    if c1 < SERIES_C1:
        return b_series(c0, c1)
    return b_closed(c0, c1)


@device
def exp_su3(X):
    """``(E, Q, Q2, c0, c1)``: ``E = exp(X)`` of the algebra element X (complex128 9-tuple),
    with ``Q = -i X``, ``Q2 = Q^2`` and the invariants of Q, for reuse by the derivative."""
    Q = times_minus_i(X)
    Q2 = mul(Q, Q)
    c0, c1 = hermitian_invariants(Q, Q2)
    f0, f1, f2 = exp_coefficients(c0, c1)
    E = add_diagonal(add(scale(f1, Q), scale(f2, Q2)), f0)
    return E, Q, Q2, c0, c1


@device
def exp_pullback(Q, Q2, c0, c1, B):
    """``Lambda = TA(L(X, B))`` for ``X = iQ`` (see :mod:`lattice_ml.smearing.expderiv`):
    ``Gamma = -i [Tr(B1 B) Q + Tr(B2 B) Q^2 + f1 B + f2 (Q B + B Q)]`` with
    ``B_i = b_i0 + b_i1 Q + b_i2 Q^2``."""
    f0, f1, f2 = exp_coefficients(c0, c1)
    b10, b11, b12, b20, b21, b22 = b_coefficients(c0, c1)
    QB = mul(Q, B)
    BQ = mul(B, Q)
    t0 = trace(B)
    t1 = trace(QB)
    t2 = trace_mul(Q2, B)
    s1 = b10 * t0 + b11 * t1 + b12 * t2
    s2 = b20 * t0 + b21 * t1 + b22 * t2
    G = add(add(scale(s1, Q), scale(s2, Q2)), add(scale(f1, B), scale(f2, add(QB, BQ))))
    return ta(times_minus_i(G))
