"""Gauge-equivariant parallel-transport convolutions (PTC) and small linear networks of them, as
preconditioners for the Wilson Dirac operator (Lehner & Wettig, PRD 108 (2023) 034503; the layers
of GPT's ``gpt/ml/layer/parallel_transport_convolution.py``).

A PTC layer maps ``n_in`` fermion-field channels to ``n_out``::

    psi_a(x) = sum_{b, p} W^p_ab(x) (T_p phi_b)(x)

over a set of paths ``p``; ``T_p`` transports the field from the end of the path back to ``x``,
and ``W^p_ab`` is an ``s x s`` matrix on spin (``s = n_spin(D)``) for each path, output channel
``a`` and input channel ``b``. It never touches colour, so the layer is exactly gauge covariant:
``U_mu(x) -> g(x) U_mu(x) g(x+mu)^dag`` and ``phi_b(x) -> g(x) phi_b(x)`` give
``psi_a(x) -> g(x) psi_a(x)`` (tested to round-off). :class:`PTC` has one weight per path and
channel pair, shared by all sites; :class:`LocalPTC` (LPTC) has site-dependent weights ``W(x)``.
The layers are linear in ``phi`` (no activation), as in the papers, so a network of them is a
fixed linear operator once trained.

Paths and transports
--------------------
A path is a tuple of steps ``(mu, +1)`` / ``(mu, -1)``; ``()`` is the 0-hop path. One hop::

    T_(mu,+1) phi(x) = U_mu(x) phi(x + mu),      T_(mu,-1) phi(x) = U_mu(x - mu)^dag phi(x - mu),

and a path ``p = (s_1, ..., s_k)`` is ``T_p = T_s1 T_s2 ... T_sk``: the field at
``x + s_1 + ... + s_k`` carried back to ``x`` along the path. ``T_(mu,+1)^dag = T_(mu,-1)``.
The fermion time boundary (direction 0) is folded into the links as in
:class:`lattice_ml.fermions.WilsonDirac`: with ``boundary="antiperiodic"`` a hop across the time
boundary picks up -1. :func:`ptc_paths` gives the standard sets: 0 hops ``[()]``; 1 hop adds the
``2D`` single steps; 2 hops adds the ``2D (2D - 1)`` non-backtracking two-step paths (both orders
of two different directions are separate paths). Paths sharing their last steps share the
transports (a suffix tree): the 2-hop set in 2D costs 16 one-hop transports, 4D 64.

Layouts
-------
* fermion fields ``[batch, *sites, spin, colour]`` (one channel; :class:`PTCNetwork` takes these);
* channel fields ``[batch, *sites, channel, spin, colour]`` (:meth:`PTC.forward` and friends);
* :class:`PTC` weights ``[n_paths, n_out, n_in, spin, spin]`` complex;
  :class:`LocalPTC` weights ``[*sites, n_paths, n_out, n_in, spin, spin]`` complex.

Inside, a field is kept colour-major, ``[batch, *sites, colour, channel * spin]``, so that a hop is
one colour multiplication (elementwise for U(1)) and the weights act as one matrix product.

Gradients
---------
For a real cost ``C`` and a complex array ``z`` the gradient is the complex array
``dC/dRe z + i dC/dIm z`` (the steepest-ascent direction; for ``C = |psi - v|^2`` it is
``2 (psi - v)``). :meth:`PTC.backward` takes that of the output and returns those of the weights
and of the input (hand-written, tested against central differences along random directions of
all weights and all sites)::

    dC/dW^p_ab(x) = sum_colour g_a(x) conj((T_p phi_b)(x))^T      (summed over x for PTC)
    dC/dphi      = sum_p T_p^dag W_p^dag g.

Training (:func:`train_preconditioner`): ``C = <|M D v - v|^2 / |v|^2>`` over random Gaussian
``v`` (random vectors are dominated by the high modes of D, so this trains the high-mode part
of ``M ~ D^-1``), minimised with :class:`lattice_ml.optim.Adam` on the real and imaginary parts.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..backend import complex_dtype_of, device_of, make_complex, namespace, to_numpy
from ..groups import dagger
from ..lattice import shift

__all__ = ["ptc_paths", "ParallelTransport", "PTC", "LocalPTC", "PTCNetwork",
           "train_preconditioner", "TrainingRecord", "complex_to_real_params",
           "real_to_complex_params"]

Step = tuple[int, int]
Path = tuple[Step, ...]


def ptc_paths(D: int, hops: int) -> list[Path]:
    """Paths of at most ``hops`` steps (0, 1 or 2): ``()``, then the single steps
    ``(mu, +-1)``, then the non-backtracking two-step paths ``(s_1, s_2)``, ``s_2 != -s_1``."""
    if D not in (2, 3, 4):
        raise ValueError(f"paths are for D = 2, 3, 4, not {D!r}")
    if hops not in (0, 1, 2):
        raise ValueError(f"hops must be 0, 1 or 2, not {hops!r}")
    steps = [(mu, s) for mu in range(D) for s in (+1, -1)]
    out: list[Path] = [()]
    if hops >= 1:
        out += [(st,) for st in steps]
    if hops >= 2:
        out += [(a, b) for a in steps for b in steps if not (a[0] == b[0] and a[1] == -b[1])]
    return out


def _check_paths(paths, D) -> list[Path]:
    out = []
    for p in paths:
        p = tuple(tuple(int(v) for v in st) for st in p)
        for mu, s in p:
            if not 0 <= mu < D or s not in (1, -1):
                raise ValueError(f"path {p}: steps must be (mu, +1) or (mu, -1) with "
                                 f"0 <= mu < {D}")
        out.append(p)
    if not out:
        raise ValueError("a PTC layer needs at least one path")
    if len(set(out)) != len(out):
        raise ValueError(f"paths must be distinct, got {out}")
    return out


# ------------------------------------------------------------------------------------------
# parallel transport of colour-major fields
# ------------------------------------------------------------------------------------------
class ParallelTransport:
    """One-hop parallel transports on the links ``U[batch, D, *sites, N, N]`` for colour-major
    fields ``[batch, *sites, N, C]`` (any number ``C`` of channel x spin components).

    ``boundary``: ``"antiperiodic"`` (default, as the Wilson operator) or ``"periodic"`` in time
    (direction 0); the sign is folded into the time links once here."""

    def __init__(self, U, boundary: str = "antiperiodic"):
        from .wilson import _check_boundary, _check_link_layout
        D, sites, N = _check_link_layout(U, False)
        self.boundary = _check_boundary(boundary)
        xp = self.xp = namespace(U)
        self.U, self.D, self.sites, self.N = U, D, tuple(sites), N
        self.batch = U.shape[0]
        links = [U[:, mu, ...] for mu in range(D)]
        if self.boundary == "antiperiodic":
            L = sites[0]
            sign = np.ones(L)
            sign[L - 1] = -1.0                       # U_0(x) with x_0 = L - 1 hops across
            sh = [1] * (D + 3)
            sh[1] = L
            s_dev = xp.reshape(xp.asarray(sign, dtype=U.dtype, device=device_of(U)), tuple(sh))
            links[0] = links[0] * s_dev
        if N == 1:
            self._fwd = [lk[..., 0, 0][..., None, None] for lk in links]      # [b, *sites, 1, 1]
            self._bwd = [xp.conj(f) for f in self._fwd]
        else:
            self._fwd = links                                                  # U
            self._bwd = [dagger(lk) for lk in links]                           # U^dag

    def _mul(self, M, z):
        return M * z if self.N == 1 else M @ z

    def hop(self, z, step: Step):
        """``T_step z`` for a colour-major field ``z[batch, *sites, N, C]``."""
        mu, s = step
        if s > 0:                                     # U_mu(x) z(x + mu)
            return self._mul(self._fwd[mu], shift(z, mu, +1))
        return shift(self._mul(self._bwd[mu], z), mu, -1)   # U_mu(x - mu)^dag z(x - mu)

    def hop_dagger(self, z, step: Step):
        """``T_step^dag z = T_(mu, -s) z``."""
        return self.hop(z, (step[0], -step[1]))

    def transport(self, z, path: Path):
        """``T_path z``."""
        for st in reversed(path):
            z = self.hop(z, st)
        return z


class _SuffixTree:
    """Paths sharing their last steps share transports: node = a suffix of a path; the child
    of ``n`` prepends one step, ``value(child) = T_step value(n)``."""

    def __init__(self, paths: Sequence[Path]):
        nodes = {()}
        for p in paths:
            for k in range(len(p)):
                nodes.add(p[k:])
        # parents before children (shorter suffixes first)
        self.order = sorted(nodes, key=lambda n: (len(n), n))
        self.n_hops = len(self.order) - 1

    def forward(self, T: ParallelTransport, z):
        vals = {(): z}
        for n in self.order[1:]:
            vals[n] = T.hop(vals[n[1:]], n[0])
        return vals

    def adjoint(self, T: ParallelTransport, h: dict):
        """``sum_p T_p^dag h[p]`` for ``h`` keyed by path (missing paths count as zero)."""
        acc = dict(h)
        for n in reversed(self.order[1:]):           # children before parents
            if n not in acc:
                continue
            a = T.hop_dagger(acc.pop(n), n[0])
            par = n[1:]
            acc[par] = a if par not in acc else acc[par] + a
        return acc.get(())


# ------------------------------------------------------------------------------------------
# layout conversions
# ------------------------------------------------------------------------------------------
def _to_cm(phi):
    """``[batch, *sites, F, s, N]`` -> colour-major ``[batch, *sites, N, F*s]``."""
    xp = namespace(phi)
    sh = tuple(phi.shape)
    z = xp.reshape(phi, sh[:-3] + (sh[-3] * sh[-2], sh[-1]))
    return xp.matrix_transpose(z)


def _from_cm(z, F, s):
    """Colour-major ``[batch, *sites, N, F*s]`` -> ``[batch, *sites, F, s, N]``."""
    xp = namespace(z)
    zt = xp.matrix_transpose(z)
    sh = tuple(zt.shape)
    return xp.reshape(zt, sh[:-2] + (F, s, sh[-1]))


# ------------------------------------------------------------------------------------------
# layers
# ------------------------------------------------------------------------------------------
class PTC:
    """Parallel-transport convolution ``psi_a = sum_{b,p} W^p_ab T_p phi_b`` with weights shared
    by all sites (see the module docstring).

    Parameters
    ----------
    paths : sequence of paths (e.g. :func:`ptc_paths`)
    n_in, n_out : int
        Input and output channels.
    n_spin : int
        Spin components (2 for D = 2, 4 for D = 4).
    weights : complex array ``[n_paths, n_out, n_in, spin, spin]``, optional
        Initial weights (default zero; see :meth:`init_weights`).
    """

    local = False

    def __init__(self, paths, n_in: int, n_out: int, n_spin: int, weights=None):
        self.paths = [tuple(p) for p in paths]
        if not self.paths:
            raise ValueError("a PTC layer needs at least one path")
        for name, v in (("n_in", n_in), ("n_out", n_out), ("n_spin", n_spin)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, not {v!r}")
        self.n_in, self.n_out, self.n_spin = int(n_in), int(n_out), int(n_spin)
        self._tree = _SuffixTree(self.paths)
        self.weights = weights
        if weights is not None:
            self.weights = self._check_weights(weights)

    # -- weights ------------------------------------------------------------------------------
    def weight_shape(self) -> tuple[int, ...]:
        return (len(self.paths), self.n_out, self.n_in, self.n_spin, self.n_spin)

    def _check_weights(self, W):
        want = self.weight_shape()
        if tuple(W.shape) != want:
            raise ValueError(f"{type(self).__name__} weights have shape {tuple(W.shape)}, "
                             f"expected {want} ([{'*sites, ' if self.local else ''}n_paths, "
                             f"n_out, n_in, spin, spin])")
        xp = namespace(W)
        if not xp.isdtype(W.dtype, "complex floating"):
            raise ValueError(f"weights must be complex, got {W.dtype}")
        return W

    def init_weights(self, xp, scale: float = 0.0, identity: float = 0.0, seed: int = 0,
                     dtype=None, device=None):
        """Weights ``scale * (complex Gaussian) + identity * [p = (), a = b = 0] 1_spin``
        (host NumPy ``default_rng(seed)``); returns and sets them."""
        rng = np.random.default_rng(seed)
        shape = self.weight_shape()
        W = scale * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / math.sqrt(2)
        if identity and () in self.paths:
            i0 = self.paths.index(())
            W[(Ellipsis, i0, 0, 0, slice(None), slice(None))] += identity * np.eye(self.n_spin)
        self.weights = xp.asarray(W, dtype=dtype or xp.complex128, device=device)
        return self.weights

    def _big(self, W):
        """Weights as one matrix ``[..., n_out*s, n_paths*n_in*s]`` (rows (a, s), columns
        (p, b, t))."""
        xp = namespace(W)
        P, Fo, Fi, s = len(self.paths), self.n_out, self.n_in, self.n_spin
        lead = tuple(W.shape[:-5])
        nl = len(lead)
        Wp = xp.permute_dims(W, tuple(range(nl)) + (nl + 1, nl + 3, nl + 0, nl + 2, nl + 4))
        return xp.reshape(Wp, lead + (Fo * s, P * Fi * s))

    def _unbig(self, G):
        xp = namespace(G)
        P, Fo, Fi, s = len(self.paths), self.n_out, self.n_in, self.n_spin
        lead = tuple(G.shape[:-2])
        nl = len(lead)
        G = xp.reshape(G, lead + (Fo, s, P, Fi, s))
        return xp.permute_dims(G, tuple(range(nl)) + (nl + 2, nl + 0, nl + 3, nl + 1, nl + 4))

    # -- colour-major forward / backward (used by PTCNetwork) ---------------------------------
    def _stack(self, T, z):
        vals = self._tree.forward(T, z)
        xp = namespace(z)
        return xp.concat([vals[p] for p in self.paths], axis=-1)     # [b, *sites, N, P*Fi*s]

    def _apply_big(self, Wb, Z):
        """``Z[b, *sites, N, K] -> [b, *sites, N, M]`` with ``M x K`` weights."""
        xp = namespace(Z)
        if not self.local:
            sh = tuple(Z.shape)
            out = xp.reshape(Z, (-1, sh[-1])) @ xp.matrix_transpose(Wb)
            return xp.reshape(out, sh[:-1] + (Wb.shape[-2],))
        return Z @ xp.matrix_transpose(Wb)[None, ...]

    def forward_cm(self, T: ParallelTransport, z, keep: bool = False):
        """Colour-major forward ``[b, *sites, N, n_in*s] -> [b, *sites, N, n_out*s]``; with
        ``keep`` also the stacked transports needed by :meth:`backward_cm`."""
        self._check_ready(T, z)
        Z = self._stack(T, z)
        out = self._apply_big(self._big(self.weights), Z)
        return (out, Z) if keep else out

    def backward_cm(self, T: ParallelTransport, Z, g, need_input: bool = True):
        """Given the stacked transports ``Z`` (from :meth:`forward_cm`) and the output gradient
        ``g`` (colour-major), the weight gradient and (``need_input``) the input gradient."""
        xp = namespace(g)
        K = Z.shape[-1]
        M = g.shape[-1]
        if not self.local:
            dWb = xp.matrix_transpose(xp.reshape(g, (-1, M))) @ xp.conj(xp.reshape(Z, (-1, K)))
        else:
            dWb = xp.sum(xp.matrix_transpose(g) @ xp.conj(Z), axis=0)   # [*sites, M, K]
        dW = self._unbig(dWb)
        if not need_input:
            return dW, None
        Wb = self._big(self.weights)
        # h = W^dag g per path: [b, *sites, N, K] = g @ conj(W)
        if not self.local:
            sh = tuple(g.shape)
            H = xp.reshape(xp.reshape(g, (-1, M)) @ xp.conj(Wb), sh[:-1] + (K,))
        else:
            H = g @ xp.conj(Wb)[None, ...]
        c = self.n_in * self.n_spin
        h = {p: H[..., i * c:(i + 1) * c] for i, p in enumerate(self.paths)}
        return dW, self._tree.adjoint(T, h)

    def _check_ready(self, T, z):
        if self.weights is None:
            raise ValueError(f"{type(self).__name__}: weights are not set (init_weights)")
        if z.shape[-1] != self.n_in * self.n_spin:
            raise ValueError(f"{type(self).__name__}: input has {z.shape[-1]} channel x spin "
                             f"components, expected {self.n_in} x {self.n_spin}")

    # -- public layout [batch, *sites, channel, spin, colour] ---------------------------------
    def forward(self, T: ParallelTransport, phi):
        """``psi[batch, *sites, n_out, spin, colour]`` from ``phi[batch, *sites, n_in, spin,
        colour]``."""
        self._check_field(T, phi, self.n_in)
        return _from_cm(self.forward_cm(T, _to_cm(phi)), self.n_out, self.n_spin)

    def backward(self, T: ParallelTransport, phi, grad_out):
        """``(dC/dW, dC/dphi)`` for the output gradient ``grad_out`` (layout of the output)."""
        self._check_field(T, phi, self.n_in)
        self._check_field(T, grad_out, self.n_out, "output gradient")
        _, Z = self.forward_cm(T, _to_cm(phi), keep=True)
        dW, dz = self.backward_cm(T, Z, _to_cm(grad_out))
        return dW, _from_cm(dz, self.n_in, self.n_spin)

    def _check_field(self, T, phi, F, name="channel field"):
        sh = tuple(phi.shape)
        want = (f"[batch, {', '.join(map(str, T.sites))}, {F} (channel), {self.n_spin} (spin), "
                f"{T.N} (colour)]")
        if len(sh) != len(T.sites) + 4 or sh[1:] != tuple(T.sites) + (F, self.n_spin, T.N):
            raise ValueError(f"{type(self).__name__}: {name} has shape {sh}; expected {want}")

    def __repr__(self) -> str:
        hops = max(len(p) for p in self.paths)
        return (f"{type(self).__name__}(n_in={self.n_in}, n_out={self.n_out}, "
                f"n_paths={len(self.paths)}, max_hops={hops})")


class LocalPTC(PTC):
    """PTC with site-dependent weights ``W^p_ab(x)``, ``[*sites, n_paths, n_out, n_in, s, s]``
    (shared by the configurations of a batch)."""

    local = True

    def __init__(self, paths, n_in: int, n_out: int, n_spin: int, sites: Sequence[int],
                 weights=None):
        self.sites = tuple(int(L) for L in sites)
        super().__init__(paths, n_in, n_out, n_spin, weights)

    def weight_shape(self) -> tuple[int, ...]:
        return self.sites + super().weight_shape()

    def _check_ready(self, T, z):
        super()._check_ready(T, z)
        if tuple(T.sites) != self.sites:
            raise ValueError(f"LocalPTC: weights are for sites {self.sites}, the links have "
                             f"{tuple(T.sites)}")

    @classmethod
    def from_global(cls, layer: PTC, sites: Sequence[int]) -> "LocalPTC":
        """A local layer whose weights are ``layer``'s at every site (a starting point)."""
        xp = namespace(layer.weights)
        sites = tuple(int(L) for L in sites)
        W = xp.broadcast_to(layer.weights, sites + tuple(layer.weights.shape))
        return cls(layer.paths, layer.n_in, layer.n_out, layer.n_spin, sites,
                   weights=xp.asarray(W, copy=True))


# ------------------------------------------------------------------------------------------
# networks
# ------------------------------------------------------------------------------------------
class PTCNetwork:
    """A linear network of PTC layers ``M = L_k ... L_1`` acting on one-channel fermion fields
    ``[batch, *sites, spin, colour]`` (the channel counts must chain from 1 back to 1, e.g.
    1 -> 2 -> 1).

    ``net(T, psi)`` applies it; :meth:`operator` binds links and returns a callable for the
    solvers; :meth:`backward` returns the weight gradients for an output gradient."""

    def __init__(self, layers: Sequence[PTC]):
        self.layers = list(layers)
        if not self.layers:
            raise ValueError("a PTC network needs at least one layer")
        if self.layers[0].n_in != 1 or self.layers[-1].n_out != 1:
            raise ValueError("a PTC network maps one channel to one channel: the first layer "
                             f"has n_in = {self.layers[0].n_in}, the last n_out = "
                             f"{self.layers[-1].n_out}")
        for a, b in zip(self.layers, self.layers[1:]):
            if a.n_out != b.n_in:
                raise ValueError(f"layer channels do not chain: {a} then {b}")
            if a.n_spin != b.n_spin:
                raise ValueError("all layers must have the same number of spin components")
        self.n_spin = self.layers[0].n_spin

    @classmethod
    def build(cls, D: int, channels: Sequence[int], hops: int = 1, xp=None, local_sites=None,
              identity: float = 1.0, scale: float = 1e-3, seed: int = 0, dtype=None,
              device=None) -> "PTCNetwork":
        """Layers with channels ``channels`` (e.g. ``[1, 2, 1]``) on ``ptc_paths(D, hops)``,
        weights ``scale`` x Gaussian plus ``identity ** (1/n_layers)`` on the 0-hop path of
        channel 0 -> 0 (so that the untrained network is ``identity`` times the unit operator).
        ``local_sites``: site-dependent (LPTC) layers on that lattice."""
        from .gamma import n_spin
        s = n_spin(D)
        paths = ptc_paths(D, hops)
        nl = len(channels) - 1
        if nl < 1:
            raise ValueError("channels needs at least two entries, e.g. [1, 1]")
        ident = math.copysign(abs(identity) ** (1.0 / nl), 1.0) if identity else 0.0
        layers = []
        for k, (a, b) in enumerate(zip(channels, channels[1:])):
            lay = (PTC(paths, a, b, s) if local_sites is None
                   else LocalPTC(paths, a, b, s, local_sites))
            sign = -1.0 if (identity < 0 and k == 0) else 1.0
            lay.init_weights(xp, scale=scale, identity=sign * ident, seed=seed + k, dtype=dtype,
                             device=device)
            layers.append(lay)
        return cls(layers)

    # -- parameters ---------------------------------------------------------------------------
    @property
    def weights(self) -> list:
        return [lay.weights for lay in self.layers]

    def set_weights(self, weights) -> None:
        if len(weights) != len(self.layers):
            raise ValueError(f"{len(weights)} weight arrays for {len(self.layers)} layers")
        for lay, W in zip(self.layers, weights):
            lay.weights = lay._check_weights(W)

    def n_parameters(self) -> int:
        """Real parameters (2 per complex weight)."""
        return sum(2 * math.prod(lay.weight_shape()) for lay in self.layers)

    def copy(self) -> "PTCNetwork":
        import copy
        new = copy.copy(self)
        new.layers = [copy.copy(lay) for lay in self.layers]
        for lay in new.layers:
            lay.weights = namespace(lay.weights).asarray(lay.weights, copy=True)
        return new

    # -- application ----------------------------------------------------------------------------
    def _check_psi(self, T, psi):
        sh = tuple(psi.shape)
        want = tuple(T.sites) + (self.n_spin, T.N)
        if len(sh) != len(T.sites) + 3 or sh[1:] != want:
            raise ValueError(f"PTCNetwork: field has shape {sh}; expected [batch, "
                             f"{', '.join(map(str, want))}] ([batch, *sites, spin, colour])")

    def __call__(self, T: ParallelTransport, psi):
        """``M psi`` for ``psi[batch, *sites, spin, colour]``."""
        self._check_psi(T, psi)
        xp = namespace(psi)
        z = xp.matrix_transpose(psi)                  # [b, *sites, N, s] (one channel)
        for lay in self.layers:
            z = lay.forward_cm(T, z)
        return xp.matrix_transpose(z)

    def forward(self, T: ParallelTransport, psi):
        """``(M psi, cache)`` with what :meth:`backward` needs."""
        self._check_psi(T, psi)
        xp = namespace(psi)
        z = xp.matrix_transpose(psi)
        cache = []
        for lay in self.layers:
            z, Z = lay.forward_cm(T, z, keep=True)
            cache.append(Z)
        return xp.matrix_transpose(z), cache

    def backward(self, T: ParallelTransport, cache, grad_out, need_input: bool = False):
        """Weight gradients (list, one per layer) for the output gradient ``grad_out``
        ``[batch, *sites, spin, colour]``; with ``need_input`` also ``dC/dpsi``."""
        xp = namespace(grad_out)
        g = xp.matrix_transpose(grad_out)
        grads = [None] * len(self.layers)
        for k in range(len(self.layers) - 1, -1, -1):
            need = need_input or k > 0
            grads[k], g = self.layers[k].backward_cm(T, cache[k], g, need_input=need)
        if need_input:
            return grads, xp.matrix_transpose(g)
        return grads

    def operator(self, U, boundary: str = "antiperiodic") -> Callable:
        """``v -> M v`` on the links ``U`` (a callable for :func:`fgmres`)."""
        T = U if isinstance(U, ParallelTransport) else ParallelTransport(U, boundary)
        return lambda v: self(T, v)

    def __repr__(self) -> str:
        ch = [self.layers[0].n_in] + [lay.n_out for lay in self.layers]
        kind = "LocalPTC" if self.layers[0].local else "PTC"
        hops = max(len(p) for p in self.layers[0].paths)
        return (f"PTCNetwork({'->'.join(map(str, ch))}, {kind}, hops={hops}, "
                f"parameters={self.n_parameters()})")


# ------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------
def complex_to_real_params(weights) -> list:
    """``[W, ...]`` complex -> ``[{"re": Re W, "im": Im W}, ...]`` for :mod:`lattice_ml.optim`."""
    out = []
    for W in weights:
        xp = namespace(W)
        out.append({"re": xp.real(W), "im": xp.imag(W)})
    return out


def real_to_complex_params(params) -> list:
    """Inverse of :func:`complex_to_real_params`."""
    out = []
    for p in params:
        xp = namespace(p["re"])
        out.append(make_complex(xp, p["re"], p["im"], complex_dtype_of(xp, p["re"].dtype)))
    return out


@dataclass
class TrainingRecord:
    """What :func:`train_preconditioner` did: ``cost[step]`` (the batch estimate of
    ``<|M D v - v|^2 / |v|^2>`` before each update), ``seconds`` (wall time), ``steps``."""

    cost: np.ndarray
    seconds: float
    steps: int
    extra: dict = field(default_factory=dict)


def preconditioner_cost(net: PTCNetwork, T: ParallelTransport, D: Callable, v,
                        need_grad: bool = True):
    """``C = mean_b |M D v_b - v_b|^2 / |v_b|^2`` and (``need_grad``) its weight gradients."""
    from .solvers import norm2
    xp = namespace(v)
    Dv = D(v)
    out, cache = net.forward(T, Dv)
    res = out - v
    vv = norm2(v)
    nb = v.shape[0]
    C = float(to_numpy(xp.sum(norm2(res) / vv))) / nb
    if not need_grad:
        return C, None
    scale = xp.reshape(2.0 / (vv * nb), (nb,) + (1,) * (v.ndim - 1))
    grads = net.backward(T, cache, xp.astype(scale, res.dtype) * res)
    return C, grads


def train_preconditioner(net: PTCNetwork, U, D: Callable, *, steps: int = 200, batch: int = 4,
                         lr: float = 1e-2, seed: int = 0, boundary: str = "antiperiodic",
                         sampler: Callable | None = None, optimizer=None,
                         callback: Callable | None = None) -> TrainingRecord:
    """Train ``net`` in place so that ``M D ~ 1`` on random vectors: Adam on
    ``C = <|M D v - v|^2 / |v|^2>``, a fresh batch of ``batch`` complex Gaussian ``v`` per step
    (host NumPy ``default_rng(seed)``; or ``sampler(step) -> v``). ``U`` are the links of ``D``
    with batch 1 (or a :class:`ParallelTransport`); ``D(v)`` applies the operator to a batch of
    vectors ``[batch, *sites, spin, colour]``. Returns a :class:`TrainingRecord`."""
    from ..optim import Adam
    T = U if isinstance(U, ParallelTransport) else ParallelTransport(U, boundary)
    xp = T.xp
    rng = np.random.default_rng(seed)
    shape = (batch,) + tuple(T.sites) + (net.n_spin, T.N)
    opt = optimizer if optimizer is not None else Adam(lr=lr)
    params = complex_to_real_params(net.weights)
    costs = []
    t0 = time.perf_counter()
    dtype = net.weights[0].dtype
    for k in range(steps):
        if sampler is not None:
            v = sampler(k)
        else:
            h = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / math.sqrt(2)
            v = xp.asarray(h, dtype=dtype, device=device_of(T.U))
        C, grads = preconditioner_cost(net, T, D, v)
        if not math.isfinite(C):
            raise FloatingPointError(f"train_preconditioner: the cost is {C} at step {k} "
                                     f"(lower lr, now {lr})")
        costs.append(C)
        params = opt.step(params, complex_to_real_params(grads))
        net.set_weights(real_to_complex_params(params))
        if callback is not None:
            callback(k, C)
    return TrainingRecord(cost=np.asarray(costs), seconds=time.perf_counter() - t0, steps=steps)
