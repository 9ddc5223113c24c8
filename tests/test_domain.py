"""Domain decomposition behind ``shift`` (lattice_ml.parallel: DomainArray, its namespace,
reproducible sums): in-process unit tests on one rank (NumPy and array-api-strict local
arrays), and real ``mpiexec -n 1, 2, 4`` launches of tests/mpi/domain_*.py whose results must
be bit-identical across grids of ranks and agree with the plain one-process code to round-off.
Skips the launches when mpi4py or mpiexec is absent."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_mpi import launch, needs_mpi  # noqa: E402

from lattice_ml import dispatch  # noqa: E402
from lattice_ml.backend import CounterRandomStreams, namespace, namespace_by_name, to_numpy  # noqa: E402
from lattice_ml.lattice import shift  # noqa: E402
from lattice_ml.parallel import (SERIAL, Decomposition, DomainArray, DomainNamespace,  # noqa: E402
                                 reproducible_sum)
from lattice_ml.parallel.reproducible import _pieces  # noqa: E402

BACKENDS = ["numpy", "array_api_strict"]


def serial(shape=(4, 2, 2, 2)):
    return Decomposition(SERIAL, shape, (1,) * len(shape))


@pytest.mark.parametrize("backend", BACKENDS)
def test_reproducible_sum_is_order_free_and_within_an_ulp_of_fsum(backend):
    """Wide dynamic range and cancellation: the sum of a permuted array has the same bits, and
    is within one ulp of math.fsum (the correctly rounded sum); pairwise xp.sum is not."""
    xp = namespace_by_name(backend)
    gen = np.random.default_rng(3)
    n = 4096
    host = gen.normal(size=(3, n)) * np.exp(gen.uniform(-30, 30, size=(3, n)))
    host[1] = np.concatenate([host[1, :n // 2], -host[1, :n // 2]]) + gen.normal(size=n) * 1e-8
    host[2, :] = 0.0
    x = xp.asarray(host)
    got = to_numpy(reproducible_sum(SERIAL, x, n))
    perm = gen.permutation(n)
    again = to_numpy(reproducible_sum(SERIAL, xp.asarray(host[:, perm]), n))
    assert np.array_equal(got, again)
    ref = np.array([math.fsum(r) for r in host])
    # the stated bound: half an ulp plus the dropped remainders count 2^(e - K W - 1)
    W, K = _pieces(n)
    e = np.frexp(np.max(np.abs(host), axis=1))[1]
    assert np.all(np.abs(got - ref) <= np.spacing(np.abs(ref)) / 2 + n * np.ldexp(1.0, e - K * W - 1))
    assert np.abs(got[0] - ref[0]) <= np.spacing(np.abs(ref[0])) / 2     # no cancellation
    assert got[2] == 0.0
    pairwise = np.sum(host, axis=1)
    assert np.all(np.abs(got - ref) <= np.abs(pairwise - ref))
    # complex parts separately; float32 summed in float64 and rounded once
    z = xp.asarray(host[:2] + 1j * host[:2, ::-1])
    zs = to_numpy(reproducible_sum(SERIAL, z, n))
    assert np.array_equal(zs.real, got[:2]) and np.array_equal(zs.imag, got[:2])
    f = xp.asarray(host[:1].astype(np.float32))
    fs = to_numpy(reproducible_sum(SERIAL, f, n))
    assert fs.dtype == np.float32
    assert fs[0] == np.float32(math.fsum(host[:1].astype(np.float32).astype(np.float64)[0]))


def test_reproducible_sum_tiny_huge_and_non_finite_values():
    xp = namespace_by_name("numpy")
    tiny = np.full((1, 8), 3e-310)
    assert to_numpy(reproducible_sum(SERIAL, xp.asarray(tiny), 8))[0] == math.fsum(tiny[0])
    big = np.array([[1e30, -1e30, 1.0, 2.0**-60], [1.7e308, -1.7e308, 1.0, 0.0]])
    got = to_numpy(reproducible_sum(SERIAL, xp.asarray(big), 4))
    assert got[0] == 1.0
    # 1.0 lies below the K W bits under 2^1024: dropped, within the stated bound
    W, K = _pieces(4)
    assert got[1] == 0.0 and 1.0 <= 4 * 2.0 ** (1024 - K * W - 1)
    bad = np.array([[1.0, np.inf], [1.0, np.nan]])
    out = to_numpy(reproducible_sum(SERIAL, xp.asarray(bad), 2))
    assert out[0] == np.inf and np.isnan(out[1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_reproducible_sum_near_overflow_is_what_ieee_rounding_gives(backend):
    """Sums near the largest float: the correctly rounded sum where it is finite (also after an
    intermediate overflow that math.fsum refuses), +-inf where it exceeds the largest float
    (ties to even at DBL_MAX + ulp/2), nan for +inf with -inf; the same bits in any order."""
    xp = namespace_by_name(backend)
    M, ulp = np.finfo(np.float64).max, 2.0 ** 971
    rows = {(M / 2, M / 2): M, (M, -M): 0.0, (M, M, -M): M, (M, M): np.inf,
            (-M, -M / 2): -np.inf, (M, ulp / 2): np.inf, (M, ulp / 2 - 2.0 ** 920): M,
            (M / 2, M / 4, -M / 8, 1.0): M / 2 + M / 4 - M / 8,
            (np.inf, -np.inf, 1.0): np.nan, (np.inf, M, M): np.inf}
    for row, want in rows.items():
        for order in (row, row[::-1]):
            host = np.array([order, order[::-1]])
            got = to_numpy(reproducible_sum(SERIAL, xp.asarray(host), len(row)))
            np.testing.assert_array_equal(got, [want, want], err_msg=str(row))
            exact = [math.fsum(r) for r in host] if np.all(np.isfinite(row)) and abs(want) < M \
                else None
            if exact is not None:  # where fsum answers, the same bits
                assert list(got) == exact, row


class _ThreadRank:
    """Rank ``rank`` of ``size`` ranks run as threads of this process: the one collective that
    :func:`reproducible_sum` uses (``allgather``), so a split of the numbers over ranks is
    emulated in-process."""

    def __init__(self, rank, size, slots, barrier):
        self.rank, self.size, self.slots, self.barrier = rank, size, slots, barrier
        self.comm = self

    def allgather(self, obj):
        self.slots[self.rank] = obj
        self.barrier.wait()
        out = list(self.slots)
        self.barrier.wait()
        return out


def _split_sum(xp, host, parts):
    """``reproducible_sum`` of ``host [rows, n]`` with the columns ``parts[r]`` on rank r."""
    import threading
    slots, barrier = [None] * len(parts), threading.Barrier(len(parts))
    out, errors = [None] * len(parts), []

    def rank(r):
        try:
            comm = _ThreadRank(r, len(parts), slots, barrier)
            out[r] = to_numpy(reproducible_sum(comm, xp.asarray(host[:, parts[r]]), host.shape[1]))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            barrier.abort()
    threads = [threading.Thread(target=rank, args=(r,)) for r in range(len(parts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for o in out[1:]:
        np.testing.assert_array_equal(o, out[0])     # every rank the same result
    return out[0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_reproducible_sum_of_non_finite_numbers_is_the_same_on_every_grid(backend):
    """A 2x2 field (columns: sites (0,0), (0,1), (1,0), (1,1)) summed on the grids [1, 1],
    [2, 1], [1, 2] and [2, 2] (threads as ranks): IEEE addition of the global numbers decides,
    whatever the split -- nan with a nan, with +inf and -inf, or with an inf against a finite
    part that overflows to the other sign; else the inf present (review: [[M, M], [-inf, 0]]
    was nan on [1, 1] and [2, 1] and -inf on [1, 2])."""
    xp = namespace_by_name(backend)
    M, inf, nan = np.finfo(np.float64).max, np.inf, np.nan
    rows = [((M, M, -inf, 0.0), nan), ((-M, -M, inf, 0.0), nan), ((inf, 1.0, 2.0, 3.0), inf),
            ((-inf, -M, -M, 0.0), -inf), ((M, M, 1.0, 2.0), inf), ((1.0, nan, 2.0, inf), nan),
            ((inf, 0.0, 0.0, -inf), nan), ((inf, M, -M, inf), inf), ((1.0, 2.0, 3.0, 4.0), 10.0)]
    host = np.array([r for r, _ in rows])
    want = np.array([w for _, w in rows])
    grids = {"1x1": [[0, 1, 2, 3]], "2x1": [[0, 1], [2, 3]], "1x2": [[0, 2], [1, 3]],
             "2x2": [[0], [1], [2], [3]]}
    for name, parts in grids.items():
        np.testing.assert_array_equal(_split_sum(xp, host, parts), want, err_msg=name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_namespace_of_a_decomposed_array(backend):
    """__array_namespace__, backend.namespace with plain operands, global shape, local block,
    indexing and stacking of non-site axes, ordinary operands broadcast as global arrays."""
    xp = namespace_by_name(backend)
    dec = serial()
    full = CounterRandomStreams(1, 2, xp).normal((3,) + dec.shape + (2,))
    f = dec.scatter(full, 2)
    dx = namespace(f)
    assert isinstance(dx, DomainNamespace) and namespace(f, full) is dx
    assert f.__array_namespace__() is dx
    assert f.shape == tuple(full.shape) and f.ndim == full.ndim
    g = f[:, 1, ...]
    assert isinstance(g, DomainArray) and g.site_axis == 1
    assert np.array_equal(to_numpy(g.gather()), to_numpy(full[:, 1, ...]))
    h = f[..., None, 0]
    assert h.site_axis == 2 and h.shape == tuple(full.shape[:-1]) + (1,)
    sign = xp.reshape(xp.asarray([1.0, -1.0, 1.0, -1.0]), (1, 1, 4, 1, 1, 1, 1))
    assert np.array_equal(to_numpy((f * sign).gather()), to_numpy(full * sign))
    assert np.array_equal(to_numpy(dx.where(f > 0, f, 0.0 * f).gather()),
                          to_numpy(xp.where(full > 0, full, 0.0 * full)))
    st = dx.stack([f, 2.0 * f], axis=1)
    assert st.site_axis == 3 and np.array_equal(to_numpy(st.gather()),
                                                to_numpy(xp.stack([full, 2.0 * full], axis=1)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_antiperiodic_shift_of_a_decomposed_field(backend):
    xp = namespace_by_name(backend)
    dec = serial()
    full = CounterRandomStreams(2, 2, xp).normal(dec.shape + (3,))
    f = dec.scatter(full, 1)
    for mu in range(4):
        for step in (-1, 1, 2):
            got = shift(f, mu, step, antiperiodic=True)
            assert np.array_equal(to_numpy(got.gather()),
                                  to_numpy(shift(full, mu, step, antiperiodic=True)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_lattice_constants_and_reshapes_of_a_decomposed_field(backend):
    """Parity masks and momenta of a Lattice for the namespace of a decomposed field are the
    rank's block; reshapes before and after the site block keep it; flat indices refused."""
    from lattice_ml.lattice import Lattice
    xp = namespace_by_name(backend)
    dec = serial()
    lat = Lattice(dec.shape)
    f = dec.scatter(CounterRandomStreams(6, 2, xp).normal(dec.shape + (3,)), 1)
    dx = namespace(f)
    for got, want in ((lat.parity(dx), lat.parity(xp)), (lat.even_mask(dx), lat.even_mask(xp)),
                      (lat.odd_mask(dx, dtype=xp.float64), lat.odd_mask(xp, dtype=xp.float64)),
                      (lat.phat_squared(dx), lat.phat_squared(xp))):
        assert isinstance(got, DomainArray) and got.site_axis == 0
        assert np.array_equal(to_numpy(got.gather()), to_numpy(want))
    mask = dx.reshape(lat.even_mask(dx, dtype=xp.float64), (1,) + dec.shape + (1,))
    assert mask.site_axis == 1
    assert np.array_equal(to_numpy((f * mask).gather()),
                          to_numpy(f.gather() * xp.reshape(lat.even_mask(xp, dtype=xp.float64),
                                                           (1,) + dec.shape + (1,))))
    r = dx.reshape(f, (1, 2) + dec.shape + (3, 1))
    assert r.site_axis == 2 and r.shape == (1, 2) + dec.shape + (3, 1)
    with pytest.raises(NotImplementedError, match="^Lattice.even_indices"):
        lat.even_indices(dx)


def test_what_cannot_be_decomposed_is_refused_by_name():
    xp = namespace_by_name("numpy")
    dec = serial()
    f = dec.scatter(CounterRandomStreams(3, 2, xp).normal(dec.shape + (2,)), 1)
    dx = namespace(f)
    cases = [(lambda: dx.reshape(f, (2, -1)), "reshape"),
             (lambda: dx.sum(f, axis=(1, 2)), "sum"),
             (lambda: dx.roll(f, 1), "roll"),
             (lambda: f[:, 0], "indexing"),
             (lambda: dx.take(f, xp.asarray([0]), axis=1), "take"),
             (lambda: dx.fft.fftn(f, axes=(1, 2, 3, 4)), "fft.fftn"),
             (lambda: dx.argmax(f), "argmax"),
             (lambda: dx.prod(f), "prod"),
             (lambda: dx.concat([f, f], axis=1), "concat"),
             (lambda: np.asarray(f), "__array__"),
             (lambda: to_numpy(f), "__dlpack"),
             (lambda: float(f), "float"),
             (lambda: f + xp.ones((2, 3, 2, 2, 2, 2)), "operator")]
    for fn, name in cases:
        with pytest.raises(NotImplementedError, match=f"^{name}.* on a decomposed array"):
            fn()


def test_dispatch_takes_the_reference_for_decomposed_arrays():
    """Numba kernels address neighbours themselves: never on a local block."""
    xp = namespace_by_name("numpy")
    dec = serial((4, 4, 4, 4))
    from lattice_ml.groups import haar_random
    U = haar_random(CounterRandomStreams(4, 1, xp), (4,) + dec.shape, 3)
    Ud = dec.scatter(U, 2)
    with dispatch.kernel_mode("cpu"):
        assert dispatch.selected("gauge_force", Ud, 5.5, 1.0, None) == "reference"
        assert dispatch.selected("gauge_force", U, 5.5, 1.0, None) != "reference"


def test_block_draws_equal_the_global_draw():
    xp = namespace_by_name("numpy")
    dec = serial((4, 2, 2, 2))
    r1 = dec.random(CounterRandomStreams(5, 2, xp), 2)
    r2 = CounterRandomStreams(5, 2, xp)
    got = r1.normal((3,) + dec.shape + (8,))
    assert isinstance(got, DomainArray)
    assert np.array_equal(to_numpy(got.gather()), to_numpy(r2.normal((3,) + dec.shape + (8,))))
    u = r1.uniform(())                      # not a field: drawn whole, streams in step
    assert not isinstance(u, DomainArray) and np.array_equal(u, r2.uniform(()))


def test_random_streams_of_one_layout_refuse_the_draws_of_another():
    """On 4^4 (D = 4) the link momenta [B, 4, 4, 4, 4, 4, 8] fit the lattice at axes 1 and 2:
    a stream without its layout's tails refuses them; with the link layout's tails it cuts them
    at axis 2 and refuses a pseudofermion [B, *sites, 4, 3] (which it would cut on the spin
    axis); a stream made for site fields cuts the pseudofermion right, drawn whole elsewhere."""
    xp = namespace_by_name("numpy")
    shape = (4, 4, 4, 4)
    dec = serial(shape)
    with pytest.raises(ValueError, match="also fit the lattice at axes 1, 2"):
        dec.random(CounterRandomStreams(5, 2, xp), 2).normal((4, *shape, 8))
    links = dec.random(CounterRandomStreams(5, 2, xp), 2, ((3, 3), (8,)))
    ref = CounterRandomStreams(5, 2, xp)
    p = links.normal((4, *shape, 8))
    assert p.site_axis == 2 and np.array_equal(to_numpy(p.gather()),
                                               to_numpy(ref.normal((4, *shape, 8))))
    with pytest.raises(ValueError, match="not in this stream's layout"):
        links.complex_normal((*shape, 4, 3))
    with pytest.raises(ValueError, match="not in this stream's layout"):
        links.normal(shape)                   # a site field from the link stream
    sites = dec.random(CounterRandomStreams(6, 2, xp), 1, ((4, 3),))
    eta = sites.complex_normal((*shape, 4, 3))
    assert eta.site_axis == 1 and np.array_equal(
        to_numpy(eta.gather()), to_numpy(CounterRandomStreams(6, 2, xp).complex_normal((*shape, 4, 3))))
    assert not isinstance(sites.uniform((3,)), DomainArray)
    # the two ranks of a 2x1x1x1 grid (no collective is needed to draw): each cuts its block
    # [B, 4, 2, 4, 4, 4, 8] on the link layout's site axes, and the blocks make the global draw
    whole = to_numpy(CounterRandomStreams(5, 2, xp).normal((4, *shape, 8)))
    blocks = []
    for r in range(2):
        two = Decomposition(_ThreadRank(r, 2, None, None), shape, (2, 1, 1, 1))
        p = two.random(CounterRandomStreams(5, 2, xp), 2, ((8,),)).normal((4, *shape, 8))
        assert p.shape == (2, 4, *shape, 8) and p.local.shape == (2, 4, 2, 4, 4, 4, 8)
        blocks.append(to_numpy(p.local))
    assert np.array_equal(np.concatenate(blocks, axis=2), whole)


# -- real launches ---------------------------------------------------------------------------------
@needs_mpi
@pytest.mark.parametrize("backend", BACKENDS)
def test_namespace_on_two_ranks(backend):
    """roll along every axis by -5..5 (halo exchange), reproducible sums/means (every grid of 2
    ranks and one rank: same bits, within an ulp of fsum), max/min/any, Lattice constants,
    antiperiodic shifts, stack/reshape; NumPy and array-api-strict local arrays."""
    res = launch(2, "domain_namespace.py", backend)
    assert "ranks=2 ok" in res.stdout


@needs_mpi
@pytest.mark.long
def test_namespace_on_four_ranks():
    """(long: the 4-rank halo exchange is covered in the slow tier by the operators on 4 ranks
    and in the fast tier by tests/mpi/domains.py)"""
    res = launch(4, "domain_namespace.py", "numpy")
    assert "ranks=4 ok" in res.stdout


def _ops(tmp_path, n, backend, *grids, which="core"):
    out = tmp_path / f"ops-{n}-{backend}-{which}.npz"
    res = launch(n, "domain_ops.py", backend, out, which, *grids, timeout=900)
    assert f"ranks={n}" in res.stdout
    with np.load(out) as d:
        return {k: d[k] for k in d}


def _check_ops(results):
    """Every decomposed run bit-identical to every other; each within round-off (1e-12
    relative) of the plain one-process NumPy code; CG iterations equal."""
    plain = {k.split("/", 1)[1]: v for k, v in results.items() if k.startswith("plain/")}
    runs = {}
    for k, v in results.items():
        g, q = k.split("/", 1)
        if g != "plain":
            runs.setdefault(q, []).append((g, v))
    assert set(runs) == set(plain) and len(next(iter(runs.values()))) >= 2
    for q, vals in runs.items():
        for g, v in vals[1:]:
            assert np.array_equal(v, vals[0][1]), (q, g, vals[0][0])
        v, ref = vals[0][1], plain[q]
        if v.dtype.kind in "bi":
            assert np.array_equal(v, ref), q
            continue
        # Delta H is a difference of Hamiltonians of the size of the action
        scale = np.max(np.abs(plain["phi4_action" if q.startswith("phi4") else "gauge_action"])) \
            if q.endswith("delta_h") else np.max(np.abs(ref))
        assert np.max(np.abs(v - ref)) <= 1e-12 * scale, (q, np.max(np.abs(v - ref)) / scale)


@needs_mpi
def test_operators_on_two_ranks_equal_one_rank_bit_for_bit(tmp_path):
    """Plaquette, SU(3) Wilson action and force, a pure-gauge HMC trajectory, Wilson Dirac
    (antiperiodic) and a CGNR solve, phi^4 action and HMC on 4^4: the 2x1x1x1 grid of 2 ranks
    equals the 1x1x1x1 grid of one rank bit for bit, and the plain code to 1e-12."""
    _check_ops(_ops(tmp_path, 2, "numpy", "2x1x1x1"))


@needs_mpi
@pytest.mark.slow
def test_operators_on_one_two_and_four_ranks_bit_for_bit(tmp_path):
    """The same on 1 rank (grid 1x1x1x1) and on 4 ranks (grids 2x2x1x1 and 1x1x2x2, and the
    one-rank grid of rank 0), compared across the launches."""
    results = {}
    for n, grids in ((1, ("1x1x1x1",)), (4, ("2x2x1x1", "1x1x2x2"))):
        for k, v in _ops(tmp_path, n, "numpy", *grids).items():
            results[f"{n}:{k}" if not k.startswith("plain/") else k] = v
    _check_ops(results)


@needs_mpi
@pytest.mark.slow
def test_more_operators_on_two_ranks_bit_for_bit(tmp_path):
    """Stout smearing, the clover operator, BiCGstab, the topological charge, the Symanzik
    force, the even/odd operator and CG on its normal equations, an RK3 Wilson-flow step: the
    grid 1x2x1x1 of 2 ranks equals one rank bit for bit and the plain code to 1e-12."""
    _check_ops(_ops(tmp_path, 2, "numpy", "1x2x1x1", which="more"))


def test_matrix_functions_over_site_axes_are_refused():
    """A 2D field [B, L0, L1] has site axes as its last two: matmul, matrix_transpose, .mT and
    linalg on the blocks would act on parts of each matrix, so they are refused (review)."""
    xp = namespace_by_name("numpy")
    dec = serial((4, 4))
    f = dec.scatter(xp.asarray(np.random.default_rng(0).normal(size=(1, 4, 4))), 1)
    dx = namespace(f)
    M = np.eye(4)
    for fn in (lambda a: a.mT, dx.matrix_transpose, lambda a: a @ a, lambda a: M @ a,
               lambda a: a @ M, dx.linalg.inv):
        with pytest.raises(NotImplementedError, match="matrix axes"):
            fn(f)
    U = dec.scatter(xp.asarray(np.random.default_rng(1).normal(size=(1, 2, 4, 4, 3, 3))), 2)
    got = to_numpy((U @ U.mT).gather())        # matrix axes after the sites: still allowed
    ref = to_numpy(U.gather())
    np.testing.assert_allclose(got, ref @ np.swapaxes(ref, -1, -2), rtol=1e-14)
