"""Numba CPU kernels of the flow convolution (lattice_ml.kernels.flow_conv) against the array-API
reference (lattice_ml.flows.conv.periodic_conv_forward / periodic_conv_vjp): both precisions,
channel counts with c_out above and below c_in (the two gx formulations), kernels 1, 3, 5,
extents down to K // 2, one chunk (patches kept) and many (patches gathered again), every
need_input / need_params / bias combination; a float64 finite-difference check of the kernel's
vjp along random directions over all sites and parameters; dispatch (NumPy D = 2 -> kernel,
array-api-strict and D = 3 -> reference); float32 training stays float32 on both paths."""

import numpy as np
import pytest

from lattice_ml.backend import RandomStreams, namespace_by_name, to_numpy
from lattice_ml.dispatch import kernel_mode, trace
from lattice_ml.flows import FlowTrainer, PeriodicConv, make_phi4_flow
from lattice_ml.flows.conv import periodic_conv_forward, periodic_conv_vjp
from lattice_ml.flows.train import reverse_kl_grads
from lattice_ml.kernels import flow_conv as kfc
from lattice_ml.lattice import Lattice
from lattice_ml.optim import Adam, flatten
from lattice_ml.scalar import Phi4Action

NP = namespace_by_name("numpy")
TOL = {"float32": 50 * np.finfo(np.float32).eps, "float64": 50 * np.finfo(np.float64).eps}
# (c_in, c_out, K, sites): the tutorial's 1->8, 8->8, 8->2, kernel 5 on an extent 2 (K // 2 = L)
CASES = [(1, 8, 3, (4, 5)), (8, 8, 3, (3, 4)), (8, 2, 3, (4, 4)), (3, 2, 5, (2, 5)),
         (2, 3, 1, (3, 2))]


def data(ci, co, K, sites, dtype, batch=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, *sites, ci)).astype(dtype)
    w = rng.normal(size=(co, ci, K, K)).astype(dtype)
    b = rng.normal(size=(co,)).astype(dtype)
    gy = rng.normal(size=(batch, *sites, co)).astype(dtype)
    return x, w, b, gy


def assert_close(got, want, tol):
    assert got.dtype == want.dtype and got.shape == want.shape
    scale = float(np.max(np.abs(want)))
    assert scale > 0.1
    assert float(np.max(np.abs(got - want))) <= tol * scale


@pytest.mark.parametrize("chunk_bytes", [None, 1])          # default chunks; one config each
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cpu_kernels_equal_reference(dtype, chunk_bytes, monkeypatch):
    if chunk_bytes is not None:
        monkeypatch.setattr(kfc, "_CHUNK_BYTES", chunk_bytes)
    for ci, co, K, sites in CASES:
        x, w, b, gy = data(ci, co, K, sites, dtype)
        for bias in (b, None):
            want_y, P = periodic_conv_forward.reference(x, w, bias)
            y, saved = kfc.conv_forward_cpu(x, w, bias)
            assert_close(y, want_y, TOL[dtype])
            assert (saved is None) == (chunk_bytes is not None)
            for need_input in (True, False):
                for need_params in (True, False):
                    want = periodic_conv_vjp.reference(x, w, gy, need_input, need_params,
                                                       bias is not None, P)
                    for sv in (saved, None):
                        got = kfc.conv_vjp_cpu(x, w, gy, need_input, need_params,
                                               bias is not None, sv)
                        for g, wnt in zip(got, want):
                            assert (g is None) == (wnt is None)
                            if wnt is not None:
                                assert_close(g, wnt, TOL[dtype])


@pytest.mark.parametrize("chunk_bytes", [None, 1])
def test_cpu_kernel_vjp_matches_finite_differences(chunk_bytes, monkeypatch):
    """<gy, y> is linear in x and in the parameters, so the central difference along a random
    direction (all sites, all weights at once) is exact up to rounding."""
    if chunk_bytes is not None:
        monkeypatch.setattr(kfc, "_CHUNK_BYTES", chunk_bytes)
    h = 1e-3
    for n, (ci, co, K, sites) in enumerate(CASES[:4]):
        x, w, b, gy = data(ci, co, K, sites, "float64", seed=n)
        rng = np.random.default_rng(10 + n)
        dx, dw, db = (rng.normal(size=a.shape) for a in (x, w, b))

        def f(xx, ww, bb):
            return float(np.sum(kfc.conv_forward_cpu(xx, ww, bb)[0] * gy))

        _, saved = kfc.conv_forward_cpu(x, w, b)
        gx, gw, gb = kfc.conv_vjp_cpu(x, w, gy, True, True, True, saved)
        for (d, g, args) in ((dx, gx, lambda t: (x + t * dx, w, b)),
                             (dw, gw, lambda t: (x, w + t * dw, b)),
                             (db, gb, lambda t: (x, w, b + t * db))):
            fd = (f(*args(h)) - f(*args(-h))) / (2 * h)
            an = float(np.sum(g * d))
            assert abs(an) > 1.0
            assert abs(fd - an) <= 1e-9 * (1 + abs(an)), (n, fd, an)


def test_conv_dispatches_to_the_kernel_on_numpy_2d_only():
    strict = namespace_by_name("array_api_strict")
    conv2, conv3 = PeriodicConv(2, 2, 3, 3), PeriodicConv(3, 2, 3, 3)
    rng = np.random.default_rng(1)
    for conv, sites in ((conv2, (4, 4)), (conv3, (3, 3, 3))):
        host_p = conv.init_params(NP, np.random.default_rng(0))
        x = rng.normal(size=(2, *sites, 2))
        gy = rng.normal(size=(2, *sites, 3))
        with trace() as log:
            y, cache = conv.forward(host_p, x)
            gx, gp = conv.vjp(host_p, cache, gy)
        impl = "cpu:flow_conv_" if conv is conv2 else "reference"
        assert [name for _, name in log] == [impl + ("forward" if conv is conv2 else ""),
                                             impl + ("vjp" if conv is conv2 else "")]
        with kernel_mode("off"), trace() as log_off:
            y0, c0 = conv.forward(host_p, x)
            gx0, gp0 = conv.vjp(host_p, c0, gy)
        assert {name for _, name in log_off} == {"reference"}
        sp = {k: strict.asarray(v) for k, v in host_p.items()}
        with trace() as log_s:
            ys, cs = conv.forward(sp, strict.asarray(x))
            gxs, gps = conv.vjp(sp, cs, strict.asarray(gy))
        assert {name for _, name in log_s} == {"reference"}
        for a, b_, c in ((y, y0, ys), (gx, gx0, gxs), (gp["weight"], gp0["weight"],
                                                       gps["weight"])):
            assert_close(a, b_, TOL["float64"])
            assert_close(to_numpy(c), b_, TOL["float64"])


@pytest.mark.parametrize("name", ["numpy", "array_api_strict"])
def test_float32_training_stays_float32(name):
    """No promotion to float64 anywhere in a float32 reverse-KL step (kernel on NumPy, the
    reference on array-api-strict): activations, couplings, gradients and Adam's state."""
    xp = namespace_by_name(name)
    lat = Lattice((4, 4))
    action = Phi4Action(lat, "standard", m2=-4.0, lam=8.0)
    flow = make_phi4_flow(lat.shape, xp, n_layers=2, hidden=[3], dtype=xp.float32)
    z = RandomStreams(0, 4, xp, dtype="float32").normal(lat.shape)
    x, logJ, caches = flow.forward_cache(z)
    assert x.dtype == xp.float32 and logJ.dtype == xp.float32
    _, grads, _ = reverse_kl_grads(flow, action, z)
    assert all(g.dtype == xp.float32 for g in flatten(grads)[1])
    tr = FlowTrainer(flow, action, Adam(1e-3), batch_size=4, dtype="float32")
    tr.step()
    assert all(p.dtype == xp.float32 for p in flatten(flow.params)[1])
