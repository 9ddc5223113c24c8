"""The exponential map of U(1) and SU(N): closed forms for N = 1, 2, 3, eigendecomposition
and scaled Taylor series for any N."""

from __future__ import annotations

import math

from ..backend import complex_dtype_of, device_of, make_complex, namespace
from ._scalars import _sinc
from .algebra import (_add_diagonal, _from_entries, _is_complex, _matrix_n, dagger,
                      identity_like, project_algebra)
from .su3 import su3_exp_coefficients


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
