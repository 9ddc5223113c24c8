"""Host synchronisation of the CG solvers (``check_every``): reading the recursion's scalars
back once per ``k`` iterations instead of every iteration must not change the solve.

The claim under test (``lattice_ml.fermions.solvers._common.check_interval``): an entry stops on
the device at the very iteration at which it converges or breaks down, and the host replays the
buffered iterations with the bookkeeping it always had, so the iterates are bit-identical and
the record (iterations, history, residuals, restarts, breakdowns) equal for every ``k``; only
``matvecs`` grows, by at most ``k - 1`` idle iterations per recursion, and ``host_syncs``
falls by about ``k`` (also for multi-shift CG). Operators: a batched 2D Wilson-Dirac operator on random U(1) links with a
different mass per entry (different iteration counts), a batch of dense hermitian positive
matrices, and an indefinite one for the breakdown path.
"""

import math

import numpy as np
import pytest

from lattice_ml.backend import RandomStreams, to_numpy
from lattice_ml.fermions import WilsonDirac
from lattice_ml.fermions.solvers import SolverError, bicgstab, cg, cgne, fgmres, multishift_cg
from lattice_ml.fermions.solvers._common import DEVICE_CHECK_EVERY, check_interval
from lattice_ml.groups import haar_random

EVERY = (1, 3, 7, 40)


def _same_record(i1, ik):
    np.testing.assert_array_equal(i1.iterations, ik.iterations)
    np.testing.assert_array_equal(i1.converged, ik.converged)
    np.testing.assert_array_equal(i1.residual, ik.residual)
    np.testing.assert_array_equal(i1.history, ik.history)
    np.testing.assert_array_equal(i1.restarts, ik.restarts)
    assert i1.breakdown == ik.breakdown


class _PerEntryMass:
    """``D_b = D_W(U_b; m = 0) + m_b``: the Wilson operator with its own mass per entry."""

    def __init__(self, Dw, m):
        self.Dw, self.m = Dw, m

    def __call__(self, v):
        return self.Dw.apply(v) + self.m * v

    def dagger(self, v):
        return self.Dw.apply_dagger(v) + self.m * v


def _wilson_system(xp, masses, shape=(6, 6), seed=3):
    """Per entry its own random U(1) links and mass (so entries converge at different
    iterations), a Gaussian source; returns the operator (with ``dagger``) and the source."""
    rng = RandomStreams(seed, len(masses), xp)
    U = haar_random(rng, (len(shape), *shape), 1)
    m = xp.reshape(xp.asarray(np.asarray(masses, dtype=np.float64)), (-1, 1, 1, 1, 1))
    Dw = _PerEntryMass(WilsonDirac(U, 0.0, check=False), m)
    b_h = np.random.default_rng(seed).normal(size=(len(masses), *shape, 2, 1)) \
        + 1j * np.random.default_rng(seed + 1).normal(size=(len(masses), *shape, 2, 1))
    b = xp.asarray(b_h)
    return Dw, b


@pytest.mark.parametrize("method", ["cgnr", "cgne"])
def test_cgne_is_independent_of_the_sync_interval(xp, method):
    Dw, b = _wilson_system(xp, [0.05, 0.3, 1.0])
    ref, i1 = cgne(Dw, Dw.dagger, b, tol=1e-10, method=method, check_every=1)
    assert i1.all_converged and len(set(i1.iterations.tolist())) == 3
    for k in EVERY[1:]:
        x, ik = cgne(Dw, Dw.dagger, b, tol=1e-10, method=method, check_every=k)
        assert bool(xp.all(x == ref)), f"check_every={k} changed the iterate"
        _same_record(i1, ik)
        # idle iterations only after the last entry has converged, two matvecs each
        assert i1.matvecs <= ik.matvecs <= i1.matvecs + 2 * (k - 1) * (1 + int(ik.restarts.max()))
        n = int(i1.iterations.max())
        assert ik.host_syncs <= math.ceil(n / k) + 2 * (1 + int(ik.restarts.max()))
    assert i1.host_syncs >= int(i1.iterations.max())


def test_cg_is_independent_of_the_sync_interval_with_restarts_and_a_zero_rhs(xp_cpu):
    xp = xp_cpu
    Dw, b = _wilson_system(xp, [0.1, 0.4, 0.8, 0.2])
    b = xp.where(xp.reshape(xp.asarray([True, True, False, True]), (-1, 1, 1, 1, 1)), b,
                 xp.zeros_like(b))                       # entry 2: b = 0, x = 0 exactly

    def A(v):
        return Dw.dagger(Dw(v))

    # a warm start and a tight tolerance: the true-residual restart path is exercised
    x0 = 0.5 * b
    ref, i1 = cg(A, b, x0, tol=1e-13, check_every=1, raise_on_failure=False)
    assert i1.iterations[2] == 0 and bool(xp.all(ref[2, ...] == 0))
    for k in EVERY[1:]:
        x, ik = cg(A, b, x0, tol=1e-13, check_every=k, raise_on_failure=False)
        assert bool(xp.all(x == ref))
        _same_record(i1, ik)
        assert ik.host_syncs < i1.host_syncs


def test_breakdown_and_maxiter_at_the_same_iteration(xp_cpu):
    """An indefinite 'hermitian positive' operator breaks CG down (p^H A p <= 0) in one entry,
    another entry runs out of iterations: both are recorded at the same iteration for every
    check_every, and the healthy entry converges to the same bits."""
    xp = xp_cpu
    rng = np.random.default_rng(0)
    n = 24
    q, _ = np.linalg.qr(rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n)))
    lam = [np.linspace(1, 30, n), np.linspace(-5, 30, n), np.geomspace(1, 1e7, n)]
    M = xp.asarray(np.stack([(q * v) @ q.conj().T for v in lam]))
    b = xp.asarray(rng.normal(size=(3, n)) + 0j)

    def A(v):
        return xp.matmul(M, v[..., None])[..., 0]

    ref, i1 = cg(A, b, tol=1e-12, maxiter=15, check_every=1, raise_on_failure=False)
    assert list(i1.breakdown) == [1] and not i1.converged[2] and i1.iterations[2] == 15
    for k in EVERY[1:]:
        x, ik = cg(A, b, tol=1e-12, maxiter=15, check_every=k, raise_on_failure=False)
        assert bool(xp.all(x == ref))
        _same_record(i1, ik)
    with pytest.raises(SolverError, match="batch entry 1"):
        cg(A, b, tol=1e-12, maxiter=15, check_every=4)


def test_the_default_interval(xp_cpu):
    xp = xp_cpu
    b = xp.ones((2, 3))
    assert check_interval(b, None) == 1                   # host memory: reading is free
    assert check_interval(b, 5) == 5
    assert check_interval(b, 5, callback=print) == 1      # a callback sees every iteration
    for bad in (0, -2, 1.5, True, "3"):
        with pytest.raises(ValueError, match="check_every"):
            check_interval(b, bad, name="cg")
    # array-api-strict's other devices stand for a GPU: there the default is the device one
    import array_api_strict as strict
    on_device = strict.ones((2, 3), device=strict.Device("device1"))
    assert check_interval(on_device, None) == DEVICE_CHECK_EVERY


def test_callback_sees_every_iteration(xp_cpu):
    xp = xp_cpu
    Dw, b = _wilson_system(xp, [0.3, 0.6])
    seen = []
    x, info = cg(lambda v: Dw.dagger(Dw(v)), b, tol=1e-8, check_every=9,
                 callback=lambda k, x, rel: seen.append((k, rel.copy())))
    assert [k for k, _ in seen] == list(range(1, len(info.history) + 1))
    np.testing.assert_array_equal(np.stack([r for _, r in seen]), info.history)
    assert to_numpy(info.residual).max() <= 1e-8


def test_multishift_is_independent_of_the_sync_interval(xp):
    """Multi-shift CG (RHMC's solver): shifted solutions, per-shift iterations and history
    bit-identical for every check_every, with shifts freezing at different iterations."""
    Dw, b = _wilson_system(xp, [0.05, 0.5])

    def A(v):
        return Dw.dagger(Dw(v))

    shifts = [0.0, 0.01, 0.3, 2.0]
    ref, i1 = multishift_cg(A, b, shifts, tol=[1e-10, 1e-10, 1e-8, 1e-6], check_every=1)
    assert len(set(i1.iterations.ravel().tolist())) >= 4
    for k in EVERY[1:]:
        x, ik = multishift_cg(A, b, shifts, tol=[1e-10, 1e-10, 1e-8, 1e-6], check_every=k)
        assert bool(xp.all(x == ref))
        for f in ("iterations", "converged", "residual", "history", "refine_iterations"):
            np.testing.assert_array_equal(getattr(i1, f), getattr(ik, f))
        assert ik.host_syncs <= math.ceil(i1.history.shape[0] / k)
    assert i1.host_syncs == i1.history.shape[0]


def test_multishift_complex64_target_in_the_rounding_gap(monkeypatch):
    """complex64: the per-shift stopping product zeta^2 |r|^2 is formed the same way on the host
    and on the device (zeta^2 in float32, the product in float64). A target chosen between the
    float32-rounded and the exact product of one iteration once split the two masks, and the
    host replayed a frozen entry until maxiter (500 iterations for a 6-iteration solve)."""
    import lattice_ml.fermions.solvers.multishift as ms
    rng = np.random.default_rng(1)
    d = np.linspace(0.5, 5.0, 40).astype(np.float32)

    def A(v):
        return v * d[None, :]

    b = (rng.standard_normal((1, 40)) + 1j * rng.standard_normal((1, 40))).astype(np.complex64)
    seen, host = [], ms._host
    monkeypatch.setattr(ms, "_host", lambda *a: seen.append(host(*a)[0]) or [seen[-1]])
    multishift_cg(A, b, [0.0, 0.3], tol=[1e-1, 1e-7], maxiter=60, raise_on_failure=False,
                  refine=False, check_every=1)
    monkeypatch.setattr(ms, "_host", host)
    products = [(np.float64(f[3, 0] * f[3, 0]) * np.float64(f[1, 0]),
                 float(np.float32(f[3, 0] ** 2) * np.float32(f[1, 0])))
                for f in seen if f.shape[0] == 4]
    bb = float(np.sum(np.abs(b) ** 2))
    gaps = [i for i, (e, h) in enumerate(products) if i >= 3 and h != e
            and all(min(pe, ph) > max(e, h) for pe, ph in products[:i])]
    assert gaps, "no iteration with a rounding gap to aim at"
    e, h = products[gaps[0]]
    tol = math.sqrt(0.5 * (e + h) / bb)
    out = []
    for k in (1, 10):
        x, info = multishift_cg(A, b, [0.0, 0.3], tol=[0.99, tol], maxiter=500,
                                raise_on_failure=False, refine=False, check_every=k)
        assert info.iterations.max() < 20, info.iterations
        out.append((x, info))
    assert np.array_equal(out[0][0], out[1][0])
    np.testing.assert_array_equal(out[0][1].iterations, out[1][1].iterations)


# ----------------------------------------------------------------------------------------------
# BiCGStab: every decision on the device, the host replays
# ----------------------------------------------------------------------------------------------
def test_bicgstab_is_independent_of_the_sync_interval(xp):
    Dw, b = _wilson_system(xp, [0.05, 0.3, 1.0])
    ref, i1 = bicgstab(Dw, b, tol=1e-10, check_every=1)
    assert i1.all_converged and len(set(i1.iterations.tolist())) == 3
    n = int(i1.iterations.max())
    assert i1.host_syncs >= n
    for k in EVERY[1:]:
        x, ik = bicgstab(Dw, b, tol=1e-10, check_every=k)
        assert bool(xp.all(x == ref)), f"check_every={k} changed the iterate"
        _same_record(i1, ik)
        assert i1.matvecs <= ik.matvecs <= i1.matvecs + 2 * (k - 1) * (1 + int(ik.restarts.max()))
        # one read per interval, one per true-residual check
        assert ik.host_syncs <= math.ceil(n / k) + 2 * (1 + int(ik.restarts.max()))


def test_bicgstab_breakdown_and_shadow_restart_with_buffered_checks(xp_cpu):
    """The classical shadow breaks down exactly on a free Wilson point source (rho = 0 at
    iteration 2, see bicgstab's docstring): the breakdown message, and the restart with a fresh
    shadow vector, do not depend on the interval; the restart then waits for the next read
    (same iterates and counts, the history in between repeats)."""
    from lattice_ml.fermions import point_source
    xp = xp_cpu
    host = np.zeros((1, 2, 4, 4, 1, 1), dtype=np.complex128) + 1.0
    W = WilsonDirac(xp.asarray(host), 0.1)
    eta = point_source(W, 0, 0)
    for k in (1, 3, 8):
        with pytest.raises(SolverError, match=r"iteration 2: rho = <rhat, r> = 0\.000e\+00"):
            bicgstab(W.apply, eta, tol=1e-10, shadow="residual", shadow_restarts=0,
                     check_every=k)
    _, i1 = bicgstab(W.apply, eta, tol=1e-10, shadow="residual", shadow_restarts=0,
                     raise_on_failure=False, check_every=1)
    ref, r1 = bicgstab(W.apply, eta, tol=1e-10, shadow="residual", check_every=1)
    assert r1.all_converged and r1.restarts[0] >= 1
    for k in (3, 8):
        _, ik = bicgstab(W.apply, eta, tol=1e-10, shadow="residual", shadow_restarts=0,
                         raise_on_failure=False, check_every=k)
        _same_record(i1, ik)
        assert 0 in ik.breakdown
        x, rk = bicgstab(W.apply, eta, tol=1e-10, shadow="residual", check_every=k)
        assert bool(xp.all(x == ref))
        np.testing.assert_array_equal(rk.iterations, r1.iterations)
        np.testing.assert_array_equal(rk.restarts, r1.restarts)
        np.testing.assert_array_equal(rk.residual, r1.residual)


def test_bicgstab_reads_back_once_per_interval_on_a_device():
    """On array-api-strict's device1 (the GPU stand-in) the number of values read back per
    solve is bounded by the number of intervals, not the number of iterations."""
    from lattice_ml.backend import count_host_transfers
    strict = pytest.importorskip("array_api_strict")
    dev = strict.Device("device1")
    Dw_h, b_h = _wilson_system(strict, [0.05, 0.3])
    Dw, b = _wilson_system_on(strict, dev)
    _, i1 = bicgstab(Dw_h, b_h, tol=1e-10, check_every=1)
    n = int(i1.iterations.max())
    with count_host_transfers() as c:
        x, info = bicgstab(Dw, b, tol=1e-10)
    assert "device1" in str(x.device) and info.all_converged
    np.testing.assert_array_equal(info.iterations, i1.iterations)
    intervals = math.ceil(n / DEVICE_CHECK_EVERY)
    assert info.host_syncs <= intervals + 2
    # the input check, one read per interval, the true-residual check (and its restart)
    assert c["reads"] <= intervals + 4 < n
    # host data put on the device: the shadow vector and the masks of a start, not per iteration
    assert c["writes"] <= 8 * (1 + int(info.restarts.max())) < n


def _wilson_system_on(strict, dev, masses=(0.05, 0.3), shape=(6, 6), seed=3):
    """:func:`_wilson_system` with links, masses and source on the device ``dev``."""
    Dw, b = _wilson_system(strict, list(masses), shape, seed)
    U = strict.asarray(Dw.Dw.U, device=dev)
    m = strict.asarray(Dw.m, device=dev)
    return _PerEntryMass(WilsonDirac(U, 0.0, check=False), m), strict.asarray(b, device=dev)


# ----------------------------------------------------------------------------------------------
# FGMRES: Arnoldi steps on the device, Givens rotations replayed on the host
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("restart,precond", [(30, False), (7, True)])
def test_fgmres_is_independent_of_the_sync_interval(xp, restart, precond):
    Dw, b = _wilson_system(xp, [0.05, 0.3, 1.0])
    M = (lambda v: v / 2.05) if precond else None
    ref, i1 = fgmres(Dw, b, M=M, restart=restart, tol=1e-10, check_every=1)
    assert i1.all_converged and len(set(i1.iterations.tolist())) == 3
    cycles = 1 + int(i1.restarts.max())
    n = int(i1.iterations.max())
    for k in EVERY[1:]:
        x, ik = fgmres(Dw, b, M=M, restart=restart, tol=1e-10, check_every=k)
        assert bool(xp.all(x == ref)), f"check_every={k} changed the iterate"
        _same_record(i1, ik)
        assert i1.matvecs <= ik.matvecs <= i1.matvecs + (k - 1) * cycles
        # one read per interval of a cycle, one per true-residual check
        assert ik.host_syncs <= math.ceil(n / k) + 2 * cycles
    assert i1.host_syncs >= n


def test_fgmres_reads_back_once_per_interval_on_a_device():
    from lattice_ml.backend import count_host_transfers
    strict = pytest.importorskip("array_api_strict")
    Dw, b = _wilson_system_on(strict, strict.Device("device1"))
    with count_host_transfers() as c:
        x, info = fgmres(Dw, b, tol=1e-10)
    n, cycles = int(info.iterations.max()), 1 + int(info.restarts.max())
    assert "device1" in str(x.device) and info.all_converged
    # the input check, one read per interval of a cycle, the true residual of every cycle
    assert c["reads"] <= 1 + math.ceil(n / DEVICE_CHECK_EVERY) + 2 * cycles < n
    # per cycle: 1 / ||r||, the update's coefficients and mask (no longer one copy per step)
    assert c["writes"] <= 3 + 3 * cycles < n
