"""Wilson (gradient) flow, the energy density E(t) and the scales t0 and w0.

Links ``U[batch, D, *sites, N, N]`` (N = 1 for U(1)); every configuration of the batch flows
independently. See ``docs/gauge.md`` ("Wilson flow and topology") for the derivations.

Flow equation (Lüscher, JHEP 08 (2010) 071, arXiv:1006.4518, eq. (1.3))
-----------------------------------------------------------------------
``dU_t/dt = Z(U_t) U_t`` (Lüscher writes V_t for the flowed field) with ``Z = -g0^2 d S(U)``
(Lie derivative, ``Tr T_a T_b = -delta_ab/2``). With our Wilson action
``S = -(beta/N) sum Re Tr P`` at ``beta = 2N/g0^2`` and the force ``F = -dS = -(beta/(2N)) TA(U V)``
of :class:`~lattice_ml.gauge.GaugeAction`,

    Z_mu(x) = g0^2 F_mu(x) = (2N/beta) F_mu(x) = -TA[ U_mu(x) V_mu(x) ],

where ``V_mu`` is the staple sum of the action (for Wilson the 2(D-1) plaquette staples) — no
coupling appears. With another :class:`GaugeAction` (e.g. ``GaugeAction(beta, N, "symanzik")``:
the Symanzik flow) the generator is ``(2N/beta) force = -TA[U (c0 V_plaq + c1 V_rect)]``, i.e. the
gradient flow of that action at ``g0^2 = 2N/beta``, again beta-independent.

For smooth U(1) fields ``U = exp(i a A)`` this is the heat equation with unit coefficient,
``dA_mu/dt = sum_nu d_nu F_{nu mu} + O(a^2, A^2)`` (tested on a plane wave).

Integrators (:func:`rk3_step`, :func:`euler_step`)
-------------------------------------------------
Lüscher's third-order Runge-Kutta (Williamson 2N-storage) scheme, ``Z_i = eps Z(W_i)``::

    W0 = U_t
    W1 = exp(1/4 Z0) W0
    W2 = exp(8/9 Z1 - 17/36 Z0) W1
    U_{t+eps} = exp(3/4 Z2 - 8/9 Z1 + 17/36 Z0) W2

(global error O(eps^3)); and the Euler step ``U_{t+eps} = exp(eps Z(U_t)) U_t`` (O(eps)).

Energy density (per site, averaged over the lattice; ``[batch]``)
------------------------------------------------------------------
* plaquette: ``E = 2 sum_{mu<nu} Re Tr[1 - P_{mu nu}(x)]``;
* clover: ``E = -1/2 sum_{mu,nu} Re Tr[F_{mu nu}(x) F_{mu nu}(x)]`` with the clover F of
  :mod:`lattice_ml.gauge.topology`.

Both tend to ``-1/2 sum_{mu,nu} Tr(F F) = 1/4 F^a_{mu nu} F^a_{mu nu}`` (lattice units, a^4 E)
for smooth fields, with O(a^2) differences.

Scales
------
``t0``: ``t^2 E(t0) = 0.3``; ``w0``: ``W(w0^2) = 0.3`` with ``W(t) = t d/dt [t^2 E(t)]``
(Borsanyi et al., JHEP 09 (2012) 010). For the plaquette E, ``dE/dt`` is computed exactly
from the flow generator: ``dE/dt = (2/V) sum_{x,mu} Re Tr[Z^W_mu(x) Z_mu(x)]`` with ``Z^W`` the
Wilson generator and ``Z`` the generator of the flow used (the two coincide for the Wilson flow).
For the clover E it is a second-order finite difference on the measurement grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field as dc_field
from functools import lru_cache
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..backend import device_of, namespace, to_numpy
from ..groups import check_links, expm_algebra, project_algebra, trace
from .action import GaugeAction, plaquette_field
from .paths import link
from .topology import clover_field_strength, planes, topological_charge_clover, trace_product

__all__ = ["RK3_COEFFICIENTS", "flow_generator", "euler_step", "rk3_step", "flow_step", "flow",
           "energy_density_plaquette", "energy_density_clover", "energy_density",
           "FlowResult", "wilson_flow", "t0", "w0", "flow_time_derivative"]

#: Lüscher's RK3 coefficients: W1 = exp(a1 Z0) W0; W2 = exp(b2 Z1 + b1 Z0) W1;
#: V = exp(c3 Z2 + c2 Z1 + c1 Z0) W2
RK3_COEFFICIENTS = {"a1": 0.25, "b1": -17.0 / 36.0, "b2": 8.0 / 9.0,
                    "c1": 17.0 / 36.0, "c2": -8.0 / 9.0, "c3": 0.75}


@lru_cache(maxsize=None)
def _wilson(N: int) -> GaugeAction:
    return GaugeAction(1.0, N, "wilson")


def _check_layout(U):
    if U.ndim < 6 or U.shape[-1] != U.shape[-2] or U.shape[1] != U.ndim - 4:
        raise ValueError(f"links of shape {tuple(U.shape)} are not in the layout "
                         "[batch, D, *sites, N, N] with D = number of site axes")


def _flow_action(U, action):
    N = U.shape[-1]
    if action is None:
        return _wilson(N)
    if not hasattr(action, "staple_sum"):
        raise TypeError(f"the flow action must be a GaugeAction (with staple_sum), got {action!r}")
    if getattr(action, "N", N) != N:
        raise ValueError(f"flow action is for N = {action.N} but the links are "
                         f"{N}x{N} matrices")
    return action


def flow_generator(U, action=None):
    """``Z(U) = -g0^2 dS = -TA[U_mu(x) V_mu(x)]``, ``[batch, D, *sites, N, N]`` (Lie algebra).

    ``V_mu`` is ``action.staple_sum`` (default: the Wilson action; then ``Z`` equals
    ``(2N/beta) GaugeAction(beta, N, "wilson").force(U)`` for any beta).
    """
    _check_layout(U)
    xp = namespace(U)
    act = _flow_action(U, action)
    D = U.shape[1]
    parts = []
    for mu in range(D):
        V = act.staple_sum(U, mu)
        if V is None:
            raise ValueError(f"the flow action {act!r} has no loops (nothing to flow with)")
        parts.append(project_algebra(link(U, mu) @ V))
    return -xp.stack(parts, axis=1)


def euler_step(U, eps: float, action=None, Z0=None):
    """One Euler step ``exp(eps Z(U)) U`` (``Z0 = Z(U)`` may be passed if already known)."""
    if Z0 is None:
        Z0 = flow_generator(U, action)
    return expm_algebra(eps * Z0) @ U


def rk3_step(U, eps: float, action=None, Z0=None):
    """One step of Lüscher's RK3 integrator (module doc); ``Z0 = Z(U)`` may be passed."""
    c = RK3_COEFFICIENTS
    if Z0 is None:
        Z0 = flow_generator(U, action)
    Z0 = eps * Z0
    W = expm_algebra(c["a1"] * Z0) @ U
    Z1 = eps * flow_generator(W, action)
    X = c["b2"] * Z1 + c["b1"] * Z0               # 8/9 Z1 - 17/36 Z0
    W = expm_algebra(X) @ W
    Z2 = eps * flow_generator(W, action)
    return expm_algebra(c["c3"] * Z2 - X) @ W     # 3/4 Z2 - 8/9 Z1 + 17/36 Z0


FLOW_INTEGRATORS = {"rk3": rk3_step, "euler": euler_step}


def _integrator(method: str):
    if method not in FLOW_INTEGRATORS:
        raise ValueError(f"unknown flow integrator {method!r}; choose one of "
                         f"{', '.join(FLOW_INTEGRATORS)}")
    return FLOW_INTEGRATORS[method]


def flow_step(U, eps: float, method: str = "rk3", action=None):
    """One flow step of size ``eps`` with ``method`` ``"rk3"`` or ``"euler"``."""
    return _integrator(method)(U, eps, action)


def _n_steps(t: float, eps: float) -> int:
    if not eps > 0:
        raise ValueError(f"flow step eps must be positive, got {eps!r}")
    if not t >= 0:
        raise ValueError(f"flow time must be non-negative, got {t!r}")
    n = int(round(t / eps))
    if abs(n * eps - t) > 1e-9 * max(1.0, t):
        raise ValueError(f"flow time {t} is not a multiple of the step eps = {eps} "
                         f"({t / eps:.6g} steps); choose eps = t / n")
    return n


def flow(U, t: float, eps: float, method: str = "rk3", action=None):
    """The field flowed to time ``t`` with ``t/eps`` steps of ``method`` (layout of U)."""
    _check_layout(U)
    step = _integrator(method)
    for _ in range(_n_steps(t, eps)):
        U = step(U, eps, action)
    return U


# ------------------------------------------------------------------------------------------
# energy density
# ------------------------------------------------------------------------------------------
def _site_mean(x):
    xp = namespace(x)
    return xp.mean(x, axis=tuple(range(1, x.ndim)))


def energy_density_plaquette(U):
    """``E = 2 sum_{mu<nu} <Re Tr(1 - P_{mu nu})>_x`` per configuration, ``[batch]``."""
    _check_layout(U)
    xp = namespace(U)
    N = U.shape[-1]
    total = None
    for mu, nu in planes(U.shape[1]):
        e = _site_mean(N - xp.real(trace(plaquette_field(U, mu, nu))))
        total = e if total is None else total + e
    return 2.0 * total


def energy_density_clover(U):
    """``E = -1/2 sum_{mu,nu} <Re Tr(F_{mu nu} F_{mu nu})>_x`` (clover F), ``[batch]``."""
    _check_layout(U)
    total = None
    for mu, nu in planes(U.shape[1]):
        F = clover_field_strength(U, mu, nu)
        e = _site_mean(trace_product(F, F))
        total = e if total is None else total + e
    return -total  # -1/2 sum_{mu,nu} = -sum_{mu<nu}


def energy_density(U, definition: str = "clover"):
    """``E`` per configuration ``[batch]``, ``definition`` ``"plaquette"`` or ``"clover"``."""
    if definition == "plaquette":
        return energy_density_plaquette(U)
    if definition == "clover":
        return energy_density_clover(U)
    raise ValueError(f"unknown energy density {definition!r}; choose 'plaquette' or 'clover'")


def _plaquette_energy_rate(Z_wilson, Z_flow):
    """``dE_plaq/dt = (2/V) sum_{x,mu} Re Tr[Z^W Z]`` ``[batch]``."""
    tp = trace_product(Z_wilson, Z_flow)              # [batch, D, *sites]
    return (2.0 * tp.shape[1]) * _site_mean(tp)       # mean over D*V entries, times D


# ------------------------------------------------------------------------------------------
# finite differences in t
# ------------------------------------------------------------------------------------------
def _derivative_matrix(t: np.ndarray) -> np.ndarray:
    """``M`` with ``(M f)_i ~ f'(t_i)``: 3-point Lagrange derivative (second order) on any grid."""
    n = t.size
    M = np.zeros((n, n))
    if n == 1:
        M[0, 0] = np.nan
        return M
    if n == 2:
        h = t[1] - t[0]
        M[:, 0], M[:, 1] = -1.0 / h, 1.0 / h
        return M
    for i in range(n):
        j = min(max(i - 1, 0), n - 3)
        idx = (j, j + 1, j + 2)
        x = t[list(idx)]
        for a in range(3):
            others = [x[b] for b in range(3) if b != a]
            den = np.prod([x[a] - o for o in others])
            # d/dt of prod_b (t - x_b) / den at t_i
            M[i, idx[a]] = ((t[i] - others[0]) + (t[i] - others[1])) / den
    return M


def flow_time_derivative(t, f):
    """``df/dt`` of ``f[..., n]`` on the grid ``t[n]``: second-order finite differences
    (3-point Lagrange, one-sided at the ends); returns the namespace and layout of ``f``."""
    xp = namespace(f)
    th = np.asarray(to_numpy(t), dtype=np.float64).reshape(-1)
    if th.size != f.shape[-1]:
        raise ValueError(f"t has {th.size} points but f has {f.shape[-1]} along its last axis")
    M = xp.asarray(_derivative_matrix(th).T, dtype=f.dtype)
    return f @ M


# ------------------------------------------------------------------------------------------
# driver
# ------------------------------------------------------------------------------------------
_NAMED_OBSERVABLES: dict[str, Callable] = {}


def _named_observables():
    if not _NAMED_OBSERVABLES:
        from .observables import average_plaquette

        _NAMED_OBSERVABLES.update({
            "plaquette": average_plaquette,
            "topological_charge": topological_charge_clover,
        })
    return _NAMED_OBSERVABLES


def _resolve_observables(observables) -> dict[str, Callable]:
    if observables is None:
        return {}
    named = _named_observables()
    out: dict[str, Callable] = {}
    items = (observables.items() if isinstance(observables, Mapping)
             else ((name, None) for name in observables))
    for name, fn in items:
        if fn is None:
            if name not in named:
                raise ValueError(f"unknown flow observable {name!r}; named ones are "
                                 f"{', '.join(named)}, or pass a mapping name -> callable(U)")
            fn = named[name]
        if not callable(fn):
            raise TypeError(f"flow observable {name!r} must be callable(U) -> [batch]")
        out[str(name)] = fn
    return out


@dataclass
class FlowResult:
    """What :func:`wilson_flow` measured.

    ``t`` ``[n_meas]`` flow times (real, the namespace of the links); every other history is
    ``[batch, n_meas]``: ``E_plaquette``, ``E_clover``, ``t2E_plaquette``, ``t2E_clover``,
    ``W_plaquette`` (``t d/dt t^2 E`` from the exact derivative along the flow), ``W_clover``
    (finite differences), and ``observables[name]``. ``U`` is the field at the last time.
    """

    t: Any
    E_plaquette: Any
    E_clover: Any
    t2E_plaquette: Any
    t2E_clover: Any
    W_plaquette: Any
    W_clover: Any
    observables: dict = dc_field(default_factory=dict)
    U: Any = None
    eps: float = 0.0
    method: str = "rk3"

    def t0(self, target: float = 0.3, definition: str = "clover"):
        """``t0/a^2`` per configuration (host NumPy ``[batch]``), see :func:`t0`."""
        return t0(self.t, self._pick("t2E", definition), target)

    def w0(self, target: float = 0.3, definition: str = "clover"):
        """``w0/a`` per configuration (host NumPy ``[batch]``), see :func:`w0`."""
        return w0(self.t, self._pick("W", definition), target)

    def _pick(self, what, definition):
        if definition not in ("plaquette", "clover"):
            raise ValueError(f"definition must be 'plaquette' or 'clover', not {definition!r}")
        return getattr(self, f"{what}_{definition}")


def wilson_flow(U, t_max: float, eps: float, measure_every: int = 1,
                observables: Mapping[str, Callable] | Sequence[str] | None = None,
                method: str = "rk3", action=None, check: bool = True) -> FlowResult:
    """Flow ``U`` to ``t_max`` in steps of ``eps`` and measure every ``measure_every`` steps.

    Parameters
    ----------
    U : links ``[batch, D, *sites, N, N]``
    t_max : float
        Final flow time (lattice units); must be a multiple of ``eps``.
    eps : float
        Step size (RK3: 0.01-0.02 is ample at t0, see docs/gauge.md).
    measure_every : int
        Measurements at t = 0, k eps, 2 k eps, ... and always at t_max.
    observables : mapping name -> callable(U) -> [batch], or names
        Extra observables measured along the flow; named ones: ``"plaquette"``,
        ``"topological_charge"`` (clover, D = 4).
    method : ``"rk3"`` (default) or ``"euler"``.
    action : GaugeAction or None
        Flow with the gradient of this action (``None``: Wilson flow); see the module doc.
    check : bool
        Validate the input links first (:func:`lattice_ml.groups.check_links`).

    Returns a :class:`FlowResult` (histories ``[batch, n_meas]``, batch axis first).
    """
    _check_layout(U)
    if check:
        check_links(U)
    if not isinstance(measure_every, (int, np.integer)) or measure_every < 1:
        raise ValueError(f"measure_every must be a positive integer, got {measure_every!r}")
    step = _integrator(method)
    act = _flow_action(U, action)
    is_wilson = action is None or (act.c1 == 0.0 and act.terms in ("all", "plaquette"))
    n = _n_steps(t_max, eps)
    extra = _resolve_observables(observables)
    xp = namespace(U)

    times, Ep, Ec, dEp = [], [], [], []
    hist: dict[str, list] = {k: [] for k in extra}
    for k in range(n + 1):
        Z = flow_generator(U, act)
        if k % measure_every == 0 or k == n:
            times.append(k * eps)
            Ep.append(energy_density_plaquette(U))
            Ec.append(energy_density_clover(U))
            Zw = Z if is_wilson else flow_generator(U, None)
            dEp.append(_plaquette_energy_rate(Zw, Z))
            for name, fn in extra.items():
                hist[name].append(fn(U))
        if k < n:
            U = step(U, eps, act, Z0=Z)

    E_p = xp.stack(Ep, axis=1)
    E_c = xp.stack(Ec, axis=1)
    rdtype = E_p.dtype
    t = xp.asarray(np.asarray(times), dtype=rdtype, device=device_of(U))
    t2 = t * t
    t2E_p = t2 * E_p
    t2E_c = t2 * E_c
    W_p = 2.0 * t2E_p + (t2 * t) * xp.stack(dEp, axis=1)
    W_c = t * flow_time_derivative(np.asarray(times), t2E_c)
    obs = {name: xp.stack(v, axis=1) for name, v in hist.items()}
    return FlowResult(t=t, E_plaquette=E_p, E_clover=E_c, t2E_plaquette=t2E_p,
                      t2E_clover=t2E_c, W_plaquette=W_p, W_clover=W_c, observables=obs, U=U,
                      eps=float(eps), method=method)



# ------------------------------------------------------------------------------------------
# t0 and w0
# ------------------------------------------------------------------------------------------
def _crossing(t: np.ndarray, f: np.ndarray, target: float, what: str, row: int | None):
    """First t where f crosses ``target`` from below: cubic (4-point Lagrange) interpolation
    around the bracketing interval, root by bisection."""
    above = np.flatnonzero(f >= target)
    where = "" if row is None else f" for configuration {row}"
    if above.size == 0:
        i_max = int(np.nanargmax(f))
        raise ValueError(f"{what} never reaches the target {target}{where}: its largest value is "
                         f"{f[i_max]:.4g} at t = {t[i_max]:.4g} (t_max = {t[-1]:.4g}); flow "
                         "longer, or use a lower target on a small lattice")
    i1 = int(above[0])
    if i1 == 0:
        raise ValueError(f"{what} is already >= target {target} at the first time t = {t[0]:.4g}"
                         f"{where}; the crossing is not bracketed")
    i0 = i1 - 1
    lo = max(0, min(i0 - 1, t.size - 4))
    idx = np.arange(lo, min(lo + 4, t.size))
    xs, ys = t[idx], f[idx]

    def poly(x):
        tot = 0.0
        for a in range(xs.size):
            w = 1.0
            for b in range(xs.size):
                if b != a:
                    w *= (x - xs[b]) / (xs[a] - xs[b])
            tot += ys[a] * w
        return tot - target

    a, b = float(t[i0]), float(t[i1])
    fa = poly(a)
    for _ in range(200):
        m = 0.5 * (a + b)
        fm = poly(m)
        if (fm < 0) == (fa < 0):
            a, fa = m, fm
        else:
            b = m
        if b - a <= 1e-15 * max(1.0, abs(b)):
            break
    return 0.5 * (a + b)


def _scale(t, f, target, what):
    th = np.asarray(to_numpy(t), dtype=np.float64)
    fh = np.asarray(to_numpy(f), dtype=np.float64)
    if fh.ndim == 1:
        if th.shape != fh.shape:
            raise ValueError(f"t of shape {th.shape} does not match {what} of shape {fh.shape}")
        return _crossing(th, fh, target, what, None)
    if fh.ndim != 2:
        raise ValueError(f"{what} must be [n] or [batch, n], got shape {fh.shape}")
    if th.ndim == 1:
        th = np.broadcast_to(th, fh.shape)
    if th.shape != fh.shape:
        raise ValueError(f"t of shape {th.shape} does not match {what} of shape {fh.shape}")
    return np.array([_crossing(th[b], fh[b], target, what, b) for b in range(fh.shape[0])])


def t0(t, t2E, target: float = 0.3):
    """``t0/a^2``: the first flow time with ``t^2 E(t) = target``.

    ``t`` ``[n]`` (or ``[batch, n]``) and ``t2E`` ``[batch, n]`` (or ``[n]``), any namespace;
    returns host NumPy ``[batch]`` (or a float). Cubic interpolation between the measurements
    (error O(dt^4) for a smooth history). Raises ``ValueError`` naming the configuration if
    ``t2E`` never reaches ``target``.
    """
    return _scale(t, t2E, target, "t^2 E(t)")


def w0(t, W, target: float = 0.3):
    """``w0/a = sqrt(t*)`` with ``W(t*) = t d/dt[t^2 E](t*) = target`` (see :func:`t0`)."""
    return np.sqrt(_scale(t, W, target, "t d/dt t^2 E(t)"))
