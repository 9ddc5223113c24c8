"""Geometry of periodic hypercubic lattices in D = 2, 3, 4.

Layout and conventions
----------------------
A field on a lattice of shape ``(L_0, ..., L_{D-1})`` is an array ``[batch, L_0, ..., L_{D-1}, ...]``:
the batch axis first, then the D site axes in C order, then any internal axes (spin, colour, the
two matrix indices of a link). Direction ``mu`` is site axis ``mu``; **time is direction 0** (the
first entry of the shape, like openQCD's ``x0``); so in C order the time coordinate varies
slowest, as in the NERSC and ILDG file layouts.

Shifts follow the physicist's notation: ``shift(f, mu, +1)`` is the field ``x -> f(x + mu_hat)``
and ``shift(f, mu, -1)`` is ``x -> f(x - mu_hat)``. All boundaries are periodic unless
``antiperiodic=True``, which multiplies the values that wrap around the lattice by -1 (fermions
in time).

Site parity is ``(x_0 + ... + x_{D-1}) mod 2``; even sites have parity 0. Momenta are
``p_mu = 2 pi n_mu / L_mu`` with ``n_mu = 0, ..., L_mu - 1`` and the lattice momentum squared is
``phat^2 = sum_mu 4 sin^2(p_mu / 2)``.

Decomposed fields (:class:`lattice_ml.parallel.DomainArray`: the sites split over MPI ranks)
go through the same code: their namespace turns the roll of :func:`shift` into a halo exchange,
and the antiperiodic sign, built for the global extent, is cut to the rank's block when it
multiplies the field. Given the namespace of a decomposed field, :class:`Lattice` returns its
masks and momenta as the rank's block (flat site indices are refused).
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import Sequence

import numpy as np

from .backend import device_constant, device_of, namespace, real_dtype_of
from .parallel import DomainNamespace

__all__ = ["Lattice", "shift", "site_axes"]


def site_axes(ndim_sites: int, site_axis: int = 1) -> tuple[int, ...]:
    """Array axes of the sites for a field whose first site axis is ``site_axis``."""
    return tuple(range(site_axis, site_axis + ndim_sites))


def shift(field, mu: int, step: int = 1, site_axis: int = 1, antiperiodic: bool = False):
    """The field at the neighbour: ``out(x) = field(x + step * mu_hat)``.

    Parameters
    ----------
    field : array ``[..., L_0, ..., L_{D-1}, ...]``
        The site axes start at ``site_axis`` (1 for ``[batch, *sites, ...]``; 2 for the links
        ``[batch, D, *sites, N, N]``).
    mu : int
        Direction, ``0 <= mu < D``.
    step : int
        Signed number of lattice spacings (``+1`` forward, ``-1`` backward).
    antiperiodic : bool
        If true, values that wrap around the boundary in direction ``mu`` change sign.
    """
    xp = namespace(field)
    axis = site_axis + mu
    out = xp.roll(field, -step, axis=axis)
    if antiperiodic and step != 0:
        L = field.shape[axis]
        coord = (np.arange(L) + step)
        # (x + step) leaves [0, L) an odd number of times -> minus sign
        wraps = np.floor_divide(coord, L)
        sign_host = np.where(wraps % 2 == 0, 1.0, -1.0)
        shape = [1] * field.ndim
        shape[axis] = L
        sign = xp.reshape(device_constant(xp, sign_host, real_dtype_of(xp, field.dtype),
                                          device_of(field)), tuple(shape))
        out = out * sign
    return out


def _site_array(xp, host: np.ndarray, dtype, device):
    """``host`` ``[*sites]`` as an array of ``xp``; for the namespace of a decomposed field,
    the rank's block."""
    if isinstance(xp, DomainNamespace):
        return xp.sites(host, dtype=dtype, device=device)
    return xp.asarray(host, dtype=dtype, device=device)


def _no_flat_indices(xp, name: str) -> None:
    if isinstance(xp, DomainNamespace):
        raise NotImplementedError(f"Lattice.{name} on a decomposed lattice: flat site indices "
                                  f"are not decomposed (docs/parallel.md)")


class Lattice:
    """A periodic hypercubic lattice of shape ``(L_0, ..., L_{D-1})``, D in {2, 3, 4}.

    Holds only the shape; the masks and momenta it returns are computed on request, for the
    namespace and device asked for.
    """

    def __init__(self, shape: Sequence[int]):
        shape = tuple(shape)
        if not 2 <= len(shape) <= 4:
            raise ValueError(f"lattice shape must have 2, 3 or 4 entries (D = 2, 3, 4), got {shape}")
        for L in shape:
            if not isinstance(L, (int, np.integer)) or isinstance(L, bool) or L < 1:
                raise ValueError(f"lattice extents must be positive integers, got {shape}")
        self.shape = tuple(int(L) for L in shape)

    def __repr__(self) -> str:
        return f"Lattice({list(self.shape)})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Lattice) and other.shape == self.shape

    def __hash__(self) -> int:
        return hash(self.shape)

    @property
    def dim(self) -> int:
        """Number of dimensions D."""
        return len(self.shape)

    @property
    def volume(self) -> int:
        """Number of sites V."""
        return math.prod(self.shape)

    @property
    def time_extent(self) -> int:
        """Extent T = L_0 of the time direction (direction 0)."""
        return self.shape[0]

    @property
    def spatial_volume(self) -> int:
        """Number of sites of one time slice, V / T."""
        return self.volume // self.shape[0]

    # -- checkerboards -------------------------------------------------------------------------
    @cached_property
    def _parity_host(self) -> np.ndarray:
        grids = np.indices(self.shape)
        return (grids.sum(axis=0) % 2).astype(np.int64)

    def parity(self, xp, device=None):
        """Array ``[*sites]`` of site parities (0 even, 1 odd), integer dtype."""
        return _site_array(xp, self._parity_host, None, device)

    def even_mask(self, xp, dtype=None, device=None):
        """Array ``[*sites]``: 1 on even sites, 0 on odd (``dtype`` default bool)."""
        m = self._parity_host == 0
        return _site_array(xp, m if dtype is None else m.astype(np.float64), dtype, device)

    def odd_mask(self, xp, dtype=None, device=None):
        """Array ``[*sites]``: 1 on odd sites, 0 on even (``dtype`` default bool)."""
        m = self._parity_host == 1
        return _site_array(xp, m if dtype is None else m.astype(np.float64), dtype, device)

    def even_indices(self, xp, device=None):
        """Flat (C-order) indices of the even sites, ascending."""
        _no_flat_indices(xp, "even_indices")
        return xp.asarray(np.flatnonzero(self._parity_host == 0), device=device)

    def odd_indices(self, xp, device=None):
        """Flat (C-order) indices of the odd sites, ascending."""
        _no_flat_indices(xp, "odd_indices")
        return xp.asarray(np.flatnonzero(self._parity_host == 1), device=device)

    # -- momenta -------------------------------------------------------------------------------
    def momenta(self, xp, dtype=None, device=None):
        """Tuple of D arrays ``[*sites]`` with p_mu = 2 pi n_mu / L_mu at each momentum site."""
        grids = np.indices(self.shape).astype(np.float64)
        out = []
        for mu, L in enumerate(self.shape):
            out.append(_site_array(xp, 2.0 * np.pi * grids[mu] / L, dtype or xp.float64,
                                   device))
        return tuple(out)

    def phat_squared(self, xp, dtype=None, device=None):
        """Array ``[*sites]`` of phat^2 = sum_mu 4 sin^2(p_mu / 2) (momentum-space Laplacian)."""
        out = 0.0
        for p in self.momenta(xp, dtype=dtype, device=device):
            out = out + 4.0 * xp.sin(0.5 * p) ** 2
        return out

    def check_field(self, field, internal_ndim: int = 0, name: str = "field"):
        """Raise ``ValueError`` unless ``field`` is ``[batch, *self.shape, <internal_ndim axes>]``."""
        want = 1 + self.dim + internal_ndim
        if field.ndim != want or tuple(field.shape[1:1 + self.dim]) != self.shape:
            raise ValueError(
                f"{name} has shape {tuple(field.shape)}; expected [batch, {', '.join(map(str, self.shape))}"
                + (f", +{internal_ndim} internal axes" if internal_ndim else "") + "]")
