"""Gauge-equivariant coupling flows for U(1) gauge fields in two dimensions.

After Kanwar, Albergo, Boyda, Cranmer, Hackett, Racanière, Rezende, Shanahan, PRL 125 (2020)
121601, and the U(1) section of Albergo et al., *Introduction to Normalizing Flows for Lattice
Field Theory*, arXiv:2101.08176 (the architecture and masks below are theirs; the code is not).

Variables and layouts
---------------------
Links ``U[batch, 2, L0, L1, 1, 1]`` complex (the library's layout, N = 1), ``U_mu(x) =
exp(i theta_mu(x))``. Inside the flow the links are carried as angles ``theta[batch, 2, L0, L1]``
(real, wrapped to [-pi, pi)). The plaquette angle is

    P(x) = theta_0(x) + theta_1(x + 0^) - theta_0(x + 1^) - theta_1(x)      (wrapped to [-pi, pi))

i.e. ``exp(i P) = U_01(x)`` of :func:`lattice_ml.gauge.plaquette_field`. The conditioner networks
see channels-last fields ``[batch, L0, L1, C]`` (:mod:`lattice_ml.flows.conv`).

One coupling layer (direction mu, offset off; nu = 1 - mu)
---------------------------------------------------------
Plaquettes are split by the coordinate ``x_nu`` modulo 4 (``L_nu`` must be a multiple of 4):

* *active*  ``x_nu = off``: transformed;
* *frozen*  ``x_nu = off + 1, off + 2``: unchanged, the conditioner's input;
* *passive* ``x_nu = off + 3``: changed as a consequence, not used.

The *active links* are ``theta_mu(x)`` with ``x_nu = off``. Each active link lies in exactly one
active plaquette, ``P(x)``, where it enters with the sign ``sigma_mu`` (+1 for mu = 0, -1 for
mu = 1); its other plaquette is passive; no frozen plaquette contains an active link. With the
conditioner output ``(s_1, ..., s_K, t) = net(m_f cos P, m_f sin P)`` (``m_f``: the frozen mask),
the active plaquette angle goes to

    P'(x) = h(P(x); s(x)) + t(x),          h(P; s) = (1/K) sum_k g(P; s_k),
    g(P; s) = 2 atan2(e^s sin(P/2), cos(P/2))      (= 2 atan(e^s tan(P/2)) on [-pi, pi)),

a mixture of K *non-compact projections* (NCP; Rezende et al., ICML 2020, arXiv:2002.02428)
followed by a rotation. Each ``g(.; s)`` is an increasing bijection of [-pi, pi] fixing -pi, 0
and pi, so ``h`` is an orientation-preserving diffeomorphism of the circle and
``P -> h(P) + t`` is one as well. The links follow:

    theta'_mu(x) = theta_mu(x) + sigma_mu m_a(x) [h(P(x)) + t(x) - P(x)],     other links unchanged

(``m_a``: the active mask; ``h(P) - P`` is smooth and 2 pi-periodic, so the branch of P does not
matter). The active plaquette becomes ``P'``; passive ones absorb the change.
The circle transform (and the inverse's Newton solve) is evaluated on the active stripe only,
a quarter of the sites (``[batch, L0/4, L1]`` or ``[batch, L0, L1/4]``); the conditioner sees
the whole field.

**Gauge equivariance.** The update multiplies ``U_mu(x)`` by the phase ``exp(i delta(x))`` with
``delta`` a function of plaquettes only, which are gauge invariant; U(1) phases commute, so
``F(g.U) = g.F(U)`` exactly (``U_mu(x) -> g(x) U_mu(x) g(x+mu)^*``).

**Log-determinant.** In the active link angles the Jacobian is triangular (frozen plaquettes do
not contain active links; an active plaquette contains one active link), with diagonal
``dtheta'/dtheta = 1 + sigma_mu (h' - 1) sigma_mu = h'(P)``:

    log|det dU'/dU| = sum_x m_a(x) log h'(P(x); s(x)),
    h'(P; s) = (1/K) sum_k 1 / (cosh s_k - sinh s_k cos P)

(``g'(P; s) = 1/(e^{-s} cos^2(P/2) + e^s sin^2(P/2))``). The Lie-algebra coordinate of a U(1)
link is ``a = sqrt(2) theta`` (``T_0 = i/sqrt(2)``, ``U -> exp(a T_0) U``), a uniform rescaling of
inputs and outputs, so the log-det in algebra coordinates is the same number.

**Inverse.** The frozen plaquettes (hence ``s, t``) are unchanged by the layer, so ``P`` follows
from ``h(P) = wrap(P' - t)`` by a safeguarded Newton iteration in ``z = ln tan(|P|/2)``
(where every component is a shifted sigmoid; bracket from the single-component inverses,
bisection where a Newton step leaves it, :meth:`NCPMixture.inverse`), to round-off; then the
links move back by ``-sigma_mu m_a (P' - P)``.

Derivatives used by the vjp (``D_k = cosh s_k - sinh s_k cos P``, evaluated as
``e^{-s_k} cos^2(P/2) + e^{s_k} sin^2(P/2)``, a sum of positive terms: the difference form
cancels to 0 in float32 at ``P = 0`` once ``s_k > 8``, which training reaches)::

    dh/dP     = h' = (1/K) sum_k 1/D_k          dh/ds_k = sin P / (K D_k)
    dlog h'/dP   = -(1/(K h')) sum_k sinh s_k sin P / D_k^2
    dlog h'/ds_k = -(sinh s_k - cosh s_k cos P) / (K h' D_k^2)

Flow and conventions
--------------------
Prior: Haar links (``haar_random``), density 1 with respect to the normalised Haar measure, so
``prior_log_prob(z) = 0``. Conditioners ``ConvNet(2, [2, *hidden, K + 1])`` with periodic
convolutions of size ``kernel``, leaky ReLU between and no final activation.

**Layer order.** A layer shifts its passive plaquettes by ``-(P' - P)``. A passive plaquette that
is still Haar-uniform and independent stays so (a uniform angle shifted by anything independent
is uniform), but one that an earlier layer has already shaped is disturbed. The tutorial's cycle
(``mu = i % 2``, ``off = (i // 2) % 4``: offsets ascending) makes an already transformed row
passive in three of the four layers of each direction; descending offsets ``0, 3, 2, 1`` make it
passive in one. The default cycle :data:`DEFAULT_SCHEDULE` is ``(0,0), (0,3), (0,2), (0,1),
(1,0), (1,3), (1,2), (1,1)``; at L = 8, beta = 2 it reaches the tutorial cycle's loss in about a
quarter of the steps (docs/gauge_flows_coupling.md).

``forward(z) -> (U, logJ)``, ``logJ = log|det dU/dz|``; ``log q(U) = -logJ`` at ``z = f^{-1}(U)``.
``inverse_cache(U) -> (z, logdet_inv, caches)`` and ``inverse_vjp(caches, gz, glogdet)`` give
the exact vjp of the inverse (implicit differentiation of ``h(P; s) = P' - t``: ``dP = (dP' - dt
- (dh/ds) ds) / h'``), e.g. the link gradient of ``log q(U)`` for path-gradient training.

Cotangents of links (``gU`` for the output, ``gz`` for the input of :meth:`U1CouplingFlow.vjp`)
are Lie-algebra fields in matrix form ``[batch, 2, L0, L1, 1, 1]``, ``G = (dL/da) T_0`` with
``dL/da`` the left derivative along ``U -> exp(a T_0) U`` (so ``gU = -action.force(U)`` for
``L = S``). In angles: ``dL/dtheta = sqrt(2) dL/da``, hence ``G = (i/2) dL/dtheta`` and
``dL/dtheta = 2 Im G``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..backend import asarray, complex_dtype_of, make_complex, namespace, to_numpy
from ..groups import haar_random
from .coupling import ConvNet

__all__ = ["DEFAULT_SCHEDULE", "TUTORIAL_SCHEDULE", "NCPMixture", "U1PlaquetteCoupling",
           "U1CouplingFlow", "make_u1_coupling_flow",
           "u1_plaquette_angles", "u1_plaquette_angles_transpose", "wrap_angle"]

TWO_PI = 2.0 * math.pi

#: Layer cycle ``(mu, off)`` of :func:`make_u1_coupling_flow`: all mu = 0 layers with the offsets
#: descending, then all mu = 1 layers likewise (see the module docstring).
DEFAULT_SCHEDULE = ((0, 0), (0, 3), (0, 2), (0, 1), (1, 0), (1, 3), (1, 2), (1, 1))
#: The tutorial's cycle (arXiv:2101.08176): ``mu = i % 2``, ``off = (i // 2) % 4``.
TUTORIAL_SCHEDULE = tuple((i % 2, (i // 2) % 4) for i in range(8))


# ------------------------------------------------------------------------------------------
# angles and plaquettes
# ------------------------------------------------------------------------------------------
def wrap_angle(a):
    """``a`` mapped to [-pi, pi) by a multiple of 2 pi (derivative 1 almost everywhere)."""
    xp = namespace(a)
    return a - TWO_PI * xp.floor((a + math.pi) / TWO_PI)


def u1_plaquette_angles(theta):
    """``P[batch, L0, L1]`` = wrap(theta_0(x) + theta_1(x+0) - theta_0(x+1) - theta_1(x)) of
    link angles ``theta[batch, 2, L0, L1]``."""
    xp = namespace(theta)
    t0, t1 = theta[:, 0, ...], theta[:, 1, ...]
    p = t0 + xp.roll(t1, -1, axis=1) - xp.roll(t0, -1, axis=2) - t1
    return wrap_angle(p)


def u1_plaquette_angles_transpose(gP):
    """Cotangent ``gtheta[batch, 2, L0, L1]`` of the link angles for the cotangent ``gP`` of
    :func:`u1_plaquette_angles` (the transpose of the linear map before wrapping)."""
    xp = namespace(gP)
    g0 = gP - xp.roll(gP, 1, axis=2)
    g1 = xp.roll(gP, 1, axis=1) - gP
    return xp.stack([g0, g1], axis=1)


def _links_to_angles(U, dtype):
    xp = namespace(U)
    u = U[..., 0, 0]
    return xp.astype(xp.atan2(xp.imag(u), xp.real(u)), dtype)


def _angles_to_links(theta):
    xp = namespace(theta)
    u = make_complex(xp, xp.cos(theta), xp.sin(theta), complex_dtype_of(xp, theta.dtype))
    return u[..., None, None]


# ------------------------------------------------------------------------------------------
# the circle transform
# ------------------------------------------------------------------------------------------
class NCPMixture:
    """Mixture of K non-compact projections ``h(P; s) = (1/K) sum_k 2 atan2(e^{s_k} sin(P/2),
    cos(P/2))`` on [-pi, pi) (see the module docstring). Angles ``P[...]``, parameters
    ``s[..., K]``."""

    def forward(self, P, s):
        """``(h, log h', cache)`` for ``P`` in [-pi, pi)."""
        xp = namespace(P, s)
        K = s.shape[-1]
        g, c, sn, es, ems, invD = self._parts(P, s)
        h = xp.sum(g, axis=-1) / K
        hp = xp.sum(invD, axis=-1) / K
        return h, xp.log(hp), (c, sn, es, ems, invD, hp, K)

    @staticmethod
    def _parts(P, s):
        """``g_k``, ``cos(P/2)``, ``sin(P/2)``, ``e^{s_k}``, ``e^{-s_k}`` and ``1/D_k`` with
        ``D_k = e^{-s_k} cos^2(P/2) + e^{s_k} sin^2(P/2)`` (``= cosh s_k - sinh s_k cos P``
        without its cancellation, which leaves 0 in float32 at ``P = 0`` once ``s_k > 8``)."""
        xp = namespace(P, s)
        half = 0.5 * P[..., None]
        c, sn = xp.cos(half), xp.sin(half)
        es = xp.exp(s)
        ems = xp.exp(-s)
        g = 2.0 * xp.atan2(es * sn, c)
        return g, c, sn, es, ems, 1.0 / (ems * (c * c) + es * (sn * sn))

    def value(self, P, s):
        """``(h, h')`` only (used by the inverse iteration)."""
        xp = namespace(P, s)
        K = s.shape[-1]
        g, _, _, _, _, invD = self._parts(P, s)
        return xp.sum(g, axis=-1) / K, xp.sum(invD, axis=-1) / K

    def vjp(self, cache, gh, glog):
        """Cotangents ``(gP, gs)`` of ``<gh, h> + <glog, log h'>``."""
        xp = namespace(gh)
        c, sn, es, ems, invD, hp, K = cache
        sinP = 2.0 * sn * c
        invD2 = invD * invD
        w = (glog / hp)[..., None] / K                     # glog / (K h')
        dD_dP = (0.5 * (es - ems)) * sinP                  # sinh s sin P
        dD_ds = es * (sn * sn) - ems * (c * c)             # sinh s - cosh s cos P
        gP = gh * hp - xp.sum(w * dD_dP * invD2, axis=-1)
        gs = gh[..., None] * (sinP * invD / K) - w * dD_ds * invD2
        return gP, gs

    def inverse(self, y, s, max_iter: int = 200):
        """``P`` in [-pi, pi] with ``h(P; s) = y`` for ``y`` in [-pi, pi), to round-off.

        ``h`` is odd, so ``P = sign(y) 2 atan(e^z)`` with ``z`` solving ``H(z) = |y|``,
        ``H(z) = (1/K) sum_k 2 atan(e^{z + s_k})`` (``z = ln tan(|P|/2)``: each component is a
        shifted sigmoid, ``H' = (1/K) sum_k sech(z + s_k) > 0`` and ``|H''| <= H'``, so Newton's
        method converges from within a unit distance of the root; in ``P`` itself it crawls
        where a component with large ``|s_k|`` bends sharply). The root lies between the
        single-component roots ``ln tan(|y|/2) - s_k`` (every term is increasing): Newton from
        the middle of that bracket, bisection where a step leaves it."""
        xp = namespace(y, s)
        eps = float(np.finfo(np.float32 if y.dtype == xp.float32 else np.float64).eps)
        tol = 8.0 * eps * math.pi
        K = s.shape[-1]
        a = xp.clip(xp.abs(y), eps * eps, math.pi * (1.0 - 4.0 * eps))
        lt = xp.log(xp.sin(0.5 * a)) - xp.log(xp.cos(0.5 * a))
        zk = lt[..., None] - s
        lo, hi = xp.min(zk, axis=-1), xp.max(zk, axis=-1)
        z = 0.5 * (lo + hi)
        for _ in range(max_iter):
            e = z[..., None] + s
            ex = xp.exp(-xp.abs(e))
            H = xp.sum(2.0 * xp.atan(xp.tanh(0.5 * e)), axis=-1) / K + 0.5 * math.pi
            dH = xp.sum(2.0 * ex / (1.0 + ex * ex), axis=-1) / K          # sech(z + s_k)
            f = H - a
            if float(xp.max(xp.abs(f))) <= tol or float(xp.max(hi - lo)) <= tol:
                break
            lo = xp.where(f < 0, z, lo)
            hi = xp.where(f > 0, z, hi)
            zn = z - f / dH
            bad = (zn <= lo) | (zn >= hi)
            z = xp.where(bad, 0.5 * (lo + hi), zn)
        P = 0.5 * math.pi + 2.0 * xp.atan(xp.tanh(0.5 * z))                 # 2 atan(e^z)
        return xp.where(y < 0, -P, P)


# ------------------------------------------------------------------------------------------
# one gauge-equivariant coupling layer
# ------------------------------------------------------------------------------------------
def _stripe(shape, nu: int, residues, xp, dtype, device):
    coord = np.indices(tuple(shape))[nu] % 4
    m = np.isin(coord, residues).astype(np.float64)
    return asarray(m, xp, dtype=dtype, device=device)


class U1PlaquetteCoupling:
    """One masked plaquette coupling on 2D U(1) link angles (see the module docstring).

    Parameters
    ----------
    shape : (L0, L1), with ``L_nu`` a multiple of 4 (nu = 1 - mu)
    mu : direction of the active links (0 or 1)
    off : offset of the stripes (0..3)
    net : :class:`~lattice_ml.flows.coupling.ConvNet` with channels ``[2, ..., K + 1]``
    """

    def __init__(self, shape, mu: int, off: int, net: ConvNet, xp, dtype=None, device=None):
        shape = tuple(int(L) for L in shape)
        if len(shape) != 2:
            raise ValueError(f"U(1) coupling layers are two-dimensional, got shape {shape}")
        if mu not in (0, 1):
            raise ValueError(f"mu must be 0 or 1, got {mu!r}")
        nu = 1 - mu
        if shape[nu] % 4:
            raise ValueError(f"the plaquette masks repeat every 4 sites: the extent L{nu} = "
                             f"{shape[nu]} must be a multiple of 4")
        if net.channels[0] != 2 or net.channels[-1] < 2 or net.dim != 2:
            raise ValueError("the conditioner maps 2 channels (cos P, sin P) to K + 1 >= 2 "
                             f"(s_1..s_K, t) on 2D lattices, got channels {net.channels}")
        dtype = dtype or xp.float64
        self.shape, self.mu, self.off, self.net = shape, int(mu), int(off) % 4, net
        self.n_mix = net.channels[-1] - 1
        self.sign = 1.0 if mu == 0 else -1.0
        self.active = _stripe(shape, nu, [self.off], xp, dtype, device)
        self.frozen = _stripe(shape, nu, [(self.off + 1) % 4, (self.off + 2) % 4], xp, dtype,
                              device)
        self.transform = NCPMixture()

    def __repr__(self) -> str:
        return (f"U1PlaquetteCoupling(shape={self.shape}, mu={self.mu}, off={self.off}, "
                f"channels={self.net.channels})")

    def init_params(self, xp, rng, dtype=None, device=None, final_scale: float = 1.0) -> dict:
        return self.net.init_params(xp, rng, dtype, device, final_scale)

    def _conditioner(self, params, P):
        xp = namespace(P)
        cosP, sinP = xp.cos(P), xp.sin(P)
        inp = xp.stack([self.frozen * cosP, self.frozen * sinP], axis=-1)
        out, caches = self.net.forward(params, inp)
        return out, (cosP, sinP, caches)

    def _take(self, a):
        """The active stripe ``x_nu = off (mod 4)`` of ``a[batch, L0, L1, ...]``: ``[batch,
        L0 / 4, L1, ...]`` (nu = 0) or ``[batch, L0, L1 / 4, ...]`` (nu = 1). The circle
        transform is evaluated there only (a quarter of the sites)."""
        xp = namespace(a)
        B, L0, L1 = a.shape[:3]
        rest = tuple(a.shape[3:])
        if self.mu == 1:                                    # nu = 0: rows of axis 1
            return xp.reshape(a, (B, L0 // 4, 4, L1, *rest))[:, :, self.off, ...]
        return xp.reshape(a, (B, L0, L1 // 4, 4, *rest))[:, :, :, self.off, ...]

    def _put(self, a):
        """Inverse of :meth:`_take`: the full field with ``a`` on the active stripe, zeros
        elsewhere."""
        xp = namespace(a)
        zero = xp.zeros_like(a)
        parts = [a if r == self.off else zero for r in range(4)]
        B, n0, n1 = a.shape[:3]
        rest = tuple(a.shape[3:])
        if self.mu == 1:
            return xp.reshape(xp.stack(parts, axis=2), (B, 4 * n0, n1, *rest))
        return xp.reshape(xp.stack(parts, axis=3), (B, n0, 4 * n1, *rest))

    def _move(self, theta, delta):
        """Angles with ``theta_mu += sigma_mu delta`` (wrapped), ``delta`` zero off the active
        stripe."""
        xp = namespace(theta)
        parts = [theta[:, 0, ...], theta[:, 1, ...]]
        parts[self.mu] = wrap_angle(parts[self.mu] + self.sign * delta)
        return xp.stack(parts, axis=1)

    def _sum_sites(self, a):
        return namespace(a).sum(a, axis=(1, 2))

    def forward_cache(self, params, theta):
        """``(theta', logdet, cache)`` for link angles ``theta[batch, 2, L0, L1]``."""
        P = u1_plaquette_angles(theta)
        out, ccache = self._conditioner(params, P)
        Pa, oa = self._take(P), self._take(out)
        h, logdh, mcache = self.transform.forward(Pa, oa[..., :self.n_mix])
        delta = h + oa[..., self.n_mix] - Pa
        return self._move(theta, self._put(delta)), self._sum_sites(logdh), (ccache, mcache)

    def _conditioner_vjp(self, params, ccache, gs, gt, gPa, need_params):
        """Cotangent of the plaquettes ``gP[batch, L0, L1]`` from those of the conditioner
        outputs (``gs``, ``gt``) and of the active plaquettes (``gPa``), all on the active
        stripe, and the parameter cotangents."""
        xp = namespace(gPa)
        cosP, sinP, ncaches = ccache
        gnet = self._put(xp.concat([gs, gt[..., None]], axis=-1))
        ginp, gparams = self.net.vjp(params, ncaches, gnet, need_input=True,
                                     need_params=need_params)
        gP = self._put(gPa) + self.frozen * (cosP * ginp[..., 1] - sinP * ginp[..., 0])
        return gP, gparams

    def vjp(self, params, cache, gout, glogdet, need_params: bool = True):
        """Cotangents ``(gtheta, gparams)`` of ``<gout, theta'> + <glogdet, logdet>``."""
        ccache, mcache = cache
        gdelta = self.sign * self._take(gout[:, self.mu, ...])
        gPa, gs = self.transform.vjp(mcache, gdelta, glogdet[:, None, None])
        gP, gparams = self._conditioner_vjp(params, ccache, gs, gdelta, gPa - gdelta,
                                            need_params)
        return gout + u1_plaquette_angles_transpose(gP), gparams

    def inverse_cache(self, params, theta_out):
        """``(theta, logdet_inv, cache)`` with ``logdet_inv = -logdet`` of the forward map at
        theta; ``cache`` is for :meth:`inverse_vjp`."""
        Pn = u1_plaquette_angles(theta_out)
        out, ccache = self._conditioner(params, Pn)     # frozen plaquettes are unchanged
        Pna, oa = self._take(Pn), self._take(out)
        s = oa[..., :self.n_mix]
        P = self.transform.inverse(wrap_angle(Pna - oa[..., self.n_mix]), s)
        _, logdh, mcache = self.transform.forward(P, s)
        theta = self._move(theta_out, self._put(wrap_angle(P - Pna)))
        return theta, -self._sum_sites(logdh), (ccache, mcache)

    def inverse(self, params, theta_out):
        """``(theta, logdet_inv)`` (:meth:`inverse_cache` without the cache)."""
        theta, ld, _ = self.inverse_cache(params, theta_out)
        return theta, ld

    def inverse_vjp(self, params, cache, gtheta, glogdet, need_params: bool = True):
        """Cotangents ``(gtheta_out, gparams)`` of ``<gtheta, theta> + <glogdet, logdet_inv>``
        for the inverse map (module docstring, *Inverse*: ``P`` solves ``h(P; s) = Pn - t``,
        so ``dP = (d(Pn - t) - dh/ds ds) / h'``)."""
        xp = namespace(gtheta)
        ccache, mcache = cache
        hp = mcache[5]
        gdelta = self.sign * self._take(gtheta[:, self.mu, ...])        # delta = P - Pn
        zero = xp.zeros_like(gdelta)
        gP, gs = self.transform.vjp(mcache, zero, -glogdet[:, None, None])  # via log h'(P; s)
        gy = (gP + gdelta) / hp                                        # y = Pn - t
        gs = gs - self.transform.vjp(mcache, gy, zero)[1]
        gPn, gparams = self._conditioner_vjp(params, ccache, gs, -gy, gy - gdelta,
                                             need_params)
        return gtheta + u1_plaquette_angles_transpose(gPn), gparams


# ------------------------------------------------------------------------------------------
# the flow
# ------------------------------------------------------------------------------------------
class U1CouplingFlow:
    """Stack of :class:`U1PlaquetteCoupling` layers on a Haar prior (see the module docstring).

    Parameters
    ----------
    layers : sequence of :class:`U1PlaquetteCoupling`
    params : ``{"layer<i>": conditioner parameters of layer i}``
    shape : (L0, L1)
    """

    N = 1

    def __init__(self, layers: Sequence[U1PlaquetteCoupling], params: dict, shape,
                 dtype=None):
        self.layers = list(layers)
        self.shape = tuple(int(L) for L in shape)
        if len(self.shape) != 2:
            raise ValueError(f"U1CouplingFlow is two-dimensional, got shape {self.shape}")
        keys = [f"layer{i}" for i in range(len(self.layers))]
        if sorted(params) != sorted(keys):
            raise ValueError(f"flow parameters must have the keys {keys}, got {sorted(params)}")
        self.params = {k: params[k] for k in keys}
        leaf = self.params["layer0"]
        while isinstance(leaf, dict):
            leaf = next(iter(leaf.values()))
        self.dtype = dtype or leaf.dtype

    def __repr__(self) -> str:
        return f"U1CouplingFlow({len(self.layers)} layers, shape={list(self.shape)})"

    @property
    def n_parameters(self) -> int:
        from ..optim import flatten
        return int(sum(math.prod(p.shape) for p in flatten(self.params)[1]))

    def _check(self, U, name):
        want = (2, *self.shape, 1, 1)
        if U.ndim != 6 or tuple(U.shape[1:]) != want:
            raise ValueError(f"{name} must be U(1) links of shape [batch, 2, {self.shape[0]}, "
                             f"{self.shape[1]}, 1, 1], got {tuple(U.shape)}")

    # -- prior ---------------------------------------------------------------------------------
    def draw_latent(self, rng):
        """Haar-random links ``[rng.n_chains, 2, L0, L1, 1, 1]``."""
        return haar_random(rng, (2, *self.shape), 1)

    def prior_log_prob(self, z):
        """Zeros ``[batch]``: the normalised Haar measure has density 1."""
        xp = namespace(z)
        return xp.zeros((z.shape[0],), dtype=self.dtype)

    # -- maps ----------------------------------------------------------------------------------
    def forward_cache(self, z):
        """``(U, logJ, caches)`` for :meth:`vjp`."""
        self._check(z, "z")
        xp = namespace(z)
        theta = _links_to_angles(z, self.dtype)
        logJ = xp.zeros((z.shape[0],), dtype=self.dtype)
        caches = []
        for i, layer in enumerate(self.layers):
            theta, ld, c = layer.forward_cache(self.params[f"layer{i}"], theta)
            logJ = logJ + ld
            caches.append(c)
        return _angles_to_links(theta), logJ, caches

    def forward(self, z):
        """``(U, logJ)``: ``U = f(z)``, ``logJ = log|det dU/dz|`` ``[batch]``."""
        U, logJ, _ = self.forward_cache(z)
        return U, logJ

    def inverse_cache(self, U):
        """``(z, log|det df^{-1}/dU|, caches)`` for :meth:`inverse_vjp`."""
        self._check(U, "U")
        xp = namespace(U)
        theta = _links_to_angles(U, self.dtype)
        ld = xp.zeros((U.shape[0],), dtype=self.dtype)
        caches = [None] * len(self.layers)
        for i in range(len(self.layers) - 1, -1, -1):
            theta, d, caches[i] = self.layers[i].inverse_cache(self.params[f"layer{i}"], theta)
            ld = ld + d
        return _angles_to_links(theta), ld, caches

    def inverse(self, U):
        """``(z, log|det df^{-1}/dU|)`` (``= -logJ`` at ``z``)."""
        z, ld, _ = self.inverse_cache(U)
        return z, ld

    def log_prob(self, U):
        """``log q(U)`` with respect to the normalised Haar measure, ``[batch]``."""
        z, ld = self.inverse(U)
        return self.prior_log_prob(z) + ld

    def sample(self, rng):
        """``(U, log q(U))`` for one Haar draw per chain of ``rng``."""
        z = self.draw_latent(rng)
        U, logJ = self.forward(z)
        return U, self.prior_log_prob(z) - logJ

    def vjp(self, caches, gU, glogJ, need_params: bool = True):
        """Cotangents ``(gz, gparams)`` of ``L`` with ``dL = <gU, dU> + <glogJ, dlogJ>``.

        ``gU`` and ``gz`` are Lie-algebra fields ``[batch, 2, L0, L1, 1, 1]`` in matrix form
        (module docstring); ``glogJ`` is ``[batch]``; ``gparams`` has the structure of
        ``params`` (``None`` with ``need_params=False``)."""
        xp = namespace(gU)
        g = xp.astype(2.0 * xp.imag(gU[..., 0, 0]), self.dtype)
        glogJ = xp.astype(glogJ, self.dtype)
        grads = {}
        for i in range(len(self.layers) - 1, -1, -1):
            g, grads[f"layer{i}"] = self.layers[i].vjp(self.params[f"layer{i}"], caches[i], g,
                                                       glogJ, need_params)
        gz = self._algebra_cotangent(g)
        if not need_params:
            return gz, None
        return gz, {f"layer{i}": grads[f"layer{i}"] for i in range(len(self.layers))}

    def inverse_vjp(self, caches, gz, glogdet, need_params: bool = True):
        """Cotangents ``(gU, gparams)`` of ``L`` with ``dL = <gz, dz> + <glogdet, dlogdet_inv>``
        for the inverse map of :meth:`inverse_cache` (``gz``, ``gU`` Lie-algebra fields in
        matrix form as in :meth:`vjp`; ``glogdet`` ``[batch]``). With ``gz = 0`` and
        ``glogdet = 1`` (summed over the batch), ``gU`` is the gradient of ``log q(U)``, the
        link derivative of the path-gradient estimator. At ``U = f(z)`` the caches of
        :meth:`forward_cache` serve as well (the inverse's intermediates are the forward's: the
        frozen plaquettes and the pre-image ``P``), which saves the Newton solve."""
        xp = namespace(gz)
        g = xp.astype(2.0 * xp.imag(gz[..., 0, 0]), self.dtype)
        glogdet = xp.astype(glogdet, self.dtype)
        grads = {}
        for i in range(len(self.layers)):
            g, grads[f"layer{i}"] = self.layers[i].inverse_vjp(
                self.params[f"layer{i}"], caches[i], g, glogdet, need_params)
        gU = self._algebra_cotangent(g)
        if not need_params:
            return gU, None
        return gU, {f"layer{i}": grads[f"layer{i}"] for i in range(len(self.layers))}

    def _algebra_cotangent(self, g):
        """``G = (i/2) dL/dtheta`` in matrix form ``[batch, 2, L0, L1, 1, 1]``."""
        xp = namespace(g)
        return make_complex(xp, xp.zeros_like(g), 0.5 * g,
                            complex_dtype_of(xp, self.dtype))[..., None, None]

    # -- parameters ----------------------------------------------------------------------------
    def params_to_host(self) -> dict:
        """Copy of the parameters as host NumPy arrays (nested dicts)."""
        def rec(t):
            return {k: rec(v) for k, v in t.items()} if isinstance(t, dict) else \
                np.array(to_numpy(t), copy=True)
        return rec(self.params)

    def load_params(self, host: dict, xp=None, dtype=None, device=None) -> None:
        """Replace the parameters by ``host`` (as from :meth:`params_to_host`); the structure
        and shapes are checked against the current parameters."""
        def rec(cur, new, path):
            if isinstance(cur, dict):
                if not isinstance(new, dict) or sorted(cur) != sorted(new):
                    got = sorted(new) if isinstance(new, dict) else new
                    raise ValueError(f"flow parameters at {path or '<root>'!r}: expected keys "
                                     f"{sorted(cur)}, got {got!r}")
                return {k: rec(cur[k], new[k], f"{path}/{k}" if path else k) for k in cur}
            a = np.asarray(to_numpy(new))
            if tuple(a.shape) != tuple(cur.shape):
                raise ValueError(f"flow parameter {path!r} has shape {tuple(a.shape)}, expected "
                                 f"{tuple(cur.shape)}")
            return asarray(a, xp or namespace(cur), dtype=dtype or cur.dtype, device=device)
        self.params = rec(self.params, host, "")


def make_u1_coupling_flow(shape: Sequence[int], xp, *, n_layers: int = 16,
                          hidden: Sequence[int] = (8, 8), kernel: int = 3, n_mix: int = 6,
                          hidden_activation: str = "leaky_relu", final_scale: float = 1.0,
                          schedule: Sequence[tuple[int, int]] | None = None,
                          seed: int = 0, dtype=None, device=None) -> U1CouplingFlow:
    """Gauge-equivariant coupling flow for 2D U(1) links on an ``L0 x L1`` torus (the extent
    ``L_nu`` across the stripes of every direction used must be a multiple of 4).

    Layer ``i`` is ``U1PlaquetteCoupling(mu, off)`` with ``(mu, off) = schedule[i % len]``;
    the default :data:`DEFAULT_SCHEDULE` runs the four mu = 0 offsets descending (0, 3, 2, 1),
    then the mu = 1 ones; :data:`TUTORIAL_SCHEDULE` is the tutorial's ascending alternating
    cycle. Each conditioner is a ConvNet with channels ``[2, *hidden, n_mix + 1]``, kernel
    ``kernel``, ``hidden_activation`` after hidden convolutions and no final activation. The
    defaults are the tutorial's architecture (arXiv:2101.08176: 16 layers, hidden [8, 8], kernel
    3) except ``n_mix = 6`` NCP components (the tutorial has 2) and the layer order (both
    measured to train faster: docs/gauge_flows_coupling.md). Weights come from a NumPy
    generator seeded with ``seed`` (PyTorch's uniform initialisation; ``final_scale < 1``
    shrinks the last convolution, starting the flow closer to the identity).
    """
    if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
        raise ValueError(f"n_layers must be a positive integer, got {n_layers!r}")
    if isinstance(n_mix, bool) or not isinstance(n_mix, int) or n_mix < 1:
        raise ValueError(f"n_mix must be a positive integer, got {n_mix!r}")
    dtype = dtype or xp.float64
    rng = np.random.default_rng(seed)
    layers, params = [], {}
    if schedule is None:
        schedule = DEFAULT_SCHEDULE
    schedule = [tuple(int(v) for v in pair) for pair in schedule]
    if not schedule:
        raise ValueError("schedule must hold at least one (mu, off) pair")
    for i in range(n_layers):
        mu, off = schedule[i % len(schedule)]
        net = ConvNet(2, [2, *hidden, n_mix + 1], kernel, hidden_activation, "identity")
        layer = U1PlaquetteCoupling(shape, mu, off, net, xp, dtype, device)
        layers.append(layer)
        params[f"layer{i}"] = layer.init_params(xp, rng, dtype, device, final_scale)
    return U1CouplingFlow(layers, params, shape, dtype=dtype)
