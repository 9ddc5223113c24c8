"""Optimal rational approximations of ``x**power`` (Remez exchange) for RHMC, and their
application to a hermitian positive operator through one multi-shift CG solve.

The approximation
-----------------
``remez(power, lo, hi, degree)`` computes the type ``(degree, degree)`` rational function ``r``
that minimises the maximal **relative** error

    eps = max_{lo <= x <= hi} |r(x) / x**power - 1|

for ``0 < |power| < 1`` (rooted staggered fermions use ``power = -1/2, 1/2, -1/4, 1/4, ...``).
It is returned in partial-fraction form

    r(x) = a0 + sum_k a_k / (x + b_k),      b_k > 0,

the form in which ``r(A) b = a0 b + sum_k a_k (A + b_k)^{-1} b`` costs one multi-shift CG.
The optimum is characterised by equioscillation: ``r/x**power - 1`` takes the values
``+-E`` with alternating signs at ``2 degree + 2`` points of ``[lo, hi]`` (the reference) and
nowhere exceeds ``|E|`` in modulus. For any ``r`` that alternates like this with
``|r/x**p - 1| >= |E|`` on the reference, de la Vallee Poussin's theorem gives
``|E| <= eps_optimal <= eps(r)``; the returned record holds both numbers (``levelled_error`` and
``error``), so the optimality of the result is certified to their ratio (``<= 1 + 1e-6`` except
near round-off).

Method (host NumPy/SciPy, float64)
----------------------------------
The numerator and denominator are kept in **product form**
``r(x) = c prod_k (x + z_k) / (x + q_k)`` with positive ``z_k, q_k`` interlacing on the negative
axis, parametrised by ``log c, log z_k, log q_k``. The equioscillation equations on the reference
``x_i`` are written for the logarithm of the ratio,

    log c + sum_k log(x_i + z_k) - sum_k log(x_i + q_k) - power log x_i = log(1 + (-1)^i E),

``2 degree + 2`` smooth equations for as many unknowns, solved by damped Newton. The product form
evaluates the relative error without cancellation, which is what makes float64 enough (the
monomial basis of the textbook Remez is hopeless here: its condition number grows like
``(hi/lo)**degree``). After each solve the reference is exchanged for the extrema of the error
(brackets between the zeros of the error, found with ``brentq``, then a bounded 1-D maximisation
in ``log x``) until the maximal error is levelled to ``|E|`` within a relative ``1e-6``.

The start is Zolotarev's solution for ``x**(-1/2)``: zeros and poles at
``lo sn^2/cn^2(u K'/(2n+1); k')``, ``k'^2 = 1 - lo/hi``, poles at ``u = 2k - 1`` and zeros at
``u = 2k`` (for ``power = -1/2`` this *is* the optimum), moved to ``u = 2k - 1/2 -+ |power|``
for other powers (poles below the zeros for ``power < 0``, zeros below the poles for
``power > 0``), with the reference started at ``lo / dn^2(j K'/(2n+1))``, ``j = 0 .. 2n+1``.

Finally the product form is converted to partial fractions
(``a0 = c``, ``a_k = c prod_j (z_j - q_k) / prod_{j != k} (q_j - q_k)``, ``b_k = q_k``) and the
error of the partial-fraction form itself is measured on the refined extrema and on a dense
logarithmic grid; ``error`` is the largest value found.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy import optimize, special

from .solvers import multishift_cg

__all__ = ["RationalApproximation", "RemezRoundoffError", "remez", "zolotarev_inverse_sqrt"]


class RemezRoundoffError(RuntimeError):
    """The requested degree drives the minimax error down to float64 round-off, where the
    equioscillation of the error cannot be resolved. ``levelled_error`` and ``roundoff`` hold
    the two numbers, ``degree_ok`` / ``error_ok`` the highest lower degree that works and its
    certified error (``None`` if none was found)."""

    def __init__(self, message, levelled_error, roundoff, degree_ok=None, error_ok=None):
        super().__init__(message)
        self.levelled_error = levelled_error
        self.roundoff = roundoff
        self.degree_ok = degree_ok
        self.error_ok = error_ok


# ----------------------------------------------------------------------------------------------
# the record
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RationalApproximation:
    """``r(x) = a0 + sum_k residues[k] / (x - poles[k]) ~ x**power`` on ``[lo, hi]``.

    Attributes
    ----------
    power, lo, hi : float
    degree : int
        Type ``(degree, degree)``: ``degree`` poles.
    a0 : float
    residues : float array ``[degree]``  (``a_k``)
    poles : float array ``[degree]``  (``-b_k``, all negative, ascending ``b_k``)
    error : float
        Maximal relative error ``|r(x)/x**power - 1|`` over ``[lo, hi]`` of the partial-fraction
        form, measured (refined extrema and dense logarithmic sampling), plus a bound on the
        float64 round-off of evaluating it (``(n+4) eps (|a0| + sum|a_k|/(x+b_k)) / |r(x)|``;
        relevant only for errors below ~1e-12).
    levelled_error : float
        ``|E|`` of the equioscillation: a lower bound on the error of *any* rational function of
        the same type (de la Vallee Poussin), so ``error / levelled_error - 1`` certifies
        optimality.
    reference : float array ``[2 degree + 2]``
        The alternation points (error ``+-E`` with alternating signs).
    iterations : int
        Remez exchanges performed.
    """

    power: float
    lo: float
    hi: float
    degree: int
    a0: float
    residues: np.ndarray
    poles: np.ndarray
    error: float
    levelled_error: float
    reference: np.ndarray = field(repr=False)
    iterations: int = 0

    @property
    def shifts(self) -> np.ndarray:
        """``b_k = -poles`` (positive): the shifts of the multi-shift solve."""
        return -self.poles

    def __call__(self, x):
        """``r(x)`` on the host (NumPy scalar or array; any shape)."""
        xa = np.asarray(x)
        out = self.a0 + np.sum(self.residues / (xa[..., None] + self.shifts), axis=-1)
        return out if np.ndim(out) else out.item()

    def relative_error(self, x):
        """``r(x) / x**power - 1`` on the host."""
        xa = np.asarray(x, dtype=np.float64)
        return self(xa) / xa ** self.power - 1.0

    def apply(self, A: Callable, b, solver: Callable = multishift_cg, tol: float | None = None,
              return_info: bool = False, **solver_kwargs):
        """``r(A) b = a0 b + sum_k a_k (A + b_k)^{-1} b`` with one multi-shift solve.

        Parameters
        ----------
        A : callable on ``[batch, ...]`` arrays
            Hermitian positive operator (e.g. ``StaggeredDirac.normal``) whose spectrum lies in
            ``[lo, hi]`` for every batch entry; only then is ``r(A)`` within ``error`` of
            ``A**power`` (relative, eigenvalue by eigenvalue).
        b : array ``[batch, ...]``
        solver : callable ``solver(A, b, shifts, tol=..., **kw) -> (x[n_shift, batch, ...], info)``
            Default :func:`lattice_ml.fermions.solvers.multishift_cg`.
        tol : float, optional
            Relative residual of every shifted solve; default ``min(1e-10, error / 100)`` but not
            below ``1e-13``.
        return_info : bool
            Also return the solver's info record.

        Returns
        -------
        y : array like ``b`` (and the solver info with ``return_info=True``)
        """
        if tol is None:
            tol = max(min(1e-10, self.error / 100.0), 1e-13)
        xs, info = solver(A, b, [float(s) for s in self.shifts], tol=tol, **solver_kwargs)
        y = self.a0 * b
        for k in range(self.degree):
            y = y + float(self.residues[k]) * xs[k, ...]
        return (y, info) if return_info else y


# ----------------------------------------------------------------------------------------------
# Zolotarev's nodes (start of the iteration; exact optimum for power -1/2)
# ----------------------------------------------------------------------------------------------
def _sc2(u, m1):
    """``sn^2/cn^2(u | m)`` with ``m = 1 - m1`` (``m1`` may be tiny: ``ellipkm1`` scale)."""
    sn, cn, _dn, _ph = special.ellipj(u, 1.0 - m1)
    return sn ** 2 / cn ** 2


def _zolotarev_nodes(ratio: float, n: int, pos) -> np.ndarray:
    """``ratio sn^2/cn^2(pos K'/(2n+1); k')`` with ``k'^2 = 1 - ratio``, in units of ``hi``."""
    Kp = special.ellipkm1(ratio)
    return ratio * _sc2(np.asarray(pos, dtype=np.float64) * Kp / (2 * n + 1), ratio)


def _zolotarev_reference(ratio: float, n: int) -> np.ndarray:
    Kp = special.ellipkm1(ratio)
    _sn, _cn, dn, _ph = special.ellipj(np.arange(2 * n + 2) * Kp / (2 * n + 1), 1.0 - ratio)
    ref = np.clip(ratio / dn ** 2, ratio, 1.0)
    ref[0], ref[-1] = ratio, 1.0
    return ref


def zolotarev_inverse_sqrt(lo: float, hi: float, degree: int, n_sample: int = 200001):
    """Zolotarev's optimal relative approximation of ``x**(-1/2)`` on ``[lo, hi]`` (closed form).

    ``r(x) = C prod_k (x + c_{2k}) / (x + c_{2k-1})``, ``c_l = lo sn^2/cn^2(l K'/(2n+1); k')``,
    ``k'^2 = 1 - lo/hi``; ``C`` is fixed so that the relative error is levelled. Returns
    ``(zeros, poles, C, error)`` with ``zeros = c_{2k}``, ``poles = c_{2k-1}`` (as positive
    shifts) and the error measured on ``n_sample`` logarithmically spaced points. An independent
    check of :func:`remez` (used by the tests); loses accuracy for ``hi/lo`` beyond ~1e6 where
    SciPy's ``ellipj`` near ``m = 1`` limits the nodes.
    """
    n = int(degree)
    ratio = lo / hi
    k = np.arange(1, n + 1)
    poles = _zolotarev_nodes(ratio, n, 2 * k - 1) * hi
    zeros = _zolotarev_nodes(ratio, n, 2 * k) * hi
    y = np.linspace(math.log(lo), math.log(hi), n_sample)
    g = np.exp(_log_ratio(np.exp(y), -0.5, 0.0, zeros, poles))
    C = 2.0 / (g.max() + g.min())
    return zeros, poles, C, float((g.max() - g.min()) / (g.max() + g.min()))


# ----------------------------------------------------------------------------------------------
# Remez
# ----------------------------------------------------------------------------------------------
def _log_ratio(x, p, logc, zeros, poles):
    """``log(r(x) / x**p)`` for the product form (x 1-D)."""
    x = np.asarray(x, dtype=np.float64)
    return (logc + np.sum(np.log1p((zeros - poles) / (x[:, None] + poles)), axis=1)
            - p * np.log(x))


def _newton(xr, p, th, n, maxiter=100):
    """Solve the equioscillation equations on the reference ``xr`` from ``th``."""
    m = 2 * n + 2
    s = (-1.0) ** np.arange(m)

    def F(t):
        z, q = np.exp(t[1:n + 1]), np.exp(t[n + 1:2 * n + 1])
        E = t[-1]
        if not np.all(np.abs(E) < 1.0):
            return np.full(m, np.inf)
        with np.errstate(all="ignore"):
            return _log_ratio(xr, p, t[0], z, q) - np.log1p(s * E)

    f = F(th)
    for _ in range(maxiter):
        z, q, E = np.exp(th[1:n + 1]), np.exp(th[n + 1:2 * n + 1]), th[-1]
        J = np.empty((m, m))
        J[:, 0] = 1.0
        J[:, 1:n + 1] = z / (xr[:, None] + z)
        J[:, n + 1:2 * n + 1] = -q / (xr[:, None] + q)
        J[:, -1] = -s / (1.0 + s * E)
        try:
            d = np.linalg.lstsq(J, -f, rcond=None)[0]
        except np.linalg.LinAlgError:
            break
        nf = np.linalg.norm(f)
        lam, accepted = 1.0, False
        while lam > 1e-8:
            tn = th + lam * d
            fn = F(tn)
            if np.all(np.isfinite(fn)) and np.linalg.norm(fn) < nf * (1.0 - 1e-4 * lam):
                accepted = True
                break
            lam *= 0.5
        if not accepted:
            break
        th, f = tn, fn
        if np.linalg.norm(lam * d) <= 1e-14 * (1.0 + np.linalg.norm(th)):
            break
    return th, float(np.linalg.norm(f))


def _extrema(err_y, yr, ylo, yhi):
    """Exchange: the extrema of the error between its zeros (bracketed by the reference)."""
    m = yr.size
    roots = []
    for i in range(m - 1):
        a, b = yr[i], yr[i + 1]
        fa, fb = err_y(a), err_y(b)
        if not (fa * fb < 0):
            return None
        roots.append(optimize.brentq(err_y, a, b, xtol=1e-15, rtol=4 * np.finfo(float).eps))
    edges = np.concatenate([[ylo], roots, [yhi]])
    out = np.empty(m)
    for i in range(m):
        a, b = edges[i], edges[i + 1]
        sg = 1.0 if err_y(yr[i]) > 0 else -1.0
        res = optimize.minimize_scalar(lambda y: -sg * err_y(y), bounds=(a, b), method="bounded",
                                       options={"xatol": 1e-13 * max(1.0, abs(b))})
        cands = [(a, -sg * err_y(a)), (b, -sg * err_y(b)), (float(res.x), float(res.fun))]
        out[i] = min(cands, key=lambda c: c[1])[0]
    return out


def _roundoff(xr, p, logc, zeros, poles):
    """Float64 resolution of ``r(x)/x**p - 1`` evaluated as ``expm1(log r - p log x)``:
    eps times the size of the summed logarithms (largest over the reference)."""
    terms = np.abs(np.log1p((zeros - poles) / (xr[:, None] + poles)))
    size = abs(logc) + abs(p) * float(np.max(np.abs(np.log(xr)))) + \
        float(np.max(np.sum(terms, axis=1)))
    return float(np.finfo(float).eps * size)


def _partial_fractions(logc, zeros, poles):
    c = math.exp(logc)
    n = poles.size
    res = np.empty(n)
    for k in range(n):
        num = zeros - poles[k]
        den = np.delete(poles, k) - poles[k]
        sign = np.prod(np.sign(num)) * np.prod(np.sign(den))
        res[k] = sign * c * math.exp(np.sum(np.log(np.abs(num))) - np.sum(np.log(np.abs(den))))
    return c, res


def remez(power: float, lo: float, hi: float, degree: int, *, rel_tol: float = 1e-6,
          max_exchanges: int = 100) -> RationalApproximation:
    """Optimal (minimax relative error) type ``(degree, degree)`` approximation of ``x**power``.

    Parameters
    ----------
    power : float, ``0 < |power| < 1``
    lo, hi : float, ``0 < lo < hi``
        The interval (the spectral range of the operator it will be applied to).
    degree : int >= 1
        Number of poles (and of shifted solves in :meth:`RationalApproximation.apply`).
    rel_tol : float
        Stop when the maximal error exceeds the levelled error by at most this fraction (or by
        the round-off of evaluating it, ``32 eps`` times the size of the summed logarithms,
        whichever is larger; that matters only for errors below ~1e-10).
    max_exchanges : int

    Returns
    -------
    RationalApproximation

    Raises
    ------
    ValueError
        Bad arguments.
    RemezRoundoffError
        The degree is so high that the minimax error is at float64 round-off (levelled error
        within 100x of the resolution of evaluating ``r/x**p - 1``, ~1e-15): the sign pattern of
        the error on the reference is then rounding noise, the exchange cannot find alternating
        extrema and the Newton equations are singular to working precision. The message names
        the numbers and the highest lower degree that works (e.g. power -1/4 on [0.04, 4.04]:
        degree 12 gives 1.4e-14, degree 13 fails). Float64 cannot certify a smaller error, so
        use that degree.
    RuntimeError
        Any other failure of the iteration.
    See the module docstring for the method.
    """
    try:
        return _remez(power, lo, hi, degree, rel_tol, max_exchanges)
    except RemezRoundoffError as err:
        lower = None
        for d in range(int(degree) - 1, 0, -1):
            try:
                lower = _remez(power, lo, hi, d, rel_tol, max_exchanges)
                break
            except RuntimeError:
                continue
        hint = (f"; degree {lower.degree} works with certified error {lower.error:.2e}"
                if lower is not None else "")
        raise RemezRoundoffError(
            f"{err}{hint}; use that degree: a smaller error cannot be certified in float64",
            err.levelled_error, err.roundoff, None if lower is None else lower.degree,
            None if lower is None else lower.error) from None


def _remez(power: float, lo: float, hi: float, degree: int, rel_tol: float,
           max_exchanges: int) -> RationalApproximation:
    p = float(power)
    if not (math.isfinite(p) and 0.0 < abs(p) < 1.0):
        raise ValueError(f"remez: power must satisfy 0 < |power| < 1, got {power!r}")
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 < lo < hi):
        raise ValueError(f"remez: need 0 < lo < hi (finite), got lo={lo!r}, hi={hi!r}")
    if int(degree) != degree or degree < 1:
        raise ValueError(f"remez: degree must be a positive integer, got {degree!r}")
    n = int(degree)
    m = 2 * n + 2
    ratio = lo / hi
    # start: Zolotarev's nodes moved for the power
    k = np.arange(1, n + 1)
    lower = _zolotarev_nodes(ratio, n, 2 * k - 0.5 - abs(p)) * hi
    upper = _zolotarev_nodes(ratio, n, 2 * k - 0.5 + abs(p)) * hi
    zeros, poles = (upper, lower) if p < 0 else (lower, upper)
    xr = _zolotarev_reference(ratio, n) * hi
    g = _log_ratio(xr, p, 0.0, zeros, poles)
    th = np.concatenate([[-0.5 * (g.max() + g.min())], np.log(zeros), np.log(poles),
                         [0.5 * (g.max() - g.min())]])
    ylo, yhi = math.log(lo), math.log(hi)
    E = emax = float("nan")
    ok = False
    it = 0

    def roundoff_check(E, xr, logc, zeros, poles, what):
        floor = _roundoff(xr, p, logc, zeros, poles)
        if np.isfinite(E) and abs(E) < 100.0 * floor:
            raise RemezRoundoffError(
                f"remez: degree {n} reaches float64 round-off for power={p} on "
                f"[{lo:g}, {hi:g}]: {what}, and the levelled error |E| = {abs(E):.2e} is within "
                f"100x of the float64 resolution of r(x)/x**p - 1 ({floor:.1e} = eps x size of "
                f"the summed logarithms), so the error's sign pattern is rounding noise",
                abs(float(E)), floor)

    for it in range(1, max_exchanges + 1):
        th, fres = _newton(xr, p, th, n)
        logc, zeros, poles, E = th[0], np.exp(th[1:n + 1]), np.exp(th[n + 1:2 * n + 1]), th[-1]
        if not (np.isfinite(fres) and fres < 1e-3 * abs(E) + 1e-13):
            roundoff_check(E, xr, logc, zeros, poles,
                           f"Newton left residual {fres:.1e} in the equioscillation equations")
            raise RuntimeError(f"remez: Newton did not solve the equioscillation equations "
                               f"(residual {fres:.2e}, E = {E:.2e}) for power={p}, "
                               f"[{lo:g}, {hi:g}], degree={n}")

        def err_y(y, logc=logc, zeros=zeros, poles=poles):
            return float(np.expm1(_log_ratio(np.array([math.exp(y)]), p, logc, zeros, poles))[0])

        yr = _extrema(err_y, np.log(xr), ylo, yhi)
        if yr is None:
            roundoff_check(E, xr, logc, zeros, poles, "the error does not alternate on the "
                           "reference")
            raise RuntimeError(f"remez: the error does not alternate on the reference "
                               f"(power={p}, [{lo:g}, {hi:g}], degree={n}); degree too high "
                               f"for float64?")
        xr = np.clip(np.exp(yr), lo, hi)
        xr[yr <= ylo], xr[yr >= yhi] = lo, hi          # endpoints exactly
        emax = max(abs(err_y(y)) for y in yr)
        # round-off floor of the error evaluation: eps times the size of the summed logarithms
        terms = np.abs(np.log1p((zeros - poles) / (xr[:, None] + poles)))
        size = abs(logc) + abs(p) * np.max(np.abs(yr)) + float(np.max(np.sum(terms, axis=1)))
        if emax - abs(E) <= max(rel_tol * abs(E), 32 * np.finfo(float).eps * size):
            ok = True
            break
    if not ok:
        roundoff_check(E, xr, logc, zeros, poles, f"no levelled error after {max_exchanges} "
                       "exchanges")
        raise RuntimeError(f"remez: no levelled error after {max_exchanges} exchanges "
                           f"(max error {emax:.6e}, levelled {abs(E):.6e}) for power={p}, "
                           f"[{lo:g}, {hi:g}], degree={n}; degree too high for float64?")
    order = np.argsort(poles)
    zeros, poles = np.sort(zeros), poles[order]
    a0, res = _partial_fractions(logc, zeros, poles)
    approx = RationalApproximation(power=p, lo=lo, hi=hi, degree=n, a0=a0, residues=res,
                                   poles=-poles, error=0.0, levelled_error=abs(float(E)),
                                   reference=xr, iterations=it)
    # measured error of the partial-fraction form: refined extrema and a dense log grid
    grid = np.exp(np.linspace(ylo, yhi, 200 * m + 1))
    err = max(float(np.max(np.abs(approx.relative_error(xr)))),
              float(np.max(np.abs(approx.relative_error(grid)))))
    # plus a bound on the float64 round-off of evaluating r(x)/x**p - 1 (sum of n+1 terms, one
    # division each, the power): (n + 4) eps (|a0| + sum |a_k|/(x + b_k)) / |r(x)|
    absum = abs(a0) + np.sum(np.abs(res) / (grid[:, None] + poles), axis=1)
    err += float(np.max((n + 4) * np.finfo(float).eps * absum / np.abs(approx(grid))))
    return RationalApproximation(power=p, lo=lo, hi=hi, degree=n, a0=a0, residues=res,
                                 poles=-poles, error=err, levelled_error=abs(float(E)),
                                 reference=xr, iterations=it)
