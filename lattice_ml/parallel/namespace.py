"""The namespace of decomposed arrays: array-API functions on the local blocks, ``roll`` along
site axes as halo exchange, global reproducible reductions over all site axes, and one-line
refusals of what cannot be decomposed (the specification: :mod:`lattice_ml.parallel`)."""

from __future__ import annotations

import numpy as np

from ..backend import backend_name, to_numpy
from .chains import _like
from .domain import (Decomposition, DomainArray, _axes_of, _elementwise, _leading, _localize,
                     _one_decomposition, _operands, _refuse)
from .reproducible import reproducible_sum
from .sites import _halo_shift_axis

# -- the namespace -------------------------------------------------------------------------------
_ELEMENTWISE = frozenset("""abs acos acosh add asin asinh atan atan2 atanh bitwise_and
bitwise_invert bitwise_left_shift bitwise_or bitwise_right_shift bitwise_xor ceil clip conj
copysign cos cosh divide equal exp expm1 floor floor_divide greater greater_equal hypot imag
isfinite isinf isnan less less_equal log log1p log2 log10 logaddexp logical_and logical_not
logical_or logical_xor maximum minimum multiply negative nextafter not_equal positive pow real
reciprocal remainder round sign signbit sin sinh square sqrt subtract tan tanh trunc where
astype zeros_like ones_like empty_like full_like matmul""".split())
_LEADING = frozenset("matrix_transpose".split())
_REFUSED = {
    "reshape": None, "argmax": "an index over sites", "argmin": "an index over sites",
    "argsort": "an order over sites", "sort": "an order over sites", "nonzero": "flat site "
    "indices", "take": "flat site indices", "take_along_axis": "site indices",
    "searchsorted": "site indices", "cumulative_sum": "a running sum over sites",
    "cumulative_prod": "a running product over sites", "unique_all": "site indices",
    "unique_counts": "site indices", "unique_inverse": "site indices",
    "unique_values": "values over sites", "tile": "repeating sites", "repeat": "repeating "
    "sites", "flip": "a reflection of the sites", "tensordot": "contractions of axes",
    "einsum": "contractions of axes", "vecdot": "contractions of axes", "diff": "differences",
    "prod": "a product over sites (no reproducible global product)", "std": "use sum and mean",
    "var": "use sum and mean", "count_nonzero": "use sum(astype(x != 0, int64))"}


class _Sub:
    """A sub-namespace (``linalg``, ``fft``) of a :class:`DomainNamespace`."""

    def __init__(self, parent, name):
        self._parent, self._name = parent, name
        self._local = getattr(parent.local, name)

    def __getattr__(self, attr):
        fn = getattr(self._local, attr)
        label = f"{self._name}.{attr}"
        if self._name == "fft" or attr in ("vector_norm", "vecdot", "tensordot"):
            def refused(*args, **kwargs):
                if _operands(args, kwargs):
                    _refuse(label, "not decomposed (Fourier transforms and contractions over "
                                   "site axes); for norms use sum")
                return fn(*args, **kwargs)
            return refused
        return _elementwise(fn, label) if attr == "matmul" else _leading(fn, label)


class DomainNamespace:
    """The array namespace of :class:`DomainArray` over the local namespace ``local``.

    Elementwise functions and ``matmul`` act on the blocks (non-decomposed operands broadcast
    as global arrays: axes of the global lattice extent are cut to the block); ``linalg`` and
    ``matrix_transpose`` act on trailing matrix axes; indexing, ``stack``, ``concat``,
    ``moveaxis``, ``permute_dims``, ``expand_dims``, ``squeeze`` and ``reshape`` of non-site
    axes act locally; ``roll`` along site axes is a halo exchange; ``sum``, ``mean``, ``max``,
    ``min``, ``any``, ``all`` over all site axes are global (``sum``/``mean`` reproducible:
    :func:`reproducible_sum`). Everything else of the local namespace that takes no decomposed
    array passes through (creation functions make ordinary, global arrays); what cannot be
    decomposed raises ``NotImplementedError`` naming the function.
    """

    def __init__(self, local, dec: Decomposition):
        self.local, self.dec = local, dec
        self.__name__ = f"lattice_ml.parallel.DomainNamespace[{backend_name(local)}]"

    def __repr__(self) -> str:
        return f"<{self.__name__} {self.dec!r}>"

    def __getattr__(self, name):
        attr = getattr(self.local, name)
        if name in ("linalg", "fft"):
            sub = _Sub(self, name)
            setattr(self, name, sub)
            return sub
        if not callable(attr) or isinstance(attr, type) or name.startswith("_"):
            return attr
        if name in _ELEMENTWISE:
            fn = _elementwise(attr, name)
        elif name in _LEADING:
            fn = _leading(attr, name)
        elif name in _REFUSED:
            why = _REFUSED[name]

            def fn(*args, _attr=attr, _name=name, _why=why, **kwargs):
                if _operands(args, kwargs):
                    _refuse(_name, _why)
                return _attr(*args, **kwargs)
        else:
            def fn(*args, _attr=attr, _name=name, **kwargs):
                if _operands(args, kwargs):
                    _refuse(_name, "not a decomposed operation")
                return _attr(*args, **kwargs)
        setattr(self, name, fn)
        return fn

    # -- arrays ----------------------------------------------------------------------------------
    def asarray(self, obj, dtype=None, device=None, copy=None):
        if isinstance(obj, DomainArray):
            out = obj.local if dtype is None else self.local.astype(obj.local, dtype)
            return DomainArray(out, obj.dec, obj.site_axis)
        return self.local.asarray(obj, dtype=dtype, device=device, copy=copy)

    def isdtype(self, dtype, kind):
        return self.local.isdtype(dtype, kind)

    def sites(self, host, dtype=None, device=None):
        """This rank's block of the host array ``host`` ``[*sites, ...]`` of the global lattice
        (parity masks, momenta: ``lattice.Lattice`` builds them so) as a :class:`DomainArray`
        with site axis 0."""
        host = np.asarray(host)
        block = host[self.dec.block(host.ndim, 0)]
        return DomainArray(self.local.asarray(np.ascontiguousarray(block), dtype=dtype,
                                              device=device), self.dec, 0)

    # -- shifts ----------------------------------------------------------------------------------
    def roll(self, x, shift, axis=None):
        """``xp.roll``: along site axes a halo exchange with the neighbouring ranks."""
        if not isinstance(x, DomainArray):
            return self.local.roll(x, shift, axis=axis)
        if axis is None:
            _refuse("roll", "roll without an axis flattens the sites")
        axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
        shifts = (shift,) * len(axes) if isinstance(shift, (int, np.integer)) else tuple(shift)
        if len(shifts) != len(axes):
            raise ValueError("roll: shift and axis differ in length")
        out = x.local
        sites = x._site_axes()
        for s, a in zip(shifts, axes):
            a = int(a) % x.ndim
            if a in sites:
                out = _halo_roll(x.dec, out, a - x.site_axis, -int(s), a)
            else:
                out = self.local.roll(out, int(s), axis=a)
        return DomainArray(out, x.dec, x.site_axis)

    # -- reductions ------------------------------------------------------------------------------
    def _reduce(self, name, x, axis, keepdims):
        """``(global?, local axes)``; refuses partial reductions over the sites."""
        axes = _axes_of(axis, x.ndim)
        sites = set(x._site_axes())
        hit = sites.intersection(axes)
        if hit and hit != sites:
            _refuse(name, "a reduction over some but not all site axes")
        return bool(hit), axes

    def _local_reduce(self, fn, x, axes, keepdims, **kw):
        out = fn(x.local, axis=axes, keepdims=keepdims, **kw)
        site = x.site_axis if keepdims else x.site_axis - sum(a < x.site_axis for a in axes)
        return DomainArray(out, x.dec, site)

    def sum(self, x, axis=None, dtype=None, keepdims=False):
        """Over all site axes: the reproducible global sum (:func:`reproducible_sum`), the same
        bits on any grid of ranks; integers summed exactly."""
        if not isinstance(x, DomainArray):
            return self.local.sum(x, axis=axis, dtype=dtype, keepdims=keepdims)
        glob, axes = self._reduce("sum", x, axis, keepdims)
        if not glob:
            return self._local_reduce(self.local.sum, x, axes, keepdims, dtype=dtype)
        xp = self.local
        v = x.local if dtype is None else xp.astype(x.local, dtype)
        count = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
        if xp.isdtype(v.dtype, ("real floating", "complex floating")):
            flat = _move_to_end(xp, v, axes)
            out = reproducible_sum(x.dec.comm, flat, count)
        else:
            part = xp.sum(v, axis=axes)
            out = _like(np.sum(np.stack(x.dec.comm.allgather(np.asarray(to_numpy(part)))),
                               axis=0), part)
        return _keep(xp, out, axes, x.ndim) if keepdims else out

    def mean(self, x, axis=None, keepdims=False):
        if not isinstance(x, DomainArray):
            return self.local.mean(x, axis=axis, keepdims=keepdims)
        glob, axes = self._reduce("mean", x, axis, keepdims)
        if not glob:
            return self._local_reduce(self.local.mean, x, axes, keepdims)
        count = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
        return self.sum(x, axis=axes, keepdims=keepdims) / count

    def _extreme(self, name, x, axis, keepdims, combine):
        fn = getattr(self.local, name)
        if not isinstance(x, DomainArray):
            return fn(x, axis=axis, keepdims=keepdims)
        glob, axes = self._reduce(name, x, axis, keepdims)
        if not glob:
            return self._local_reduce(fn, x, axes, keepdims)
        part = fn(x.local, axis=axes, keepdims=keepdims)
        host = combine(np.stack(x.dec.comm.allgather(np.asarray(to_numpy(part)))), axis=0)
        return _like(np.asarray(host), part)

    def max(self, x, axis=None, keepdims=False):
        return self._extreme("max", x, axis, keepdims, np.max)

    def min(self, x, axis=None, keepdims=False):
        return self._extreme("min", x, axis, keepdims, np.min)

    def any(self, x, axis=None, keepdims=False):
        return self._extreme("any", x, axis, keepdims, np.any)

    def all(self, x, axis=None, keepdims=False):
        return self._extreme("all", x, axis, keepdims, np.all)

    # -- axes ------------------------------------------------------------------------------------
    def stack(self, arrays, axis=0):
        arrays = list(arrays)
        doms = [a for a in arrays if isinstance(a, DomainArray)]
        if not doms:
            return self.local.stack(arrays, axis=axis)
        x, dec = doms[0], _one_decomposition("stack", doms)
        ndim = x.ndim + 1
        a = int(axis) % ndim
        if x.site_axis < a <= x.site_axis + dec.D - 1:
            _refuse("stack", "a new axis between the site axes")
        right = x.ndim - x.site_axis
        if any(d.ndim - d.site_axis != right for d in doms):
            _refuse("stack", "decomposed arrays whose site axes do not line up")
        loc = [d.local if isinstance(d, DomainArray) else _localize("stack", d, dec, right)
               for d in arrays]
        return DomainArray(self.local.stack(loc, axis=a), dec,
                           x.site_axis + (1 if a <= x.site_axis else 0))

    def concat(self, arrays, axis=0):
        arrays = list(arrays)
        doms = [a for a in arrays if isinstance(a, DomainArray)]
        if not doms:
            return self.local.concat(arrays, axis=axis)
        x, dec = doms[0], _one_decomposition("concat", doms)
        if axis is None:
            _refuse("concat", "concatenation without an axis flattens the sites")
        a = int(axis) % x.ndim
        if a in x._site_axes():
            _refuse("concat", f"axis {a} is a site axis")
        right = x.ndim - x.site_axis
        if any(d.ndim - d.site_axis != right for d in doms):
            _refuse("concat", "decomposed arrays whose site axes do not line up")
        loc = [d.local if isinstance(d, DomainArray) else _localize("concat", d, dec, right)
               for d in arrays]
        return DomainArray(self.local.concat(loc, axis=a), dec, x.site_axis)

    def permute_dims(self, x, axes):
        if not isinstance(x, DomainArray):
            return self.local.permute_dims(x, axes)
        axes = tuple(int(a) % x.ndim for a in axes)
        sites = x._site_axes()
        pos = [axes.index(s) for s in sites]
        if pos != list(range(pos[0], pos[0] + len(pos))):
            _refuse("permute_dims", "the site axes must stay together and in order")
        return DomainArray(self.local.permute_dims(x.local, axes), x.dec, pos[0])

    def moveaxis(self, x, source, destination):
        if not isinstance(x, DomainArray):
            return self.local.moveaxis(x, source, destination)
        src = _axes_of(source, x.ndim) if not isinstance(source, (int, np.integer)) \
            else (int(source) % x.ndim,)
        if isinstance(source, (int, np.integer)):
            dst = (int(destination) % x.ndim,)
        else:
            dst = tuple(int(d) % x.ndim for d in destination)
            src = tuple(int(s) % x.ndim for s in source)
        order = [n for n in range(x.ndim) if n not in src]
        for d, s in sorted(zip(dst, src)):
            order.insert(d, s)
        return self.permute_dims(x, order)

    def expand_dims(self, x, axis=0):
        if not isinstance(x, DomainArray):
            return self.local.expand_dims(x, axis=axis)
        a = int(axis) % (x.ndim + 1)
        if x.site_axis < a < x.site_axis + x.dec.D:
            _refuse("expand_dims", "a new axis between the site axes")
        return DomainArray(self.local.expand_dims(x.local, axis=a), x.dec,
                           x.site_axis + (1 if a <= x.site_axis else 0))

    def squeeze(self, x, axis):
        if not isinstance(x, DomainArray):
            return self.local.squeeze(x, axis=axis)
        axes = _axes_of(axis, x.ndim)
        if set(axes) & set(x._site_axes()):
            _refuse("squeeze", "a site axis")
        return DomainArray(self.local.squeeze(x.local, axis=axes), x.dec,
                           x.site_axis - sum(a < x.site_axis for a in axes))

    def reshape(self, x, shape, copy=None):
        """Reshapes of the axes before the site axes and of those after them, separately (the
        site axes stay one contiguous block of the lattice's extents); merging or splitting
        sites is refused."""
        if not isinstance(x, DomainArray):
            return self.local.reshape(x, shape)
        D, old = x.dec.D, x.shape
        shape = [int(s) for s in shape]
        if shape.count(-1) == 1:
            known = int(np.prod([s for s in shape if s != -1], dtype=np.int64))
            shape[shape.index(-1)] = x.size // known if known else 0
        pre = int(np.prod(old[:x.site_axis], dtype=np.int64))
        post = int(np.prod(old[x.site_axis + D:], dtype=np.int64))
        for p in range(len(shape) - D + 1):
            if tuple(shape[p:p + D]) == x.dec.shape \
                    and int(np.prod(shape[:p], dtype=np.int64)) == pre \
                    and int(np.prod(shape[p + D:], dtype=np.int64)) == post:
                local = tuple(shape[:p]) + x.dec.local_shape + tuple(shape[p + D:])
                return DomainArray(self.local.reshape(x.local, local), x.dec, p)
        _refuse("reshape", f"{old} -> {tuple(shape)} does not keep the site axes as one block")

    def broadcast_to(self, x, shape):
        if not isinstance(x, DomainArray):
            return self.local.broadcast_to(x, shape)
        shape = tuple(int(s) for s in shape)
        right = x.ndim - x.site_axis
        site = len(shape) - right
        if site < 0 or shape[site:site + x.dec.D] != x.dec.shape:
            _refuse("broadcast_to", f"{x.shape} -> {shape} moves the site axes")
        local = list(shape)
        local[site:site + x.dec.D] = x.dec.local_shape
        return DomainArray(self.local.broadcast_to(x.local, tuple(local)), x.dec, site)


def _move_to_end(xp, v, axes):
    """``v`` with the ``axes`` moved to the end and merged into one."""
    rest = [a for a in range(v.ndim) if a not in axes]
    v = xp.permute_dims(v, tuple(rest) + tuple(axes))
    return xp.reshape(v, tuple(v.shape[:len(rest)]) + (-1,))


def _keep(xp, out, axes, ndim):
    shape, it = [], iter(out.shape)
    for a in range(ndim):
        shape.append(1 if a in axes else next(it))
    return xp.reshape(out, tuple(shape))


def _halo_roll(dec: Decomposition, local, mu: int, step: int, axis: int):
    """``out(x) = local(x + step mu_hat)`` along array ``axis`` (direction ``mu``) of a block:
    the local roll with the ``|step|`` slices that leave the block replaced by the neighbours'
    (one ``sendrecv`` per at most ``n_mu`` sites; exact copies)."""
    n, out = dec.local_shape[mu], local
    while step:
        s = max(-n, min(n, step))
        out = _halo_shift_axis(dec.comm, dec.grid, out, mu, s, axis)
        step -= s
    return out


_NAMESPACES: dict = {}


def _domain_namespace(local, dec: Decomposition) -> DomainNamespace:
    key = (id(local), id(dec))
    ns = _NAMESPACES.get(key)
    if ns is None or ns.dec is not dec or ns.local is not local:
        if len(_NAMESPACES) > 64:
            _NAMESPACES.clear()
        ns = _NAMESPACES[key] = DomainNamespace(local, dec)
    return ns
