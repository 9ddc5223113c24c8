"""Parallel transporters along lattice paths, and the staples of closed loops.

Links are ``U[batch, D, *sites, N, N]``; ``U_mu(x)`` transports from ``x + mu_hat`` to ``x``
(the usual convention: a closed loop ``W = U_mu(x) U_nu(x+mu) U_mu(x+nu)^dag U_nu(x)^dag``
transforms as ``W -> g(x) W g(x)^dag``).

A *path* is a sequence of steps ``(mu, +1)`` (forward along mu) or ``(mu, -1)`` (backward).
:func:`transport` returns the field of products along the path started at every site:
a forward step at the current point ``y`` multiplies by ``U_mu(y)``, a backward step by
``U_mu(y - mu_hat)^dag``. Every product is a full-field operation (one roll and one matrix product
per step), so paths of any shape cost the same per step.

For a closed loop that starts with ``(mu, +1)``, the *staple* is the rest of the loop, started at
``x + mu_hat`` and ending at ``x``; then ``Re Tr[U_mu(x) staple(x)]`` is the loop through the link
``U_mu(x)``. :func:`loops_through_link` enumerates, for a loop shape, every distinct closed loop
whose first step is ``(mu, +1)``: each geometric loop containing a given link appears exactly once.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from ..backend import namespace
from ..groups import dagger

__all__ = ["link", "shift_by", "transport", "loops_through_link", "plaquette_loop",
           "rectangle_loops", "loop_shapes"]

Step = tuple[int, int]


def link(U, mu: int):
    """The link field of direction ``mu``: ``[batch, *sites, N, N]``."""
    return U[:, mu, ...]


def shift_by(field, displacement: Sequence[int]):
    """``out(x) = field(x + displacement)`` for a field ``[batch, *sites, ...]`` (one roll)."""
    xp = namespace(field)
    axes = tuple(1 + nu for nu, d in enumerate(displacement) if d)
    if not axes:
        return field
    shifts = tuple(-displacement[nu] for nu in range(len(displacement)) if displacement[nu])
    return xp.roll(field, shifts, axis=axes)


def transport(U, path: Iterable[Step], start: Sequence[int] | None = None):
    """Product of links along ``path`` begun at ``x + start`` for every site ``x``.

    Returns ``[batch, *sites, N, N]``. ``start`` is a displacement vector (default 0).
    """
    D = U.shape[1]
    pos = list(start) if start is not None else [0] * D
    out = None
    for mu, sign in path:
        if sign > 0:
            m = shift_by(link(U, mu), pos)
            pos[mu] += 1
        else:
            pos[mu] -= 1
            m = dagger(shift_by(link(U, mu), pos))
        out = m if out is None else out @ m
    return out


def plaquette_loop(mu: int, nu: int) -> tuple[Step, ...]:
    """The 1x1 loop in the (mu, nu) plane: +mu, +nu, -mu, -nu."""
    return ((mu, 1), (nu, 1), (mu, -1), (nu, -1))


def rectangle_loops(mu: int, nu: int) -> tuple[tuple[Step, ...], ...]:
    """The 2x1 loop (long side mu) and the 1x2 loop (long side nu), both starting +mu."""
    return (((mu, 1), (mu, 1), (nu, 1), (mu, -1), (mu, -1), (nu, -1)),
            ((mu, 1), (nu, 1), (nu, 1), (mu, -1), (nu, -1), (nu, -1)))


def loop_shapes(name: str, D: int) -> list[tuple[Step, ...]]:
    """Representative loops of a named shape: ``"plaquette"`` (one per plane mu < nu) or
    ``"rectangle"`` (both orientations per plane)."""
    planes = [(mu, nu) for mu in range(D) for nu in range(mu + 1, D)]
    if name == "plaquette":
        return [plaquette_loop(mu, nu) for mu, nu in planes]
    if name == "rectangle":
        return [r for mu, nu in planes for r in rectangle_loops(mu, nu)]
    raise ValueError(f"unknown loop shape {name!r}; choose 'plaquette' or 'rectangle'")


def _closed(path) -> bool:
    D = 1 + max(mu for mu, _ in path)
    disp = [0] * D
    for mu, s in path:
        disp[mu] += s
    return not any(disp)


def _symmetry_images(loop: Sequence[Step], D: int) -> set[tuple[Step, ...]]:
    """All images of a loop under permutations and reflections of the D axes."""
    from itertools import permutations, product

    images = set()
    for perm in permutations(range(D)):
        for signs in product((1, -1), repeat=D):
            images.add(tuple((perm[mu], s * signs[perm[mu]]) for mu, s in loop))
    return images


def _links_from_start(path: Sequence[Step], D: int) -> tuple:
    """The links a path visits, as sorted (position relative to the start, direction) pairs:
    the geometric identity of a loop through the link at its start."""
    pos = [0] * D
    links = []
    for mu, s in path:
        if s > 0:
            links.append((tuple(pos), mu))
            pos[mu] += 1
        else:
            pos[mu] -= 1
            links.append((tuple(pos), mu))
    return tuple(sorted(links))


def loops_through_link(shapes: Iterable[Sequence[Step]], mu: int, D: int) -> list[tuple[Step, ...]]:
    """Every distinct closed loop of the given shapes (and their images under the lattice
    rotations and reflections) that starts with the step ``(mu, +1)``: each geometric loop
    through the link ``U_mu(x)`` appears once, oriented so that the link is traversed forward."""
    seen, out = set(), []
    for shape in shapes:
        if any(not 0 <= m < D for m, _ in shape):
            raise ValueError(f"path {shape} has a direction outside 0..{D - 1}")
        disp = [0] * D
        for m, s in shape:
            disp[m] += s
        if any(disp):
            raise ValueError(f"path {shape} is not closed")
        for img in sorted(_symmetry_images(shape, D)):
            n = len(img)
            for rot in range(n):
                cand = img[rot:] + img[:rot]
                for path in (cand, tuple((m, -s) for m, s in reversed(cand))):
                    if path[0] != (mu, 1):
                        continue
                    key = _links_from_start(path, D)
                    if key not in seen:
                        seen.add(key)
                        out.append(path)
    return out
