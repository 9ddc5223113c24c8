"""Gauge observables on links ``U[batch, D, *sites, N, N]`` (time = direction 0).

All per-configuration estimators return arrays with the batch axis first and are averaged over
the lattice; traces are normalised by N.

* plaquette: ``P = <Re Tr P_{mu nu}(x)> / N`` over sites and the D(D-1)/2 planes (SPEC sec. 3);
* rectangle: the same for the 2x1 loops, both orientations;
* Wilson loop ``W(R, T)``: R x T loops with T along time and R along each spatial direction;
  Creutz ratio ``chi(R, T) = -ln[W(R,T) W(R-1,T-1) / (W(R,T-1) W(R-1,T))]`` (of ensemble means);
* Polyakov loop: ``L = (1/V_s) sum_xvec Tr[prod_t U_0(t, xvec)] / N`` (complex), per configuration;
* topological charge of 2D U(1): ``Q = (1/2 pi) sum_x arg P_01(x)`` with arg in (-pi, pi],
  an integer on every configuration (geometric definition).
"""

from __future__ import annotations

import math

from ..backend import namespace
from ..groups import trace
from .action import plaquette_field
from .paths import transport

__all__ = ["plaquette_per_plane", "average_plaquette", "average_rectangle", "wilson_loop",
           "creutz_ratio", "polyakov_loop", "topological_charge_2d"]


def _site_mean(x):
    xp = namespace(x)
    return xp.mean(x, axis=tuple(range(1, x.ndim)))


def _planes(D):
    return [(mu, nu) for mu in range(D) for nu in range(mu + 1, D)]


def plaquette_per_plane(U):
    """``[batch, D(D-1)/2]``: <Re Tr P_{mu nu}>/N per plane, planes ordered (0,1), (0,2), ..."""
    xp = namespace(U)
    N = U.shape[-1]
    cols = [_site_mean(xp.real(trace(plaquette_field(U, mu, nu)))) / N
            for mu, nu in _planes(U.shape[1])]
    return xp.stack(cols, axis=1)


def average_plaquette(U):
    """``[batch]``: plaquette averaged over sites and planes, ``<Re Tr P>/N``."""
    xp = namespace(U)
    return xp.mean(plaquette_per_plane(U), axis=1)


def _rect_loop(mu, nu, a, b):
    """a x b loop: a steps along mu, b along nu."""
    return (((mu, 1),) * a + ((nu, 1),) * b + ((mu, -1),) * a + ((nu, -1),) * b)


def average_rectangle(U):
    """``[batch]``: <Re Tr R>/N over sites and all 2x1 and 1x2 rectangles."""
    xp = namespace(U)
    N = U.shape[-1]
    vals = []
    for mu, nu in _planes(U.shape[1]):
        for a, b in ((2, 1), (1, 2)):
            vals.append(_site_mean(xp.real(trace(transport(U, _rect_loop(mu, nu, a, b))))) / N)
    return xp.mean(xp.stack(vals, axis=1), axis=1)


def wilson_loop(U, R: int, T: int):
    """``[batch]``: <Re Tr W(R, T)>/N, T along time (direction 0), R along every spatial
    direction (averaged)."""
    xp = namespace(U)
    N = U.shape[-1]
    D = U.shape[1]
    if R < 1 or T < 1:
        raise ValueError(f"Wilson loop extents must be >= 1, got R = {R}, T = {T}")
    vals = [_site_mean(xp.real(trace(transport(U, _rect_loop(k, 0, R, T))))) / N
            for k in range(1, D)]
    return xp.mean(xp.stack(vals, axis=1), axis=1)


def creutz_ratio(w_rt: float, w_r1t1: float, w_rt1: float, w_r1t: float) -> float:
    """chi(R,T) = -ln[W(R,T) W(R-1,T-1) / (W(R,T-1) W(R-1,T))] from ensemble means of the loops
    (use through the Γ-method with ``f``)."""
    return -math.log(w_rt * w_r1t1 / (w_rt1 * w_r1t))


def polyakov_loop(U):
    """``[batch]`` complex: (1/V_s) sum_xvec Tr[U_0(0,xvec) U_0(1,xvec) ... U_0(T-1,xvec)] / N."""
    xp = namespace(U)
    N = U.shape[-1]
    T = U.shape[2]
    line = transport(U, ((0, 1),) * T)  # [batch, *sites, N, N]; every t gives the same trace
    tr = trace(line[:, 0, ...]) / N
    return xp.mean(tr, axis=tuple(range(1, tr.ndim)))


def topological_charge_2d(U):
    """``[batch]``: geometric charge Q = (1/2 pi) sum_x arg P_01(x) of a 2D U(1) field."""
    xp = namespace(U)
    if U.shape[1] != 2 or U.shape[-1] != 1:
        raise ValueError("the geometric topological charge is defined for 2D U(1) links "
                         f"[batch, 2, L0, L1, 1, 1], got shape {tuple(U.shape)}")
    p = plaquette_field(U, 0, 1)[..., 0, 0]
    angle = xp.atan2(xp.imag(p), xp.real(p))
    return xp.sum(angle, axis=tuple(range(1, angle.ndim))) / (2.0 * math.pi)
