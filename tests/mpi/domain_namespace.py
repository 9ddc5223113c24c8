"""MPI driver (tests/test_domain.py): the namespace of decomposed arrays on R ranks.

Run as ``mpiexec -n R python tests/mpi/domain_namespace.py BACKEND``. For every grid of R ranks
over a 4x4x4x4 lattice and over 8x4 (and the one-rank grid on ``SERIAL``), with local arrays of
BACKEND (numpy or array_api_strict): ``xp.roll`` of a decomposed field along every axis (site
and non-site) by -5..5, and along several axes at once, equals the block of ``xp.roll`` of the
whole field bit for bit; ``xp.sum``/``xp.mean`` over all site axes (with and without other
axes, real and complex, float32 and float64, keepdims) give the same bits on every grid and
on one rank, the sum within half an ulp of ``math.fsum`` of the numbers plus the stated bound,
also for sums with heavy cancellation; ``max``/``min``/``any`` over the sites equal the
one-process ones; the Lattice's parity and momenta for the decomposed namespace are the
blocks and antiperiodic shifts (steps beyond the block) the blocks of the whole field's; a field
built with ``xp.stack`` / indexing / ``reshape`` of internal axes
gathers to the one-process result.
"""

import itertools
import math
import sys

import numpy as np

from lattice_ml.backend import CounterRandomStreams, namespace, namespace_by_name, to_numpy
from lattice_ml.lattice import Lattice, shift
from lattice_ml.parallel import SERIAL, Decomposition, world


def grids(size, D):
    for dims in itertools.product(*[[d for d in (1, 2, 4) if d <= size]] * D):
        if int(np.prod(dims)) == size:
            yield dims


def fsum_ref(a, axes):
    """Correctly rounded sums of ``a`` (host float64) over ``axes``."""
    rest = [i for i in range(a.ndim) if i not in axes]
    m = np.moveaxis(a, axes, list(range(a.ndim - len(axes), a.ndim)))
    m = m.reshape(tuple(a.shape[i] for i in rest) + (-1,))
    return np.array([math.fsum(v) for v in m.reshape(-1, m.shape[-1])]).reshape(m.shape[:-1])


def main():
    comm = world()
    xp = namespace_by_name(sys.argv[1])
    rng = CounterRandomStreams(7, 2, xp)
    sums, checked = {}, 0
    for shape, lead, extra in (((4, 4, 4, 4), (3,), (2,)), ((8, 4), (), (3,))):
        D = len(shape)
        site_axis = 1 + len(lead)
        full = rng.normal(lead + shape + extra)
        # heavy cancellation: big values that cancel and small ones that do not
        big = full * 1e12
        cancel = xp.concat([big, -big, full], axis=1 + len(lead) - 1) if lead else None
        for dims, c in [(d, comm) for d in grids(comm.size, D)] + [((1,) * D, SERIAL)]:
            dec = Decomposition(c, shape, dims)
            f = dec.scatter(full, site_axis)
            dx = namespace(f)
            for axis in range(f.ndim):
                for step in range(-5, 6):
                    got = to_numpy(dx.roll(f, step, axis=axis).gather())
                    assert np.array_equal(got, to_numpy(xp.roll(full, step, axis=axis))), \
                        (dims, axis, step)
                    checked += 1
            ax = (site_axis, site_axis + D - 1, 0)
            got = dx.roll(f, (1, -2, 1), axis=ax).gather()
            assert np.array_equal(to_numpy(got), to_numpy(xp.roll(full, (1, -2, 1), axis=ax)))
            sites = tuple(range(site_axis, site_axis + D))
            for name, g, axes in (("sites", f, sites), ("all", f, None),
                                  ("sites+last", f, sites + (f.ndim - 1,))):
                for dt in ("float64", "float32", "complex128"):
                    v = g
                    if dt == "float32":
                        v = dx.astype(g, xp.float32)
                    elif dt == "complex128":
                        v = dx.astype(g, xp.complex128) * (1 + 2j)
                    s = to_numpy(dx.sum(v, axis=axes))
                    sums.setdefault((shape, name, dt), []).append(s)
                    host = to_numpy(v.gather()).astype(np.complex128 if dt == "complex128"
                                                       else np.float64)
                    axs = tuple(range(host.ndim)) if axes is None else axes
                    if dt == "complex128":
                        ref = fsum_ref(host.real, axs) + 1j * fsum_ref(host.imag, axs)
                    else:
                        ref = fsum_ref(host, axs)
                    ulp = np.spacing(np.abs(ref).astype(np.float32 if dt == "float32"
                                                        else np.float64))
                    assert np.all(np.abs(s - ref) <= ulp), (dims, name, dt)
                    m = to_numpy(dx.mean(v, axis=axes))
                    assert np.array_equal(m, s / math.prod(host.shape[a] for a in axs))
            ks = to_numpy(dx.sum(f, axis=sites, keepdims=True))
            assert ks.shape == tuple(1 if a in sites else n for a, n in enumerate(full.shape))
            for red in ("max", "min"):
                assert np.array_equal(to_numpy(getattr(dx, red)(f, axis=sites)),
                                      to_numpy(getattr(xp, red)(full, axis=sites)))
            assert bool(to_numpy(dx.any(f > 3.0))) == bool(to_numpy(xp.any(full > 3.0)))
            if cancel is not None:
                cf = dec.scatter(cancel, site_axis)
                s = to_numpy(dx.sum(cf, axis=sites))
                sums.setdefault((shape, "cancel", "float64"), []).append(s)
                ref = fsum_ref(to_numpy(cancel), sites)
                assert np.all(np.abs(s - ref) <= np.spacing(np.abs(ref))), (dims, "cancel")
            # site constants of the Lattice come out as the block; antiperiodic shifts
            lat = Lattice(shape)
            assert np.array_equal(to_numpy(lat.parity(dx).gather()), to_numpy(lat.parity(xp)))
            assert np.array_equal(to_numpy(lat.phat_squared(dx).gather()),
                                  to_numpy(lat.phat_squared(xp)))
            for mu in range(D):
                for step in (-3, -1, 1, 2, 5):
                    got = shift(f, mu, step, site_axis, antiperiodic=True).gather()
                    assert np.array_equal(to_numpy(got), to_numpy(
                        shift(full, mu, step, site_axis, antiperiodic=True))), (dims, mu, step)
            # stack / index / reshape of internal axes
            st = dx.stack([f[..., 0], 2.0 * f[..., -1]], axis=-1)
            want = xp.stack([full[..., 0], 2.0 * full[..., -1]], axis=-1)
            assert np.array_equal(to_numpy(st.gather()), to_numpy(want))
            r = dx.reshape(f, tuple(f.shape[:-1]) + (1, f.shape[-1]))
            assert r.shape == tuple(full.shape[:-1]) + (1, full.shape[-1])
    # every grid and one rank: the same bits
    for key, vals in sums.items():
        for v in vals[1:]:
            assert np.array_equal(v, vals[0]), key
    counts = comm.gather(checked)
    if comm.is_root:
        print(f"ranks={comm.size} ok: {sum(counts)} rolls, {len(sums)} sums bit-identical")


if __name__ == "__main__":
    main()
