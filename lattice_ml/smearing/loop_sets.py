"""Loop sets: which closed paths through each link ``U_mu(x)`` a smearing layer or a flow sums
over, by loop type (shared by stout smearing, CASK attention and the gradient flows).

A loop set is ``by_mu[mu]``, the list of closed step sequences ``((mu, +1), (nu, s), ...)`` that
start with the link ``U_mu(x)`` (:func:`lattice_ml.gauge.paths.loops_through_link`); a *type* is
one such set per direction with one weight. Named types (``"plaquette"``, ``"rectangle"``,
``"chair"`` (D >= 3), and those of :func:`lattice_ml.gauge.paths.loop_shapes`) come with all
their rotations and reflections; :func:`custom_loops` takes any shapes, :func:`polyakov_loops`
the straight lines that wind once around direction ``mu``, :func:`restrict_loops` keeps the
loops of some directions only. :func:`resolve_loops` turns a specification (a name, a dict, a
list of types) into the list of types, checked to be closed on the lattice by the layers.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

from ..gauge.paths import loop_shapes, loops_through_link

__all__ = ["Step", "chair_shapes", "custom_loops", "restrict_loops", "polyakov_loops",
           "resolve_loops"]

Step = tuple[int, int]
"""One step of a path: ``(direction, +1 or -1)``."""


def chair_shapes(D: int) -> list[tuple[Step, ...]]:
    """The 6-link chair (bent rectangle) ``+mu +nu -mu +rho -nu -rho``; needs D >= 3."""
    if D < 3:
        raise ValueError("chair loops need D >= 3")
    return [((0, 1), (1, 1), (0, -1), (2, 1), (1, -1), (2, -1))]


@lru_cache(maxsize=None)
def _named(name: str, D: int) -> tuple:
    if name in ("plaquette", "rectangle"):
        shapes = loop_shapes(name, D)
    elif name == "chair":
        shapes = chair_shapes(D)
    else:
        raise ValueError(f"unknown loop type {name!r}; choose 'plaquette', 'rectangle', 'chair', "
                         "or give a dict {mu: [paths]}")
    return tuple(tuple(loops_through_link(shapes, mu, D)) for mu in range(D))


def custom_loops(shapes: Sequence[Sequence[Step]], D: int) -> dict:
    """``{mu: loops}``: every loop of the given closed shapes (and their images under lattice
    rotations and reflections) through ``U_mu(x)``, via :func:`loops_through_link`."""
    shapes = [tuple((int(m), int(s)) for m, s in p) for p in shapes]
    return {mu: list(loops_through_link(shapes, mu, D)) for mu in range(D)}


def restrict_loops(spec, D: int, directions: Sequence[int]) -> dict:
    """Loops of ``spec`` (a name or a ``{mu: paths}`` dict) that use only ``directions``, and only
    for links in those directions (e.g. ``directions=range(1, D)``: spatial smearing)."""
    allowed = set(directions)
    by_mu = _as_by_mu(spec, D)
    return {mu: [p for p in by_mu[mu] if all(m in allowed for m, _ in p)] if mu in allowed else []
            for mu in range(D)}


def polyakov_loops(T: int, D: int, mu: int = 0) -> dict:
    """The loop that winds once around direction ``mu`` (extent T) through every link of that
    direction: ``{mu: [((mu, +1),) * T]}``; no loops for the other directions. Its staple is
    the product of the other ``T - 1`` links of the line (closed on the torus)."""
    return {nu: ([((mu, 1),) * T] if nu == mu else []) for nu in range(D)}


def _as_by_mu(spec, D: int) -> tuple:
    if isinstance(spec, str):
        return _named(spec, D)
    if isinstance(spec, dict):
        bad = [k for k in spec if not (isinstance(k, int) and 0 <= k < D)]
        if bad:
            raise ValueError(f"loop dict keys must be directions 0..{D - 1}, got {bad}")
        out = []
        for mu in range(D):
            paths = []
            for p in spec.get(mu, ()):
                p = tuple((int(m), int(s)) for m, s in p)
                if not p or p[0] != (mu, 1):
                    raise ValueError(f"loop {p} for direction {mu} must start with ({mu}, +1)")
                if any(not 0 <= m < D or s not in (1, -1) for m, s in p):
                    raise ValueError(f"loop {p}: steps must be (direction in 0..{D - 1}, +-1)")
                paths.append(p)
            out.append(tuple(paths))
        return tuple(out)
    raise TypeError(f"a loop type is a name ('plaquette', 'rectangle', 'chair') or a dict "
                    f"{{mu: [paths]}}, not {type(spec).__name__}")


def resolve_loops(loops, D: int) -> list[tuple]:
    """Normalise a loop-set argument to a list (one entry per loop type) of tuples over mu of the
    paths through ``U_mu(x)``. ``loops`` is a name, a ``{mu: paths}`` dict, or a sequence of
    those."""
    if isinstance(loops, (str, dict)):
        loops = [loops]
    return [_as_by_mu(spec, D) for spec in loops]


def _check_closed(by_mu, shape):
    for paths in by_mu:
        for p in paths:
            disp = [0] * len(shape)
            for m, s in p:
                disp[m] += s
            if any(d % L for d, L in zip(disp, shape)):
                raise ValueError(f"loop {p} is not closed on the lattice {list(shape)}")
