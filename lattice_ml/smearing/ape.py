"""APE smearing with projection onto the gauge group, and the maximal-trace SU(N) projection.

Links ``U[batch, D, *sites, N, N]`` (N = 1 for U(1)), time = direction 0.

APE smearing (Albanese et al., Phys. Lett. B192 (1987) 163)
-----------------------------------------------------------
One step replaces every link, simultaneously (all new links are computed from the old field), by

    U'_mu(x) = Proj[ (1 - alpha) U_mu(x) + alpha / n_st * sum_{nu != mu} (S^+_{mu nu}(x) + S^-_{mu nu}(x)) ],

with the staples *parallel to* ``U_mu(x)`` (paths from x to x + mu_hat)

    S^+_{mu nu}(x) = U_nu(x) U_mu(x + nu_hat) U_nu(x + mu_hat)^dag,
    S^-_{mu nu}(x) = U_nu(x - nu_hat)^dag U_mu(x - nu_hat) U_nu(x - nu_hat + mu_hat),

and ``n_st = 2(D - 1)`` the number of staples, so that ``alpha = 1`` gives the average of the
staples and ``alpha = 0`` the identity map. In terms of the Wilson staple sum of
:mod:`lattice_ml.gauge.action` (``V_mu`` with ``Re Tr U_mu V_mu`` = the plaquettes through the
link), ``sum_nu (S^+ + S^-) = V_mu^dag``. With ``spatial_only=True`` only the spatial links
(mu >= 1) are smeared, with the spatial staples (nu >= 1, nu != mu), ``n_st = 2(D - 2)``; time
links are returned unchanged (the usual smearing for Wilson loops and static potentials; needs
D >= 3). Other normalisations: since the projection is invariant under ``M -> c M`` (c > 0),
the common form ``Proj[U + eps sum staples]`` is this one with
``eps = alpha / ((1 - alpha) n_st)``; e.g. ``alpha = 0.5`` in 4D is ``eps = 1/6``.

Projections
-----------
* ``"unitary"`` (default): the group element W maximising ``Re Tr(W^dag M)``. For U(1) this is
  ``M / |M|``. For SU(N) (:func:`project_max_trace`): with ``M = X Sigma Y^dag`` (from
  ``xp.linalg.eigh`` of ``M^dag M``; ``X = M Y Sigma^-1``), the maximiser is
  ``W = X diag(e^{i phi_k}) Y^dag`` with ``sum_k phi_k = -arg det M (mod 2 pi)`` and the
  stationarity condition ``sigma_k sin phi_k = lambda`` for all k. At the maximum at most one
  angle is obtuse and then it belongs to the smallest singular value; the total phase is
  monotone in lambda on each branch, so lambda is found by bisection (60 halvings, elementwise
  array ops). This analytic solution is exact in exact arithmetic; in floating point it is as
  accurate as ``eigh`` of ``M^dag M``, i.e. it loses accuracy as the condition number of M
  grows. It is therefore re-unitarised (Gram-Schmidt) and polished with Cabibbo-Marinari sweeps,
  each maximising ``Re Tr(W^dag M)`` exactly over every SU(2) subgroup in turn (closed form),
  until the stationarity residual ``max |TA(W^dag M)| / max |M|`` is below ``tol`` (default 1e-12
  for complex128, 1e-5 for complex64) or ``max_sweeps`` sweeps are done. Why this way: SU(2)
  subgroup sweeps alone converge only linearly, and very slowly for M whose maximum has an
  obtuse angle (measured: after 55 sweeps from the polar start, residuals up to 1e-3 on random
  complex 3x3 matrices), while the analytic start leaves residuals <= 1e-10 that two to ten
  sweeps remove; "polar factor then remove the determinant phase" is the maximiser over U(N),
  not over SU(N). The projection is gauge covariant, ``Proj(g M h^dag) = g Proj(M) h^dag``.
* ``"gram_schmidt"``: :func:`lattice_ml.groups.reunitarize` (orthonormalise the rows, remove the
  determinant phase). Cheaper, but not the maximiser, and **not exactly gauge covariant** for
  N >= 2: left multiplication mixes the rows before they are orthonormalised (tested: the
  deviation is O(1e-2) on rough fields). For U(1) both projections are ``M / |M|``.
"""

from __future__ import annotations

import math

from ..backend import device_of, namespace, real_dtype_of
from ..groups import check_links, dagger, det, reunitarize
from ..gauge.paths import transport

__all__ = ["ape_smear", "ape_step", "ape_staples", "project_max_trace", "PROJECTIONS"]

PROJECTIONS = ("unitary", "gram_schmidt")
_BISECTIONS = 60


# ------------------------------------------------------------------------------------------
# projection
# ------------------------------------------------------------------------------------------
def _default_tol(xp, dtype) -> float:
    return 1e-5 if dtype == xp.complex64 else 1e-12


def _analytic_start(M):
    """The maximiser of Re Tr(W^dag M) over SU(N) from the singular values (see module doc)."""
    xp = namespace(M)
    N = M.shape[-1]
    rdt = real_dtype_of(xp, M.dtype)
    w, Y = xp.linalg.eigh(dagger(M) @ M)                     # ascending sigma^2
    s = xp.sqrt(xp.clip(w, 0.0, None))
    smax = s[..., N - 1:N]
    tiny = 1e-13 if rdt == xp.float64 else 1e-6     # floor for (near-)singular M
    s = xp.maximum(s, tiny * smax)
    X = (M @ Y) / xp.astype(s, M.dtype)[..., None, :]
    d = det(M)
    c = -xp.atan2(xp.imag(d), xp.real(d))                    # target total phase in [-pi, pi]
    s1 = s[..., 0]
    ratio = xp.clip(s1[..., None] / s, -1.0, 1.0)
    G = xp.sum(xp.asin(ratio), axis=-1)                      # largest phase with acute angles
    obtuse = xp.abs(c) > G
    ca = xp.abs(c)
    lo = xp.zeros_like(s1)
    hi = s1
    for _ in range(_BISECTIONS):
        mid = 0.5 * (lo + hi)
        a = xp.asin(xp.clip(mid[..., None] / s, -1.0, 1.0))
        S = xp.sum(a, axis=-1)
        S = xp.where(obtuse, S - 2.0 * a[..., 0] + math.pi, S)
        # acute branch: S increases with lambda; obtuse branch: decreasing where the root is
        right = xp.where(obtuse, S > ca, S < ca)
        lo = xp.where(right, mid, lo)
        hi = xp.where(right, hi, mid)
    lam = 0.5 * (lo + hi)
    a = xp.asin(xp.clip(lam[..., None] / s, -1.0, 1.0))
    a0 = xp.where(obtuse, math.pi - a[..., 0], a[..., 0])
    a = xp.concat([a0[..., None], a[..., 1:]], axis=-1)
    one = xp.ones_like(c)
    phi = xp.where(c >= 0, one, -one)[..., None] * a
    ph = xp.astype(xp.cos(phi), M.dtype) + 1j * xp.astype(xp.sin(phi), M.dtype)
    return (X * ph[..., None, :]) @ dagger(Y)


def _residual(W, M, scale):
    """max |TA(W^dag M)| / max |M| per matrix, ``[...]`` (real)."""
    xp = namespace(M)
    N = M.shape[-1]
    K = dagger(W) @ M
    A = 0.5 * (K - dagger(K))
    tr = A[..., 0, 0]
    for i in range(1, N):
        tr = tr + A[..., i, i]
    eye = xp.eye(N, dtype=M.dtype, device=device_of(M))
    A = A - (tr / N)[..., None, None] * eye
    return xp.max(xp.reshape(xp.abs(A), tuple(A.shape[:-2]) + (N * N,)), axis=-1) / scale


def _cm_sweep(W, M):
    """One Cabibbo-Marinari sweep: W -> W R over all SU(2) subgroups, each R maximising
    Re Tr((W R)^dag M) exactly. Works on lists of columns of W and rows of K = W^dag M."""
    xp = namespace(M)
    N = M.shape[-1]
    K = dagger(W) @ M
    cols = [W[..., :, i] for i in range(N)]
    rows = [K[..., i, :] for i in range(N)]
    for i in range(N):
        for j in range(i + 1, N):
            k00, k01 = rows[i][..., i], rows[i][..., j]
            k10, k11 = rows[j][..., i], rows[j][..., j]
            q00 = 0.5 * (k00 + xp.conj(k11))
            q01 = 0.5 * (k01 - xp.conj(k10))
            n = xp.sqrt(xp.real(q00) ** 2 + xp.imag(q00) ** 2 + xp.real(q01) ** 2
                        + xp.imag(q01) ** 2)
            ok = n > 0
            nn = xp.astype(xp.where(ok, n, xp.ones_like(n)), M.dtype)
            a = xp.where(ok, q00 / nn, xp.ones_like(q00))
            b = xp.where(ok, q01 / nn, xp.zeros_like(q01))
            # R = [[a, b], [-conj(b), conj(a)]] in rows/cols (i, j)
            ci, cj = cols[i], cols[j]
            cols[i] = ci * a[..., None] - cj * xp.conj(b)[..., None]
            cols[j] = ci * b[..., None] + cj * xp.conj(a)[..., None]
            ri, rj = rows[i], rows[j]
            rows[i] = ri * xp.conj(a)[..., None] - rj * b[..., None]
            rows[j] = ri * xp.conj(b)[..., None] + rj * a[..., None]
    return xp.stack(cols, axis=-1)


def project_max_trace(M, tol: float | None = None, max_sweeps: int = 25,
                      return_info: bool = False):
    """The element W of SU(N) (U(1) for N = 1) maximising ``Re Tr(W^dag M)``, ``[..., N, N]``.

    Analytic solution from ``eigh(M^dag M)``, re-unitarised and polished by Cabibbo-Marinari
    sweeps until ``max |TA(W^dag M)| / max |M| <= tol`` everywhere (see the module docstring).
    ``M`` must be non-singular for the maximiser to be unique (for singular M one maximiser is
    returned). With ``return_info=True`` returns ``(W, {"sweeps": n, "residual": r})`` with the
    largest residual ``r`` (a float). Every sweep costs one host synchronisation (the residual).
    """
    xp = namespace(M)
    N = M.shape[-1]
    if M.ndim < 2 or M.shape[-2] != N:
        raise ValueError(f"expected square matrices [..., N, N], got shape {tuple(M.shape)}")
    if not isinstance(max_sweeps, int) or max_sweeps < 0:
        raise ValueError(f"max_sweeps must be a non-negative integer, got {max_sweeps!r}")
    if M.dtype not in (xp.complex64, xp.complex128):
        raise ValueError(f"expected complex matrices, got dtype {M.dtype}")
    if N == 1:
        W = M / xp.astype(xp.abs(M), M.dtype)
        return (W, {"sweeps": 0, "residual": 0.0}) if return_info else W
    if tol is None:
        tol = _default_tol(xp, M.dtype)
    scale = xp.max(xp.reshape(xp.abs(M), tuple(M.shape[:-2]) + (N * N,)), axis=-1)
    W = reunitarize(_analytic_start(M))
    sweeps = 0
    res = float(xp.max(_residual(W, M, scale)))
    while res > tol and sweeps < max_sweeps:
        W = _cm_sweep(W, M)
        sweeps += 1
        res = float(xp.max(_residual(W, M, scale)))
    if sweeps:
        W = reunitarize(W)   # remove round-off drift of the products (idempotent on SU(N))
    return (W, {"sweeps": sweeps, "residual": res}) if return_info else W


# ------------------------------------------------------------------------------------------
# smearing
# ------------------------------------------------------------------------------------------
def ape_staples(U, mu: int, directions=None):
    """Sum of the staples parallel to ``U_mu(x)`` in the planes (mu, nu), nu in ``directions``
    (default: every nu != mu): ``sum_nu [S^+_{mu nu}(x) + S^-_{mu nu}(x)]``, ``[batch, *sites, N, N]``.
    """
    D = U.shape[1]
    if directions is None:
        directions = [nu for nu in range(D) if nu != mu]
    total = None
    for nu in directions:
        if nu == mu:
            continue
        up = transport(U, ((nu, 1), (mu, 1), (nu, -1)))
        down = transport(U, ((nu, -1), (mu, 1), (nu, 1)))
        s = up + down
        total = s if total is None else total + s
    return total


def _check_layout(U):
    shape = tuple(getattr(U, "shape", ()))
    if len(shape) < 6 or not 2 <= shape[1] <= 4 or len(shape) != shape[1] + 4 \
            or shape[-1] != shape[-2]:
        raise ValueError(f"links must have layout [batch, D, *sites, N, N] with D = 2, 3 or 4 "
                         f"site axes (axis 1 = D); got shape {shape}")


def _check_alpha(alpha) -> float:
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}") from None
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    return a


def _project(M, projection, tol, max_sweeps):
    if projection == "unitary":
        return project_max_trace(M, tol=tol, max_sweeps=max_sweeps)
    return reunitarize(M)


def ape_step(U, alpha: float, spatial_only: bool = False, projection: str = "unitary",
             tol: float | None = None, max_sweeps: int = 25):
    """One APE step (no input checks beyond :func:`ape_smear`'s; see the module docstring)."""
    xp = namespace(U)
    D = U.shape[1]
    mus = range(1, D) if spatial_only else range(D)
    n_st = 2 * (D - 2) if spatial_only else 2 * (D - 1)
    out = []
    for mu in range(D):
        if mu not in mus:
            out.append(U[:, mu, ...])
            continue
        dirs = [nu for nu in range(1 if spatial_only else 0, D) if nu != mu]
        M = (1.0 - alpha) * U[:, mu, ...] + (alpha / n_st) * ape_staples(U, mu, dirs)
        out.append(_project(M, projection, tol, max_sweeps))
    return xp.stack(out, axis=1)


def ape_smear(U, alpha: float, n_steps: int = 1, spatial_only: bool = False,
              projection: str = "unitary", *, check: bool = True, tol: float | None = None,
              max_sweeps: int = 25):
    """``n_steps`` APE smearing steps of the links ``U[batch, D, *sites, N, N]``.

    ``U'_mu = Proj[(1 - alpha) U_mu + alpha/(2(D-1)) sum_{nu != mu} (S^+_{mu nu} + S^-_{mu nu})]``
    with the staples parallel to ``U_mu`` (module docstring). ``spatial_only`` smears only the
    spatial links with spatial staples (normalisation ``alpha/(2(D-2))``; time links unchanged;
    D >= 3). ``projection`` is ``"unitary"`` (the maximiser of ``Re Tr(W^dag M)``; gauge
    covariant) or ``"gram_schmidt"`` (:func:`lattice_ml.groups.reunitarize`). ``tol`` and
    ``max_sweeps`` go to :func:`project_max_trace`. Returns a new array in the layout and dtype
    of U. With ``check=True`` (default) U is validated by :func:`lattice_ml.groups.check_links`
    (layout, dtype, finiteness, group membership). ``ValueError`` for alpha outside [0, 1],
    a negative or non-integer ``n_steps``, an unknown projection, ``spatial_only`` in D = 2, or
    a bad link field.
    """
    _check_layout(U)
    alpha = _check_alpha(alpha)
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 0:
        raise ValueError(f"n_steps must be a non-negative integer, got {n_steps!r}")
    if projection not in PROJECTIONS:
        raise ValueError(f"unknown projection {projection!r}; choose one of "
                         f"{', '.join(PROJECTIONS)}")
    D = U.shape[1]
    if spatial_only and D < 3:
        raise ValueError(f"spatial_only smearing needs D >= 3 (spatial staples); got D = {D}")
    if check:
        check_links(U)
    for _ in range(n_steps):
        U = ape_step(U, alpha, spatial_only=spatial_only, projection=projection, tol=tol,
                     max_sweeps=max_sweeps)
    return U
