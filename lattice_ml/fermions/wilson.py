"""The Wilson Dirac operator (r = 1) with an optional clover term, its adjoint, normal operator
and even/odd (Schur) preconditioning.

Layouts
-------
* links ``U[batch, D, L_0, ..., L_{D-1}, N, N]`` complex (N = 1 for U(1)); time is direction 0;
* fermion fields ``psi[batch, L_0, ..., L_{D-1}, spin, colour]`` complex, ``spin = n_spin(D)``
  (2 for D = 2, 3; 4 for D = 4), ``colour = N``. Spin is axis -2, colour axis -1.
  The batch axes of links and fields broadcast (links with batch 1 act on a batch of fields:
  this is how the dense matrix of the operator is built in the tests).

Operator (SPEC section 3; Luescher's normalisation, kappa = 1 / (2 m + 2 D))::

    D_W psi(x) = (m + D) psi(x)
                 - 1/2 sum_mu [ (1 - gamma_mu) U_mu(x) psi(x + mu)
                                + (1 + gamma_mu) U_mu(x - mu)^dag psi(x - mu) ]
                 + c_sw (i/4) sum_{mu,nu} sigma_munu F_munu(x) psi(x)

with ``sigma_munu = (i/2)[gamma_mu, gamma_nu]`` and the clover field strength
``F_munu(x) = (1/8) (Q_munu(x) - Q_munu(x)^dag)``, ``Q_munu`` the sum of the four plaquette
leaves in the (mu, nu) plane at x, all starting and ending at x (anti-hermitian; no trace
removed, so that U(1) and SU(N) are treated alike). The sum over all ordered pairs mu, nu
equals ``c_sw (i/2) sum_{mu<nu} sigma_munu F_munu``. The local part
``A(x) = (m + D) + clover(x)`` is hermitian.

Multiplying by ``2 kappa`` gives the hopping form ``1 - kappa sum_mu [...]`` (without clover).
Boundary conditions: periodic in space; in time (direction 0) antiperiodic by default
(``boundary="antiperiodic"``) or periodic (``boundary="periodic"``): a hop across the time
boundary picks up -1.

Even/odd storage
----------------
Even/odd fields are stored **full size** ``[batch, *sites, spin, colour]`` and are zero on the
sites of the other parity (parity ``(x_0 + ... + x_{D-1}) mod 2``, even = 0). This needs only
masks and no gather/scatter, so it runs unchanged on every array-API namespace; the price is
twice the memory and arithmetic of a compressed half-size layout. All extents must be even.

With ``D = A - H`` (``A`` site-local, ``H`` the hopping term, which connects opposite
parities), the Schur complement on the even sites is

    Dhat_ee = D_ee - D_eo D_oo^{-1} D_oe = A_ee - H_eo A_oo^{-1} H_oe.

``prepare_source(eta)`` returns ``eta_e - D_eo D_oo^{-1} eta_o``; after solving
``Dhat_ee psi_e = prepared``, ``reconstruct(psi_e, eta)`` returns the full solution with
``psi_o = D_oo^{-1} (eta_o - D_oe psi_e)``. ``det D = det D_oo det Dhat_ee`` (tested).

Kernel layout (``layout="lanes"``)
---------------------------------
With ``WilsonDirac(..., layout="lanes")`` (4D SU(3), NumPy arrays of one dtype) the hopping term
runs in the vectorised lanes layout of :mod:`lattice_ml.kernels.wilson_simd` (several sites
per SIMD vector). The links are converted once, when the operator is built; the fields stay
``[batch, *sites, spin, colour]`` at the API. Two places convert a fermion:

* every hop (``apply``, ``apply_eo``, ``prepare_source``, ..., clover or not) converts its input
  to the lanes layout and its result back;
* the solver-level hook: without clover, ``normal`` and ``normal_eo`` carry
  ``solver_layout(b)`` (:func:`lattice_ml.fermions.solvers._common.enter_layout`), through
  which :func:`~lattice_ml.fermions.solvers.cg` converts the right-hand side once at entry and
  the solution once at exit, and applies the operator on the lanes arrays in between (the
  vector updates of CG are layout-free).

Under ``LATTICE_ML_KERNELS=off`` (or a ``kernel_mode("off")`` context) and for arrays other
than NumPy the operator takes the dispatched ``wilson_hop`` as with ``layout="site"``. Results
equal the site layout's to round-off (the sums run in another order).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ..backend import device_of, namespace, real_dtype_of
from ..dispatch import dispatchable
from ..groups import dagger
from ..lattice import Lattice, shift
from ..gauge.paths import link, transport
from .gamma import gamma5, gamma_matrices, n_spin, sigma_munu

__all__ = ["WilsonDirac", "kappa_from_mass", "mass_from_kappa", "clover_field_strength",
           "wilson_hop", "compress_links", "decompress_links"]

_BOUNDARIES = ("antiperiodic", "periodic")
_LAYOUTS = ("site", "lanes")


def kappa_from_mass(mass: float, D: int) -> float:
    """kappa = 1 / (2 m + 2 D)."""
    return 1.0 / (2.0 * mass + 2.0 * D)


def mass_from_kappa(kappa: float, D: int) -> float:
    """m = 1 / (2 kappa) - D."""
    return 1.0 / (2.0 * kappa) - D


# ------------------------------------------------------------------------------------------
# shared helpers (also used by the staggered operator)
# ------------------------------------------------------------------------------------------
def _check_link_layout(U, check_unitary: bool) -> tuple[int, tuple[int, ...], int]:
    shape = tuple(getattr(U, "shape", ()))
    layout = "[batch, D, *sites, N, N] with D = 2, 3 or 4"
    if len(shape) < 6:
        raise ValueError(f"links must have layout {layout}; got shape {shape}")
    D = shape[1]
    if not 2 <= D <= 4 or len(shape) != D + 4:
        raise ValueError(f"links of shape {shape} do not have layout {layout}: axis 1 says "
                         f"D = {D} but there are {len(shape) - 4} site axes")
    if shape[-1] != shape[-2]:
        raise ValueError(f"links must have square colour matrices [.., N, N]; shape {shape}")
    xp = namespace(U)
    if not xp.isdtype(U.dtype, "complex floating"):
        raise ValueError(f"links must be complex (complex64 or complex128), got {U.dtype}")
    if check_unitary:
        from ..groups import check_links
        check_links(U)
    return D, shape[2:2 + D], shape[-1]


def _check_boundary(boundary: str) -> str:
    if boundary not in _BOUNDARIES:
        raise ValueError(f"unknown boundary {boundary!r}; choose 'antiperiodic' or 'periodic' "
                         "(it applies to time, direction 0; space is always periodic)")
    return boundary


def _check_field(psi, sites, n_s, N, batch, name="fermion field"):
    shape = tuple(getattr(psi, "shape", ()))
    D = len(sites)
    want = f"[batch, {', '.join(map(str, sites))}, {n_s} (spin), {N} (colour)]"
    if len(shape) != D + 3:
        raise ValueError(f"{name} has shape {shape} ({len(shape)} axes); expected layout {want}")
    if shape[1:1 + D] != tuple(sites):
        raise ValueError(f"{name} has sites {shape[1:1 + D]} but the links have {tuple(sites)}; "
                         f"expected {want}")
    if shape[-2] != n_s:
        raise ValueError(f"{name} has {shape[-2]} spin components (axis -2), expected {n_s}; "
                         f"layout {want}")
    if shape[-1] != N:
        raise ValueError(f"{name} has {shape[-1]} colours (axis -1) but the links are "
                         f"{N}x{N}; layout {want}")
    if not (shape[0] == batch or shape[0] == 1 or batch == 1):
        raise ValueError(f"{name} has batch {shape[0]} but the links have batch {batch}")
    xp = namespace(psi)
    if not xp.isdtype(psi.dtype, "complex floating"):
        raise ValueError(f"{name} must be complex (complex64 or complex128), got {psi.dtype}")


def colour_mul(M, psi):
    """``(M psi)(x)`` over colour: ``M[batch, *sites, N, N]``, ``psi[batch, *sites, s, N]``;
    spin is carried along. ``(psi M^T)_{s a} = sum_b M_{ab} psi_{s b}``."""
    xp = namespace(M, psi)
    return psi @ xp.matrix_transpose(M)


def _site_field(xp, host, dtype, device):
    """Host array ``[*sites]`` as ``[1, *sites, 1, 1]`` of ``dtype``."""
    a = xp.asarray(np.ascontiguousarray(host, dtype=np.float64), dtype=dtype, device=device)
    return xp.reshape(a, (1,) + tuple(host.shape) + (1, 1))


def _require_even_extents(sites):
    if any(L % 2 for L in sites):
        raise ValueError(f"even/odd preconditioning needs even extents in every direction, "
                         f"got lattice {tuple(sites)}")


def clover_field_strength(U):
    """Clover field strength ``F[mu][nu]`` for mu < nu: a dict ``{(mu, nu): [batch, *sites, N, N]}``
    with ``F_munu = (Q_munu - Q_munu^dag) / 8`` and ``Q_munu`` the four plaquette leaves at x
    (anti-hermitian, trace kept)."""
    D = U.shape[1]
    out = {}
    for mu in range(D):
        for nu in range(mu + 1, D):
            leaves = [((mu, 1), (nu, 1), (mu, -1), (nu, -1)),
                      ((nu, 1), (mu, -1), (nu, -1), (mu, 1)),
                      ((mu, -1), (nu, -1), (mu, 1), (nu, 1)),
                      ((nu, -1), (mu, 1), (nu, 1), (mu, -1))]
            Q = None
            for p in leaves:
                t = transport(U, p)
                Q = t if Q is None else Q + t
            out[(mu, nu)] = (Q - dagger(Q)) / 8.0
    return out


# ------------------------------------------------------------------------------------------
# the hopping term: the hot loop, dispatched to Numba kernels (lattice_ml.kernels.wilson)
# ------------------------------------------------------------------------------------------
def compress_links(U):
    """SU(3) links ``[batch, D, *sites, 3, 3]`` -> their first two rows ``[..., 2, 3]``
    (12 reals per link; :func:`decompress_links` rebuilds the third)."""
    if U.shape[-2:] != (3, 3):
        raise ValueError(f"link compression is for SU(3) links [..., 3, 3]; got shape {U.shape}")
    return U[..., :2, :]


def decompress_links(U12):
    """Two-row SU(3) links ``[..., 2, 3]`` -> full links ``[..., 3, 3]`` with the third row
    ``conj(row0 x row1)`` (exact for SU(3): ``det U = 1``)."""
    xp = namespace(U12)
    if U12.shape[-2:] != (2, 3):
        raise ValueError(f"compressed SU(3) links have shape [..., 2, 3]; got {U12.shape}")
    a, b = U12[..., 0, :], U12[..., 1, :]
    cross = [a[..., k] * b[..., l] - a[..., l] * b[..., k] for k, l in ((1, 2), (2, 0), (0, 1))]
    row2 = xp.conj(xp.stack(cross, axis=-1))
    return xp.concat([U12, row2[..., None, :]], axis=-2)


@dispatchable("wilson_hop")
def wilson_hop(U, psi, sign: int = 1, antiperiodic: bool = True, parity: int | None = None):
    """Wilson hopping term ``H psi`` (``sign = +1``) or ``H^dag psi`` (``sign = -1``)::

        H psi(x) = 1/2 sum_mu [(1 - g_mu) U_mu(x) psi(x+mu) + (1 + g_mu) U_mu(x-mu)^dag psi(x-mu)]

    (``H^dag``: projectors swapped), a hop across the time boundary (direction 0) times -1 if
    ``antiperiodic``. ``U[batch, D, *sites, N, N]`` (or, for SU(3), the compressed two rows
    ``[..., 2, 3]``, see :func:`compress_links`); ``psi[batch, *sites, spin, colour]``.
    ``parity`` (0 even, 1 odd): the result only on the sites of that parity, zero elsewhere
    (the even/odd layout); ``None``: every site. Numba kernels (4D SU(3)) run it for NumPy and
    CuPy arrays (:mod:`lattice_ml.dispatch`)."""
    if U.shape[-2] != U.shape[-1]:
        U = decompress_links(U)
    D = U.shape[1]
    gammas = gamma_matrices(D, namespace(U, psi), dtype=U.dtype, device=device_of(U))
    out = None
    for mu in range(D):
        ap = antiperiodic and mu == 0
        Umu = link(U, mu)
        fwd = colour_mul(Umu, shift(psi, mu, +1, antiperiodic=ap))
        bwd = shift(colour_mul(dagger(Umu), psi), mu, -1, antiperiodic=ap)
        s = fwd + bwd
        d = gammas[mu, ...] @ (fwd - bwd)
        term = s - d if sign > 0 else s + d
        out = term if out is None else out + term
    out = 0.5 * out
    if parity is not None:
        host = _parity_mask_host(tuple(U.shape[2:2 + D]), int(parity))
        out = out * _site_field(namespace(out), host, real_dtype_of(namespace(out), out.dtype),
                                device_of(out))
    return out


@functools.lru_cache(maxsize=16)
def _parity_mask_host(sites: tuple, parity: int) -> np.ndarray:
    """1 on the sites of ``parity``, 0 elsewhere, ``[*sites]`` float64 (host; cached)."""
    mask = (Lattice(sites)._parity_host == parity).astype(np.float64)
    mask.flags.writeable = False
    return mask


# ------------------------------------------------------------------------------------------
# the lanes layout of the hopping kernel (lattice_ml.kernels.wilson_simd)
# ------------------------------------------------------------------------------------------
def _lanes_refusal(U, D: int, N: int) -> str | None:
    """Why the lanes layout cannot hold these links (None if it can)."""
    if D != 4 or N != 3:
        return f"the lanes kernel is for 4D SU(3) links; got D = {D}, N = {N}"
    if not isinstance(U, np.ndarray):
        return f"the lanes kernel takes NumPy arrays; got {type(U).__module__}.{type(U).__name__}"
    if U.dtype not in (np.complex64, np.complex128):
        return f"the lanes kernel is for complex64 or complex128 links; got {U.dtype}"
    return None


def _lanes_enabled() -> bool:
    """The kernel mode lets a CPU kernel run (``auto`` or ``cpu``)."""
    from ..dispatch import current_mode
    return current_mode() in ("auto", "cpu")


class _Lanes:
    """The links of one operator in the lanes layout (converted once) and the conversions of
    fields: what :class:`WilsonDirac` holds with ``layout="lanes"``."""

    def __init__(self, U, lanes, antiperiodic: bool):
        from ..kernels import wilson_simd
        self.simd = wilson_simd
        sites = tuple(U.shape[2:6])
        self.lanes = tuple(lanes) if lanes is not None else wilson_simd.default_lanes(sites,
                                                                                     U.dtype)
        outer = wilson_simd.check_lanes(sites, self.lanes)
        # the kernel's even/odd mode needs every lane of an outer site to have its parity
        self.parity_ok = all(L % 2 == 0 for L in outer)
        self.links = np.ascontiguousarray(wilson_simd.links_to_lanes(U, self.lanes))
        self.dtype = U.dtype
        self.antiperiodic = bool(antiperiodic)
        self._masks: dict[int, np.ndarray] = {}

    def usable(self, psi, parity=None) -> bool:
        """Whether a hop of ``psi`` (NumPy, the links' dtype) can run in the lanes layout now."""
        return (isinstance(psi, np.ndarray) and psi.dtype == self.dtype and psi.ndim == 7
                and (parity is None or self.parity_ok) and _lanes_enabled())

    def to(self, psi):
        return np.ascontiguousarray(self.simd.spinor_to_lanes(psi, self.lanes))

    def back(self, a):
        return self.simd.spinor_from_lanes(a)

    def hop(self, a, sign: int, parity=None):
        """``H a`` / ``H^dag a`` on a lanes array (one parity or all)."""
        return self.simd.wilson_hop_lanes(self.links, a, sign, self.antiperiodic, parity)

    def mask(self, sites, parity: int):
        """1 on the sites of ``parity`` as a real lanes array ``[1, ..., 4, 3, 2, *lanes]``."""
        if parity not in self._masks:
            m = _parity_mask_host(tuple(sites), parity)[None, ..., None, None]
            m = np.broadcast_to(m.astype(self.dtype), (1, *sites, 4, 3))
            self._masks[parity] = self.to(np.ascontiguousarray(m) * (1 + 1j))
        return self._masks[parity]


class _LayoutOperator:
    """A callable ``op(psi)`` on library-layout fields that also tells a solver how to run it
    in the kernel's layout: ``solver_layout(b)`` returns ``(inner, to, back)`` (the operator on
    converted arrays, the conversion of ``b`` (and of a start vector), the conversion of the
    solution back) or ``None`` when ``b`` cannot take that layout (the solver then calls
    ``op`` itself)."""

    def __init__(self, fn, hook=None):
        self._fn, self._hook = fn, hook
        self.__doc__ = fn.__doc__

    def __call__(self, psi):
        return self._fn(psi)

    def solver_layout(self, b):
        return None if self._hook is None else self._hook(b)


# ------------------------------------------------------------------------------------------
class WilsonDirac:
    """Wilson (clover) Dirac operator on the links ``U`` (see the module docstring).

    Parameters
    ----------
    U : array ``[batch, D, *sites, N, N]``
        Gauge links (thin or smeared), complex. The operator keeps a reference.
    mass : float
        Bare mass m (``kappa = 1/(2m + 2D)``).
    boundary : ``"antiperiodic"`` (default) or ``"periodic"``
        Time (direction 0) boundary condition of the fermions.
    csw : float
        Sheikholeslami-Wohlert coefficient (0 = plain Wilson).
    check : bool
        Validate that the links are unitary (``groups.check_links``; one host sync).
    layout : ``"site"`` (default) or ``"lanes"``
        Layout of the hopping kernel. ``"lanes"``: the vectorised CPU kernel
        (:mod:`lattice_ml.kernels.wilson_simd`; 4D SU(3) NumPy links, else ValueError naming
        why), links converted here, fields converted per hop or once per solve (module
        docstring, "Kernel layout").
    lanes : tuple of 4 ints, optional
        The lane split for ``layout="lanes"`` (default
        :func:`lattice_ml.kernels.wilson_simd.default_lanes`).
    """

    def __init__(self, U, mass: float, boundary: str = "antiperiodic", csw: float = 0.0,
                 check: bool = True, layout: str = "site", lanes=None):
        D, sites, N = _check_link_layout(U, check)
        self.boundary = _check_boundary(boundary)
        if layout not in _LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; choose 'site' or 'lanes'")
        if not math.isfinite(float(mass)):
            raise ValueError(f"mass must be finite, got {mass!r}")
        if not (math.isfinite(float(csw)) and float(csw) >= 0.0):
            raise ValueError(f"csw must be a finite number >= 0, got {csw!r}")
        self.U = U
        self.mass = float(mass)
        self.csw = float(csw)
        self.D, self.sites, self.N = D, tuple(sites), N
        self.n_spin = n_spin(D)
        self.lattice = Lattice(self.sites)
        xp = self.xp = namespace(U)
        self.dtype = U.dtype
        self.device = device_of(U)
        self.gammas = gamma_matrices(D, xp, dtype=U.dtype, device=self.device)
        self.diag = self.mass + D
        self._clover = None
        self._A = None
        self._Ainv = None
        self._masks: dict[int, object] = {}
        if self.csw != 0.0:
            F = clover_field_strength(U)
            sig = sigma_munu(D, xp, dtype=U.dtype, device=self.device)
            # clover(x) = csw (i/2) sum_{mu<nu} sigma_munu (x) F_munu(x), kept as a list of terms
            self._clover = [(sig[mu, nu, ...], (0.5j * self.csw) * F[(mu, nu)])
                            for (mu, nu) in F]
        self.layout = layout
        self._lanes = None
        if layout == "lanes":
            why = _lanes_refusal(U, D, N)
            if why is not None:
                raise ValueError(f"layout='lanes': {why}")
            self._lanes = _Lanes(U, lanes, self.boundary == "antiperiodic")

    @property
    def kappa(self) -> float:
        return kappa_from_mass(self.mass, self.D)

    def __repr__(self) -> str:
        return (f"WilsonDirac(D={self.D}, sites={list(self.sites)}, N={self.N}, "
                f"mass={self.mass}, csw={self.csw}, boundary={self.boundary!r}, "
                f"layout={self.layout!r})")

    # -- checks --------------------------------------------------------------------------------
    def _check(self, psi, name="fermion field"):
        _check_field(psi, self.sites, self.n_spin, self.N, self.U.shape[0], name)

    # -- building blocks -----------------------------------------------------------------------
    def _hop(self, psi, sign: int, parity: int | None = None):
        """``sign = +1``: ``H psi = 1/2 sum_mu [(1 - g_mu) U_mu(x) psi(x+mu)
        + (1 + g_mu) U_mu(x-mu)^dag psi(x-mu)]``; ``sign = -1``: ``H^dag`` (projectors swapped);
        ``parity``: only the sites of that parity (see :func:`wilson_hop`). With the lanes
        layout the field is converted to it and back."""
        L = self._lanes
        if L is not None and L.usable(psi, parity):
            return L.back(L.hop(L.to(psi), sign, parity))
        return wilson_hop(self.U, psi, sign, self.boundary == "antiperiodic", parity)

    def _local(self, psi):
        """``A psi = (m + D) psi + clover psi`` (hermitian, site-local)."""
        out = self.diag * psi
        if self._clover is not None:
            for sig, F in self._clover:
                out = out + sig @ colour_mul(F, psi)
        return out

    def _local_matrix(self):
        """Dense site-local ``A(x)`` ``[batch, *sites, s*N, s*N]`` (index spin-major)."""
        if self._A is None:
            xp, s, N = self.xp, self.n_spin, self.N
            eye = xp.eye(s * N, dtype=self.dtype, device=self.device)
            A = None
            for sig, F in self._clover:
                k = sig[:, None, :, None] * F[..., None, :, None, :]
                k = xp.reshape(k, tuple(F.shape[:-2]) + (s * N, s * N))
                A = k if A is None else A + k
            self._A = A + self.diag * eye
        return self._A

    def _local_inv(self, psi):
        """``A^{-1} psi`` (site-local; ``1/(m+D)`` without clover)."""
        if self._clover is None:
            return psi / self.diag
        xp, s, N = self.xp, self.n_spin, self.N
        if self._Ainv is None:
            self._Ainv = xp.linalg.inv(self._local_matrix())
        shp = tuple(psi.shape)
        v = xp.reshape(psi, shp[:-2] + (s * N, 1))
        return xp.reshape(self._Ainv @ v, xp.broadcast_shapes(
            tuple(self._Ainv.shape[:-2]), shp[:-2]) + (s, N))

    def _mask(self, parity: int):
        # built once per operator: on a GPU every rebuild would be a host-to-device copy
        if parity not in self._masks:
            host = _parity_mask_host(self.sites, parity)
            self._masks[parity] = _site_field(self.xp, host, real_dtype_of(self.xp, self.dtype),
                                              self.device)
        return self._masks[parity]

    # -- full operator ---------------------------------------------------------------------------
    def apply(self, psi):
        """``D_W psi`` ``[batch, *sites, spin, colour]``."""
        self._check(psi)
        return self._local(psi) - self._hop(psi, +1)

    def apply_dagger(self, psi):
        """``D_W^dag psi``. Computed directly (``A`` hermitian, hopping projectors swapped);
        equal to ``gamma_5 D_W gamma_5 psi`` for D = 2, 4 (tested)."""
        self._check(psi)
        return self._local(psi) - self._hop(psi, -1)

    @property
    def normal(self):
        """``normal(psi) = D_W^dag D_W psi`` (hermitian, non-negative; positive definite when
        D_W is invertible). With the lanes layout and no clover it carries the solver-level
        hook ``solver_layout`` (module docstring)."""
        return _LayoutOperator(lambda psi: self.apply_dagger(self.apply(psi)),
                               self._lanes_normal if self._lanes_hookable() else None)

    def _lanes_hookable(self) -> bool:
        return self._lanes is not None and self._clover is None

    def _lanes_normal(self, b):
        L = self._lanes
        if not L.usable(b):
            return None
        d = self.diag

        def inner(a):
            y = d * a - L.hop(a, 1)
            return d * y - L.hop(y, -1)
        return inner, L.to, L.back

    def _lanes_normal_eo(self, b):
        L = self._lanes
        if not L.usable(b, 0):
            return None
        d, me = self.diag, L.mask(self.sites, 0)

        def inner(a):
            pe = a * me
            y = d * pe - L.hop(L.hop(pe, 1, 1) / d, 1, 0)
            return d * y - L.hop(L.hop(y, -1, 1) / d, -1, 0)
        return inner, L.to, L.back

    def hopping(self, psi):
        """The off-diagonal part ``H psi`` with ``D_W = A - H`` (see module docstring)."""
        self._check(psi)
        return self._hop(psi, +1)

    def local(self, psi):
        """The site-local part ``A psi = (m + D) psi + clover psi``."""
        self._check(psi)
        return self._local(psi)

    def apply_gamma5(self, psi):
        """``gamma_5 psi`` (D = 2, 4)."""
        g5 = gamma5(self.D, self.xp, dtype=self.dtype, device=self.device)
        return g5 @ psi

    # -- even/odd ------------------------------------------------------------------------------
    def even(self, psi):
        """``psi`` with its odd sites set to zero."""
        _require_even_extents(self.sites)
        return psi * self._mask(0)

    def odd(self, psi):
        """``psi`` with its even sites set to zero."""
        _require_even_extents(self.sites)
        return psi * self._mask(1)

    def apply_eo(self, psi_e):
        """Schur complement ``Dhat_ee psi_e = A_ee psi_e - H_eo A_oo^{-1} H_oe psi_e`` (full-size
        storage; the odd sites of ``psi_e`` are ignored and those of the result are zero)."""
        self._check(psi_e)
        pe = self.even(psi_e)
        return self._local(pe) - self._hop(self._local_inv(self._hop(pe, +1, 1)), +1, 0)

    def apply_eo_dagger(self, psi_e):
        """``Dhat_ee^dag psi_e = A_ee psi_e - H_eo^dag A_oo^{-1} H_oe^dag psi_e``."""
        self._check(psi_e)
        pe = self.even(psi_e)
        return self._local(pe) - self._hop(self._local_inv(self._hop(pe, -1, 1)), -1, 0)

    @property
    def normal_eo(self):
        """``normal_eo(psi_e) = Dhat_ee^dag Dhat_ee psi_e`` (for CG on the even sites); the
        solver-level hook as for :attr:`normal`."""
        return _LayoutOperator(lambda psi_e: self.apply_eo_dagger(self.apply_eo(psi_e)),
                               self._lanes_normal_eo if self._lanes_hookable() else None)

    def prepare_source(self, eta):
        """Even-site source of the Schur system: ``eta_e - D_eo D_oo^{-1} eta_o
        = eta_e + H_eo A_oo^{-1} eta_o``."""
        self._check(eta, "source")
        return self.even(eta) + self._hop(self._local_inv(self.odd(eta)), +1, 0)

    def reconstruct(self, psi_e, eta):
        """Full solution of ``D psi = eta`` from the even-site solution ``psi_e`` of
        ``Dhat_ee psi_e = prepare_source(eta)``: ``psi_o = A_oo^{-1} (eta_o + H_oe psi_e)``."""
        self._check(psi_e)
        self._check(eta, "source")
        pe = self.even(psi_e)
        return pe + self.odd(self._local_inv(self.odd(eta) + self._hop(pe, +1, 1)))
