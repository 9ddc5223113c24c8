"""SU(2) as unit quaternions, for the heatbath and over-relaxation (Creutz, Kennedy-Pendleton,
Cabibbo-Marinari) and anything else that works on SU(2) (sub)matrices.

A quaternion ``q = q0 + i (q1 sigma_1 + q2 sigma_2 + q3 sigma_3)`` is a tuple of four real arrays
(any common shape); its matrix is

    [[q0 + i q3,  q2 + i q1],
     [-q2 + i q1, q0 - i q3]]

(the generator convention of :mod:`lattice_ml.groups`: ``sigma_a`` are the Pauli matrices), an
SU(2) element when ``q0^2 + |q|^2 = 1``. The product of matrices is :func:`qmul`, the hermitian
conjugate :func:`qconj`.
"""

from __future__ import annotations

from ..backend import make_complex

__all__ = ["qmul", "qconj", "qentries", "qmatrix", "qproject", "qnormalise"]


def qmul(a, b):
    """The quaternion of the matrix product ``a b``."""
    a0, a1, a2, a3 = a
    b0, b1, b2, b3 = b
    return (a0 * b0 - a1 * b1 - a2 * b2 - a3 * b3,
            a0 * b1 + b0 * a1 - (a2 * b3 - a3 * b2),
            a0 * b2 + b0 * a2 - (a3 * b1 - a1 * b3),
            a0 * b3 + b0 * a3 - (a1 * b2 - a2 * b1))


def qconj(a):
    """The quaternion of ``a^dagger`` (the inverse for a unit quaternion)."""
    return (a[0], -a[1], -a[2], -a[3])


def qentries(xp, q, cdtype):
    """The four complex entries (00, 01, 10, 11) of the matrix of quaternion ``q``."""
    q0, q1, q2, q3 = q
    return (make_complex(xp, q0, q3, cdtype), make_complex(xp, q2, q1, cdtype),
            make_complex(xp, -q2, q1, cdtype), make_complex(xp, q0, -q3, cdtype))


def qmatrix(xp, q, cdtype):
    """The ``[..., 2, 2]`` matrix of quaternion ``q``."""
    e00, e01, e10, e11 = qentries(xp, q, cdtype)
    row0 = xp.stack([e00, e01], axis=-1)
    row1 = xp.stack([e10, e11], axis=-1)
    return xp.stack([row0, row1], axis=-2)


def qproject(xp, w00, w01, w10, w11):
    """Quaternion part ``(b0, b1, b2, b3)`` of the 2x2 block ``w``: ``Re Tr[r w] = Re Tr[r b]``
    for every SU(2) ``r`` (``b0 = Re(w00 + w11)/2``, ``b1 = Im(w01 + w10)/2``,
    ``b2 = Re(w01 - w10)/2``, ``b3 = Im(w00 - w11)/2``)."""
    return (0.5 * (xp.real(w00) + xp.real(w11)), 0.5 * (xp.imag(w01) + xp.imag(w10)),
            0.5 * (xp.real(w01) - xp.real(w10)), 0.5 * (xp.imag(w00) - xp.imag(w11)))


def qnormalise(xp, b):
    """``(k, b_hat)``: the norm and the unit quaternion (the identity where ``k = 0``)."""
    k = xp.sqrt(b[0] * b[0] + b[1] * b[1] + b[2] * b[2] + b[3] * b[3])
    pos = k > 0.0
    ks = xp.where(pos, k, xp.ones_like(k))
    one, zero = xp.ones_like(k), xp.zeros_like(k)
    hat = (xp.where(pos, b[0] / ks, one),) + tuple(xp.where(pos, c / ks, zero) for c in b[1:])
    return k, hat
