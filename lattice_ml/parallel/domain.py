"""Decomposed fields: the decomposition of the sites over a grid of ranks, the decomposed array
(local block, global shape) and the random streams that draw blocks of global draws
(:mod:`lattice_ml.parallel`)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..backend import device_of, namespace
from .chains import Communicator
from .sites import CartesianGrid, gather_sites, scatter_sites

# ----------------------------------------------------------------------------------------------
# domain decomposition: a decomposed array type whose namespace exchanges halos and sums
# reproducibly (docs/parallel.md, "Sites over ranks")
# ----------------------------------------------------------------------------------------------
class Decomposition:
    """The sites of a lattice ``shape`` over the ranks of ``comm`` on the grid ``dims``: this
    rank's block starts at ``start`` and has the extents ``local_shape``."""

    def __init__(self, comm: Communicator, shape: Sequence[int], dims: Sequence[int]):
        self.comm, self.grid = comm, CartesianGrid(shape, dims)
        if self.grid.size != comm.size:
            raise ValueError(f"a grid of {self.grid.size} ranks {self.grid.dims} on a "
                             f"communicator of {comm.size}")
        self.shape, self.dims, self.local_shape = self.grid.shape, self.grid.dims, \
            self.grid.local_shape
        self.start = self.grid.start(comm.rank)
        self.D = len(self.shape)

    def __repr__(self) -> str:
        return f"Decomposition(shape={self.shape}, dims={self.dims}, rank={self.comm.rank})"

    def block(self, ndim: int, site_axis: int) -> tuple:
        """Slices selecting this rank's block out of a global array (site axes from
        ``site_axis``)."""
        idx = [slice(None)] * ndim
        for mu, (a, n) in enumerate(zip(self.start, self.local_shape)):
            idx[site_axis + mu] = slice(a, a + n)
        return tuple(idx)

    def scatter(self, field, site_axis: int = 1) -> "DomainArray":
        """This rank's block of the global array ``field`` as a :class:`DomainArray`."""
        if isinstance(field, DomainArray):
            raise TypeError("scatter: the field is decomposed already")
        if tuple(field.shape[site_axis:site_axis + self.D]) != self.shape:
            raise ValueError(f"scatter: axes {site_axis}..{site_axis + self.D - 1} of shape "
                             f"{tuple(field.shape)} are not the lattice {self.shape}")
        return DomainArray(field[self.block(field.ndim, site_axis)], self, site_axis)

    def scatter_from(self, field, site_axis: int = 1, xp=None, root: int = 0) -> "DomainArray":
        """This rank's block of the global array ``field`` that rank ``root`` alone holds
        (``None`` on the others; ``xp``: the namespace of the blocks there, default NumPy) as a
        :class:`DomainArray`: only ``root`` ever holds the whole field."""
        if self.comm.rank == root:
            if isinstance(field, DomainArray):
                raise TypeError("scatter_from: the field is decomposed already")
            if tuple(field.shape[site_axis:site_axis + self.D]) != self.shape:
                raise ValueError(f"scatter_from: axes {site_axis}..{site_axis + self.D - 1} of "
                                 f"shape {tuple(field.shape)} are not the lattice {self.shape}")
            xp = namespace(field)
        local = scatter_sites(self.comm, self.grid, field, site_axis, root)
        if xp is None:
            xp = namespace(local)
        return DomainArray(xp.asarray(local, dtype=getattr(xp, local.dtype.name)), self,
                           site_axis)

    def random(self, rng, site_axis: int, tails=None) -> "DomainRandomStreams":
        """``rng`` (a :class:`~lattice_ml.backend.CounterRandomStreams`) drawing fields of one
        layout (site axes from ``site_axis``, trailing shapes ``tails``) as this rank's block
        (:class:`DomainRandomStreams`)."""
        return DomainRandomStreams(rng, self, site_axis, tails)


def _refuse(name: str, why: str):
    raise NotImplementedError(f"{name} on a decomposed array: {why} (docs/parallel.md)")


class DomainArray:
    """The local block of a field whose sites are split over ranks (:class:`Decomposition`).

    ``shape`` is the **global** shape (so operators check and build layouts as on one
    process), ``local`` the block of this rank (a NumPy, CuPy or array-api-strict array),
    ``site_axis`` the first of the D site axes. Arithmetic, ``@`` and indexing of non-site axes
    act on the block; its namespace (``__array_namespace__``, :class:`DomainNamespace`) turns
    ``roll`` along site axes into halo exchange and reductions over all site axes into
    reproducible global sums.
    """

    __slots__ = ("local", "dec", "site_axis")
    __lattice_ml_domain__ = True
    __array_ufunc__ = None       # NumPy scalars and arrays defer to the reflected operators

    def __init__(self, local, dec: Decomposition, site_axis: int):
        if isinstance(local, DomainArray):
            raise TypeError("DomainArray of a DomainArray")
        site_axis = int(site_axis)
        if not 0 <= site_axis <= local.ndim - dec.D:
            raise ValueError(f"site axes {site_axis}..{site_axis + dec.D - 1} outside an array "
                             f"of {local.ndim} axes")
        if tuple(local.shape[site_axis:site_axis + dec.D]) != dec.local_shape:
            raise ValueError(f"local block of shape {tuple(local.shape)}: axes from {site_axis} "
                             f"are not the block {dec.local_shape}")
        self.local, self.dec, self.site_axis = local, dec, site_axis

    # -- array attributes ------------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        s = list(self.local.shape)
        s[self.site_axis:self.site_axis + self.dec.D] = self.dec.shape
        return tuple(s)

    @property
    def ndim(self) -> int:
        return self.local.ndim

    @property
    def dtype(self):
        return self.local.dtype

    @property
    def device(self):
        return device_of(self.local)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def mT(self):
        return self.__array_namespace__().matrix_transpose(self)

    def __array_namespace__(self, api_version=None):
        from .namespace import _domain_namespace  # the namespace module builds on this one

        return _domain_namespace(namespace(self.local), self.dec)

    __lattice_ml_namespace__ = __array_namespace__

    def __repr__(self) -> str:
        return (f"DomainArray(shape={self.shape}, local={tuple(self.local.shape)}, "
                f"site_axis={self.site_axis}, dtype={self.dtype}, rank={self.dec.comm.rank})")

    def gather(self, root: int | None = None):
        """The global array (exact copies; O(V) memory and traffic) on every rank, or with
        ``root`` on that rank alone (``None`` elsewhere, which hold only their block)."""
        return gather_sites(self.dec.comm, self.dec.grid, self.local, self.site_axis, root)

    def _site_axes(self) -> tuple[int, ...]:
        return tuple(range(self.site_axis, self.site_axis + self.dec.D))

    # -- conversions that have no decomposed meaning -------------------------------------------
    def __array__(self, *args, **kwargs):
        _refuse("__array__", "a decomposed array has no host copy; use .gather()")

    def __dlpack__(self, *args, **kwargs):
        _refuse("__dlpack__", "a decomposed array has no single buffer; use .gather()")

    def __bool__(self):
        _refuse("bool()", "the truth value of a field")

    def __float__(self):
        _refuse("float()", "a field is not a scalar")

    def __int__(self):
        _refuse("int()", "a field is not a scalar")

    def __complex__(self):
        _refuse("complex()", "a field is not a scalar")

    def __iter__(self):
        _refuse("iteration", "iterate over a non-site axis by indexing")

    def __len__(self) -> int:
        return self.shape[0]

    def __setitem__(self, key, value):
        _refuse("__setitem__", "write a new array (xp.where, xp.stack) instead")

    def __dlpack_device__(self):
        _refuse("__dlpack_device__", "a decomposed array has no single buffer; use .gather()")

    def to_device(self, device, stream=None):
        return DomainArray(self.local.to_device(device), self.dec, self.site_axis)

    # -- indexing of non-site axes ---------------------------------------------------------------
    def __getitem__(self, key):
        if not isinstance(key, tuple):
            key = (key,)
        n_ell = sum(k is Ellipsis for k in key)
        if n_ell > 1:
            raise IndexError("an index can only have a single ellipsis")
        consumed = sum(k is not None and k is not Ellipsis for k in key)
        if n_ell:
            i = key.index(Ellipsis)
            key = key[:i] + (slice(None),) * (self.ndim - consumed) + key[i + 1:]
        else:
            key = key + (slice(None),) * (self.ndim - consumed)
        sites = set(self._site_axes())
        axis, out_axis, new_site = 0, 0, None
        for k in key:
            if k is None:
                out_axis += 1
                continue
            if axis in sites:
                if not (isinstance(k, slice) and k == slice(None)):
                    _refuse("indexing", f"axis {axis} is a site axis (only ':' is allowed)")
                if axis == self.site_axis:
                    new_site = out_axis
                out_axis += 1
            elif isinstance(k, slice):
                out_axis += 1
            elif not isinstance(k, (int, np.integer)) or isinstance(k, bool):
                _refuse("indexing", f"index {type(k).__name__} of axis {axis} (integers, slices, "
                                    f"None and ... only)")
            axis += 1
        return DomainArray(self.local[key], self.dec, new_site)

    # -- arithmetic --------------------------------------------------------------------------------
    def _binary(op, reflected=False, name="operator"):
        def method(self, other):
            if reflected:
                return _elementwise(lambda a, b: op(b, a), name)(self, other)
            return _elementwise(op, name)(self, other)
        return method

    import operator as _op
    __add__, __radd__ = _binary(_op.add), _binary(_op.add, True)
    __sub__, __rsub__ = _binary(_op.sub), _binary(_op.sub, True)
    __mul__, __rmul__ = _binary(_op.mul), _binary(_op.mul, True)
    __truediv__, __rtruediv__ = _binary(_op.truediv), _binary(_op.truediv, True)
    __floordiv__, __rfloordiv__ = _binary(_op.floordiv), _binary(_op.floordiv, True)
    __mod__, __rmod__ = _binary(_op.mod), _binary(_op.mod, True)
    __pow__, __rpow__ = _binary(_op.pow), _binary(_op.pow, True)
    __matmul__, __rmatmul__ = _binary(_op.matmul, name="matmul"), _binary(_op.matmul, True, "matmul")
    __and__, __rand__ = _binary(_op.and_), _binary(_op.and_, True)
    __or__, __ror__ = _binary(_op.or_), _binary(_op.or_, True)
    __xor__, __rxor__ = _binary(_op.xor), _binary(_op.xor, True)
    __lt__, __le__ = _binary(_op.lt), _binary(_op.le)
    __gt__, __ge__ = _binary(_op.gt), _binary(_op.ge)
    __eq__, __ne__ = _binary(_op.eq), _binary(_op.ne)
    __hash__ = None

    def __neg__(self):
        return DomainArray(-self.local, self.dec, self.site_axis)

    def __pos__(self):
        return self

    def __abs__(self):
        return DomainArray(abs(self.local), self.dec, self.site_axis)

    def __invert__(self):
        return DomainArray(~self.local, self.dec, self.site_axis)

    del _binary, _op


def is_decomposed(x) -> bool:
    """Whether ``x`` is a :class:`DomainArray`."""
    return isinstance(x, DomainArray)


# -- the rules that map global arguments to local blocks -----------------------------------------
def _operands(args, kwargs):
    doms = [a for a in (*args, *kwargs.values()) if isinstance(a, DomainArray)]
    for a in (*args, *kwargs.values()):
        if isinstance(a, (list, tuple)):
            doms.extend(b for b in a if isinstance(b, DomainArray))
    return doms


def _one_decomposition(name, doms) -> Decomposition:
    dec = doms[0].dec
    for d in doms[1:]:
        if d.dec is not dec and (d.dec.shape, d.dec.dims) != (dec.shape, dec.dims):
            _refuse(name, "arrays of different decompositions")
    return dec


def _localize(name, a, dec: Decomposition, right: int):
    """The local block of a non-decomposed operand ``a`` that broadcasts against decomposed
    arrays whose first site axis is ``right`` axes from the end: size-1 axes broadcast, axes of
    the global extent are cut to this rank's block."""
    if isinstance(a, (DomainArray, type)) or not isinstance(getattr(a, "ndim", None), int):
        return a
    idx, cut = [slice(None)] * a.ndim, False
    for mu in range(dec.D):
        ax = a.ndim - right + mu
        if ax < 0:
            continue
        n = a.shape[ax]
        if n == dec.shape[mu] and n != 1:
            idx[ax] = slice(dec.start[mu], dec.start[mu] + dec.local_shape[mu])
            cut = True
        elif n != 1:
            _refuse(name, f"an operand of shape {tuple(a.shape)} does not broadcast against "
                          f"the lattice {dec.shape}")
    return a[tuple(idx)] if cut else a


def _matrix_axes_clear(name, doms):
    """Refuse a function of the last two (matrix) axes when they include site axes (a 2D
    field ``[batch, L_0, L_1]``): on the blocks it would act on part of each matrix."""
    for d in doms:
        if d.site_axis + d.dec.D > d.ndim - 2:
            _refuse(name, "its matrix axes (the last two) include site axes")


def _elementwise(fn, name):
    """Elementwise functions (and ``@``): broadcast right-aligned; every decomposed operand
    must have its site axes at the same distance from the end."""
    def wrapped(*args, **kwargs):
        doms = _operands(args, kwargs)
        if not doms:
            return fn(*args, **kwargs)
        dec = _one_decomposition(name, doms)
        if "matmul" in name:
            _matrix_axes_clear(name, doms)
        rights = {d.ndim - d.site_axis for d in doms}
        if len(rights) != 1:
            _refuse(name, "decomposed operands whose site axes do not line up")
        right = rights.pop()

        def loc(a):
            return a.local if isinstance(a, DomainArray) else _localize(name, a, dec, right)
        out = fn(*[loc(a) for a in args], **{k: loc(v) for k, v in kwargs.items()})
        return _wrap(out, dec, lambda r: r.ndim - right, name)
    wrapped.__name__ = getattr(fn, "__name__", name)
    return wrapped


def _leading(fn, name):
    """Functions of the trailing (matrix) axes (``linalg``, ``matrix_transpose``): the leading
    axes, the sites among them, stay where they are."""
    def wrapped(*args, **kwargs):
        doms = _operands(args, kwargs)
        if not doms:
            return fn(*args, **kwargs)
        dec = _one_decomposition(name, doms)
        _matrix_axes_clear(name, doms)
        site = doms[0].site_axis
        for a in (*args, *kwargs.values()):
            if hasattr(a, "shape") and not isinstance(a, DomainArray) and a.ndim > 2:
                _refuse(name, "a non-decomposed operand with leading axes")
        out = fn(*[a.local if isinstance(a, DomainArray) else a for a in args],
                 **{k: v.local if isinstance(v, DomainArray) else v for k, v in kwargs.items()})
        return _wrap(out, dec, lambda r: site, name)
    wrapped.__name__ = getattr(fn, "__name__", name)
    return wrapped


def _wrap(out, dec, site_of, name):
    if isinstance(out, tuple):
        return type(out)(*[_wrap(o, dec, site_of, name) for o in out]) \
            if hasattr(out, "_fields") else tuple(_wrap(o, dec, site_of, name) for o in out)
    if not hasattr(out, "shape") or not hasattr(out, "ndim"):
        return out
    site = site_of(out)
    if site < 0 or site + dec.D > out.ndim \
            or tuple(out.shape[site:site + dec.D]) != dec.local_shape:
        _refuse(name, "the result has lost the site axes")
    return DomainArray(out, dec, site)


def _axes_of(axis, ndim) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    return tuple(sorted(int(a) % ndim for a in axes))


class DomainRandomStreams:
    """A :class:`~lattice_ml.backend.CounterRandomStreams` that draws the fields of **one
    layout** as this rank's block (:class:`DomainArray`) with exactly the numbers of the global
    draw (``block=``), and refuses draws of other layouts.

    The layout is the first site axis ``site_axis`` of the global array ``[n_chains, *shape]``
    and, optionally, the trailing shapes ``tails`` allowed after the sites (links
    ``[B, D, *sites, N, N]`` with algebra momenta ``[B, D, *sites, n_gen]``: ``site_axis = 2``,
    ``tails = ((N, N), (n_gen,))``). A draw of ``shape`` is

    * a **site draw** when the lattice extents are at ``site_axis`` (and, with ``tails``, the
      axes after them are one of ``tails``): cut to the block;
    * drawn **whole** when the lattice extents occur nowhere in ``[n_chains, *shape]`` (the
      ``uniform(())`` of a Metropolis step, a trajectory length);
    * **refused** (``ValueError``) otherwise: a draw that holds the lattice's extents elsewhere
      (a pseudofermion ``[B, *sites, 4, 3]`` from a stream made for links), or, without
      ``tails``, a site draw whose extents also fit the lattice at another axis (on a 4⁴
      lattice with D = 4 the momenta ``[B, 4, 4, 4, 4, 4, 8]`` read as sites from axis 1 or
      2): there the shape cannot say which axes are the sites, so give ``tails``.

    So a draw is never cut on the wrong axes, except for a draw of another layout whose shape
    is exactly one of this layout's (U(1) on a 4D 4⁴ lattice: a pseudofermion ``[B, *sites, 4,
    1]`` has the shape of the momenta ``[B, 4, *sites, 1]``); no layout of the command's runs
    meets that (fermions are not decomposed by the command). Every rank draws the same sequence
    of draws, so the streams stay in step."""

    def __init__(self, rng, dec: Decomposition, site_axis: int, tails=None):
        if getattr(rng, "kind", None) != "counter":
            raise TypeError("DomainRandomStreams needs CounterRandomStreams (numbers keyed on "
                            "global coordinates)")
        self.rng, self.dec, self.site_axis = rng, dec, int(site_axis)
        if self.site_axis < 1:
            raise ValueError(f"site_axis {site_axis}: axis 0 is the chains")
        self.tails = None if tails is None else tuple(tuple(int(n) for n in t) for t in tails)

    def __getattr__(self, name):
        return getattr(self.rng, name)

    def _lattice_at(self, full: tuple) -> list[int]:
        D, L = self.dec.D, self.dec.shape
        return [p for p in range(1, len(full) - D + 1) if full[p:p + D] == L]

    def _draw(self, method, shape, *args):
        shape = tuple(int(s) for s in shape)
        full, a, D = (self.rng.n_chains,) + shape, self.site_axis, self.dec.D
        at = self._lattice_at(full)
        if not at:
            return getattr(self.rng, method)(*args, shape)
        ok = a in at and (self.tails is None or full[a + D:] in self.tails)
        if not ok or (self.tails is None and len(at) > 1):
            tails = "" if self.tails is None else f" and trailing shapes {list(self.tails)}"
            why = ("its extents also fit the lattice at axes " + ", ".join(map(str, at))
                   + ": give the stream its layout's tails" if ok else
                   "it holds the lattice's extents but not in this stream's layout")
            raise ValueError(f"DomainRandomStreams (sites from axis {a}{tails}): a draw of "
                             f"shape {list(full)} is refused: {why} (one stream per layout)")
        block = self.dec.block(len(shape), a - 1)
        local = getattr(self.rng, method)(*args, shape, block=block)
        return DomainArray(local, self.dec, a)

    def normal(self, shape=()):
        return self._draw("normal", shape)

    def uniform(self, shape=()):
        return self._draw("uniform", shape)

    def complex_normal(self, shape=()):
        return self._draw("complex_normal", shape)

    def integers(self, high, shape=()):
        return self._draw("integers", shape, high)
