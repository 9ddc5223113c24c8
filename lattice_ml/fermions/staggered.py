"""The (unimproved, Kogut-Susskind) staggered Dirac operator with eta phases, its adjoint,
normal operator and even/odd preconditioning.

Layouts
-------
* links ``U[batch, D, L_0, ..., L_{D-1}, N, N]`` complex (N = 1 for U(1)); time is direction 0;
* staggered fields ``chi[batch, L_0, ..., L_{D-1}, 1, colour]`` complex: one component per site,
  kept with a **spin axis of size 1** so that every fermion field has the layout
  ``[batch, *sites, spin, colour]``.

Operator::

    D_st chi(x) = m chi(x) + 1/2 sum_mu eta_mu(x) [ U_mu(x) chi(x + mu) - U_mu(x - mu)^dag chi(x - mu) ]
                = m chi(x) + K chi(x),

    eta_mu(x) = (-1)^(x_0 + ... + x_{mu-1})     (eta_0 = 1; time = direction 0),

antiperiodic in time by default (``boundary="antiperiodic"`` or ``"periodic"``), periodic in
space. ``K`` is anti-hermitian (``eta_mu`` does not depend on ``x_mu``), so
``D^dag = m - K = epsilon D epsilon`` with ``epsilon(x) = (-1)^(x_0 + ... + x_{D-1})``, and
``D^dag D = m^2 - K^2``. All extents must be even (``ValueError`` otherwise): with an odd
periodic extent L_nu the phases eta_mu, mu > nu, do not flip sign across the boundary, the
cross terms of K^2 no longer cancel and the free dispersion is wrong.

Even/odd
--------
``K`` connects opposite parities, so ``D^dag D = m^2 - K^2`` is **block diagonal in parity**.
Storage is full size, zero on the other parity (as for Wilson; even extents required).
``apply_eo(chi_e) = (m^2 - D_eo D_oe) chi_e = m^2 chi_e - K_eo K_oe chi_e`` is the even block of
``D^dag D``, hermitian positive definite for m > 0, and ``det D = det(m^2 - K_eo K_oe)``.
To solve ``D chi = eta``: ``(m^2 - K_eo K_oe) chi_e = m eta_e - K_eo eta_o``
(:meth:`StaggeredDirac.prepare_source`), then ``chi_o = (eta_o - K_oe chi_e) / m``
(:meth:`StaggeredDirac.reconstruct`).
"""

from __future__ import annotations

import math

import numpy as np

from ..backend import device_of, namespace, real_dtype_of
from ..dispatch import dispatchable
from ..gauge.paths import link
from ..groups import dagger
from ..lattice import Lattice, shift
from .wilson import (_check_boundary, _check_field, _check_link_layout, _require_even_extents,
                     _site_field, colour_mul)

__all__ = ["StaggeredDirac", "staggered_phases", "staggered_epsilon", "staggered_hop"]


def _eta_host(sites) -> np.ndarray:
    x = np.indices(sites)
    D = len(sites)
    out = np.ones((D,) + tuple(sites))
    for mu in range(1, D):
        out[mu] = np.where(x[:mu].sum(axis=0) % 2 == 0, 1.0, -1.0)
    return out


def staggered_phases(sites, xp, dtype=None, device=None):
    """``eta_mu(x) = (-1)^(x_0 + ... + x_{mu-1})`` as ``[D, *sites]`` (real, default float64)."""
    return xp.asarray(_eta_host(tuple(sites)), dtype=dtype or xp.float64, device=device)


def staggered_epsilon(sites, xp, dtype=None, device=None):
    """``epsilon(x) = (-1)^(x_0 + ... + x_{D-1})`` as ``[*sites]``."""
    eps = np.where(np.indices(tuple(sites)).sum(axis=0) % 2 == 0, 1.0, -1.0)
    return xp.asarray(eps, dtype=dtype or xp.float64, device=device)


class StandardPhases(list):
    """The standard phases ``eta_mu(x)`` as a list of site fields, marked as such: the kernels,
    which compute the standard phases from the coordinates, accept ``eta`` only in this form."""

    standard = True


@dispatchable("staggered_hop")
def staggered_hop(U, chi, antiperiodic: bool = True, parity: int | None = None, eta=None):
    """The staggered hopping term
    ``K chi(x) = 1/2 sum_mu eta_mu(x) [U_mu(x) chi(x + mu) - U_mu(x - mu)^dag chi(x - mu)]``
    (time hops across the boundary times -1 if ``antiperiodic``); ``U[batch, D, *sites, N, N]``,
    ``chi[batch, *sites, 1, N]``. ``parity`` (0, 1): the result only on the sites of that
    parity, zero elsewhere; ``None``: every site. ``eta``: the phases as site fields
    ``[1, *sites, 1, 1]`` per direction (computed if not given); the kernels compute the standard
    phases from the coordinates and so serve only ``eta=None`` or :class:`StandardPhases`. Numba kernels (4D SU(3)) run it for NumPy and CuPy arrays."""
    D = U.shape[1]
    sites = tuple(U.shape[2:2 + D])
    xp = namespace(U, chi)
    rdt = real_dtype_of(xp, U.dtype)
    if eta is None:
        eta_host = _eta_host(sites)
        eta = [_site_field(xp, eta_host[mu], rdt, device_of(U)) for mu in range(D)]
    out = None
    for mu in range(D):
        ap = antiperiodic and mu == 0
        Umu = link(U, mu)
        fwd = colour_mul(Umu, shift(chi, mu, +1, antiperiodic=ap))
        bwd = shift(colour_mul(dagger(Umu), chi), mu, -1, antiperiodic=ap)
        term = eta[mu] * (fwd - bwd)
        out = term if out is None else out + term
    out = 0.5 * out
    if parity is not None:
        host = ((np.indices(sites).sum(axis=0) % 2) == parity).astype(np.float64)
        out = out * _site_field(xp, host, rdt, device_of(out))
    return out


class StaggeredDirac:
    """Staggered Dirac operator on the links ``U`` (see the module docstring).

    Parameters
    ----------
    U : array ``[batch, D, *sites, N, N]``
        Gauge links (thin or smeared), complex.
    mass : float
        Bare mass m.
    boundary : ``"antiperiodic"`` (default) or ``"periodic"``
        Time boundary condition.
    check : bool
        Validate that the links are unitary (one host sync).
    """

    n_spin = 1

    def __init__(self, U, mass: float, boundary: str = "antiperiodic", check: bool = True):
        D, sites, N = _check_link_layout(U, check)
        if any(L % 2 for L in sites):
            raise ValueError(f"staggered fermions need even extents in every direction (the eta "
                             f"phases are inconsistent across an odd periodic boundary), got "
                             f"lattice {tuple(sites)}")
        self.boundary = _check_boundary(boundary)
        if not math.isfinite(float(mass)):
            raise ValueError(f"mass must be finite, got {mass!r}")
        self.U = U
        self.mass = float(mass)
        self.D, self.sites, self.N = D, tuple(sites), N
        self.lattice = Lattice(self.sites)
        xp = self.xp = namespace(U)
        self.dtype = U.dtype
        self.device = device_of(U)
        rdt = real_dtype_of(xp, U.dtype)
        eta = _eta_host(self.sites)
        self._eta = StandardPhases(_site_field(xp, eta[mu], rdt, self.device)
                                   for mu in range(D))
        par = np.indices(self.sites).sum(axis=0) % 2
        self._eps = _site_field(xp, np.where(par == 0, 1.0, -1.0), rdt, self.device)
        self._masks = (_site_field(xp, (par == 0).astype(float), rdt, self.device),
                       _site_field(xp, (par == 1).astype(float), rdt, self.device))

    def __repr__(self) -> str:
        return (f"StaggeredDirac(D={self.D}, sites={list(self.sites)}, N={self.N}, "
                f"mass={self.mass}, boundary={self.boundary!r})")

    def _check(self, chi, name="staggered field"):
        _check_field(chi, self.sites, 1, self.N, self.U.shape[0], name)

    def _K(self, chi, parity: int | None = None):
        return staggered_hop(self.U, chi, self.boundary == "antiperiodic", parity, self._eta)

    # -- full operator ---------------------------------------------------------------------------
    def apply(self, chi):
        """``D_st chi = m chi + K chi``."""
        self._check(chi)
        return self.mass * chi + self._K(chi)

    def apply_dagger(self, chi):
        """``D_st^dag chi = m chi - K chi`` (= ``epsilon D epsilon chi``, tested)."""
        self._check(chi)
        return self.mass * chi - self._K(chi)

    def normal(self, chi):
        """``D^dag D chi = m^2 chi - K K chi`` (block diagonal in parity)."""
        return self.apply_dagger(self.apply(chi))

    def hopping(self, chi):
        """The massless, anti-hermitian part ``K chi``."""
        self._check(chi)
        return self._K(chi)

    def apply_epsilon(self, chi):
        """``epsilon(x) chi(x)`` with ``epsilon = (-1)^(sum_mu x_mu)``."""
        return self._eps * chi

    # -- even/odd ------------------------------------------------------------------------------
    def even(self, chi):
        """``chi`` with its odd sites set to zero."""
        _require_even_extents(self.sites)
        return chi * self._masks[0]

    def odd(self, chi):
        """``chi`` with its even sites set to zero."""
        _require_even_extents(self.sites)
        return chi * self._masks[1]

    def apply_eo(self, chi_e):
        """``(m^2 - D_eo D_oe) chi_e = m^2 chi_e - K_eo K_oe chi_e`` on even sites (the odd sites
        of ``chi_e`` are ignored, those of the result are zero). Hermitian, so it is also its own
        adjoint."""
        self._check(chi_e)
        ce = self.even(chi_e)
        return (self.mass * self.mass) * ce - self._K(self._K(ce, 1), 0)

    def apply_eo_dagger(self, chi_e):
        """Same as :meth:`apply_eo` (the even block of ``D^dag D`` is hermitian)."""
        return self.apply_eo(chi_e)

    def normal_eo(self, chi_e):
        """Same as :meth:`apply_eo`: for staggered fermions the even block of ``D^dag D`` is
        already hermitian positive definite, so CG runs on it directly."""
        return self.apply_eo(chi_e)

    def prepare_source(self, eta):
        """``m eta_e - K_eo eta_o`` (even sites)."""
        self._check(eta, "source")
        return self.even(self.mass * eta - self._K(self.odd(eta)))

    def reconstruct(self, chi_e, eta):
        """Full solution of ``D chi = eta``: ``chi_o = (eta_o - K_oe chi_e) / m``."""
        self._check(chi_e)
        self._check(eta, "source")
        if self.mass == 0.0:
            raise ValueError("reconstruct needs m != 0 (chi_o = (eta_o - K_oe chi_e) / m)")
        ce = self.even(chi_e)
        return ce + self.odd(eta - self._K(ce)) / self.mass

