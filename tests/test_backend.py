import numpy as np
import pytest

from lattice_ml.backend import (RandomStreams, asarray, backend_name, namespace, namespace_by_name,
                                to_numpy)


def test_namespace_round_trip(xp):
    a = xp.asarray([1.0, 2.0, 3.0], dtype=xp.float64)
    assert backend_name(namespace(a)) == backend_name(xp)
    np.testing.assert_array_equal(to_numpy(a), [1.0, 2.0, 3.0])
    b = asarray(np.arange(4.0), xp, dtype=xp.float32)
    assert b.dtype == xp.float32 and to_numpy(b).tolist() == [0, 1, 2, 3]


def test_unknown_backend_is_named():
    with pytest.raises(ValueError, match="unknown backend 'torch'"):
        namespace_by_name("torch")


def test_streams_reproducible_and_same_on_every_backend(xp):
    a = RandomStreams(7, 3, xp).normal((4, 5))
    b = RandomStreams(7, 3, namespace_by_name("numpy")).normal((4, 5))
    assert a.shape == (3, 4, 5) and a.dtype == xp.float64
    np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    c = RandomStreams(8, 3, xp).normal((4, 5))
    assert not np.array_equal(to_numpy(a), to_numpy(c))


def test_chain_streams_do_not_depend_on_batch_size(xp):
    small = RandomStreams(3, 2, xp)
    large = RandomStreams(3, 5, xp)
    for draw in ("normal", "uniform", "complex_normal"):
        s = to_numpy(getattr(small, draw)((6,)))
        l = to_numpy(getattr(large, draw)((6,)))
        np.testing.assert_array_equal(s, l[:2])
    # chains are independent streams, not copies
    assert not np.array_equal(l[0], l[1])
    # first_chain offsets select later streams of the same master seed
    off = RandomStreams(3, 3, xp, first_chain=2)
    fresh = RandomStreams(3, 5, xp)
    np.testing.assert_array_equal(to_numpy(off.normal((6,))), to_numpy(fresh.normal((6,)))[2:])


def test_distributions():
    rng = RandomStreams(11, 4, namespace_by_name("numpy"))
    n = rng.normal((50_000,))
    u = rng.uniform((50_000,))
    z = rng.complex_normal((50_000,))
    N = n.size
    assert abs(n.mean()) < 5 / np.sqrt(N) and abs(n.var() - 1) < 5 * np.sqrt(2 / N)
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 5 * np.sqrt(1 / 12 / N)
    assert abs(np.mean(np.abs(z) ** 2) - 1) < 5 * np.sqrt(1 / N)
    assert abs(np.mean(z.real * z.imag)) < 5 / np.sqrt(N)
    assert z.dtype == np.complex128


def test_float32_streams(xp):
    rng = RandomStreams(1, 2, xp, dtype="float32")
    assert rng.normal((3,)).dtype == xp.float32
    assert rng.complex_normal((3,)).dtype == xp.complex64


def test_state_round_trip_is_exact(xp):
    import json

    rng = RandomStreams(5, 3, xp)
    rng.normal((10,))
    state = json.loads(json.dumps(rng.state()))
    expected = to_numpy(rng.normal((10,)))
    other = RandomStreams(5, 3, xp)
    other.set_state(state)
    np.testing.assert_array_equal(to_numpy(other.normal((10,))), expected)
    with pytest.raises(ValueError, match="3 chains"):
        RandomStreams(5, 2, xp).set_state(state)


@pytest.mark.parametrize("seed,n", [(-1, 2), (1.5, 2), (1, 0)])
def test_bad_stream_arguments(seed, n):
    with pytest.raises(ValueError):
        RandomStreams(seed, n)
