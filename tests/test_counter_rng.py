"""Counter-based random streams drawn on the arrays' device (lattice_ml.backend:
``philox4x32``, ``CounterRandomStreams``).

Oracles independent of the code: the Random123 known-answer vectors of Philox4x32-10
(tests/kat_vectors of the Random123 distribution), exact distributions (Kolmogorov-Smirnov,
chi-square, moments), and samplers that must reproduce exact results when fed these streams
(the free scalar field's propagator by HMC, the 2D SU(2) plaquette by heatbath with its
per-chain fallback streams).
"""

import math

import numpy as np
import pytest
from scipy import stats

from lattice_ml.backend import (CounterRandomStreams, RandomStreams, namespace_by_name,
                                philox4x32, to_numpy)

KAT = [  # counter[4], key[2] -> output[4]
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]

DRAWS = [("normal", ()), ("uniform", ()), ("complex_normal", ()), ("integers", (7,))]


def _draw(rng, kind, args, shape, **kw):
    return getattr(rng, kind)(*args, shape, **kw)


@pytest.mark.parametrize("counter,key,expected", KAT)
def test_philox_known_answers(xp, counter, key, expected):
    words = philox4x32(xp, [xp.asarray([c], dtype=xp.uint64) for c in counter], key)
    assert [int(to_numpy(w)[0]) for w in words] == list(expected)


@pytest.mark.parametrize("kind,args", DRAWS)
def test_streams_split_over_chains_and_sub_blocks(xp, kind, args):
    """Chain c's numbers do not depend on the batch it is drawn in, and a sub-block of a draw
    (odd extents, steps) is exactly that part of the whole draw; on every backend the numbers
    are NumPy's (bit for bit on host arrays; on a GPU the integer draws exactly and the floats
    to the last bits of log, cos, sin)."""
    shape = (5, 3, 7)
    whole = to_numpy(_draw(CounterRandomStreams(9, 4, xp), kind, args, shape))
    part = to_numpy(_draw(CounterRandomStreams(9, 2, xp, first_chain=2), kind, args, shape))
    np.testing.assert_array_equal(whole[2:], part)
    block = (slice(1, 4), slice(None), slice(2, 7, 3))
    sub = to_numpy(_draw(CounterRandomStreams(9, 4, xp), kind, args, shape, block=block))
    np.testing.assert_array_equal(whole[(slice(None),) + block], sub)
    # a second draw differs from the first, and the seed matters
    rng = CounterRandomStreams(9, 4, xp)
    first, second = (to_numpy(_draw(rng, kind, args, shape)) for _ in range(2))
    other = to_numpy(_draw(CounterRandomStreams(10, 4, xp), kind, args, shape))
    assert np.mean(first == second) < 0.5 and np.mean(first == other) < 0.5
    ref = to_numpy(_draw(CounterRandomStreams(9, 4, namespace_by_name("numpy")), kind, args,
                         shape))
    if kind == "integers" or getattr(xp, "__name__", "").startswith(("numpy", "array_api")):
        np.testing.assert_array_equal(whole, ref)
    else:
        np.testing.assert_allclose(whole, ref, rtol=1e-13, atol=1e-13)


def test_numpy_and_array_api_strict_agree_and_float32_is_rounded():
    np_xp, strict = namespace_by_name("numpy"), namespace_by_name("array_api_strict")
    for kind, args in DRAWS:
        a = to_numpy(_draw(CounterRandomStreams(3, 2, np_xp), kind, args, (6, 5)))
        b = to_numpy(_draw(CounterRandomStreams(3, 2, strict), kind, args, (6, 5)))
        np.testing.assert_array_equal(a, b)
        if kind in ("normal", "uniform", "complex_normal"):
            c = to_numpy(_draw(CounterRandomStreams(3, 2, np_xp, "float32"), kind, args, (6, 5)))
            assert c.dtype in (np.float32, np.complex64)
            np.testing.assert_array_equal(c, a.astype(c.dtype))


def test_state_round_trip_and_refusals(xp_cpu):
    xp = xp_cpu
    rng = CounterRandomStreams(5, 3, xp)
    rng.normal((4,))
    st = rng.state()
    ahead = to_numpy(rng.uniform((8,)))
    again = CounterRandomStreams(5, 3, xp)
    again.set_state(st)
    np.testing.assert_array_equal(to_numpy(again.uniform((8,))), ahead)
    with pytest.raises(ValueError, match="seed"):
        CounterRandomStreams(6, 3, xp).set_state(st)
    with pytest.raises(ValueError, match="RandomStreams"):
        CounterRandomStreams(5, 3, xp).set_state(RandomStreams(5, 3, xp).state())
    with pytest.raises(ValueError, match="CounterRandomStreams"):
        RandomStreams(5, 3, xp).set_state(st)
    for bad in (dict(seed=-1), dict(seed=2 ** 64), dict(seed=1.5)):
        with pytest.raises(ValueError, match="seed"):
            CounterRandomStreams(n_chains=2, xp=xp, **bad)
    with pytest.raises(ValueError, match="high"):
        CounterRandomStreams(1, 1, xp).integers(0, (3,))


def test_distributions_are_exact():
    """Fixed seeds, sizes at which a wrong distribution (a factor in the variance, a bias of
    1e-2, a correlation between chains or draws) fails by many standard deviations."""
    rng = CounterRandomStreams(2026, 4)
    n = 50_000
    u = to_numpy(rng.uniform((n,)))
    assert u.min() >= 0.0 and u.max() < 1.0
    assert stats.kstest(u.ravel(), "uniform").pvalue > 1e-3
    z = to_numpy(rng.normal((n,)))
    assert stats.kstest(z.ravel(), "norm").pvalue > 1e-3
    N = z.size
    assert abs(z.mean()) < 5 / math.sqrt(N) and abs(z.var() - 1) < 5 * math.sqrt(2 / N)
    # chains and successive draws uncorrelated; Box-Muller partners uncorrelated
    z2 = to_numpy(rng.normal((n,)))
    for a, b in [(z[0], z[1]), (z[2], z2[2]), (z[0, 0::2], z[0, 1::2])]:
        assert abs(np.corrcoef(a, b)[0, 1]) < 5 / math.sqrt(a.size)
    c = to_numpy(rng.complex_normal((n,)))
    assert abs(np.mean(np.abs(c) ** 2) - 1) < 5 * 1 / math.sqrt(c.size)
    assert abs(np.mean(c * c)) < 5 / math.sqrt(c.size)        # E z^2 = 0: phase uniform
    k = to_numpy(rng.integers(6, (n,)))
    assert k.min() == 0 and k.max() == 5
    assert stats.chisquare(np.bincount(k.ravel(), minlength=6)).pvalue > 1e-3


def test_hmc_with_counter_streams_samples_the_free_field_exactly():
    """φ⁴ at λ = 0 (8×8): ⟨φ²⟩ from HMC driven by counter streams against the exact
    finite-volume propagator."""
    from lattice_ml.lattice import Lattice
    from lattice_ml.samplers import HMC, EuclideanSpace, Level
    from lattice_ml.scalar import Phi4Action, free_propagator, phi2
    from lattice_ml.stats import gamma_method
    xp = namespace_by_name("numpy")
    lat = Lattice((8, 8))
    action = Phi4Action(lat, "standard", lam=0.0, m2=0.4)
    exact = float(to_numpy(free_propagator(lat, xp, "standard", m2=0.4)).mean())
    rng = CounterRandomStreams(12, 16, xp)
    hmc = HMC([Level([action], 6, "omelyan")], EuclideanSpace(), tau=1.0, tau_jitter=0.3)
    phi = 0.5 * rng.normal(lat.shape)
    hist = []
    for k in range(340):
        phi, _ = hmc.step(phi, rng)
        if k >= 40:
            hist.append(to_numpy(phi2(phi)))
    r = gamma_method(np.array(hist).T)
    assert r.error < 0.01 * exact
    assert abs(r.value - exact) < 4 * r.error, (r.value, r.error, exact)


def test_heatbath_with_counter_streams_and_their_fallback():
    """2D SU(2) heatbath (β = 2) with counter streams, one fixed rejection round so that the
    per-chain fallback streams (of the same kind) are used: the exact plaquette."""
    import lattice_ml.samplers.heatbath as hb
    from gauge_exact import sun_plaquette
    from lattice_ml.gauge.observables import average_plaquette
    from lattice_ml.groups import random_near_identity
    from lattice_ml.stats import gamma_method
    xp = namespace_by_name("numpy")
    rng = CounterRandomStreams(4, 12, xp)
    sampler = hb.Heatbath(2.0, 2, n_or=1, rounds=1)
    U = random_near_identity(rng, (2, 8, 8), 2, 0.0)
    hist, fallback = [], 0
    for k in range(170):
        U, info = sampler.step(U, rng)
        fallback += info.fallback_rounds
        if k >= 20:
            hist.append(to_numpy(average_plaquette(U)))
    assert fallback > 0                         # the fallback streams were drawn from
    r = gamma_method(np.array(hist).T)
    exact = sun_plaquette(2.0, 2, points=96)
    assert r.error < 0.005 and abs(r.value - exact) < 4 * r.error, (r.value, r.error, exact)
