"""Fermionic observables: the point-source pion correlator, effective masses and the stochastic
chiral condensate, for Wilson and staggered fermions (array API; NumPy, CuPy, array-api-strict).

Pion correlator
---------------
Point source at ``x0`` (default the origin): for every source spin ``s`` and colour ``c`` solve
``D psi = eta_{s c}`` with ``eta_{s c}(x) = delta_{x, x0} e_s e_c``; the solutions are the
columns of the propagator ``S(x, x0)`` (an ``(n_spin N) x (n_spin N)`` matrix per site). With
gamma_5-hermiticity ``S(x0, x) = gamma_5 S(x, x0)^dagger gamma_5`` the pseudoscalar correlator
``-<(psibar gamma_5 psi)(x) (psibar gamma_5 psi)(x0)>`` (the fermion-loop sign taken out) is

    C(t) = sum_{x vec} Tr[S(x, x0) S(x, x0)^dagger] = sum_{x vec} sum_{all indices} |S|^2,

``x_0 = x0_0 + t mod T``, returned as ``[batch, T]`` real and positive. Staggered (Goldstone pion,
spin-taste gamma_5 x gamma_5, the local operator ``eps(x) chibar chi(x)``): epsilon-hermiticity
``G(x0, x) = eps(x0) eps(x) G(x, x0)^dagger`` cancels the ``eps(x)`` of the operator, so
``C(t) = sum_{x vec} sum_{c, c'} |G(x, x0)_{c c'}|^2`` with **no** sign factor left (N solves).
Fermion bilinears are periodic in time even with antiperiodic fermions, so C(t) = C(T - t).

Effective mass
--------------
``effective_mass(C, kind="cosh")``: m(t) = arccosh[(C(t-1) + C(t+1)) / (2 C(t))], t = 1..T-1
with C(T) = C(0) (exact for ``C(t) = A cosh(m (t - T/2))`` at every such t);
``kind="log"``: m(t) = log[C(t) / C(t+1)], t = 0..T-2.

Chiral condensate
-----------------
``<psibar psi> = (1/V) Tr D^{-1}`` per flavour (trace over sites, spin, colour; V the number of
sites), estimated per configuration as ``(1/V)(1/n) sum_i Re eta_i^dagger D^{-1} eta_i`` with
noise ``E[eta eta^dagger] = 1``: Z2 (entries +-1, the default; smallest variance) or complex
Gaussian (``RandomStreams.complex_normal``). Tr D^{-1} is real for both discretisations
(gamma_5- resp. epsilon-hermiticity). Staggered: ``(1/V) Tr D_st^{-1}`` per staggered field, all
``2^{D/2}`` tastes included (no 1/4 or 1/2 rooting factor; divide by ``2^{D/2}`` for a per-taste
value).

Sloppy and exact condensate (AMA)
---------------------------------
``chiral_condensate_ama`` draws the noise once and solves ``D psi = eta`` twice: truncated (CGNR
stopped after a fixed number of iterations, whatever the residual: a deterministic function of
the links and the noise, so a valid approximation for all-mode averaging) and, where asked,
exactly, warm-started from the truncated solution. The two estimates share the noise, so their
difference has a small variance; :func:`lattice_ml.stats.ama` combines them.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..backend import asarray, device_of, namespace
from .solvers import bicgstab, cgne

__all__ = ["pion_correlator", "effective_mass", "chiral_condensate", "chiral_condensate_ama",
           "point_source"]


def _layout(dirac):
    n_s = int(getattr(dirac, "n_spin", 1))
    return tuple(dirac.sites), n_s, int(dirac.N), int(dirac.U.shape[0])


def _solve(dirac, eta, solver, tol):
    """``D psi = eta`` with a named solver or a callable ``solver(dirac, eta) -> psi``."""
    if callable(solver):
        out = solver(dirac, eta)
        return out[0] if isinstance(out, tuple) else out
    if solver == "cgne":
        psi, _ = cgne(dirac.apply, dirac.apply_dagger, eta, tol=tol)
    elif solver == "bicgstab":
        psi, _ = bicgstab(dirac.apply, eta, tol=tol)
    else:
        raise ValueError(f"unknown solver {solver!r}; use 'cgne', 'bicgstab' or a callable "
                         "solver(dirac, eta) -> psi")
    return psi


def point_source(dirac, spin: int, colour: int, source=None):
    """``eta(x) = delta_{x, source} e_spin e_colour`` as ``[batch, *sites, n_spin, N]``."""
    sites, n_s, N, batch = _layout(dirac)
    x0 = tuple(source) if source is not None else (0,) * len(sites)
    if len(x0) != len(sites):
        raise ValueError(f"source {x0} does not have {len(sites)} coordinates")
    host = np.zeros((batch, *sites, n_s, N), dtype=np.complex128)
    host[(slice(None),) + tuple(int(c) % L for c, L in zip(x0, sites)) + (spin, colour)] = 1.0
    xp = namespace(dirac.U)
    return asarray(host, xp, dtype=dirac.U.dtype, device=device_of(dirac.U))


def pion_correlator(dirac, solver: str | Callable = "cgne", source=None, tol: float = 1e-12):
    """Point-source pion correlator ``C(t) = sum_{x vec} Tr[S(x, x0) S(x, x0)^dagger]``.

    Parameters
    ----------
    dirac : WilsonDirac or StaggeredDirac (anything with ``apply``, ``apply_dagger``, ``U``,
        ``sites``, ``N``, ``n_spin``)
    solver : ``"cgne"`` (CGNR, stops on ``||eta - D psi||``; default), ``"bicgstab"``, or a
        callable ``solver(dirac, eta) -> psi`` (or ``(psi, info)``).
    source : sequence of ``D`` ints, optional
        Source site ``x0`` (default the origin); ``t`` is measured from its time ``x0[0]``.
    tol : float
        Relative residual of every solve.

    Returns
    -------
    ``[batch, T]`` real: ``n_spin * N`` solves per call. For staggered fields (``n_spin = 1``)
    this is the Goldstone pion ``sum_{x vec, c, c'} |G(x, x0)_{c c'}|^2`` (no sign factor; see
    the module docstring).
    """
    sites, n_s, N, _batch = _layout(dirac)
    xp = namespace(dirac.U)
    x0 = tuple(source) if source is not None else (0,) * len(sites)
    dens = None
    for s in range(n_s):
        for c in range(N):
            psi = _solve(dirac, point_source(dirac, s, c, x0), solver, tol)
            a2 = xp.sum(xp.real(psi) ** 2 + xp.imag(psi) ** 2, axis=(-2, -1))   # [batch, *sites]
            dens = a2 if dens is None else dens + a2
    D = len(sites)
    C = xp.sum(dens, axis=tuple(range(2, D + 1))) if D > 1 else dens
    t0 = int(x0[0]) % sites[0]
    return xp.roll(C, -t0, axis=1) if t0 else C


def effective_mass(C, kind: str = "cosh"):
    """Effective mass of a (periodic-in-time) correlator ``C[..., T]`` (any namespace).

    ``kind="cosh"``: ``m(t) = arccosh[(C(t-1) + C(t+1)) / (2 C(t))]`` for ``t = 1 .. T-1``
    (``C(T) = C(0)``), ``[..., T-1]``, entry ``i`` is ``t = i + 1``; exact for
    ``A cosh(m (t - T/2))`` (not at t = 0, where the periodic cosh has its cusp). NaN where the
    argument is below 1 (noise).
    ``kind="log"``: ``m(t) = log[C(t) / C(t+1)]`` for ``t = 0 .. T-2``, ``[..., T-1]``; it equals
    the mass only while the backward-propagating part is negligible (``t << T/2``).
    """
    xp = namespace(C)
    if kind == "cosh":
        Cn = xp.concat([C[..., 2:], C[..., :1]], axis=-1)          # C(t + 1), C(T) = C(0)
        ratio = (C[..., :-1] + Cn) / (2.0 * C[..., 1:])
        return xp.acosh(ratio)
    if kind == "log":
        return xp.log(C[..., :-1] / C[..., 1:])
    raise ValueError(f"kind must be 'cosh' or 'log', not {kind!r}")


def _noise(rng, shape, kind, dtype):
    xp = rng.xp
    if kind == "z2":
        return xp.astype(2 * rng.integers(2, shape) - 1, dtype)
    if kind == "gaussian":
        return xp.astype(rng.complex_normal(shape), dtype)
    raise ValueError(f"noise must be 'z2' or 'gaussian', not {kind!r}")


def _estimates(dirac, eta, solver, tol):
    """``Re eta^dagger D^{-1} eta / V`` per batch entry for one noise vector ``eta``."""
    xp = namespace(eta)
    psi = _solve(dirac, eta, solver, tol)
    V = int(np.prod(dirac.sites))
    axes = tuple(range(1, eta.ndim))
    return xp.sum(xp.real(xp.conj(eta) * psi), axis=axes) / V


def chiral_condensate(dirac, rng, n_sources: int, solver: str | Callable = "cgne",
                      noise: str = "z2", tol: float = 1e-10, return_samples: bool = False):
    """Stochastic ``<psibar psi> = (1/V) Re Tr D^{-1}`` per configuration, ``[batch]``.

    Parameters
    ----------
    dirac : WilsonDirac or StaggeredDirac
    rng : RandomStreams with ``n_chains`` equal to the batch of the links
        Draws the noise (chain b's stream for configuration b).
    n_sources : int
        Noise vectors per configuration; the statistical error falls like ``1/sqrt(n_sources)``.
    solver : ``"cgne"``, ``"bicgstab"`` or a callable (as in :func:`pion_correlator`)
    noise : ``"z2"`` (real +-1 entries, default) or ``"gaussian"`` (complex normal)
        Both have ``E[eta eta^dagger] = 1``.
    tol : float
    return_samples : bool
        Also return the single-source estimates ``[n_sources, batch]`` (their standard
        deviation over sqrt(n_sources) is the error of the mean).

    Normalisation: per flavour, ``(1/V) Tr`` over sites, spin and colour, real part; staggered:
    per staggered field, no rooting factor (see the module docstring).
    """
    if int(n_sources) != n_sources or n_sources < 1:
        raise ValueError(f"n_sources must be a positive integer, got {n_sources!r}")
    sites, n_s, N, batch = _layout(dirac)
    if rng.n_chains != batch:
        raise ValueError(f"rng has {rng.n_chains} chains but the links have batch {batch}")
    xp = namespace(dirac.U)
    samples = []
    for _ in range(int(n_sources)):
        eta = _noise(rng, (*sites, n_s, N), noise, dirac.U.dtype)
        samples.append(_estimates(dirac, eta, solver, tol))
    S = xp.stack(samples)
    est = xp.mean(S, axis=0)
    return (est, S) if return_samples else est


def chiral_condensate_ama(dirac, rng, n_sources: int, sloppy_iterations: int, *,
                          exact: bool = True, noise: str = "z2", tol: float = 1e-10):
    """The stochastic condensate from truncated solves and, with ``exact``, from exact solves of
    the same noise: ``(sloppy [batch], exact [batch] or None)``.

    Parameters
    ----------
    dirac, rng, n_sources, noise, tol : as for :func:`chiral_condensate` (``tol``: the exact
        solves).
    sloppy_iterations : int
        CGNR iterations of every truncated solve (from a zero start; no stopping test, no
        restart), i.e. ``2 sloppy_iterations + 1`` applications of ``D`` or ``D^dagger``.
    exact : bool
        Also solve exactly (CGNR to ``tol``), warm-started from the truncated solution.

    Each estimate is ``(1/V)(1/n) sum_i Re eta_i^dagger psi_i`` with the solutions ``psi_i`` of
    its solver; the noise is drawn as in :func:`chiral_condensate` (one draw per source).
    """
    if int(n_sources) != n_sources or n_sources < 1:
        raise ValueError(f"n_sources must be a positive integer, got {n_sources!r}")
    if int(sloppy_iterations) != sloppy_iterations or sloppy_iterations < 1:
        raise ValueError(f"sloppy_iterations must be a positive integer, got "
                         f"{sloppy_iterations!r}")
    sites, n_s, N, batch = _layout(dirac)
    if rng.n_chains != batch:
        raise ValueError(f"rng has {rng.n_chains} chains but the links have batch {batch}")
    xp = namespace(dirac.U)
    V = int(np.prod(sites))
    axes = tuple(range(1, len(sites) + 3))
    sloppy, precise = [], []
    for _ in range(int(n_sources)):
        eta = _noise(rng, (*sites, n_s, N), noise, dirac.U.dtype)
        psi, _ = cgne(dirac.apply, dirac.apply_dagger, eta, tol=0.0,
                      maxiter=int(sloppy_iterations), raise_on_failure=False,
                      restart_on_true_residual=False)
        sloppy.append(xp.sum(xp.real(xp.conj(eta) * psi), axis=axes) / V)
        if exact:
            psi, _ = cgne(dirac.apply, dirac.apply_dagger, eta, x0=psi, tol=tol)
            precise.append(xp.sum(xp.real(xp.conj(eta) * psi), axis=axes) / V)
    est = xp.mean(xp.stack(sloppy), axis=0)
    return est, (xp.mean(xp.stack(precise), axis=0) if exact else None)
