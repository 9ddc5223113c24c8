"""Gradient flows of loop actions as normalizing flows for gauge fields (U(1) and SU(N), any D).

The map
-------
Latent links ``z`` are Haar-distributed (density 1). The flow integrates, for ``t`` from 0 to 1,

    dU_t/dt = Z_t(U_t) U_t,      Z_t = -sum_a (d^a S~_t) T_a,
    S~_t(U) = -sum_i c_i(t) w_i(U),   w_i(U) = sum over the distinct loops of type i of Re Tr W,

with ``d^a`` the left derivative of a link (``U -> exp(s T_a) U``; generators of
:mod:`lattice_ml.groups`, ``Tr T_a T_b = -delta_ab/2``) and loop types ``i`` (``"plaquette"``,
``"rectangle"``, ``"chair"``, ``"polyakov"`` (one type per direction, the loop winding once
around it), or a closed step sequence with all its lattice rotations and reflections; every loop
of a type must have the same length ``n_i`` and pass through each link at most once). Per link,
``Z_mu(x) = -TA(U_mu(x) sum_i c_i(t) S_i,mu(x)) / 2`` with ``S_i,mu`` the staple sum of the
loops of type i through ``U_mu(x)`` — the exponent of a stout step with weights ``rho_i = c_i/2``
(:func:`lattice_ml.smearing.stout.stout_generator`), so the flow is gauge covariant:
``F(g U g^dagger) = g F(U) g^dagger``.

Class functions of loops ("trace functions")
--------------------------------------------
A term may also be a loop type with a class function ``f`` of the loop matrix,
``w_i = sum over the loops of f(W)``: ``"plaquette:re_tr2"`` (``Re Tr W^2``),
``"plaquette:re_tr_sq"`` (``Re (Tr W)^2``), ``"plaquette:abs_tr_sq"`` (``|Tr W|^2``, refused
for U(1) where it is 1), also as a pair ``("plaquette", "re_tr2")`` or ``(steps, "re_tr2")``;
a bare name is ``Re Tr W`` (``"plaquette:re_tr"``). Their vector field is
``Z_l = -sum_i c_i sum_{loops through l} TA(M_i(W_l)) / 2`` (``W_l`` the loop read from the
link, ``M`` with ``d/ds f(e^{sT} W) = Re Tr(T M)``: ``2 W^2``, ``2 (Tr W) W``,
``2 conj(Tr W) W``), and since ``Delta f`` is again a combination of these functions plus a
constant, ``div Z = sum_i c_i n_i sum_W (Delta f_i)(W)`` stays in closed form
(:mod:`lattice_ml.flows.loop_functions`, which also gives the pull-backs). The plain ``Re Tr W``
terms keep the stout vector field and its Numba kernels; the class-function terms are computed
by the array-API code of that module and added to the stage exponents.

Functions of two plaquettes ("plaquette pairs")
-----------------------------------------------
``"plaquette_pair:re_re"`` (``Re Tr W_a Re Tr W_b``), ``"plaquette_pair:im_im"``
(``Im Tr W_a Im Tr W_b``) and ``"plaquette_pair:twice"`` (``Re Tr(W_a W_b)``, the loop through
the shared link twice) sum over the pairs of coplanar plaquettes on either side of every link,
both read from it (``W = U_l S``); together with ``"rectangle"`` (``Re Tr(W_a W_b^dagger)``)
they span a space closed under the group Laplacian, so their divergence is again in closed form
(:mod:`lattice_ml.flows.loop_pairs`: values, vector field, Laplacian, pull-back). They are the
two-plaquette terms of Lüscher's NLO map (:mod:`lattice_ml.flows.trivializing`) in D = 2; in
D > 2 the NLO map also has pairs of plaquettes in different planes, which these terms do not
hold (the map built from them is then its coplanar part only). Their recorded
length in ``lengths`` is 8 (two plaquettes).

The coefficients are smooth in t, ``c_i(t) = sum_j theta_ij P_j(2t - 1)`` with Legendre
polynomials ``P_j``, ``j < n_t``: ``theta`` ``[n_W, n_t]`` is the whole parameter set (the
``n_t x n_W`` count of Bacchio, Kessel, Schaefer & Vaitl, PRD 107 (2023) L051504).

Log-det in closed form
----------------------
Along the flow ``d/dt log|det dU_t/dz| = div Z_t = sum_{links, a} d^a Z^a_t``. For a loop that
passes through every one of its links once, ``d^a d^a Re Tr W = -C Re Tr W`` at each of its
``n_i`` links (``sum_a T_a T_a = -C 1``, ``C = (N^2 - 1)/(2N)`` for SU(N) and ``1/2`` for U(1)),
so

    div Z_t = -C sum_i n_i c_i(t) w_i(U_t)                                          (*)

(for a class-function term ``-C w_i`` becomes ``sum_W (Delta f_i)(W)``, see above) with no
derivative to evaluate: ``log J = int_0^1 div Z_t dt`` is integrated alongside the links.

Integrator and exactness of the density
---------------------------------------
``n_steps`` steps of size ``eps = 1/n_steps`` of a commutator-free Lie-group Runge-Kutta scheme
on ``SU(N)^links x R`` (links and log J together): Lüscher's third-order scheme of the Wilson
flow (``scheme="rk3"``, JHEP 08 (2010) 071, appendix C; stages at ``t, t + eps/4, t + 2 eps/3``,
log J weights ``1/4, 0, 3/4``), or the Lie-Euler step ``exp(eps Z) U`` (``scheme="euler"``, first
order, for tests). The density of a sample, ``log q(U) = -log J``, is the exact density of the
continuous flow evaluated along the discrete trajectory; it differs from the exact density of the
discrete map by ``O(eps^3)`` (rk3; ``O(eps)`` for Euler). Independence Metropolis and
reweighting are then exact for the continuous map's density only up to that error: it is tested
(``tests/test_gradient_flow.py``) that the difference to ``log|det|`` of the dense Jacobian of the
discrete map falls as ``eps^3``, and docs/gauge_flows.md shows its effect on the acceptance
against the statistical error.

Inverse
-------
Each step ``U' = E(U) U`` (``E`` the product of the stage exponentials) is inverted by the
fixed-point iteration ``U <- E(U)^dagger U'`` from the step integrated backwards, a contraction
for ``eps |dZ| < 1``, iterated to round-off (an error names ``n_steps`` if it does not converge
in 200 iterations; a slow contraction is also the sign of a step too large for the coefficients).

Gradients (discrete adjoint)
----------------------------
:meth:`GradientFlow.vjp` is the exact vector-Jacobian product of the discrete map (and of the
quadrature of log J), run backwards through the stages: the exponentials by
:func:`lattice_ml.smearing.expderiv.expm_pullback`, the vector field by
:func:`lattice_ml.smearing.stout.stout_generator_pullback`, the log-det term by (*) whose link
gradient is again a vector field of the form above. With ``memory="constant"`` the links of each
step are recovered by inverting the step (adjoint-state method: memory independent of
``n_steps``, about ``k`` more vector-field evaluations per step for a ``k``-iteration inverse);
with ``memory="states"`` (default) the links at every step are kept (the backward pass evaluates
each step's stages once more); with ``memory="stages"`` also every stage's links, staple sums,
exponent and exponential (about ``3 (n_types + 3)`` link fields per step), so that the backward
pass evaluates no vector field again (the fastest training, for lattices where that fits).

Cotangents of link fields are Lie-algebra fields in matrix form, ``G = sum_a (dL/ds_a) T_a``
``[batch, D, *sites, N, N]`` (so ``G = -action.force(U)`` for ``L = S``); this is the interface of
the other flows (:mod:`lattice_ml.flows.flow`): ``forward``, ``inverse``, ``log_prob``,
``sample``, ``forward_cache``, ``vjp``, ``draw_latent``, ``prior_log_prob``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..backend import asarray, device_of, namespace, real_dtype_of, to_numpy
from ..gauge.paths import link
from ..groups import dagger, expm_algebra, haar_random, project_algebra, trace
from ..smearing.expderiv import expm_pullback
from ..smearing.loop_sets import custom_loops, polyakov_loops, resolve_loops
from ..smearing.stout import stout_generator, stout_generator_pullback
from .loop_functions import (FUNCTIONS, casimir, laplacian, loop_function_field,
                             loop_function_pullback, loop_function_sums, loop_readings)
from .loop_pairs import (PAIR_FUNCTIONS, check_pair_terms, pair_field, pair_laplacian,
                         pair_pullback, pair_readings, pair_sums)

__all__ = ["GradientFlow", "SCHEMES", "casimir", "loop_lengths", "legendre_basis"]

#: commutator-free schemes: stage exponents ``X_{s+1} = sum_j alpha[s][j] eps Z_j``, stage times
#: ``t + c[s] eps``, log-det weights ``q[s]``
SCHEMES = {
    "rk3": {"alpha": ((0.25,), (-17.0 / 36.0, 8.0 / 9.0), (17.0 / 36.0, -8.0 / 9.0, 0.75)),
            "c": (0.0, 0.25, 2.0 / 3.0), "q": (0.25, 0.0, 0.75), "order": 3},
    "euler": {"alpha": ((1.0,),), "c": (0.0,), "q": (1.0,), "order": 1},
}
_NAMED = ("plaquette", "rectangle", "chair", "polyakov")
#: the length recorded for a plaquette-pair term (two plaquettes: 8 link visits)
PAIR_LENGTH = 8


def legendre_basis(t: float, n_t: int) -> np.ndarray:
    """``[P_0(2t - 1), ..., P_{n_t - 1}(2t - 1)]`` (host float64)."""
    u = 2.0 * float(t) - 1.0
    out = np.empty(n_t)
    p_prev, p = 1.0, u
    for j in range(n_t):
        if j == 0:
            out[j] = 1.0
        elif j == 1:
            out[j] = u
        else:
            p_prev, p = p, ((2 * j - 1) * u * p - (j - 1) * p_prev) / j
            out[j] = p
    return out


def _links_of(path, shape):
    pos = [0] * len(shape)
    out = []
    for nu, s in path:
        if s < 0:
            pos[nu] -= 1
        out.append((tuple(p % L for p, L in zip(pos, shape)), nu))
        if s > 0:
            pos[nu] += 1
    return out


def loop_lengths(loopsets, shape) -> list[int]:
    """The length ``n_i`` of the loops of every type (a loop set from
    :func:`~lattice_ml.smearing.loop_sets.resolve_loops`); refuses a type with loops of different
    lengths or a loop that passes through a link twice (then (*) of the module docstring does
    not hold)."""
    out = []
    for by_mu in loopsets:
        lengths = set()
        for paths in by_mu:
            for p in paths:
                links = _links_of(p, shape)
                if len(set(links)) != len(links):
                    raise ValueError(f"loop {p} passes through a link twice on the lattice "
                                     f"{list(shape)}; a gradient flow needs loops that use "
                                     "every link once")
                lengths.add(len(p))
        if len(lengths) != 1:
            raise ValueError(f"a loop type needs loops of one length, got {sorted(lengths)}")
        out.append(lengths.pop())
    return out


def _split_term(item):
    """``(loop, function)`` of one entry of ``loops``: ``"plaquette"``, ``"plaquette:re_tr2"``,
    ``("plaquette", "re_tr2")``, a step sequence or ``(step sequence, "re_tr2")``."""
    if isinstance(item, str):
        loop, _, fname = item.partition(":")
        return loop, (fname or "re_tr")
    item = tuple(item)
    if len(item) == 2 and isinstance(item[1], str):
        return item[0], item[1]
    return item, "re_tr"


def _loop_specs(loops, shape) -> tuple[list, list[str], list[str]]:
    """Terms as ``(specs for resolve_loops, names, class functions)``; "polyakov" gives one type
    per direction."""
    D = len(shape)
    if isinstance(loops, str):
        loops = [loops]
    specs, names, funcs = [], [], []
    for entry in loops:
        item, fname = _split_term(entry)
        if item == "plaquette_pair":
            if fname not in PAIR_FUNCTIONS:
                raise ValueError(f"a plaquette-pair term needs one of "
                                 f"{', '.join(PAIR_FUNCTIONS)}, e.g. 'plaquette_pair:re_re', "
                                 f"not {entry!r}")
            specs.append(None)
            names.append("plaquette_pair:" + fname)
            funcs.append("pair:" + fname)
            continue
        if fname not in FUNCTIONS:
            raise ValueError(f"unknown loop function {fname!r} in {entry!r}; choose from "
                             f"{', '.join(FUNCTIONS)}")
        suffix = "" if fname == "re_tr" else ":" + fname
        if item == "polyakov":
            for mu in range(D):
                specs.append(polyakov_loops(shape[mu], D, mu))
                names.append(f"polyakov_{mu}" + suffix)
                funcs.append(fname)
        elif isinstance(item, str):
            if item not in _NAMED:
                raise ValueError(f"unknown loop type {item!r}; choose from {', '.join(_NAMED)} "
                                 "or give a closed step sequence [(mu, +-1), ...]")
            specs.append(item)
            names.append(item + suffix)
            funcs.append(fname)
        else:
            steps = tuple((int(m), int(s)) for m, s in item)
            specs.append(custom_loops([steps], D))
            names.append("loop" + "".join(f"{'+' if s > 0 else '-'}{m}" for m, s in steps)
                         + suffix)
            funcs.append(fname)
    return specs, names, funcs


class GradientFlow:
    """The gradient flow of a loop action with learned, time-dependent coefficients (module
    docstring).

    Parameters
    ----------
    shape : lattice shape ``(L_0, ..., L_{D-1})``
    N : 1 for U(1), N >= 2 for SU(N)
    xp : array namespace of the parameters and fields
    loops : loop types (names or step sequences; see the module docstring)
    n_t : number of Legendre polynomials in t per loop type
    n_steps : integration steps over ``t in [0, 1]``
    scheme : ``"rk3"`` or ``"euler"``
    theta : initial coefficients ``[n_W, n_t]`` (default zeros: the identity map; see
        :func:`lattice_ml.flows.trivializing.luscher_coefficients`)
    memory : ``"states"`` (keep the links of every step for :meth:`vjp`), ``"stages"`` (also
        every stage's staples and exponentials: no recomputation in :meth:`vjp`) or
        ``"constant"`` (recover the links by inverting the steps)
    dtype : real dtype of the parameters (``xp.float64`` default); the links set the field dtype
    """

    def __init__(self, shape: Sequence[int], N: int, xp, *, loops=("plaquette",), n_t: int = 2,
                 n_steps: int = 8, scheme: str = "rk3", theta=None, memory: str = "states",
                 dtype=None, device=None, exp_method: str = "auto"):
        self.shape = tuple(int(L) for L in shape)
        self.D = len(self.shape)
        if not isinstance(N, int) or N < 1:
            raise ValueError(f"N must be a positive integer (1 for U(1)), got {N!r}")
        self.N = N
        if scheme not in SCHEMES:
            raise ValueError(f"unknown scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
        if not isinstance(n_steps, int) or n_steps < 1:
            raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
        if not isinstance(n_t, int) or n_t < 1:
            raise ValueError(f"n_t must be a positive integer, got {n_t!r}")
        if memory not in ("states", "stages", "constant"):
            raise ValueError(f"memory must be 'states', 'stages' or 'constant', not {memory!r}")
        self.scheme, self.n_steps, self.n_t, self.memory = scheme, n_steps, n_t, memory
        self.exp_method = exp_method
        specs, self.loop_names, self.functions = _loop_specs(loops, self.shape)
        if len(set(self.loop_names)) != len(self.loop_names):
            raise ValueError(f"a term is given twice in loops: {self.loop_names}")
        if N == 1 and "abs_tr_sq" in self.functions:
            raise ValueError("|Tr W|^2 = 1 for U(1): a constant is no flow term")
        #: the plaquette-pair terms ``[(term, function)]`` (:mod:`lattice_ml.flows.loop_pairs`)
        self._pairs = [(i, f[5:]) for i, f in enumerate(self.functions) if f.startswith("pair:")]
        if self._pairs:
            check_pair_terms([f for _, f in self._pairs], N, self.shape)
        loop_idx = [i for i, sp in enumerate(specs) if sp is not None]
        sets = resolve_loops([specs[i] for i in loop_idx], self.D)
        lens = loop_lengths(sets, self.shape)
        all_sets, self.lengths = [None] * len(specs), [PAIR_LENGTH] * len(specs)
        for i, st, n in zip(loop_idx, sets, lens):
            all_sets[i], self.lengths[i] = st, n
        #: per term (row of theta): the loop length n_i
        self.n_w = len(all_sets)
        # the plain Re Tr W terms go through stout_generator (Numba kernels); the other class
        # functions through lattice_ml.flows.loop_functions, grouped by loop type
        self._plain = [i for i, f in enumerate(self.functions) if f == "re_tr"]
        self.loops = [specs[i] for i in self._plain]
        self.loopsets = [all_sets[i] for i in self._plain]
        groups = {}
        for i, f in enumerate(self.functions):
            if f != "re_tr" and not f.startswith("pair:"):
                key = self.loop_names[i].rpartition(":")[0]
                groups.setdefault(key, (all_sets[i], self.lengths[i], []))[2].append((i, f))
        n_sites = math.prod(self.shape)
        #: ``(loops by mu, length n, number of distinct loops, [(term, function), ...])``
        self._tf_types = [(by_mu, n, sum(len(p) for p in by_mu) * n_sites // n, terms)
                          for by_mu, n, terms in groups.values()]
        self.xp = xp
        dtype = dtype or xp.float64
        if theta is None:
            theta = np.zeros((self.n_w, n_t))
        theta = np.asarray(to_numpy(theta), dtype=np.float64)
        if theta.shape != (self.n_w, n_t):
            raise ValueError(f"theta must have shape [n_W, n_t] = [{self.n_w}, {n_t}], got "
                             f"{list(theta.shape)}")
        self.params = {"theta": asarray(theta, xp, dtype=dtype, device=device)}

    def __repr__(self) -> str:
        return (f"GradientFlow(shape={list(self.shape)}, N={self.N}, loops={self.loop_names}, "
                f"n_t={self.n_t}, n_steps={self.n_steps}, scheme={self.scheme!r})")

    @property
    def n_parameters(self) -> int:
        return self.n_w * self.n_t

    # -- prior ---------------------------------------------------------------------------------
    def draw_latent(self, rng):
        """Haar-random links ``[rng.n_chains, D, *shape, N, N]``."""
        return haar_random(rng, (self.D, *self.shape), self.N)

    def prior_log_prob(self, z):
        """``log r(z) = 0`` (the normalised Haar measure), ``[batch]``."""
        xp = namespace(z)
        return xp.zeros((z.shape[0],), dtype=real_dtype_of(xp, z.dtype), device=device_of(z))

    def _check(self, U, name):
        want = (self.D, *self.shape, self.N, self.N)
        if tuple(U.shape[1:]) != want:
            raise ValueError(f"{name} must have shape [batch, {', '.join(map(str, want))}], got "
                             f"{tuple(U.shape)}")

    # -- coefficients --------------------------------------------------------------------------
    def coefficients(self, t: float):
        """``c_i(t)`` ``[n_W]`` (array of the parameters' namespace)."""
        xp = self.xp
        th = self.params["theta"]
        P = asarray(legendre_basis(t, self.n_t), xp, dtype=th.dtype, device=device_of(th))
        return xp.sum(th * P[None, :], axis=1)

    def _rho(self, c, scale):
        """The stout weights of the plain ``Re Tr W`` terms."""
        return [c[i] * (0.5 * scale) for i in self._plain]

    def _host_coefficients(self, t: float) -> list[float]:
        """``c_i(t)`` as host floats (the weights of the class-function terms)."""
        c = np.asarray(to_numpy(self.params["theta"]), dtype=np.float64) @ \
            legendre_basis(t, self.n_t)
        return [float(v) for v in c]

    # -- one step ------------------------------------------------------------------------------
    def _step(self, U, t: float, eps: float, keep: bool, total: bool = False):
        """``(U', dlogJ, record)``; record (with keep) holds what the backward pass needs; with
        ``total`` it is instead ``E``, the product of the stage exponentials (``U' = E U``)."""
        xp = namespace(U)
        sch = SCHEMES[self.scheme]
        C = casimir(self.N)
        W = U
        Zs, stages = [], []
        Etot = None
        dlogJ = 0.0
        for s, alpha in enumerate(sch["alpha"]):
            ts = t + sch["c"][s] * eps
            c = self.coefficients(ts)
            cdt = W.dtype
            Z, staples = None, None
            if self._plain:
                Z, staples = stout_generator(W, [xp.astype(r, real_dtype_of(xp, cdt))
                                                 for r in self._rho(c, eps)], self.loops)
            readings, ch = None, None
            if self._tf_types:
                ch = self._host_coefficients(ts)
                readings = [loop_readings(W, by_mu) for by_mu, _, _, _ in self._tf_types]
                for (_, _, _, terms), rd in zip(self._tf_types, readings):
                    V = loop_function_field(W, rd, {f: eps * ch[i] for i, f in terms})
                    Z = V if Z is None else Z + V
            pairs = None
            if self._pairs:
                ch = self._host_coefficients(ts) if ch is None else ch
                pairs = pair_readings(W)
                V = pair_field(W, pairs, {f: eps * ch[i] for i, f in self._pairs})
                Z = V if Z is None else Z + V
            w, tfs, plap = None, None, None
            if sch["q"][s] != 0.0:
                div = 0.0
                if self._plain:
                    w = self._loop_sums(W, staples)
                    for k, i in enumerate(self._plain):
                        div = div - C * self.lengths[i] * c[i] * w[k]
                if self._tf_types:
                    tfs = [self._tf_divergence_sums(rd, typ)
                           for rd, typ in zip(readings, self._tf_types)]
                    for (_, n, _, terms), lap in zip(self._tf_types, tfs):
                        for i, _ in terms:
                            div = div + (n * ch[i]) * lap[i]
                if self._pairs:
                    plap = self._pair_divergence_sums(pairs)
                    for i, _ in self._pairs:
                        div = div + ch[i] * plap[i]
                dlogJ = dlogJ + sch["q"][s] * eps * div
            Zs.append(Z)
            X = Zs[0] * alpha[0]
            for j in range(1, len(alpha)):
                X = X + Zs[j] * alpha[j]
            E = expm_algebra(X, method=self.exp_method)
            if keep:
                stages.append({"W": W, "t": ts, "c": c, "staples": staples, "w": w, "X": X,
                               "E": E, "readings": readings, "ch": ch, "tf_lap": tfs,
                               "pairs": pairs, "pair_lap": plap})
            if total:
                Etot = E if Etot is None else E @ Etot
            W = E @ W
        return W, dlogJ, (Etot if total else stages)

    def _tf_divergence_sums(self, readings, typ):
        """``{term: sum_W (Delta f)(W)}`` ``[batch]`` for the class-function terms of one loop
        type (:func:`~lattice_ml.flows.loop_functions.laplacian`)."""
        _, n, n_loops, terms = typ
        laps = {i: laplacian(f, self.N) for i, f in terms}
        need = sorted({g for coef, _ in laps.values() for g in coef})
        sums = loop_function_sums(readings, need, n)
        return {i: sum(a * sums[g] for g, a in coef.items()) + const * n_loops
                for i, (coef, const) in laps.items()}

    def _pair_divergence_sums(self, readings):
        """``{term: sum_pairs (Delta g)}`` ``[batch]`` for the plaquette-pair terms
        (:func:`~lattice_ml.flows.loop_pairs.pair_laplacian`, the Laplacian over all links)."""
        laps = {i: pair_laplacian(f, self.N) for i, f in self._pairs}
        need = sorted({g for coef in laps.values() for g in coef})
        sums = pair_sums(readings, need)
        return {i: sum(a * sums[g] for g, a in coef.items()) for i, coef in laps.items()}

    def _loop_sums(self, U, staples):
        """``w_i`` ``[batch]`` per plain type: ``(1/n_i) sum_{x,mu} Re Tr(U_mu S_i,mu)``."""
        xp = namespace(U)
        out = []
        axes = tuple(range(1, self.D + 1))
        for k, i in enumerate(self._plain):
            tot = 0.0
            for mu in range(self.D):
                S = staples[mu][k]
                if S is None:
                    continue
                tot = tot + xp.sum(xp.real(trace(link(U, mu) @ S)), axis=axes)
            out.append(tot / self.lengths[i])
        return out

    def _step_backward(self, stages, eps, G, g_logJ, g_theta):
        """Pull ``G`` (cotangent of the step's output links) and ``g_logJ`` ``[batch]`` back
        through one step; adds to the host array ``g_theta``; returns the input cotangent."""
        xp = namespace(G)
        sch = SCHEMES[self.scheme]
        C = casimir(self.N)
        n = len(stages)
        KZ = [None] * n
        for s in range(n - 1, -1, -1):
            st = stages[s]
            E = st["E"]
            B = dagger(E) @ G
            KX = expm_pullback(st["X"], B)
            G = project_algebra(B @ E)
            for j, a in enumerate(sch["alpha"][s]):
                KZ[j] = KX * a if KZ[j] is None else KZ[j] + KX * a
            # the vector field of stage s (its rho = eps c / 2)
            W, c = st["W"], st["c"]
            rdt = real_dtype_of(xp, W.dtype)
            dc = np.zeros(self.n_w)
            if self._plain:
                rho = [xp.astype(r, rdt) for r in self._rho(c, eps)]
                G_s, g_rho = stout_generator_pullback(W, rho, KZ[s], self.loops,
                                                      st["staples"])
                G = G + G_s
                for k, i in enumerate(self._plain):
                    dc[i] = float(to_numpy(g_rho[k])) * 0.5 * eps
            ch, readings = st["ch"], st["readings"]
            for (_, _, _, terms), rd in zip(self._tf_types, readings or ()):
                G_t, dw = loop_function_pullback(W, rd, {f: eps * ch[i] for i, f in terms},
                                                 KZ[s])
                G = G + G_t
                for i, f in terms:
                    dc[i] += eps * float(to_numpy(dw[f]))
            if self._pairs:
                G_t, dw = pair_pullback(W, st["pairs"], {f: eps * ch[i] for i, f in self._pairs},
                                        KZ[s])
                G = G + G_t
                for i, f in self._pairs:
                    dc[i] += eps * float(to_numpy(dw[f]))
            if sch["q"][s] != 0.0:
                k = sch["q"][s] * eps
                gl = xp.astype(g_logJ, W.dtype)
                Zd = None
                if self._plain:
                    # d div / dU: a vector field with weights n_i c_i / 2 (module docstring, (*))
                    rho_div = [xp.astype(c[i] * (0.5 * self.lengths[i]), rdt)
                               for i in self._plain]
                    Zd, _ = stout_generator(W, rho_div, self.loops, st["staples"])
                    Zd = Zd * (-C)
                    for j, i in enumerate(self._plain):
                        dc[i] += -C * k * self.lengths[i] * float(
                            to_numpy(xp.sum(g_logJ * st["w"][j])))
                for typ, rd, lap in zip(self._tf_types, readings or (), st["tf_lap"] or ()):
                    _, nl, _, terms = typ
                    # d div / dU: the gradient of sum_terms n c (Delta f), a combination of the
                    # class functions with the coefficients of laplacian()
                    wts = {}
                    for i, f in terms:
                        coef, _ = laplacian(f, self.N)
                        for g, a in coef.items():
                            wts[g] = wts.get(g, 0.0) + nl * ch[i] * a
                        dc[i] += k * nl * float(to_numpy(xp.sum(g_logJ * lap[i])))
                    V = loop_function_field(W, rd, wts)
                    Zd = V if Zd is None else Zd + V
                if self._pairs:
                    # d div / dU: the gradient of sum_terms c (Delta g), pair_laplacian's weights
                    wts = {}
                    for i, f in self._pairs:
                        for g, a in pair_laplacian(f, self.N).items():
                            wts[g] = wts.get(g, 0.0) + ch[i] * a
                        dc[i] += k * float(to_numpy(xp.sum(g_logJ * st["pair_lap"][i])))
                    V = pair_field(W, st["pairs"], wts)
                    Zd = V if Zd is None else Zd + V
                if Zd is not None:
                    G = G + (k * gl)[(...,) + (None,) * (Zd.ndim - 1)] * Zd
            g_theta += dc[:, None] * legendre_basis(st["t"], self.n_t)[None, :]
        return G

    def _invert_step(self, V, t: float, eps: float, tol: float, max_iter: int = 200):
        """The links U with ``step(U) = V`` (fixed point ``U <- E(U)^dagger V``) and the step's
        log-det increment at U. (``E`` from its exponentials, not as ``step(U) U^dagger``:
        the latter doubles any deviation from unitarity at every iteration.)"""
        xp = namespace(V)
        U, _, _ = self._step(V, t + eps, -eps, keep=False)     # integrated back: O(eps^2) guess
        err = math.inf
        for it in range(max_iter):
            _, _, E = self._step(U, t, eps, keep=False, total=True)
            U_new = dagger(E) @ V
            prev, err = err, float(xp.max(xp.abs(U_new - U)))
            U = U_new
            # converged: the remaining error of a linear contraction, err r / (1 - r), below tol;
            # or stalled at round-off: no longer contracting (measured, so not at the first
            # iteration) and within 10 tol -- a slow contraction at a larger change is not a
            # stall (with 1e3 tol, complex64 accepted a 2e-3 relative error)
            r = err / prev if 0.0 < prev < math.inf else 1.0
            if err < tol or (r < 1.0 and err * r / (1.0 - r) < tol) or \
                    (prev < math.inf and r > 0.9 and err < 10.0 * tol):
                _, dlogJ, _ = self._step(U, t, eps, keep=False)
                return U, dlogJ
        raise RuntimeError(f"inverting a gradient-flow step did not converge in {max_iter} "
                           f"iterations (last change {err:.2e}); increase n_steps (now "
                           f"{self.n_steps}) or reduce the coefficients")

    def _tol(self, U):
        xp = namespace(U)
        return 50.0 * float(np.finfo(np.float64 if U.dtype == xp.complex128 else
                                      np.float32).eps)

    # -- maps ----------------------------------------------------------------------------------
    def _times(self):
        eps = 1.0 / self.n_steps
        return eps, [k * eps for k in range(self.n_steps)]

    def forward(self, z):
        """``(U, logJ)``: the flowed links and ``log|det dU/dz|`` ``[batch]``."""
        U, logJ, _ = self.forward_cache(z, keep=False)
        return U, logJ

    def forward_cache(self, z, keep: bool = True):
        """``(U, logJ, cache)`` for :meth:`vjp`."""
        self._check(z, "z")
        xp = namespace(z)
        eps, times = self._times()
        logJ = xp.zeros((z.shape[0],), dtype=real_dtype_of(xp, z.dtype), device=device_of(z))
        states, stages = [], []
        U = z
        for t in times:
            if keep and self.memory in ("states", "stages"):
                states.append(U)
            U, d, rec = self._step(U, t, eps, keep=keep and self.memory == "stages")
            if keep and self.memory == "stages":
                stages.append(rec)
            logJ = logJ + d
        return U, logJ, {"states": states if keep and self.memory != "constant" else None,
                         "stages": stages if keep and self.memory == "stages" else None,
                         "out": U}

    def inverse(self, U):
        """``(z, log|det dz/dU|)`` with ``z`` the latent links of ``U``."""
        self._check(U, "U")
        xp = namespace(U)
        eps, times = self._times()
        ld = xp.zeros((U.shape[0],), dtype=real_dtype_of(xp, U.dtype), device=device_of(U))
        tol = self._tol(U)
        for t in reversed(times):
            U, d = self._invert_step(U, t, eps, tol)
            ld = ld - d
        return U, ld

    def log_prob(self, U):
        """``log q(U)`` ``[batch]`` (with respect to the normalised Haar measure)."""
        z, ld = self.inverse(U)
        return self.prior_log_prob(z) + ld

    def sample(self, rng):
        """``(U, log q(U))`` for one Haar draw per chain of ``rng``."""
        z = self.draw_latent(rng)
        U, logJ = self.forward(z)
        return U, self.prior_log_prob(z) - logJ

    def vjp(self, cache, gU, glogJ, need_params: bool = True):
        """Cotangents ``(gz, gparams)`` of ``<gU, U> + <glogJ, logJ>`` (``gU`` an algebra field
        as in the module docstring, ``glogJ`` ``[batch]``) for ``(U, logJ) = forward(z)``."""
        eps, times = self._times()
        g_theta = np.zeros((self.n_w, self.n_t))
        G = gU
        U = cache["out"]
        tol = self._tol(U)
        for k in range(self.n_steps - 1, -1, -1):
            if cache.get("stages") is not None:
                W, stages = cache["states"][k], cache["stages"][k]
            else:
                if cache["states"] is not None:
                    W = cache["states"][k]
                else:
                    W, _ = self._invert_step(U, times[k], eps, tol)
                _, _, stages = self._step(W, times[k], eps, keep=True)
            G = self._step_backward(stages, eps, G, glogJ, g_theta)
            U = W
        if not need_params:
            return G, None
        th = self.params["theta"]
        return G, {"theta": asarray(g_theta, self.xp, dtype=th.dtype, device=device_of(th))}

    def with_n_steps(self, n_steps: int) -> "GradientFlow":
        """The same flow (same parameters, shared) integrated with ``n_steps`` steps."""
        new = object.__new__(GradientFlow)
        new.__dict__.update(self.__dict__)
        if not isinstance(n_steps, int) or n_steps < 1:
            raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
        new.n_steps = n_steps
        return new

    def step_size_check(self, action, z) -> dict:
        """The change of the log-weights ``log w = -S(U) - log q(U)`` of the latent links ``z``
        when the step is halved: ``{"rms": ..., "max": ...}`` over the batch (host floats).

        The map and its log-det both carry an ``O(eps^3)`` integration error (rk3); the density
        error of the samples, which biases a Metropolis test by about ``-cov(O, delta)``, is of
        the size of this change. Below 0.01 the bias is below 1 % of the statistical error of
        any observable for up to ``10^4`` independent samples."""
        out = []
        for flow in (self, self.with_n_steps(2 * self.n_steps)):
            U, lj = flow.forward(z)
            out.append(to_numpy(-action.action(U) + lj))
        d = np.asarray(out[0], dtype=np.float64) - np.asarray(out[1], dtype=np.float64)
        d = d - d.mean()            # a constant shift of log w changes nothing
        return {"rms": float(np.sqrt(np.mean(d * d))), "max": float(np.max(np.abs(d)))}

    # -- parameters ----------------------------------------------------------------------------
    def params_to_host(self) -> dict:
        return {"theta": np.array(to_numpy(self.params["theta"]), copy=True)}

    def load_params(self, host: dict, xp=None, dtype=None, device=None) -> None:
        a = np.asarray(to_numpy(host["theta"]) if isinstance(host, dict) and "theta" in host
                       else None)
        if a is None or a.shape != (self.n_w, self.n_t):
            raise ValueError(f"gradient-flow parameters need 'theta' of shape "
                             f"[{self.n_w}, {self.n_t}]")
        th = self.params["theta"]
        self.params = {"theta": asarray(a, xp or self.xp, dtype=dtype or th.dtype,
                                        device=device)}

    # -- inverse map gradients -----------------------------------------------------------------
    def inverse_cache(self, U):
        """``(z, log|det dz/dU|, cache)`` for :meth:`inverse_vjp` (forward-KL training, path
        gradients): :mod:`lattice_ml.flows.gradient_flow_inverse`."""
        from .gradient_flow_inverse import inverse_cache
        return inverse_cache(self, U)

    def inverse_vjp(self, cache, gz, glogdet, need_params: bool = True):
        """Cotangents ``(gU, gparams)`` of ``<gz, z> + <glogdet, log|det dz/dU|>`` for
        ``(z, logdet) = inverse(U)``: :mod:`lattice_ml.flows.gradient_flow_inverse`."""
        from .gradient_flow_inverse import inverse_vjp
        return inverse_vjp(self, cache, gz, glogdet, need_params)
