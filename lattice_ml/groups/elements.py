"""Group elements: reunitarisation, Haar-random and near-identity elements, gauge
transformations and the validation of link fields."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..backend import complex_dtype_of, namespace, to_numpy
from ..lattice import shift
from .algebra import (_add_diagonal, _check_N, _is_complex, _matrix_n, _phase_root, dagger, det,
                      random_algebra)
from .exp import expm_algebra


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


def _deviations(U, xp) -> tuple[float, float, int]:
    """``(max |U^dagger U - 1|, max |det U - 1|, number of non-finite entries)`` of ``[..., N,
    N]`` matrices as host numbers, read back in one transfer (one synchronisation on a GPU; the
    determinant part is 0 for N = 1, where the determinant is the unitarity)."""
    shape = tuple(U.shape)
    with np.errstate(invalid="ignore", over="ignore"):     # NaN input: reported by ``bad``
        err = xp.abs(_add_diagonal(dagger(U) @ U, -xp.ones_like(U[..., 0, 0])))
        parts = [xp.max(err)]
        parts.append(xp.max(xp.abs(det(U) - 1.0)) if shape[-1] >= 2
                     else xp.zeros_like(parts[0]))
    bad = xp.sum(xp.astype(~xp.isfinite(U), xp.int64))
    host = to_numpy(xp.stack(parts + [xp.astype(bad, parts[0].dtype)]))
    return float(host[0]), float(host[1]), int(host[2])


def unitarity_deviation(U) -> float:
    """Largest distance of ``[..., N, N]`` matrices from the group, as one host float.

    ``max |U^dagger U - 1|`` over all entries, and for N >= 2 also ``max |det U - 1|`` (the larger
    of the two is returned). NaN where ``U`` holds NaN or inf. This is the quantity
    :func:`check_links` compares with its tolerance and :func:`reunitarize` sets back to
    round-off.
    """
    dev, ddev, bad = _deviations(U, namespace(U))
    return float("nan") if bad else max(dev, ddev)


def check_links(U, N: int | None = None, tol: float | None = None, name: str = "links") -> None:
    """Raise ``ValueError`` unless ``U`` is a valid U(1)/SU(N) link field.

    Checks, in order: layout ``[batch, D, *sites, N, N]`` with ``D = U.shape[1]`` in 2..4 and
    ``U.ndim == D + 4``; square matrix axes, of size ``N`` if given; complex dtype; no NaN/inf;
    unitarity ``max |U^dagger U - 1| <= tol``; for N >= 2 ``max |det U - 1| <= tol``.
    ``tol`` defaults to 1e-10 for complex128 and 1e-5 for complex64. Returns None. The maxima
    are read back to the host together (one transfer).
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
    dev, ddev, bad = _deviations(U, xp)  # the parts of unitarity_deviation, one host read
    if bad:
        raise ValueError(f"{name} contain {bad} non-finite (NaN or inf) entries")
    if tol is None:
        tol = _default_tol(xp, U.dtype)
    if not dev <= tol:
        raise ValueError(f"{name} are not unitary: max |U^dagger U - 1| = {dev:.3g} "
                         f"(tolerance {tol:.3g}); reunitarize them first")
    if not ddev <= tol:
        raise ValueError(f"{name} are not in SU({n}): max |det U - 1| = {ddev:.3g} "
                         f"(tolerance {tol:.3g})")
    return None
